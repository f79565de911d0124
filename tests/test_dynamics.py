"""The recipe suite's checks: each fires on a broken setup and passes on a healthy one.

    OMP_NUM_THREADS=1 python -m pytest tests/test_dynamics.py -q -p no:cacheprovider
    HARNESS_RECIPE_GALLERY=1 ...   # also run `pytest -m recipe` on every healthy gallery recipe (~3 min)

Unit tests feed the checks hand-made histories or short real runs on digits28; the suite tests
run `pytest -m recipe --recipe ...` in-process through pytester, as a user would.
"""
import math
import os
from pathlib import Path

import pytest
import torch

from harness.checks import dynamics as dyn
from harness import History, load_recipe, train
from harness.data import digits28, split_len
from harness.fit import evaluate_loss_acc
from harness.lr_find import lr_find, steepest
from harness.schedules import step_lr
from tests.outcomes import assert_healthy
from tests.recipes_dynamics import recipes as planted

RECIPES = Path(__file__).parent / "recipes_dynamics" / "recipes.py"
GALLERY = Path(__file__).parent / "gallery" / "healthy.py"


@pytest.fixture(scope="module")
def data():
    return digits28()


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("digits28")


def hist(**fields) -> History:
    return History(**fields)


# --- learning rate ------------------------------------------------------------------------------

def test_diverges_passes_when_fit_flags_it(recipe, data):
    h = train(recipe, data=data, seed=0, lr=3.0).history  # lr 3 diverges in epoch 1
    result = dyn.check_diverges(h, 3.0, recipe.epochs, 10)
    assert result.passed and h.epochs_run < recipe.epochs, result


def test_diverges_fires_when_the_lr_trains_fine(recipe, data):
    h = train(recipe, data=data, seed=0, lr=0.1, epochs=5).history
    result = dyn.check_diverges(h, 0.1, 5, 10)
    assert result.name == "lr_does_not_diverge"
    assert "0.1" in result.message() and "--harness-diverge-lr" in result.message()


def test_diverges_fires_when_a_loss_at_chance_is_not_flagged():
    h = hist(train_loss=[2.4, 2.31, 2.306], val_acc=[0.1] * 3, steps=[10] * 3)
    assert dyn.check_diverges(h, 1.0, 3, 10).name == "divergence_not_detected"
    assert dyn.check_diverges(hist(train_loss=[2.0, math.nan]), 1.0, 2, 10).name == "divergence_not_detected"


def test_high_and_low_lr_are_relative_to_the_recipe():
    assert dyn.high_lr(0.1) == 1.0 and dyn.high_lr(0.5) == 5.0 and dyn.high_lr(0.1, given=3.0) == 3.0
    assert dyn.low_lr(0.1) == 1e-4 and dyn.low_lr(1e-3) == pytest.approx(1e-6)


def test_low_lr_check():
    good, slow = hist(val_acc=[0.5, 0.9], train_loss=[1, 1]), hist(val_acc=[0.12, 0.15], train_loss=[2, 2])
    assert dyn.check_low_lr_learns_less(slow, good, 1e-4, 0.1, 10).passed
    result = dyn.check_low_lr_learns_less(good, good, 1e-4, 0.1, 10)
    assert result.name == "low_lr_learns_as_much" and "0.900" in result.observed


def test_recipe_lr_best_allows_the_stated_tolerance():
    runs = {0.01: hist(val_acc=[0.90]), 0.1: hist(val_acc=[0.93]), 1.0: hist(val_acc=[0.3], diverged=True)}
    assert dyn.check_recipe_lr_best(runs, 0.1).passed
    assert dyn.check_recipe_lr_best(runs, 0.01).passed  # 0.03 behind, tolerance 0.05
    result = dyn.check_recipe_lr_best(runs, 1.0)
    assert result.name == "recipe_lr_not_best" and "diverged: 1" in result.observed
    assert dyn.score(runs[1.0]) == 0.0  # a diverged run scores nothing


