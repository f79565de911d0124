"""One configuration of a study, how to run it, and how to run many.

    configs = [Config(lr=lr, batch_size=128, epochs=15) for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    execute("digits28", configs, on_result=lambda cfg, row: print(row["Accuracy"]))

`run_config` trains one configuration and returns the notebook's table row plus the run's
history; `execute` runs a list of them and hands each result to `on_result` as it finishes
(so a caller can write it to disk at once and resume later).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

from harness.data import split_len
from harness.fit import evaluate, resolve_device, train
from harness.recipe import Data, Recipe, load_recipe
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
    metrics = evaluate(run.model, split, device=device)
    h = run.history
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


def execute(spec: Optional[str], configs: Iterable[Config], on_result: Callable[[Config, dict], None],
            device="cpu", recipe: Optional[Recipe] = None, data: Optional[Data] = None) -> None:
    """Run `configs` one after another, calling `on_result(config, result)` as each finishes."""
    recipe = recipe or load_recipe(spec)
    data = data or recipe.load_data()
    device = resolve_device(device)
    for config in configs:
        on_result(config, run_config(recipe, data, config, device))
