"""The fit loop, the History it returns, and evaluation.

    from harness import fit, evaluate, train
    history = fit(model, data, lr=0.1, batch_size=128, epochs=15)     # data: harness.Data
    run = train(recipe, lr=0.01)                                      # builds model and data from a Recipe
    metrics = evaluate(run.model, data.test)                          # accuracy, macro P/R/F1, seconds

Data held as tensors is moved to the device once and batched by slicing a shuffled index;
losses and accuracies are summed on the device and read once per epoch. A `Dataset` split
falls back to a `DataLoader`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from harness import runtime
from harness.data import is_tensor_split, split_len, subset as take_subset
from harness.recipe import Data, Recipe, RecipeError, check_data, check_hparams, sgd, warn_batch_size

DIVERGE_CHECK_EVERY = 64  # steps between host reads of the running loss (one sync each)
EVAL_BATCH = 1024


@dataclass
class History:
    """Per-epoch record of one training run (lists are indexed by epoch - 1)."""
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)    # NaN when a custom train_step returns no outputs
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)           # lr in effect during the epoch
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


def default_step(model, inputs, targets, optimizer, loss_fn):
    """The reference training step: zero_grad, forward, loss, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    outputs = model(inputs)
    loss = loss_fn(outputs, targets)
    loss.backward()
    optimizer.step()
    return loss, outputs


def resolve_device(device) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without CUDA is a RecipeError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise RecipeError(f"--device {device!r}: not a device; use cpu, cuda or auto") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"--device {device!r}: CUDA is not available on this machine; use --device cpu or auto")
    return dev


def batches(split, batch_size: int, *, shuffle: bool, generator: torch.Generator,
            drop_last: bool = False, device=None):
    """Yield (inputs, targets) batches. Tensor splits must already be on `device`."""
    if is_tensor_split(split):
        x, y = split
        n = len(y)
        order = torch.randperm(n, generator=generator).to(x.device) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            if order is None:
                yield x[i:i + batch_size], y[i:i + batch_size]
            else:
                idx = order[i:i + batch_size]
                yield x.index_select(0, idx), y.index_select(0, idx)
    else:
        loader = torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=shuffle,
                                             generator=generator, drop_last=drop_last)
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def _train_epoch(model, split, step, optimizer, loss_fn, batch_size, generator, drop_last, device):
    """One pass over the training split. Returns (mean loss, accuracy, peak step loss), read once.

    Per step the loop only records the detached loss and the count of correct predictions
    (three small ops); they are summed every DIVERGE_CHECK_EVERY steps, when the running
    loss is also checked for a non-finite value, and once at the end of the epoch.
    """
    loss_sum = torch.zeros((), device=device)
    peak = torch.full((), -math.inf, device=device)  # the largest single-step loss of the epoch
    losses, sizes, hits = [], [], []           # per step: 0-d loss, batch size, 0-d correct count
    seen, has_outputs = 0, True
    for i, (xb, yb) in enumerate(batches(split, batch_size, shuffle=True, generator=generator,
                                         drop_last=drop_last, device=device), start=1):
        out = step(model, xb, yb, optimizer, loss_fn)
        loss, outputs = out if isinstance(out, tuple) else (out, None)
        if not isinstance(loss, torch.Tensor):
            if loss is None:
                raise RecipeError("train_step returned None; it must return the loss tensor (or (loss, outputs))")
            loss = torch.as_tensor(float(loss), device=device)
        losses.append(loss.detach())
        sizes.append(len(yb))
        if outputs is not None:
            hits.append((outputs.detach().argmax(1) == yb).sum())
        else:
            has_outputs = False
        seen += len(yb)
        if i % DIVERGE_CHECK_EVERY == 0:
            loss_sum, peak = _accumulate(losses, sizes, loss_sum, peak)
            losses, sizes = [], []
            if not torch.isfinite(loss_sum):
                break  # stop at once; the caller sees the non-finite loss
    if losses:
        loss_sum, peak = _accumulate(losses, sizes, loss_sum, peak)
    correct = torch.stack(hits).sum().to(loss_sum.dtype) if hits else torch.zeros_like(loss_sum)
    loss_sum, correct, peak = torch.stack([loss_sum, correct, peak]).tolist()
    return loss_sum / max(seen, 1), (correct / max(seen, 1) if has_outputs else math.nan), peak


def _accumulate(losses: list, sizes: list, loss_sum: torch.Tensor, peak: torch.Tensor):
    """Add sum(loss * batch size) over the listed steps to loss_sum; raise peak to their max."""
    chunk = torch.stack(losses).to(loss_sum.dtype)
    weights = torch.tensor(sizes, dtype=loss_sum.dtype).to(loss_sum.device, non_blocking=True)
    return loss_sum + chunk @ weights, torch.maximum(peak, chunk.max())


