"""Data checks, the recipe's first step (inspect the data): each takes `Data` (and the recipe when
it needs the task) and returns a CheckResult.

    from harness.checks.data import check_split_shapes, check_inputs_finite, check_splits_disjoint
    result = check_splits_disjoint(recipe.load_data(validate=False))

Every check reads a fixed-size seeded sample of each split (SAMPLE rows), never the whole split,
so the suite costs the same on 1,000 samples as on 1,000,000. Inputs and targets may be tensors
or nested tuples/dicts of tensors; integer inputs (token ids, categorical codes) are read as ids.
"""
from __future__ import annotations

import math

import torch

from harness.batching import as_pair, batch_len, leaves, split_len, subset, take
from harness.checks import masks
from harness.checks import recipe_ops as ops
from harness.checks.result import CheckResult, failed, passed

SPLITS = ("train", "val", "test")
SAMPLE = 2048          # rows read per split by every data check
_SAMPLES: dict = {}    # (id(split), n, seed) -> (split, (inputs, targets)): one read per split per session


def sample(split, n: int = SAMPLE, seed: int = 0):
    """`(inputs, targets)` for a seeded random sample of at most `n` rows of a split of any kind."""
    key = (id(split), n, seed)
    hit = _SAMPLES.get(key)
    if hit is not None and hit[0] is split:
        return hit[1]
    pair = as_pair(subset(split, n, seed) if split_len(split) > n else split)
    _SAMPLES[key] = (split, pair)
    return pair


def _present(data):
    return [(name, getattr(data, name)) for name in SPLITS if getattr(data, name) is not None]


def _usable(split) -> bool:
    if split is None:
        return False
    try:
        x, y = sample(split, 8)
        return batch_len(x) == batch_len(y) > 0
    except Exception:
        return False


def _splits(data):
    """The splits the other checks can read (check_split_shapes reports the rest, so one broken
    split is not reported ten times)."""
    return [(name, split) for name, split in _present(data) if _usable(split)]


def _skip_unusable(check, *splits):
    if all(_usable(s) for s in splits):
        return None
    return passed(check, "a split is empty or misaligned (see split_shapes)")


def _features(x, vocab_cap: int = 4096, positional: bool = False) -> torch.Tensor:
    """(N, F) float64 features: float leaves flattened; integer leaves (ids) as a bag of ids, or
    with `positional` as a bag of (position, id) pairs hashed into `vocab_cap` buckets."""
    parts = []
    for t in leaves(x):
        t = torch.as_tensor(t)
        if t.is_floating_point():
            parts.append(torch.nan_to_num(t.reshape(len(t), -1).double()))
        else:
            ids = t.reshape(len(t), -1).long().clamp(min=0)
            if positional:
                ids = ids * 1_000_003 + torch.arange(ids.shape[1])  # a distinct token per (position, id)
            ids = ids % vocab_cap
            bag = torch.zeros(len(t), vocab_cap, dtype=torch.float64)
            parts.append(bag.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float64)))
    return torch.cat(parts, 1)


def _views(x) -> list:
    """The ways to read inputs as features: as they are, and for ids also by position (a label
    that depends on which token sits where is invisible to a bag of ids)."""
    if _float_inputs(x):
        return [_features(x)]
    return [_features(x), _features(x, positional=True)]


def _float_inputs(x) -> bool:
    return all(torch.as_tensor(t).is_floating_point() for t in leaves(x))


