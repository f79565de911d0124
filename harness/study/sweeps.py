"""The study: sweeps and random search over Configs, saved run by run so a killed study resumes.

    from harness.study import sweep_configs, run_study, summarize, write_outputs
    configs = sweep_configs("lr", [1e-4, 1e-3, 1e-2, 1e-1, 1.0], lr=0.1, batch_size=128, epochs=15)
    results = run_study("digits28", configs, "results/sweep-lr")     # skips runs already in runs/
    rows = summarize(results)                                        # sorted by Accuracy, mean/std over seeds
    write_outputs("results/sweep-lr", results, rows, vary=("learning_rate",))

Every finished run is written at once, atomically, to OUT/runs/<Config.key()>.json, so
running the same command again picks up where it stopped. `harness sweep|search|train`
(harness/cli.py) are thin wrappers around these functions.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from harness.io import atomic_write_json, atomic_write_text
from harness.recipe import load_recipe
from harness.study.runs import Config, execute

METRICS = ("Accuracy", "Precision_macro", "Recall_macro", "F1_macro", "Train_time_s", "Infer_time_s")
COLUMNS = ("learning_rate", "batch_size") + METRICS + ("steps", "epochs_run", "diverged")


# --- which runs ------------------------------------------------------------------------------

def sweep_configs(kind: str, values: Sequence, *, lr: float, batch_size: int, epochs: int,
                  seeds: Sequence[int] = (0,), options: tuple = ()) -> list:
    """One Config per (value, seed): kind 'lr' varies the lr at a fixed batch size, 'batch-size' the reverse."""
    if kind not in ("lr", "batch-size"):
        raise ValueError(f"sweep kind must be 'lr' or 'batch-size', got {kind!r}")
    return [Config(lr=v if kind == "lr" else lr, batch_size=batch_size if kind == "lr" else v,
                   epochs=epochs, seed=s, options=options) for v in values for s in seeds]


def search_configs(trials: int, lrs: Sequence[float], batch_sizes: Sequence[int], *, epochs: int,
                   seeds: Sequence[int] = (0,), options: tuple = (), rng_seed: int = 0) -> list:
    """The blog's random search: `trials` (lr, batch size) pairs drawn from the grid, seeded.

    Pairs are drawn without repeats while the grid has unused pairs (a repeat would only
    re-run the same configuration), then with repeats.
    """
    rng = random.Random(rng_seed)
    grid = [(lr, b) for lr in lrs for b in batch_sizes]
    pairs = rng.sample(grid, min(trials, len(grid))) + [rng.choice(grid) for _ in range(trials - len(grid))]
    return [Config(lr=lr, batch_size=b, epochs=epochs, seed=s, options=options) for lr, b in pairs for s in seeds]


# --- running them, resumably ------------------------------------------------------------------

def runs_dir(out) -> Path:
    return Path(out) / "runs"


def load_done(out) -> dict:
    """Results already saved under OUT/runs, by key (an unreadable file counts as not done)."""
    done = {}
    for path in sorted(runs_dir(out).glob("*.json")):
        try:
            result = json.loads(path.read_text())
            done[result["key"]] = result
        except (OSError, ValueError, KeyError):
            continue
    return done


def run_study(spec, configs: list, out, *, device="cpu", recipe=None, data=None, jobs: Optional[int] = None,
              vectorize: Optional[str] = None, progress: bool = True) -> list:
    """Run the configs not yet saved under OUT/runs; return every config's result, in config order.

    Each result is saved as soon as it arrives. `jobs` (worker processes) and `vectorize`
    ('auto'|'on'|'off': an lr sweep as one stacked model) go to `harness.study.runs.execute`, which
    needs `spec` to load the recipe in its workers.
    """
    recipe = recipe or load_recipe(spec)
    data = data or recipe.load_data()
    done = load_done(out)
    todo = [c for c in configs if c.key() not in done]
    bar = Progress(len(configs), len(configs) - len(todo), enabled=progress)
    if len(todo) < len(configs):
        bar.note(f"resuming: {len(configs) - len(todo)} of {len(configs)} runs already in {runs_dir(out)}")

    def save(config, result):
        atomic_write_json(runs_dir(out) / f"{result['key']}.json", result)
        done[result["key"]] = result
        bar.advance(describe(config), result["row"])

    extra = {k: v for k, v in (("jobs", jobs), ("vectorize", vectorize)) if v is not None}
    try:
        if todo:
            execute(spec, todo, on_result=save, device=device, recipe=recipe, data=data, **extra)
    finally:
        bar.close()
    return [done[c.key()] for c in configs]


def describe(config: Config) -> str:
    return f"lr={config.lr:g} batch={config.batch_size} seed={config.seed}"


class Progress:
    """A one-line progress bar on stderr: redrawn in place on a terminal, one line per run otherwise."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True, stream=None):
        self.total, self.done, self.enabled = total, done, enabled
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()

    def note(self, text: str):
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def advance(self, what: str, row: dict):
        self.done += 1
        if not self.enabled:
            return
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {what} "
                f"acc {row['Accuracy']:.3f}{' diverged' if row['diverged'] else ''} "
                f"({time.perf_counter() - self.start:.0f}s)")
        print(("\r" + line.ljust(100)) if self.tty else line, end="" if self.tty else "\n",
              file=self.stream, flush=True)

    def close(self):
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)


