"""The fit loop, the History it returns, and evaluation, for any task and any structured batch.

    from harness import fit, evaluate, train
    history = fit(model, data, lr=0.1, batch_size=128, epochs=15)     # data: harness.Data
    history = fit(model, data, FitConfig(lr=0.1, task=tasks.Regression()))   # the same, as one object
    run = train(recipe, lr=0.01)                                      # builds model and data from a Recipe
    metrics = evaluate(run.model, data.test, task=recipe.task)        # the task's metrics + seconds

Pair splits (tensors or nested tuples/dicts of them) are moved to the device once and batched by
slicing a shuffled index; losses and the task's main metric are tallied on the device and read
every 64 steps (the divergence check) and once per epoch. Dataset and DataLoader splits are
batched by a DataLoader (harness.batching). Each step is `Recipe.step`, the one training step
every trainer in the harness runs. An exception from the user's model, loss, train_step or
Dataset leaves fit and evaluate as one RecipeError line naming the part and what it was fed
(harness.diagnose), chained to the original.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Optional

import torch

from harness import batching, graphs, parse, runtime, tasks
from harness.batching import as_pair, batch_len, batches, is_pair, split_len, subset as take_subset
from harness.batching import to_device as tree_to_device
from harness.diagnose import user_code
from harness.errors import HarnessWarning
from harness.recipe import (DEFAULT_FORWARD, Data, Recipe, RecipeError, check_data, check_hparams, check_inputs_match_model,
                            default_step, make_optimizer, plain_sgd, warn_batch_size)

__all__ = ["History", "Run", "FitConfig", "fit", "train", "evaluate", "evaluate_loss_acc", "resolve_device",
           "default_step", "batches", "to_device"]

DIVERGE_CHECK_EVERY = 64  # steps between host reads of the running loss (one sync each)
EVAL_BATCH = 1024


@dataclass
class History:
    """Per-epoch record of one training run (lists are indexed by epoch - 1).

    train_acc / val_acc hold the task's main metric (`task.main_metric`: accuracy for
    classification, dense and causal LM, micro F1 for multi-label, R² for regression); the
    names stay for compatibility. Higher is better for every task.
    """
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)    # main metric; NaN when a custom train_step returns no outputs
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)      # main metric on the validation split
    lr: list = field(default_factory=list)           # the lr the optimizer used at the epoch's first step
    steps: list = field(default_factory=list)        # optimizer steps actually taken (counted by a hook)
    seconds: list = field(default_factory=list)      # wall time of the epoch's training pass
    peak_loss: list = field(default_factory=list)    # the largest single-step train loss of the epoch
    best_epoch: Optional[int] = None                 # 1-based, by the monitored metric
    diverged: bool = False
    diverged_reason: str = ""
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def train_seconds(self) -> float:
        return sum(self.seconds)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)


@dataclass
class Run:
    """A trained model and its history."""
    model: torch.nn.Module
    history: History


@dataclass(frozen=True)
class FitConfig:
    """What `fit` trains with; `fit(model, data, **fields)` builds one from keyword arguments.

    scheduler:      (optimizer, epochs) -> LR scheduler stepped once per epoch (harness.schedules, --scheduler).
    step_scheduler: (optimizer, total_steps) -> LR scheduler stepped after every optimizer step (Recipe.scheduler).
    task / num_classes: what the outputs mean (num_classes=C is tasks.Classification(C)); given, the loss at
                    init is the divergence reference; left out, the task is read from the targets.
    patience:       early stopping on `monitor` ('val_acc', the main metric, or 'val_loss'), restoring the best weights.
    subset:         train on an int count or a fraction of the training split.
    """
    loss: Optional[Callable] = None
    optimizer: Callable = plain_sgd
    lr: float = 0.1
    batch_size: int = 128
    epochs: int = 15
    train_step: Optional[Callable] = None
    forward: Optional[Callable] = None
    scheduler: Optional[Callable] = None
    step_scheduler: Optional[Callable] = None
    task: Optional[tasks.Task] = None
    num_classes: Optional[int] = None
    patience: Optional[int] = None
    monitor: str = "val_acc"
    subset: object = None
    drop_last: bool = False
    device: object = "cpu"
    seed: int = 0
    diverge_factor: float = 4.0
    on_epoch: Optional[Callable] = None

    @classmethod
    def of(cls, config: Optional["FitConfig"], settings: dict) -> "FitConfig":
        """`config` (or the defaults) with `settings` applied; an unknown name is one line."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise RecipeError(f"fit: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return replace(config or cls(), **settings)


