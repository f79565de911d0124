"""Reports of a study: the table (mean ± std over seeds), table.csv, results.json and the
figures, all made from the study's trials, so one command reports a study that many machines ran.

    from harness.study.reports import summarize, format_table, write_outputs
    rows = summarize(results)                          # sorted by Accuracy, seeds pooled
    print(format_table(rows))
    write_outputs("results/x", results, rows, vary=("learning_rate",), title="lr sweep")

`results` are `harness.study.storage.finished_results(study)`: one dict per run with its
config, table row and per-epoch history. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Sequence

from harness.io import atomic_write_json, atomic_write_text
from harness.study.storage import run_label

METRICS = ("Accuracy", "Precision_macro", "Recall_macro", "F1_macro", "Train_time_s", "Infer_time_s")
COLUMNS = ("learning_rate", "batch_size") + METRICS + ("steps", "epochs_run", "diverged")
_NOT_METRICS = {"learning_rate", "batch_size", "seed", "seeds", "steps", "steps_per_epoch", "epochs_run",
                "diverged", "train_samples", "Score", "Score_metric", "Scored_on", "Val_score"}


def metric_names(rows: list) -> tuple:
    """The task metrics the rows hold, in their order, then the times (classification: METRICS)."""
    names = [k for r in rows[:1] for k, v in r.items() if k not in _NOT_METRICS and not k.endswith("_std")
             and isinstance(v, (int, float)) and not isinstance(v, bool)]
    timed = [m for m in names if m.endswith("_time_s")]
    return tuple([m for m in names if m not in timed] + timed) or METRICS


def columns_for(rows: list) -> tuple:
    return ("learning_rate", "batch_size") + metric_names(rows) + ("steps", "epochs_run", "diverged")


def _score(row: dict) -> float:
    v = row.get("Score", row.get("Accuracy", math.nan))
    return -v if isinstance(v, (int, float)) and math.isfinite(v) else math.inf


def _rank(row: dict) -> tuple:
    """Best first: configurations that diverged in every seed last (the study does not count them for
    its best: they are pruned trials), the others by the task's main metric."""
    diverged = row.get("diverged")
    return (bool(diverged) and int(diverged) >= row.get("seeds", 1), _score(row))


def summarize(results: list) -> list:
    """One row per configuration (seeds pooled), sorted by the task's main metric, best first, with the
    configurations that diverged in every seed last.

    With one seed the row is the run's row. With several, metrics are means, `<metric>_std`
    their sample standard deviations, `seeds` the count and `diverged` the number that diverged
    (a configuration left with one seed, the others pruned, has `seeds` 1 and no `_std`).
    """
    groups: dict = {}
    for r in results:
        c = r["config"]
        groups.setdefault((c["lr"], c["batch_size"], c["epochs"], repr(c["options"])), []).append(r["row"])
    rows = []
    pooled = any(len(members) > 1 for members in groups.values())
    for members in groups.values():
        if not pooled:
            rows.append(dict(members[0]))
            continue
        # with seeds, a configuration a pruner cut down to one seed says so (diverged 0/1, no ± spread)
        row = {k: v for k, v in members[0].items() if k != "seed"}
        row["seeds"] = len(members)
        for m in metric_names(members) + ("Score", "steps", "epochs_run"):
            if m not in members[0]:
                continue
            values = [x[m] for x in members]
            row[m] = statistics.fmean(values)
            if len(values) > 1:
                row[f"{m}_std"] = _stdev(values)
        row["diverged"] = sum(bool(x["diverged"]) for x in members)
        rows.append(row)
    return sorted(rows, key=_rank)


def _stdev(values: list) -> float:
    """The sample standard deviation; NaN when a seed's value is not finite (a diverged regression's MSE,
    a language model's perplexity), which statistics.stdev cannot take."""
    return statistics.stdev(values) if all(math.isfinite(v) for v in values) else math.nan