def check_split_shapes(data, recipe=None) -> CheckResult:
    """Every split given is non-empty, inputs and targets have the same length, per-sample input
    shapes agree across splits, and targets are what the task expects. `val=None` is allowed (the
    contract's train-only recipe): the checks comparing train with val skip with the reason."""
    check, problems, shapes, leaks = "split_shapes", [], {}, {}
    task = recipe.task if recipe is not None else None
    for name, split in _present(data):
        try:
            if split_len(split) == 0:
                problems.append(("split_empty", f"{name} has no samples"))
                continue
            x, y = sample(split, 64)
        except Exception as e:
            problems.append(("split_unreadable", f"{name}: reading it raised {type(e).__name__}: {e}; give "
                                                  "(inputs, targets) as tensors or numpy arrays, or a Dataset "
                                                  "whose items are (input, target) tensors"))
            continue
        if batch_len(x) != batch_len(y):
            problems.append(("split_lengths_differ", f"{name}: {batch_len(x)} inputs but {batch_len(y)} targets"))
            continue
        if isinstance(split, (tuple, list)) and len(leaves(split[0])) == 1 and len(leaves(split[1])) == 1 \
                and len(leaves(split[0])[0]) != len(leaves(split[1])[0]):
            problems.append(("split_lengths_differ", f"{name}: {len(leaves(split[0])[0])} inputs but "
                                                     f"{len(leaves(split[1])[0])} targets"))
            continue
        shapes[name] = tuple(tuple(t.shape[1:]) for t in leaves(x))
        problem = task.check_targets(y) if task is not None and isinstance(y, torch.Tensor) else None
        if problem:
            problems.append(("targets_wrong_for_task", f"{name}: {problem}"))
        elif task is not None and (leak := _padding_targets(x, y, getattr(task, "ignore_index", None))):
            leaks[name] = leak
    if leaks:  # one line for all splits: they were usually padded by the same code
        first = next(iter(leaks))
        problems.append(("padding_not_ignored", f"{', '.join(leaks)}: in {first}'s sample, {leaks[first]}"))
    if len(set(shapes.values())) > 1:
        problems.append(("split_shapes_differ", f"per-sample input shapes differ: {shapes}"))
    if problems:
        return failed(check, problems[0][0], "; ".join(p for _, p in problems),
                      "non-empty train/val splits; inputs (N, ...) of one per-sample shape; targets as the task expects",
                      "a split that is empty or misaligned makes every later number meaningless",
                      ["check that inputs and targets are sliced with the same indices",
                       "convert targets as the task expects (class indices .long(), multi-label 0/1 floats)",
                       "padding positions need the task's ignore_index (-100) as their target",
                       "return Data(train=(x, y), val=(x, y), test=(x, y) or None)"], shapes=shapes)
    note = "" if data.val is not None else " (no val split: the checks that compare train with val are skipped)"
    return passed(check, f"input shapes {shapes}{note}", shapes=shapes)


def _padding_targets(x, y, ignore_index):
    """What is wrong when most positions an `attention_mask` input marks as padding (0) have a real
    target instead of the task's ignore_index (the loss would train the model to predict padding),
    else None. Read only for dict inputs holding an attention_mask of the targets' shape."""
    mask = x.get("attention_mask") if isinstance(x, dict) else None
    if ignore_index is None or not isinstance(mask, torch.Tensor) or not isinstance(y, torch.Tensor) \
            or mask.shape != y.shape or y.is_floating_point():
        return None
    padding = mask == 0
    counted = padding & (y != ignore_index)
    if not padding.any() or int(counted.sum()) * 2 < int(padding.sum()):
        return None
    common = int(y[counted].mode().values)
    return (f"{int(counted.sum())} of the {int(padding.sum())} positions the attention_mask marks as padding have "
            f"a target (most often {common}), not ignore_index {ignore_index}: the loss trains the model to predict "
            f"padding; set the targets to {ignore_index} where attention_mask == 0")


def check_inputs_finite(data) -> CheckResult:
    """No NaN or Inf in the inputs (a seeded sample of each split)."""
    bad = {}
    for name, split in _splits(data):
        x, _ = sample(split)
        for t in leaves(x):
            if t.is_floating_point():
                n = int((~torch.isfinite(t)).sum())
                if n:
                    rows = int((~torch.isfinite(t.reshape(len(t), -1))).any(1).sum())
                    bad[name] = (n, rows)
    if bad:
        seen = "; ".join(f"{k}: {n} non-finite values in {r} of {SAMPLE} sampled rows" for k, (n, r) in bad.items())
        return failed("inputs_finite", "inputs_not_finite", seen, "every input value finite",
                      "one NaN in a batch makes the loss NaN, and training stops learning silently",
                      ["look for missing values filled with NaN when the data was built",
                       "look for a division by a zero std in normalisation",
                       "drop or impute the affected samples"], bad=bad)
    return passed("inputs_finite", "all sampled inputs finite")


