"""The `harness` command (also `python -m harness`): the study from the command line.

    harness sweep lr --values 1e-4,1e-3,1e-2,1e-1,1 --batch-size 128 --epochs 15
    harness sweep batch-size --values 8,32,128,512,2048 --lr 0.01
    harness search --trials 8 --lr 1e-4:1 --batch-size 8:512 --seeds 2 --sampler qmc
    harness search --storage postgresql+psycopg://me@db/studies --study mlp --jobs 2   # on every machine
    harness report --storage postgresql+psycopg://me@db/studies --study mlp --out results/mlp
    harness train --lr 0.1 --patience 3 --scheduler step:5:0.1
    harness eda
    harness lr-find
    harness checks                  # the check registry: ids for --harness-suppress (takes no --recipe)

Every command takes --recipe (default digits28), --out DIR (default results/<recipe>/<command>),
--device, --seed and --seeds K (run each configuration with K seeds, report mean ± std).
Sweeps and searches are Optuna studies stored in OUT/study.db (or --storage URL): each trial is
saved as it finishes, so running the same command again continues the study. A bad argument
is one line naming the flag, with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import warnings
from pathlib import Path

from harness.errors import RecipeError  # nothing here imports torch at start-up: a sweep's workers start first

LR_VALUES = "1e-4,1e-3,1e-2,1e-1,1"
BATCH_VALUES = "8,32,128,512,2048"


class Once(argparse.Action):
    """An option that may be given once: a second --recipe is an error, not a silent override."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, f"_{self.dest}_given", False):
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)!r} and {values!r}); give it once")
        setattr(namespace, f"_{self.dest}_given", True)
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `harness: error: --lr: '-1' is not a positive number`."""

    def error(self, message):
        message = re.sub(r"^argument ([^:]+): ", lambda m: m.group(1).split("/")[-1] + ": ", message)
        if message.endswith(": expected one argument"):  # `--lr -1:1`: argparse reads '-1:1' as an option
            flag = message.split(":")[0]
            message += f"; give its value after it (one that starts with '-' as {flag}=VALUE)"
        self.exit(2, f"harness: error: {message}\n")


# --- converters at the boundary -------------------------------------------------------------------

def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def jobs_count(text: str) -> int:
    """--jobs: a whole number >= 0; 0 means one worker per core."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0 (0: one per core)")
    if value == 0:
        from harness.runtime import cores
        value = cores()
    return value


