"""Where the arms train: in this process, in worker processes on this machine, or on a Ray cluster.

run.py hands over each step's arms together (the baselines, one BO batch, the confirmation arms)
and gets them back in the order it submitted them, whatever order they finish in, so the trial
log and every arm's curve are the same for any number of workers. What runs where:

    parent   run.py: the task cache, the BO (ask, tell), the report; this file's dispatch
    workers  one process each: a Setup of its own, built once from the options, and the PPO runs
             of the arms it is handed, one at a time; each writes its arm's file itself

--workers 1 trains in the parent, with the parent's Setup (no pool, no Ray). --workers N > 1 starts
N Ray actors on a local Ray instance when ray is installed, else N processes of a process pool.
--ray-address joins a running cluster instead (one GPU per actor when it has GPUs, else --threads
CPUs); every machine must see the repository and the output folder at the same paths. When an arm
fails, the queued arms are cancelled and the workers stopped: the arms finished before are on disk,
and a rerun trains only the arms with no file.
"""

import concurrent.futures
import importlib.util
import logging
import multiprocessing
import os
import threading

import torch
from tqdm.auto import tqdm

from cli import REPRODUCIBLE_CPU, numerics_in_force


def has_ray() -> bool:
    return importlib.util.find_spec("ray") is not None


class Worker:
    """One worker process's Setup, built once, and the arms it trains with it (pool or Ray)."""

    def __init__(self, build_setup, finished, options, folder):
        os.chdir(folder)  # the parent's working directory: relative --out and --cache-dir mean the same
        if not numerics_in_force(options.numerics):  # set by the parent's environment or the Ray runtime env
            raise RuntimeError(f"a worker on {os.uname().nodename} is not in --numerics {options.numerics}")
        torch.set_num_threads(options.threads)
        torch.manual_seed(options.seed)
        self.setup, self.finished, self.options = build_setup(options), finished, options

    def train(self, train_arm, arm, training):
        return self.finished(arm, self.options) or train_arm(arm, training, self.setup, self.options)


class Workers:
    """submit(train_arm, arm, training) -> a Future of the trained Arm; train(train_arm, batch) -> the arms
    in submission order, collected as they finish under a bar of arms finished / submitted, a line each."""

    def __enter__(self):
        self.bar = tqdm(total=0, desc="arms", unit="arm", disable=None)  # off when output is not a terminal
        self.done, self.submitted = 0, 0
        return self

    def __exit__(self, kind, error, traceback):
        self.bar.close()
        self.close(stop=error is not None)

    def train(self, train_arm, batch) -> list:
        """train_arm(arm, training, setup, options) for each (arm, training) of the batch, together, or
        the arm's file where an interrupted run finished it; the first error stops the run."""
        futures = [self.submit(train_arm, arm, training) for arm, training in batch]
        self.submitted += len(futures)
        self.bar.total = self.submitted
        self.bar.refresh()
        for future in self.finished(futures):
            arm = future.result()
            self.done += 1
            self.bar.update()
            progress = f"({self.done} of {self.submitted} arms)"
            self.bar.write(
                f"{arm.name}: final reward {arm.final:+.2f}, held-out KL {arm.final_kl:.1f} {progress}"
            )
        return [future.result() for future in futures]

    def finished(self, futures):
        return concurrent.futures.as_completed(futures)


class InProcess(Workers):
    """--workers 1: each arm trains in this process, with the parent's Setup, when it is collected."""

    def __init__(self, options, setup, build_setup, finished):
        self.setup, self.options, self.finished_arm, self.queued = setup, options, finished, {}

    def submit(self, train_arm, arm, training):
        future = concurrent.futures.Future()
        self.queued[future] = train_arm, arm, training
        return future

    def finished(self, futures):
        for future in futures:
            train_arm, arm, training = self.queued.pop(future)
            done = self.finished_arm(arm, self.options) or train_arm(arm, training, self.setup, self.options)
            future.set_result(done)
            yield future

    def close(self, stop):
        self.queued.clear()


_worker = None  # the Worker of this pool process


def _start(*args):
    global _worker
    _worker = Worker(*args)


def _train(train_arm, arm, training):
    return _worker.train(train_arm, arm, training)


class ProcessPool(Workers):
    """--workers N without ray: N "spawn" processes on this machine, a Worker each."""

    def __init__(self, options, setup, build_setup, finished):
        spawn, arguments = multiprocessing.get_context("spawn"), (build_setup, finished, options, os.getcwd())
        self.pool = concurrent.futures.ProcessPoolExecutor(options.workers, spawn, _start, arguments)

    def submit(self, train_arm, arm, training):
        return self.pool.submit(_train, train_arm, arm, training)

    def close(self, stop):
        processes = list(self.pool._processes.values())  # Python >= 3.14: pool.terminate_workers()
        self.pool.shutdown(wait=not stop, cancel_futures=True)
        if stop:  # the arms in training are dropped
            for process in processes:
                process.terminate()


class RayActors(Workers):
    """--workers N Ray actors, a Worker each, on a local Ray instance or the cluster at --ray-address.

    A thread of this process drives each actor: it hands the actor the next queued arm once the
    last one is back, so a fast arm never waits behind a slow one.
    """

    def __init__(self, options, setup, build_setup, finished):
        import ray

        self.ray, self.started = ray, not ray.is_initialized()
        if self.started:
            local = dict(num_cpus=options.workers * options.threads, include_dashboard=False)
            ray.init(
                **(dict(address=options.ray_address) if options.ray_address else local),
                logging_level=logging.ERROR,
            )
        gpus = int(ray.cluster_resources().get("GPU", 0)) if options.ray_address else 0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        each = dict(num_gpus=1) if gpus and options.device != "cpu" else dict(num_cpus=options.threads)
        count = max(1, min(options.workers, gpus if "num_gpus" in each else cpus // options.threads))
        here = os.path.dirname(os.path.abspath(__file__))  # the repository, at this path on every machine
        numerics = REPRODUCIBLE_CPU if options.numerics == "reproducible" else {}  # before torch loads there
        code = {"env_vars": {"PYTHONPATH": here + ":${PYTHONPATH}", **numerics}}
        actor = ray.remote(**each, runtime_env=code)(Worker)
        self.actors = [actor.remote(build_setup, finished, options, os.getcwd()) for _ in range(count)]
        free, self.mine = list(self.actors), threading.local()
        self.threads = concurrent.futures.ThreadPoolExecutor(
            count, initializer=lambda: setattr(self.mine, "actor", free.pop())
        )

    def submit(self, train_arm, arm, training):
        return self.threads.submit(
            lambda: self.ray.get(self.mine.actor.train.remote(train_arm, arm, training))
        )

    def close(self, stop):
        self.threads.shutdown(wait=False, cancel_futures=True)
        for actor in self.actors:  # its arm in training, if any, is dropped
            self.ray.kill(actor)
        self.threads.shutdown()
        if self.started:
            self.ray.shutdown()


def workers(options, setup, build_setup, finished) -> Workers:
    """The executor for the options: each worker with its own build_setup(options), each arm read back
    by finished(arm, options) (None: it trains). Functions handed over must be importable (module level),
    for worker processes: build_setup, finished and train_arm."""
    if options.ray_address is not None or (options.workers > 1 and has_ray()):
        return RayActors(options, setup, build_setup, finished)
    if options.workers > 1:
        return ProcessPool(options, setup, build_setup, finished)
    return InProcess(options, setup, build_setup, finished)
