"""Overfit one sample, then one batch, with the recipe's own settings: the blog's proof that
model, loss and step can learn at all.

    from harness.checks.overfit import check_overfit
    result = check_overfit(recipe, recipe.build_model(), (x[:64], y[:64]))

The recipe's optimizer, lr, scheduler (spread over the step budget) and train_step train the
model on one fixed batch. The loss target comes from what the loss can reach on this batch
(`reachable_loss`: label smoothing and ignore_index bound it from below; samples with the same
input cannot be told apart), and success is closing `1 - gap` of the way from the starting loss
to that floor. The loss is judged in train mode with dropout-like layers off (BatchNorm uses
batch statistics, as when it trained), then confirmed in eval mode.

When the recipe's settings fail, a reference run (Adam, lr 3e-3, the same step) tells the two
causes apart: if the reference overfits, the recipe's lr / optimizer / weight decay is the problem
(`recipe_settings_cannot_overfit`, with short probes at lr/10 and 10 x lr saying which way to
move); if it does not, the model, the loss or the step is (`cannot_overfit_batch`).
"""
from __future__ import annotations

import copy
import math

import torch

from harness.checks import recipe_ops as ops
from harness.checks.result import CheckResult, failed, passed

CHECK_EVERY = 10         # steps between (synchronising) evaluations
REFERENCE_LR = 3e-3      # Adam, as the blog, torchtest and pytest-torch overfit


def reachable_loss(recipe, outputs: torch.Tensor, targets, inputs=None, steps: int = 150) -> float:
    """The lowest loss any outputs reach on this batch: free outputs (one per distinct input,
    so duplicated inputs share one) optimised directly against the recipe's loss."""
    start = outputs.detach().float()
    if inputs is not None and start.dim() >= 1:
        groups = _groups(inputs)
    else:
        groups = torch.arange(len(start))
    free = start[_first_of_each(groups)].clone().requires_grad_(True)
    opt = torch.optim.Adam([free], lr=0.2)
    best = math.inf
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            value = ops.loss(recipe, free[groups].to(outputs.dtype), targets)
            value.backward()
            opt.step()
            best = min(best, float(value.detach()))
    return max(best, 0.0) if math.isfinite(best) else 0.0


def _groups(inputs) -> torch.Tensor:
    """Group id per sample: samples with identical inputs (every leaf) share an id."""
    leaves = ops.leaves(inputs)
    n = len(leaves[0])
    rows = torch.cat([t.detach().reshape(n, -1).double().cpu() for t in leaves], 1)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    return inverse.to(leaves[0].device)


def _first_of_each(groups: torch.Tensor) -> torch.Tensor:
    order = torch.full((int(groups.max()) + 1,), -1, dtype=torch.long, device=groups.device)
    idx = torch.arange(len(groups), device=groups.device)
    order.scatter_reduce_(0, groups, idx, reduce="amin", include_self=False)
    # free[g] holds group g's outputs; free[groups] gives each sample its group's row
    return order


@torch.no_grad()
def _judge(recipe, model, x, y, eval_mode: bool) -> float:
    if eval_mode:
        was = model.training
        model.eval()
        try:
            return float(ops.loss(recipe, ops.forward(recipe, model, x), y))
        finally:
            model.train(was)
    with ops.train_mode_without_noise(model):
        return float(ops.loss(recipe, ops.forward(recipe, model, x), y))


def _train(recipe, model, x, y, optimizer, scheduler, max_steps, target):
    """Steps until the judged loss reaches target. Returns (steps, start, last judged loss, peak step loss)."""
    start = _judge(recipe, model, x, y, eval_mode=False)
    last, peak, steps = start, start, 0
    while steps < max_steps:
        losses = [ops.step(recipe, model, x, y, optimizer, scheduler) for _ in range(CHECK_EVERY)]
        steps += CHECK_EVERY
        step_peak = float(torch.stack([torch.as_tensor(v).detach().float().reshape(()).cpu() for v in losses]).max())
        peak = max(peak, step_peak) if math.isfinite(step_peak) else math.inf
        last = _judge(recipe, model, x, y, eval_mode=False)
        if not math.isfinite(last) or last <= target:
            break
    return steps, start, last, peak