def threads_count(text: str):
    """--threads: a whole number >= 1, or 'auto' (measure 1 thread against all, per run)."""
    return "auto" if text == "auto" else positive_int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def momentum_value(text: str) -> float:
    """--momentum: a number in [0, 1); at 1 or above SGD's velocity never decays and training blows up."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1); try 0.9")
    return value


def list_of(convert):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is empty; give comma-separated values like 1e-3,1e-2")
        values = [convert(t) for t in items]
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} repeats a value")
        return values
    parse.__name__ = f"list of {convert.__name__}"
    return parse


def subset_size(text: str):
    """An int count (>= 1) or a fraction in (0, 1]."""
    if "." in text or "e" in text.lower():
        value = positive_float(text)
        if value > 1:
            raise argparse.ArgumentTypeError(f"{text!r}: a fraction must be in (0, 1]; a count is a whole number")
        return value
    return positive_int(text)


# --- the parser -----------------------------------------------------------------------------------

def build_parser() -> Parser:
    common = Parser(add_help=False)
    g = common.add_argument_group("common")
    g.add_argument("--recipe", default=None, action=Once, help="built-in name, path/to/file.py[:NAME] or module:NAME (default digits28)")
    g.add_argument("--out", default=None, action=Once, help="results folder (default results/<recipe>/<command>)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    g.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    g.add_argument("--data-root", default=None, help="folder with FashionMNIST / CIFAR-10 files")
    g.add_argument("--download", action="store_true", default=None, help="allow dataset downloads")
    g.add_argument("--threads", type=threads_count, default=None,
                   help="torch CPU threads, or auto to measure 1 thread against all per run "
                        "(default: torch's count, capped; fixed, so runs repeat bit for bit)")
    g.add_argument("--quiet", action="store_true", help="no progress output")

    training = Parser(add_help=False)
    t = training.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (default: the recipe's)")
    t.add_argument("--seeds", type=positive_int, default=1, help="repeat each configuration with K seeds (mean ± std)")
    t.add_argument("--optimizer", choices=("sgd", "adam"), default=None, help="default: the recipe's")
    t.add_argument("--momentum", type=momentum_value, default=None, help="momentum in [0, 1) (e.g. 0.9) of the recipe's optimizer, or of --optimizer sgd's")
    t.add_argument("--weight-decay", type=non_negative_float, default=None,
                   help="weight decay of the recipe's optimizer, or of --optimizer's")
    t.add_argument("--scheduler", default=None, help="step:STEP[:GAMMA], cosine[:MIN_LR] or warmup:EPOCHS; replaces the recipe's own schedule")
    t.add_argument("--patience", type=positive_int, default=None, help="early stopping on the task's main metric on val (accuracy, R2, ...)")
    t.add_argument("--subset", type=subset_size, default=None, help="train on N samples or a fraction")
    t.add_argument("--drop-last", action="store_true", default=None,
                   help="drop each epoch's last partial batch (BatchNorm cannot train on a batch of 1)")
    t.add_argument("--jobs", type=jobs_count, default=None,
                   help="runs at once in worker processes with capped threads (0: one per core)")
    t.add_argument("--vectorize", choices=("auto", "on", "off"), default=None,
                   help="train an lr sweep as one stacked model (auto: on CUDA only)")
    t.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

    shared = Parser(add_help=False)
    o = shared.add_argument_group("study storage")
    o.add_argument("--storage", default=None, action=Once,
                   help="Optuna storage URL shared by workers on any machine, e.g. postgresql+psycopg://user@host/db "
                        "(default: sqlite in --out)")
    o.add_argument("--study", default=None, action=Once,
                   help="study name in the storage (default: the command, e.g. sweep-lr, in --out's study.db; "
                        "<recipe>-<command> in a --storage)")
    o.add_argument("--prune", choices=("none", "median", "hyperband"), default="none",
                   help="also prune trials on the val loss per epoch (diverged runs are always pruned)")
    o.add_argument("--fail-fast", action="store_true",
                   help="stop at the first run that raises (default: record it, run the others, exit 1 at the end)")
    o.add_argument("--heartbeat", type=positive_int, default=None,
                   help="seconds between a running trial's heartbeats; a trial silent for 3x is retried (default 10)")

    parser = Parser(prog="harness", description="Sweeps, search, training and EDA for a training recipe.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sweep", parents=[common, training, shared], help="sweep the lr or the batch size (a grid)")
    p.add_argument("kind", choices=("lr", "batch-size"))
    p.add_argument("--values", default=None,
                   help=f"comma-separated values (default lr: {LR_VALUES}; batch-size: {BATCH_VALUES})")
    p.add_argument("--lr", type=positive_float, default=None, help="fixed lr of a batch-size sweep")
    p.add_argument("--batch-size", type=positive_int, default=None, help="fixed batch size of an lr sweep")

    p = sub.add_parser("search", parents=[common, training, shared],
                       help="search lr and batch size with Optuna (QMC, random or TPE)")
    p.add_argument("--trials", type=positive_int, default=8, help="distinct configurations (each run --seeds times)")
    p.add_argument("--sampler", choices=("qmc", "random", "tpe"), default="qmc",
                   help="qmc: scrambled Sobol points (default); random; tpe: adapts to the results")
    p.add_argument("--lr", default="1e-4:1", help="LOW:HIGH (log scale) or comma-separated values (default 1e-4:1)")
    p.add_argument("--batch-size", default="8:512",
                   help="LOW:HIGH (log scale, whole numbers) or comma-separated values (default 8:512)")

    p = sub.add_parser("report", help="the table, CSV and figures of a study (any storage)")
    p.add_argument("--out", default=None, action=Once,
                   help="the folder a sweep or search wrote (its study.db is read), and where the report goes")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--storage", default=None, action=Once, help="Optuna storage URL (default: OUT/study.db)")
    p.add_argument("--study", default=None, action=Once, help="study name (default: the only one in the storage)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

    p = sub.add_parser("train", parents=[common, training, shared], help="one run, its history and curves")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)

    sub.add_parser("eda", parents=[common], help="class counts, channel statistics, sample images")

    p = sub.add_parser("lr-find", parents=[common], help="the lr range test and its curve")
    p.add_argument("--lr-min", type=positive_float, default=1e-7)
    p.add_argument("--lr-max", type=positive_float, default=10.0)
    p.add_argument("--steps", type=positive_int, default=100)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None)

    p = sub.add_parser("checks", help="list the registered checks: id, step, what each catches")
    p.add_argument("ids", nargs="*", metavar="ID", help="show only these checks, with their symptoms")
    return parser


# --- commands -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sweep":
        if (args.lr if args.kind == "lr" else args.batch_size) is not None:  # it would be ignored without a word
            parser.error({"lr": "--lr: an lr sweep takes its lrs from --values (e.g. --values 1e-3,1e-2,1e-1); "
                                "--lr fixes the lr of a batch-size sweep",
                          "batch-size": "--batch-size: a batch-size sweep takes its sizes from --values (e.g. "
                                        "--values 32,64,128); --batch-size fixes the batch size of an lr sweep",
                          }[args.kind])
        convert = positive_float if args.kind == "lr" else positive_int
        try:
            default = LR_VALUES if args.kind == "lr" else BATCH_VALUES
            args.values = list_of(convert)(default if args.values is None else args.values)  # "" is not the default
        except argparse.ArgumentTypeError as e:
            ranged = any(mark in (args.values or "") for mark in (":", "..", " to "))
            example = "1e-4,1e-3,1e-2,1e-1" if args.kind == "lr" else "32,64,128"
            parser.error(f"--values: {e}" + (f"; a range is not a value list: give each value, comma-separated, "
                                             f"e.g. --values {example}" if ranged else ""))
    if getattr(args, "lr_min", None) and args.lr_min >= args.lr_max:
        parser.error(f"--lr-min {args.lr_min:g}: must be below --lr-max {args.lr_max:g}")
    pool = _early_pool(args)  # before this process imports torch
    from harness.study.trials import TrialError

    args._pool = pool
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a kill stops workers and keeps finished trials
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return COMMANDS[args.command](args)
    except RecipeError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except TrialError as e:  # a run failed: a broken recipe (its one line) is a usage error, like the others
        print(f"harness: error: {e}", file=sys.stderr)
        return 2 if isinstance(e.__cause__, RecipeError) else 1
    except OSError as e:  # a file system problem outside the output folder (disk full, permissions)
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "_where", None) or getattr(args, "_out", None)
        print(f"\nharness: interrupted; finished trials are saved in {where}. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        pool.close()
        signal.signal(signal.SIGTERM, previous)
        warnings.formatwarning = formatwarning


def _early_pool(args):
    """The worker processes' pool of a sweep or search with --jobs > 1, started now: it imports
    torch, Optuna and the engine (2-3 s) while this process imports its own and loads the recipe.
    Its command line names the study (a --storage URL without its password)."""
    from harness.runtime import thread_cap
    from harness.study.storage import default_url, redact
    from harness.study.workers import Pool

    jobs, storage, out = getattr(args, "jobs", None) or 1, getattr(args, "storage", None), getattr(args, "out", None)
    where = redact(storage) if storage else default_url(out) if out else "sqlite in the default --out"
    name = args.study if getattr(args, "study", None) else f"{args.command} {getattr(args, 'kind', '')}".strip()
    return Pool(f"{where} study {name}", max(1, thread_cap() // jobs),
                start=args.command in ("sweep", "search") and jobs > 1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """The harness's own warnings as the one line they are (Python's format adds the file and a source line)."""
    from harness.errors import HarnessWarning

    if issubclass(category, HarnessWarning):
        return f"{category.__name__}: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


_PYTHON_FORMAT = warnings.formatwarning


def _setup(args):
    """Threads, data settings, the recipe, its data and the output folder."""
    import torch

    from harness import data as harness_data
    from harness.fit import resolve_device
    from harness.recipes import load_recipe

    if args.threads == "auto":
        from harness import runtime
        runtime.set_threads_override("auto")
    elif args.threads:
        torch.set_num_threads(args.threads)
    if args.data_root:
        harness_data.settings.root = args.data_root
    if args.download:
        harness_data.settings.download = True
    recipe = load_recipe(args.recipe)
    device = resolve_device(args.device)
    suffix = f"-{args.kind}" if args.command == "sweep" else ""
    # the default study name: one study per folder (another recipe there is refused); in a shared
    # --storage the recipe's name keeps different recipes' studies apart
    args._name = (f"{_slug(recipe.name)}-" if getattr(args, "storage", None) else "") + f"{args.command}{suffix}"
    args._out = Path(args.out or f"results/{_slug(recipe.name)}/{args.command}{suffix}")
    _check_writable(args._out)  # before any training, not after the first run
    return recipe, recipe.load_data(), device


def _slug(text: str) -> str:
    """A recipe's name as one folder name: 'tests/gallery/healthy.py:LSTM' -> 'healthy-LSTM'."""
    text = re.sub(r"\.py(?=:|$)", "", text.replace("\\", "/").split("/")[-1])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "recipe"


