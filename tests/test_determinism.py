"""Determinism: the same seed gives bit-identical histories on CPU, in one process and across
processes; per-test seeds depend only on --harness-seed and the test id; a failing check prints its
seed and the command that re-runs it.

    pytest tests/test_determinism.py
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from harness import load_recipe, train
from harness.suites.settings import test_seed as derive_seed

# Everything in a History but the wall-clock times.
TIMED = {"seconds"}
CASES = {  # a recipe spec and the fit settings of a short run
    "digits28 sgd": ("digits28", dict(epochs=2, subset=400)),
    "dropout + batchnorm + adam": ("tests/gallery/healthy.py:BN_DROPOUT_MLP_ADAM", dict(epochs=2, subset=400)),
}

SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from harness import load_recipe, train
spec, seed, overrides = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
run = train(load_recipe(spec), seed=seed, **overrides)
h = {k: v for k, v in run.history.to_dict().items() if k != "seconds"}
weights = {k: v.flatten().tolist() for k, v in run.model.state_dict().items() if v.is_floating_point()}
print(json.dumps({"history": h, "weights": weights}))
"""


def run_here(spec, seed, overrides):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order as the subprocesses
    try:
        run = train(load_recipe(spec), seed=seed, **overrides)
    finally:
        torch.set_num_threads(threads)
    history = {k: v for k, v in run.history.to_dict().items() if k not in TIMED}
    weights = {k: v.flatten().tolist() for k, v in run.model.state_dict().items() if v.is_floating_point()}
    return {"history": history, "weights": weights}


def run_elsewhere(spec, seed, overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": str(seed + 17)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, spec, str(seed), json.dumps(overrides)],
                         capture_output=True, text=True, env=env, check=True, timeout=600)
    return json.loads(out.stdout)


def same_json(a, b) -> bool:
    """Bit-identical: floats compared through JSON's shortest round-trip repr (NaN == NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_is_bit_identical_in_one_process(case):
    spec, overrides = CASES[case]
    first, second = run_here(spec, 3, overrides), run_here(spec, 3, overrides)
    assert same_json(first, second)
    assert len(first["history"]["train_loss"]) == overrides["epochs"]


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_is_bit_identical_across_processes(case):
    spec, overrides = CASES[case]
    here = run_here(spec, 5, overrides)
    a, b = run_elsewhere(spec, 5, overrides), run_elsewhere(spec, 5, overrides)
    assert same_json(a, b), "two processes with the same seed disagree"
    assert same_json(here, a), "this process and a fresh one disagree"


def test_a_different_seed_gives_a_different_run():
    spec, overrides = CASES["digits28 sgd"]
    assert not same_json(run_here(spec, 3, overrides)["history"], run_here(spec, 4, overrides)["history"])


def test_global_rng_state_does_not_leak_into_a_run():
    spec, overrides = CASES["dropout + batchnorm + adam"]
    first = run_here(spec, 3, overrides)
    torch.manual_seed(12345)
    torch.rand(1000)  # whatever ran before must not change the next run
    assert same_json(first, run_here(spec, 3, overrides))


# --- per-test seeds and the re-run line ----------------------------------------------------------

SEEDS_FILE = """
def _record(name, seed):
    with open("seeds.txt", "a") as f:
        f.write(f"{name} {seed}\\n")


def test_a(seed):
    _record("test_a", seed)


def test_b(seed):
    _record("test_b", seed)


def test_c(seed):
    _record("test_c", seed)
"""


def _seeds(pytester, *args) -> dict:
    """Run the three tests with ARGS; return the seed each test that ran was given."""
    record = pytester.path / "seeds.txt"
    record.unlink(missing_ok=True)
    pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args).assert_outcomes(
        passed=len([a for a in args if "::" in a]) or (1 if "-k" in args else 3))
    return {name: int(seed) for name, seed in (line.split() for line in record.read_text().splitlines())}


def test_per_test_seed_depends_only_on_base_seed_and_test_id(pytester):
    pytester.makepyfile(test_seeds=SEEDS_FILE)
    everything = _seeds(pytester, "--harness-seed", "7")
    only_c = _seeds(pytester, "--harness-seed", "7", "-k", "test_c")
    reordered = _seeds(pytester, "--harness-seed", "7", "test_seeds.py::test_c", "test_seeds.py::test_a")
    other_base = _seeds(pytester, "--harness-seed", "8")
    assert set(everything) == {"test_a", "test_b", "test_c"}
    assert only_c["test_c"] == reordered["test_c"] == everything["test_c"]
    assert reordered["test_a"] == everything["test_a"]
    assert everything["test_c"] == derive_seed(7, "test_seeds.py::test_c")
    assert all(other_base[k] != everything[k] for k in everything)
    assert len(set(everything.values())) == 3


def test_a_failing_check_prints_its_seed_and_the_rerun_command(pytester):
    spec = os.path.join(os.path.dirname(__file__), "gallery", "bugs.py") + ":LABELS_FROM_ONE"
    args = ("--pyargs", "harness.suites", "-m", "sanity", "--recipe", spec, "--harness-seed", "7", "-p", "no:cacheprovider",
            "-p", "no:randomly", "-k", "test_labels or test_overfit_batch")
    result = pytester.runpytest(*args)
    out = result.stdout.str()
    # test_labels fails; test_overfit_batch skips (labels out of range); test_labels_predictable passes
    result.assert_outcomes(failed=1, passed=1, skipped=1)
    for line in (ln for ln in result.stdout.lines if ln.strip().startswith("re-run: pytest --pyargs")):
        nodeid = line.split()[3]  # harness.suites.test_sanity::test_labels: the same from any folder
        assert f"--recipe {spec}" in line and "--harness-seed 7" in line
        assert f"seed: {derive_seed(7, nodeid)} (this test's seed, from --harness-seed 7 and the test id)" in out
    # one re-run command per failing test (with CI set, pytest repeats each message in its summary)
    assert len({ln.strip() for ln in result.stdout.lines if ln.strip().startswith("re-run: pytest")}) == 1