def check_overfit(recipe, model, batch, max_steps: int = 500, gap: float = 0.05) -> CheckResult:
    """Train on one fixed batch with the recipe's settings until the loss closes (1 - gap) of the
    way from its start to the reachable floor; then confirm in eval mode."""
    x, y = batch
    n = ops.batch_len(x)
    one = n <= 2 and int(_groups(x).max()) == 0  # one sample, perhaps repeated for BatchNorm
    check = "overfit_sample" if one else "overfit_batch"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    if skip := ops.defer_to_output_shape(check, recipe, model, batch):
        return skip
    initial = copy.deepcopy(model)
    try:
        with torch.no_grad(), ops.train_mode_without_noise(model):
            outputs = ops.forward(recipe, model, x)
        floor = reachable_loss(recipe, outputs, y, inputs=x)
        start = _judge(recipe, model, x, y, eval_mode=False)
        target = floor + gap * (start - floor)
        optimizer = ops.optimizer_for(recipe, model)
        settings = ops.describe_optimizer(optimizer)
        scheduler = ops.scheduler_for(recipe, optimizer, max_steps)
        steps, start, loss, worst = _train(recipe, model, x, y, optimizer, scheduler, max_steps, target)
    except Exception as e:
        return failed(check, "train_step_crashed", f"training on one batch raised {type(e).__name__}: {e}",
                      "a step that runs", "training cannot run",
                      ["check the labels (see labels) and the output width (see output_shape)",
                       "run the step by hand on one batch"])
    seen = (f"after {steps} steps of {settings} on {n} sample(s): loss {start:.4g} -> {loss:.4g} "
            f"(reachable floor {floor:.3g}, target {target:.3g})")
    if math.isfinite(loss) and loss <= target:
        return _confirm_in_eval(recipe, model, x, y, check, seen, start, floor, target, steps)
    return _diagnose(recipe, initial, x, y, check, seen, settings, start, loss, worst, floor, target, max_steps, n)


def _confirm_in_eval(recipe, model, x, y, check, seen, start, floor, target, steps) -> CheckResult:
    """The loss reached in train mode must hold in eval mode; BatchNorm running statistics that lag
    behind (a small momentum) are re-estimated on the batch before judging."""
    eval_target = floor + 0.25 * (start - floor)
    eval_loss = _judge(recipe, model, x, y, eval_mode=True)
    note = ""
    if not (eval_loss <= eval_target) and ops.has_batchnorm(model):
        lagging = eval_loss
        _recalibrate_batchnorm(recipe, model, x)
        eval_loss = _judge(recipe, model, x, y, eval_mode=True)
        note = f" (BatchNorm statistics re-estimated on the batch: eval loss {lagging:.3g} -> {eval_loss:.3g})"
    seen = f"{seen}; eval-mode loss {eval_loss:.4g}{note}"
    if math.isfinite(eval_loss) and eval_loss <= eval_target:
        return passed(check, seen, steps=steps, eval_loss=eval_loss)
    return failed(check, "overfit_lost_in_eval_mode", seen,
                  f"the eval-mode loss on the same batch also near the floor (<= {eval_target:.3g})",
                  "the model learned the batch in train mode but eval mode computes something else, so "
                  "validation and deployment see a different model from the one that trained",
                  ["a branch on self.training that changes more than dropout (a layer skipped in eval?)",
                   "a custom norm layer whose eval path uses different statistics or parameters",
                   "noise or masking left on at evaluation only"], eval_loss=eval_loss)


