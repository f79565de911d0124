"""A first look at a recipe's data (the notebook's and the blog's EDA step).

    from harness.eda import summarize_data, format_summary, write_eda
    summary = summarize_data(recipe.load_data())      # class counts (or target stats), per-channel stats, dtype, resolution
    print(format_summary(summary))
    write_eda("results/eda", data, summary)          # eda.json, figures/class_counts.png, figures/samples.png

or `harness eda --recipe digits28 --out results/eda`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness.batching import as_pair, batch_len, leaves, split_len
from harness.io import atomic_write_json
from harness.recipe import Data

STATS_LIMIT = 100_000  # samples read per split for the statistics (a Dataset is read one by one)


def summarize_data(data: Data, num_classes: int = None) -> dict:
    """Sizes of the splits, train class counts (for class-index targets), per-channel mean/std/min/max
    of the first input tensor (integer inputs such as token ids: their range and distinct count), and
    the targets' shape and spread when they are not class indices (regression, multi-label, dense)."""
    x_tree, y_tree = as_pair(data.train, limit=STATS_LIMIT)
    x, y = leaves(x_tree)[0], leaves(y_tree)[0]
    names = list(data.class_names or [])
    class_indices = not y.is_floating_point() and y.dtype != torch.bool and y.dim() == 1
    k = max(num_classes or 0, len(names), int(y.max()) + 1 if class_indices and len(y) else 0)
    counts = torch.bincount(y.long().clamp(min=0), minlength=k).tolist() if class_indices else []
    names = names + [str(i) for i in range(len(names), k)] if class_indices else names
    summary = {
        "splits": {name: split_len(s) for name, s in (("train", data.train), ("val", data.val), ("test", data.test))
                   if s is not None},
        "input_dtype": str(x.dtype).replace("torch.", ""),
        "input_names": [str(p) for p in _paths(x_tree)],
        "target_dtype": str(y.dtype).replace("torch.", ""),
        "target_shape": list(y.shape[1:]),
        "sample_shape": list(x.shape[1:]),
        "resolution": f"{x.shape[-2]}x{x.shape[-1]}" if x.dim() >= 3 else f"{x.shape[-1] if x.dim() > 1 else 1} features",
        "class_names": names,
        "class_counts": counts,
        "channels": _channels(x) if x.is_floating_point() else [],
        "samples_read": batch_len(y),
    }
    if not x.is_floating_point():
        summary["input_ids"] = {"min": int(x.min()), "max": int(x.max()), "distinct": int(torch.unique(x).numel())}
    if not class_indices:
        yf = y.float()
        summary["targets"] = {"mean": float(yf.mean()), "std": float(yf.std()) if yf.numel() > 1 else 0.0,
                              "min": float(yf.min()), "max": float(yf.max())}
    return summary


def _channels(x: torch.Tensor) -> list:
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() >= 3 else x.reshape(1, -1)
    return [{"channel": c, "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
             "max": float(v.max())} for c, v in enumerate(per_channel)]


def _paths(tree) -> list:
    """Names of the input leaves: 'x' for one tensor, else their keys or positions."""
    from torch.utils import _pytree as pytree

    if isinstance(tree, torch.Tensor):
        return ["x"]
    flat, _ = pytree.tree_flatten_with_path(tree)
    return [".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in flat]


def format_summary(s: dict) -> str:
    lines = [f"splits: {', '.join(f'{k} {v}' for k, v in s['splits'].items())}",
             f"inputs: {s['input_dtype']}, shape {tuple(s['sample_shape'])} ({s['resolution']}); targets: {s['target_dtype']}"]
    if len(s.get("input_names", [])) > 1:
        lines.append(f"input tensors: {', '.join(s['input_names'])} (statistics of the first)")
    if s["channels"]:
        lines.append("per channel (train):")
        lines += [f"  {c['channel']}: mean {c['mean']:.4f}  std {c['std']:.4f}  min {c['min']:.4f}  max {c['max']:.4f}"
                  for c in s["channels"]]
    if "input_ids" in s:
        ids = s["input_ids"]
        lines.append(f"integer inputs (ids): {ids['min']}..{ids['max']}, {ids['distinct']} distinct")
    if s["class_counts"]:
        width = max(len(n) for n in s["class_names"]) if s["class_names"] else 1
        total = max(sum(s["class_counts"]), 1)
        lines.append("samples per class (train):")
        lines += [f"  {n.ljust(width)}  {c:6d}  {100 * c / total:5.1f}%" for n, c in zip(s["class_names"], s["class_counts"])]
    if "targets" in s:
        t = s["targets"]
        lines.append(f"targets {tuple(s['target_shape'])} per sample: mean {t['mean']:.4f}  std {t['std']:.4f}  "
                     f"min {t['min']:.4f}  max {t['max']:.4f}")
    return "\n".join(lines)


def write_eda(out, data: Data, summary: dict, samples: int = 20) -> dict:
    """eda.json, figures/class_counts.png and figures/samples.png (the first samples with class names)."""
    from harness import figures

    out = Path(out)
    paths = {"eda.json": out / "eda.json", "class_counts.png": out / "figures" / "class_counts.png",
             "samples.png": out / "figures" / "samples.png"}
    atomic_write_json(paths["eda.json"], summary)
    if summary["class_counts"]:
        figures.class_counts(summary["class_names"], summary["class_counts"], paths["class_counts.png"])
    else:
        del paths["class_counts.png"]  # targets are not one class per sample
    x_tree, y = as_pair(data.train, limit=samples)
    x = leaves(x_tree)[0]
    if x.dim() == 4 and x.shape[1] in (1, 3) and summary["class_counts"]:
        figures.image_grid(x.float().cpu().numpy(), [summary["class_names"][int(t)] for t in y], paths["samples.png"])
    else:
        del paths["samples.png"]  # not images with one class each
    return paths