def _check_writable(out: Path) -> None:
    from harness.io import OutputError

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".harness-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"--out {str(out)!r}: cannot write there ({e.strerror or e}); "
                          "choose a folder you can write to") from None


def _options(args) -> tuple:
    """The non-default fit options, as Config.options (sorted pairs; absent options keep keys stable)."""
    from harness.schedules import parse_scheduler

    opts = {}
    if args.optimizer == "adam" and args.momentum is not None:
        raise RecipeError(f"--momentum {args.momentum:g}: Adam has no momentum (its betas play that part); "
                          "drop --momentum, or give --optimizer sgd")
    if args.optimizer:  # without it, momentum and weight decay modify the recipe's own optimizer
        opts["optimizer"] = args.optimizer
    if args.momentum is not None:
        opts["momentum"] = args.momentum
    if args.weight_decay is not None:
        opts["weight_decay"] = args.weight_decay
    if args.scheduler:
        parse_scheduler(args.scheduler)  # validate now, with the flag's one-line message
        opts["scheduler"] = args.scheduler
    if args.patience is not None:
        opts["patience"] = args.patience
    if args.subset is not None:
        opts["subset"] = args.subset
    if args.drop_last:
        opts["drop_last"] = True
    return tuple(sorted(opts.items()))


def _study(args, recipe, data, device, configs, vary, title, kind=None, settings=None, tpe=None, space=None) -> int:
    from harness import study
    from harness.recipes import DEFAULT

    spec = args.recipe or DEFAULT
    name = args.study or args._name
    args._where = f"study {name!r} ({args.storage or args._out / 'study.db'})"
    settings = {"command": args.command + (f" {args.kind}" if args.command == "sweep" else ""), **(settings or {}),
                "epochs": configs[0].epochs if configs else tpe["epochs"],
                "options": [list(o) for o in (configs[0].options if configs else tpe["options"])]}
    if args.prune != "none":  # a joiner with another pruning policy would cut trials the study keeps (absent: the
        settings["prune"] = args.prune  # studies made before it was recorded, all without pruning, still match)
    extra = {"heartbeat": args.heartbeat} if args.heartbeat else {}
    try:
        results = study.run_study(spec, configs, args._out, device=device, recipe=recipe, data=data,
                                  jobs=args.jobs, vectorize=args.vectorize, progress=not args.quiet,
                                  storage=args.storage, study=name, settings=settings, kind=kind, tpe=tpe,
                                  space=space, prune=args.prune, meta={"title": title, "vary": list(vary)},
                                  pool=args._pool, fail_fast=args.fail_fast, **extra)
    except study.StudyFailures as e:  # the finished runs are reported all the same, then the failed ones
        if not e.results:
            raise
        _report(args, e.results, vary, title, e.failures)  # it lists each failure with its line
        n = len(e.failures)
        raise study.TrialError(f"{n} of {n + len(e.results)} runs raised (listed above and in results.json "
                               "'failed'); the others finished; run the same command again to retry them") from None
    return _report(args, results, vary, title)