def resolve_device(device, flag: str = "--device") -> torch.device:
    """'auto' -> cuda when available, else cpu; a device this machine lacks is one line naming `flag`."""
    return parse.device(device, flag)


def to_device(split, device, task: Optional[tasks.Task] = None):
    """A pair split on `device` (numpy turned into tensors, targets as the task's loss takes them);
    Datasets and DataLoaders pass through (they are batched on the fly)."""
    if split is None or not is_pair(split):
        return split
    x, y = tree_to_device(split[0], device), tree_to_device(split[1], device)
    return x, (task.prepare_targets(y) if task is not None else y)


def fit(model: torch.nn.Module, data: Data, config: Optional[FitConfig] = None, **settings) -> History:
    """Train `model` in place on `data.train`, validating on `data.val` (may be None) after every epoch.

    Settings are a FitConfig, or its fields as keyword arguments (see FitConfig). Training stops
    as diverged (`History.diverged`, with the reason) when the loss becomes non-finite (checked
    every 64 steps), when an epoch's loss exceeds `diverge_factor` x the loss at init (ln C; x the
    first epoch's loss when no task or num_classes is given), or, with a known loss at init, when
    two epochs running end at or above it after a step's loss exceeded `diverge_factor` x it (an
    explosion that killed the network) or after learning (the loss fell below it, then came back).
    A learning rate driven negative or NaN (by a scheduler) is a RecipeError, not divergence.
    Threads, the optimizer hooks and the model's train/eval mode are restored however fit ends.
    """
    cfg = FitConfig.of(config, settings)
    device = _indexed(resolve_device(cfg.device))
    step, train_split, val_split = _prepare(model, data, cfg, device)
    opt = make_optimizer(step.optimizer, model, cfg.lr, where="fit")
    epoch_sched = cfg.scheduler(opt, cfg.epochs) if cfg.scheduler is not None else None
    step_sched = step.make_scheduler(opt, cfg.epochs * _steps_per_epoch(train_split, cfg))
    step = graphs.fast_step(step, model, opt, cfg.batch_size, device, step_sched)  # on CUDA, small batches: a CUDA graph
    chance = (cfg.task or _task_of(cfg)).init_loss() if (cfg.task or cfg.num_classes) else None
    generator = torch.Generator().manual_seed(cfg.seed)
    watch = _StepWatch(opt)
    threads_before, was_training = torch.get_num_threads(), model.training
    hist, best, best_state, bad_epochs = History(), None, None, 0
    first_step = None  # the first step's loss: the model at init on one batch (a reference without chance)
    try:
        _use_threads(model, train_split, cfg, step.loss, device)
        for epoch in range(1, cfg.epochs + 1):
            # --- forward / backward / step over the shuffled training split
            _check_lr(opt, f"before epoch {epoch}")
            model.train()
            watch.new_epoch()
            t0 = time.perf_counter()
            with user_code("fit", "train", train_split, batch_size=cfg.batch_size):  # a raw error: one line
                train_loss, train_score, peak, first = _train_epoch(step, model, train_split, opt, step_sched,
                                                                    cfg, generator, device)
            first_step = first if first_step is None else first_step
            hist.seconds.append(time.perf_counter() - t0)
            _check_lr(opt, f"in epoch {epoch}")
            # --- record: the lr the optimizer actually used, the steps it took, loss and main metric
            hist.lr.append(watch.lr if watch.lr is not None else current_lr(opt))
            hist.steps.append(watch.steps)
            hist.train_loss.append(train_loss)
            hist.train_acc.append(train_score)
            hist.peak_loss.append(peak)
            # --- evaluate
            if val_split is not None and math.isfinite(train_loss):
                with user_code("fit", "val", val_split, reference=train_split):
                    val_loss, val_score = evaluate_loss_acc(model, val_split, step.compute_loss, device,
                                                            task=step.task, forward=step.forward)
            else:
                val_loss, val_score = math.nan, math.nan
            hist.val_loss.append(val_loss)
            hist.val_acc.append(val_score)
            if epoch_sched is not None:
                epoch_sched.step()
            # --- divergence: a non-finite loss, or a loss far above where training started
            reason = _divergence(hist.train_loss, cfg.diverge_factor, cfg.num_classes, hist.peak_loss, chance=chance,
                                 first_step=first_step)
            if reason:
                hist.diverged, hist.diverged_reason = True, reason
                if cfg.on_epoch:
                    cfg.on_epoch(epoch, hist)
                break
            # --- best epoch and early stopping
            score = _score(hist, cfg.monitor)
            if best is None or score > best:
                best, hist.best_epoch, bad_epochs = score, epoch, 0
                if cfg.patience is not None:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
            if cfg.on_epoch:
                cfg.on_epoch(epoch, hist)
            if cfg.patience is not None and bad_epochs > cfg.patience:
                hist.stopped_early = True
                break
    finally:
        watch.remove()
        torch.set_num_threads(threads_before)
        model.train(was_training)
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist


