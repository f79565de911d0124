"""Run a Lightning module through the harness, without a Trainer and without glue code.

    pip install -e .[lightning]
    from harness import Recipe
    RECIPE = Recipe.from_lightning(LitClassifier, data=load_data, task=tasks.Classification(10))

`from_lightning(module_factory, data, **fields)` builds a `Recipe` whose training step is the
module's own `training_step(batch, batch_idx)` (the batch is `(inputs, targets)`, as a
DataLoader of pairs yields it) followed by zero_grad, backward and step, the order of
Lightning's automatic optimization. Its optimizer and scheduler come from the module's
`configure_optimizers`, in any single-optimizer form Lightning accepts: an optimizer, a
one-element list or tuple, `([optimizer], [scheduler])`, or the dict form with an
`lr_scheduler` (a scheduler or a dict with "interval" and "frequency"), which is stepped as the
Trainer would: after every `frequency` optimizer steps, or every `frequency` epochs.

`data` is the usual data factory, or a LightningDataModule (class or instance): its
train/val/test dataloaders become the splits (after prepare_data and setup).

The recipe's lr is the lr the module sets (its optimizer's `defaults["lr"]`) unless `lr=` is
given. A harness lr (an lr sweep, `--lr`) overrides it: every param group's lr, and the
schedulers' base lrs, are scaled by `lr / defaults["lr"]`, so a group with its own lr keeps its
ratio to the others. Several optimizers, manual optimization and ReduceLROnPlateau are refused
with one line. `self.log` / `self.log_dict` calls do nothing here (there is no Trainer to log to).
"""
from __future__ import annotations

import functools
import math
import warnings
import weakref
from typing import Callable

import torch

from harness.recipe import Data, Recipe, RecipeError

_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # lr-valued entries torch schedulers keep in param groups
_SCHEDULES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> its LRSchedulerConfigs


def _lightning_base(obj, name: str):
    """The Lightning base class `name` that `obj` (an instance or a class) derives from, or None;
    either package counts (`lightning.pytorch` or the standalone `pytorch_lightning`)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return next((c for c in cls.__mro__ if c.__name__ == name
                 and c.__module__.split(".")[0] in ("lightning", "pytorch_lightning")), None)


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            raise RecipeError("Recipe.from_lightning needs Lightning: pip install -e .[lightning] "
                              "(or pip install lightning)") from None
    return pl


def from_lightning(module_factory: Callable, data: Callable, **fields) -> Recipe:
    """A Recipe that trains `module_factory()` with its own training_step and configure_optimizers.

    `fields` are any other Recipe fields (task, num_classes, batch_size, epochs, name, ...);
    `optimizer`, `scheduler` and `train_step` come from the module and cannot be given.
    """
    given = sorted({"optimizer", "scheduler", "train_step"} & fields.keys())
    if given:
        raise RecipeError(f"Recipe.from_lightning: {', '.join(given)} come from the module's configure_optimizers "
                          "and training_step; drop them, or use Recipe(...) with your own")
    if not callable(module_factory):
        raise RecipeError("Recipe.from_lightning: pass a function (or class) that returns a fresh LightningModule, "
                          f"got {type(module_factory).__name__}")
    _lightning()  # a one-line error naming the extra when Lightning is not installed
    if "lr" not in fields:
        fields["lr"] = _module_lr(module_factory)
    fields.setdefault("name", getattr(module_factory, "__name__", "lightning"))
    if _lightning_base(data, "LightningDataModule") is not None:
        data = functools.partial(datamodule_data, data)
    # the scheduler takes epochs=, so Recipe.make_scheduler passes them (interval "epoch" needs steps per epoch)
    return Recipe(model=module_factory, data=data, optimizer=configure_optimizer,
                  scheduler=lightning_scheduler, train_step=lightning_step, **fields)


def datamodule_data(datamodule) -> Data:
    """Data from a LightningDataModule (or its class): prepare_data, setup, then its dataloaders as the
    splits (val and test only when the module defines them)."""
    dm = datamodule() if isinstance(datamodule, type) else datamodule
    dm.prepare_data()
    dm.setup("fit")
    base = _lightning_base(dm, "LightningDataModule")
    defined = lambda hook: getattr(type(dm), hook) is not getattr(base, hook)  # noqa: E731
    val = dm.val_dataloader() if defined("val_dataloader") else None
    test = None
    if defined("test_dataloader"):
        dm.setup("test")
        test = dm.test_dataloader()
    return Data(train=dm.train_dataloader(), val=val, test=test)


def _module_lr(module_factory) -> float:
    """The lr the module's configure_optimizers sets (one probe module, thrown away)."""
    try:
        module = module_factory()
    except Exception as e:
        raise RecipeError(f"Recipe.from_lightning: the module factory raised {type(e).__name__}: {e}") from e
    if _lightning_base(module, "LightningModule") is None:
        raise RecipeError(f"Recipe.from_lightning: the factory returned {type(module).__name__}, "
                          "not a LightningModule; for a plain nn.Module use Recipe(model=..., ...)")
    optimizer, _ = _configure(module)
    return float(optimizer.defaults.get("lr", optimizer.param_groups[0]["lr"]))