def _report(args, results, vary, title, failures=()) -> int:
    from harness import study
    from harness.study.storage import run_label

    rows = study.summarize(results)
    paths = study.write_outputs(args._out, results, rows, vary, title=title, figures=not args.no_figures,
                                failed=list(failures))
    print(f"{title} ({len(results)} run{'s' if len(results) != 1 else ''}, sorted by {(rows[0].get('Score_metric') if rows else None) or 'Accuracy'})")
    print(study.format_table(rows))
    if study.scored_note(results):
        print(study.scored_note(results))
    for f in failures[:FAILURES_SHOWN]:
        print(f"failed: {run_label(f['config'])}: {f['error']}")
    if len(failures) > FAILURES_SHOWN:
        print(f"failed: {len(failures) - FAILURES_SHOWN} more (results.json lists every one)")
    print(f"wrote {paths['table.csv']}, {paths['results.json']} and {len(paths) - 3} figures under {args._out}")
    return 0


FAILURES_SHOWN = 10


def _seeds(args) -> list:
    return list(range(args.seed, args.seed + args.seeds))


def cmd_sweep(args) -> int:
    from harness.study import sweep_configs

    recipe, data, device = _setup(args)
    epochs = args.epochs or recipe.epochs
    lr, batch = args.lr or recipe.lr, args.batch_size or recipe.batch_size
    configs = sweep_configs(args.kind, args.values, lr=lr, batch_size=batch, epochs=epochs,
                            seeds=_seeds(args), options=_options(args))
    if args.kind == "lr":
        title = f"{recipe.name}: lr sweep, batch {batch}, {epochs} epochs"
        settings = {"lr": args.values, "batch size": batch}
    else:
        title = f"{recipe.name}: batch-size sweep, lr {lr:g}, {epochs} epochs"
        settings = {"batch size": args.values, "lr": lr}
    vary = ("learning_rate",) if args.kind == "lr" else ("batch_size",)
    return _study(args, recipe, data, device, configs, vary, title, kind=args.kind,
                  settings={**settings, "seeds": _seeds(args)})


