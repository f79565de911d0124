"""Sweeps and searches as Optuna studies: plan, run (here, in worker processes, or on many
machines), and read back.

    from harness.study import sweep_configs, run_study, summarize, write_outputs
    configs = sweep_configs("lr", [1e-4, 1e-3, 1e-2, 1e-1, 1.0], lr=0.1, batch_size=128, epochs=15)
    results = run_study("digits28", configs, "results/digits28/sweep-lr")   # resumes what is there
    rows = summarize(results)
    write_outputs("results/digits28/sweep-lr", results, rows, vary=("learning_rate",))

The study lives in OUT/study.db (SQLite) unless `storage` names a database that other
processes and machines share (`harness search --storage URL --study NAME` on each). Running
the same command again continues the study: finished trials stay, the rest run. A study
belongs to one recipe (its identity: spec, model class, parameter count, task, data sizes) and
one set of settings; anything else is refused in one line naming both.
"""
from __future__ import annotations

import math
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from harness.recipe import RecipeError
from harness.recipes import load_recipe
from harness.study.configs import Config, recipe_identity
from harness.study.one_run import check_lr_is_used, check_swept_value_used, metric_column, scored_split
from harness.study.progress import StudyProgress
from harness.study.storage import (HEARTBEAT, Results, default_url, distributions_for, failed_runs,
                                   finished_results, objective_name, open_storage, open_study, pruned_early,
                                   pruned_runs, redact, run_label, storage_errors)
from harness.study.trials import (Job, StudyFailures, TrialError, finished_keys, proposed_points,
                                  run_trials)

VECTORIZE_MODES = ("auto", "on", "off")


