"""What a model's outputs mean: one small class per task (shapes, default loss, loss at init, metrics).

    from harness import tasks
    task = tasks.Classification(10)            # or MultiLabel(L), Regression(K), Dense(C), CausalLM(V)
    loss = task.loss(outputs, targets)          # the default loss of the task
    task.init_loss()                            # the loss to expect at init (ln C), or None
    task.check_outputs(outputs, targets)        # None, or one line naming the problem and the fix
    meter = task.meter()                        # accumulates per batch on the device, no host sync
    meter.update(outputs, targets); meter.compute()   # {"accuracy": ..., "f1_macro": ..., ...}
    task.skip_reason("class_balance")           # why a check does not apply to this task, or None
    task.output_groups(inputs, outputs)         # which outputs a model can set apart (the overfit floor)
    task.output_space(outputs)                  # (down, up) when outputs are upsampled from a coarser grid
    task.overfit_rows(targets, n)               # which rows of a batch the overfit check trains on
    task.loss_parts(outputs, targets)           # per-part losses judged one by one (per label), or None
    task.unseen_classes_expected(targets)       # why classes absent from the targets are healthy, or None

Each task keeps only small per-batch tallies (counts, sums, a confusion matrix) or per-sample
predictions, never the full output tensors, so metrics over a large split cost little memory.
`task.main_metric` names the metric `fit` records in History.train_acc / val_acc (higher is
better for every task) and the study reports in its tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from harness import batching, parse
from harness.errors import RecipeError


def count(value, what: str, minimum: int = 1) -> int:
    """An integer count (int or numpy integer, not bool) >= minimum, else a one-line RecipeError."""
    return parse.integer(value, what, minimum)


def shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class Meter:
    """Per-batch tallies kept on the device; `compute()` reads them once and returns the task's metrics."""

    def __init__(self, task: "Task", full: bool = True):
        self.task, self.full = task, full
        self.tallies: list = []   # one small 1-D tensor of additive sums per batch
        self.kept: list = []      # per-sample values some metrics need (predictions, scores)
        self.n = 0                # samples seen

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch; a few small ops on the device, no host sync."""
        outputs = outputs.detach()
        self.n += targets.shape[0]
        self.tallies.append(self.task.tally(outputs, targets, self.full))
        if self.full:
            kept = self.task.keep(outputs, targets)
            if kept is not None:
                self.kept.append(kept)

    def compute(self) -> dict:
        if not self.tallies:
            return {name: math.nan for name in self.task.metric_names(self.full)}
        total = torch.stack(self.tallies).sum(0).reshape(-1).double().cpu()  # the one host read
        return self.task.summarize(total, self.kept, self.full, self.n)


class Task:
    """The interface every task implements; see the module docstring."""
    name = "task"
    main_metric = "accuracy"
    skips: dict = {}   # check id -> why the check does not apply to this task

    def loss(self, outputs, targets):
        raise NotImplementedError

    def init_loss(self) -> Optional[float]:
        return None

    def check_outputs(self, outputs, targets) -> Optional[str]:
        raise NotImplementedError

    def check_targets(self, targets) -> Optional[str]:
        return None

    def prepare_targets(self, targets):
        """Targets as the default loss takes them (e.g. int32 labels as int64); cheap, done once per split."""
        return targets

    def meter(self, full: bool = True) -> Meter:
        """A fresh accumulator; `full=False` tracks the main metric only (what fit's training pass needs)."""
        return Meter(self, full)

    def metrics(self, pairs) -> dict:
        """The task's metrics over an iterable of (outputs, targets) batches."""
        meter = self.meter()
        for outputs, targets in pairs:
            meter.update(outputs, targets)
        return meter.compute()

    def skip_reason(self, check_id: str) -> Optional[str]:
        if check_id == "causality" and not isinstance(self, CausalLM):
            return f"causality applies to causal language models only, not to {self.name}"
        return self.skips.get(check_id)

    def unseen_classes_expected(self, targets) -> Optional[str]:
        """Why classes that never appear among these targets are healthy (a token vocabulary keeps ids
        that are never targets), or None when every class should appear (the labels check then fails
        class_missing)."""
        return None

    # what the overfit check asks: how free the outputs are, and which parts of the loss to judge alone
    def output_groups(self, inputs, outputs) -> torch.Tensor:
        """Group ids (0..K-1, int64) over the leading dimensions of `outputs`: outputs in one group
        see the same input, so any model gives them the same value; outputs in different groups
        may differ. `outputs.reshape(groups.numel(), -1)[i]` is the unit with id `groups.flatten()[i]`.
        Default: one unit per sample, samples with identical inputs in one group, shape (N,)."""
        return distinct_rows(inputs)

    def overfit_rows(self, targets, n: int) -> torch.Tensor:
        """Indices of the (about) n rows of a batch the overfit check trains on: the first n here."""
        device = batching.leaves(targets)[0].device
        return torch.arange(min(n, batching.batch_len(targets)), device=device)

    def output_space(self, outputs):
        """None, or (down, up) when every output is `up(c)` for a smaller `c` (segmentation logits
        upsampled from a coarser grid): the overfit floor then frees `c`, not every position.
        `down(o)` is the `c` whose `up` is closest to `o`; both act on the trailing dimensions."""
        return None

    def loss_parts(self, outputs, targets) -> Optional[torch.Tensor]:
        """Losses over disjoint parts of the outputs that the overfit check judges one by one, (P,)
        (each must close its own gap), or None to judge the loss as a whole."""
        return None

    def part_name(self, i: int) -> str:
        return f"part {i}"

    # what a Meter calls: tally -> 1-D tensor of sums per batch; keep -> per-sample values; summarize -> dict
    def tally(self, outputs, targets, full: bool) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, outputs, targets):
        return None

    def summarize(self, total: torch.Tensor, kept: list, full: bool, n: int) -> dict:
        """The metrics from the summed tallies, the kept values and the sample count `n`."""
        raise NotImplementedError

    def metric_names(self, full: bool) -> tuple:
        return (self.main_metric,)


