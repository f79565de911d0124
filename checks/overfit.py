"""Overfit one sample, then one batch, with the recipe's own settings: the blog's proof that
model, loss and step can learn at all.

    from harness.checks.overfit import check_overfit
    result = check_overfit(recipe, recipe.build_model(), (x[:64], y[:64]))

The recipe's optimizer, lr, scheduler (spread over the step budget) and train_step train the
model on one fixed batch. The loss target comes from what the loss can reach on this batch
(`reachable_loss`: label smoothing and ignore_index bound it from below; outputs that see the
same input cannot be told apart, as the task's `output_groups` says: samples with equal inputs,
and in a causal LM sequences with a common prefix at each position of it; segmentation logits
upsampled from a coarser grid are free on that grid only, `task.output_space`), and success is closing
`1 - gap` of the way from the starting loss to that floor. A task with loss parts (MultiLabel: one
BCE per label, `task.loss_parts`) is judged per part too: every label that has something to learn
on the batch closes its own gap, so one dead label cannot hide in the mean. The loss is judged in train mode with dropout-like layers off (BatchNorm uses
batch statistics, as when it trained), then confirmed in eval mode.

When the recipe's settings fail, a reference run (Adam, lr 3e-3, the same step) tells the two
causes apart: if the reference overfits, the recipe's lr / optimizer / weight decay is the problem
(`recipe_settings_cannot_overfit`, with short probes at lr/10 and 10 x lr saying which way to
move); if it does not, the model, the loss or the step is (`cannot_overfit_batch`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch

from harness import tasks
from harness.checks import recipe_ops as ops
from harness.checks.result import CheckResult, failed, passed

CHECK_EVERY = 10         # steps between (synchronising) evaluations
REFERENCE_LR = 3e-3      # Adam, as the blog, torchtest and pytest-torch overfit
LEARNABLE = 0.01         # a loss part (label) whose start is within 1 % of its floor has nothing to learn
SOUND = 0.8              # the recipe's own settings closing this much of the gap (Adam closing it all) are slow, not wrong


def reachable_loss(recipe, outputs: torch.Tensor, targets, inputs=None, steps: int = 300) -> float:
    """The lowest loss any outputs reach on this batch: free outputs, one per group of outputs that
    no model can tell apart (the task's `output_groups`: one per distinct input; per shared prefix
    and position in a causal LM), optimised directly against the recipe's loss."""
    best, _ = _free_minimum(recipe, outputs, targets, inputs, lambda out: ops.loss(recipe, out, targets), steps)
    return best


def reachable_parts(recipe, outputs: torch.Tensor, targets, inputs=None, steps: int = 300):
    """The lowest value of each of the task's loss parts (per label), (P,), or None when the task
    judges its loss as a whole. The parts cover disjoint outputs, so each one's minimum is reached
    together with the others'."""
    if ops.task_hook(recipe, "loss_parts")(outputs.detach(), targets) is None:
        return None
    parts_of = ops.task_hook(recipe, "loss_parts")
    _, parts = _free_minimum(recipe, outputs, targets, inputs, lambda out: parts_of(out, targets), steps)
    return parts


def _free_minimum(recipe, outputs, targets, inputs, objective, steps):
    """(lowest total, lowest value of each part) of `objective` (-> scalar or (P,)) over free outputs."""
    groups = (ops.task_hook(recipe, "output_groups")(inputs, outputs.detach()) if inputs is not None and outputs.dim() >= 1
              else torch.arange(len(outputs), device=outputs.device))
    flat = groups.reshape(-1)
    units = outputs.detach().float().reshape(flat.numel(), *outputs.shape[groups.dim():])  # one per unit of `groups`
    chosen = units[_first_of_each(flat)]                                    # one per group
    space = ops.task_hook(recipe, "output_space")(outputs.detach())  # outputs upsampled from a coarser grid?
    down, up = space if space is not None else (lambda o: o, lambda c: c)
    starts = [down(chosen)]
    if isinstance(targets, torch.Tensor) and targets.is_floating_point() and targets.shape == outputs.shape:
        # outputs in the targets' own units (regression): also start from each group's mean target,
        # the squared error's exact minimum, which Adam steps from the model's outputs may never reach
        sums = torch.zeros_like(chosen).index_add_(0, flat, targets.detach().float().reshape(units.shape))
        counts = torch.bincount(flat, minlength=len(chosen)).clamp(min=1).reshape(-1, *[1] * (chosen.dim() - 1))
        starts.append(down(sums / counts))
    best, parts = math.inf, None
    for start in starts:
        free = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([free], lr=0.2)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                value = objective(up(free)[flat].reshape(outputs.shape).to(outputs.dtype))
                total = value.sum()
                total.backward()
                opt.step()
                best = min(best, float(total.detach()))
                if value.dim() > 0:
                    now = value.detach().float().clamp(min=0)
                    parts = now if parts is None else torch.minimum(parts, now)
    return (max(best, 0.0) if math.isfinite(best) else 0.0), parts


