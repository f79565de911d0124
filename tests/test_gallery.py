"""The bug gallery and the healthy zoo, run through `pytest -m sanity --recipe` as a user would.

Each planted bug must fail the sanity suite and name its symptom; each healthy recipe must
pass with no false alarm. HARNESS_GALLERY_SEEDS sets how many seeds the healthy recipes are
tried with (default 2 here; the robustness script runs 10 and more).
"""
import os
from pathlib import Path

import pytest

from tests.fakedata import write_cifar10, write_fashion_mnist
from tests.gallery import bugs, healthy
from tests.outcomes import assert_healthy


GALLERY = Path(__file__).parent / "gallery"
SEEDS = range(int(os.environ.get("HARNESS_GALLERY_SEEDS", "2")))


def run_sanity(pytester, recipe, *args):
    return pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe", recipe,
                              "-p", "no:cacheprovider", "-p", "no:randomly", *args)


@pytest.mark.parametrize("name", sorted(bugs.CAUGHT_BY))
def test_planted_bug_is_caught(pytester, name):
    result = run_sanity(pytester, f"{GALLERY / 'bugs.py'}:{name}")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()[-3000:]
    assert f"[{bugs.CAUGHT_BY[name]}]" in result.stdout.str(), result.stdout.str()[-3000:]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", healthy.HEALTHY)
def test_healthy_recipe_passes(pytester, name, seed):
    result = run_sanity(pytester, f"{GALLERY / 'healthy.py'}:{name}", "--harness-seed", str(seed))
    assert_healthy(result)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", healthy.HEALTHY_DENSE)
def test_healthy_dense_recipe_passes(pytester, name, seed):
    result = run_sanity(pytester, f"{GALLERY / 'healthy.py'}:{name}", "--harness-seed", str(seed))
    assert_healthy(result, "sanity", "dense")


@pytest.mark.parametrize("seed", SEEDS)
def test_default_recipe_passes(pytester, seed):
    result = run_sanity(pytester, "digits28", "--harness-seed", str(seed))
    assert_healthy(result)


@pytest.mark.parametrize("seed", SEEDS)
def test_fashion_mlp_passes_on_files_in_the_real_format(pytester, tmp_path, seed):
    write_fashion_mnist(tmp_path)
    result = run_sanity(pytester, "fashion_mlp", "--harness-data-root", str(tmp_path), "--harness-seed", str(seed))
    assert_healthy(result)


@pytest.mark.parametrize("seed", SEEDS)
def test_cifar_mlp_passes_on_files_in_the_real_format(pytester, tmp_path, monkeypatch, seed):
    write_cifar10(tmp_path)
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "0")  # our files are not the published ones
    result = run_sanity(pytester, "cifar_mlp", "--harness-data-root", str(tmp_path), "--harness-seed", str(seed))
    assert_healthy(result)


def test_worked_example_in_the_readme_passes(pytester):
    result = run_sanity(pytester, str(Path(__file__).parents[1] / "examples" / "my_recipe.py") + ":RECIPE")
    assert_healthy(result)


UNUSABLE = '''
import torch
from harness import Data, Recipe
from harness.data import synthetic
from harness.models import fashion_mlp

def _misaligned():
    d = synthetic()
    return Data(train=(d.train[0], d.train[1][:-5]), val=d.val, test=d.test)

def _empty():
    d = synthetic()
    return Data(train=(d.train[0][:0], d.train[1][:0]), val=d.val, test=d.test)

LENGTHS = Recipe(model=fashion_mlp, data=_misaligned, num_classes=10)
EMPTY = Recipe(model=fashion_mlp, data=_empty, num_classes=10)
'''


@pytest.mark.parametrize("name", ["LENGTHS", "EMPTY"])
def test_unusable_data_fails_the_data_checks_and_skips_the_model_checks(pytester, tmp_path, name):
    """The data checks say what is wrong; the checks that need a batch skip saying so (not setup errors)."""
    path = tmp_path / "unusable.py"
    path.write_text(UNUSABLE)
    result = run_sanity(pytester, f"{path}:{name}", "-rs")
    outcomes = result.parseoutcomes()
    text = result.stdout.str()
    assert outcomes.get("errors", 0) == 0 and outcomes.get("error", 0) == 0, text[-3000:]
    assert outcomes.get("failed", 0) >= 1 and "[split_" in text, text[-3000:]
    assert text.count("no batch to test the model with") >= 10, text[-3000:]
