"""Training-dynamics checks for `pytest -m recipe`: each takes what training produced and returns a CheckResult.

    from harness.checks.dynamics import check_diverges, LR_GRID, score
    history = train(recipe, lr=1.0).history
    result = check_diverges(history, lr=1.0, epochs=recipe.epochs, num_classes=recipe.num_classes)
    print(result)                                  # '[lr_divergence] ok: ...' or the five-part message

The runs themselves happen in suites/test_recipe.py, so every check can be tested on
hand-made histories. Scores are final validation accuracies, and a run that diverged scores 0.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from harness.checks.result import CheckResult, failed, passed
from harness.data import as_tensors
from harness.recipe import Data

LR_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)   # the seed notebook's learning rates
LR_TOLERANCE = 0.05                       # val accuracy the recipe's lr may trail the best by
SUBSET_TOLERANCE = 0.05                   # val accuracy the subset's winner may trail the full set's by
LOW_LR_RATIO = 0.5                        # the low lr may gain at most this share of the recipe's gain
INPUT_MARGIN = 0.10                       # real inputs must beat zeroed inputs by this much val accuracy
DIVERGE_FACTOR = 1.05                     # in the too-high-lr run, a loss over 1.05 x ln(C) counts as diverged:
                                          # at lr 1.0 the loss often bounces around chance without ever
                                          # learning, which fit's default rules (4x chance, or collapse
                                          # after learning) miss in ~1 run in 6


def score(history) -> float:
    """Final validation accuracy; 0 for a run that diverged or has no finite accuracy."""
    if history.diverged or not history.val_acc or not math.isfinite(history.val_acc[-1]):
        return 0.0
    return history.val_acc[-1]


def _fmt(d: dict) -> str:
    return ", ".join(f"{k:g}: {v:.3f}" for k, v in d.items())


# --- helpers the suite uses to build runs -------------------------------------------------------

def low_lr(recipe_lr: float) -> float:
    """The 'too low' lr: 1e-4, or the recipe's lr / 1000 when that is lower (Adam at 1e-3 -> 1e-6)."""
    return min(1e-4, recipe_lr / 1000)


def high_lr(recipe_lr: float, given: Optional[float] = None) -> float:
    """The 'too high' lr: --harness-diverge-lr or Recipe.diverge_lr when given, else 1.0, or 10x the recipe's lr when higher."""
    return given if given is not None else max(1.0, 10 * recipe_lr)