def _target_scale_hint(y) -> list:
    """A hint when float targets (regression) sit far from unit scale, which no lr fixes well."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.numel() < 2:
        return []
    mean, std = float(y.float().mean()), float(y.float().std())
    if not (abs(mean) > 10 * max(std, 1e-12) or abs(mean) > 100 or std > 100 or 0 < std < 1e-2):
        return []
    return [f"the targets are far from unit scale (mean {mean:.4g}, std {std:.4g}): standardise them "
            "(y - mean) / std when the data is built, and undo it at prediction time"]


def overfit_rows(recipe, targets, n: int) -> torch.Tensor:
    """The (about) n rows of a batch to overfit, as the task picks them (classification: every class
    equally often)."""
    return ops.task_hook(recipe, "overfit_rows")(targets, n)


def _groups(inputs) -> torch.Tensor:
    """Group id per sample: samples with identical inputs (every leaf) share an id."""
    return tasks.distinct_rows(inputs)


def _first_of_each(groups: torch.Tensor) -> torch.Tensor:
    """(K,) the first index holding each group id 0..K-1: free[g] holds group g's outputs, and
    free[groups] gives each unit its group's row."""
    order = torch.full((int(groups.max()) + 1,), -1, dtype=torch.long, device=groups.device)
    idx = torch.arange(len(groups), device=groups.device)
    order.scatter_reduce_(0, groups, idx, reduce="amin", include_self=False)
    return order


@dataclass
class Goal:
    """What overfitting one batch means: the loss at or under `target`, and each loss part (per
    label) at or under its own target (inf for a part with nothing to learn on this batch)."""
    target: float
    part_targets: Optional[torch.Tensor] = None

    def reached(self, loss: float, parts) -> bool:
        if not (math.isfinite(loss) and loss <= self.target):
            return False
        return self.part_targets is None or parts is None or bool((parts <= self.part_targets).all())


def _goal(recipe, model, x, y, outputs, gap):
    """(Goal, floor, start, start_parts, floor_parts) for one batch, from the reachable loss."""
    floor = reachable_loss(recipe, outputs, y, inputs=x)
    floor_parts = reachable_parts(recipe, outputs, y, inputs=x)
    start, start_parts = _judge(recipe, model, x, y, eval_mode=False)
    part_targets = None
    if floor_parts is not None and start_parts is not None:
        learnable = (start_parts - floor_parts) > LEARNABLE * start_parts.abs() + 1e-6
        part_targets = torch.where(learnable, floor_parts + gap * (start_parts - floor_parts),
                                   torch.full_like(floor_parts, math.inf))
    return Goal(floor + gap * (start - floor), part_targets), floor, start, start_parts, floor_parts


@torch.no_grad()
def _judge(recipe, model, x, y, eval_mode: bool):
    """(loss, loss parts or None) of the model on the batch, in eval mode or in train mode without noise."""
    if eval_mode:
        was = model.training
        model.eval()
        try:
            return _losses(recipe, ops.forward(recipe, model, x), y)
        finally:
            model.train(was)
    with ops.train_mode_without_noise(model):
        return _losses(recipe, ops.forward(recipe, model, x), y)


def _losses(recipe, outputs, y):
    parts = ops.task_hook(recipe, "loss_parts")(outputs, y)
    return float(ops.loss(recipe, outputs, y)), (None if parts is None else parts.detach().float())


def _train(recipe, model, x, y, optimizer, scheduler, max_steps, goal: Goal):
    """Steps until the judged loss reaches the goal. Returns (steps, start, last judged loss, peak step
    loss, last judged parts)."""
    start, parts = _judge(recipe, model, x, y, eval_mode=False)
    last, peak, steps = start, start, 0
    while steps < max_steps:
        losses = [ops.step(recipe, model, x, y, optimizer, scheduler) for _ in range(CHECK_EVERY)]
        steps += CHECK_EVERY
        step_peak = float(torch.stack([torch.as_tensor(v).detach().float().reshape(()).cpu() for v in losses]).max())
        peak = max(peak, step_peak) if math.isfinite(step_peak) else math.inf
        last, parts = _judge(recipe, model, x, y, eval_mode=False)
        if not math.isfinite(last) or goal.reached(last, parts):
            break
    return steps, start, last, peak, parts


