"""Model checks on one batch, before any training: outputs, loss at init, gradients, one step.

    from harness.checks.model import check_output_shape, check_loss_at_init
    result = check_loss_at_init(recipe, recipe.build_model(), batch)

Every function takes the recipe, a freshly built model and a batch `(inputs, targets)` already
on the model's device (inputs may be a tensor or a nested tuple/dict of tensors), runs the
model through the recipe's own forward, loss, optimizer and step (`harness.checks.recipe_ops`),
and never leaves the model half-changed for the caller: where it trains, it borrows the model and
puts its parameters, buffers, gradients and modes back in finally (`borrowed`).
A check that does not apply to the recipe's task returns `skipped(...)` with the reason.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.checks import reach
from harness.checks import recipe_ops as ops
from harness.checks.result import CheckResult, failed, passed

ONE_STEP_MAX = 3  # steps allowed before a parameter must have moved (zero-initialised layers move at step 2)


def _trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class ModelState:
    """The values of a model's parameters and buffers, their .grad and requires_grad, the registry
    entries holding them, and each module's train/eval flag; `load()` puts them back (any number of
    times). A clone of the tensors, not of the modules: copy.deepcopy of a many-module model
    (ShuffleNet: 15-48 ms) costs about a training step or more, cloning its tensors 1-3 ms."""

    def __init__(self, model: nn.Module):
        with torch.no_grad():
            self.tensors = [(m, registry, name, t, t.detach().clone(), t.requires_grad,
                             None if t.grad is None else t.grad.detach().clone())
                            for m in model.modules() for registry in ("_parameters", "_buffers")
                            for name, t in getattr(m, registry).items() if t is not None]
        self.modes = [(m, m.training) for m in model.modules()]

    def load(self) -> None:
        with torch.no_grad():
            for m, registry, name, t, value, requires_grad, grad in self.tensors:
                getattr(m, registry)[name] = t  # .double() or .to() may have swapped in a new tensor
                if t.shape == value.shape and t.dtype == value.dtype and t.device == value.device:
                    t.copy_(value)
                else:  # converted in place (a parameter's .data): put the original values back
                    t.data = value.clone()
                if t.is_leaf:
                    t.requires_grad_(requires_grad)
                t.grad = None if grad is None else grad.clone()
        for m, training in self.modes:
            m.training = training


@contextlib.contextmanager
def borrowed(model: nn.Module):
    """`with borrowed(model):` a check trains `model` itself, and its parameters, buffers, gradients,
    requires_grad and train/eval flags are put back in finally, as if it had trained a copy. (The
    check's own optimizer and RNG draws are its own; hooks it adds it removes.)"""
    state = ModelState(model)
    try:
        yield model
    finally:
        state.load()


def _forward(recipe, model, x):
    try:
        return ops.forward(recipe, model, x), None
    except Exception as e:  # the user's model: report, never crash the suite
        return None, f"{type(e).__name__}: {e}"


def _eval_forward(recipe, model, x):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _forward(recipe, model, x)
    finally:
        model.train(was)


@dataclass(frozen=True)
class Outputs:
    """The model's eval-mode outputs on one batch (or the error its forward raised), computed once
    by `eval_outputs` and shared by the checks that read the same outputs: the sanity suite passes
    it as `outputs=`, so output_shape, outputs_are_logits, loss_at_init, eval_deterministic,
    causality and the checks that first ask whether the outputs fit the task cost one forward
    between them. A check given no `outputs` runs its own forward."""
    value: object
    error: str | None
    targets: object

    def problem(self, recipe) -> str | None:
        """One line when the outputs do not fit the task (as recipe_ops.outputs_problem), else None."""
        if self.error:
            return f"the forward raised {self.error.split(':', 1)[0]}"
        try:
            return recipe.task.check_outputs(self.value, self.targets)
        except Exception as e:
            return f"the forward raised {type(e).__name__}"


def eval_outputs(recipe, model, batch) -> Outputs:
    """`Outputs` of `model` on `batch` in eval mode, under torch seed 0 (eval_deterministic's first
    pass); the caller's RNG state is left as it was."""
    x, y = batch
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        out, error = _eval_forward(recipe, model, x)
    return Outputs(out, error, y)


def _outputs(recipe, model, x, outputs: Outputs | None):
    """(outputs, error) of the eval forward on x: the shared ones when given, else a fresh forward."""
    if outputs is not None:
        return outputs.value, outputs.error
    return _eval_forward(recipe, model, x)


def defer_to_output_shape(check: str, recipe, model, batch, outputs: Outputs | None = None):
    """`skipped(...)` when the outputs do not fit the task (see output_shape), else None; from the
    shared `outputs` when given (no forward), else as recipe_ops.defer_to_output_shape."""
    if outputs is None:
        return ops.defer_to_output_shape(check, recipe, model, batch)
    problem = outputs.problem(recipe)
    return ops.skipped(check, f"the outputs do not fit the task; output_shape reports it ({problem})") if problem else None


def _shape(x):
    leaves = ops.leaves(x)
    return tuple(leaves[0].shape) if len(leaves) == 1 else [tuple(t.shape) for t in leaves]


def check_output_shape(recipe, model, batch, outputs: Outputs | None = None) -> CheckResult:
    """The model returns finite float outputs of the shape the task expects for the batch."""
    x, y = batch
    mismatch = _input_dtype_mismatch(model, x)
    if mismatch:
        return mismatch
    out, error = _outputs(recipe, model, x, outputs)
    n = ops.batch_len(x)
    task = ops.task_of(recipe)
    if error:
        return failed("output_shape", "forward_crashed", f"model({_shape(x)} input) raised {error}",
                      "outputs for the batch",
                      "if the model cannot take a batch of the data, nothing else can run",
                      ["print the shape after each layer (a forward hook) and compare with the layer's in_features",
                       "check the data's per-sample shape (e.g. (1, 28, 28) vs (784,))",
                       "check that the model's first layer matches the number of channels"])
    if not isinstance(out, torch.Tensor):
        return failed("output_shape", "output_not_tensor", f"model returned {type(out).__name__}",
                      "a tensor (or an output with .logits)", "the loss and the metrics need one outputs tensor",
                      ["return the logits tensor from forward, or pass Recipe(forward=...) to pick it"])
    if task is not None and hasattr(task, "check_outputs"):
        problem = task.check_outputs(out, y)
        want = f"what {getattr(task, 'name', 'the task')} expects for targets {tuple(y.shape)}"
    else:
        want = (n, recipe.num_classes)
        problem = None if tuple(out.shape) == want else f"output shape {tuple(out.shape)} for a batch of {n}"
    if problem:
        return failed("output_shape", "output_shape_wrong", problem, f"{want}: one row of outputs per sample",
                      "a wrong output width trains against the wrong classes; a wrong batch dimension mixes samples",
                      ["set the last layer's out_features to the number of classes (or outputs) of the task",
                       "check flatten/view calls: x.view(x.size(0), -1), not x.view(-1, features)",
                       "a (N, 1) output against (N,) targets broadcasts silently: squeeze(1) the output"])
    if not out.is_floating_point():
        return failed("output_shape", "output_dtype_wrong", f"output dtype {out.dtype}", "floating point outputs",
                      "the loss needs float outputs", ["do not argmax or round inside forward"])
    if not torch.isfinite(out).all():
        return failed("output_shape", "outputs_not_finite",
                      f"{int((~torch.isfinite(out)).sum())} non-finite outputs at initialisation",
                      "finite outputs", "NaN at init means training cannot start",
                      ["check the inputs for NaN (see inputs_finite)", "check custom initialisation and divisions in forward"])
    return passed("output_shape", f"output {tuple(out.shape)}")


def _first_layer(model):
    for module in model.modules():
        if list(module.parameters(recurse=False)):
            return module
    return None


def _input_dtype_mismatch(model, x):
    """A float/int mismatch between a single-tensor input and what the first layer consumes, or None.
    Token ids into an nn.Embedding are first class; only a mismatch is flagged."""
    if not isinstance(x, torch.Tensor):
        return None
    first = _first_layer(model)
    if first is None:
        return None
    wants_ids = isinstance(first, (nn.Embedding, nn.EmbeddingBag))
    if wants_ids and x.is_floating_point():
        return failed("output_shape", "inputs_not_ids", f"float inputs {tuple(x.shape)} ({x.dtype}) reach "
                      f"{type(first).__name__}, which looks up integer ids", "int64 token ids for an embedding",
                      "an embedding indexes rows by id; float inputs crash it or were meant for another model",
                      ["keep token ids as torch.long (do not normalise or .float() them)",
                       "if the inputs are features, the first layer should be nn.Linear, not nn.Embedding"])
    consumes_values = isinstance(first, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase,
                                         nn.modules.batchnorm._BatchNorm, nn.LayerNorm))
    weight = next(first.parameters())
    if consumes_values and x.is_floating_point() and weight.is_floating_point() and x.dtype != weight.dtype:
        return failed("output_shape", "inputs_dtype_differs_from_model",
                      f"{x.dtype} inputs {tuple(x.shape)} reach {type(first).__name__} with {weight.dtype} weights",
                      "inputs in the dtype of the model's weights", "matmul and conv refuse mixed float dtypes",
                      [f"convert the inputs when the data is built: x.to({weight.dtype})",
                       "or build the model in the data's dtype (model.to(dtype)); for mixed precision use "
                       "torch.autocast in a custom train_step"])
    if consumes_values and not x.is_floating_point() and x.dtype != torch.bool:
        return failed("output_shape", "inputs_not_float", f"integer inputs {tuple(x.shape)} ({x.dtype}) reach "
                      f"{type(first).__name__}, which multiplies float values", "float inputs for this layer",
                      "integer pixels or codes into a Linear/Conv crash, or were meant for an embedding",
                      ["convert pixel values with .float() / 255 when the data is built",
                       "token ids or categorical codes need an nn.Embedding first"])
    return None