# --- batch size ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n, batch_size, drop_last", [(1258, 8, False), (1258, 8, True), (1258, 2048, False),
                                                     (1000, 100, False), (1000, 100, True), (1001, 100, True)])
def test_expected_steps_match_a_dataloader(n, batch_size, drop_last):
    oracle = len(torch.utils.data.DataLoader(range(n), batch_size=batch_size, drop_last=drop_last))
    assert dyn.expected_steps(n, batch_size, drop_last) == oracle


@pytest.mark.parametrize("drop_last", [False, True])
def test_steps_counted_pass_on_the_default_step(recipe, data, drop_last):
    h = train(recipe, data=data, seed=0, batch_size=8, epochs=1, drop_last=drop_last).history
    assert dyn.check_steps_per_epoch(h, split_len(data.train), 8, drop_last).passed


def test_steps_counted_fire_on_a_step_that_skips_optimizer_step(data):
    r = planted.SKIPS_OPTIMIZER_STEP
    h = train(r, data=data, seed=0, batch_size=8, epochs=1).history
    result = dyn.check_steps_per_epoch(h, split_len(data.train), 8)
    assert result.name == "steps_per_epoch_wrong"
    assert "ceil(1258/8) = 158" in result.message() and str(h.steps) in result.observed


def test_small_batch_check(recipe, data):
    small = train(recipe, data=data, seed=0, batch_size=8, epochs=2).history
    large = train(recipe, data=data, seed=0, batch_size=2048, epochs=2).history
    assert dyn.check_small_batch_lower_loss(small, large, 8, 2048, 0.1).passed
    result = dyn.check_small_batch_lower_loss(large, small, 2048, 8, 0.1)
    assert result.name == "small_batch_not_lower_loss"


# --- lr range test --------------------------------------------------------------------------------

def test_lr_find_restores_model_and_optimizer(recipe, data):
    torch.manual_seed(0)
    model = recipe.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(model, data, optimizer=lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), steps=60)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios and max(ratios) == pytest.approx(min(ratios)) and result.lrs[0] == pytest.approx(1e-7)
    assert result.diverge_lr is not None and result.diverge_lr == result.lrs[-1]


def test_lr_find_smoothing_and_slope_against_an_oracle():
    lrs = [10 ** (-4 + i * 0.1) for i in range(40)]
    loss = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 2) * 4)) for lr in lrs]  # steepest at lr 1e-2
    assert steepest(lrs, loss) == pytest.approx(1e-2, rel=0.3)


def test_lr_find_check():
    from harness.lr_find import LRFind
    result = LRFind(lrs=[1e-3, 1e-2, 1.0, 4.0], smoothed=[2.3, 2.0, 1.5, 9.0], suggested_lr=0.3, diverge_lr=4.0)
    assert dyn.check_lr_find(result, 0.1, 10.0).passed
    failed = dyn.check_lr_find(result, 10.0, 10.0)
    assert failed.name == "lr_find_default_above_divergence" and "diverges at lr 4" in failed.observed


# --- subset, early stopping, StepLR, zero inputs --------------------------------------------------

def test_subset_ranking_check():
    h = lambda acc: hist(val_acc=[acc])  # noqa: E731
    full = {0.01: h(0.6), 0.1: h(0.92), 1.0: h(0.1)}
    assert dyn.check_subset_ranking({0.01: h(0.3), 0.1: h(0.7), 1.0: h(0.2)}, full, 314, 1258).passed
    result = dyn.check_subset_ranking({0.01: h(0.5), 0.1: h(0.4), 1.0: h(0.2)}, full, 314, 1258)
    assert result.name == "subset_ranking_differs" and "winner 0.01" in result.observed
    # lrs the subset cannot tell apart (within the tolerance) are ties: either may win on the full set
    near_tie = {0.0003: h(0.826), 0.003: h(0.881), 0.03: h(0.889)}
    on_full = {0.0003: h(0.863), 0.003: h(0.926), 0.03: h(0.856)}
    assert dyn.check_subset_ranking(near_tie, on_full, 314, 1258).passed  # the LSTM, seed 4
    assert dyn.subset_size(1258) == 314 and dyn.subset_size(54000) == 5000
    assert dyn.subset_epochs(15, 1258, 314, 128) == 15 * 10 // 3


