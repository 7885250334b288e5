"""Benchmark: which CPU code paths move a run, and what run.py's --numerics reproducible costs.

Each numerical library picks its kernels when it loads, by what the CPU offers. This machine stands
in for other CPUs by forcing those choices through the variables the libraries read at load time:

    ATEN_CPU_CAPABILITY        torch's vectorised kernels (default, avx2, avx512)
    MKL_CBWR                   MKL's code path, torch's matrix products (COMPATIBLE, AVX2, ...)
    ONEDNN_MAX_CPU_ISA         oneDNN's JIT kernels, torch's GELU (SSE41, AVX2, ...)
    OPENBLAS_CORETYPE          OpenBLAS in numpy and scipy: the BO's GP, LIME's distances
    NPY_DISABLE_CPU_FEATURES   numpy's own SIMD loops (exp in the GP kernel and LIME's)
    GLIBC_TUNABLES             glibc's libm variants (FMA, AVX2)

(a) In each mode, one `run.py --quick` process per forced path, each building its own task (the task
    cache is keyed by the kernels), compared with the same mode on this machine's own path: the same
    trials.jsonl and arm curves, or how many arms differ and at which evaluation the first one parts.
(b) The mode's cost: whole processes of a shorter default run (every baseline arm, one BO trial,
    batch 64), native, reproducible and a pin that keeps AVX2 kernels (`avx2()`) in turn, after each
    one's task is built and cached (that first process, task build included, is timed too).

    python benchmarks/bench_numerics.py [--out runs/bench-numerics] [--repeats 3] [--iterations 10]
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORCED = {  # a name -> the variables that make this machine take the kernels of another CPU
    "own": {},
    "torch generic": {"ATEN_CPU_CAPABILITY": "default"},
    "torch AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "MKL AVX2": {"MKL_CBWR": "AVX2"},
    "oneDNN AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "OpenBLAS Sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "numpy baseline SIMD": None,  # filled in by numpy_dispatch(): every dispatched feature this CPU has
    "glibc no FMA/AVX2": {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"},
    "an AVX2 machine": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def numpy_dispatch() -> dict:
    """NPY_DISABLE_CPU_FEATURES naming each SIMD feature numpy dispatches to on this CPU."""
    code = (
        "from numpy._core._multiarray_umath import __cpu_dispatch__ as d, __cpu_features__ as f; "
        "print(' '.join(x for x in d if f.get(x)))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    return {"NPY_DISABLE_CPU_FEATURES": " ".join(found)} if found else {}


def avx2() -> dict:
    """A pin that keeps AVX2 kernels: torch's AVX2 build, oneDNN at AVX2, OpenBLAS's Haswell kernels, numpy
    without its AVX-512 loops, and MKL's COMPATIBLE branch (its AVX2 branch holds on Intel CPUs only)."""
    above = " ".join(
        x for x in numpy_dispatch().get("NPY_DISABLE_CPU_FEATURES", "").split() if "512" in x or x == "X86_V4"
    )
    return {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": above,
    }


def run_py(argv: list[str], env: dict, log_path: str) -> float:
    """Wall seconds of one run.py process with `env` added to this environment; exits if it fails."""
    start = time.time()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        code = subprocess.call(
            [sys.executable, "run.py", *argv],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        sys.exit(f"run.py {' '.join(argv)} with {env} exited with {code}:\n{open(log_path).read()[-3000:]}")
    return time.time() - start


def outcome(folder: str) -> tuple[str, dict]:
    """trials.jsonl and every arm file but its wall seconds."""
    arms = {}
    for path in sorted(glob.glob(os.path.join(folder, "arms", "*.json"))):
        with open(path) as file:
            arms[os.path.basename(path)[:-5]] = {k: v for k, v in json.load(file).items() if k != "seconds"}
    with open(os.path.join(folder, "trials.jsonl")) as file:
        return file.read(), arms


def difference(base: tuple[str, dict], other: tuple[str, dict]) -> str:
    if other == base:
        return "identical"
    arms = [name for name in base[1] if other[1].get(name) != base[1][name]]
    curves = [(base[1][name]["curve"], other[1][name]["curve"]) for name in arms]
    first = min(next((i for i, (p, q) in enumerate(zip(*pair)) if p != q), 0) for pair in curves)
    trials = "same trials" if other[0] == base[0] else "other trials"
    return f"{trials}, {len(arms)} of {len(base[1])} arms differ, from evaluation {first}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench-numerics", help="scratch folder (runs/bench-numerics)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode in (b) (3)")
    parser.add_argument("--iterations", type=int, default=10, help="PPO iterations of each timed arm (10)")
    parser.add_argument("--skip-paths", action="store_true", help="only (b)")
    args = parser.parse_args()
    if args.repeats < 1 or args.iterations < 1:
        parser.error(f"--repeats {args.repeats}, --iterations {args.iterations}: expected >= 1")
    FORCED["numpy baseline SIMD"] = numpy_dispatch()
    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(out, "cache")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

    if not args.skip_paths:
        print("(a) run.py --quick under each forced code path, against this machine's own path:")
        for mode in ("native", "reproducible"):
            results = {}
            for name, env in FORCED.items():
                folder = os.path.join(out, mode, name.replace(" ", "-").replace("/", "-"))
                shutil.rmtree(folder, ignore_errors=True)
                argv = ["--quick", "--numerics", mode, "--out", folder, "--cache-dir", cache]
                seconds = run_py(argv, env, folder + ".log")
                results[name] = outcome(folder)
                verdict = difference(results["own"], results[name]) if name != "own" else "the reference"
                shown = " ".join(f"{k}={v}" for k, v in env.items()) or "(nothing forced)"
                print(f"  {mode:12s} {name:22s} {verdict:48s} {seconds:5.1f} s  {shown}", flush=True)
            moved = [name for name in FORCED if name != "own" and results[name] != results["own"]]
            print(f"  {mode}: {len(moved)} of {len(FORCED) - 1} forced paths change the run: {moved}")

    print(f"(b) whole processes, every baseline and one BO trial, {args.iterations} iterations at batch 64:")
    argv = ["--iterations", str(args.iterations), "--trials", "1"]
    argv += ["--confirm-seeds", "0", "--eval-every", "5"]
    argv += ["--cache-dir", cache]
    timed = {
        "native": ("native", {}),
        "reproducible": ("reproducible", {}),
        "AVX2 pinned": ("native", avx2()),
    }
    for name, (mode, env) in timed.items():  # each mode's task built and cached before the timing
        warm = os.path.join(out, "warm", name.replace(" ", "-"))
        shutil.rmtree(warm, ignore_errors=True)
        once = ["--iterations", "1", "--eval-every", "1", "--numerics", mode, "--out", warm]
        build = run_py([*argv, *once], env, warm + ".log")
        print(f"  {name:12s} task build and one iteration: {build:.1f} s", flush=True)
    seconds = {name: [] for name in timed}
    for repeat in range(args.repeats):  # in turn: the machine's load falls on every mode alike
        for name, (mode, env) in timed.items():
            folder = os.path.join(out, "timed", f"{name.replace(' ', '-')}-{repeat}")
            shutil.rmtree(folder, ignore_errors=True)
            seconds[name].append(run_py([*argv, "--numerics", mode, "--out", folder], env, folder + ".log"))
            print(f"  {name:12s} run {repeat + 1}: {seconds[name][-1]:.1f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = ", ".join(
        f"{name} {value:.1f} s ({value / median['native']:.2f}x)" for name, value in median.items()
    )
    print(f"median {ratios} (the default on CPU if <= 1.3x)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