def check_outputs_not_probabilities(recipe, model, batch, outputs: Outputs | None = None) -> CheckResult:
    """Outputs of a softmax-based loss must be logits: no row of outputs lies in [0, 1] summing to 1."""
    if reason := ops.skip_reason(recipe, "outputs_are_logits"):
        return ops.skipped("outputs_are_logits", reason)
    loss_fn = getattr(recipe, "loss", None)
    if ops.task_of(recipe) is None and loss_fn is not torch.nn.functional.cross_entropy \
            and not isinstance(loss_fn, nn.CrossEntropyLoss):
        return ops.skipped("outputs_are_logits", "the loss is not cross_entropy, so outputs need not be logits")
    x, _ = batch
    out, error = _outputs(recipe, model, x, outputs)
    if error or not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        return passed("outputs_are_logits", "no float output with a class dimension (see output_shape)")
    if _sigmoid_task(recipe) and bool(((out > 0) & (out < 1)).all()):
        return failed("outputs_are_logits", "outputs_are_probabilities",
                      f"every output lies strictly inside (0, 1) (from {float(out.min()):.3g} to {float(out.max()):.3g}): "
                      "the model returns sigmoid probabilities",
                      "raw logits (binary cross-entropy with logits applies the sigmoid itself)",
                      "a sigmoid before a with-logits loss squashes the gradients twice and caps every label's "
                      "probability between 0.5 and 0.73, so no label can be predicted absent",
                      ["remove the final sigmoid from forward; apply torch.sigmoid only when you need probabilities",
                       "if the model must return probabilities, train it with F.binary_cross_entropy (loss=)"])
    for dim in sorted({1, out.dim() - 1}):
        sums = out.float().sum(dim)
        if bool(((out >= 0) & (out <= 1)).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
            return failed("outputs_are_logits", "outputs_are_probabilities",
                          f"every output lies in [0, 1] and they sum to 1 along dim {dim}: the model returns probabilities",
                          "raw logits (cross_entropy applies log-softmax itself)",
                          "softmax before cross_entropy squashes the gradients: training is slow and the loss "
                          "cannot fall below about ln(1 + (C-1)/e)",
                          ["remove the final softmax from forward; apply it only when you need probabilities",
                           "if you need log-probabilities, use log_softmax with nll_loss instead"])
    return passed("outputs_are_logits", "outputs are unnormalised logits")


def _sigmoid_task(recipe) -> bool:
    """One independent sigmoid per output: the multi-label task with its default (with-logits) loss."""
    from harness.recipe import TaskLoss
    from harness.tasks import MultiLabel
    loss = getattr(recipe, "loss", None)
    if isinstance(loss, TaskLoss):
        return isinstance(loss.task, MultiLabel)
    return loss is nn.functional.binary_cross_entropy_with_logits or isinstance(loss, nn.BCEWithLogitsLoss)


def check_loss_at_init(recipe, model, batch, low: float = 0.5, high: float = 2.0,
                       outputs: Outputs | None = None) -> CheckResult:
    """Loss at initialisation (eval mode) is near what the task expects (ln C for classification):
    within [low, high] x. A model with BatchNorm outside the band in eval mode passes when its
    train-mode loss is inside it (running statistics are not estimated at init: see init_logit_scale)."""
    if reason := ops.skip_reason(recipe, "loss_at_init"):
        return ops.skipped("loss_at_init", reason)
    expected = ops.init_loss(recipe)
    if expected is None:
        return ops.skipped("loss_at_init", "the task has no expected loss at initialisation")
    if skip := defer_to_output_shape("loss_at_init", recipe, model, batch, outputs):
        return skip
    x, y = batch
    with torch.no_grad():
        # eval mode: what the untrained model predicts. In train mode BatchNorm rescales features
        # that the stock inits expect to be shrunk (EfficientNet, MNASNet: train-mode loss ~3-7 x ln C).
        out, error = _outputs(recipe, model, x, outputs)
        if error:
            return passed("loss_at_init", f"forward failed (see output_shape): {error}")
        try:
            loss = float(ops.loss(recipe, out, y))
        except Exception as e:
            return failed("loss_at_init", "loss_crashed", f"loss(outputs {tuple(out.shape)}, targets {_shape(y)}) "
                          f"raised {type(e).__name__}: {e}", "a scalar loss",
                          "training cannot start", ["check target dtype (int64 class indices) and output shape"])
    seen = f"loss at init {loss:.4g}, expected about {expected:.4g} (ratio {loss / expected:.2f})"
    in_band = math.isfinite(loss) and low * expected <= loss <= high * expected
    if not in_band and ops.has_batchnorm(model):  # running statistics not yet estimated: see init_logit_scale
        trained = _train_mode_loss(recipe, model, x, y)
        if trained is not None and low * expected <= trained <= high * expected:
            return passed("loss_at_init", f"in eval mode {seen}; in train mode {trained:.4g} (ratio "
                                          f"{trained / expected:.2f}: BatchNorm's running statistics are not "
                                          "estimated before training)", loss=trained)
    if not math.isfinite(loss) or loss > high * expected:
        return failed("loss_at_init", "loss_at_init_too_high", seen,
                      f"between {low:g}x and {high:g}x the expected loss",
                      "a confident wrong model at init wastes the first epochs undoing it, or diverges",
                      ["inputs not normalised (see input_range)", "last layer initialised too large: scale it down",
                       "the loss is summed over the batch instead of averaged"])
    if loss < low * expected:
        return failed("loss_at_init", "loss_at_init_too_low", seen,
                      f"between {low:g}x and {high:g}x the expected loss",
                      "an untrained model that already scores well usually means the labels leak into the "
                      "inputs or the loss is not the one you think",
                      ["check that the targets are not part of the inputs",
                       "check the loss function and its reduction (mean, not a scaled value)"])
    return passed("loss_at_init", seen, loss=loss)


def _train_mode_loss(recipe, model, x, y):
    """The loss of the model's train-mode outputs on (x, y), without a gradient; the model (its
    BatchNorm running statistics too) and the RNG are left as they were. None when it fails."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with borrowed(model), torch.no_grad(), torch.random.fork_rng(devices=devices):
        try:
            return float(ops.loss(recipe, ops.forward(recipe, model.train(), x), y))
        except Exception:
            return None


def check_init_logit_scale(recipe, model, batch, max_spread: float = 1.0, max_ratio: float = 20.0,
                           hard_spread: float = 2.0) -> CheckResult:
    """At init the logits are small: their spread across classes (std per sample, averaged) is below
    `max_spread`, so the first predictions are nearly uniform. Tighter than the loss band: a head
    initialised too large can still land inside ½…2 × ln C.

    Some stock models start above `max_spread` by design (T5 ties its head to the embedding: spread
    about 1.1; a full-width Llama head at std 0.02 about 1.3; a CLIP-style cosine head with its
    learnable temperature at 1/0.07 about 1.9). So a spread up to `hard_spread` fails only when the
    outputs come from a final nn.Linear or convolution with one output per class and the spread is
    also `max_ratio` x what PyTorch's default init of that layer would give on the same features
    (sqrt(mean(h²) / 3) per position): a head scaled up by hand, or a temperature multiplied into
    its output, is 20-50 x; those designs are 2-10 x, or have no such layer to compare with.

    Measured in eval mode; a model with BatchNorm that fails there is measured again in train mode,
    and passes if it is fine there: at init BatchNorm's running statistics are not yet estimated (mean
    0, variance 1), and deep stacks (torchvision's ResNet-50/101, FCN) grow their eval-mode logits
    layer by layer (ResNet-101: spread about 100) while training starts from batch statistics."""
    if reason := ops.skip_reason(recipe, "init_logit_scale"):
        return ops.skipped("init_logit_scale", reason)
    x, _ = batch
    measured = _logit_spread(recipe, model, x)
    if isinstance(measured, CheckResult):
        return measured
    spread, seen, reference = measured

    def too_large(spread, reference):
        return not math.isfinite(spread) or spread > hard_spread or (
            spread > max_spread and reference is not None and spread > max_ratio * reference)

    if too_large(spread, reference) and ops.has_batchnorm(model):
        with borrowed(model):
            again = _logit_spread(recipe, model.train(), x, mode="train")
        if not isinstance(again, CheckResult) and not too_large(again[0], again[2]):
            return passed("init_logit_scale", f"in eval mode {seen}; in train mode {again[1]} (BatchNorm's running "
                                              "statistics are not estimated before training)", spread=again[0])
    if too_large(spread, reference):
        return failed("init_logit_scale", "logits_overconfident_at_init", seen,
                      f"a spread below {max_spread:g}: near-uniform predictions before training",
                      "an over-confident head spends the first steps undoing its own init; the loss at init can "
                      "still look fine, and large logits saturate the softmax so early gradients are tiny",
                      ["initialise the last layer small (e.g. weight * 0.01, bias 0), as most stock models do",
                       "check for a temperature or scale multiplied into the logits",
                       "unnormalised inputs make every logit large (see input_range)"], spread=spread)
    return passed("init_logit_scale", seen, spread=spread)


def _logit_spread(recipe, model, x, mode: str = "eval"):
    """(spread, what was seen, the default-init reference or None) of the model's logits on x, in eval
    mode (or, with mode="train", in the mode the model is in: the caller borrows it); or a passed
    CheckResult when there are no logits to measure."""
    last_by_width = {}  # output width -> (the last such layer called, its input): one tensor kept per width
    hooks = [m.register_forward_hook(lambda m, inputs, out: last_by_width.__setitem__(
                 getattr(m, "out_features", getattr(m, "out_channels", None)), (m, inputs[0])))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    try:
        if mode == "eval":
            out, error = _eval_forward(recipe, model, x)
        else:
            with torch.no_grad():
                out, error = _forward(recipe, model, x)
    finally:
        for hook in hooks:
            hook.remove()
    if error or not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        return passed("init_logit_scale", "no float output with a class dimension (see output_shape)")
    dim = getattr(ops.task_of(recipe), "class_dim", 1 if out.dim() == 2 else -1)
    logits = out.float().movedim(dim, -1).reshape(-1, out.shape[dim])
    logits = logits[torch.isfinite(logits).all(1)]
    if len(logits) == 0 or logits.shape[1] < 2:
        return passed("init_logit_scale", "no finite logits to measure (see output_shape)")
    spread = float(logits.std(1).mean())
    top = float(logits.softmax(1).max(1).values.mean())
    seen = (f"logit spread at init {spread:.3g} (std across the {logits.shape[1]} classes, mean over samples); "
            f"mean top softmax probability {top:.3f} vs uniform {1 / logits.shape[1]:.3f}")
    head = last_by_width.get(logits.shape[1])  # the last layer with one output per class
    reference = _default_init_spread(*head) if head else None
    if reference:
        seen += f"; {spread / reference:.3g} x what a default-initialised final layer gives ({reference:.3g})"
    return spread, seen, reference


def _default_init_spread(layer, features) -> float | None:
    """The logit spread PyTorch's default init of `layer` (weights U(±1/sqrt(fan_in)), variance
    1 / (3 fan_in)) gives on these input features: sqrt(mean(h²) / 3) per position, averaged."""
    if not isinstance(features, torch.Tensor) or not features.is_floating_point() or features.dim() < 1:
        return None
    h = features.detach().float()
    if isinstance(layer, nn.modules.conv._ConvNd) and h.dim() >= 2:
        h = h.movedim(1 if h.dim() > 2 else 0, -1)  # channels last
    h = h.reshape(-1, h.shape[-1])
    value = float(((h ** 2).mean(1) / 3).sqrt().mean())
    return value if math.isfinite(value) and value > 0 else None


def check_gradients(recipe, model, batch, outputs: Outputs | None = None, more=(), seed: int = 0) -> CheckResult:
    """Every trainable parameter gets a finite gradient, and a non-zero one by the second step.

    A zero-initialised last layer (or the last norm of each residual branch, as torchvision's
    ViT head and `zero_init_residual` do) sends zero gradient to the layers behind it at step 1
    only; those layers are judged again after one real step of the recipe's own optimizer.

    Conditional computation passes: a parameter whose module did not run on the batch (an expert
    its router sent no sample to) and that gets a gradient from the other batches in `more` or in
    a freshly built model (checks.reach) is a branch this batch did not take. A parameter whose
    module ran and got no gradient is a cut graph, and fails without looking further. `model` is
    what the recipe's factory builds (the fresh models stand for it); `seed` seeds those builds.
    """
    if skip := defer_to_output_shape("gradients", recipe, model, batch, outputs):
        return skip
    from harness.recipe import nothing_to_train
    if problem := nothing_to_train(model):
        return failed("gradients", "no_trainable_parameters", problem, "parameters that train",
                      "a model with nothing to train cannot learn; every training check is skipped",
                      ["register layers as attributes or in nn.ModuleList/ModuleDict",
                       "unfreeze (requires_grad_(True)) the layers meant to train"])
    x, y = batch
    with borrowed(model):
        return _judge_gradients(recipe, model.train(), x, y, more, seed)


def _judge_gradients(recipe, model, x, y, more=(), seed: int = 0) -> CheckResult:
    grads, error = _grads(recipe, model, x, y)
    if error:
        return failed("gradients", "loss_crashed", f"loss(...).backward() raised {error}",
                      "a scalar loss with a gradient", "training cannot start",
                      ["check the labels (see labels) and the output width (see output_shape)",
                       "check target dtype (int64 class indices)"])
    names = [n for n, _ in _trainable(model)]
    none = [n for n in names if grads.get(n) is None]
    nonfinite = [n for n in names if grads.get(n) is not None and not torch.isfinite(grads[n]).all()]
    zero = [n for n in names if grads.get(n) is not None and n not in nonfinite and not grads[n].any()]
    note = ""
    if zero and not none and not nonfinite:
        try:
            optimizer = ops.optimizer_for(recipe, model)
            ops.step(recipe, model, x, y, optimizer)
        except Exception as e:
            return failed("gradients", "train_step_crashed", f"one training step raised {type(e).__name__}: {e}",
                          "a step that runs", "training cannot run", ["run the step by hand on one batch"])
        again, _ = _grads(recipe, model, x, y)
        still = [n for n in zero if again.get(n) is None or not again[n].any()]
        note = f"; {len(zero) - len(still)} tensors with zero gradient at step 1 (zero-initialised layers) get one at step 2"
        zero = still
    seen_none = seen_zero = ""
    if (none or zero) and not nonfinite:  # branches this batch did not take, or a bug: look at other rows and inits
        none, zero, seen_none, seen_zero, conditional = _not_reached(recipe, model, x, y, none, zero, more, seed)
        note += conditional
    if nonfinite:
        return failed("gradients", "gradient_not_finite", f"non-finite gradients in {_few(nonfinite)}",
                      "finite gradients everywhere", "one NaN gradient poisons every parameter after the step",
                      ["check inputs for NaN/Inf", "look for log(0), sqrt(0) or division by zero in forward",
                       "lower the input scale (see input_range)"])
    if none:
        return failed("gradients", "params_get_no_gradient", f"no gradient reaches {_few(none)}{seen_none}",
                      "every trainable parameter receives a gradient (from some training rows, for a branch "
                      "only some inputs take)",
                      "these parameters never learn: a layer is defined but unused, or the graph is cut",
                      ["look for .detach(), .item(), .numpy() or torch.no_grad() in forward",
                       "a layer built in __init__ but not called in forward",
                       "a branch no input takes (a router that never picks this expert)",
                       "freeze it deliberately with requires_grad_(False) if intended"])
    if zero:
        return failed("gradients", "params_get_zero_gradient",
                      f"gradients exactly zero for {_few(zero)}, before and after one training step{seen_zero}",
                      "non-zero gradients for every trainable parameter (by the second step)",
                      "all-zero gradients mean dead units: no signal flows back through these layers",
                      ["dead ReLUs: a large negative bias or weight init; use the default init (kaiming)",
                       "an activation saturated by unnormalised inputs (see input_range)",
                       "a constant (detached) branch multiplies the signal by zero"])
    return passed("gradients", f"{len(names)} trainable tensors get finite, non-zero gradients{note}")


def _not_reached(recipe, model, x, y, none, zero, more, seed):
    """(none, zero, what was seen of each, a pass note): the parameters with no gradient (`none`) or a
    zero one (`zero`) on (x, y) less those other rows or fresh models reach (checks.reach); a parameter
    whose module ran on the batch and got no gradient is a cut graph and is not looked for further."""
    cut, _ = reach.cut_off(recipe, model, x, y, none)
    conditional = reach.reached_elsewhere(recipe, model, [n for n in none if n not in cut] + zero, (x, y),
                                          more, seed=seed)
    none = [n for n in none if n not in conditional]
    zero = [n for n in zero if n not in conditional]
    elsewhere = " (nor from other training rows or freshly built models)"
    seen_none = (" (their modules ran on this batch, yet no gradient came back: the graph is cut after them, or "
                 "the module does not use them)" if set(none) <= cut else elsewhere)
    note = (f"; {len(conditional)} of them only from other rows or another initialisation, not from this batch "
            f"(conditional computation: {_few(sorted(conditional), 3)})" if conditional else "")
    return none, zero, seen_none, elsewhere, note


def _grads(recipe, model, x, y):
    model.zero_grad(set_to_none=True)
    try:
        ops.loss(recipe, ops.forward(recipe, model, x), y).backward()
    except Exception as e:  # the user's model or loss: report, never crash the suite
        model.zero_grad(set_to_none=True)
        return {}, f"{type(e).__name__}: {e}"
    grads = {n: ops.grad_of(p) for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads, None


def _few(names, k: int = 6) -> str:
    return f"{names[:k]}" + (f" and {len(names) - k} more" if len(names) > k else "")


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


def _has_gradient(p) -> bool:
    grad = ops.grad_of(p)
    return grad is not None and bool(grad.abs().max() > 0)


def _nonzero_lr(lr) -> bool:
    return float(lr) != 0.0


def check_one_step(recipe, model, batch, outputs: Outputs | None = None, more=(), seed: int = 0) -> CheckResult:
    """Steps of the recipe's own optimizer, scheduler and train_step change every trainable
    parameter (by step ONE_STEP_MAX at the latest: a layer behind a zero-initialised one moves at
    step 2), the optimizer holds them all, and deliberately frozen parameters stay unchanged.
    A parameter that got no gradient from the batch because its branch did not run on it (an expert
    no sample was routed to) and that other rows in `more` or another initialisation reach
    (checks.reach) is conditional computation, not judged here."""
    if skip := defer_to_output_shape("one_step", recipe, model, batch, outputs) or ops.defer_to_gradients("one_step", model):
        return skip
    x, y = batch
    with borrowed(model):
        return _judge_one_step(recipe, model.train(), x, y, more, seed)


def _judge_one_step(recipe, model, x, y, more=(), seed: int = 0) -> CheckResult:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        optimizer = ops.optimizer_for(recipe, model)
        scheduler = ops.scheduler_for(recipe, optimizer, 100)
    except Exception as e:
        return failed("one_step", "optimizer_crashed", f"building the optimizer raised {type(e).__name__}: {e}",
                      "an optimizer over the model's parameters", "training cannot run",
                      ["call the recipe's optimizer by hand on the model's parameters"])
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, p in _trainable(model) if id(p) not in in_optimizer]
    if missing:
        return failed("one_step", "params_not_in_optimizer", f"trainable parameters missing from the optimizer: {_few(missing)}",
                      "the optimizer holds every trainable parameter",
                      "parameters outside the optimizer keep their random init forever, and training still 'works'",
                      ["build the optimizer from model.parameters(), not from one sub-layer",
                       "if a layer should not train, call requires_grad_(False) on it"])
    steps = 0
    unchanged = [n for n, _ in _trainable(model)]
    trained = set()  # got a non-zero gradient, with a non-zero lr: moving, if below float32's resolution
    try:
        while unchanged and steps < ONE_STEP_MAX:
            ops.step(recipe, model, x, y, optimizer, scheduler)
            steps += 1
            params = dict(model.named_parameters())
            unchanged = [n for n in unchanged if torch.equal(before[n], params[n].detach())]
            trained |= {n for n in unchanged if _has_gradient(params[n])}
    except Exception as e:
        return failed("one_step", "train_step_crashed", f"one training step raised {type(e).__name__}: {e}",
                      "a step that runs", "training cannot run", ["run the step by hand on one batch and read the traceback"])
    frozen_moved = [n for n, p in model.named_parameters() if not p.requires_grad
                    and not torch.equal(before[n], p.detach())]
    # behind a zero-initialised layer a parameter's first updates can be smaller than float32 can
    # add to it (lr x a gradient scaled by the just-woken layer): it is trained, not dead
    lr_of = {id(p): group.get("lr", 1.0) for group in optimizer.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    unchanged = [n for n in unchanged if not (n in trained and _nonzero_lr(lr_of.get(id(params[n]), 0.0)))]
    untrained = [n for n in unchanged if n not in trained]  # no gradient moved them: a branch not taken, or a bug
    conditional = set()
    if untrained:
        with torch.no_grad():  # judged from the initial weights, where the steps started (borrowed restores all)
            for n, p in params.items():
                p.copy_(before[n])
        # the reference loss on this batch reaches them, yet the recipe's steps did not move them: its step's
        # fault, not a branch; a module that ran without a gradient: a cut graph. Neither is looked for further.
        cut, reached = reach.cut_off(recipe, model, x, y, untrained)
        conditional = reach.reached_elsewhere(recipe, model, [n for n in untrained if n not in cut | reached],
                                              (x, y), more, seed=seed)
        unchanged = [n for n in unchanged if n not in conditional]
    if unchanged:
        return failed("one_step", "params_not_updated", f"unchanged after {steps} steps: {_few(unchanged)}",
                      "every trainable parameter changes within the first steps",
                      "parameters that never move are dead weight; the model trains as if they were constants",
                      ["the train_step does not call optimizer.step(), or calls it before backward()",
                       "zero gradients (see gradients)", "an lr of 0 in a param group"])
    if frozen_moved:
        return failed("one_step", "frozen_params_changed", f"parameters with requires_grad=False changed: {_few(frozen_moved)}",
                      "frozen parameters stay exactly as they were",
                      "a 'frozen' backbone that drifts destroys the features you meant to keep",
                      ["the train_step or optimizer writes to them directly (weight decay on a manual update?)",
                       "BatchNorm running stats are buffers and may change; weights must not"])
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    note = (f"; {len(conditional)} tensors of branches this batch did not take (conditional computation) not judged"
            if conditional else "")
    return passed("one_step", f"{len(before) - frozen - len(conditional)} trainable tensors updated within {steps} "
                              f"step(s), {frozen} frozen unchanged{note}")


def check_batch_independence(recipe, model, batch, source=None, rtol: float = 1e-5) -> CheckResult:
    """In eval mode, replacing one sample by a *different* sample changes no other sample's output
    (forward), and one sample's output has no gradient with respect to another's input (backward).

    The first and the last sample are replaced in turn (a coupling that flows one way along the
    batch, like an RNN fed (N, T, F) as time-major, shows from one end only). `source` is another
    batch to draw the replacement from (default: the batch itself, rolled by half).
    """
    check = "batch_independence"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    x, _ = batch
    n = ops.batch_len(x)
    if n < 3:
        return ops.skipped(check, f"a batch of {n} has no other samples to watch")
    out, error = _eval_forward(recipe, model, x)
    if error or not isinstance(out, torch.Tensor) or len(out) != n:
        return passed(check, "outputs not comparable (see output_shape)")
    scale = max(1.0, float(out.detach().abs().max()))
    worst, where = 0.0, None
    for k in (0, n - 1):
        src, j = _different_sample(x, k, source)
        if src is None:
            continue
        out2, error = _eval_forward(recipe, model, ops.replace_row(x, k, src, j))
        if error or not isinstance(out2, torch.Tensor) or out2.shape != out.shape:
            continue
        others = torch.arange(n, device=out.device) != k
        diff = float((out[others] - out2[others]).abs().max())
        if diff > worst:
            worst, where = diff, k
    if worst > rtol * scale:
        return failed(check, "batch_samples_interact",
                      f"replacing sample {where} alone changed other samples' outputs by up to {worst:.3g} "
                      f"(outputs up to {scale:.3g})",
                      "each sample's output depends on that sample alone (in eval mode)",
                      "a reshape, view or time-major layer over the wrong axis mixes samples: the model learns "
                      "from its neighbours and fails when the batch changes",
                      ["use x.flatten(1) or x.view(x.size(0), -1), not x.view(-1, n) on a permuted tensor",
                       "an nn.LSTM/GRU/RNN or nn.MultiheadAttention given (N, T, F) needs batch_first=True",
                       "check transpose/permute before a view: batch must stay the first axis",
                       "norm layers over the batch axis in eval mode (suppress if deliberate)"])
    grad_leak = _gradient_leak(recipe, model, x)
    if grad_leak is not None and grad_leak[0] > 0:
        return failed(check, "batch_gradients_interact",
                      f"sample {grad_leak[1]}'s output has a gradient of up to {grad_leak[0]:.3g} with respect to "
                      "other samples' inputs", "each sample's output depends on that sample's input alone",
                      "a backward path across the batch means samples leak into each other's updates",
                      ["look for operations over dim 0 (sum, mean, cumsum, sort) inside forward",
                       "an RNN or attention layer missing batch_first=True"])
    return passed(check, f"max change of other samples' outputs {worst:.2g}")


def _different_sample(x, k, source):
    """(tree, j): a row j of `source` (or of x) whose content differs from x's row k."""
    src = x if source is None else source
    m = ops.batch_len(src)
    for j in [(k + m // 2) % m] + list(range(m)):
        if src is x and j == k:
            continue
        if not all(torch.equal(a[k], b[j]) for a, b in zip(ops.leaves(x), ops.leaves(src))):
            return src, j
    return None, None


def _gradient_leak(recipe, model, x):
    """(largest gradient of sample k's output w.r.t. another sample's input, k), float inputs only."""
    leaves = ops.leaves(x)
    if not leaves or not all(t.is_floating_point() for t in leaves):
        return None
    n = len(leaves[0])
    was = model.training
    model.eval()
    try:
        worst = (0.0, 0)
        for k in (0, n - 1):
            xg = ops.tree_map(lambda t: t.detach().clone().requires_grad_(True), x)
            out = ops.forward(recipe, model, xg)
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                return None
            grads = torch.autograd.grad(out[k].float().sum(), ops.leaves(xg), allow_unused=True)
            others = torch.arange(n, device=out.device) != k
            leak = max(float(g[others].abs().max()) for g in grads if g is not None) if any(
                g is not None for g in grads) else 0.0
            worst = max(worst, (leak, k))
        return worst
    except Exception:
        return None
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)


def check_causality(recipe, model, batch, positions=(1, None), outputs: Outputs | None = None) -> CheckResult:
    """For a causal language model: changing the token at position t changes no output at a
    position before t (inputs (N, T) token ids, outputs (N, T, V))."""
    check = "causality"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    x, _ = batch
    ids = x["input_ids"] if isinstance(x, dict) else x
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        return ops.skipped(check, "inputs are not (N, T) token ids")
    out, error = _outputs(recipe, model, x, outputs)
    if error or not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[1] != ids.shape[1]:
        return passed(check, "outputs not aligned with positions (see output_shape)")
    T = ids.shape[1]
    vocab = int(ids.max()) + 1
    worst = (0.0, 0)
    for t in (T // 2, T - 1):
        if t < 1:
            continue
        changed = ids.clone()
        changed[:, t] = (ids[:, t] + 1 + torch.randint(0, max(vocab - 1, 1), (len(ids),),
                                                       generator=torch.Generator().manual_seed(t)).to(ids.device)) % max(vocab, 2)
        x2 = dict(x, input_ids=changed) if isinstance(x, dict) else changed
        out2, error = _eval_forward(recipe, model, x2)
        if error or out2 is None or out2.shape != out.shape:
            continue
        diff = float((out[:, :t] - out2[:, :t]).abs().max())
        worst = max(worst, (diff, t))
    scale = max(1.0, float(out.abs().max()))
    if worst[0] > 1e-5 * scale:
        return failed(check, "future_tokens_leak",
                      f"changing the token at position {worst[1]} changed outputs at earlier positions by up to "
                      f"{worst[0]:.3g}", "outputs at positions < t do not depend on the token at t",
                      "a language model that sees the future learns to copy the next token: the training loss "
                      "collapses and generation is garbage",
                      ["pass a causal mask to attention (is_causal=True, or a triangular attn_mask)",
                       "check that the mask is not transposed (upper vs lower triangle)",
                       "a bidirectional layer (a non-causal conv or RNN) leaks the future"])
    return passed(check, f"outputs before position t unchanged when token t changes (max {worst[0]:.2g})")


def check_eval_deterministic(recipe, model, batch, outputs: Outputs | None = None) -> CheckResult:
    """Two forward passes in eval mode, under torch seeds 0 and 1, give identical outputs (no dropout
    or noise left on). The shared `outputs` (seed 0) stand for the first pass."""
    x, _ = batch
    if outputs is not None:
        a, error = outputs.value, outputs.error
    else:
        torch.manual_seed(0)
        a, error = _eval_forward(recipe, model, x)
    torch.manual_seed(1)
    b, _ = _eval_forward(recipe, model, x)
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