def test_early_stopping_check_passes_after_fit_restores(recipe, data):
    run = train(recipe, data=data, seed=0, lr=0.5, patience=1)
    _, acc = evaluate_loss_acc(run.model, data.val)
    assert dyn.check_early_stopping(run.history, acc, split_len(data.val)).passed


def test_early_stopping_check_fires_on_weights_that_were_not_restored(recipe, data):
    run = train(recipe, data=data, seed=0, lr=0.5, patience=1)
    with torch.no_grad():
        for p in run.model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the 'last epoch' weights, not the best
    _, acc = evaluate_loss_acc(run.model, data.val)
    result = dyn.check_early_stopping(run.history, acc, split_len(data.val))
    assert result.name == "early_stopping_not_restoring", result


def test_step_lr_check(recipe, data):
    h = train(recipe, data=data, seed=0, epochs=5, scheduler=step_lr(2, 0.1)).history
    assert dyn.check_step_lr(h, 0.1, 2, 0.1).passed
    ignores_lr = recipe.replace(optimizer=lambda params, lr: torch.optim.SGD(params, lr=0.5))
    h = train(ignores_lr, data=data, seed=0, epochs=5, scheduler=step_lr(2, 0.1)).history
    assert dyn.check_step_lr(h, 0.1, 2, 0.1).name == "step_lr_wrong"
    per_batch = hist(lr=[0.1, 1e-5, 1e-12], train_loss=[1, 1, 1])
    assert dyn.check_step_lr(per_batch, 0.1, 2, 0.1).name == "step_lr_wrong"


def test_zero_input_baseline(recipe, data):
    real = train(recipe, data=data, seed=0, epochs=3).history
    zero = train(recipe, data=dyn.zeroed(data), seed=0, epochs=3).history
    assert dyn.check_uses_inputs(real, zero).passed
    blind = planted.IGNORES_INPUTS
    real = train(blind, data=data, seed=0, epochs=3).history
    zero = train(blind, data=dyn.zeroed(data), seed=0, epochs=3).history
    assert dyn.check_uses_inputs(real, zero).name == "model_ignores_inputs"


# --- the suite, run as a user would ---------------------------------------------------------------

def run_recipe_suite(pytester, recipe, *args):
    return pytester.runpytest("--pyargs", "harness.suites", "-m", "recipe", "--recipe", recipe,
                              "-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_default_recipe_passes_the_recipe_suite(pytester):
    assert_healthy(run_recipe_suite(pytester, "digits28"), "recipe")


@pytest.mark.parametrize("name", sorted(planted.CAUGHT_BY))
def test_planted_dynamics_bug_is_caught(pytester, name):
    result = run_recipe_suite(pytester, f"{RECIPES}:{name}")
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed", 0) >= 1, out[-3000:]
    assert f"[{planted.CAUGHT_BY[name]}]" in out, out[-3000:]


def test_a_suppressed_check_is_skipped(pytester):
    result = run_recipe_suite(pytester, f"{RECIPES}:SKIPS_OPTIMIZER_STEP", "--harness-suppress", "steps_counted",
                              "-k", "steps_counted")
    result.assert_outcomes(skipped=4)


HEALTHY = ["FROZEN_FIRST_LAYER_TUNED"] + (
    [f"gallery:{n}" for n in ("SMALL_CNN", "BN_DROPOUT_MLP_ADAM", "LSTM")]
    if os.environ.get("HARNESS_RECIPE_GALLERY") == "1" else [])


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_recipe_passes_the_recipe_suite(pytester, name):
    spec = f"{GALLERY}:{name.split(':')[1]}" if name.startswith("gallery:") else f"{RECIPES}:{name}"
    assert_healthy(run_recipe_suite(pytester, spec), "recipe")