def check_input_range(data, input_range=None, low: float = 0.05, high: float = 10.0) -> CheckResult:
    """Inputs look normalised: the 99th percentile of |x| between `low` and `high` (or inside the
    recipe's `input_range`). Too large: raw pixels; too small: scaled twice (÷255 twice)."""
    if skip := _skip_unusable("input_range", data.train):
        return skip
    x, _ = sample(data.train)
    floats = [t for t in leaves(x) if t.is_floating_point()]
    if not floats:
        return ops.skipped("input_range", "the inputs are integer ids, not values with a scale")
    flat = torch.cat([t.reshape(-1) for t in floats])
    flat = flat[torch.isfinite(flat)]
    if flat.numel() == 0:
        return passed("input_range", "no finite inputs (see inputs_finite)")
    # 200,000 values drawn at random (with replacement: a permutation of every value cost more than the check)
    values = (flat[torch.randint(flat.numel(), (200_000,), generator=torch.Generator().manual_seed(0))]
              if flat.numel() > 200_000 else flat).double()
    lo, hi = float(flat.min()), float(flat.max())
    mean, std = float(values.mean()), float(values.std())
    q99 = float(values.abs().quantile(0.99))
    stats = f"min {lo:.4g}, max {hi:.4g}, mean {mean:.4g}, std {std:.4g}, 99th pct |x| {q99:.4g}"
    if input_range is not None:
        if not (lo >= input_range[0] - 1e-6 and hi <= input_range[1] + 1e-6):
            return failed("input_range", "inputs_out_of_range", stats,
                          f"inputs within the recipe's input_range {tuple(input_range)}",
                          "inputs outside the range the model was designed for behave unpredictably",
                          ["check that the normalisation step actually runs on every split"])
        return passed("input_range", stats, mean=mean, std=std)
    if q99 > high:
        hints = ["divide raw pixels by 255 (or standardise with the train mean/std)",
                 "check that the normalisation step actually runs on every split"]
        if hi > 10 and float(values.floor().eq(values).double().mean()) > 0.99:
            hints.insert(0, "the inputs look like raw integer pixel values (0-255): divide by 255")
        return failed("input_range", "inputs_out_of_range", stats,
                      f"normalised inputs: 99% of |x| between {low:g} and {high:g} (e.g. [0, 1] or standardised)",
                      "large raw inputs saturate activations and make the loss at init huge; "
                      "the lr that works for normalised inputs then diverges", hints)
    if q99 < low:
        return failed("input_range", "inputs_scale_too_small", stats,
                      f"normalised inputs: 99% of |x| between {low:g} and {high:g} (e.g. [0, 1] or standardised)",
                      "inputs squeezed near zero carry almost no signal into the first layer: the model "
                      "trains as if blind at first and the lr that suits normalised inputs is far too small",
                      ["the inputs were scaled twice: divided by 255 (or ToTensor's /255) and then again",
                       "normalised with a std far larger than the data's (e.g. the raw 0-255 std on [0, 1] data)",
                       "if tiny values are genuine, standardise them (subtract the mean, divide by the std)"])
    return passed("input_range", stats, mean=mean, std=std)


def check_labels(data, recipe) -> CheckResult:
    """Class labels are in [0, num_classes) everywhere (ignore_index aside), and every class
    appears in the train split's sample."""
    task = recipe.task
    for check_id in ("labels", "labels_out_of_range"):
        if reason := task.skip_reason(check_id):
            return ops.skipped("labels", reason)
    num_classes = getattr(task, "num_classes", None)
    if num_classes is None:
        return ops.skipped("labels", f"{task.name} targets are not class indices")
    ignore = getattr(task, "ignore_index", None)
    out_of_range, counts, unseen_ok = {}, None, None
    for name, split in _splits(data):
        _, y = sample(split)
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dim() < 1:
            continue  # class probabilities or a structure: see split_shapes
        shaped = y  # (N,), (N, T) or (N, H, W): the task reads what it means from the shape
        y = y[y != ignore] if ignore is not None else y
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            out_of_range[name] = (int(y.min()), int(y.max()))
        elif name == "train" and y.numel():
            counts = torch.bincount(y.reshape(-1).long(), minlength=num_classes)
            unseen_ok = ops.task_hook(recipe, "unseen_classes_expected")(shaped)
    if out_of_range:
        seen = "; ".join(f"{k}: labels from {lo} to {hi}" for k, (lo, hi) in out_of_range.items())
        return failed("labels", "labels_out_of_range", seen, f"labels in [0, {num_classes})",
                      "cross_entropy crashes (or on some devices reads garbage) on labels outside the class range",
                      ["labels numbered from 1: subtract 1", f"num_classes={num_classes} may be wrong for this data"])
    if counts is None:
        return passed("labels", "no class-index targets to read (see split_shapes)")
    missing = [i for i, c in enumerate(counts.tolist()) if c == 0]
    n_train = split_len(data.train)
    if missing and unseen_ok:
        return passed("labels", f"labels in [0, {num_classes}); {len(missing)} ids never appear as targets "
                                f"({_few_ids(missing)}): {unseen_ok}", counts=counts.tolist())
    if missing and n_train <= SAMPLE:  # in a sample of a larger split a rare class may just be unsampled
        return failed("labels", "class_missing", f"classes {missing} never appear in the train split",
                      f"all {num_classes} classes present in train",
                      "the model can never learn a class it never sees, and accuracy on it is 0",
                      ["the split was made without stratification (sort order?)", "num_classes may be too large"],
                      counts=counts.tolist())
    return passed("labels", f"labels in [0, {num_classes})" + (", every class present" if not missing else ""),
                  counts=counts.tolist())


