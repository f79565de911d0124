"""Every example in examples/ passes the sanity suite, trains, and its planted-bug twin is caught.

    pytest tests/test_examples.py                      # every example (about 5 minutes on 2 cores)
    HARNESS_EXAMPLES=causal_lm,tagging pytest tests/test_examples.py    # only those
    HARNESS_EXAMPLES=all pytest tests/test_examples.py  # and `harness train` on every example, not 6 of them

Each example runs through `pytest -m sanity --recipe examples/X.py:RECIPE` as a user would
(pytester, as tests/test_gallery.py does): no failure and no error, checks that cannot apply
to its task skipped with a reason. Its twin in tests/gallery/task_bugs.py (the same recipe with
one bug typical of the task) must fail and name its symptom. The Hugging Face and Lightning
examples need their extras (`pip install -e .[hf,lightning]`) and are skipped, with that
reason, without them.
"""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.checks import registry
from tests.gallery import task_bugs

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {"hf_bert": "transformers", "hf_gpt2": "transformers", "lightning_module": "lightning"}
ALL = sorted(p.stem for p in (ROOT / "examples").glob("*.py") if p.stem != "my_recipe")  # my_recipe: test_gallery
CHOSEN = [n for n in os.environ.get("HARNESS_EXAMPLES", "").split(",") if n and n != "all"]
EXAMPLES = [n for n in ALL if not CHOSEN or n in CHOSEN]
# `harness train` starts a process per example: by default one per kind of input and task
CLI_DEFAULT = ("two_input", "regression", "segmentation", "causal_lm", "hf_gpt2", "lightning_module")
CLI = EXAMPLES if os.environ.get("HARNESS_EXAMPLES") else [n for n in EXAMPLES if n in CLI_DEFAULT]


def cli_params(names):
    return list(names)


TWINS = [t for t in sorted(task_bugs.CAUGHT_BY) if task_bugs.EXAMPLE[t] in EXAMPLES]


def needs_extra(name):
    module = EXTRA.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"needs {module}: pip install -e .[{'hf' if module == 'transformers' else module}]")


def run_sanity(pytester, recipe, *args):
    return pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe", recipe,
                              "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:pytest_torch", "-rfEs", *args)


def test_every_example_has_a_twin():
    assert set(ALL) <= set(task_bugs.EXAMPLE.values())


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_passes_sanity(pytester, name):
    needs_extra(name)
    result = run_sanity(pytester, f"{ROOT / 'examples' / name}.py:RECIPE")
    outcomes, out = result.parseoutcomes(), result.stdout.str()[-4000:]
    # not tests.outcomes.assert_healthy: its counts per task do not yet include the tasks' own skips
    # (Regression's loss_at_init, integer-id inputs' input_range, ...)
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, out
    assert outcomes.get("passed", 0) + outcomes.get("skipped", 0) == registry.count("sanity"), out
    assert outcomes.get("passed", 0) >= 15, out


@pytest.mark.parametrize("twin", TWINS)
def test_twin_is_caught(pytester, twin):
    needs_extra(task_bugs.EXAMPLE[twin])
    result = run_sanity(pytester, f"{ROOT / 'tests' / 'gallery' / 'task_bugs.py'}:{twin}")
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed", 0) >= 1, out[-4000:]
    assert f"[{task_bugs.CAUGHT_BY[twin]}]" in out, out[-4000:]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_trains_and_reports_its_tasks_metrics(name):
    """One epoch of fit, then evaluate on the test split: finite loss, the task's metrics."""
    needs_extra(name)
    from harness import evaluate, load_recipe, train

    recipe = load_recipe(f"{ROOT / 'examples' / name}.py:RECIPE")
    run = train(recipe, epochs=1)
    assert math.isfinite(run.history.train_loss[0]) and not run.history.diverged
    metrics = evaluate(run.model, recipe.load_data().test, task=recipe.task, forward=recipe.forward)
    names = set(recipe.task.metric_names(True))
    assert names <= set(metrics), (names, metrics)
    assert all(math.isfinite(metrics[k]) for k in names), metrics


@pytest.mark.parametrize("name", cli_params(CLI))
def test_harness_train_prints_the_tasks_metrics(tmp_path, name):
    """`harness train` on an example, as a user runs it: exit 0 and the task's main metric printed."""
    needs_extra(name)
    spec = f"{ROOT / 'examples' / name}.py:RECIPE"
    proc = subprocess.run([sys.executable, "-m", "harness", "train", "--recipe", spec, "--epochs", "1",
                           "--subset", "256", "--no-figures", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from harness import load_recipe
    assert load_recipe(spec).task.main_metric.lower() in proc.stdout.lower(), proc.stdout[-3000:]


@pytest.mark.parametrize("name", cli_params([n for n in ("lightning_module", "multilabel", "hf_gpt2") if n in EXAMPLES]))
def test_harness_sweep_lr_runs_on_an_example(tmp_path, name):
    """`harness sweep lr` on an example: exit 0, one row per lr, the task's main metric printed."""
    needs_extra(name)
    spec = f"{ROOT / 'examples' / name}.py:RECIPE"
    proc = subprocess.run([sys.executable, "-m", "harness", "sweep", "lr", "--recipe", spec, "--values", "1e-3,1e-2",
                           "--epochs", "1", "--subset", "256", "--no-figures", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from harness import load_recipe
    assert load_recipe(spec).task.main_metric.lower() in proc.stdout.lower(), proc.stdout[-3000:]
    assert "0.001" in proc.stdout and "0.01" in proc.stdout, proc.stdout[-3000:]
