"""Data checks, the recipe's first step (inspect the data): each takes `Data` and returns a CheckResult.

    from harness.checks.data import check_split_shapes, check_inputs_finite, check_splits_disjoint
    result = check_splits_disjoint(recipe.load_data())
"""
from __future__ import annotations

import math

import numpy as np
import torch

from harness.checks.result import CheckResult, failed, passed
from harness.data import as_tensors, is_tensor_split, split_len

SPLITS = ("train", "val", "test")
SCAN_LIMIT = 20_000  # samples read from a Dataset split (tensor splits are read whole)


def _present(data):
    return [(name, getattr(data, name)) for name in SPLITS if getattr(data, name) is not None]


def _splits(data):
    """The splits the other checks can read: non-empty, inputs and targets of one length
    (check_split_shapes reports the rest, so one broken split is not reported ten times)."""
    return [(name, split) for name, split in _present(data) if _usable(split)]


def _usable(split) -> bool:
    if split is None:
        return False
    if is_tensor_split(split):
        return len(split[0]) == len(split[1]) > 0
    return len(split) > 0


def _skip_unusable(check, *splits):
    """A passing result that defers to split_shapes when a split this check needs is unusable."""
    if all(_usable(s) for s in splits):
        return None
    return passed(check, "a split is empty or misaligned (see split_shapes)")


def _tensors(split):
    return as_tensors(split, limit=None if isinstance(split, (tuple, list)) else SCAN_LIMIT)


def check_split_shapes(data) -> CheckResult:
    """Every split is non-empty, inputs and targets have the same length, inputs are floating
    point with the same per-sample shape in every split, and targets are 1-D integers."""
    check, problems, shapes = "split_shapes", [], {}
    if data.val is None:
        problems.append(("split_empty", "val split is None"))
    for name, split in _present(data):
        if isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split):
            x, y = split
            if len(x) != len(y):
                problems.append(("split_lengths_differ", f"{name}: {len(x)} inputs but {len(y)} targets"))
                continue
        if split_len(split) == 0:
            problems.append(("split_empty", f"{name} has no samples"))
            continue
        x, y = _tensors(split)
        shapes[name] = tuple(x.shape[1:])
        if not x.is_floating_point():
            problems.append(("inputs_not_float", f"{name} inputs are {x.dtype}"))
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
            problems.append(("targets_not_class_indices", f"{name} targets are {y.dtype} of shape {tuple(y.shape)}"))
    if len(set(shapes.values())) > 1:
        problems.append(("split_shapes_differ", f"per-sample input shapes differ: {shapes}"))
    if problems:
        return failed(check, problems[0][0], "; ".join(p for _, p in problems),
                      "non-empty train/val splits; inputs (N, ...) float32; targets (N,) int64 class indices",
                      "a split that is empty or misaligned makes every later number meaningless",
                      ["convert inputs with .float() and targets with .long()",
                       "check that inputs and targets are sliced with the same indices",
                       "return Data(train=(x, y), val=(x, y), test=(x, y) or None)"], shapes=shapes)
    return passed(check, f"input shapes {shapes}", shapes=shapes)


def check_inputs_finite(data) -> CheckResult:
    """No NaN or Inf anywhere in the inputs."""
    bad = {}
    for name, split in _splits(data):
        x, _ = _tensors(split)
        if x.is_floating_point():
            n = int((~torch.isfinite(x)).sum())
            if n:
                rows = int((~torch.isfinite(x.flatten(1))).any(1).sum())
                bad[name] = (n, rows)
    if bad:
        seen = "; ".join(f"{k}: {n} non-finite values in {r} samples" for k, (n, r) in bad.items())
        return failed("inputs_finite", "inputs_not_finite", seen, "every input value finite",
                      "one NaN in a batch makes the loss NaN, and training stops learning silently",
                      ["look for missing values filled with NaN when the data was built",
                       "look for a division by a zero std in normalisation",
                       "drop or impute the affected samples"], bad=bad)
    return passed("inputs_finite", "all inputs finite")