def _batch_mismatch(outputs, targets) -> Optional[str]:
    if outputs.dim() == 0 or targets.dim() == 0:
        return f"outputs {shape(outputs)} and targets {shape(targets)} need a batch dimension first"
    if len(outputs) != len(targets):
        swapped = outputs.dim() >= 2 and targets.dim() >= 2 and outputs.shape[:2] == targets.shape[:2][::-1]
        why = (" (the outputs look time-major (T, N, ...); use batch_first=True or permute)" if swapped else "")
        return (f"outputs hold {len(outputs)} samples but targets {len(targets)}{why}; the model must keep the "
                "batch dimension first (N, ...)")
    return None


def _not_tensor(outputs) -> Optional[str]:
    if not isinstance(outputs, torch.Tensor):
        return f"outputs are a {type(outputs).__name__}, not a tensor; unwrap them with forward=(model, inputs) -> tensor"
    return None


def distinct_rows(inputs) -> torch.Tensor:
    """(N,) int64 group ids 0..K-1: samples whose inputs are equal in every leaf share an id."""
    found = batching.leaves(inputs)
    n = len(found[0])
    rows = torch.cat([t.detach().reshape(n, -1).double().cpu() for t in found], 1) if n else torch.zeros(0, 1)
    return torch.unique(rows, dim=0, return_inverse=True)[1].to(found[0].device)


