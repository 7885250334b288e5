"""run.py's output folder: where each arm's file and saved policy live, the arms an interrupted run
finished (read back instead of trained again), and the claim on the folder (config.json). Plumbing: it
imports no stage.
"""

import glob
import os
from dataclasses import asdict

import numerics
from cli import EXPERIMENT_OPTIONS, Options, fail
from report import Arm, read_json, write_json


def arm_path(options: Options, name: str) -> str:
    """arms/<name>.json: the arm's record (report.Arm), written once it finished."""
    return os.path.join(options.out, "arms", f"{name}.json")


def policy_path(options: Options, name: str) -> str:
    """policies/<name>: the arm's final policy, with --save-policy."""
    return os.path.join(options.out, "policies", name)


def saves_policy(arm: Arm, options: Options) -> bool:
    """--save-policy: the bo-best confirmation arms, and the arms it names."""
    names = (options.save_policy or "").split(",")
    return options.save_policy is not None and (arm.name in names or arm.group == "bo-best")


def finished_trials(optimizer, first: int, options: Options) -> dict[str, Arm]:
    """The arms of the trials told before a resume (the log's lines from `first`), read back."""
    names = [trial["info"]["arm"] for trial in optimizer.trials[first:]]
    return {name: Arm.from_json(read_json(arm_path(options, name))) for name in names}


def finished_arm(arm: Arm, options: Options) -> Arm | None:
    """The arm's file from an earlier, interrupted run if it holds these weights and seed (and its saved
    policy where --save-policy asks for one); else None: it trains."""
    path, kept = arm_path(options, arm.name), os.path.isdir(policy_path(options, arm.name))
    if os.path.exists(path) and (kept or not saves_policy(arm, options)):
        finished = Arm.from_json(read_json(path))
        if finished.weights == arm.weights and finished.seed == arm.seed:
            return finished
    return None


def claim_output_folder(options: Options) -> None:
    """Write config.json (the options and this process's numerics fingerprint), or exit if the folder holds
    finished arms trained with other options; say so where they were trained under other numerics, and
    where this run's numerics are not those docs/summary.md was made under."""
    config_path = os.path.join(options.out, "config.json")
    finished = glob.glob(os.path.join(options.out, "arms", "*.json"))
    fingerprint = numerics.fingerprint(options.numerics)
    if os.path.exists(config_path) and finished:
        now = asdict(options)
        before = asdict(Options()) | read_json(config_path)  # a newer option ran at its default
        changed = {k: (before[k], now[k]) for k in EXPERIMENT_OPTIONS if before[k] != now[k]}
        if changed:
            fail(f"{options.out!r} holds a run with other options {changed} (old, new); pick another --out")
        if warning := numerics.changed(before.get("numerics_fingerprint"), fingerprint):
            print(warning)
        print(f"resuming: {len(finished)} finished arms found in {options.out}")
    if note := numerics.versus_docs(fingerprint):
        print(note)
    write_json(config_path, asdict(options) | {"numerics_fingerprint": fingerprint})