def check_input_range(data, input_range=None) -> CheckResult:
    """Inputs look normalised: 99% of |x| below 10 (or inside the recipe's `input_range`)."""
    if skip := _skip_unusable("input_range", data.train):
        return skip
    x, _ = _tensors(data.train)
    if not x.is_floating_point():
        return passed("input_range", "inputs are not floating point (see split_shapes)")
    flat = x.flatten()
    flat = flat[torch.isfinite(flat)]
    if flat.numel() == 0:
        return passed("input_range", "no finite inputs (see inputs_finite)")
    sample = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
    lo, hi = float(flat.min()), float(flat.max())
    mean, std = float(sample.mean()), float(sample.std())
    q99 = float(sample.abs().quantile(0.99))
    stats = f"min {lo:.4g}, max {hi:.4g}, mean {mean:.4g}, std {std:.4g}, 99th pct |x| {q99:.4g}"
    if input_range is not None:
        ok = lo >= input_range[0] - 1e-6 and hi <= input_range[1] + 1e-6
        expected = f"inputs within the recipe's input_range {tuple(input_range)}"
    else:
        ok = q99 <= 10.0
        expected = "normalised inputs: 99% of |x| <= 10 (e.g. [0, 1] or standardised)"
    if not ok:
        hints = ["divide raw pixels by 255 (or standardise with the train mean/std)",
                 "check that the normalisation step actually runs on every split"]
        if hi > 10 and float(flat.floor().eq(flat).float().mean()) > 0.99:
            hints.insert(0, "the inputs look like raw integer pixel values (0-255): divide by 255")
        return failed("input_range", "inputs_out_of_range", stats, expected,
                      "large raw inputs saturate activations and make the loss at init huge; "
                      "the lr that works for normalised inputs then diverges", hints)
    return passed("input_range", stats, mean=mean, std=std)


def check_labels(data, num_classes: int) -> CheckResult:
    """Labels are in [0, num_classes) everywhere, and every class is present in the train split."""
    out_of_range = {}
    for name, split in _splits(data):
        _, y = _tensors(split)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            out_of_range[name] = (int(y.min()), int(y.max()))
    if not out_of_range and (skip := _skip_unusable("labels", data.train)):
        return skip
    if out_of_range:
        seen = "; ".join(f"{k}: labels from {lo} to {hi}" for k, (lo, hi) in out_of_range.items())
        return failed("labels", "labels_out_of_range", seen, f"labels in [0, {num_classes})",
                      "cross_entropy crashes (or on some devices reads garbage) on labels outside the class range",
                      ["labels numbered from 1: subtract 1", f"num_classes={num_classes} may be wrong for this data"])
    _, y = _tensors(data.train)
    counts = torch.bincount(y, minlength=num_classes)
    missing = [i for i, c in enumerate(counts.tolist()) if c == 0]
    if missing:
        return failed("labels", "class_missing", f"classes {missing} never appear in the train split",
                      f"all {num_classes} classes present in train",
                      "the model can never learn a class it never sees, and accuracy on it is 0",
                      ["the split was made without stratification (sort order?)", "num_classes may be too large"],
                      counts=counts.tolist())
    return passed("labels", f"labels in [0, {num_classes}), every class present", counts=counts.tolist())


def check_class_balance(data, num_classes: int, max_ratio: float = 10.0) -> CheckResult:
    """Reports per-class counts; fails when the largest class outnumbers the smallest by > max_ratio."""
    if skip := _skip_unusable("class_balance", data.train):
        return skip
    _, y = _tensors(data.train)
    counts = torch.bincount(y.clamp(0, num_classes - 1), minlength=num_classes).tolist()
    present = [c for c in counts if c]
    ratio = max(present) / min(present) if present else math.inf
    seen = f"train counts per class {counts} (largest/smallest = {ratio:.2f})"
    if ratio > max_ratio:
        return failed("class_balance", "classes_imbalanced", seen, f"largest/smallest class <= {max_ratio:g}",
                      "with a strong imbalance the model learns the prior; accuracy hides a useless minority class",
                      ["oversample the rare classes (the blog's suggestion), with augmentation",
                       "weight the loss by inverse class frequency", "report macro F1, not accuracy"],
                      counts=counts)
    return passed("class_balance", seen, counts=counts, ratio=ratio)