def _missed_parts(recipe, goal, parts, start_parts, floor_parts, most: int = 3) -> str:
    """'; 2 of 10 labels did not close their gap: label 9 0.69 (start 0.69, floor 0), ...', worst first, or ''."""
    if goal.part_targets is None or parts is None:
        return ""
    missed = (~(parts <= goal.part_targets)).nonzero().flatten().tolist()
    if not missed:
        return ""
    left = (parts - floor_parts) / (start_parts - floor_parts).clamp(min=1e-12)  # share of the gap left
    missed.sort(key=lambda i: -float(left[i]))
    name = ops.task_hook(recipe, "part_name")
    named = ", ".join(f"{name(i)} {float(parts[i]):.3g} (start {float(start_parts[i]):.3g}, "
                      f"floor {float(floor_parts[i]):.2g})" for i in missed[:most])
    kind = name(0).split(" ")[0]
    return f"; {len(missed)} of {len(parts)} {kind}s did not close their gap: {named}"


def check_overfit(recipe, model, batch, max_steps: int = 500, gap: float = 0.05) -> CheckResult:
    """Train on one fixed batch with the recipe's settings until the loss closes (1 - gap) of the
    way from its start to the reachable floor (and each loss part, e.g. each label, closes its own);
    then confirm in eval mode."""
    x, y = batch
    n = ops.batch_len(x)
    one = n <= 2 and int(_groups(x).max()) == 0  # one sample, perhaps repeated for BatchNorm
    check = "overfit_sample" if one else "overfit_batch"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    if skip := ops.defer_to_output_shape(check, recipe, model, batch) or ops.defer_to_gradients(check, model):
        return skip
    initial = copy.deepcopy(model)
    try:
        with torch.no_grad(), ops.train_mode_without_noise(model):
            outputs = ops.forward(recipe, model, x)
        goal, floor, start, start_parts, floor_parts = _goal(recipe, model, x, y, outputs, gap)
        optimizer = ops.optimizer_for(recipe, model)
        settings = ops.describe_optimizer(optimizer)
        scheduler = ops.scheduler_for(recipe, optimizer, max_steps)
        steps, start, loss, worst, parts = _train(recipe, model, x, y, optimizer, scheduler, max_steps, goal)
    except Exception as e:
        return failed(check, "train_step_crashed", f"training on one batch raised {type(e).__name__}: {e}",
                      "a step that runs", "training cannot run",
                      ["check the labels (see labels) and the output width (see output_shape)",
                       "run the step by hand on one batch"])
    seen = (f"after {steps} steps of {settings} on {n} sample(s): loss {start:.4g} -> {loss:.4g} "
            f"(reachable floor {floor:.3g}, target {goal.target:.3g})")
    if goal.reached(loss, parts):
        return _confirm_in_eval(recipe, model, x, y, check, seen, start, floor, goal.target, steps)
    seen += _missed_parts(recipe, goal, parts, start_parts, floor_parts)
    bad_lr = [float(g["lr"]) for g in optimizer.param_groups if not float(g["lr"]) >= 0]
    if bad_lr:  # a schedule gone negative or NaN, not the model: say so instead of diagnosing
        return failed(check, "recipe_settings_cannot_overfit", f"{seen}; the lr became {bad_lr[0]:g}",
                      f"loss <= {goal.target:.3g} with a learning rate >= 0",
                      "a negative lr climbs the loss and a NaN lr poisons every weight: training diverges "
                      "whatever the model",
                      ["the scheduler (or train_step) drives the lr negative or NaN: check its factory "
                       "(gamma, warmup, total steps; the suite spreads it over the check's steps)"])
    return _diagnose(recipe, initial, x, y, check, seen, settings, start, loss, worst, floor, goal, max_steps, n,
                     missed_parts=parts is not None and math.isfinite(loss) and loss <= goal.target)