# --- fit's helpers --------------------------------------------------------------------------------

def _indexed(device: torch.device) -> torch.device:
    """cuda -> cuda:N (the current device), so that tensors' devices compare equal to it."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _check_split(split, where: str) -> None:
    if split is None:
        raise RecipeError(f"{where}: the split is None; pass data.val or data.test (Data(test=...) may be None)")


def _task_of(cfg: FitConfig):
    return cfg.task or (tasks.Classification(cfg.num_classes) if cfg.num_classes is not None else None)


def _prepare(model, data: Data, cfg: FitConfig, device):
    """Validate settings and data, and return (the step as a Recipe, train split, val split) on `device`."""
    check_hparams(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs)
    if not isinstance(data, Data):
        raise RecipeError(f"fit: data must be harness.Data(train=..., val=...), got {type(data).__name__}")
    train_split = data.train
    if train_split is None:
        raise RecipeError("fit: data.train is None; give Data(train=(inputs, targets), ...)")
    if cfg.subset is not None:
        train_split = _subset(train_split, cfg.subset, cfg.seed)
    if batching.fixed_order(train_split, cfg.batch_size):
        warnings.warn(HarnessWarning(
            "fit: the train split is a DataLoader that never shuffles (shuffle=False), so every epoch sees the "
            "samples in the same order; give DataLoader(..., shuffle=True), or its Dataset (the harness shuffles it)"),
            stacklevel=3)
    with user_code("fit", "train", train_split, others={"val": data.val}):  # it may read a Dataset split
        task = _task_of(cfg) or infer_task(train_split, data.val)
    check_data(Data(train=train_split, val=data.val), task, where="fit", finite=False)
    warn_batch_size(cfg.batch_size, split_len(train_split), where="fit", stacklevel=4)
    step = Recipe(model=lambda: model, data=lambda: data, task=task, loss=cfg.loss, optimizer=cfg.optimizer,
                  lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, train_step=cfg.train_step,
                  forward=cfg.forward, scheduler=cfg.step_scheduler, name="fit")
    check_inputs_match_model(model, train_split, where="fit")
    model.to(device)
    return step, to_device(train_split, device, task), to_device(data.val, device, task)


def _subset(split, subset, seed: int):
    """`subset` samples (an int count, or a fraction) of the training split, seeded; a count above
    the split's size is a one-line warning and takes all of it."""
    total = split_len(split)
    n = subset if isinstance(subset, int) else int(round(subset * total))
    if n > total:
        warnings.warn(HarnessWarning(f"fit: subset {n} is more than the {total}-sample training split, so it trains "
                                     f"on all {total}; give a count up to {total} or a fraction in (0, 1] "
                                     "(--subset, subset=)"), stacklevel=4)
    return take_subset(split, n, seed=seed)