# --- classification -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Classification(Task):
    """One class per sample: outputs (N, C) logits; targets (N,) class indices (any integer dtype)
    or (N, C) class probabilities. Cross-entropy; accuracy and macro precision/recall/F1."""
    num_classes: int
    name = "classification"
    main_metric = "accuracy"
    skips = {}

    def __post_init__(self):
        object.__setattr__(self, "num_classes", count(self.num_classes, "Classification num_classes", 2))

    def loss(self, outputs, targets):
        if not targets.is_floating_point() and targets.dtype != torch.int64:
            targets = targets.long()
        return F.cross_entropy(outputs, targets)

    def init_loss(self):
        return math.log(self.num_classes)

    def overfit_rows(self, targets, n):
        """Every class of the batch equally often, n // classes rows each (at least two; classes
        with fewer rows give what they have), in batch order. A class rarer in the overfit batch
        than in training is pushed down by every other row: a head clamped at zero (SqueezeNet's
        ReLU) then switches it off for good, which training on balanced batches does not. One row
        per class failed healthy BatchNorm models in eval mode (ShuffleNet V2, MobileNetV2 on 10
        rows: overfit_lost_in_eval_mode); two per class pass."""
        if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.is_floating_point() or not len(targets):
            return super().overfit_rows(targets, n)
        classes = targets.unique()
        first = torch.stack([(targets == c).nonzero()[0, 0] for c in classes]).argsort()
        classes = classes[first][:n]                                    # in order of first appearance
        per = max(2, n // len(classes))
        rows = torch.cat([(targets == c).nonzero().flatten()[:per] for c in classes])
        return rows.sort().values

    def prepare_targets(self, targets):
        if isinstance(targets, torch.Tensor) and not targets.is_floating_point() and targets.dtype not in (torch.int64, torch.bool):
            return targets.long()
        return targets

    def check_outputs(self, outputs, targets):
        problem = _not_tensor(outputs) or _batch_mismatch(outputs, targets)
        if problem:
            return problem
        if outputs.dim() != 2 or outputs.shape[1] != self.num_classes:
            return (f"outputs have shape {shape(outputs)}, expected (N, {self.num_classes}) logits for "
                    f"{self.num_classes} classes; check the last layer's width (or the task)")
        return self.check_targets(targets)

    def check_targets(self, targets):
        C = self.num_classes
        if targets.dtype == torch.bool:
            return f"targets are bool; give class indices (N,) as integers in [0, {C})"
        if targets.is_floating_point():
            if targets.dim() == 2 and targets.shape[1] == C:
                return None  # class probabilities (or one-hot floats)
            return (f"targets are {str(targets.dtype).replace('torch.', '')} {shape(targets)}; give class indices "
                    f"as integers (y.long()) or (N, {C}) class probabilities")
        if targets.dim() == 2 and targets.shape[1] == 1:
            return f"targets have shape {shape(targets)}; give class indices of shape (N,): y.squeeze(1)"
        if targets.dim() == 2 and targets.shape[1] == C:
            return f"targets look one-hot {shape(targets)}; give class indices y.argmax(1), or float probabilities y.float()"
        if targets.dim() != 1:
            return f"targets have shape {shape(targets)}; expected (N,) class indices"
        if len(targets):
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= C:
                return (f"labels run from {lo} to {hi}, outside [0, {C}); labels numbered from 1 need -1, "
                        f"or num_classes={C} is wrong")
        return None

    def tally(self, outputs, targets, full):
        labels = targets.argmax(1) if targets.is_floating_point() else targets
        return (outputs.argmax(1) == labels).sum()

    def keep(self, outputs, targets):
        labels = targets.argmax(1) if targets.is_floating_point() else targets
        return outputs.argmax(1), labels

    def summarize(self, total, kept, full, n):
        if not full:
            return {"accuracy": float(total[0]) / max(n, 1)}
        pred = torch.cat([p for p, _ in kept]).cpu()
        true = torch.cat([t for _, t in kept]).cpu()
        return {"accuracy": float((pred == true).double().mean()) if len(true) else 0.0, **macro_scores(true, pred)}

    def metric_names(self, full):
        return ("accuracy", "precision_macro", "recall_macro", "f1_macro") if full else ("accuracy",)



def macro_scores(true: torch.Tensor, pred: torch.Tensor) -> dict:
    """Macro precision, recall and F1 over the classes that occur in `true` or `pred`, a class's
    score 0 where it is 0/0: scikit-learn's precision_recall_fscore_support(average="macro",
    zero_division=0), computed from counts (importing sklearn.metrics costs about a second)."""
    if not len(true):
        return {"precision_macro": 0.0, "recall_macro": 0.0, "f1_macro": 0.0}
    size = int(torch.maximum(true.max(), pred.max())) + 1
    predicted, actual = torch.bincount(pred, minlength=size).double(), torch.bincount(true, minlength=size).double()
    present = actual + predicted > 0
    hits = torch.bincount(true[true == pred], minlength=size)[present].double()
    predicted, actual = predicted[present], actual[present]

    def ratio(a, b):
        return float(torch.where(b > 0, a / b.clamp(min=1), torch.zeros_like(a)).mean())
    return {"precision_macro": ratio(hits, predicted), "recall_macro": ratio(hits, actual),
            "f1_macro": ratio(2 * hits, actual + predicted)}


# --- multi-label --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MultiLabel(Task):
    """Several independent yes/no labels per sample: outputs (N, L) logits, targets (N, L) of 0/1.
    Binary cross-entropy with logits (ln 2 per label at init); micro/macro F1 and mean average precision."""
    num_labels: int
    name = "multilabel"
    main_metric = "f1_micro"
    skips = {"class_balance": "multi-label targets are judged per label, not as one class per sample",
             "labels_predictable": "multi-label targets are not one class per sample"}

    def __post_init__(self):
        object.__setattr__(self, "num_labels", count(self.num_labels, "MultiLabel num_labels"))

    def loss(self, outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))

    def init_loss(self):
        return math.log(2.0)  # per label, at p = 0.5

    def loss_parts(self, outputs, targets):
        """Binary cross-entropy per label, (L,): one label the model cannot learn hides in the mean
        over many it can, so the overfit check judges each label alone."""
        return F.binary_cross_entropy_with_logits(outputs.float(), targets.float(), reduction="none").mean(0)

    def part_name(self, i):
        return f"label {i}"

    def check_outputs(self, outputs, targets):
        problem = _not_tensor(outputs) or _batch_mismatch(outputs, targets)
        if problem:
            return problem
        if tuple(outputs.shape[1:]) != (self.num_labels,):
            return f"outputs have shape {shape(outputs)}, expected (N, {self.num_labels}) logits, one per label"
        return self.check_targets(targets)

    def check_targets(self, targets):
        L = self.num_labels
        if targets.dim() != 2 or targets.shape[1] != L:
            hint = "; for one class per sample use tasks.Classification" if targets.dim() == 1 else ""
            return f"targets have shape {shape(targets)}, expected (N, {L}) of 0/1{hint}"
        if len(targets) and not bool(((targets == 0) | (targets == 1)).all()):
            return "multi-label targets must be 0 or 1"
        return None

    def tally(self, outputs, targets, full):
        pred, true = outputs > 0, targets > 0.5
        return torch.stack([(pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0)]).flatten()

    def keep(self, outputs, targets):
        return outputs.float(), targets.float()

    def summarize(self, total, kept, full, n):
        tp, fp, fn = total.view(3, -1)
        micro = float(2 * tp.sum() / max(float(2 * tp.sum() + fp.sum() + fn.sum()), 1.0))
        if not full:
            return {"f1_micro": micro}
        from sklearn.metrics import average_precision_score

        per_label = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.zeros_like(tp))
        scores = torch.cat([s for s, _ in kept]).cpu().numpy()
        true = torch.cat([t for _, t in kept]).cpu().numpy()
        present = true.sum(0) > 0  # average precision is undefined for a label with no positives
        m_ap = float(average_precision_score(true[:, present], scores[:, present], average="macro")) if present.any() else math.nan
        return {"f1_micro": micro, "f1_macro": float(per_label.mean()), "mAP": m_ap}

    def metric_names(self, full):
        return ("f1_micro", "f1_macro", "mAP") if full else ("f1_micro",)



