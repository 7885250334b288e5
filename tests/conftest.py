"""Shared fixtures: the embedded task is built once per test session into a temporary cache."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no network at test time: a hub name fails at once, no retries

import pytest  # noqa: E402

import task as task_module  # noqa: E402


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory) -> str:
    """A cache folder holding the default embedded task, built once per session."""
    cache = str(tmp_path_factory.mktemp("task-cache"))
    task_module.build_task(task_module.TaskConfig(cache_dir=cache))
    return cache


@pytest.fixture(scope="session")
def embedded_task(task_cache):
    """The default embedded task (tokenizer, RM, SFT policy, prompts), read from the cache."""
    return task_module.build_task(task_module.TaskConfig(cache_dir=task_cache))
