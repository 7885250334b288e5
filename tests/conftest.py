"""Shared fixtures: the embedded task is built once per test session into a temporary cache."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no network at test time: a hub name fails at once, no retries

import pytest  # noqa: E402

import task as task_module  # noqa: E402


@pytest.fixture(scope="session")
def embedded_task(tmp_path_factory):
    """The default embedded task (tokenizer, RM, SFT policy, prompts), built and cached once."""
    cache = tmp_path_factory.mktemp("task-cache")
    return task_module.build_task(task_module.TaskConfig(cache_dir=str(cache)))