def run_study(spec, configs: list, out, *, device="cpu", recipe=None, data=None, jobs: Optional[int] = None,
              vectorize: Optional[str] = None, progress: bool = True, storage: Optional[str] = None,
              study: Optional[str] = None, settings: Optional[dict] = None, kind: Optional[str] = None,
              tpe: Optional[dict] = None, space=None, prune: str = "none", heartbeat: int = HEARTBEAT,
              meta: Optional[dict] = None, pool=None, fail_fast: bool = False) -> list:
    """Run every config of `configs` not yet finished in the study; return all their results, in
    config order (with `tpe`, the study's results in trial order).

    jobs: worker processes on this machine (0: one per core), each with cores // jobs threads;
    needs `spec`, the recipe spec workers load. vectorize: 'on' trains configs that differ only in lr
    as one stacked model (harness.study.stacked), 'auto' on CUDA only. settings: what, beside
    the recipe, makes this study what it is (the CLI passes its arguments); a study made with
    other settings is refused. kind 'lr'|'batch-size' checks that the swept value was used.
    pool: the workers' Pool when the caller started it earlier (the CLI does, before importing torch).

    A configuration whose run raises (an out-of-memory batch size) is recorded as failed with its
    line and the others run; then StudyFailures is raised, holding the finished `results` and the
    `failures`. fail_fast: raise TrialError at the first instead (the others stay queued).
    """
    from harness import runtime
    from harness.fit import resolve_device
    from harness.study.workers import Pool

    url = storage or default_url(out)
    name = study or "study"
    asked = runtime.cores() if jobs == 0 else (jobs or 1)
    # The workers' pool starts importing torch and Optuna now, while this process loads the recipe and the study.
    with pool or Pool(f"{redact(url)} study {name}", max(1, runtime.thread_cap() // asked),
                      start=asked > 1 and spec is not None) as pool:
        recipe = recipe or load_recipe(spec)
        given = data is not None
        data = data or recipe.load_data()
        if prune != "none" and data.val is None:
            raise RecipeError(f"--prune {prune}: the recipe has no val split, and the pruner reads the val loss of "
                              "each epoch; give the recipe a val split, or drop --prune")
        configs = list(configs)
        device = resolve_device(device)
        settings = settings if settings is not None else _settings_of(configs)
        identity = {"recipe": recipe_identity(spec, recipe, data), "settings": settings}
        if storage is None:
            Path(out).mkdir(parents=True, exist_ok=True)
        in_workers = asked > 1 and spec is not None  # they check the lr themselves (see below)
        if kind == "lr" and configs and not in_workers:
            check_lr_is_used(recipe, configs[0])
        named = None if storage else f"--out {out}"  # how messages name the storage
        existed = storage is None and (Path(out) / "study.db").is_file()
        with storage_errors(url, named):  # a full disk or a damaged study.db: one line
            optuna_storage = open_storage(url, heartbeat, named)
            if existed:
                _refuse_another_study(optuna_storage, name, out)
            the_study = open_study(optuna_storage, name, identity, configs, distributions_for(configs, space),
                                   shared=storage is not None)
            for attr, value in (meta or {}).items():
                if the_study.user_attrs.get(attr) != value:
                    the_study.set_user_attr(attr, value)
            # what optuna-dashboard calls the objective: the main metric on val (else where runs are scored)
            metric = objective_name(metric_column(recipe.task.main_metric),
                                    "val" if data.val is not None else scored_split(data))
            if the_study.metric_names != [metric]:
                the_study.set_metric_names([metric])
            total = tpe["trials"] * len(tpe["seeds"]) if tpe else len(configs)
            left = total - len(finished_keys(the_study) & ({c.key() for c in configs} if configs else
                                                            finished_keys(the_study)))
        jobs = max(1, min(asked, left)) if left else 1
        if jobs > 1 and spec is None:
            print("sequential: --jobs needs a recipe spec (built-in name or file.py:NAME) that workers can load",
                  file=sys.stderr)
            jobs = 1
        stacked = _vectorize(vectorize, recipe, configs, device)
        job = Job(storage=url, study=name, spec=spec, device=str(device), heartbeat=heartbeat, prune=prune,
                  vectorize=stacked, group=max(1, math.ceil(_largest_lr_group(configs) / jobs)), tpe=tpe,
                  data_settings=_data_settings(), named=named, fail_fast=fail_fast)
        if kind == "lr" and configs and in_workers:
            if jobs > 1:  # each worker checks before its first trial (the check imports torch._dynamo: 1-2 s)
                job.lr_check = asdict(configs[0])
            elif left:
                check_lr_is_used(recipe, configs[0])
        joined = storage is not None and getattr(the_study, "joined", False)
        if progress and not left:  # nothing to run: no "running 0 trials", no empty bar
            print(f"all {total} trials already finished in study {name!r} at {redact(url)}", file=sys.stderr, flush=True)
        elif progress:
            if left < total and not joined:
                print(f"resuming: {total - left} of {total} trials already finished in study {name!r} at "
                      f"{redact(url)}", file=sys.stderr, flush=True)
            print(_describe(left, jobs, stacked, url, name, joined), file=sys.stderr, flush=True)
        with StudyProgress(the_study, total, enabled=progress and bool(left)):
            if left and jobs > 1:
                with _shipped(job, given, data, out):
                    pool.run(job, jobs, max(1, runtime.thread_cap() // jobs))
            elif left:
                pool.close()
                run_trials(job, recipe=recipe, data=data, storage=optuna_storage)
    results, failures = finished_results(the_study), failed_runs(the_study)
    if configs:
        by_key, done = {r["key"]: r for r in results}, finished_keys(the_study)
        failures = [f for f in failures if f["key"] in {c.key() for c in configs}]
        failed = {f["key"] for f in failures}
        missing = [c for c in configs if c.key() not in by_key and c.key() not in done and c.key() not in failed]
        if missing:
            raise TrialError(f"{len(missing)} of {len(configs)} trials did not finish (first: "
                             f"{describe(missing[0])}); run the same command again to retry them")
        results = [by_key[c.key()] for c in configs if c.key() in by_key]
    keys = {c.key() for c in configs} if configs else None
    results = Results(results, [p for p in pruned_runs(the_study) if keys is None or p["key"] in keys])
    check_swept_value_used(recipe, results, kind or "")
    # the points TPE proposed (a point pruned in every seed has no result, and was not a repeat)
    points = proposed_points(the_study) if tpe else 0
    if tpe and points < tpe["trials"]:
        print(f"tpe found {points} of {tpe['trials']} distinct configurations: it kept proposing ones already run "
              "(it has converged, or the space is narrow)", file=sys.stderr)
    note = pruned_early(the_study)
    if note:
        print(note, file=sys.stderr)
    if failures:
        line = _failures_line(failures, results)
        if not results and all(f["recipe_error"] for f in failures):  # the recipe is at fault: exit 2
            raise StudyFailures(line, results, failures) from RecipeError(line)
        raise StudyFailures(line, results, failures)
    return results


def _failures_line(failures: list, results: list) -> str:
    first = f"{run_label(failures[0]['config'])}: {failures[0]['error']}"
    if len(failures) == 1 and not results:
        return first
    return (f"{len(failures)} of {len(failures) + len(results)} runs raised (first: {first}); "
            f"{'the others finished' if results else 'none finished'}; run the same command again to retry them")


def _refuse_another_study(storage, name: str, out) -> None:
    """An --out folder holds one study: its table and figures are that study's, and another
    command's outputs there would overwrite them (its trials stay, but its report is gone)."""
    import optuna

    others = [n for n in optuna.get_all_study_names(storage) if n != name]
    if others:
        raise RecipeError(f"--out {out} holds study {others[0]!r}, not {name!r}: its table and figures would be "
                          f"overwritten; use another --out (harness report --out {out} reports it)")


@contextmanager
def _shipped(job: Job, given: bool, data, out):
    """Data the caller passed in (not the recipe's own) goes to the workers as a tensor file."""
    from harness.recipe import is_tensor_split

    if not given or not all(s is None or is_tensor_split(s) for s in (data.train, data.val, data.test)):
        yield
        return
    import torch
    with tempfile.TemporaryDirectory(prefix="harness-data-") as folder:
        job.data_file = str(Path(folder) / "data.pt")
        torch.save({"train": data.train, "val": data.val, "test": data.test}, job.data_file)
        try:
            yield
        finally:
            job.data_file = None


def describe(config: Config) -> str:
    return run_label(asdict(config))


def _describe(left: int, jobs: int, stacked: bool, url: str, name: str, joined: bool = False) -> str:
    how = f"in {jobs} worker processes" if jobs > 1 else "in this process"
    how += ", lr-only groups stacked" if stacked else ""
    trials = f"{left} trial{'s' if left != 1 else ''}"
    if joined:  # a shared study another process made: the trials left are shared with its other workers
        return f"joining study {name!r} at {redact(url)}: {trials} not finished, run here {how} and by its other workers"
    return f"running {trials} {how}; study {name!r} at {redact(url)}"


def _settings_of(configs: list) -> dict:
    """Settings that every config of an API call shares (more configs may join the study later)."""
    return {"epochs": sorted({c.epochs for c in configs}), "options": sorted({repr(c.options) for c in configs})}


def _data_settings() -> list:
    from harness import data as data_module
    return [data_module.settings.root, data_module.settings.download]


def _largest_lr_group(configs: list) -> int:
    from collections import Counter
    from dataclasses import replace
    return max(Counter(replace(c, lr=0.0) for c in configs).values(), default=1)


def _vectorize(mode, recipe, configs: list, device) -> bool:
    """Whether claims may stack configs that differ only in lr (and why not, on stderr)."""
    mode = {True: "on", False: "off", None: "off"}.get(mode, mode)
    if mode not in VECTORIZE_MODES:
        raise RecipeError(f"--vectorize {mode!r}: use auto, on or off")
    if mode == "off" or _largest_lr_group(configs) < 2:
        return False
    if mode == "auto" and device.type != "cuda":
        return False  # stacked copies were slower than separate runs on CPU (their weights outgrow the cache)
    from harness.study.stacked import why_not
    group = [c for c in configs if asdict(c) | {"lr": 0} == asdict(configs[0]) | {"lr": 0}]
    reason = why_not(recipe, group)
    if reason:
        print(f"not vectorized: {reason}", file=sys.stderr)
    return not reason


def load_study_results(storage: str, name: Optional[str]):
    """(study, results) of an existing study, for `harness report`."""
    from harness.study.storage import load_existing
    study = load_existing(storage, name)
    return study, Results(finished_results(study), pruned_runs(study))


__all__ = ["run_study", "load_study_results", "describe", "Config", "open_storage"]
