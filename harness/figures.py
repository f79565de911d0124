"""The study's PNG figures, drawn with matplotlib's object API (no pyplot, no global backend).

    from harness import figures
    figures.curves(history_dict, "lr=0.1", "out/figures/curves_lr0.1.png")   # train/val loss and accuracy
    figures.overlay({"lr=0.1": h1, "lr=1": h2}, "lr sweep", "out/figures/overlay.png")
    figures.bars(labels, rows, "lr sweep", "out/figures/bars.png")          # accuracy, F1, train time
    figures.against(rows, ["learning_rate"], "lr sweep", "out/figures/against.png")   # metric vs lr (log)

Histories are `History.to_dict()` dicts. Every file is written atomically.
"""
from __future__ import annotations

import io
import math

from matplotlib.figure import Figure

from harness.io import atomic_write_bytes


def _save(fig: Figure, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _epochs(values: list) -> list:
    return list(range(1, len(values) + 1))


CEILING = 1e100  # bars stop here; a value beyond it is written on the bar


def _per_epoch(ax, longest: int = 2) -> None:
    """Whole epochs on the x axis (matplotlib's default ticks read 1.25, 1.5 on a short run, and
    0.945 ... 1.05 on a run of one epoch)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if longest <= 1:
        ax.set_xticks([1])
        ax.set_xlim(0.5, 1.5)


def _fit_scale(ax, values) -> None:
    """A log y axis when the values span many orders of magnitude (a diverged LM's perplexity 1e304 beside
    4, a regression's MSE 1e33 beside 0.01), symlog when some are negative (an R2 of -1e34 beside 0.96);
    on a linear axis the healthy runs were a flat line at zero. Otherwise linear, as before."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    sizes = sorted(abs(v) for v in finite if v != 0)  # zeros (an F1 of 0 before it learns) span nothing
    if len(sizes) < 2 or sizes[-1] <= 1e4 * sizes[len(sizes) // 2]:
        return
    if all(v > 0 for v in finite):
        low, high = min(finite), max(finite)  # set before the scale: autoscaling 1e304 overflowed
        ax.set_ylim(low / 2, high * 10 ** max(0.7, 0.1 * math.log10(high / low)))  # room for the value on top
        ax.set_yscale("log")
        return
    if sizes[-1] <= 1:
        return  # within symlog's linear part anyway
    ax.set_yscale("symlog", linthresh=1.0)
    low, high = min(finite), max(finite)  # symlog's own limits ran decades past the data (to 1e30 over R2 0.96)
    ax.set_ylim(low * 10 if low < -1 else low / 10 if low > 1 else low - 0.5,
                high * 10 if high > 1 else high / 10 if high < -1 else high + 0.5)  # a decade beyond each end


def curves(history: dict, title: str, path, metric: str = "Accuracy") -> None:
    """Two panels: train/val loss and train/val accuracy (`metric`: the task's main metric) per epoch
    (the notebook's plot_train_val)."""
    fig = Figure(figsize=(10, 3.8))
    for ax, key, name in ((fig.add_subplot(121), "loss", "Loss"), (fig.add_subplot(122), "acc", metric)):
        for split in ("train", "val"):
            values = history[f"{split}_{key}"]
            if any(isinstance(v, float) and math.isfinite(v) for v in values):
                ax.plot(_epochs(values), values, marker=".", label=split)
        ax.set(title=name, xlabel="epoch", ylabel="loss" if key == "loss" else name)  # R2, not 'r2'
        _fit_scale(ax, history[f"train_{key}"] + history[f"val_{key}"])
        _per_epoch(ax, len(history[f"train_{key}"]))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run that diverged in its first epoch has no finite point
            ax.legend()
    reason = f"\ndiverged: {history.get('diverged_reason', '')}" if history.get("diverged") else ""
    fig.suptitle(title + reason, fontsize=10, y=1.04 if reason else 1.0)
    _save(fig, path)


def overlay(histories: dict, title: str, path, metric: str = "Accuracy") -> None:
    """Val loss and val accuracy (`metric`) per epoch, one line per run, overlaid (log scale for the loss;
    for the metric too when it spans many orders of magnitude). A run that diverged is dashed, ends in
    an x and says so in the legend. A history with `val_loss_band` / `val_acc_band` (lowest, highest:
    reports.mean_history of a configuration's seeds) is drawn as its mean line in a shaded band.
    Past 10 runs (a search) the colours follow the runs' order along viridis, and one legend stands
    outside the panels (tab10's colours repeated and two 20-line legends covered the curves)."""
    many = len(histories) > 10
    # no val split (or no finite val point in any run): the train loss and metric, said in the titles
    # (a run that diverged in its first epoch has no finite val point either: every run diverged stays val)
    no_val = not any(_finite(v) for h in histories.values() for v in h["val_loss"] + h["val_acc"])
    split = "train" if no_val and not all(h.get("diverged") for h in histories.values()) else "val"
    fig = Figure(figsize=(11 + 2.5 * many * (1 + len(histories) // 25), 4))
    loss_ax, acc_ax = fig.add_subplot(121), fig.add_subplot(122)
    if many:
        from matplotlib import colormaps
        colors = [colormaps["viridis"](i / (len(histories) - 1)) for i in range(len(histories))]
    for i, (name, h) in enumerate(histories.items()):
        diverged = bool(h.get("diverged"))
        some = f" (diverged {h['diverged_seeds']}/{h['seeds']})" if h.get("diverged_seeds") and not diverged else ""
        style = dict(marker=".", linestyle="--" if diverged else "-", markevery=[len(h["val_loss"]) - 1]
                     if diverged and h["val_loss"] else None, label=f"{name} (diverged)" if diverged else name + some)
        if diverged:
            style["marker"] = "x"
        if many:
            style["color"] = colors[i]
        for ax, key in ((loss_ax, f"{split}_loss"), (acc_ax, f"{split}_acc")):
            line, = ax.plot(_epochs(h[key]), h[key], **style)
            if any(_finite(v) for v in h.get(f"{key}_band", ((),))[0]):  # seeds: the band lowest to highest
                ax.fill_between(_epochs(h[key]), *h[f"{key}_band"], color=line.get_color(), alpha=0.15, linewidth=0)
    seeds = max((h.get("seeds", 1) for h in histories.values()), default=1)
    over = f"\n(mean of {seeds} seeds, band: lowest to highest)" if seeds > 1 else ""
    over = (" (no val split)" if split == "train" else "") + over
    loss_ax.set(title=f"{split} loss per epoch{over}", xlabel="epoch", ylabel=f"{split} loss", yscale="log")
    acc_ax.set(title=f"{split} {metric} per epoch{over}", xlabel="epoch", ylabel=f"{split} {metric}")
    _fit_scale(acc_ax, [v for h in histories.values() for v in h[f"{split}_acc"]])
    longest = max((len(h[f"{split}_loss"]) for h in histories.values()), default=1)
    for ax in (loss_ax, acc_ax):
        _per_epoch(ax, longest)
        ax.grid(True, alpha=0.3)
    if many:
        acc_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 + len(histories) // 25)
    else:
        for ax in (loss_ax, acc_ax):
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, y=1.1 if "\n" in over else 1.02)
    _save(fig, path)


def bars(labels: list, rows: list, title: str, path) -> None:
    """Three panels of bars, one bar per configuration: Accuracy, F1 macro, train time (± std over
    seeds); for another task its main metric (and its second metric) instead of the first two. A
    configuration that diverged (in every seed) is hatched and says so under its bar; a panel whose
    values span many orders of magnitude is drawn on a log (or symlog) scale."""
    many = len(rows) > 8  # a search: wider, labels and values upright (20 slanted labels ran into each other)
    fig = Figure(figsize=(max(14.0, 3 * (1 + 0.3 * len(rows))), 4.5 if many else 4))
    first = rows[0] if rows else {}
    main = first.get("Score_metric", "Accuracy") if "Accuracy" not in first else "Accuracy"
    second = "F1_macro" if "F1_macro" in first else next(
        (k for k in first if k not in (main, "Score", "Score_metric", "learning_rate", "batch_size", "seed")
         and not k.endswith("_std") and isinstance(first[k], float) and not k.endswith("_time_s")), "Train_time_s")
    for i, (metric, color) in enumerate(((main, "tab:blue"), (second, "tab:green"),
                                         ("Train_time_s", "tab:red")), start=1):
        ax = fig.add_subplot(1, 3, i)
        values = [r.get(metric, r.get("Score", math.nan)) if metric == main else r.get(metric, math.nan) for r in rows]
        errors = [e if _finite(e) else 0.0 for e in (r.get(f"{metric}_std", 0.0) for r in rows)]
        # nan or inf: no bar, its value written at 0; past 1e100 (a diverged LM's perplexity, 1e304) the bar stops
        # there, its value written in full (matplotlib's log ticks overflow near 1e308)
        heights = [max(-CEILING, min(CEILING, v)) if _finite(v) else 0.0 for v in values]
        drawn = ax.bar(range(len(values)), heights, yerr=errors if any(errors) else None, color=color, capsize=3)
        for patch, row in zip(drawn, rows):
            if _diverged(row):
                patch.set(hatch="//", alpha=0.5, edgecolor="black")
        ticks = [f"{name}\n(diverged{_of_seeds(row)})" if row.get("diverged") else name
                 for name, row in zip(labels, rows)]
        ax.set_xticks(range(len(values)), ticks, rotation=90 if many else 30 if len(labels) > 3 else 0,
                      fontsize=7 if many else 8)
        _fit_scale(ax, heights)
        ax.set(title=f"{metric} per configuration", ylabel=metric)
        for x, (v, height) in enumerate(zip(values, heights)):
            ax.annotate(f"{v:.3g}", (x, height), ha="center", va="bottom", fontsize=7 if many else 8,
                        rotation=90 if many else 0)
        ax.grid(True, axis="y", alpha=0.3)
        if many and ax.get_yscale() == "linear":
            ax.set_ylim(top=ax.get_ylim()[1] * 1.12)  # room for the upright values above the tallest bar
    if title:
        fig.suptitle(title, y=1.03)
    _save(fig, path)


SETTING_NAMES = {"learning_rate": "learning rate", "batch_size": "batch size"}


def against(rows: list, vary: list, title: str, path, metric: str = "Accuracy") -> None:
    """The task's main metric against each varied setting on a log axis (Optuna's slice plot; the curve
    an lr sweep is read for): one point per configuration, ± std over seeds, joined by a line in a
    sweep (one setting varied); a configuration that diverged in every seed is a red x. In a search
    (both varied) each panel's points are coloured by the other setting (log scale, with its colour
    bar), so the best lr's dependence on the batch size shows. A setting with one value in every row
    (`harness search --batch-size 64`, a notebook's study with no `vary` stored) gets no panel."""
    vary = [k for k in vary if len({r[k] for r in rows}) > 1] or list(vary[:1])
    fig = Figure(figsize=(6.5 * len(vary) if len(vary) > 1 else 5.5, 4))
    values = [r.get(metric, r.get("Score", math.nan)) for r in rows]
    for i, key in enumerate(vary, start=1):
        ax = fig.add_subplot(1, len(vary), i)
        other = next((k for k in vary if k != key), None)
        if other is not None:
            _coloured_by(fig, ax, rows, values, key, other)
        for diverged in (False, True):
            points = sorted((r[key], v, r.get(f"{metric}_std", 0.0)) for r, v in zip(rows, values)
                            if _diverged(r) == diverged and isinstance(v, (int, float)) and math.isfinite(v))
            if not points:
                continue
            xs, ys, errors = zip(*points)
            ax.errorbar(xs, ys, yerr=errors if any(errors) else None, capsize=3,
                        fmt="x" if diverged else ("o-" if len(vary) == 1 else "none"),
                        color="tab:red" if diverged else "tab:blue" if len(vary) == 1 else "0.6",
                        label="diverged" if diverged else None)
        name = SETTING_NAMES.get(key, key)
        ax.set(xscale="log", xlabel=f"{name} (log scale)", ylabel=metric, title=f"{metric} against {name}")
        if key == "batch_size":  # whole numbers, powers of 2 (matplotlib wrote 2x10^1 3x10^1 ... over each other)
            from matplotlib.ticker import NullFormatter, ScalarFormatter
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        _fit_scale(ax, values)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, y=1.03)
    _save(fig, path)


def _coloured_by(fig, ax, rows: list, values: list, key: str, other: str) -> None:
    """The configurations that did not diverge as points coloured by `other` (log colour scale)."""
    from matplotlib.colors import LogNorm

    points = [(r[key], v, r[other]) for r, v in zip(rows, values) if not _diverged(r) and _finite(v)]
    if not points:
        return
    xs, ys, cs = zip(*points)
    dots = ax.scatter(xs, ys, c=cs, cmap="viridis", norm=LogNorm(min(cs), max(cs) * (1 + 1e-9)), zorder=3)
    fig.colorbar(dots, ax=ax, label=SETTING_NAMES.get(other, other))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _diverged(row: dict) -> bool:
    """Diverged in every seed (a pooled row's `diverged` counts its seeds that did)."""
    return bool(row.get("diverged")) and int(row["diverged"]) >= row.get("seeds", 1)


def _of_seeds(row: dict) -> str:
    return f" {int(row['diverged'])}/{row['seeds']}" if "seeds" in row else ""


def lr_find_curve(result: dict, path, recipe_lr=None) -> None:
    """The range test: raw and smoothed loss against lr (log x), with the suggestion and divergence marked."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(111)
    ax.plot(result["lrs"], result["losses"], alpha=0.3, label="loss")
    ax.plot(result["lrs"], result["smoothed"], label="smoothed loss")
    for lr, name, color in ((result.get("suggested_lr"), "suggested", "tab:green"),
                            (result.get("diverge_lr"), "diverges", "tab:red"), (recipe_lr, "recipe", "k")):
        if lr:
            ax.axvline(lr, color=color, linestyle="--", label=f"{name} {lr:.3g}")
    finite = [s for s in result["smoothed"] if math.isfinite(s)]
    if finite:
        ax.set_ylim(0, min(max(finite), 4 * min(finite)) * 1.1)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="lr range test")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def class_counts(names: list, counts: list, path, title: str = "samples per class (train)") -> None:
    fig = Figure(figsize=(max(6, 0.6 * len(names)), 3.8))
    ax = fig.add_subplot(111)
    ax.bar(range(len(counts)), counts, color="tab:purple")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 10 or max(map(len, names)) > 4 else 0,
                  ha="right" if len(names) > 10 or max(map(len, names)) > 4 else "center")
    ax.set(title=title, ylabel="samples")
    _save(fig, path)


def image_grid(images, titles: list, path, cols: int = 5, title: str = "samples") -> None:
    """images: (N, C, H, W) floats; one channel is shown in grey, three as RGB."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(2 * cols, 2.2 * rows))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray")
        else:
            ax.imshow(img[:3].transpose(1, 2, 0).clip(0, 1))
        ax.set_title(titles[i], fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    _save(fig, path)