def infer_task(*splits) -> tasks.Task:
    """The task for `fit`/`evaluate` called without one: classification, as in contract v1, with
    as many classes as the largest label + 1 (or the width of (N, C) targets) in the splits given."""
    widths = [2]
    for split in splits:
        if split is None:
            continue
        _, y = as_pair(split, limit=None if is_pair(split) else 4096)
        if not isinstance(y, torch.Tensor):
            raise RecipeError("fit: targets that are not one tensor need an explicit task= (harness.tasks)")
        if y.dim() == 2 and y.shape[1] > 1:
            widths.append(y.shape[1])
        elif len(y) and not y.is_floating_point() and y.dtype != torch.bool:
            widths.append(int(y.max()) + 1)
    return tasks.Classification(max(widths))


def _steps_per_epoch(split, cfg: FitConfig) -> int:
    n = split_len(split)
    return n // cfg.batch_size if cfg.drop_last else -(-n // cfg.batch_size)


class _StepWatch:
    """Optimizer hooks: count the steps taken and record the lr the epoch's first step used."""

    def __init__(self, opt):
        self.opt, self.steps, self.lr = opt, 0, None
        self.hooks = [opt.register_step_post_hook(self._after)]

    def _after(self, *_):
        # right after optimizer.step(), before any scheduler moves it: the lr this step used
        if not self.steps:
            self.lr = current_lr(self.opt)
        self.steps += 1

    def new_epoch(self):
        self.steps, self.lr = 0, None

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def _lr_value(lr) -> float:
    """A param group's lr as a number (a capturable optimizer may hold it as a tensor)."""
    return float(lr) if isinstance(lr, torch.Tensor) else lr


def current_lr(opt) -> float:
    """The first param group's lr as a float."""
    return _lr_value(opt.param_groups[0]["lr"])


def _check_lr(opt, when: str) -> None:
    """A learning rate below zero or NaN is a broken schedule, reported as such (not as divergence)."""
    for group in opt.param_groups:
        lr = _lr_value(group["lr"])
        if not (lr >= 0 and math.isfinite(lr)):
            raise RecipeError(f"fit: the learning rate became {lr!r} {when}; the scheduler (or train_step) drives it "
                              "negative or NaN: check its factory (gamma, warmup, total steps)")


def _train_epoch(step: Recipe, model, split, opt, sched, cfg: FitConfig, generator, device):
    """One pass over the training split. Returns (mean loss, main metric, peak step loss, the first
    step's loss).

    Per step the loop only records the detached loss and the task's small tally of the main
    metric; they are summed every DIVERGE_CHECK_EVERY steps, when the running loss is also
    checked for a non-finite value, and read once at the end of the epoch.
    """
    loss_sum = torch.zeros((), device=device)
    peak = torch.full((), -math.inf, device=device)  # the largest single-step loss of the epoch
    losses, sizes = [], []                            # per step: 0-d loss, batch size
    meter, has_outputs, seen = step.task.meter(full=False), True, 0
    for i, (xb, yb) in enumerate(batches(split, cfg.batch_size, shuffle=True, generator=generator,
                                         drop_last=cfg.drop_last, device=device), start=1):
        loss, outputs = step.step(model, xb, yb, opt, sched)
        loss = loss.detach()
        losses.append(loss if loss.device == device else loss.to(device))  # a float from a custom step is on the CPU
        n = batch_len(yb)
        sizes.append(n)
        seen += n
        if outputs is not None:
            meter.update(outputs, yb)
        else:
            has_outputs = False
        if i % DIVERGE_CHECK_EVERY == 0:
            loss_sum, peak = _accumulate(losses, sizes, loss_sum, peak)
            losses, sizes = [], []
            if not torch.isfinite(loss_sum):
                break  # stop at once; the caller sees the non-finite loss
        if i == 1:
            first = losses[-1]  # on the device, with the others
    if losses:
        loss_sum, peak = _accumulate(losses, sizes, loss_sum, peak)
    if seen == 0:  # no batch (an empty split is refused earlier; kept total for safety)
        first = torch.full((), math.nan, device=device)
    loss_sum, peak, first = torch.stack([loss_sum, peak, first.to(loss_sum.dtype)]).tolist()  # one read
    score = meter.compute()[step.task.main_metric] if has_outputs else math.nan
    return loss_sum / max(seen, 1), score, peak, first


