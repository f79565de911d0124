"""`pytest -n 2` gives the same outcomes as a serial run, and its workers write no shared file.

Each test's seed derives from --harness-seed and its id (not from the order or the worker), so the
same tests pass and fail, with the same symptoms, however they are distributed.

    pytest tests/test_xdist.py
"""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.checks import registry

import pytest

GALLERY = Path(__file__).parent / "gallery"
ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "default recipe (all pass)": "digits28",
    "planted bug (some fail)": f"{GALLERY / 'bugs.py'}:DROPOUT_IN_EVAL",
}


def outcomes(junit: Path) -> dict:
    """test name -> (outcome, the [symptom] its failure names, if any)."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = next((case.find(t) for t in ("failure", "error") if case.find(t) is not None), None)
        skipped = case.find("skipped") is not None
        message = (bad.get("message") or "") if bad is not None else ""
        symptom = message[message.find("["):message.find("]") + 1] if "[" in message else ""
        outcome = bad.tag if bad is not None else "skipped" if skipped else "passed"
        result[case.get("name")] = (outcome, symptom)
    return result


def files_under(path: Path) -> set:
    return {p.relative_to(path) for p in path.rglob("*") if p.is_file() and p.suffix != ".xml"}


def run_pytest(cwd: Path, *args) -> subprocess.CompletedProcess:
    """pytest in a fresh process, from `cwd`, as a user runs it (one torch thread per process)."""
    # the project root first on the path: `suites` is then the package itself, wherever pip put it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.parametrize("case", list(RECIPES))
def test_xdist_outcomes_equal_serial(tmp_path, case):
    work = tmp_path / "work"  # a folder of its own: anything the suites wrote would show up here
    work.mkdir()
    (work / "pytest.ini").write_text("[pytest]\n")  # rootdir here, not the project's addopts
    args = ("--pyargs", "harness.suites", "-m", "sanity", "--recipe", RECIPES[case], "--harness-seed", "3",
            "-p", "no:cacheprovider", "-p", "no:randomly")
    serial = run_pytest(work, *args, f"--junitxml={tmp_path / 'serial.xml'}")
    parallel = run_pytest(work, *args, "-n", "2", f"--junitxml={tmp_path / 'xdist.xml'}")
    assert f"2 workers [{registry.count('sanity')} items]" in parallel.stdout, parallel.stdout[-2000:] + parallel.stderr[-2000:]
    a, b = outcomes(tmp_path / "serial.xml"), outcomes(tmp_path / "xdist.xml")
    assert len(a) == registry.count("sanity"), serial.stdout[-2000:]
    assert a == b
    assert serial.returncode == parallel.returncode
    if case.startswith("planted"):
        assert a["test_eval_deterministic"] == ("failure", "[eval_not_deterministic]")
    # the suites write nothing, so no two workers can write the same file
    assert files_under(work) == {Path("pytest.ini")}