def check_splits_disjoint(data) -> CheckResult:
    """No sample (the same input tensor) appears in two of train, val, test."""
    keyed = {}
    for name, split in _splits(data):
        x, _ = _tensors(split)
        keyed[name] = _row_keys(x)
    overlaps = {}
    names = list(keyed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = int(np.isin(keyed[b], keyed[a]).sum())
            if n:
                overlaps[f"{a}/{b}"] = n
    if overlaps:
        seen = "; ".join(f"{k}: {n} shared samples" for k, n in overlaps.items())
        return failed("splits_disjoint", "splits_overlap", seen, "no input shared between train, val and test",
                      "validation and test scores on samples the model trained on overstate generalisation",
                      ["split once, then slice disjoint index ranges (e.g. [:n_train] and [n_train:])",
                       "deduplicate the raw data before splitting",
                       "if duplicates are genuine in your data, suppress this check"], overlaps=overlaps)
    return passed("splits_disjoint", "no sample shared between splits")


def _row_keys(x: torch.Tensor) -> np.ndarray:
    """One 128-bit digest per sample (exact bytes), as an array usable with np.isin."""
    import hashlib
    rows = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
    return np.array([hashlib.blake2b(r.tobytes(), digest_size=16).hexdigest() for r in rows])


def check_labels_predictable(data, num_classes: int, max_samples: int = 4000) -> CheckResult:
    """Labels depend on inputs: a nearest-class-mean classifier fit on train beats chance on val.

    Labels shuffled apart from their inputs leave every model at chance on held-out data,
    while the net still fits the training set: this catches it before any training.
    """
    if data.val is None:
        return passed("labels_predictable", "no val split to test on")
    if skip := _skip_unusable("labels_predictable", data.train, data.val):
        return skip
    x, y = _tensors(data.train)
    xv, yv = _tensors(data.val)
    if not x.is_floating_point():
        return passed("labels_predictable", "inputs are not floating point (skipped)")
    x, y, xv, yv = x[:max_samples], y[:max_samples], xv[:max_samples], yv[:max_samples]
    x, xv = torch.nan_to_num(x.flatten(1).double()), torch.nan_to_num(xv.flatten(1).double())
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    valid = (y >= 0) & (y < num_classes)
    x, y = x[valid], y[valid]
    centroids = torch.zeros(num_classes, x.shape[1], dtype=x.dtype).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).unsqueeze(1)
    pred = torch.cdist(xv, centroids / counts).argmin(1)
    acc = float((pred == yv).double().mean())
    prior = torch.bincount(yv.clamp(0, num_classes - 1), minlength=num_classes).double() / len(yv)
    chance = float(prior.max())  # always predicting the most common val class
    margin = 3 * math.sqrt(chance * (1 - chance) / len(yv))
    seen = f"nearest-class-mean accuracy on val {acc:.3f}; chance {chance:.3f} (+3 sd = {chance + margin:.3f})"
    if acc <= chance + margin:
        return failed("labels_predictable", "labels_look_shuffled", seen,
                      "a simple classifier on the raw inputs does better than chance",
                      "if labels do not follow the inputs, the net memorises the training set and "
                      "validation stays at chance however long you train",
                      ["inputs and labels were shuffled or sorted separately: shuffle them with one index",
                       "labels were read from a different file or order than the inputs",
                       "if your inputs are genuinely not linearly informative, suppress this check"],
                      accuracy=acc, chance=chance)
    return passed("labels_predictable", seen, accuracy=acc, chance=chance)
