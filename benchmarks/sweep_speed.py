"""Five learning rates: sequential runs against worker processes and a stacked model, side by side;
and `harness sweep` against an older checkout of the code.

    .venv/bin/python benchmarks/sweep_speed.py                          # batch 8, 32, 128
    SWEEP_SAMPLES=20000 .venv/bin/python benchmarks/sweep_speed.py --batch-sizes 32 --rounds 1
    .venv/bin/python benchmarks/sweep_speed.py --against /work/baseline --rounds 8 --extra "--jobs 2"  # CLI, new vs old
    .venv/bin/python benchmarks/sweep_speed.py --machinery --rounds 5   # the study's own cost, same engine
    .venv/bin/python benchmarks/sweep_speed.py --scaling 1,2,4 --rounds 2   # trials/min, SQLite and PostgreSQL

For each batch size it runs the same 5-lr sweep (the seed notebook's MLP, plain SGD, --epochs epochs
on FashionMNIST-shaped synthetic data) through `harness.study.run_study` four ways, interleaved
round by round, and prints wall seconds (process start-up included) and the speed-up over
sequential:

- sequential:   jobs=1, vectorize off (each run's thread count chosen by fit, up to all cores)
- processes:    jobs=2 (cores // 2 threads each)
- stacked:      jobs=1, vectorize on (one model of 5 copies, all cores)
- both:         jobs=2, vectorize on (two stacked models of 3 and 2 copies, one per worker)

Workers load this file's RECIPE (its data size comes from SWEEP_SAMPLES, default 54,000).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import torch

from harness.data import synthetic
from harness.models import fashion_mlp
from harness.recipe import Recipe

SAMPLES = int(os.environ.get("SWEEP_SAMPLES", 54_000))
LRS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SPEC = f"{Path(__file__).resolve()}:RECIPE"


def sweep_data():
    return synthetic(n_train=SAMPLES, n_val=1_000, n_test=1_000, shape=(1, 28, 28))


RECIPE = Recipe(model=fashion_mlp, data=sweep_data, num_classes=10, lr=0.01, name="sweep-speed")
WAYS = {"sequential": dict(jobs=1, vectorize="off"), "processes": dict(jobs=2, vectorize="off"),
        "stacked": dict(jobs=1, vectorize="on"), "both": dict(jobs=2, vectorize="on")}


def against(old: str, rounds: int, extra: list, figures: bool = False) -> int:
    """`harness sweep lr` (5 lrs, the default recipe) with this tree and with OLD on PYTHONPATH,
    interleaved round by round (the order alternates, so both see the same load); wall seconds of
    the whole command, start-up included, the load average when each ended, and the paired ratios.
    `figures`: draw them, as the command does by default (else --no-figures)."""
    import subprocess
    import tempfile

    here = str(Path(__file__).resolve().parents[1])
    command = [sys.executable, "-m", "harness", "sweep", "lr", "--values", "1e-4,1e-3,1e-2,1e-1,1",
               *([] if figures else ["--no-figures"]), "--quiet", *extra]
    times: dict = {"new": [], "old": []}
    for r in range(rounds):
        for name, tree in (("new", here), ("old", old)) if r % 2 == 0 else (("old", old), ("new", here)):
            with tempfile.TemporaryDirectory() as out:
                env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
                t0 = time.perf_counter()
                subprocess.run(command + ["--out", out], env=env, check=True, capture_output=True, cwd=tree)
                times[name].append(time.perf_counter() - t0)
                print(f"  round {r + 1} {name}: {times[name][-1]:.2f} s (load average {os.getloadavg()[0]:.1f})",
                      file=sys.stderr, flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    ratios = sorted(n / o for n, o in zip(times["new"], times["old"]))
    print(f"harness sweep lr ({' '.join(extra + ([] if figures else ['--no-figures'])) or 'defaults'}): new {med['new']:.2f} s, old {med['old']:.2f} s "
          f"(medians of {rounds}); new/old = {med['new'] / med['old']:.3f}; paired new/old per round: "
          f"{', '.join(f'{x:.2f}' for x in ratios)} (median {ratios[len(ratios) // 2]:.2f})")
    return 0


def scaling(rounds: int, workers: list, trials: int) -> int:
    """Trials per minute with W workers against one study (docs/scaling.md): `harness search
    --trials N --epochs 1 --jobs W` on the default recipe, on SQLite in --out and on a throw-away
    PostgreSQL server (tests/study_postgres.py), interleaved round by round. Rates are counted from
    the first trial's start to the last one's end, and (in brackets) over the whole command."""
    import subprocess
    import tempfile

    import optuna

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.study_postgres import start_server, stop_servers

    try:
        storages = {"SQLite": None, "PostgreSQL": start_server()}
    except (RuntimeError, OSError) as e:
        print(f"no PostgreSQL server ({e}); SQLite only", file=sys.stderr)
        storages = {"SQLite": None}
    rates: dict = {}
    try:
        for r in range(rounds):
            for kind, url in storages.items():
                for w in workers:
                    with tempfile.TemporaryDirectory() as out:
                        name = f"scaling-{r}-{w}-{os.getpid()}"
                        where = ["--storage", url, "--study", name] if url else []
                        command = [sys.executable, "-m", "harness", "search", "--trials", str(trials), "--epochs", "1",
                                   "--jobs", str(w), "--threads", "1", "--out", out, "--no-figures", "--quiet", *where]
                        t0 = time.perf_counter()
                        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                        whole = time.perf_counter() - t0
                        study = optuna.load_study(study_name=name if url else "search",
                                                  storage=url or f"sqlite:///{out}/study.db")
                        done = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
                        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
                        rates.setdefault((kind, w), []).append((60 * len(done) / span, 60 * len(done) / whole,
                                                                os.getloadavg()[0]))
                        print(f"  round {r + 1} {kind} {w} workers: {len(done)} trials, {span:.1f} s first start to last "
                              f"end, {whole:.1f} s in all, load average {os.getloadavg()[0]:.1f}", file=sys.stderr,
                              flush=True)
    finally:
        stop_servers()
    print("| storage | workers | trials/min, first start to last finish | trials/min with process start-up "
          "| load average |\n|---|---:|---:|---:|---:|")
    for (kind, w), got in rates.items():
        print(f"| {kind} | {w} | {', '.join(f'{a:.0f}' for a, _, _ in got)} | {', '.join(f'{b:.0f}' for _, b, _ in got)} "
              f"| {', '.join(f'{c:.1f}' for _, _, c in got)} |")
    return 0


def machinery(rounds: int, epochs: int) -> int:
    """The sweep machinery alone, same engine, same process, interleaved: the old way (a loop of
    run_config, each result written atomically to OUT/runs/KEY.json) against run_study (an Optuna
    study in OUT/study.db), 5 lrs on the default recipe. Imports are warmed up first."""
    import tempfile

    from harness.io import atomic_write_json
    from harness.recipes import load_recipe
    from harness.study import run_config, run_study, sweep_configs

    recipe = load_recipe("digits28")
    data = recipe.load_data()
    configs = sweep_configs("lr", [1e-4, 1e-3, 1e-2, 1e-1, 1.0], lr=0.1, batch_size=128, epochs=epochs)

    def old(out):
        for c in configs:
            result = run_config(recipe, data, c)
            atomic_write_json(Path(out) / "runs" / f"{result['key']}.json", result)

    def new(out):
        run_study("digits28", configs, out, recipe=recipe, data=data, progress=False)

    with tempfile.TemporaryDirectory() as out:  # warm-up: imports, the first optimizer, the schema code
        new(out)
    times: dict = {"old": [], "new": []}
    for r in range(rounds):
        for name, way in (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old)):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                way(out)
                times[name].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"5-lr sweep, {epochs} epochs, in one process: loop + JSON files {med['old']:.2f} s, Optuna study "
          f"{med['new']:.2f} s (medians of {rounds}); study/loop = {med['new'] / med['old']:.3f}; all: {times}")
    return 0


def main(argv=None) -> int:
    import tempfile

    from harness.study import Config, run_study

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="8,32,128")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ways", default="sequential,processes,stacked", help=f"any of {','.join(WAYS)}")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--against", default=None, help="an older checkout: time `harness sweep lr` in both")
    p.add_argument("--extra", default="", help="more `harness sweep lr` arguments for --against")
    p.add_argument("--figures", action="store_true", help="--against: draw the figures (the command's default)")
    p.add_argument("--machinery", action="store_true", help="the study's own cost: loop + files vs run_study")
    p.add_argument("--scaling", default=None, help="trials/min with these worker counts, e.g. 1,2,4 (docs/scaling.md)")
    p.add_argument("--trials", type=int, default=24, help="trials per --scaling run")
    args = p.parse_args(argv)
    if args.scaling:
        return scaling(args.rounds, [int(w) for w in args.scaling.split(",")], args.trials)
    if args.machinery:
        return machinery(args.rounds, args.epochs)
    if args.against:
        return against(args.against, args.rounds, args.extra.split(), args.figures)
    ways = args.ways.split(",")
    data = sweep_data()
    best = {}
    for r in range(args.rounds):
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            configs = [Config(lr=lr, batch_size=bs, epochs=args.epochs) for lr in LRS]
            for way in ways:
                torch.set_num_threads(os.cpu_count() or 1)
                t0 = time.perf_counter()
                with redirect_stderr(io.StringIO()) as said, tempfile.TemporaryDirectory() as out:
                    run_study(SPEC, configs, out, data=data, **WAYS[way])
                seconds = time.perf_counter() - t0
                best[way, bs] = min(best.get((way, bs), math.inf), seconds)
                print(f"  round {r + 1} batch {bs:4d} {way:10s} {seconds:7.2f} s  [{said.getvalue().strip()}]",
                      file=sys.stderr, flush=True)
    print(f"\n5 learning rates, {args.epochs} epoch(s) of {SAMPLES} samples each; wall seconds "
          f"(fastest of {args.rounds} interleaved rounds) and speed-up over sequential\n")
    print("| batch | " + " | ".join(ways) + " |")
    print("|---:|" + "---:|" * len(ways))
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        base = best["sequential", bs] if "sequential" in ways else math.nan
        print(f"| {bs} | " + " | ".join(f"{best[w, bs]:.1f} s ({base / best[w, bs]:.2f}x)" for w in ways) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
