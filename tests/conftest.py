"""Shared fixtures: the embedded task is built once per test session into a temporary cache."""
import pytest

import task as task_module


@pytest.fixture(scope="session")
def embedded_task(tmp_path_factory):
    """The default embedded task (tokenizer, RM, SFT policy, prompts), built and cached once."""
    cache = tmp_path_factory.mktemp("task-cache")
    return task_module.build_task(task_module.TaskConfig(cache_dir=str(cache)))
