"""The gradient check: backprop agrees with finite differences of the loss.

    from harness.checks.gradcheck import check_gradcheck
    result = check_gradcheck(recipe, recipe.build_model(), batch)

On a float64 copy of the model (eval mode: dropout off, BatchNorm on its running statistics),
its weights moved off their exact initial values by a small random jitter (a zero-initialised
residual branch otherwise sits every ReLU after it exactly on its kink), and a few samples, the parameters are split into up to GROUPS consecutive groups (early layers
to late ones); for a random direction v in each group, the directional derivative from
backward, g . v, is compared with the central difference (L(θ + εv) - L(θ - εv)) / 2ε at two step sizes: a
mismatch counts when both differences agree with each other and not with backward (a ReLU kink
crossed, or round-off, separates the two instead). A custom
`torch.autograd.Function` with a wrong backward corrupts the gradient of every parameter
before it, so the group holding the layers before it disagrees. Skipped, with the reason, when
the model cannot run in float64.
"""
from __future__ import annotations

import copy
import math

import torch

from harness.checks import recipe_ops as ops
from harness.checks.model import defer_to_output_shape
from harness.checks.result import CheckResult, failed, passed

GROUPS = 6
SAMPLES = 4
EPS = 1e-6       # step along a direction whose entries are scaled to each tensor's RMS
JITTER = 1e-2    # relative move off the initial weights before checking
RTOL = 0.1       # of the larger of |g . v| and its typical size; a wrong backward is off by O(1), while
                 # kinks (ReLU, max-pool) crossed in a deep net leave a few percent (timm resnet18: 2 %)
ROUNDOFF = 1e-13  # relative round-off of a float64 loss, over 2 EPS


def check_gradcheck(recipe, model, batch, seed: int = 0, outputs=None) -> CheckResult:
    check = "gradcheck"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    if skip := defer_to_output_shape(check, recipe, model, batch, outputs) or ops.defer_to_gradients(check, model):
        return skip
    x, y = batch
    x, y = ops.take(x, slice(0, SAMPLES)), ops.take(y, slice(0, SAMPLES))
    to64 = (lambda t: t.double() if t.is_floating_point() else t)
    gen = torch.Generator().manual_seed(seed)
    try:
        model = copy.deepcopy(model).double().eval()
        x, y = ops.tree_map(to64, x), ops.tree_map(to64, y)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        scales = [_rms(p) for _, p in params]  # of the initial weights; the jitter moves them by 1 %
        with torch.no_grad():  # off the exact init: zero-initialised branches put ReLUs exactly on their kink
            for (_, p), scale in zip(params, scales):
                p.add_(_normal(p, gen), alpha=JITTER * scale)
        loss_at = _loss_fn(recipe, model, x, y, seed)
        base = loss_at()
    except Exception as e:
        return ops.skipped(check, f"the model cannot run in float64 ({type(e).__name__}: {str(e)[:120]})")
    if not params or not torch.isfinite(base):
        return ops.skipped(check, "no trainable parameters" if not params else "the loss is not finite (see loss_at_init)")
    model.zero_grad(set_to_none=True)
    base.backward()
    grads = [ops.grad_of(p) if p.grad is not None else torch.zeros_like(p) for _, p in params]
    size = -(-len(params) // GROUPS)
    worst = None
    with torch.no_grad():
        for start in range(0, len(params), size):
            group = list(range(start, min(start + size, len(params))))
            dirs = {i: _normal(params[i][1], gen).mul_(scales[i]) for i in group}
            analytic = sum(float((grads[i] * dirs[i]).sum()) for i in group)
            # the typical size of g . v for a random v: |g| |v| / sqrt(dim), the scale errors are judged at
            dim = sum(dirs[i].numel() for i in group)
            typical = math.sqrt(sum(float(grads[i].pow(2).sum()) for i in group)
                                * sum(float(dirs[i].pow(2).sum()) for i in group) / max(dim, 1))
            fine = _central_difference(loss_at, params, dirs, EPS)
            allowed = RTOL * max(abs(analytic), abs(fine), typical) + ROUNDOFF * (1 + abs(float(base))) / EPS
            off_fine = abs(analytic - fine)
            if off_fine <= allowed:
                continue  # agrees: the second step size could only confirm a mismatch, so it is not paid for
            coarse = _central_difference(loss_at, params, dirs, 10 * EPS)
            off_coarse = abs(analytic - coarse)
            # a wrong backward: both step sizes agree with each other and not with backward. A ReLU kink
            # crossed, or round-off, moves the two differences apart instead.
            if min(off_fine, off_coarse) > allowed and abs(fine - coarse) < 0.5 * min(off_fine, off_coarse):
                ratio = min(off_fine, off_coarse) / allowed
                if worst is None or ratio > worst[0]:
                    worst = (ratio, params[group[0]][0], params[group[-1]][0], analytic, fine)
    if worst is not None:
        _, first, last, analytic, numeric = worst
        return failed(check, "gradient_mismatches_finite_differences",
                      f"along a random direction in the parameters {first} .. {last}: backward gives "
                      f"{analytic:.6g}, central differences give {numeric:.6g} (float64, {SAMPLES} samples, eval mode)",
                      f"agreement within {RTOL:g} (relative)",
                      "a wrong gradient trains the model on a loss it is not computing: it learns slowly, "
                      "wrongly, or not at all, while every other check looks fine",
                      ["a custom torch.autograd.Function whose backward is wrong (sign, a missing factor, "
                       "the wrong input's gradient, a missing chain-rule term)",
                       "a gradient hook (register_hook) that rescales or replaces gradients",
                       "a straight-through or detached shortcut that makes the gradient differ on purpose "
                       "(suppress gradcheck if so)"])
    return passed(check, f"backward agrees with central differences in {-(-len(params) // size)} parameter groups")


def _loss_fn(recipe, model, x, y, seed):
    def loss_at():
        torch.manual_seed(seed)
        return ops.loss(recipe, ops.forward(recipe, model, x), y)
    return loss_at


def _rms(p: torch.Tensor) -> float:
    r = float(torch.linalg.vector_norm(p.detach())) / math.sqrt(p.numel()) if p.numel() else 0.0
    return r if r > 1e-3 else 1e-2  # zero-initialised tensors still get a direction


def _normal(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Standard normal entries shaped and typed like `like` (float64), drawn in float32 on the CPU:
    half the time of float64 draws, which cost more than the forwards on a model of 10M parameters."""
    return torch.randn(like.shape, generator=gen).to(like.device, like.dtype)


def _central_difference(loss_at, params, dirs, eps: float) -> float:
    for i, d in dirs.items():
        params[i][1].add_(d, alpha=eps)
    plus = float(loss_at())
    for i, d in dirs.items():
        params[i][1].add_(d, alpha=-2 * eps)
    minus = float(loss_at())
    for i, d in dirs.items():
        params[i][1].add_(d, alpha=eps)
    return (plus - minus) / (2 * eps)
