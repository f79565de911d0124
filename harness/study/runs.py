"""One configuration of a study, how to run it, and how to run many.

    configs = [Config(lr=lr, batch_size=128, epochs=15) for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    execute("digits28", configs, on_result=lambda cfg, row: print(row["Accuracy"]))

`run_config` trains one configuration and returns the notebook's table row plus the run's
history; `execute` runs a list of them and hands each result to `on_result` as it finishes
(so a caller can write it to disk at once and resume later). `execute(..., jobs=2)` runs
them in worker processes with capped threads (harness.study.workers); `vectorize="on"` trains
an lr-only sweep as one stacked model (harness.study.stacked). It prints the choice made:

    running 5 configs: 2 worker processes x 1 thread, vectorize off
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Optional

from harness.data import split_len
from harness.fit import evaluate, resolve_device, train
from harness.recipe import Data, Recipe, RecipeError, load_recipe
from harness.schedules import parse_optimizer, parse_scheduler


@dataclass(frozen=True)
class Config:
    """One training configuration. `options` holds extra fit settings as sorted (key, value) pairs:
    optimizer ('sgd'|'adam'), momentum, weight_decay, scheduler ('step:20:0.1'...), patience, subset."""
    lr: float
    batch_size: int
    epochs: int
    seed: int = 0
    options: tuple = ()

    def key(self) -> str:
        """A stable id for resuming: the same config always gets the same key."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def fit_overrides(self) -> dict:
        opts = dict(self.options)
        out = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        if "optimizer" in opts:
            out["optimizer"] = parse_optimizer(opts["optimizer"], opts.get("momentum", 0.0),
                                               opts.get("weight_decay", 0.0))
        if opts.get("scheduler"):
            out["scheduler"] = parse_scheduler(opts["scheduler"])
        if opts.get("patience") is not None:
            out["patience"] = int(opts["patience"])
        if opts.get("subset") is not None:
            out["subset"] = opts["subset"]
        return out


def run_config(recipe: Recipe, data: Data, config: Config, device="cpu") -> dict:
    """Train one configuration; return the table row (notebook column names) and its history."""
    run = train(recipe, data=data, seed=config.seed, device=device, **config.fit_overrides())
    split = data.test if data.test is not None else data.val
    return make_result(config, run.history, evaluate(run.model, split, device=device), data)


def make_result(config: Config, h, metrics: dict, data: Data) -> dict:
    """The study's record of one run: its key, config, table row and per-epoch history."""
    row = {
        "learning_rate": config.lr, "batch_size": config.batch_size, "seed": config.seed,
        "Accuracy": metrics["accuracy"], "Precision_macro": metrics["precision_macro"],
        "Recall_macro": metrics["recall_macro"], "F1_macro": metrics["f1_macro"],
        "Train_time_s": h.train_seconds, "Infer_time_s": metrics["infer_seconds"],
        "steps": h.total_steps, "steps_per_epoch": h.steps[0] if h.steps else 0,
        "epochs_run": h.epochs_run, "diverged": h.diverged,
        "train_samples": split_len(data.train),
    }
    return {"key": config.key(), "config": asdict(config), "row": row, "history": h.to_dict()}


VECTORIZE_MODES = ("auto", "on", "off")


@dataclass
class Plan:
    """How `execute` will run a list of configs: `tasks` are single configs or lr-only groups."""
    tasks: list
    jobs: int
    threads: int                 # torch threads per worker (0: fit chooses, see harness.runtime)
    vectorized: bool
    notes: list

    def describe(self, n_configs: int) -> str:
        how = (f"{self.jobs} worker processes x {self.threads} thread{'s' * (self.threads != 1)}"
               if self.jobs > 1 else "sequentially in this process")
        stacks = sum(isinstance(t, list) for t in self.tasks)
        vec = f"vectorize on ({stacks} stacked model{'s' * (stacks != 1)})" if self.vectorized else "vectorize off"
        notes = "".join(f"; {n}" for n in self.notes)
        return f"running {n_configs} configs: {how}, {vec}{notes}"


