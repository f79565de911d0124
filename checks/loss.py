"""Loss checks: is the recipe's loss the right one for its task? Called on oracle outputs, no model.

    from harness.checks.loss import check_loss_per_label, check_loss_per_sample, check_target_shift
    result = check_target_shift(recipe, batch)       # a causal LM's loss predicts token t + 1

Each builds outputs whose loss is known for a correct loss of the task (independent labels for
multi-label; a perfect next-token predictor for a language model) and asks the recipe's own
`compute_loss` about them.
"""
from __future__ import annotations

import math

import torch

from harness.checks import recipe_ops as ops
from harness.checks.result import CheckResult, failed, passed


def check_loss_per_label(recipe, batch, seed: int = 0) -> CheckResult:
    """Multi-label: the loss treats labels independently, so its gradient for one label's logit does
    not move when another label's logit changes (softmax cross-entropy couples them)."""
    check = "loss_per_label"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    _, y = batch
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[1] < 2:
        return ops.skipped(check, "targets are not (N, L) labels")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(y.shape, generator=g, dtype=torch.float32).to(y.device)
    try:
        base = _grad(recipe, z, y)
        z2 = z.clone()
        z2[:, 0] += 3.0
        moved = _grad(recipe, z2, y)
    except Exception as e:
        return failed(check, "loss_crashed", f"the loss on (N, L) logits raised {type(e).__name__}: {e}",
                      "a scalar loss", "training cannot start", ["check the loss for (N, L) logits and 0/1 targets"])
    scale = float(base.abs().max()) + 1e-12
    change = float((moved[:, 1:] - base[:, 1:]).abs().max()) / scale
    seen = f"raising label 0's logit by 3 changed the other labels' gradients by {change:.3g} (relative)"
    if change > 1e-3:
        return failed(check, "labels_compete_in_loss", seen,
                      "each label's gradient depends on its own logit only (binary cross-entropy per label)",
                      "a softmax over labels makes them compete: one present label pushes the others down, so "
                      "a sample with several labels can never have all of them predicted",
                      ["use F.binary_cross_entropy_with_logits (the MultiLabel task's default loss) instead of "
                       "cross_entropy", "predict with sigmoid(logits) > 0.5, not argmax"])
    return passed(check, seen)


def check_loss_per_sample(recipe, batch, outputs=None, rtol: float = 1e-4) -> CheckResult:
    """The loss treats samples independently: moving one sample's outputs leaves every other
    sample's loss gradient as it was. A log-softmax over the batch axis (dim=0), a loss normalised
    by statistics of the batch's outputs, or a reduction over the wrong axis couple samples.

    Runs the recipe's loss on the model's own eval outputs (`outputs`, a model.Outputs or a
    tensor; random ones of the targets' batch size when the model's do not fit the task)."""
    check = "loss_per_sample"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    _, y = batch
    z = getattr(outputs, "value", outputs)
    if getattr(outputs, "error", None) or not isinstance(z, torch.Tensor) or not z.is_floating_point():
        return ops.skipped(check, "the model gives no float outputs to put into the loss (see output_shape)")
    if z.dim() == 0 or len(z) < 3:
        return ops.skipped(check, "fewer than 3 samples in the batch")
    z = z.detach().float().clone()
    nudge = 3.0 * (float(z.std()) + 1e-3)
    try:
        base = _grad(recipe, z, y)
        worst, where = 0.0, None
        for k in (0, len(z) - 1):
            moved_z = z.clone()
            moved_z[k] += nudge
            moved = _grad(recipe, moved_z, y)
            others = torch.arange(len(z), device=z.device) != k
            change = float((moved[others] - base[others]).abs().max())
            if change > worst:
                worst, where = change, k
    except Exception as e:
        return ops.skipped(check, f"the loss on the model's outputs raised {type(e).__name__} (see loss_at_init)")
    scale = float(base.abs().max()) + 1e-12
    relative = worst / scale
    if where is None or relative <= rtol:
        return passed(check, "moving one sample's outputs left the other samples' loss gradients unchanged")
    return failed(check, "loss_couples_samples",
                  f"moving sample {where}'s outputs changed the other samples' loss gradients by {relative:.3g} "
                  "(relative to the largest gradient)",
                  "each sample's loss gradient depends on that sample's outputs and targets alone",
                  "a loss that mixes the batch (a softmax over dim 0, statistics of the batch's outputs) trains "
                  "each sample on its neighbours, and its value changes with the batch size",
                  ["log_softmax / softmax over the classes (dim=1 or -1), never dim=0",
                   "reduce per sample first, then average over the batch",
                   "a contrastive or ranking loss couples samples by design: suppress this check"],
                  relative=relative)


def _grad(recipe, z, y):
    z = z.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ops.loss(recipe, z, y), z)
    return grad


def check_target_shift(recipe, batch, scale: float = 30.0) -> CheckResult:
    """Causal LM: under the recipe's loss, outputs that predict the next token perfectly score near zero,
    and outputs that copy the current token do not (else the model learns to copy its input)."""
    check = "target_shift"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    x, y = batch
    ids = x.get("input_ids") if isinstance(x, dict) else x
    vocab = getattr(recipe.task, "vocab_size", None)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point() or vocab is None:
        return ops.skipped(check, "inputs are not (N, T) token ids")
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(ids.shape):
        return ops.skipped(check, "targets are not (N, T), aligned with the inputs (see output_shape)")
    ids = ids.long().clamp(0, vocab - 1)
    copy = torch.nn.functional.one_hot(ids, vocab).float() * scale          # (N, T, V): predicts token t at t
    nxt = torch.nn.functional.one_hot(ids.roll(-1, 1), vocab).float() * scale  # predicts token t + 1 at t
    try:
        with torch.no_grad():
            loss_copy = float(ops.loss(recipe, copy, y))
            loss_next = float(ops.loss(recipe, nxt, y))
    except Exception as e:
        return failed(check, "loss_crashed", f"the loss on (N, T, V) logits raised {type(e).__name__}: {e}",
                      "a scalar loss", "training cannot start", ["check the loss for (N, T, V) logits and (N, T) ids"])
    chance = math.log(vocab)
    seen = (f"loss of outputs that copy the current token {loss_copy:.3g}, of outputs that predict the next "
            f"token {loss_next:.3g} (ln V = {chance:.3g})")
    if loss_copy < 0.1 * chance and loss_copy < loss_next:
        return failed(check, "targets_not_shifted", seen,
                      "a near-zero loss only for predicting the next token",
                      "with position t scored against token t, the model only has to copy its input: the loss "
                      "falls to zero and the model learns nothing about language",
                      ["shift by one: logits[:, :-1] against targets[:, 1:] (the CausalLM task's default loss does)",
                       "or give targets already shifted (targets[t] = inputs[t + 1]) and a loss that does not shift"])
    if loss_next > 0.5 * chance and loss_copy > 0.5 * chance:
        return failed(check, "targets_shifted_twice", seen,
                      "a near-zero loss for predicting the next token",
                      "the loss scores position t against a token other than t + 1 (shifted twice, or not aligned), "
                      "so even a perfect next-token model looks wrong",
                      ["shift once: either targets[t] = inputs[t + 1] with an unshifted loss, or targets = inputs "
                       "with the task's shifting loss", "check that targets are aligned with the inputs"])
    return passed(check, seen)
