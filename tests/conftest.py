"""Shared fixtures: the embedded task is built once per test session into a temporary cache, which the
parallel workers of `pytest -n` share (the first to ask builds it, the others wait and read it)."""

import fcntl
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no network at test time: a hub name fails at once, no retries

import cli  # noqa: E402

cli.pin_numerics("reproducible")  # the same numbers on any CPU: set before torch loads (subprocesses too)

import pytest  # noqa: E402
import torch  # noqa: E402

import task as task_module  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker process: tiny models lose to contention
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory) -> str:
    """A cache folder holding the default embedded task, built once per session."""
    session_root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session_root = session_root.parent  # the folder every worker's temporary folder sits in
    cache = str(session_root / "task-cache")
    with open(cache + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        task_module.build_task(task_module.TaskConfig(cache_dir=cache))
    return cache


@pytest.fixture(scope="session")
def embedded_task(task_cache):
    """The default embedded task (tokenizer, RM, SFT policy, prompts), read from the cache."""
    return task_module.build_task(task_module.TaskConfig(cache_dir=task_cache))


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on busy cores threads fight."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