def _configure(module):
    """Call configure_optimizers and parse it as Lightning does: (optimizer, [LRSchedulerConfig])."""
    try:
        from lightning.pytorch.core.optimizer import _configure_optimizers, _configure_schedulers_automatic_opt
        from lightning.pytorch.utilities.exceptions import MisconfigurationException
    except ImportError:  # only the standalone package is installed
        from pytorch_lightning.core.optimizer import _configure_optimizers, _configure_schedulers_automatic_opt
        from pytorch_lightning.utilities.exceptions import MisconfigurationException

    name = type(module).__name__
    if not module.automatic_optimization:
        raise RecipeError(f"Recipe.from_lightning: {name} uses manual optimization (automatic_optimization = False), "
                          "which is not supported; write a Recipe with your own train_step instead")
    try:
        conf = module.configure_optimizers()
    except Exception as e:
        hint = ("; it runs without a Trainer here, so self.trainer (e.g. estimated_stepping_batches) is not "
                "available: give the scheduler its step count directly") if "Trainer" in str(e) else ""
        raise RecipeError(f"Recipe.from_lightning: {name}.configure_optimizers raised {type(e).__name__}: "
                          f"{' '.join(str(e).split())}{hint}") from e
    if conf is None:
        raise RecipeError(f"Recipe.from_lightning: {name}.configure_optimizers returned None; return an optimizer")
    try:
        optimizers, schedulers, monitor = _configure_optimizers(conf)
        configs = _configure_schedulers_automatic_opt(schedulers, monitor)
    except MisconfigurationException as e:
        raise RecipeError(f"Recipe.from_lightning: {name}.configure_optimizers: {' '.join(str(e).split())}") from e
    if len(optimizers) != 1:
        raise RecipeError(f"Recipe.from_lightning: {name}.configure_optimizers returns {len(optimizers)} optimizers; "
                          "several optimizers are not supported, return one")
    if any(c.reduce_on_plateau for c in configs):
        raise RecipeError(f"Recipe.from_lightning: {name} uses ReduceLROnPlateau, which needs the Trainer's logged "
                          "metrics and is not supported; use a schedule that does not monitor a metric")
    return optimizers[0], configs


def configure_optimizer(model, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer: the module's own, with its lr scaled to `lr` (schedulers included)."""
    optimizer, configs = _configure(model)
    base = optimizer.defaults.get("lr", optimizer.param_groups[0]["lr"])
    if lr != base:
        scale = lr / base
        for group in optimizer.param_groups:
            for key in _LR_KEYS:
                if isinstance(group.get(key), (int, float)):
                    group[key] *= scale
        for config in configs:
            sched = config.scheduler
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [b * scale for b in sched.base_lrs]
            if hasattr(sched, "_last_lr"):
                sched._last_lr = [g["lr"] for g in optimizer.param_groups]
    _SCHEDULES[optimizer] = configs
    return optimizer


class LightningSchedule:
    """Steps the module's schedulers as the Trainer would, given one call per optimizer step.

    interval "step": every `frequency` optimizer steps; interval "epoch": at the end of every
    `frequency`-th epoch, an epoch being `steps_per_epoch` optimizer steps.
    """

    def __init__(self, optimizer, configs, steps_per_epoch: int):
        self.optimizer, self.configs = optimizer, configs
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.steps = 0

    def step(self):
        self.steps += 1
        epoch_ended = self.steps % self.steps_per_epoch == 0
        for c in self.configs:
            if c.interval == "step" and self.steps % c.frequency == 0:
                c.scheduler.step()
            elif c.interval == "epoch" and epoch_ended and (self.steps // self.steps_per_epoch) % c.frequency == 0:
                c.scheduler.step()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"steps": self.steps, "schedulers": [c.scheduler.state_dict() for c in self.configs]}

    def load_state_dict(self, state):
        self.steps = state["steps"]
        for c, s in zip(self.configs, state["schedulers"]):
            c.scheduler.load_state_dict(s)


def lightning_scheduler(optimizer, total_steps: int, epochs: int = None) -> LightningSchedule:
    """The recipe's scheduler: the ones configure_optimizers attached to `optimizer`.

    `total_steps` optimizer steps over `epochs` epochs (None: one epoch).
    """
    configs = _SCHEDULES.get(optimizer, [])
    steps_per_epoch = math.ceil(total_steps / epochs) if epochs else total_steps
    return LightningSchedule(optimizer, configs, steps_per_epoch)


def lightning_step(model, inputs, targets, optimizer, loss_fn=None):
    """Lightning's automatic optimization: training_step, zero_grad, backward, step."""
    batch_idx = getattr(model, "_harness_batch_idx", 0)
    with warnings.catch_warnings():  # self.log without a Trainer warns on every call; here it is a no-op
        warnings.filterwarnings("ignore", message=r".*self\.log.*")
        out = model.training_step((inputs, targets), batch_idx)
    model._harness_batch_idx = batch_idx + 1
    loss = out["loss"] if isinstance(out, dict) else out
    if loss is None:  # Lightning skips the step when training_step returns None
        return torch.zeros((), device=next(model.parameters()).device)
    if not isinstance(loss, torch.Tensor):
        raise RecipeError(f"{type(model).__name__}.training_step returned {type(out).__name__}; "
                          "return the loss tensor (or a dict with a 'loss' key)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