def cmd_search(args) -> int:
    from harness.study import Space, search_configs
    from harness.study.configs import check_room

    recipe, data, device = _setup(args)
    epochs = args.epochs or recipe.epochs
    space = Space.parse(args.lr, args.batch_size)
    settings = {"sampler": args.sampler, "trials": args.trials, "space": space.describe(), "seeds": _seeds(args)}
    title = f"{recipe.name}: {args.sampler} search, {args.trials} configurations x {args.seeds} seeds, {epochs} epochs"
    vary = ("learning_rate", "batch_size")
    if args.sampler == "tpe":
        check_room(args.trials, space)  # TPE would ask for new points in vain, and run fewer
        tpe = {"trials": args.trials, "seeds": _seeds(args), "epochs": epochs, "options": list(_options(args)),
               "seed": args.seed}
        return _study(args, recipe, data, device, [], vary, title, settings=settings, tpe=tpe, space=space)
    configs = search_configs(args.trials, space, epochs=epochs, seeds=_seeds(args), options=_options(args),
                             sampler=args.sampler, rng_seed=args.seed)
    return _study(args, recipe, data, device, configs, vary, title, settings=settings, space=space)


def cmd_report(args) -> int:
    """The table, CSV, results.json and figures of an existing study, from any storage."""
    from harness.study import load_study_results
    from harness.study.storage import counts, default_url, failed_runs, pruned_early

    args._out = Path(args.out or (f"results/report-{_slug(args.study)}" if args.study else "results/report"))
    if args.storage is None and args.out is None:
        print("harness: error: report: give --out DIR (a sweep's folder) or --storage URL [--study NAME]",
              file=sys.stderr)
        return 2
    url = args.storage or default_url(args._out)
    if args.storage is None and not (args._out / "study.db").is_file():
        print(f"harness: error: --out {str(args._out)!r}: no study.db there; give the folder a sweep or search "
              "wrote, or --storage URL", file=sys.stderr)
        return 2
    the_study, results = load_study_results(url, args.study)
    failures = failed_runs(the_study)
    if not results:
        print(f"harness: error: study {the_study.study_name!r} has no finished trials yet", file=sys.stderr)
        return 2
    _check_writable(args._out)
    note = pruned_early(the_study)
    if note:
        print(note, file=sys.stderr)
    c = counts(the_study)
    if c["running"] or c["waiting"]:  # a study still running (or stopped): the table is not all of it
        left = ", ".join(f"{c[s]} {s}" for s in ("running", "waiting") if c[s])
        print(f"the study is not finished ({left}): the table holds the {len(results)} run"
              f"{'s' if len(results) != 1 else ''} finished so far", file=sys.stderr)
    title = the_study.user_attrs.get("title", the_study.study_name)
    vary = tuple(the_study.user_attrs.get("vary", ("learning_rate", "batch_size")))
    args.no_figures = getattr(args, "no_figures", False)
    return _report(args, results, vary, title, failures)


