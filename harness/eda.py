"""A first look at a recipe's data (the notebook's and the blog's EDA step).

    from harness.eda import summarize_data, format_summary, write_eda
    summary = summarize_data(recipe.load_data())      # counts per class, per-channel stats, dtype, resolution
    print(format_summary(summary))
    write_eda("results/eda", data, summary)          # eda.json, figures/class_counts.png, figures/samples.png

or `harness eda --recipe digits28 --out results/eda`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness.data import as_tensors, split_len
from harness.io import atomic_write_json
from harness.recipe import Data

STATS_LIMIT = 100_000  # samples read per split for the statistics (a Dataset is read one by one)


def summarize_data(data: Data, num_classes: int = None) -> dict:
    """Sizes of the splits, train class counts, and per-channel mean/std/min/max of the train inputs."""
    x, y = as_tensors(data.train, limit=STATS_LIMIT)
    x = x.float() if not x.is_floating_point() else x
    names = list(data.class_names or [])
    k = max(num_classes or 0, len(names), int(y.max()) + 1 if len(y) else 0)
    counts = torch.bincount(y.long(), minlength=k).tolist()
    names = names + [str(i) for i in range(len(names), k)]
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() >= 3 else x.reshape(1, -1)
    channels = [{"channel": c, "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                 "max": float(v.max())} for c, v in enumerate(per_channel)]
    return {
        "splits": {name: split_len(s) for name, s in (("train", data.train), ("val", data.val), ("test", data.test))
                   if s is not None},
        "input_dtype": str(as_tensors(data.train, limit=1)[0].dtype).replace("torch.", ""),
        "target_dtype": str(y.dtype).replace("torch.", ""),
        "sample_shape": list(x.shape[1:]),
        "resolution": f"{x.shape[-2]}x{x.shape[-1]}" if x.dim() >= 3 else f"{x.shape[-1]} features",
        "class_names": names,
        "class_counts": counts,
        "channels": channels,
        "samples_read": len(y),
    }


def format_summary(s: dict) -> str:
    lines = [f"splits: {', '.join(f'{k} {v}' for k, v in s['splits'].items())}",
             f"inputs: {s['input_dtype']}, shape {tuple(s['sample_shape'])} ({s['resolution']}); targets: {s['target_dtype']}",
             "per channel (train):"]
    lines += [f"  {c['channel']}: mean {c['mean']:.4f}  std {c['std']:.4f}  min {c['min']:.4f}  max {c['max']:.4f}"
              for c in s["channels"]]
    width = max(len(n) for n in s["class_names"]) if s["class_names"] else 1
    total = max(sum(s["class_counts"]), 1)
    lines.append("samples per class (train):")
    lines += [f"  {n.ljust(width)}  {c:6d}  {100 * c / total:5.1f}%" for n, c in zip(s["class_names"], s["class_counts"])]
    return "\n".join(lines)


def write_eda(out, data: Data, summary: dict, samples: int = 20) -> dict:
    """eda.json, figures/class_counts.png and figures/samples.png (the first samples with class names)."""
    from harness import figures

    out = Path(out)
    paths = {"eda.json": out / "eda.json", "class_counts.png": out / "figures" / "class_counts.png",
             "samples.png": out / "figures" / "samples.png"}
    atomic_write_json(paths["eda.json"], summary)
    figures.class_counts(summary["class_names"], summary["class_counts"], paths["class_counts.png"])
    x, y = as_tensors(data.train, limit=samples)
    if x.dim() == 4:
        figures.image_grid(x.float().numpy(), [summary["class_names"][int(t)] for t in y], paths["samples.png"])
    else:
        del paths["samples.png"]  # not images
    return paths