@torch.no_grad()
def evaluate_loss_acc(model, split, loss_fn=F.cross_entropy, device=None, batch_size=EVAL_BATCH):
    """Mean loss and accuracy of `model` on a split, in eval mode, read once from the device."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    n = 0
    for xb, yb in batches(split, batch_size, shuffle=False, generator=None, device=device):
        out = model(xb)
        loss_sum += loss_fn(out, yb).float() * len(yb)
        correct += (out.argmax(1) == yb).sum()
        n += len(yb)
    model.train(was_training)
    loss_sum, correct = torch.stack([loss_sum, correct]).tolist()
    return loss_sum / max(n, 1), correct / max(n, 1)


def to_device(split, device):
    """Move a tensor split to `device` (no copy when it is already there); Datasets pass through."""
    if split is None or not is_tensor_split(split):
        return split
    x, y = split
    return x.to(device), y.to(device)


def fit(model: torch.nn.Module, data: Data, *, loss: Callable = F.cross_entropy,
        optimizer: Callable = sgd, lr: float = 0.1, batch_size: int = 128, epochs: int = 15,
        train_step: Optional[Callable] = None, scheduler: Optional[Callable] = None,
        patience: Optional[int] = None, monitor: str = "val_acc", subset=None,
        drop_last: bool = False, device="cpu", seed: int = 0,
        num_classes: Optional[int] = None, diverge_factor: float = 4.0,
        on_epoch: Optional[Callable] = None) -> History:
    """Train `model` in place on `data.train`, validating on `data.val` after every epoch.

    optimizer: (params, lr) -> Optimizer; scheduler: (optimizer, epochs) -> LR scheduler,
    stepped once per epoch. `patience` enables early stopping on `monitor` ('val_acc' or
    'val_loss') and restores the best weights (kept in memory). `subset` trains on an int
    count or a fraction of the training split.

    Training stops as diverged (`History.diverged`, with the reason) when the loss becomes
    non-finite (checked every 64 steps), when an epoch's loss exceeds `diverge_factor` x chance
    level ln(num_classes) (x the first epoch's loss when `num_classes` is not given), or, given
    `num_classes`, when two epochs running end at or above chance after a step's loss exceeded
    `diverge_factor` x chance (an explosion that killed the network), or after learning (the
    loss fell below chance, then came back).
    """
    check_hparams(lr=lr, batch_size=batch_size, epochs=epochs)
    device = resolve_device(device)
    train_split = data.train
    if subset is not None:
        n = subset if isinstance(subset, int) else int(round(subset * split_len(train_split)))
        train_split = take_subset(train_split, n, seed=seed)
    check_data(Data(train=train_split, val=data.val), num_classes, where="fit", finite=False)
    warn_batch_size(batch_size, split_len(train_split), where="fit")
    train_split, val_split = to_device(train_split, device), to_device(data.val, device)
    model.to(device)
    threads_before = _use_threads(model, train_split, batch_size, loss, device, epochs)
    opt = optimizer(model.parameters(), lr)
    sched = scheduler(opt, epochs) if scheduler is not None else None
    step = train_step or default_step
    generator = torch.Generator().manual_seed(seed)
    counted = [0]
    hook = opt.register_step_post_hook(lambda *_: counted.__setitem__(0, counted[0] + 1))
    hist, best, best_state, bad_epochs = History(), None, None, 0
    for epoch in range(1, epochs + 1):
        # --- lr in effect for this epoch
        hist.lr.append(opt.param_groups[0]["lr"])
        # --- forward / backward / step over the shuffled training split
        model.train()
        counted[0] = 0
        t0 = time.perf_counter()
        train_loss, train_acc, peak = _train_epoch(model, train_split, step, opt, loss, batch_size,
                                                   generator, drop_last, device)
        hist.seconds.append(time.perf_counter() - t0)
        hist.steps.append(counted[0])
        hist.train_loss.append(train_loss)
        hist.train_acc.append(train_acc)
        hist.peak_loss.append(peak)
        # --- evaluate
        if val_split is not None and math.isfinite(train_loss):
            val_loss, val_acc = evaluate_loss_acc(model, val_split, loss, device)
        else:
            val_loss, val_acc = math.nan, math.nan
        hist.val_loss.append(val_loss)
        hist.val_acc.append(val_acc)
        if sched is not None:
            sched.step()
        # --- divergence: a non-finite loss, or a loss far above where training started
        reason = _divergence(hist.train_loss, diverge_factor, num_classes, hist.peak_loss)
        if reason:
            hist.diverged, hist.diverged_reason = True, reason
            if on_epoch:
                on_epoch(epoch, hist)
            break
        # --- best epoch and early stopping
        score = _score(hist, monitor)
        if best is None or score > best:
            best, hist.best_epoch, bad_epochs = score, epoch, 0
            if patience is not None:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if on_epoch:
            on_epoch(epoch, hist)
        if patience is not None and bad_epochs > patience:
            hist.stopped_early = True
            break
    hook.remove()
    torch.set_num_threads(threads_before)
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist


def _use_threads(model, split, batch_size, loss, device, epochs) -> int:
    """Set torch's thread count for this run (see harness.runtime); return the previous one."""
    before = torch.get_num_threads()
    n = runtime.threads_for(model, split, batch_size, loss, device, samples=epochs * split_len(split))
    if n != before:
        torch.set_num_threads(n)
    return before


def _divergence(train_loss: list, factor: float, num_classes: Optional[int], peak_loss=()) -> str:
    last, epoch = train_loss[-1], len(train_loss)
    if not math.isfinite(last):
        return f"train loss became {last} in epoch {epoch}"
    # explosion: far above chance (or, with no class count, far above the first epoch)
    chance = math.log(num_classes) if num_classes else None
    ref, what = (chance, f"chance (ln {num_classes})") if chance else (train_loss[0], "the first epoch")
    if last > factor * ref and (chance or epoch >= 2):
        return f"train loss reached {last:.4g} in epoch {epoch}, over {factor:g}x {what} ({ref:.4g})"
    # a step exploded past the threshold and the network sits at chance since: two epochs
    # ending at or above chance (dead units; a slow lr never spikes, so it is never caught here)
    spikes = [p for p in peak_loss if math.isfinite(p)]
    if chance and epoch >= 2 and spikes and max(spikes) > factor * chance and min(train_loss[-2:]) >= chance:
        return (f"a training step's loss reached {max(spikes):.4g} (over {factor:g}x chance, {factor * chance:.4g}) "
                f"and epochs {epoch - 1}-{epoch} ended at or above chance: {train_loss[-2]:.4g}, {last:.4g}")
    # collapse: it learned (below chance), then sat at or above chance for two epochs
    if chance and epoch >= 3:
        best_before = min(train_loss[:-2])
        if min(train_loss[-2:]) >= chance and best_before < 0.99 * min(train_loss[-2:]):
            return (f"train loss fell to {best_before:.4g}, then sat at or above chance "
                    f"(ln {num_classes} = {chance:.4g}) in epochs {epoch - 1}-{epoch}: {train_loss[-2]:.4g}, {last:.4g}")
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


def train(recipe: Recipe, *, data: Optional[Data] = None, seed: int = 0, device="cpu", **overrides) -> Run:
    """Build the recipe's model (seeded) and data, and `fit` with the recipe's settings.

    Keyword overrides (lr, batch_size, epochs, optimizer, scheduler, patience, subset, ...)
    replace the recipe's values for this run only.
    """
    settings = dict(loss=recipe.loss, optimizer=recipe.optimizer, lr=recipe.lr,
                    batch_size=recipe.batch_size, epochs=recipe.epochs, train_step=recipe.train_step,
                    num_classes=recipe.num_classes)
    settings.update(overrides)
    data = data if data is not None else recipe.load_data()
    torch.manual_seed(seed)
    model = recipe.build_model()
    history = fit(model, data, device=device, seed=seed, **settings)
    return Run(model=model, history=history)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split, device=None, batch_size: int = EVAL_BATCH) -> dict:
    """Accuracy, macro precision/recall/F1 (scikit-learn) and inference seconds on a split."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    device = resolve_device(device) if device is not None else next(model.parameters()).device
    split = to_device(split, device)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    preds, targets = [], []
    for xb, yb in batches(split, batch_size, shuffle=False, generator=None, device=device):
        preds.append(model(xb).argmax(1))
        targets.append(yb)
    pred = torch.cat(preds).cpu().numpy()  # the copy to the host waits for the device
    infer_seconds = time.perf_counter() - t0
    model.train(was_training)
    true = torch.cat(targets).cpu().numpy()
    p, r, f1, _ = precision_recall_fscore_support(true, pred, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(true, pred)), "precision_macro": float(p),
            "recall_macro": float(r), "f1_macro": float(f1), "infer_seconds": infer_seconds}