def format_table(rows: list, columns: Sequence[str] = None) -> str:
    """An aligned text table; a metric with a `_std` column prints as 'mean ± std'."""
    columns = columns or columns_for(rows)
    metrics = set(metric_names(rows))
    lrs = [r["learning_rate"] for r in rows if isinstance(r.get("learning_rate"), float)]
    alike = {f"{lr:g}" for lr in lrs if sum(f"{x:g}" == f"{lr:g}" for x in set(lrs)) > 1}  # as labels() does
    def cell(row, col):
        v = row.get(col, "")
        if col == "diverged" and "seeds" in row:
            return f"{v}/{row['seeds']}"  # seeds that diverged
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, float) and col not in ("learning_rate",):
            text = _fixed(v) if col in metrics else f"{v:.4g}"
            std = (lambda s: f"{s:.4g}" if "e" in text else f"{s:.4f}") if col in metrics else (lambda s: f"{s:.3g}")
            return text + (f" ± {std(row[col + '_std'])}" if col + "_std" in row else "")
        if isinstance(v, float):
            return repr(v) if f"{v:g}" in alike else f"{v:g}"  # two lrs that print alike: in full
        return str(v)
    cols = [c for c in columns if any(c in r for r in rows)] or list(columns)
    cells = [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _fixed(v: float) -> str:
    """4 decimals; a number a million or more in size, or below 1e-4 but not zero, in 4 significant
    digits with an exponent (a diverged LM's perplexity 1e304 printed as 305 digits)."""
    return f"{v:.4g}" if math.isfinite(v) and v != 0 and not 1e-4 <= abs(v) < 1e6 else f"{v:.4f}"


def to_csv(rows: list) -> str:
    first = columns_for(rows)
    keys = list(first) + [k for r in rows for k in r if k not in first]
    keys = list(dict.fromkeys(k for k in keys if any(k in r for r in rows)))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def label(config: dict, vary: Sequence[str], exact: bool = False) -> str:
    """'lr=0.1', 'batch=8' or 'lr=0.01 batch=32': the varied settings of a run, for legends.
    `exact` spells the lr in full (repr), for two lrs that print alike at 6 digits."""
    lr = repr(float(config["lr"])) if exact else f"{config['lr']:g}"
    parts = {"learning_rate": f"lr={lr}", "batch_size": f"batch={config['batch_size']}"}
    return " ".join(parts[v] for v in vary)


def labels(configs: list, vary: Sequence[str]) -> list:
    """One label per config; distinct configurations always get distinct labels (and file names)."""
    short = [label(c, vary) for c in configs]
    owners: dict = {}
    for name, c in zip(short, configs):
        owners.setdefault(name, set()).add((c["lr"], c["batch_size"]))
    return [label(c, vary, exact=len(owners[name]) > 1) for name, c in zip(short, configs)]


FIGURE_CONFIGS = 20  # past this many configurations (a search) the curves, overlay and bars show the best ones


def write_outputs(out, results: list, rows: list, vary: Sequence[str], title: str = "",
                  figures: bool = True, failed: Sequence[dict] = ()) -> dict:
    """Write table.txt, table.csv, results.json (rows, every run's history, the `failed` runs: config
    and error line of each configuration that raised, and the `pruned` ones: config, reason and partial
    history of each run a pruner stopped, from `results.pruned`) and the figures.

    Returns the paths written, by name. Figure names never collide: two lrs that print alike
    are spelled in full, and two runs of one configuration differ by their seed. A run's curves
    drawn by an earlier report under another name (`curves_lr0.1.png` before its second seed
    finished, `curves_lr0.1_seed0.png` after) are removed, so figures/ holds each run once.

    Past FIGURE_CONFIGS configurations the per-run curves, the overlay and the bars show the best
    FIGURE_CONFIGS (the table's first rows), their titles saying so; against.png keeps every point
    (a 400-point search drew 1,200 curve files and a bar chart 28,000 pixels wide).
    """
    out = Path(out)
    paths = {"table.txt": out / "table.txt", "table.csv": out / "table.csv", "results.json": out / "results.json"}
    atomic_write_text(paths["table.txt"], _table_text(results, rows, title, failed))
    atomic_write_text(paths["table.csv"], to_csv(rows))
    atomic_write_json(paths["results.json"], {"title": title, "vary": list(vary), "rows": rows, "runs": results,
                                              "failed": list(failed),
                                              "pruned": list(getattr(results, "pruned", []))})
    if not figures:
        return paths
    from harness import figures as fig  # matplotlib: a quarter of a second, only when drawing

    names = labels([r["config"] for r in results], vary)
    metric = next((r["row"].get("Score_metric") for r in results if r["row"].get("Score_metric")), "Accuracy")
    several_seeds = len({r["config"]["seed"] for r in results}) > 1
    everything, shown = rows, title
    if len(rows) > FIGURE_CONFIGS:  # a big search: the best ones, said in the titles; against.png keeps every point
        rows = rows[:FIGURE_CONFIGS]
        best = {(r["learning_rate"], r["batch_size"]) for r in rows}
        drawn = [(r, n) for r, n in zip(results, names) if (r["config"]["lr"], r["config"]["batch_size"]) in best]
        results, names = [r for r, _ in drawn], [n for _, n in drawn]
        shown = f"{title} (the {FIGURE_CONFIGS} best of {len(everything)} configurations; table.csv holds all)".strip()
    seeds: dict = {}  # the overlay: one line per configuration, the mean of its seeds
    for r, name in sorted(zip(results, names), key=lambda pair: _order(pair[0]["config"], vary)):
        seeds.setdefault(name, []).append(r["history"])
    for r, name in zip(results, names):
        seed = f"_seed{r['config']['seed']}" if several_seeds else ""
        path = out / "figures" / f"curves_{slug(name)}{seed}.png"
        fig.curves(r["history"], f"{title} {name}{seed.replace('_', ' ')}".strip(), path, metric=metric)
        paths[path.name] = path
    for old in (out / "figures").glob("curves_*.png"):  # an earlier report's name for a run, or one no longer shown
        if old.name not in paths:
            old.unlink(missing_ok=True)
    paths["overlay.png"] = out / "figures" / "overlay.png"
    fig.overlay({name: mean_history(hs) for name, hs in seeds.items()}, shown, paths["overlay.png"], metric=metric)
    paths["bars.png"] = out / "figures" / "bars.png"
    ordered = sorted(rows, key=lambda r: tuple(r[v] for v in vary))
    configs = [{"lr": r["learning_rate"], "batch_size": r["batch_size"]} for r in ordered]
    fig.bars(labels(configs, vary), ordered, shown, paths["bars.png"])
    if len(everything) > 1:  # one configuration (harness train) has no curve against its settings
        paths["against.png"] = out / "figures" / "against.png"
        fig.against(everything, list(vary), title, paths["against.png"], metric=metric)
    return paths


SCORED_NOTES = {  # a table not scored on a test split says so under it
    "val": "scored on the val split (the recipe has no test split): the best row's score is optimistic, as the same "
           "split picks it",
    "train": "scored on the training split (the recipe has no val or test split): this ranks how well each "
             "setting fits the training data, not how well it generalises",
}


def scored_note(results: list) -> str:
    """'' when every run was scored on a test split, else the line saying where they were (SCORED_NOTES)."""
    scored = {r["row"].get("Scored_on", "test") for r in results}
    return SCORED_NOTES["train" if "train" in scored else "val"] if scored - {"test"} else ""


def _table_text(results: list, rows: list, title: str, failed: Sequence[dict]) -> str:
    """table.txt as the command printed it: what the study is (the title, runs, the metric it is sorted
    by), the table, and the runs that failed or a pruner stopped, so the file says what it is when read alone."""
    metric = next((r.get("Score_metric") for r in rows if r.get("Score_metric")), "Accuracy")
    head = f"{title} ({len(results)} run{'s' if len(results) != 1 else ''}, sorted by {metric})".lstrip()
    lines = [head, format_table(rows)] + ([scored_note(results)] if scored_note(results) else [])
    for f in failed:
        lines.append(f"failed: {run_label(f['config'])}: {f['error']}")
    for p in getattr(results, "pruned", []):
        lines.append(f"pruned: {run_label(p['config'])}: {p['reason']}")
    return "\n".join(lines) + "\n"


def _order(config: dict, vary: Sequence[str]) -> tuple:
    """The varied settings first (the bars' order), then the other one, then the seed."""
    keys = {"learning_rate": config["lr"], "batch_size": config["batch_size"]}
    return tuple(keys[v] for v in vary) + (config["lr"], config["batch_size"], config["seed"])


def mean_history(histories: list) -> dict:
    """One configuration's seeds as one history for the overlay: per epoch, the mean of the val loss and
    val metric over the seeds that reached it with a finite value, and `<key>_band` (lowest, highest);
    `seeds` and `diverged_seeds` count them. One seed: its own history."""
    if len(histories) == 1:
        return histories[0]
    out = {"seeds": len(histories), "diverged_seeds": sum(bool(h.get("diverged")) for h in histories)}
    out["diverged"] = out["diverged_seeds"] == len(histories)
    for key in ("val_loss", "val_acc", "train_loss", "train_acc"):  # train: the overlay of a recipe without val
        epochs = max(len(h.get(key, [])) for h in histories)
        means, lows, highs = [], [], []
        for i in range(epochs):
            values = [h[key][i] for h in histories if i < len(h.get(key, [])) and _finite(h[key][i])]
            means.append(statistics.fmean(values) if values else math.nan)
            lows.append(min(values) if values else math.nan)
            highs.append(max(values) if values else math.nan)
        out[key], out[f"{key}_band"] = means, (lows, highs)
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text.replace("=", ""))
