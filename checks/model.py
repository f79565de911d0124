"""Model checks on one batch, before any training: shapes, loss at init, gradients, one step.

    from harness.checks.model import check_output_shape, check_loss_at_init
    result = check_loss_at_init(recipe.build_model(), batch, recipe.loss, recipe.num_classes)

Every function takes a freshly built model and a batch `(inputs, targets)` already on the
model's device, and never leaves the model half-changed for the caller (it works on copies
where it trains).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from harness.checks.result import CheckResult, failed, passed
from harness.fit import default_step


def _trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _forward(model, x):
    try:
        return model(x), None
    except Exception as e:  # the user's model: report, never crash the suite
        return None, f"{type(e).__name__}: {e}"


def check_output_shape(model, batch, num_classes: int) -> CheckResult:
    """model(inputs of batch B) returns finite float logits of shape (B, num_classes)."""
    x, _ = batch
    model.eval()
    with torch.no_grad():
        out, error = _forward(model, x)
    model.train()
    want = (len(x), num_classes)
    if error:
        return failed("output_shape", "forward_crashed", f"model({tuple(x.shape)} input) raised {error}",
                      f"output of shape {want}",
                      "if the model cannot take a batch of the data, nothing else can run",
                      ["print the shape after each layer (a forward hook) and compare with the layer's in_features",
                       "check the data's per-sample shape (e.g. (1, 28, 28) vs (784,))",
                       "check that the model's first layer matches the number of channels"])
    if not isinstance(out, torch.Tensor):
        return failed("output_shape", "output_not_tensor", f"model returned {type(out).__name__}",
                      f"a tensor of shape {want}", "the loss and the accuracy need one logits tensor",
                      ["return the logits tensor from forward (use a custom train_step for tuple outputs)"])
    if tuple(out.shape) != want:
        return failed("output_shape", "output_shape_wrong", f"output shape {tuple(out.shape)} for a batch of {len(x)}",
                      f"{want}: one row of num_classes logits per sample",
                      "a wrong output width trains against the wrong classes; a wrong batch dimension mixes samples",
                      [f"set the last layer's out_features to num_classes={num_classes}",
                       "check flatten/view calls: x.view(x.size(0), -1), not x.view(-1, features)"])
    if not out.is_floating_point():
        return failed("output_shape", "output_dtype_wrong", f"output dtype {out.dtype}", "floating point logits",
                      "cross_entropy needs float logits", ["do not argmax or round inside forward"])
    if not torch.isfinite(out).all():
        return failed("output_shape", "outputs_not_finite",
                      f"{int((~torch.isfinite(out)).sum())} non-finite outputs at initialisation",
                      "finite outputs", "NaN at init means training cannot start",
                      ["check the inputs for NaN (see inputs_finite)", "check custom initialisation and divisions in forward"])
    return passed("output_shape", f"output {tuple(out.shape)}")


def check_outputs_not_probabilities(model, batch, loss_fn) -> CheckResult:
    """With cross_entropy (which applies log-softmax itself), outputs must be logits, not probabilities."""
    if loss_fn is not torch.nn.functional.cross_entropy and not isinstance(loss_fn, nn.CrossEntropyLoss):
        return passed("outputs_are_logits", "loss is not cross_entropy (skipped)")
    x, _ = batch
    model.eval()
    with torch.no_grad():
        out, error = _forward(model, x)
    model.train()
    if error or not isinstance(out, torch.Tensor) or out.dim() != 2:
        return passed("outputs_are_logits", "no 2-D output (see output_shape)")
    sums = out.float().sum(1)
    if bool(((out >= 0) & (out <= 1)).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
        return failed("outputs_are_logits", "outputs_are_probabilities",
                      "every output row lies in [0, 1] and sums to 1: the model returns probabilities",
                      "raw logits (cross_entropy applies log-softmax itself)",
                      "softmax before cross_entropy squashes the gradients: training is slow and the loss "
                      "cannot fall below about ln(1 + (C-1)/e)",
                      ["remove the final softmax from forward; apply it only when you need probabilities",
                       "if you need log-probabilities, use log_softmax with nll_loss instead"])
    return passed("outputs_are_logits", "outputs are unnormalised logits")


def check_loss_at_init(model, batch, loss_fn, num_classes: int, low: float = 0.5, high: float = 2.0) -> CheckResult:
    """Loss at initialisation is near ln(num_classes): within [low, high] x of it."""
    x, y = batch
    with torch.no_grad():
        out, error = _forward(model, x)
        if error:
            return passed("loss_at_init", f"forward failed (see output_shape): {error}")
        try:
            loss = float(loss_fn(out, y))
        except Exception as e:
            return failed("loss_at_init", "loss_crashed", f"loss(outputs {tuple(out.shape)}, targets {tuple(y.shape)}) "
                          f"raised {type(e).__name__}: {e}", "a scalar loss",
                          "training cannot start", ["check target dtype (int64 class indices) and output shape"])
    chance = math.log(num_classes)
    seen = f"loss at init {loss:.4g}, ln({num_classes}) = {chance:.4g} (ratio {loss / chance:.2f})"
    if not math.isfinite(loss) or loss > high * chance:
        return failed("loss_at_init", "loss_at_init_too_high", seen,
                      f"between {low:g}x and {high:g}x ln(num_classes)",
                      "a confident wrong model at init wastes the first epochs undoing it, or diverges",
                      ["inputs not normalised (see input_range)", "last layer initialised too large: scale it down",
                       "the loss is summed over the batch instead of averaged"])
    if loss < low * chance:
        return failed("loss_at_init", "loss_at_init_too_low", seen,
                      f"between {low:g}x and {high:g}x ln(num_classes)",
                      "an untrained model that already scores well usually means the labels leak into the "
                      "inputs or the loss is not the one you think",
                      ["check that the targets are not part of the inputs",
                       "check the loss function and its reduction (mean, not a scaled value)"])
    return passed("loss_at_init", seen, loss=loss)


def check_gradients(model, batch, loss_fn) -> CheckResult:
    """Every trainable parameter gets a finite, non-zero gradient from the loss on one batch."""
    x, y = batch
    model.zero_grad(set_to_none=True)
    out, error = _forward(model, x)
    if error:
        return passed("gradients", f"forward failed (see output_shape): {error}")
    try:
        loss_fn(out, y).backward()
    except Exception as e:  # the user's loss or targets: report, never crash the suite
        model.zero_grad(set_to_none=True)
        return failed("gradients", "loss_crashed", f"loss(outputs {tuple(out.shape)}, targets {tuple(y.shape)})"
                      f".backward() raised {type(e).__name__}: {e}", "a scalar loss with a gradient",
                      "training cannot start", ["check the labels (see labels) and the output width (see output_shape)",
                                                "check target dtype (int64 class indices)"])
    none, zero, nonfinite = [], [], []
    for name, p in _trainable(model):
        if p.grad is None:
            none.append(name)
        elif not torch.isfinite(p.grad).all():
            nonfinite.append(name)
        elif not p.grad.any():
            zero.append(name)
    model.zero_grad(set_to_none=True)
    if nonfinite:
        return failed("gradients", "gradient_not_finite", f"non-finite gradients in {nonfinite}",
                      "finite gradients everywhere", "one NaN gradient poisons every parameter after the step",
                      ["check inputs for NaN/Inf", "look for log(0), sqrt(0) or division by zero in forward",
                       "lower the input scale (see input_range)"])
    if none:
        return failed("gradients", "params_get_no_gradient", f"no gradient reaches {none}",
                      "every trainable parameter receives a gradient",
                      "these parameters never learn: a layer is defined but unused, or the graph is cut",
                      ["look for .detach(), .item(), .numpy() or torch.no_grad() in forward",
                       "a layer built in __init__ but not called in forward",
                       "freeze it deliberately with requires_grad_(False) if intended"])
    if zero:
        return failed("gradients", "params_get_zero_gradient", f"gradients exactly zero for {zero}",
                      "non-zero gradients for every trainable parameter",
                      "all-zero gradients mean dead units: no signal flows back through these layers",
                      ["dead ReLUs: a large negative bias or weight init; use the default init (kaiming)",
                       "an activation saturated by unnormalised inputs (see input_range)",
                       "a constant (detached) branch multiplies the signal by zero"])
    return passed("gradients", f"{len(_trainable(model))} trainable tensors get finite, non-zero gradients")


def check_registered_submodules(model) -> CheckResult:
    """Layers kept in plain Python lists/dicts are invisible to .parameters(), .to() and the optimizer."""
    hidden = []
    for mod_name, module in model.named_modules():
        if type(module).__module__.startswith("torch."):
            continue  # torch's own layers keep private lists (nn.LSTM._flat_weights) on purpose
        for attr, value in vars(module).items():
            if attr.startswith("_"):
                continue  # nn.Module's own registries (_modules, _parameters, _buffers, ...)
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
            for item in items:
                if isinstance(item, nn.Module) or (isinstance(item, torch.Tensor) and item.requires_grad):
                    hidden.append(f"{mod_name + '.' if mod_name else ''}{attr}")
                    break
    if hidden:
        return failed("registered_submodules", "unregistered_submodules",
                      f"layers or parameters held in plain Python containers: {hidden}",
                      "sub-layers registered (attributes, nn.ModuleList, nn.ModuleDict, nn.ParameterList)",
                      "unregistered layers are not in model.parameters(): the optimizer never updates them, "
                      ".to(device) does not move them and state_dict does not save them",
                      ["wrap the list in nn.ModuleList(...) (or a dict in nn.ModuleDict)",
                       "wrap a list of tensors in nn.ParameterList"])
    return passed("registered_submodules", "all layers registered")


def check_one_step(model, batch, recipe) -> CheckResult:
    """One step of the recipe's own optimizer and train_step changes every trainable parameter,
    covers them all in the optimizer, and leaves deliberately frozen parameters unchanged."""
    x, y = batch
    model = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = recipe.optimizer(model.parameters(), recipe.lr)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, p in _trainable(model) if id(p) not in in_optimizer]
    step = recipe.train_step or default_step
    model.train()
    try:
        step(model, x, y, optimizer, recipe.loss)
    except Exception as e:
        return failed("one_step", "train_step_crashed", f"one training step raised {type(e).__name__}: {e}",
                      "a step that runs", "training cannot run", ["run the step by hand on one batch and read the traceback"])
    after = dict(model.named_parameters())
    unchanged = [n for n, p in _trainable(model) if torch.equal(before[n], after[n].detach())]
    frozen_moved = [n for n, p in model.named_parameters() if not p.requires_grad
                    and not torch.equal(before[n], p.detach())]
    if missing:
        return failed("one_step", "params_not_in_optimizer", f"trainable parameters missing from the optimizer: {missing}",
                      "the optimizer holds every trainable parameter",
                      "parameters outside the optimizer keep their random init forever, and training still 'works'",
                      ["build the optimizer from model.parameters(), not from one sub-layer",
                       "if a layer should not train, call requires_grad_(False) on it"])
    if unchanged:
        return failed("one_step", "params_not_updated", f"unchanged after one step: {unchanged}",
                      "every trainable parameter changes after a step",
                      "parameters that never move are dead weight; the model trains as if they were constants",
                      ["the train_step does not call optimizer.step(), or calls it before backward()",
                       "zero gradients (see gradients)", "an lr of 0 in a param group"])
    if frozen_moved:
        return failed("one_step", "frozen_params_changed", f"parameters with requires_grad=False changed: {frozen_moved}",
                      "frozen parameters stay exactly as they were",
                      "a 'frozen' backbone that drifts destroys the features you meant to keep",
                      ["the train_step or optimizer writes to them directly (weight decay on a manual update?)",
                       "BatchNorm running stats are buffers and may change; weights must not"])
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    return passed("one_step", f"{len(after) - frozen} trainable tensors updated, {frozen} frozen unchanged")


def check_batch_independence(model, batch, atol: float = 1e-5) -> CheckResult:
    """In eval mode, sample 0's output does not change when the other samples change."""
    x, _ = batch
    if len(x) < 2:
        return passed("batch_independence", "batch of one (skipped)")
    model.eval()
    with torch.no_grad():
        out, error = _forward(model, x)
        if error:
            model.train()
            return passed("batch_independence", f"forward failed (see output_shape): {error}")
        x2 = x.clone()
        x2[1:] = x.flip(0)[:-1] if len(x) > 2 else x[:1]  # other samples replaced, sample 0 kept
        if x2[1:].equal(x[1:]):
            x2[1:] = x[1:] + 1.0
        out2, _ = _forward(model, x2)
    model.train()
    if out is None or out2 is None or not isinstance(out, torch.Tensor) or out.shape != out2.shape:
        return passed("batch_independence", "outputs not comparable (see output_shape)")
    diff = float((out[0] - out2[0]).abs().max())
    scale = float(out[0].abs().max()) + 1e-12
    if diff > atol * max(1.0, scale):
        return failed("batch_independence", "batch_samples_interact",
                      f"sample 0's output changed by {diff:.3g} (of {scale:.3g}) when only the other samples changed",
                      "each sample's output depends on that sample alone (in eval mode)",
                      "a reshape or view over the wrong axis mixes samples: the model learns from its neighbours "
                      "and fails when the batch changes",
                      ["use x.flatten(1) or x.view(x.size(0), -1), not x.view(-1, n) on a permuted tensor",
                       "check transpose/permute before a view: batch must stay the first axis",
                       "norm layers over the batch axis in eval mode (suppress if deliberate)"])
    return passed("batch_independence", f"max change {diff:.2g}")


def check_eval_deterministic(model, batch) -> CheckResult:
    """Two forward passes in eval mode give identical outputs (no dropout or noise left on)."""
    x, _ = batch
    model.eval()
    with torch.no_grad():
        a, error = _forward(model, x)
        b, _ = _forward(model, x)
    model.train()
    if error or not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return passed("eval_deterministic", "forward failed (see output_shape)")
    diff = float((a - b).abs().max())
    if diff > 0:
        return failed("eval_deterministic", "eval_not_deterministic",
                      f"two eval-mode forwards on the same batch differ by up to {diff:.3g}",
                      "identical outputs in eval mode",
                      "random layers active at evaluation make validation noisy and predictions irreproducible",
                      ["F.dropout(x, p, training=True) ignores model.eval(): use nn.Dropout or training=self.training",
                       "noise added in forward without checking self.training"])
    return passed("eval_deterministic", "eval outputs identical across two passes")