def _accumulate(losses: list, sizes: list, loss_sum: torch.Tensor, peak: torch.Tensor):
    """Add sum(loss * batch size) over the listed steps to loss_sum; raise peak to their max."""
    chunk = torch.stack(losses).to(loss_sum.dtype)
    weights = torch.tensor(sizes, dtype=loss_sum.dtype).to(loss_sum.device, non_blocking=True)
    return loss_sum + chunk @ weights, torch.maximum(peak, chunk.max())


def _use_threads(model, split, cfg: FitConfig, loss, device) -> None:
    """Set torch's thread count for this run (harness.runtime's one rule); fit restores it."""
    n = runtime.threads_for(model, split, cfg.batch_size, loss, device, samples=cfg.epochs * split_len(split))
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


EXPLODED = 1e6  # an epoch's loss this many times the first step's has exploded (tasks with no loss at init)


def _divergence(train_loss: list, factor: float, num_classes: Optional[int] = None, peak_loss=(),
                chance: Optional[float] = None, first_step: Optional[float] = None) -> str:
    """Why training diverged ("" if it did not); `chance` is the loss at init (default ln num_classes);
    `first_step` the first step's loss, the reference of a task with no known loss at init."""
    last, epoch = train_loss[-1], len(train_loss)
    if not math.isfinite(last):
        return f"train loss became {last} in epoch {epoch}"
    if chance is None and num_classes:
        chance = math.log(num_classes)
    at_init = f"chance (ln {num_classes})" if num_classes else f"the loss at init ({chance:.4g})" if chance else ""
    # explosion: far above chance (or, with no loss at init, far above the first epoch)
    ref, what = (chance, at_init) if chance else (train_loss[0], "the first epoch")
    if last > factor * ref and (chance or epoch >= 2):
        return f"train loss reached {last:.4g} in epoch {epoch}, over {factor:g}x {what} ({ref:.4g})"
    # without a loss at init (a regression) an explosion in the first epoch has no reference above:
    # the first step's loss (the model at init, one batch) is one, far enough that one batch's luck is not
    if not chance and first_step and math.isfinite(first_step) and last > EXPLODED * first_step:
        return (f"train loss reached {last:.4g} in epoch {epoch}, over {EXPLODED:.0e}x the first step's loss "
                f"(the model at init: {first_step:.4g})")
    # a step exploded past the threshold and the network sits at chance since: two epochs
    # ending at or above chance (dead units; a slow lr never spikes, so it is never caught here)
    spikes = [p for p in peak_loss if math.isfinite(p)]
    if chance and epoch >= 2 and spikes and max(spikes) > factor * chance and min(train_loss[-2:]) >= chance:
        return (f"a training step's loss reached {max(spikes):.4g} (over {factor:g}x {at_init}, {factor * chance:.4g}) "
                f"and epochs {epoch - 1}-{epoch} ended at or above it: {train_loss[-2]:.4g}, {last:.4g}")
    # collapse: it learned (below chance), then sat at or above chance for two epochs
    if chance and epoch >= 3:
        best_before = min(train_loss[:-2])
        if min(train_loss[-2:]) >= chance and best_before < 0.99 * min(train_loss[-2:]):
            return (f"train loss fell to {best_before:.4g}, then sat at or above {at_init} = {chance:.4g} "
                    f"in epochs {epoch - 1}-{epoch}: {train_loss[-2]:.4g}, {last:.4g}")
    return ""