def _confirm_in_eval(recipe, model, x, y, check, seen, start, floor, target, steps) -> CheckResult:
    """The loss reached in train mode must hold in eval mode; BatchNorm running statistics that lag
    behind (a small momentum) are re-estimated on the batch before judging."""
    eval_target = floor + 0.25 * (start - floor)
    eval_loss, _ = _judge(recipe, model, x, y, eval_mode=True)
    note = ""
    if not (eval_loss <= eval_target) and ops.has_batchnorm(model):
        lagging = eval_loss
        _recalibrate_batchnorm(recipe, model, x)
        eval_loss, _ = _judge(recipe, model, x, y, eval_mode=True)
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
    """Reset BatchNorm running statistics and re-estimate them on the batch so that eval mode
    normalises exactly as train mode did: the batch mean, and the batch's biased variance (BatchNorm
    stores the unbiased one, n / (n - 1) larger: on a few rows and small feature maps, compounded
    over dozens of layers, enough to move the eval loss far from the train loss)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    counts = {}  # norm -> values per channel it normalised over (N x spatial)

    def count(module, args):
        counts[module] = args[0].numel() // max(args[0].shape[1], 1)
    hooks = [m.register_forward_pre_hook(count) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    try:
        with torch.no_grad(), ops.train_mode_without_noise(model):
            ops.forward(recipe, model, x)
            for m in norms:
                n = counts.get(m, 0)
                if m.track_running_stats and m.running_var is not None and n > 1:
                    m.running_var.mul_((n - 1) / n)
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def _probe(recipe, initial, x, y, goal, max_steps, factor) -> float:
    """The judged loss the recipe's own optimizer reaches at `factor` x its lr (inf when it fails)."""
    try:
        model = copy.deepcopy(initial)
        optimizer = ops.optimizer_for(recipe, model, lr=recipe.lr * factor)
        _, _, loss, _, _ = _train(recipe, model, x, y, optimizer, None, max_steps, goal)
        return loss if math.isfinite(loss) else math.inf
    except Exception:
        return math.inf


def _diagnose(recipe, initial, x, y, check, seen, settings, start, loss, worst, floor, goal, max_steps, n,
              missed_parts=False):
    """The recipe's settings did not overfit: does a reference Adam run on the same model and step?"""
    target = goal.target
    reference = None
    try:
        model = copy.deepcopy(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=REFERENCE_LR)
        r_steps, _, r_loss, _, r_parts = _train(recipe, model, x, y, optimizer, None, max_steps, goal)
        reference = (r_steps, r_loss, goal.reached(r_loss, r_parts))
    except Exception:
        pass
    kind = ops.task_hook(recipe, "part_name")(0).split(" ")[0]
    scale = _target_scale_hint(y)
    each = f", and each {kind} as close to its own floor" if goal.part_targets is not None else ""
    expected = f"loss <= {target:.3g} (start {start:.3g}, reachable {floor:.3g}){each} within {max_steps} steps"
    if reference is not None and reference[2]:
        ref = f"; Adam(lr={REFERENCE_LR:g}) with the same model and step reaches {reference[1]:.3g} in {reference[0]} steps"
        exploded = not math.isfinite(loss) or not math.isfinite(worst) or worst > 3 * start
        closed = (start - loss) / (start - floor) if math.isfinite(loss) and start > floor else 0.0
        if not exploded and closed >= SOUND and not missed_parts:
            # a transformer at AdamW 1e-3 (or 3e-4) closes 85-95 % of the gap in the budget: slower
            # than Adam at 3e-3, not a wrong lr (those close 0-10 % or diverge)
            return passed(check, f"{seen}; closed {closed:.0%} of the gap with its own settings (slower than "
                                 f"Adam(lr={REFERENCE_LR:g}), which reaches {reference[1]:.3g} in {reference[0]} steps)",
                          steps=max_steps, closed=closed)
        probe_steps = max(CHECK_EVERY, max_steps // 4)  # which way the lr should move, cheaply
        lower = _probe(recipe, initial, x, y, goal, probe_steps, 0.1)
        higher = _probe(recipe, initial, x, y, goal, probe_steps, 10.0)
        probes = f"; in {probe_steps} steps the recipe's optimizer at lr/10 reaches {lower:.3g}, at 10 x lr {higher:.3g}"
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
        hints = scale + hints
        return failed(check, "recipe_settings_cannot_overfit", seen + ref + probes, expected,
                      f"with its own settings ({settings}) the recipe cannot fit one batch in {max_steps} steps "
                      f"while the same model and step can with Adam: {why}. Full training with these settings "
                      "will crawl, stall or diverge", hints + ["run `harness sweep lr` to see where this optimizer trains"])
    ref = "" if reference is None else f"; Adam(lr={REFERENCE_LR:g}) does not either ({reference[1]:.3g})"
    symptom = "cannot_overfit_sample" if check == "overfit_sample" else "cannot_overfit_batch"
    hints = list(scale)
    if missed_parts:
        hints.append(f"the loss as a whole came down but the {kind}s named above did not: their outputs are cut "
                     f"off, constant or detached (a last layer narrower than the {kind}s, a slice, a mask, "
                     "a bias-only unit)")
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