# --- the table ----------------------------------------------------------------------------------

def summarize(results: list) -> list:
    """One row per configuration (seeds pooled), sorted by Accuracy, best first.

    With one seed the row is the run's row. With several, metrics are means, `<metric>_std`
    their sample standard deviations, `seeds` the count and `diverged` the number that diverged.
    """
    groups: dict = {}
    for r in results:
        c = r["config"]
        groups.setdefault((c["lr"], c["batch_size"], c["epochs"], json.dumps(c["options"])), []).append(r["row"])
    rows = []
    for members in groups.values():
        if len(members) == 1:
            rows.append(dict(members[0]))
            continue
        row = {k: v for k, v in members[0].items() if k != "seed"}
        row["seeds"] = len(members)
        for m in METRICS + ("steps", "epochs_run"):
            values = [x[m] for x in members]
            row[m] = statistics.fmean(values)
            row[f"{m}_std"] = statistics.stdev(values)
        row["diverged"] = sum(bool(x["diverged"]) for x in members)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["Accuracy"] if math.isfinite(r["Accuracy"]) else math.inf)


def format_table(rows: list, columns: Sequence[str] = COLUMNS) -> str:
    """An aligned text table; a metric with a `_std` column prints as 'mean ± std'."""
    def cell(row, col):
        v = row.get(col, "")
        if col == "diverged" and "seeds" in row:
            return f"{v}/{row['seeds']}"  # seeds that diverged
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, float) and col not in ("learning_rate",):
            text, std = (f"{v:.4f}", ".4f") if col in METRICS else (f"{v:.4g}", ".3g")
            return text + (f" ± {row[col + '_std']:{std}}" if col + "_std" in row else "")
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)
    cols = [c for c in columns if any(c in r for r in rows)] or list(columns)
    cells = [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def to_csv(rows: list) -> str:
    keys = list(COLUMNS) + [k for r in rows for k in r if k not in COLUMNS]
    keys = list(dict.fromkeys(k for k in keys if any(k in r for r in rows)))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def label(config: dict, vary: Sequence[str]) -> str:
    """'lr=0.1', 'batch=8' or 'lr=0.01 batch=32': the varied settings of a run, for legends."""
    parts = {"learning_rate": f"lr={config['lr']:g}", "batch_size": f"batch={config['batch_size']}"}
    return " ".join(parts[v] for v in vary)


def write_outputs(out, results: list, rows: list, vary: Sequence[str], title: str = "",
                  figures: bool = True) -> dict:
    """Write table.txt, table.csv, results.json (rows and every run's history) and the figures.

    Returns the paths written, by name.
    """
    from harness import figures as fig

    out = Path(out)
    paths = {"table.txt": out / "table.txt", "table.csv": out / "table.csv", "results.json": out / "results.json"}
    atomic_write_text(paths["table.txt"], format_table(rows) + "\n")
    atomic_write_text(paths["table.csv"], to_csv(rows))
    atomic_write_json(paths["results.json"], {"title": title, "vary": list(vary), "rows": rows, "runs": results})
    if not figures:
        return paths
    first = {}  # one run per configuration (its first seed) for the overlay
    for r in results:
        name = label(r["config"], vary)
        first.setdefault(name, r["history"])
        seed = f"_seed{r['config']['seed']}" if len({x['config']['seed'] for x in results}) > 1 else ""
        path = out / "figures" / f"curves_{slug(name)}{seed}.png"
        fig.curves(r["history"], f"{title} {name}{seed.replace('_', ' ')}".strip(), path)
        paths[path.name] = path
    paths["overlay.png"] = out / "figures" / "overlay.png"
    fig.overlay(first, title, paths["overlay.png"])
    paths["bars.png"] = out / "figures" / "bars.png"
    ordered = sorted(rows, key=lambda r: tuple(r[v] for v in vary))
    fig.bars([label({"lr": r["learning_rate"], "batch_size": r["batch_size"]}, vary) for r in ordered],
             ordered, title, paths["bars.png"])
    return paths


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text.replace("=", ""))
