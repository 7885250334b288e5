"""Benchmark: wall time of whole run.py processes with parallel workers, with threads, and beside a busy core.

    (a) --workers 1 --threads 1     the sequential run
    (b) --workers 2 --threads 1     two arms at once, one thread each (parallel.py)
    (c) --workers 1 --threads 2     one arm at a time, two threads
    (d) run.py --quick quiet, then beside one CPU-bound process this script starts and stops

Targets: (b) / (c) <= 0.7 (on small models, arms in parallel beat threads within an arm) and
busy / quiet <= 2 for (d). Each run writes into a fresh temporary --out, after the task cache
(and any hub model) exists, so no run pays for building it. Extra arguments go to every run.py:

    python benchmarks/bench_workers.py [run.py options, e.g. --quick]
"""

import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import checks  # noqa: E402
import run  # noqa: E402


def wall_seconds(argv: list[str], label: str) -> float:
    """Seconds of one `python run.py ARGV --out TMP` process; its output goes to a log, shown if it fails."""
    with tempfile.TemporaryDirectory() as out:
        log_path = os.path.join(out, "log.txt")
        with open(log_path, "w") as log:
            start = time.time()
            code = subprocess.call(
                [sys.executable, "run.py", *argv, "--out", os.path.join(out, "run")],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            seconds = time.time() - start
        if code != 0:
            sys.exit(f"run.py {' '.join(argv)} exited with {code}:\n{open(log_path).read()[-3000:]}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


def main():
    extra = sys.argv[1:]
    options = checks.parse_options(extra)  # checks the options before any timing
    print(f"run.py {' '.join(extra)}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    run.build_setup(options)

    print("(a)-(c) whole runs:")
    sequential = wall_seconds([*extra, "--workers", "1", "--threads", "1"], "(a)")
    workers = wall_seconds([*extra, "--workers", "2", "--threads", "1"], "(b)")
    threads = wall_seconds([*extra, "--workers", "1", "--threads", "2"], "(c)")

    print("(d) --quick, quiet and beside one busy process:")
    quiet = wall_seconds([*extra, "--quick"], "quiet")
    busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = wall_seconds([*extra, "--quick"], "beside a busy process")
    finally:
        busy_process.kill()
        busy_process.wait()

    print(f"\n(a) --workers 1 --threads 1  {sequential:7.1f} s")
    print(f"(b) --workers 2 --threads 1  {workers:7.1f} s   (b)/(a) = {workers / sequential:.2f}")
    print(f"(c) --workers 1 --threads 2  {threads:7.1f} s   (c)/(a) = {threads / sequential:.2f}")
    print(f"(b)/(c) = {workers / threads:.2f} (target <= 0.7)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print(
        f"(d) --quick quiet {quiet:.1f} s, beside a busy process {busy:.1f} s: "
        f"busy/quiet = {busy / quiet:.2f} (target <= 2)"
    )


if __name__ == "__main__":
    main()
