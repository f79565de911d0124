"""Running one configuration: train it, evaluate it, and return the study's record of it.

    from harness.study.one_run import run_config
    result = run_config(recipe, data, Config(lr=0.1, batch_size=128, epochs=15))
    result["row"]["Accuracy"], result["history"]["val_loss"]

`on_epoch(epoch, history)` is called after every epoch (a pruner reads the val loss there and
may raise optuna.TrialPruned). `check_lr_is_used` probes the optimizer factory before a sweep:
a factory that ignores its lr argument would give N identical runs labelled with N lrs.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable, Optional

from harness.fit import evaluate, train
from harness.batching import split_len
from harness.recipe import Data, Recipe, RecipeError
from harness.study.configs import Config


def run_config(recipe: Recipe, data: Data, config: Config, device="cpu",
               on_epoch: Optional[Callable] = None) -> dict:
    """Train one configuration; return the table row (notebook column names) and its history."""
    extra = {"on_epoch": on_epoch} if on_epoch is not None else {}
    run = train(recipe, data=data, seed=config.seed, device=device, **config.fit_overrides(recipe.optimizer), **extra)
    split = getattr(data, scored_split(data))  # test, else val, else train (the row says which)
    metrics = evaluate(run.model, split, device=device, task=recipe.task, forward=recipe.forward)
    return make_result(config, run.history, metrics, data, main=recipe.task.main_metric)


def metric_column(key: str) -> str:
    """The table's name for a task metric: the notebook's for classification (Accuracy,
    Precision_macro, ...), the metric's own name capitalised for the others (R2, Mse, Mean_iou)."""
    return key[:1].upper() + key[1:]


def scored_split(data: Data) -> str:
    """Where a run's table metrics are measured: the test split, else val, else the training split."""
    return "test" if data.test is not None else "val" if data.val is not None else "train"


def make_result(config: Config, h, metrics: dict, data: Data, main: str = "accuracy") -> dict:
    """The study's record of one run: its key, config, table row and per-epoch history.

    The row holds the task's metrics (`metric_column` names) on the split named by `Scored_on`
    (test; val or train when the recipe has no test split) and `Score`, the task's main metric
    there (higher is better: accuracy, micro F1, R², ...), which tables sort by. `Val_score` is the
    main metric on the val split at the epoch the run kept: what Optuna maximises when there is
    a val split, so that a sampler that adapts (TPE) never selects on the test split."""
    task_metrics = {metric_column(k): v for k, v in metrics.items() if k != "infer_seconds"}
    scored_on = scored_split(data)
    val = {}
    if data.val is not None and h.val_acc:
        kept = h.best_epoch if dict(config.options).get("patience") is not None and h.best_epoch else len(h.val_acc)
        val = {"Val_score": h.val_acc[kept - 1]}  # with --patience fit restores the best epoch's weights
    row = {
        "learning_rate": config.lr, "batch_size": config.batch_size, "seed": config.seed,
        **task_metrics, "Score": metrics.get(main, math.nan), "Score_metric": metric_column(main),
        "Scored_on": scored_on, **val,
        "Train_time_s": h.train_seconds, "Infer_time_s": metrics["infer_seconds"],
        "steps": h.total_steps, "steps_per_epoch": h.steps[0] if h.steps else 0,
        "epochs_run": h.epochs_run, "diverged": h.diverged,
        "train_samples": split_len(data.train),
    }
    return {"key": config.key(), "config": asdict(config), "row": row, "history": h.to_dict()}


def optimizer_factory(recipe: Recipe, config: Config):
    return config.fit_overrides(recipe.optimizer).get("optimizer", recipe.optimizer)


def factory_name(factory) -> str:
    name = getattr(factory, "__qualname__", None) or type(factory).__name__
    module = getattr(factory, "__module__", None)
    return f"{module}.{name}" if module and not module.startswith("harness.") else name


def check_lr_is_used(recipe: Recipe, config: Config) -> None:
    """Build the optimizer with two lrs; raise a one-line RecipeError if it does not take them."""
    import torch

    factory = optimizer_factory(recipe, config)
    used = []
    for lr in (0.0123, 0.0456):
        try:
            optimizer = factory([torch.nn.Parameter(torch.zeros(1))], lr)
            used.append(optimizer.param_groups[0]["lr"])
        except Exception:  # a factory that needs the model (or raises here) is checked after the runs
            return
    if not all(math.isclose(u, lr, rel_tol=1e-6) for u, lr in zip(used, (0.0123, 0.0456))):
        raise RecipeError(f"the optimizer factory {factory_name(factory)} ignores its lr argument (asked for "
                          f"0.0123 and 0.0456, it used {used[0]:g} and {used[1]:g}), so an lr sweep would sweep "
                          "nothing; pass lr to the optimizer: lambda params, lr: torch.optim.SGD(params, lr=lr)")


def check_swept_value_used(recipe: Recipe, results: list, kind: str) -> None:
    """After a sweep: runs asked for different lrs (batch sizes) must have used different ones.

    Reads History.lr (the lr the optimizer held in the first epoch) and steps per epoch."""
    if kind not in ("lr", "batch-size") or len(results) < 2:
        return
    field_, asked = ("lr", "lr") if kind == "lr" else ("steps", "batch_size")
    seen: dict = {}
    for r in results:
        values = r["history"].get(field_) or []
        if values:
            seen.setdefault(values[0], set()).add(r["config"][asked])
    if kind == "batch-size":  # sizes that give the same steps per epoch anyway (1024 and 2048 of 1258) are fine
        n = results[0]["row"].get("train_samples", 0)
        if dict(results[0]["config"].get("options") or ()).get("subset") is not None or not n:
            return
        seen = {k: v for k, v in seen.items() if len({math.ceil(n / b) for b in v}) > 1}
    clash = next((a for a in seen.values() if len(a) > 1), None)
    if clash is None:
        return
    if kind == "lr":
        factory = optimizer_factory(recipe, Config.from_dict(results[0]["config"]))
        raise RecipeError(f"the optimizer factory {factory_name(factory)} ignores its lr argument: runs asked "
                          f"for lr {', '.join(f'{v:g}' for v in sorted(clash))} all trained with the same lr, "
                          "so this sweep swept nothing; pass lr to the optimizer")
    raise RecipeError(f"the recipe ignores the batch size: runs asked for batch sizes "
                      f"{', '.join(str(v) for v in sorted(clash))} took the same number of steps per epoch; "
                      "build batches from the batch_size the harness passes, not a fixed DataLoader")
