"""Overfit one sample, then one batch: the blog's proof that model, loss and step can learn at all.

    from harness.checks.overfit import check_overfit
    result = check_overfit(recipe.build_model(), (x[:64], y[:64]), recipe)

Uses the recipe's train_step (or the reference step) with Adam, as the blog, torchtest2 and
pytest-torch do, so the check is about capacity and wiring rather than the recipe's lr.
Success: every sample right and the loss down to `target_ratio` of its start, in eval mode.
"""
from __future__ import annotations

import math

import torch

from harness.checks.result import CheckResult, failed, passed
from harness.fit import default_step

CHECK_EVERY = 25  # steps between (synchronising) evaluations


@torch.no_grad()
def _eval(model, x, y, loss_fn):
    model.eval()
    out = model(x)
    loss, correct = loss_fn(out, y), (out.argmax(1) == y).sum()
    model.train()
    loss, correct = torch.stack([loss.float(), correct.float()]).tolist()
    return loss, int(correct)


def check_overfit(model, batch, recipe, max_steps: int = 500, lr: float = 3e-3,
                  target_ratio: float = 0.05) -> CheckResult:
    """Train on one fixed batch until every sample is right and loss <= target_ratio x start."""
    x, y = batch
    n = len(y)
    one = bool((x == x[:1]).all()) if n <= 2 else False  # one sample, perhaps repeated for BatchNorm
    check = "overfit_sample" if one else "overfit_batch"
    symptom = "cannot_overfit_sample" if one else "cannot_overfit_batch"
    step = recipe.train_step or default_step
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss, correct, steps = math.nan, 0, 0
    model.train()
    try:
        start, _ = _eval(model, x, y, recipe.loss)
        loss = start
        while steps < max_steps:
            for _ in range(CHECK_EVERY):
                step(model, x, y, optimizer, recipe.loss)
            steps += CHECK_EVERY
            loss, correct = _eval(model, x, y, recipe.loss)
            if not math.isfinite(loss) or (correct == n and loss <= target_ratio * start):
                break
    except Exception as e:
        return failed(check, "train_step_crashed", f"training on one batch raised {type(e).__name__}: {e}",
                      "a step that runs", "training cannot run",
                      ["check the labels (see labels) and the output width (see output_shape)",
                       "run the step by hand on one batch"])
    seen = f"after {steps} Adam steps (lr {lr:g}) on {n} sample(s): loss {start:.4g} -> {loss:.4g}, {correct}/{n} correct"
    if math.isfinite(loss) and correct == n and loss <= target_ratio * start:
        return passed(check, seen, steps=steps, loss=loss)
    hints = []
    if math.isfinite(loss) and loss > 0.3 * start and correct >= n * 0.9:
        hints.append("the loss stalls while predictions are right: outputs squashed by a softmax/sigmoid "
                     "before cross_entropy (see outputs_are_logits)")
    hints += ["a bug in the loss: wrong targets, wrong reduction, or the wrong loss for the task",
              "dead or saturated units (see gradients); unnormalised inputs (see input_range)",
              "the model is too small or its forward discards information (a wrong view/reshape)"]
    return failed(check, symptom, seen, f"{n}/{n} correct and loss <= {target_ratio:g} x start within {max_steps} steps",
                  "a model that cannot memorise one batch cannot learn the dataset; the bug is in the "
                  "model, the loss or the step, not in the hyperparameters", hints, steps=steps, loss=loss)