def _few_ids(ids, k: int = 8) -> str:
    return ", ".join(map(str, ids[:k])) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def check_class_balance(data, recipe, max_ratio: float = 10.0) -> CheckResult:
    """Reports per-class counts (of the train sample); fails when the largest class outnumbers the
    smallest by more than `max_ratio`."""
    if reason := ops.skip_reason(recipe, "class_balance"):
        return ops.skipped("class_balance", reason)
    num_classes = getattr(recipe.task, "num_classes", None)
    if skip := _skip_unusable("class_balance", data.train):
        return skip
    _, y = sample(data.train)
    if num_classes is None or not isinstance(y, torch.Tensor) or y.is_floating_point():
        return ops.skipped("class_balance", "targets are not class indices")
    counts = torch.bincount(y.reshape(-1).long().clamp(0, num_classes - 1), minlength=num_classes).tolist()
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


def row_keys(x) -> torch.Tensor:
    """One int64 digest per sample (exact bytes of every leaf), comparable across splits."""
    g = torch.Generator().manual_seed(12345)
    keys = None
    for t in leaves(x):
        t = torch.as_tensor(t).detach().cpu().contiguous()
        rows = t.reshape(len(t), -1)
        bits = (rows.view(torch.int32) if rows.dtype == torch.float32 else rows.double().view(torch.int64)
                if rows.is_floating_point() else rows.long()).long()
        weights = torch.randint(1, 2**61, (rows.shape[1],), generator=g) | 1
        part = (bits * weights).sum(1) + (bits.roll(1, dims=1) * weights.flip(0)).sum(1) * 31
        keys = part if keys is None else keys * 1_000_003 + part
    return keys