def plan(spec: Optional[str], recipe: Recipe, data: Optional[Data], configs: list, jobs: int = 1,
         vectorize: str = "off", device="cpu") -> Plan:
    """Decide processes, threads and vectorisation for `configs`; every fallback gets a note."""
    from harness import runtime
    from harness.data import is_tensor_split
    from harness.study.stacked import why_not

    vectorize = {True: "on", False: "off", None: "off"}.get(vectorize, vectorize)
    if vectorize not in VECTORIZE_MODES:
        raise RecipeError(f"--vectorize {vectorize!r}: use auto, on or off")
    if not isinstance(jobs, int) or isinstance(jobs, bool):
        raise RecipeError(f"--jobs {jobs!r}: must be an integer (0 = one per core)")
    notes, device = [], resolve_device(device)
    tasks, vectorized = list(configs), False
    if vectorize != "off" and len(configs) > 1:
        tasks = []
        for group in _lr_groups(configs):  # configs equal but for lr can share one stacked model
            reason = why_not(recipe, group) if len(group) > 1 else ""
            if not reason and vectorize == "auto" and device.type != "cuda" and len(group) > 1:
                reason = ("auto on CPU: stacked copies were slower than separate runs here "
                          "(their weights outgrow the cache); worker processes are the CPU speed-up")
            if len(group) > 1 and not reason:
                tasks.append(group)
            else:
                tasks.extend(group)
                if reason and f"not vectorized: {reason}" not in notes:
                    notes.append(f"not vectorized: {reason}")
        vectorized = any(isinstance(t, list) for t in tasks)
        if not vectorized and not notes:
            notes.append("not vectorized: no two configs differ only in lr")
    jobs = runtime.cores() if jobs <= 0 else jobs
    if jobs > 1 and not spec:
        notes.append("sequential: --jobs needs a recipe spec (built-in name or file.py:NAME) that workers can load")
        jobs = 1
    shipped_ok = data is None or all(s is None or is_tensor_split(s) for s in (data.train, data.val, data.test))
    if jobs > 1 and not shipped_ok:
        notes.append("sequential: the data given is not held as tensors, so workers cannot share it")
        jobs = 1
    if vectorized and 1 < jobs and len(tasks) < jobs:  # split stacked models so every worker gets a share
        parts = -(-jobs // len(tasks))
        tasks = [t[i::parts] if isinstance(t, list) else t for t in tasks
                 for i in range(parts if isinstance(t, list) else 1)]
        tasks = [t for t in tasks if t]
    jobs = min(jobs, len(tasks)) if tasks else 1
    threads = max(1, runtime.thread_cap() // jobs) if jobs > 1 else 0
    return Plan(tasks=tasks, jobs=jobs, threads=threads, vectorized=vectorized, notes=notes)


def _lr_groups(configs: list) -> list:
    """Configs grouped by everything but lr, in first-seen order."""
    groups: dict = {}
    for config in configs:
        groups.setdefault(replace(config, lr=0.0), []).append(config)
    return list(groups.values())


def execute(spec: Optional[str], configs: Iterable[Config], on_result: Callable[[Config, dict], None],
            device="cpu", recipe: Optional[Recipe] = None, data: Optional[Data] = None,
            jobs: int = 1, vectorize: str = "off") -> Plan:
    """Run `configs`, calling `on_result(config, result)` as each finishes (in any order when jobs > 1).

    jobs: worker processes (0: one per core), each limited to cores // jobs torch threads;
    needs `spec` so workers can load the recipe. vectorize: 'on' trains configs that differ
    only in lr as one stacked model (harness.study.stacked), 'auto' does so on CUDA only, 'off'
    never. The choice, and the reason for any fallback, is printed to stderr and returned.
    """
    configs = list(configs)
    recipe = recipe or load_recipe(spec)
    device = resolve_device(device)
    chosen = plan(spec, recipe, data, configs, jobs, vectorize, device)
    print(chosen.describe(len(configs)), file=sys.stderr, flush=True)
    if chosen.jobs > 1:
        from harness.study.workers import run_parallel
        for task, result in run_parallel(spec, chosen.tasks, jobs=chosen.jobs, threads=chosen.threads,
                                         device=str(device), data=data):
            _deliver(task, result, on_result)
        return chosen
    data = data or recipe.load_data()
    for task in chosen.tasks:
        if isinstance(task, list):
            from harness.study.stacked import run_configs
            _deliver(task, run_configs(recipe, data, task, device), on_result)
        else:
            on_result(task, run_config(recipe, data, task, device))
    return chosen


def _deliver(task, result, on_result) -> None:
    if isinstance(task, list):
        for config, one in zip(task, result):
            on_result(config, one)
    else:
        on_result(task, result)