def cmd_train(args) -> int:
    from harness.io import atomic_write_json
    from harness.study import Config

    recipe, data, device = _setup(args)
    configs = [Config(lr=args.lr or recipe.lr, batch_size=args.batch_size or recipe.batch_size,
                      epochs=args.epochs or recipe.epochs, seed=s, options=_options(args)) for s in _seeds(args)]
    title = f"{recipe.name}: train lr {configs[0].lr:g}, batch {configs[0].batch_size}"
    args._results = []
    code = _study(args, recipe, data, device, configs, ("learning_rate", "batch_size"), title,
                  settings={"lr": configs[0].lr, "batch size": configs[0].batch_size, "seeds": _seeds(args)})
    results = json.loads((args._out / "results.json").read_text())["runs"]
    histories = [r["history"] for r in results]
    atomic_write_json(args._out / "history.json", histories[0] if len(histories) == 1 else histories)
    h = histories[0]
    print(f"epochs run {len(h['train_loss'])}, best epoch {h['best_epoch']}, stopped early {h['stopped_early']}, "
          f"diverged {h['diverged']}; history in {args._out / 'history.json'}")
    return code


def cmd_eda(args) -> int:
    from harness.eda import format_summary, summarize_data, write_eda

    recipe, data, _ = _setup(args)
    summary = summarize_data(data, recipe.num_classes)
    print(f"{recipe.name}")
    print(format_summary(summary))
    paths = write_eda(args._out, data, summary)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_lr_find(args) -> int:
    import torch

    from harness import figures
    from harness.diagnose import user_code
    from harness.io import atomic_write_json
    from harness.lr_find import lr_find
    from harness.schedules import parse_optimizer

    recipe, data, device = _setup(args)
    torch.manual_seed(args.seed)
    optimizer = parse_optimizer(args.optimizer) if args.optimizer else recipe.optimizer
    batch_size = args.batch_size or recipe.batch_size
    # the recipe's own step (its train_step, or forward/loss/backward/step with its forward= and loss),
    # so a crash in the user's model, loss, train_step or Dataset is one line, as in fit
    step = lambda model, inputs, targets, opt, loss: recipe.step(model, inputs, targets, opt)  # noqa: E731
    with user_code("lr_find", "train", data.train, batch_size=batch_size):
        result = lr_find(recipe.build_model(), data, loss=recipe.loss, optimizer=optimizer, batch_size=batch_size,
                         train_step=step, lr_min=args.lr_min, lr_max=args.lr_max, steps=args.steps, device=device,
                         seed=args.seed, task=recipe.task, forward=recipe.forward)
    diverge = f"{result.diverge_lr:.3g}" if result.diverge_lr else f"not within {args.lr_max:g}"
    suggested = f"{result.suggested_lr:.3g}" if result.suggested_lr else "none (too few steps)"
    print(f"{recipe.name}: lr range test, {len(result.lrs)} steps from {args.lr_min:g}")
    print(f"suggested lr {suggested}; diverges at {diverge}; recipe lr {recipe.lr:g}")
    atomic_write_json(args._out / "lr_find.json", {**result.to_dict(), "recipe_lr": recipe.lr})
    figures.lr_find_curve(result.to_dict(), args._out / "figures" / "lr_find.png", recipe_lr=recipe.lr)
    print(f"wrote {args._out / 'lr_find.json'}, {args._out / 'figures' / 'lr_find.png'}")
    return 0


def cmd_checks(args) -> int:
    """The check registry (harness.checks.registry): one line per check; with ids, their symptoms too."""
    from harness.checks import registry

    try:
        chosen = [registry.get(i, "harness checks") for i in args.ids] if args.ids else list(registry.CHECKS.values())
    except registry.UnknownCheck as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    width = max(len(c.id) for c in chosen)
    for c in chosen:
        print(f"{c.id:<{width}}  {c.step:<8}  {c.catches}")
        if args.ids:
            print(f"{'':<{width}}  symptoms: {', '.join(c.symptoms) or '-'}; read more: {c.docs}")
    return 0


COMMANDS = {"sweep": cmd_sweep, "search": cmd_search, "report": cmd_report, "train": cmd_train, "eda": cmd_eda,
            "lr-find": cmd_lr_find, "checks": cmd_checks}


if __name__ == "__main__":
    sys.exit(main())
