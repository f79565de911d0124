"""The training-step check: does the recipe's `train_step` update parameters as a reference step would?

    from harness.checks.step import check_train_step
    result = check_train_step(recipe, model, [batch_a, batch_b])

A spy on the optimizer (a step pre-hook) records the gradient each `optimizer.step()` sees;
the reference gradient of the same batch at the same parameters is computed with the weights
the step started from put back for it (then the step's own result restored). A
correct step that clips or scales gradients keeps their direction; a step that never clears
gradients sees g1 + g2 at its second step, and a step that runs before backward sees no
gradient (or the previous batch's).
"""
from __future__ import annotations

import math

import torch

from harness.checks import recipe_ops as ops
from harness.checks.model import ModelState, borrowed, defer_to_output_shape
from harness.checks.result import CheckResult, failed, passed


def _dot(a: dict, b: dict, names) -> float:
    """Sum over parameters of a[n] . b[n] (a missing or None gradient counts as zero), accumulated in
    float64 across tensors; no flat float64 copy of the gradients (on a 10M-parameter model that copy
    cost more than the steps it judges)."""
    total = 0.0
    for n in names:
        if a.get(n) is not None and b.get(n) is not None:
            total += float(torch.vdot(_wide(a[n]), _wide(b[n])))
    return total


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Flat, in float32 at least (half-precision gradients are summed in float32)."""
    t = t.reshape(-1)
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _cos(a: dict, b: dict, names) -> float:
    if a is None or b is None:
        return float("nan")
    denom = math.sqrt(_dot(a, a, names) * _dot(b, b, names))
    return _dot(a, b, names) / denom if denom > 0 else 0.0


def _plus(a: dict, b: dict) -> dict:
    return {n: a[n] + b[n] if a.get(n) is not None and b.get(n) is not None else a.get(n, b.get(n))
            for n in {*a, *b}}


def _reference_grads(recipe, model, x, y, seed):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    ops.loss(recipe, ops.forward(recipe, model, x), y).backward()
    return {n: ops.grad_of(p) for n, p in model.named_parameters() if p.grad is not None}


def check_train_step(recipe, model, batches, seed: int = 0, outputs=None) -> CheckResult:
    """Run the recipe's train_step on two batches; compare each step's gradient with the reference."""
    check = "train_step"
    if skip := defer_to_output_shape(check, recipe, model, batches[0], outputs) or ops.defer_to_gradients(check, model):
        return skip
    with borrowed(model):  # the model itself trains; its parameters, buffers and grads are put back
        model.train()
        optimizer = ops.optimizer_for(recipe, model)
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        # parameters outside the optimizer are one_step's finding (params_not_in_optimizer), not this check's
        names = [n for n, p in model.named_parameters() if p.requires_grad and id(p) in held]
        by_id = {id(p): n for n, p in model.named_parameters()}
        seen = []  # one dict name -> grad per optimizer.step() call

        def spy(opt, args, kwargs):
            seen.append({by_id[id(p)]: ops.grad_of(p)
                         for g in opt.param_groups for p in g["params"] if id(p) in by_id})

        handle = optimizer.register_step_pre_hook(spy)
        recorded, reference, calls = [], [], []
        try:
            for k, (x, y) in enumerate(batches):
                start = ModelState(model)  # the parameters (and leftover gradients) this step starts from
                n_before = len(seen)
                torch.manual_seed(seed + k)
                ops.step(recipe, model, x, y, optimizer)
                calls.append(len(seen) - n_before)
                recorded.append(seen[-1] if len(seen) > n_before else {})
                end = ModelState(model)    # what the step left, for the next step: weights, buffers, gradients
                start.load()
                reference.append(_reference_grads(recipe, model, x, y, seed + k))
                end.load()
        except Exception as e:
            return failed(check, "train_step_crashed", f"train_step raised {type(e).__name__}: {e}",
                          "a step that runs on a batch", "training cannot run",
                          ["call the step by hand on one batch and read the traceback"])
        finally:
            handle.remove()
    if any(c == 0 for c in calls):
        return failed(check, "optimizer_step_skipped", f"optimizer.step() calls per batch: {calls}",
                      "one optimizer.step() per batch", "batches without a step are computed and thrown away",
                      ["call optimizer.step() on every batch (check early returns and conditions)",
                       "gradient accumulation over several batches is deliberate? suppress this check"],
                      calls=calls)
    r, g = recorded, reference
    if not any(r[0].get(n) is not None and bool(r[0][n].any()) for n in names):
        return failed(check, "optimizer_steps_before_backward",
                      "the first optimizer.step() saw no gradient at all",
                      "the step sees the gradient of the current batch",
                      "stepping before backward applies each batch's gradient one step late (or never)",
                      ["order the step as zero_grad(); out = model(x); loss = loss_fn(out, y); loss.backward(); optimizer.step()",
                       "zero_grad() between backward() and step() erases the gradient"])
    c_now, c_prev, c_sum = _cos(r[1], g[1], names), _cos(r[1], g[0], names), _cos(r[1], _plus(g[0], g[1]), names)
    c_first = _cos(r[0], g[0], names)
    numbers = (f"cosine of the gradient seen at step 2 with: this batch's {c_now:.3f}, "
               f"the previous batch's {c_prev:.3f}, their sum {c_sum:.3f}; step 1 vs its batch {c_first:.3f}")
    if c_prev > c_now + 0.05 and c_prev > c_sum:
        return failed(check, "optimizer_steps_before_backward", numbers,
                      "the step sees the gradient of the current batch",
                      "each update uses the previous batch's gradient: training lags and can oscillate",
                      ["call loss.backward() before optimizer.step()"])
    if c_sum > c_now + 0.05:
        return failed(check, "gradients_accumulate_across_steps", numbers,
                      "each step sees only its own batch's gradient (cosine with it near 1)",
                      "gradients that are never cleared add up: every step repeats all earlier ones and "
                      "the effective lr grows with the step count",
                      ["call optimizer.zero_grad() (or model.zero_grad()) at the start of every step",
                       "if you accumulate on purpose, step and clear every N batches, and suppress this check"])
    if not c_now > 0.5 or not c_first > 0.5:
        return failed(check, "step_gradient_differs", numbers,
                      "the step's gradient points the way the reference gradient does (cosine > 0.5)",
                      "the step optimises something other than the recipe's loss on this batch",
                      ["the step uses a different loss, targets or inputs than it is given",
                       "the model is in eval mode or under no_grad during the step"])
    return passed(check, numbers, cos_now=c_now, cos_sum=c_sum)