def check_splits_disjoint(data) -> CheckResult:
    """No sample (the same inputs) appears in two of train, val, test (seeded samples of each,
    looked up in a larger sample of train)."""
    keyed = {}
    for name, split in _splits(data):
        x, _ = sample(split, 8 * SAMPLE if name == "train" else SAMPLE)
        keyed[name] = row_keys(x)
    overlaps = {}
    names = list(keyed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = int(torch.isin(keyed[b], keyed[a]).sum())
            if n:
                overlaps[f"{a}/{b}"] = n
    if overlaps:
        seen = "; ".join(f"{k}: {n} shared samples found" for k, n in overlaps.items())
        return failed("splits_disjoint", "splits_overlap", seen, "no input shared between train, val and test",
                      "validation and test scores on samples the model trained on overstate generalisation",
                      ["split once, then slice disjoint index ranges (e.g. [:n_train] and [n_train:])",
                       "deduplicate the raw data before splitting",
                       "if duplicates are genuine in your data, suppress this check"], overlaps=overlaps)
    return passed("splits_disjoint", "no sample shared between the sampled splits")


def check_train_distinct(data, recipe=None, min_distinct: float = 0.5) -> CheckResult:
    """The training split holds as many distinct samples as it seems to: most sampled rows are
    distinct, and it is not smaller than the validation split (a debug subset left on)."""
    check = "train_distinct"
    if skip := _skip_unusable(check, data.train):
        return skip
    n_train = split_len(data.train)
    x, _ = sample(data.train)
    keys = row_keys(x)
    distinct = len(torch.unique(keys)) / max(len(keys), 1)
    estimate = int(round(n_train * distinct)) if n_train > len(keys) else len(torch.unique(keys))
    n_val = split_len(data.val) if data.val is not None else 0
    seen = (f"train split of {n_train} samples, {distinct:.0%} of {len(keys)} sampled rows distinct "
            f"(about {estimate} distinct samples); val split {n_val} samples")
    hints = ["a debug subset left on (x[:100], Subset(ds, range(64)), a 'fast_dev_run' or 'limit' flag)",
             "the same few samples repeated or tiled (repeat, expand, or a sampler drawing from a subset)",
             "the train and val sizes swapped"]
    if distinct < min_distinct:
        return failed(check, "train_rows_mostly_duplicates", seen,
                      f"at least {min_distinct:.0%} of sampled training rows distinct",
                      "a training set of a few repeated samples is memorised quickly and never generalises",
                      hints, distinct=distinct)
    if n_val and estimate < n_val:
        return failed(check, "train_smaller_than_val", seen,
                      "more distinct training samples than validation samples",
                      "training on less data than is held out usually means a debug subset was left on; "
                      "every number the recipe reports is then from a toy run", hints, distinct=distinct)
    return passed(check, seen, distinct=distinct)


def check_train_val_shift(data, max_shift: float = 0.5, max_scale: float = 2.0) -> CheckResult:
    """Train and val inputs come from one distribution: the val sample's overall scale and its
    per-feature means, in units of the train sample's spread, are close to train's."""
    check = "train_val_shift"
    if data.val is None:
        return ops.skipped(check, "no val split")
    if skip := _skip_unusable(check, data.train, data.val):
        return skip
    x, _ = sample(data.train)
    xv, _ = sample(data.val)
    if not _float_inputs(x) or not _float_inputs(xv):
        return ops.skipped(check, "the inputs are integer ids; their distributions are compared only as values")
    a, b = _features(x), _features(xv)
    sd_all = float(a.std()) + 1e-12
    scale = (float(b.std()) + 1e-12) / sd_all
    offset = abs(float(b.mean()) - float(a.mean())) / sd_all
    feature_sd = a.std(0) + 0.1 * sd_all
    per_feature = float(((b.mean(0) - a.mean(0)).abs() / feature_sd).mean())
    seen = (f"val/train overall std ratio {scale:.3g}, mean offset {offset:.3g} train std, "
            f"mean per-feature shift {per_feature:.3g} train std")
    if not (1 / max_scale <= scale <= max_scale) or offset > max_shift or per_feature > max_shift:
        return failed(check, "train_val_distribution_shift", seen,
                      f"std ratio within [{1 / max_scale:g}, {max_scale:g}], shifts below {max_shift:g} train std",
                      "a validation split preprocessed differently scores a model on inputs it never saw: "
                      "validation loss and lr/epoch choices made on it are meaningless",
                      ["the val split skipped a step the train split had (÷255, normalisation, resizing)",
                       "normalised with statistics computed on a different split or dataset",
                       "train and val drawn from different sources (if intended, suppress this check)"],
                      scale=scale, offset=offset, per_feature=per_feature)
    return passed(check, seen, scale=scale, offset=offset, per_feature=per_feature)


def _centroid_accuracy(x, y, xv, yv, num_classes):
    """(accuracy, chance + 3 sd) of a nearest-class-mean classifier fit on (x, y), tested on (xv, yv)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    valid = (y >= 0) & (y < num_classes)
    x, y = x[valid], y[valid]
    centroids = torch.zeros(num_classes, x.shape[1], dtype=x.dtype).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).unsqueeze(1)
    pred = torch.cdist(xv, centroids / counts).argmin(1)
    acc = float((pred == yv).double().mean())
    prior = torch.bincount(yv.clamp(0, num_classes - 1), minlength=num_classes).double() / len(yv)
    chance = float(prior.max())
    return acc, chance + 3 * math.sqrt(chance * (1 - chance) / len(yv)), chance


def check_labels_predictable(data, recipe, max_samples: int = SAMPLE) -> CheckResult:
    """Labels depend on inputs: a nearest-class-mean classifier beats chance, fit on one half of a
    train sample and tested on the other (train labels), then fit on train and tested on val.

    Labels shuffled apart from their inputs leave every model at chance on held-out data, while
    the net still fits the training set: this catches it before any training. Integer inputs are
    read as a bag of ids and as a bag of (position, id) pairs; either beating chance passes."""
    check = "labels_predictable"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    num_classes = getattr(recipe.task, "num_classes", None)
    if skip := _skip_unusable(check, data.train):
        return skip
    x, y = sample(data.train, max_samples)
    if getattr(recipe.task, "name", None) == "regression":
        return _check_targets_predictable(data, x, y, max_samples)
    if getattr(recipe.task, "name", None) == "dense":
        return _check_masks_aligned(data, recipe)
    if num_classes is None or not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dim() != 1:
        return ops.skipped(check, "targets are not one class index per sample")
    half = len(y) // 2
    tried = []
    for view, f in enumerate(_views(x)):
        acc, bar, chance = _centroid_accuracy(f[:half], y[:half].long(), f[half:], y[half:].long(), num_classes)
        tried.append((acc - bar, view, f, acc, bar, chance))
    _, view, f, acc, bar, chance = max(tried, key=lambda t: t[0])
    seen = f"nearest-class-mean accuracy within train {acc:.3f}; chance {chance:.3f} (+3 sd = {bar:.3f})"
    hints = ["inputs and labels were shuffled or sorted separately: shuffle them with one index",
             "labels were read from a different file or order than the inputs",
             "if your inputs are genuinely not linearly informative, suppress this check"]
    why = ("if labels do not follow the inputs, the net memorises the training set and validation stays at "
           "chance however long you train")
    if acc <= bar:
        return failed(check, "labels_look_shuffled", seen, "a simple classifier on the raw inputs does better than chance",
                      why, hints, accuracy=acc)
    if data.val is None or not _usable(data.val):
        return passed(check, seen, accuracy=acc)
    xv, yv = sample(data.val, max_samples)
    if not isinstance(yv, torch.Tensor) or yv.is_floating_point() or yv.dim() != 1:
        return passed(check, seen, accuracy=acc)
    fv = _features(xv, positional=view == 1)
    if fv.shape[1] != f.shape[1]:
        return passed(check, seen + "; val inputs have another shape (see split_shapes)", accuracy=acc)
    vacc, vbar, vchance = _centroid_accuracy(f, y.long(), fv, yv.long(), num_classes)
    seen += f"; fit on train, tested on val {vacc:.3f} (chance + 3 sd = {vbar:.3f})"
    if vacc <= vbar and not _shifted(data):
        return failed(check, "val_labels_look_shuffled", seen,
                      "the classifier fit on train also beats chance on val",
                      "validation labels that do not follow their inputs make every validation number noise",
                      ["the val labels were shuffled, sorted or read separately from the val inputs",
                       "val labels use another numbering (class order) than train's"], accuracy=vacc)
    return passed(check, seen, accuracy=acc, val_accuracy=vacc)


def _knn_r2(x, y, xv, yv, k: int = 5, permutations: int = 20, seed: int = 0):
    """(R², bar) of k-NN regression fit on (x, y) and tested on (xv, yv); bar is the mean + 3 sd of
    the R² the same neighbours give with the train targets permuted (a permutation test)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    y, yv = y.reshape(len(y), -1).double(), yv.reshape(len(yv), -1).double()
    idx = torch.cdist(xv, x).topk(min(k, len(x)), largest=False).indices  # (xv and x are disjoint rows)
    variance = ((yv - yv.mean(0)) ** 2).sum(0).clamp(min=1e-12)

    def r2(targets):
        return float((1 - ((targets[idx].mean(1) - yv) ** 2).sum(0) / variance).mean())

    g = torch.Generator().manual_seed(seed)
    null = torch.tensor([r2(y[torch.randperm(len(y), generator=g)]) for _ in range(permutations)])
    return r2(y), float(null.mean() + 3 * null.std())


def _check_targets_predictable(data, x, y, max_samples) -> CheckResult:
    """Regression: k-NN on the inputs predicts held-out targets better than it does with the
    targets permuted (within train, then train -> val)."""
    check = "labels_predictable"
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        return ops.skipped(check, "regression targets are not one float tensor")
    f = _features(x)
    half = len(y) // 2
    score, bar = _knn_r2(f[:half], y[:half], f[half:], y[half:])
    seen = f"5-NN regression R² within train {score:.3f}; with the targets permuted up to {bar:.3f} (mean + 3 sd)"
    if not score > bar:
        return failed(check, "labels_look_shuffled", seen,
                      "the inputs' nearest neighbours predict a sample's targets better than random targets do",
                      "if targets do not follow the inputs, the net memorises the training set and validation "
                      "stays at the targets' mean however long you train",
                      ["inputs and targets were shuffled or sorted separately: shuffle them with one index",
                       "targets were read from a different file, row order or column than the inputs",
                       "if nearby inputs genuinely have unrelated targets, suppress this check"], r2=score)
    if data.val is None or not _usable(data.val):
        return passed(check, seen, r2=score)
    xv, yv = sample(data.val, max_samples)
    fv = _features(xv)
    if fv.shape[1] != f.shape[1] or not isinstance(yv, torch.Tensor) or yv.shape[1:] != y.shape[1:]:
        return passed(check, seen + "; val inputs or targets have another shape (see split_shapes)", r2=score)
    vscore, vbar = _knn_r2(f, y, fv, yv)
    seen += f"; fit on train, tested on val {vscore:.3f} (permuted up to {vbar:.3f})"
    if not vscore > vbar and not _shifted(data):
        return failed(check, "val_labels_look_shuffled", seen,
                      "the neighbours found in train also predict val's targets",
                      "validation targets that do not follow their inputs make every validation number noise",
                      ["the val targets were shuffled, sorted or read separately from the val inputs",
                       "val targets use other units or columns than train's"], r2=vscore)
    return passed(check, seen, r2=score, val_r2=vscore)


MASK_ROWS = 256  # samples of each split whose masks are compared with their images


def _check_masks_aligned(data, recipe) -> CheckResult:
    """Segmentation: each split's masks fit their images better than the same masks flipped, rotated
    180° or transposed do (checks.masks), on MASK_ROWS samples of train, then of val. An alternative
    that fits better on more samples than chance allows means the masks do not line up with their
    images: transposed (H and W swapped), or flipped by an augmentation that left the mask alone."""
    check = "labels_predictable"
    ignore = getattr(recipe.task, "ignore_index", None)
    seen = []
    for name in ("train", "val"):
        split = getattr(data, name)
        if split is None or not _usable(split):
            continue
        x, y = sample(split)
        x, y = take(x, slice(0, MASK_ROWS)), take(y, slice(0, MASK_ROWS))
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dim() != 3:
            return ops.skipped(check, "targets are not one mask (N, H, W) per image: a class per token or "
                                      "position has no image to line up with")
        image = masks.image_for(x, y)
        if image is None:
            return ops.skipped(check, f"no input is an image of the masks' size {tuple(y.shape[1:])} "
                                      "((N, C, H, W) or (N, H, W) floats)")
        stats = masks.alignment(image, y, -100 if ignore is None else ignore)
        if not stats.wins:
            continue
        worst, share = max(stats.wins.items(), key=lambda kv: kv[1])
        bar = max(0.1, stats.chance + 4 * math.sqrt(stats.chance * (1 - stats.chance) / stats.n))
        seen.append(f"{name}: the mask {_MOVED[worst]} fits its image better than the mask itself in "
                    f"{share:.0%} of {stats.n} samples (chance up to {bar:.0%}; flipped or rotated masks"
                    f"{', transposed ones' if 'transpose' in stats.wins else ''} tried); the mask fits better "
                    f"than {masks.OTHERS} other samples' masks in {stats.fits:.0%}")
        if share > bar:
            return failed(check, "masks_misaligned", seen[-1],
                          f"each mask fits its own image better than the mask {_MOVED[worst]} does (on all but "
                          f"{bar:.0%} of samples)",
                          "a model trained on masks that do not line up with their images learns the wrong pixels: "
                          "it reaches a poor IoU however long it trains, and the validation numbers mislead",
                          _MISALIGNED_HINTS[worst] + ["if the masks are meant to differ from the image this way, "
                                                      "suppress this check"], share=share, alternative=worst)
    if not seen:
        return ops.skipped(check, "no split has masks with two classes or more to compare with their images")
    return passed(check, "; ".join(seen))


_MOVED = {"hflip": "flipped left-right", "vflip": "flipped upside down", "rot180": "rotated 180°",
          "transpose": "transposed (H and W swapped)", "rot90": "rotated 90° anticlockwise",
          "rot270": "rotated 90° clockwise"}
_FLIP_HINTS = ["an augmentation that flips or rotates the image but not its mask: apply the same random draw to both "
               "(torchvision.transforms.v2 with tv_tensors.Mask, or one random draw for image and mask)",
               "masks read with another orientation than the images (a different image library or loader)"]
_MISALIGNED_HINTS = {
    "hflip": _FLIP_HINTS, "vflip": _FLIP_HINTS, "rot180": _FLIP_HINTS, "rot90": _FLIP_HINTS, "rot270": _FLIP_HINTS,
    "transpose": ["masks transposed relative to their images: (W, H) arrays from a library that stores x first, "
                  "or a .T / .transpose(1, 2) on one of the two; give both as (H, W)",
                  "an augmentation that transposes or rotates 90° the image but not its mask"]}


def _shifted(data) -> bool:
    """The val inputs look preprocessed differently (reported by train_val_shift, not here)."""
    result = check_train_val_shift(data)
    return not result.passed


def has_augmentation(split, probes: int = 8) -> bool:
    """A split augments when reading the same sample twice gives different inputs: a Dataset (or a
    DataLoader's dataset) whose __getitem__ is random. Tensor pairs never augment."""
    if split is None or isinstance(split, (tuple, list)):
        return False
    dataset = getattr(split, "dataset", split)
    n = len(dataset)
    if n == 0:
        return False
    for i in torch.randperm(n, generator=torch.Generator().manual_seed(1))[:probes].tolist():
        a, b = dataset[i], dataset[i]
        xa, xb = (a[0], b[0]) if isinstance(a, (tuple, list)) else (a, b)
        if not all(torch.equal(torch.as_tensor(p), torch.as_tensor(q)) for p, q in zip(leaves(xa), leaves(xb))):
            return True
    return False


def _knn_predict(ref_x, ref_y, x, num_classes, k: int = 3, exclude_self: bool = False):
    """(k-NN predicted class, distance to the nearest reference) per row of x."""
    d = torch.cdist(x, ref_x)
    if exclude_self:
        d.fill_diagonal_(math.inf)
    dist, idx = d.topk(k, largest=False)
    votes = torch.zeros(len(x), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, ref_y[idx], torch.ones(idx.shape, dtype=torch.float64))
    return votes.argmax(1), dist[:, 0]


def _confusion(true, pred, num_classes):
    m = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    m.index_put_((true, pred), torch.ones(len(true), dtype=torch.float64), accumulate=True)
    return m / m.sum(1, keepdim=True).clamp(min=1), m.sum(1)


def _coarse(x, size: int = 8):
    """Images (N, C, H, W) pooled to size x size, so a shift of a few pixels barely moves a sample,
    while a flip or a large rotation still does; other inputs as they are."""
    if isinstance(x, torch.Tensor) and x.dim() == 4 and min(x.shape[-2:]) > size:
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), size)
    return x