# --- regression ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Regression(Task):
    """Real-valued targets: outputs exactly the targets' shape, (N,) or (N, K). Mean squared error;
    MSE, MAE and R² (averaged over outputs, as scikit-learn's r2_score). A (N, 1) vs (N,) pair is
    a problem, never a silent broadcast."""
    num_outputs: int = 1
    name = "regression"
    main_metric = "r2"
    skips = {"class_balance": "regression targets have no classes",
             "labels_out_of_range": "regression targets have no classes",
             "outputs_are_logits": "regression outputs are values, not logits",
             "loss_at_init": "regression has no expected loss at init (it depends on the targets' scale)"}

    def __post_init__(self):
        object.__setattr__(self, "num_outputs", count(self.num_outputs, "Regression num_outputs"))

    def loss(self, outputs, targets):
        if outputs.shape != targets.shape:
            raise RecipeError(self.check_outputs(outputs, targets) or f"outputs {shape(outputs)} vs targets {shape(targets)}")
        return F.mse_loss(outputs, targets.to(outputs.dtype))

    def init_loss(self):
        return None

    def check_outputs(self, outputs, targets):
        problem = _not_tensor(outputs) or _batch_mismatch(outputs, targets)
        if problem:
            return problem
        if outputs.shape != targets.shape:
            fix = ("squeeze the outputs (out.squeeze(1)) or give targets of shape (N, 1)"
                   if outputs.dim() == targets.dim() + 1 and outputs.shape[-1] == 1 else
                   "make the model's output match the targets")
            return (f"outputs {shape(outputs)} vs targets {shape(targets)}: the loss would broadcast them to "
                    f"another shape; {fix}")
        return self.check_targets(targets)

    def check_targets(self, targets):
        K = self.num_outputs
        width = 1 if targets.dim() == 1 else (targets.shape[1] if targets.dim() == 2 else None)
        if width != K:
            return f"targets have shape {shape(targets)}, expected (N,) or (N, {K}) for num_outputs={K}"
        if targets.dtype == torch.bool:
            return "regression targets are bool; give real values (y.float())"
        return None

    def tally(self, outputs, targets, full):
        out, y = outputs.double().reshape(len(outputs), -1), targets.double().reshape(len(targets), -1)
        err = out - y
        return torch.cat([(err * err).sum(0), err.abs().sum(0), y.sum(0), (y * y).sum(0)])

    def summarize(self, total, kept, full, n):
        sse, sae, s, s2 = total.view(4, -1)
        sst = s2 - s * s / max(n, 1.0)
        r2 = torch.where(sst > 0, 1 - sse / sst.clamp(min=1e-300), torch.where(sse == 0, 1.0, 0.0).double())
        out = {"r2": float(r2.mean())}
        if full:
            k = len(sse)
            out.update({"mse": float(sse.sum()) / max(n * k, 1.0), "mae": float(sae.sum()) / max(n * k, 1.0)})
        return out

    def metric_names(self, full):
        return ("r2", "mse", "mae") if full else ("r2",)



