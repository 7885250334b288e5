"""numerics.py: the fingerprint of a process's CPU numerics, and the lines that compare two of them."""

import json
import os
import subprocess
import sys

import pytest
import torch

import cli
import numerics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_fingerprint(mode: str, env: dict) -> tuple[dict, str]:
    """The fingerprint a fresh process computes, run.py's numerics of `mode` pinned before torch loads,
    and torch's CPU capability there."""
    code = (
        f"import json, cli\ncli.pin_numerics({mode!r})\nimport numerics, torch\n"
        f"capability = torch.backends.cpu.get_cpu_capability()\n"
        f"print(json.dumps([numerics.fingerprint({mode!r}), capability]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return tuple(json.loads(done.stdout.splitlines()[-1]))


def test_the_fingerprint_is_the_same_in_two_processes_and_moves_with_a_forced_kernel():
    """This test session computes in the reproducible mode (conftest): a child process in the same mode
    gives the same fingerprint, a child on this CPU's own kernels (torch's AVX2 or wider) another one,
    and the classes name what parted (torch's vectorised kernels at least)."""
    here = numerics.fingerprint("reproducible")
    assert numerics.fingerprint("reproducible") == here  # twice in one process
    unpinned = {k: v for k, v in os.environ.items() if k not in [*cli.REPRODUCIBLE_CPU, cli.NUMPY]}
    assert child_fingerprint("reproducible", unpinned) == (here, "DEFAULT")  # pinned from any environment
    native, capability = child_fingerprint("native", unpinned)
    if capability == "DEFAULT":
        pytest.skip("this CPU's own kernels are the generic ones: nothing to force")
    assert native["id"] != here["id"] and native["classes"]["vector"] != here["classes"]["vector"]


def test_the_fingerprint_leaves_the_global_generator_and_the_thread_count_as_they_were():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    threads = torch.get_num_threads()
    record = numerics.fingerprint("reproducible")
    assert torch.equal(torch.rand(4), expected) and torch.get_num_threads() == threads
    assert set(record["classes"]) == set(numerics.CLASSES) and len(record["id"]) == 8


RECORD = {
    "mode": "reproducible",
    "id": "0123abcd",
    "classes": {"matmul": "aaaaaa", "vector": "bbbbbb"},
    "versions": {"torch": "2.13.0"},
}


def test_a_summary_line_is_read_back_as_the_docs_fingerprint(tmp_path):
    docs = tmp_path / "summary.md"
    docs.write_text(f"| table |\n\n{numerics.text(RECORD)}\n")
    assert numerics.documented(str(docs)) == {"mode": "reproducible", "id": "0123abcd"}
    assert numerics.versus_docs(RECORD, str(docs)) is None  # the same numerics: nothing to say
    other = RECORD | {"id": "ffff0000"}
    line = numerics.versus_docs(other, str(docs))
    assert "ffff0000" in line and "0123abcd" in line and "Not a bug" in line and "\n" not in line
    assert numerics.versus_docs(other | {"mode": "native"}, str(docs)) is None  # another mode differs anyway
    assert numerics.documented(str(tmp_path / "absent.md")) is None
    docs.write_text("| a table made before fingerprints |\n")
    assert numerics.versus_docs(other, str(docs)) is None


def test_a_changed_fingerprint_names_the_classes_that_parted():
    assert numerics.changed(None, RECORD) is None  # a folder made before fingerprints
    assert numerics.changed(RECORD, RECORD) is None
    moved = RECORD | {"id": "99999999", "classes": RECORD["classes"] | {"matmul": "cccccc"}}
    line = numerics.changed(RECORD, moved)
    assert line.startswith("warning:") and "0123abcd" in line and "99999999" in line
    assert "(matmul differ)" in line and "\n" not in line