def check_augmentation_labels(data, recipe, n: int = 1024, max_excess: float = 0.12,
                              min_per_class: int = 10) -> CheckResult:
    """Augmentation keeps each label's meaning: augmented training samples are recognised as their
    own class by a k-nearest-neighbour classifier over the (clean) val split about as often as val
    samples are; no class is turned into one particular other class (a 180° rotation turning a 6
    into a 9).

    How a recipe declares augmentation: a training split that is a Dataset (or a DataLoader over one)
    whose __getitem__ is random, so reading the same index twice gives different inputs. A tensor
    pair, or a deterministic Dataset, has no augmentation and the check is skipped with that reason."""
    check = "augmentation_labels"
    if reason := ops.skip_reason(recipe, check):
        return ops.skipped(check, reason)
    num_classes = getattr(recipe.task, "num_classes", None)
    if num_classes is None:
        return ops.skipped(check, f"{recipe.task.name} targets are not one class per sample")
    if not has_augmentation(data.train):
        return ops.skipped(check, "the train split reads the same inputs every time: no random augmentation")
    if data.val is None or has_augmentation(data.val) or not _usable(data.val):
        return ops.skipped(check, "needs a val split without augmentation as the clean reference")
    xa, ya = sample(data.train, n, seed=7)
    xv, yv = sample(data.val, n)
    if not _float_inputs(xa) or not isinstance(ya, torch.Tensor) or ya.dim() != 1:
        return ops.skipped(check, "inputs are not float features or targets not one class per sample")
    fa, fv = _features(_coarse(xa)), _features(_coarse(xv))
    mu, sd = fv.mean(0), fv.std(0) + 1e-6
    fa, fv = (fa - mu) / sd, (fv - mu) / sd
    ya, yv = ya.long(), yv.long()
    # a label-changing augmentation puts a sample squarely inside another class (a rotated 6 is as close
    # to the 9s as real 9s are); a strong but healthy one leaves it between classes. Only confusions no
    # farther from their nearest reference than 95% of clean samples are from theirs count.
    pred_v, near_v = _knn_predict(fv, yv, fv, num_classes, exclude_self=True)
    pred_a, near_a = _knn_predict(fv, yv, fa, num_classes)
    typical = float(near_v.quantile(0.95))
    clean, _ = _confusion(yv, torch.where(near_v <= typical, pred_v, yv), num_classes)
    aug, counts = _confusion(ya, torch.where(near_a <= typical, pred_a, ya), num_classes)
    excess = (aug - clean).fill_diagonal_(-math.inf)
    excess[counts < min_per_class] = -math.inf
    worst = float(excess.max())
    a, b = divmod(int(excess.argmax()), num_classes)
    seen = (f"{len(ya)} augmented training samples vs the val split (k-NN): class {a} looks like a typical "
            f"class-{b} sample {aug[a, b]:.0%} of the time after augmentation, {clean[a, b]:.0%} without")
    if worst > max_excess:
        return failed(check, "augmentation_changes_labels", seen,
                      f"no class pair confused more than {max_excess:.0%} more often after augmentation",
                      "an augmentation that turns one class into another trains the model on wrong labels: "
                      "accuracy on those classes is capped however long you train",
                      ["a rotation or flip too large for the data (a 6 rotated 180° is a 9; a mirrored 'b' is a 'd')",
                       "a crop or cutout that can remove the object, or a colour change that is the label",
                       "if the augmentation is meant to be this strong, suppress this check"],
                      excess=worst, pair=(a, b))
    return passed(check, seen, excess=worst)