# --- a class per position: segmentation, tagging -------------------------------------------------

def _confusion(pred, true, num_classes, ignore_index):
    valid = true != ignore_index
    index = true[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes)


def _iou_summary(total, num_classes, prefix=""):
    cm = total.view(num_classes, num_classes)  # rows: true, columns: predicted
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else math.nan
    return {"accuracy": float(tp.sum() / max(float(cm.sum()), 1.0)), "mean_iou": miou}


def _interpolation(size_out: int, size_in: int, mode: str, corners) -> torch.Tensor:
    """(size_out, size_in) float64 matrix of F.interpolate along one axis (the image of each unit vector)."""
    eye = torch.eye(size_in, dtype=torch.float64).reshape(size_in, 1, size_in, 1)
    extra = {} if corners is None else {"align_corners": corners}
    return F.interpolate(eye, size=(size_out, 1), mode=mode, **extra)[:, 0, :, 0].T


def coarse_grid(outputs: torch.Tensor, tolerance: float = 1e-4):
    """(down, up) when every map of `outputs` (..., H, W) is an interpolation (bilinear with either
    align_corners, or nearest) of an (h, w) map, h = ceil or floor of H/s, for the largest such
    stride s >= 2 (DeepLabV3 on 28x28 upsamples a 2x2 map at stride 16); else None.
    torchvision's FCN, DeepLabV3 and LR-ASPP upsample stride-8 logits this way, so on small images
    their outputs cannot follow a thin mask pixel by pixel. Spatially constant outputs (a zero-init
    head) tell nothing, and give None."""
    H, W = outputs.shape[-2:]
    maps = outputs.detach().double().cpu().reshape(-1, H, W)
    scale = float(maps.norm())
    if float((maps - maps.mean((1, 2), keepdim=True)).norm()) <= 1e-6 * max(scale, 1e-30):
        return None
    grids = []  # coarsest first; a stride that does not divide the size leaves a ceil (or floor) grid
    for stride in (32, 16, 8, 4, 2):
        for h, w in ((-(-H // stride), -(-W // stride)), (H // stride, W // stride)):
            if min(h, w) >= 2 and (h, w) != (H, W) and (h, w) not in grids:
                grids.append((h, w))
    for h, w in grids:
        for mode, corners in (("bilinear", False), ("bilinear", True), ("nearest", None)):
            A, B = _interpolation(H, h, mode, corners), _interpolation(W, w, mode, corners)
            down_a, down_b = torch.linalg.pinv(A), torch.linalg.pinv(B)   # (h, H), (w, W)
            if float((A @ (down_a @ maps @ down_b.T) @ B.T - maps).norm()) <= tolerance * scale:
                return (lambda o, a=down_a, b=down_b: a.to(o) @ o @ b.to(o).T,       # (..., H, W) -> (..., h, w)
                        lambda c, a=A, b=B: a.to(c) @ c @ b.to(c).T)                 # (..., h, w) -> (..., H, W)
    return None


@dataclass(frozen=True)
class Dense(Task):
    """A class per position. Segmentation: outputs (N, C, H, W), targets (N, H, W) (class_dim=1);
    tagging: outputs (N, T, C), targets (N, T) (class_dim=-1). Cross-entropy ignoring `ignore_index`;
    pixel/token accuracy and mean IoU over the classes present."""
    num_classes: int
    ignore_index: int = -100
    class_dim: int = 1
    name = "dense"
    main_metric = "accuracy"
    skips = {"class_balance": "dense targets hold a class per position, not per sample"}

    def __post_init__(self):
        object.__setattr__(self, "num_classes", count(self.num_classes, "Dense num_classes", 2))
        if self.class_dim not in (1, -1):
            raise RecipeError(f"Dense class_dim must be 1 (N, C, ...) or -1 (N, ..., C), got {self.class_dim!r}")

    def _logits_first(self, outputs):
        return outputs if self.class_dim == 1 else outputs.movedim(-1, 1)  # (N, C, ...)

    def loss(self, outputs, targets):
        return F.cross_entropy(self._logits_first(outputs), targets.long(), ignore_index=self.ignore_index)

    def init_loss(self):
        return math.log(self.num_classes)

    def output_space(self, outputs):
        """Logits upsampled from a coarser grid (see coarse_grid) for 2-D maps (N, C, H, W), else None."""
        return coarse_grid(outputs) if self.class_dim == 1 and outputs.dim() == 4 else None

    def check_outputs(self, outputs, targets):
        problem = _not_tensor(outputs) or _batch_mismatch(outputs, targets)
        if problem:
            return problem
        layout = "(N, C, ...)" if self.class_dim == 1 else "(N, ..., C)"
        if outputs.dim() != targets.dim() + 1 or outputs.shape[self.class_dim] != self.num_classes:
            return (f"outputs {shape(outputs)} vs targets {shape(targets)}: expected outputs {layout} with "
                    f"C={self.num_classes} and targets (N, ...) of the same positions")
        positions = outputs.shape[2:] if self.class_dim == 1 else outputs.shape[1:-1]
        if tuple(positions) != tuple(targets.shape[1:]):
            return (f"outputs {shape(outputs)} cover positions {tuple(positions)} but targets {shape(targets)} "
                    f"cover {tuple(targets.shape[1:])}; check the layout (class_dim={self.class_dim}) or a time-major input")
        return self.check_targets(targets)

    def check_targets(self, targets):
        if targets.is_floating_point() or targets.dtype == torch.bool:
            return f"dense targets are {str(targets.dtype).replace('torch.', '')}; give class indices per position (y.long())"
        if targets.dim() < 2:
            return f"targets have shape {shape(targets)}; expected a class per position (N, H, W) or (N, T)"
        valid = targets[targets != self.ignore_index]
        if len(valid) and (int(valid.min()) < 0 or int(valid.max()) >= self.num_classes):
            return (f"labels run from {int(valid.min())} to {int(valid.max())}, outside [0, {self.num_classes}) "
                    f"and not ignore_index={self.ignore_index}")
        return None

    def prepare_targets(self, targets):
        return Classification.prepare_targets(self, targets)

    def unseen_classes_expected(self, targets):
        """A class per token ((N, T) targets: tags, or a seq2seq target vocabulary) is a vocabulary, whose
        reserved ids (pad, bos, eos, unk) are never targets, and whose rarer tokens a sample need not
        hold; a class per pixel ((N, H, W) masks) names every class that should appear."""
        if isinstance(targets, torch.Tensor) and targets.dim() == 2:
            return ("a class per token: a vocabulary's reserved ids (pad, bos, eos, unk) and rare tokens need not "
                    "appear as targets")
        return None

    def tally(self, outputs, targets, full):
        return _confusion(self._logits_first(outputs).argmax(1), targets, self.num_classes, self.ignore_index)

    def summarize(self, total, kept, full, n):
        out = _iou_summary(total, self.num_classes)
        return out if full else {"accuracy": out["accuracy"]}

    def metric_names(self, full):
        return ("accuracy", "mean_iou") if full else ("accuracy",)



# --- causal language models -----------------------------------------------------------------------

@dataclass(frozen=True)
class CausalLM(Task):
    """Next-token prediction: inputs token ids (N, T) (or a dict holding input_ids), outputs (N, T, V),
    targets (N, T) aligned with the inputs. The default loss shifts by one (position t predicts target
    t + 1) and ignores `ignore_index`; ln V at init; token accuracy and perplexity."""
    vocab_size: int
    ignore_index: int = -100
    name = "causal_lm"
    main_metric = "accuracy"
    skips = {"class_balance": "a language model's targets are tokens, not one class per sample",
             "labels_predictable": "a language model's targets are the inputs shifted by one",
             "labels_out_of_range": "token ids are checked against the vocabulary by the model's embedding"}

    def __post_init__(self):
        object.__setattr__(self, "vocab_size", count(self.vocab_size, "CausalLM vocab_size", 2))

    @staticmethod
    def shifted(outputs, targets):
        """(logits for positions 0..T-2, targets 1..T-1): position t predicts target t + 1."""
        return outputs[:, :-1].reshape(-1, outputs.shape[-1]), targets[:, 1:].reshape(-1)

    def loss(self, outputs, targets):
        logits, labels = self.shifted(outputs, targets)
        return F.cross_entropy(logits, labels.long(), ignore_index=self.ignore_index)

    def init_loss(self):
        return math.log(self.vocab_size)

    def output_groups(self, inputs, outputs):
        """(N, T): the output at position t may depend on tokens 0..t only, so sequences that share
        their first t + 1 tokens share one free output at t (the first words of random text cannot
        be predicted, however long the model trains). Every input leaf with a position dimension
        (ids, attention mask, position ids: (N, T, ...)) counts up to t; other leaves count whole.
        Inputs with no (N, T) leaf: every sample and position its own group."""
        n, length = outputs.shape[:2]
        found = batching.leaves(inputs)
        timed = [t for t in found if t.dim() >= 2 and t.shape[:2] == (n, length)]
        if not timed:
            return distinct_rows(inputs)[:, None] * length + torch.arange(length, device=outputs.device)
        whole = [t for t in found if not any(t is s for s in timed)]
        prefix = distinct_rows(whole).double().cpu() if whole else torch.zeros(n, dtype=torch.float64)
        groups, offset = [], 0
        for t in range(length):  # prefix id at t = distinct (prefix id at t - 1, tokens at t)
            row = torch.cat([prefix[:, None]] + [s[:, t].detach().reshape(n, -1).double().cpu() for s in timed], 1)
            ids = torch.unique(row, dim=0, return_inverse=True)[1]
            groups.append(ids + offset)
            offset += int(ids.max()) + 1
            prefix = ids.double()
        return torch.stack(groups, 1).to(outputs.device)  # (N, T), ids unique across positions

    def check_outputs(self, outputs, targets):
        problem = _not_tensor(outputs) or _batch_mismatch(outputs, targets)
        if problem:
            return problem
        if outputs.dim() != 3 or outputs.shape[-1] != self.vocab_size:
            return f"outputs have shape {shape(outputs)}, expected (N, T, {self.vocab_size}) next-token logits"
        if tuple(outputs.shape[:2]) != tuple(targets.shape):
            return (f"outputs {shape(outputs)} vs targets {shape(targets)}: targets must be (N, T) aligned with "
                    "the inputs (the loss shifts them); check for a time-major (T, N) layout")
        return self.check_targets(targets)

    def check_targets(self, targets):
        if targets.is_floating_point() or targets.dim() != 2:
            return f"targets are {str(targets.dtype).replace('torch.', '')} {shape(targets)}; expected (N, T) token ids"
        return None

    def prepare_targets(self, targets):
        return Classification.prepare_targets(self, targets)

    def tally(self, outputs, targets, full):
        logits, labels = self.shifted(outputs, targets)
        valid = labels != self.ignore_index
        hits = ((logits.argmax(-1) == labels) & valid).sum()
        if not full:
            return torch.stack([hits, valid.sum()])
        nll = F.cross_entropy(logits.float(), labels.long(), ignore_index=self.ignore_index, reduction="sum")
        return torch.stack([hits.double(), valid.sum().double(), nll.double()])

    def summarize(self, total, kept, full, n):
        n = max(float(total[1]), 1.0)
        out = {"accuracy": float(total[0]) / n}
        if full:
            out["perplexity"] = math.exp(min(float(total[2]) / n, 700.0))
        return out

    def metric_names(self, full):
        return ("accuracy", "perplexity") if full else ("accuracy",)



TASKS = (Classification, MultiLabel, Regression, Dense, CausalLM)