def _score(hist: History, monitor: str) -> float:
    """Higher is better. Without a validation split, falls back to (minus) the train loss."""
    if monitor == "val_acc" and math.isfinite(hist.val_acc[-1]):
        return hist.val_acc[-1]
    if monitor == "val_loss" and math.isfinite(hist.val_loss[-1]):
        return -hist.val_loss[-1]
    if monitor not in ("val_acc", "val_loss"):
        raise RecipeError(f"fit: monitor must be 'val_acc' or 'val_loss', got {monitor!r}")
    return -hist.train_loss[-1]


# --- a recipe end to end, and evaluation ----------------------------------------------------------

def train(recipe: Recipe, *, data: Optional[Data] = None, seed: int = 0, device="cpu", **overrides) -> Run:
    """Build the recipe's model (seeded) and data, and `fit` with the recipe's settings.

    Keyword overrides (lr, batch_size, epochs, optimizer, scheduler, patience, subset, ...)
    replace the recipe's values for this run only.
    """
    settings = dict(task=recipe.task, loss=recipe.loss, optimizer=recipe.optimizer, lr=recipe.lr,
                    batch_size=recipe.batch_size, epochs=recipe.epochs, train_step=recipe.train_step,
                    forward=recipe.forward, step_scheduler=recipe.scheduler, num_classes=recipe.num_classes)
    settings.update(overrides)
    data = data if data is not None else recipe.load_data()
    torch.manual_seed(seed)
    model = recipe.build_model()
    history = fit(model, data, device=device, seed=seed, **settings)
    return Run(model=model, history=history)


@torch.no_grad()
def evaluate_loss_acc(model, split, loss_fn: Optional[Callable] = None, device=None, batch_size=EVAL_BATCH,
                      task: Optional[tasks.Task] = None, forward: Optional[Callable] = None):
    """Mean loss and the task's main metric of `model` on a split, in eval mode, read once from the device."""
    _check_split(split, "evaluate_loss_acc")
    task = task or infer_task(split)
    loss_fn = loss_fn or task.loss
    device = device or _model_device(model)
    loss_sum, n = torch.zeros((), device=device), 0
    meter = task.meter(full=False)
    with _eval_mode(model):
        for xb, yb, out in _outputs(model, to_device(split, device, task), batch_size, device, forward):
            size = batch_len(yb)
            loss_sum += loss_fn(out, yb).float() * size
            meter.update(out, yb)
            n += size
    return float(loss_sum) / max(n, 1), meter.compute()[task.main_metric]


@torch.no_grad()
def evaluate(model: torch.nn.Module, split, device=None, batch_size: int = EVAL_BATCH,
             task: Optional[tasks.Task] = None, forward: Optional[Callable] = None) -> dict:
    """The task's metrics on a split (classification: accuracy, macro precision/recall/F1 via
    scikit-learn) and `infer_seconds`; the task is read from the targets when not given."""
    _check_split(split, "evaluate")
    device = resolve_device(device) if device is not None else _model_device(model)
    with _eval_mode(model), user_code("evaluate", None, split):
        task = task or infer_task(split)
        meter = task.meter()
        t0 = time.perf_counter()
        for _, yb, out in _outputs(model, to_device(split, device, task), batch_size, device, forward):
            meter.update(out, yb)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        infer_seconds = time.perf_counter() - t0
        metrics = meter.compute()
    return {**metrics, "infer_seconds": infer_seconds}


def _outputs(model, split, batch_size, device, forward):
    """(inputs, targets, unwrapped outputs) per batch, in order."""
    forward = forward or DEFAULT_FORWARD
    for xb, yb in batches(split, batch_size, shuffle=False, generator=None, device=device):
        yield xb, yb, forward(model, xb)


def _model_device(model) -> torch.device:
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


class _eval_mode:
    """Eval mode inside the block; the model's own mode restored after, however the block ends."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