def subset_size(n: int) -> int:
    """The blog's subset: a quarter of the training set, at most 5,000 samples."""
    return max(1, min(5000, n // 4))


def subset_epochs(epochs: int, n: int, k: int, batch_size: int) -> int:
    """Epochs on a k-sample subset that take as many optimizer steps as `epochs` on all n samples."""
    return max(1, round(epochs * expected_steps(n, batch_size) / expected_steps(k, batch_size)))


def zeroed(data: Data) -> Data:
    """The input-independent baseline's data: the same targets, every input set to zero."""
    def zero(split):
        x, y = as_tensors(split)
        return torch.zeros_like(x), y
    return Data(train=zero(data.train), val=zero(data.val), test=None, class_names=data.class_names)


# --- learning rate ------------------------------------------------------------------------------

def check_diverges(history, lr: float, epochs: int, num_classes: int) -> CheckResult:
    """A too-high lr must diverge, and fit must notice and stop instead of finishing its epochs."""
    check = "lr_divergence"
    chance = math.log(num_classes)
    last = history.train_loss[-1] if history.train_loss else math.nan
    seen = (f"lr {lr:g}: train loss per epoch {[round(v, 3) for v in history.train_loss]}, "
            f"{history.epochs_run} of {epochs} epochs run, diverged={history.diverged}")
    if history.diverged:
        return passed(check, f"{seen} ({history.diverged_reason})", lr=lr, epochs_run=history.epochs_run)
    if not math.isfinite(last) or last >= chance:
        return failed(check, "divergence_not_detected", seen,
                      f"fit flags a non-finite loss or one at or above chance (ln {num_classes} = {chance:.3f}) "
                      "as diverged and stops early",
                      "a diverged run that keeps training wastes its budget and hides the failure in a sweep",
                      ["the loss never left chance at all: the model may learn nothing at any lr "
                       "(see model_ignores_inputs, low_lr_learns_as_much)",
                       "fit's divergence detection was bypassed: is the loss returned by train_step the real loss?",
                       "a custom train_step that catches errors or clamps the loss hides divergence"],
                      lr=lr, train_loss=list(history.train_loss))
    return failed(check, "lr_does_not_diverge", seen,
                  f"at lr {lr:g} plain SGD diverges: a non-finite loss, or a loss that ends at or above "
                  f"chance ln {num_classes} = {chance:.3f}, detected before the last epoch",
                  "if even a huge lr trains, the lr may not reach the parameters, or the loss is scaled down",
                  ["the optimizer factory ignores its lr argument (check Recipe.optimizer)",
                   "the loss is divided by a large constant, or gradients are clipped hard",
                   "an adaptive or normalised model tolerates it: raise --harness-diverge-lr (e.g. --harness-diverge-lr 10)"],
                  lr=lr, train_loss=list(history.train_loss))


def check_low_lr_learns_less(low, recipe_run, low_lr: float, recipe_lr: float, num_classes: int,
                             ratio: float = LOW_LR_RATIO) -> CheckResult:
    """An lr far below the recipe's must learn far less in the same epochs (gain over chance accuracy)."""
    check = "low_lr_learns_less"
    chance = 1.0 / num_classes
    gain_low, gain_recipe = score(low) - chance, score(recipe_run) - chance
    seen = (f"val accuracy after {recipe_run.epochs_run} epochs: lr {low_lr:g} -> {score(low):.3f}, "
            f"recipe lr {recipe_lr:g} -> {score(recipe_run):.3f} (chance {chance:.3f})")
    if gain_recipe > 0 and gain_low <= ratio * gain_recipe:
        return passed(check, seen, gain_low=gain_low, gain_recipe=gain_recipe)
    return failed(check, "low_lr_learns_as_much", seen,
                  f"lr {low_lr:g} gains at most {ratio:.0%} of the recipe lr's gain over chance",
                  "when a 100-1000x smaller lr learns as well, the lr is not what limits training "
                  "(or the recipe's lr is too high to learn at all)",
                  ["the recipe's lr is too high: it learns nothing (see recipe_lr_not_best)",
                   "the optimizer factory ignores its lr argument",
                   "the task is trivial for this model; suppress this check if so"],
                  low=score(low), recipe=score(recipe_run))


def check_recipe_lr_best(runs: dict, recipe_lr: float, tolerance: float = LR_TOLERANCE) -> CheckResult:
    """The recipe's lr is the grid's best (by final val accuracy), or within `tolerance` of it."""
    check = "recipe_lr_best"
    scores = {lr: score(h) for lr, h in sorted(runs.items())}
    best_lr = max(scores, key=scores.get)
    seen = f"val accuracy by lr: {_fmt(scores)}; best lr {best_lr:g}"
    if scores[recipe_lr] >= scores[best_lr] - tolerance:
        return passed(check, seen, scores=scores)
    diverged = [f"{lr:g}" for lr, h in runs.items() if h.diverged]
    return failed(check, "recipe_lr_not_best", f"{seen}; recipe lr {recipe_lr:g} scores {scores[recipe_lr]:.3f}"
                  + (f"; diverged: {', '.join(diverged)}" if diverged else ""),
                  f"the recipe's lr within {tolerance:.2f} val accuracy of the best lr",
                  "a better lr in the same budget means the recipe leaves accuracy on the table",
                  [f"set Recipe(lr={best_lr:g}) and re-run",
                   "if the recipe's lr diverged it is far too high: try 10x lower",
                   "sweep around it: harness sweep lr --values ..."],
                  scores=scores, best_lr=best_lr)


# --- batch size ---------------------------------------------------------------------------------

def expected_steps(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one epoch: ceil(N / B), or floor with drop_last."""
    return n // batch_size if drop_last else -(-n // batch_size)


def check_steps_per_epoch(history, n: int, batch_size: int, drop_last: bool = False) -> CheckResult:
    """Steps counted by fit's optimizer hook equal ceil(N/B) (floor with drop_last) in every epoch."""
    check = "steps_counted"
    want = expected_steps(n, batch_size, drop_last)
    rule = f"{'floor' if drop_last else 'ceil'}({n}/{batch_size}) = {want}"
    seen = f"optimizer steps counted per epoch at batch {batch_size}: {history.steps}"
    if history.steps and all(s == want for s in history.steps):
        return passed(check, f"{seen} = {rule}", steps=list(history.steps))
    return failed(check, "steps_per_epoch_wrong", seen,
                  f"{rule} steps in every epoch",
                  "each missing step is a batch computed and thrown away; extra steps double-apply gradients",
                  ["the custom train_step skips optimizer.step() on some batches (an early return, a condition)",
                   "gradient accumulation is deliberate? suppress this check",
                   "train_step calls optimizer.step() more than once per batch"],
                  steps=list(history.steps), want=want)


def check_small_batch_lower_loss(small, large, small_batch: int, large_batch: int, lr: float) -> CheckResult:
    """With lr and epochs fixed, the small batch (more updates) reaches a lower training loss."""
    check = "batch_size_loss"
    ls, ll = small.train_loss[-1], large.train_loss[-1]
    ratio = small.total_steps / max(large.total_steps, 1)
    seen = (f"lr {lr:g}, {small.epochs_run} epochs: batch {small_batch} -> train loss {ls:.4f} "
            f"({small.total_steps} steps), batch {large_batch} -> {ll:.4f} ({large.total_steps} steps, "
            f"{ratio:.0f}x fewer)")
    if math.isfinite(ls) and math.isfinite(ll) and ls < ll and not small.diverged:
        return passed(check, seen, small=ls, large=ll)
    return failed(check, "small_batch_not_lower_loss", seen,
                  f"batch {small_batch} ends below batch {large_batch} in training loss",
                  "more updates per epoch should mean more progress per epoch; if not, steps are lost or "
                  "the small batch diverges",
                  ["the small batch diverged: the lr is too high for noisy gradients (try lr / 10)",
                   "optimizer.step() is skipped on some batches (see steps_per_epoch_wrong)",
                   "the loss is summed, not averaged, over the batch (large batches then take huge steps)"],
                  small=ls, large=ll)


# --- lr range test --------------------------------------------------------------------------------

def check_lr_find(result, recipe_lr: float, lr_max: float) -> CheckResult:
    """The recipe's lr lies below the lr where the range test's loss blew up."""
    check = "lr_find"
    limit = result.diverge_lr if result.diverge_lr is not None else lr_max
    seen = (f"range test over {len(result.lrs)} steps: suggested lr {result.suggested_lr or float('nan'):.3g}, "
            f"diverges at {'lr ' + format(result.diverge_lr, '.3g') if result.diverge_lr else 'no lr up to ' + format(lr_max, 'g')}; "
            f"recipe lr {recipe_lr:g}")
    if recipe_lr < limit:
        return passed(check, seen, suggested=result.suggested_lr, diverge=result.diverge_lr)
    return failed(check, "lr_find_default_above_divergence", seen,
                  f"the recipe's lr below the divergence lr {limit:.3g}",
                  "above the divergence lr the loss explodes within a few steps",
                  [f"lower the lr towards the suggestion ({result.suggested_lr or float('nan'):.3g})",
                   "plot it: harness lr-find --recipe ..."],
                  suggested=result.suggested_lr, diverge=result.diverge_lr)


# --- the blog's subset, early stopping, StepLR, the zero-input baseline --------------------------

def check_subset_ranking(subset_runs: dict, full_runs: dict, subset_n: int, full_n: int,
                         tolerance: float = SUBSET_TOLERANCE) -> CheckResult:
    """The lr that wins on the subset wins on the full set too, or trails its winner by <= tolerance.

    lrs within `tolerance` of the subset's best are ties at the subset's resolution: the check
    passes when any of them is within `tolerance` of the full set's winner.
    """
    check = "subset_ranking"
    sub = {lr: score(h) for lr, h in sorted(subset_runs.items())}
    full = {lr: score(h) for lr, h in sorted(full_runs.items())}
    sub_best, full_best = max(sub, key=sub.get), max(full, key=full.get)
    tied = [lr for lr in sub if sub[lr] >= sub[sub_best] - tolerance]
    seen = (f"val accuracy by lr on {subset_n} samples: {_fmt(sub)} (winner {sub_best:g}"
            + (f", tied within {tolerance:.2f}: {', '.join(f'{lr:g}' for lr in tied)}" if len(tied) > 1 else "")
            + f"); on all {full_n}: {_fmt(full)} (winner {full_best:g}); both at equal optimizer steps")
    if any(full[lr] >= full[full_best] - tolerance for lr in tied):
        return passed(check, seen, subset_winner=sub_best, full_winner=full_best)
    return failed(check, "subset_ranking_differs", seen,
                  f"the subset's winner within {tolerance:.2f} val accuracy of the full set's winner",
                  "the blog tunes on a subset to save time; that only works if the ranking carries over",
                  ["the subset is too small for the model: tune on more data",
                   "the subset is not representative (class balance?)",
                   "the winners are close: tune between them on the full set"],
                  subset=sub, full=full)


def check_early_stopping(history, restored_val_acc: float, n_val: int) -> CheckResult:
    """After early stopping, the model's val accuracy is the best epoch's (its weights were restored)."""
    check = "early_stopping"
    best = history.val_acc[history.best_epoch - 1] if history.best_epoch else math.nan
    seen = (f"best epoch {history.best_epoch} of {history.epochs_run} (val acc {best:.4f}), "
            f"stopped early={history.stopped_early}, diverged={history.diverged}; "
            f"the returned model scores {restored_val_acc:.4f}")
    if abs(restored_val_acc - best) <= 0.5 / max(n_val, 1):
        return passed(check, seen, best=best, restored=restored_val_acc)
    return failed(check, "early_stopping_not_restoring", seen,
                  f"the returned model scores the best epoch's val accuracy {best:.4f}",
                  "early stopping without restoring hands back the last, worse weights",
                  ["the best state_dict is copied by reference (use copy.deepcopy(model.state_dict()))",
                   "the best weights are saved but never loaded back after the loop",
                   "the model has state outside its state_dict (plain tensor attributes)"],
                  best=best, restored=restored_val_acc)


def check_step_lr(history, lr: float, step_size: int, gamma: float) -> CheckResult:
    """StepLR(step_size, gamma): the lr of epoch e is lr * gamma ** ((e - 1) // step_size)."""
    check = "step_lr"
    want = [lr * gamma ** ((e - 1) // step_size) for e in range(1, history.epochs_run + 1)]
    seen = f"lr per epoch with StepLR({step_size}, {gamma:g}): {[float(f'{v:.3g}') for v in history.lr]}"
    if len(want) == len(history.lr) and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(history.lr, want)):
        return passed(check, seen)
    return failed(check, "step_lr_wrong", seen, f"{[float(f'{v:.3g}') for v in want]}",
                  "a schedule that fires at the wrong time trains at the wrong lr for whole epochs",
                  ["the optimizer factory ignores its lr argument (the first epoch shows it)",
                   "the scheduler is stepped per batch instead of per epoch, or twice per epoch"],
                  lrs=list(history.lr), want=want)


def check_uses_inputs(real, zero, margin: float = INPUT_MARGIN) -> CheckResult:
    """Trained on real inputs the model beats the same model trained on zeros by `margin` val accuracy."""
    check = "input_baseline"
    a, b = score(real), score(zero)
    seen = (f"val accuracy after {real.epochs_run} epochs: real inputs {a:.3f}, zeroed inputs {b:.3f} "
            f"(the input-independent baseline)")
    if a >= b + margin:
        return passed(check, seen, real=a, zero=b)
    return failed(check, "model_ignores_inputs", seen,
                  f"real inputs beat zeroed ones by at least {margin:.2f}",
                  "a model that does no better with its inputs than without learns only the class prior",
                  ["forward() does not use x (a constant, a bias, a detached or overwritten tensor)",
                   "inputs are wiped before the model (normalisation by a zero or NaN std, a wrong transform)",
                   "it learns too slowly to show in a few epochs: check the lr"],
                  real=a, zero=b)