def _recalibrate_batchnorm(recipe, model, x):
    """Reset BatchNorm running statistics and re-estimate them as a plain average over the batch."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    try:
        with torch.no_grad(), ops.train_mode_without_noise(model):
            ops.forward(recipe, model, x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def _probe(recipe, initial, x, y, target, max_steps, factor) -> float:
    """The judged loss the recipe's own optimizer reaches at `factor` x its lr (inf when it fails)."""
    try:
        model = copy.deepcopy(initial)
        optimizer = ops.optimizer_for(recipe, model, lr=recipe.lr * factor)
        _, _, loss, _ = _train(recipe, model, x, y, optimizer, None, max_steps, target)
        return loss if math.isfinite(loss) else math.inf
    except Exception:
        return math.inf


def _diagnose(recipe, initial, x, y, check, seen, settings, start, loss, worst, floor, target, max_steps, n):
    """The recipe's settings did not overfit: does a reference Adam run on the same model and step?"""
    reference = None
    try:
        model = copy.deepcopy(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=REFERENCE_LR)
        r_steps, _, r_loss, _ = _train(recipe, model, x, y, optimizer, None, max_steps, target)
        reference = (r_steps, r_loss)
    except Exception:
        pass
    expected = f"loss <= {target:.3g} (start {start:.3g}, reachable {floor:.3g}) within {max_steps} steps"
    if reference is not None and math.isfinite(reference[1]) and reference[1] <= target:
        ref = f"; Adam(lr={REFERENCE_LR:g}) with the same model and step reaches {reference[1]:.3g} in {reference[0]} steps"
        probe_steps = max(CHECK_EVERY, max_steps // 4)  # which way the lr should move, cheaply
        lower = _probe(recipe, initial, x, y, target, probe_steps, 0.1)
        higher = _probe(recipe, initial, x, y, target, probe_steps, 10.0)
        lr = getattr(recipe, "lr", None)
        probes = f"; in {probe_steps} steps the recipe's optimizer at lr/10 reaches {lower:.3g}, at 10 x lr {higher:.3g}"
        exploded = not math.isfinite(loss) or not math.isfinite(worst) or worst > 3 * start
        if exploded or lower < higher:
            why = ("the loss spikes or the steps are too large to settle" if exploded else
                   "a smaller step does better")
            hints = [f"lower the lr (the recipe uses {settings}); an lr tuned for SGD is far too large for Adam",
                     "lower the weight decay: lr x weight decay near 1 erases the weights every step",
                     "add warmup or gradient clipping if the first steps explode"]
        else:
            why = "the steps are too small to get anywhere"
            hints = [f"raise the lr (the recipe uses {settings}); Adam wants about 1e-3, SGD about 0.1",
                     "a scheduler that starts at (or decays to) an lr of almost zero"]
        return failed(check, "recipe_settings_cannot_overfit", seen + ref + probes, expected,
                      f"with its own settings ({settings}) the recipe cannot fit one batch in {max_steps} steps "
                      f"while the same model and step can with Adam: {why}. Full training with these settings "
                      "will crawl, stall or diverge", hints + ["run `harness sweep lr` to see where this optimizer trains"])
    ref = "" if reference is None else f"; Adam(lr={REFERENCE_LR:g}) does not either ({reference[1]:.3g})"
    symptom = "cannot_overfit_sample" if check == "overfit_sample" else "cannot_overfit_batch"
    hints = []
    if math.isfinite(loss) and abs(loss - start) <= 1e-3 * max(abs(start), 1e-12):
        hints.append("the loss never moved: every output is clamped or constant (a ReLU after the last layer, as "
                     "SqueezeNet's head has, can switch all logits to 0) or no gradient reaches the head")
    if math.isfinite(loss) and loss > 0.3 * start:
        hints.append("the loss stalls: outputs squashed by a softmax/sigmoid before a loss that applies its own "
                     "(see outputs_are_logits)")
    hints += ["a bug in the loss: wrong targets, wrong reduction, or the wrong loss for the task",
              "dead or saturated units (see gradients); unnormalised inputs (see input_range)",
              "the model is too small or its forward discards information (a wrong view/reshape)"]
    return failed(check, symptom, seen + ref, expected,
                  "a model that cannot memorise one batch cannot learn the dataset; the bug is in the "
                  "model, the loss or the step, not in the hyperparameters", hints, loss=loss)
