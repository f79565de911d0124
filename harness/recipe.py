"""The recipe contract (v2): what a user hands the harness, and the helpers every consumer uses.

    from harness import Recipe, Data, tasks
    RECIPE = Recipe(model=build_model, data=load_data, task=tasks.Classification(10))  # or num_classes=10

    model = recipe.build_model()                     # a fresh nn.Module
    data = recipe.load_data()                        # harness.Data, validated (one line per problem)
    opt = recipe.make_optimizer(model)               # (params, lr) or (model, lr) factories
    sched = recipe.make_scheduler(opt, total_steps)  # None without a scheduler; stepped per optimizer step
    outputs = recipe.forward(model, inputs)          # by the inputs' structure; outputs unwrapped
    loss, outputs = recipe.step(model, inputs, targets, opt, sched)   # one training step

Finding a recipe from a `--recipe` spec is `harness.recipes.load_recipe`. This module imports
only the leaf modules harness.errors, harness.tasks, harness.batching and harness.schedules
(none of which imports anything else of ours), so the contract sits at the bottom of the imports.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch

from harness import batching, parse, tasks
from harness.batching import is_pair, split_len
from harness.checks import registry
from harness.errors import HarnessWarning, RecipeError
from harness.schedules import plain_sgd

__all__ = ["Data", "Recipe", "RecipeError", "HarnessWarning", "Forward", "TaskLoss", "call_model", "unwrap_outputs",
           "default_step", "check_hparams", "check_data", "check_inputs_match_model", "warn_batch_size",
           "is_tensor_split", "split_len", "plain_sgd"]


@dataclass(frozen=True)
class Data:
    """Three splits; each is an `(inputs, targets)` pair (tensors, numpy arrays, or nested
    tuples/lists/dicts of them), a `torch.utils.data.Dataset` or a `DataLoader`. `val` and `test`
    may be None."""
    train: Any
    val: Any = None
    test: Any = None
    class_names: Optional[tuple] = None


_BUILT = weakref.WeakValueDictionary()  # id -> every model build_model returned that is still alive (by id:
                                        # a module may define __eq__ or be unhashable)

TrainStep = Callable[[torch.nn.Module, Any, Any, torch.optim.Optimizer, Callable], Any]


# --- calling a model: inputs by structure, outputs unwrapped ----------------------------------

def call_model(model, inputs):
    """model(x) for a tensor, model(*x) for a tuple or list, model(**x) for a dict."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def unwrap_outputs(outputs):
    """One tensor from what a model returned: a tensor, else `.logits`, else `["logits"]` (or
    torchvision segmentation's `["out"]`), else a tuple's first element; anything else is a
    one-line RecipeError naming `forward=`."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    if isinstance(outputs, dict) and isinstance(outputs.get("out"), torch.Tensor):
        return outputs["out"]  # torchvision's segmentation models (FCN, DeepLabV3, LRASPP): {"out", "aux"}
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    what = f"a dict with keys {sorted(map(str, outputs))}" if isinstance(outputs, dict) else f"a {type(outputs).__name__}"
    raise RecipeError(f"the model returned {what}, not a tensor (nor .logits, ['logits'], ['out'] or a tuple starting "
                      "with a tensor); give the recipe forward=lambda model, inputs: <the logits tensor>")


class Forward:
    """`recipe.forward`: (model, inputs) -> one outputs tensor, through the user's `forward=` or
    `call_model`, unwrapped. `.fn` is the user's function (None for the default)."""

    def __init__(self, fn: Optional[Callable] = None):
        self.fn = fn.fn if isinstance(fn, Forward) else fn
        if self.fn is not None and not callable(self.fn):
            raise RecipeError(f"Recipe.forward must be a function (model, inputs) -> outputs, got {type(fn).__name__}")

    def __call__(self, model, inputs):
        if self.fn is None and isinstance(inputs, torch.Tensor):  # the hot path: one tensor in, one out
            outputs = model(inputs)
            return outputs if isinstance(outputs, torch.Tensor) else unwrap_outputs(outputs)
        return unwrap_outputs(self.fn(model, inputs) if self.fn is not None else call_model(model, inputs))

    def __eq__(self, other):
        return isinstance(other, Forward) and other.fn == self.fn

    def __hash__(self):
        return hash(self.fn)

    def __repr__(self):
        return f"Forward({getattr(self.fn, '__qualname__', self.fn)!r})" if self.fn else "Forward(default)"


DEFAULT_FORWARD = Forward()


class TaskLoss:
    """`recipe.loss` when none was given: the task's default loss, as a value (equal for equal
    tasks, so a recipe equals its pickled copy)."""

    def __init__(self, task):
        self.task = task

    def __call__(self, outputs, targets):
        return self.task.loss(outputs, targets)

    def __eq__(self, other):
        return isinstance(other, TaskLoss) and other.task == self.task

    def __hash__(self):
        return hash(self.task)

    def __repr__(self):
        return f"{self.task!r}.loss"


def default_step(model, inputs, targets, optimizer, loss_fn, forward: Callable = DEFAULT_FORWARD):
    """The reference training step: zero_grad, forward, loss, backward, step. Returns (loss, outputs)."""
    optimizer.zero_grad(set_to_none=True)
    outputs = forward(model, inputs)
    loss = loss_fn(outputs, targets)
    loss.backward()
    optimizer.step()
    return loss, outputs


def step_result(out):
    """(loss, outputs or None) from what a train_step returned: a loss, or (loss, outputs)."""
    loss, outputs = (out[0], out[1]) if isinstance(out, (tuple, list)) and len(out) == 2 else (out, None)
    if loss is None:
        raise RecipeError("train_step returned None; it must return the loss tensor (or (loss, outputs))")
    if not isinstance(loss, torch.Tensor):
        try:
            loss = torch.tensor(float(loss))
        except (TypeError, ValueError) as e:
            raise RecipeError(f"train_step returned a {type(loss).__name__} as the loss; return the loss tensor "
                              "(or (loss, outputs))") from e
    return loss, (unwrap_outputs(outputs) if outputs is not None else None)


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _takes_model(factory) -> bool:
    """An optimizer factory whose first parameter is named `model` gets the model, not its parameters."""
    try:
        first = next(iter(inspect.signature(factory).parameters), None)
    except (TypeError, ValueError):
        return False
    return first == "model"


# --- the recipe ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Everything the checks, suites and sweeps need to train a user's model.

    model:      () -> nn.Module, a fresh, freshly initialised model per call.
    data:       () -> Data.
    task:       what the outputs mean (harness.tasks); `num_classes=C` is shorthand for
                `task=tasks.Classification(C)` and stays readable as `recipe.num_classes`
                (None for tasks without classes).
    loss:       (outputs, targets) -> scalar tensor; None: the task's default loss.
    optimizer:  (params, lr) -> Optimizer, or (model, lr) -> Optimizer when its first parameter
                is named `model`.
    scheduler:  optional (optimizer, total_steps) -> LR scheduler, stepped after every optimizer step.
    forward:    optional (model, inputs) -> outputs; default model(x) / model(*x) / model(**x) by the
                inputs' structure. Either way `recipe.forward(model, inputs)` unwraps the outputs.
    train_step: optional (model, inputs, targets, optimizer, loss) -> loss tensor (or
                (loss, outputs)), replacing the harness's own zero_grad/forward/backward/step.
    suppress:   names of checks that are known not to apply to this recipe.
    diverge_lr: the too-high lr of the recipe suite, when 1.0 (or 10x lr) is not too high for
                this model; `--harness-diverge-lr` overrides it.
    """
    model: Callable[[], torch.nn.Module]
    data: Callable[[], Data]
    num_classes: Optional[int] = None
    loss: Optional[Callable] = None
    optimizer: Callable = plain_sgd
    lr: float = 0.1
    batch_size: int = 128
    epochs: int = 15
    train_step: Optional[TrainStep] = None
    name: str = "recipe"
    suppress: tuple = ()
    input_range: Optional[tuple] = None  # (low, high) the inputs are expected to lie in
    diverge_lr: Optional[float] = None   # the lr `pytest -m recipe` expects to diverge (default 1.0 or 10x lr)
    task: Optional[tasks.Task] = None
    scheduler: Optional[Callable] = None
    forward: Optional[Callable] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if not callable(self.model):
            raise RecipeError(f"Recipe.model must be a function returning a fresh nn.Module, got {type(self.model).__name__}")
        if not callable(self.data):
            raise RecipeError(f"Recipe.data must be a function returning harness.Data, got {type(self.data).__name__}")
        set_("task", _resolve_task(self.task, self.num_classes))
        set_("num_classes", getattr(self.task, "num_classes", None))
        if self.loss is None:
            set_("loss", TaskLoss(self.task))
        elif not callable(self.loss):
            raise RecipeError(f"Recipe.loss must be a function (outputs, targets) -> loss, got {type(self.loss).__name__}; "
                              "or leave it out for the task's default")
        for field_name in ("optimizer", "scheduler", "train_step"):
            value = getattr(self, field_name)
            if value is not None and not callable(value):
                raise RecipeError(f"Recipe.{field_name} must be a function, got {type(value).__name__}"
                                  + _FACTORY_FIX.get((field_name, _built_kind(value)), ""))
        if problem := _scheduler_class_problem(self.scheduler):
            raise RecipeError(problem)
        set_("forward", Forward(self.forward))
        try:  # a string, a typo or a non-string is one line naming the closest registered check id
            set_("suppress", registry.validate_suppress(self.suppress, "Recipe.suppress"))
        except registry.UnknownCheck as e:
            raise RecipeError(str(e)) from None
        check_hparams(lr=self.lr, batch_size=self.batch_size, epochs=self.epochs, where="Recipe", required=True)
        if self.diverge_lr is not None:
            check_hparams(lr=self.diverge_lr, where="Recipe diverge_lr")

    @classmethod
    def from_lightning(cls, module_factory: Callable, data: Callable, **fields) -> "Recipe":
        """A recipe from a LightningModule factory: its training_step and configure_optimizers (harness.lightning).

        Imported by name when called: Lightning is an optional extra, and harness.lightning imports
        this module (a static import here would make the contract part of an import cycle)."""
        if isinstance(module_factory, torch.nn.Module):
            raise RecipeError(f"Recipe.from_lightning: got a {type(module_factory).__name__} instance; pass its class "
                              f"or a function that builds a fresh one, e.g. Recipe.from_lightning("
                              f"{type(module_factory).__name__}, data=...)")
        return importlib.import_module("harness.lightning").from_lightning(module_factory, data, **fields)

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed; a new task or num_classes brings its own default loss."""
        if ("task" in changes) != ("num_classes" in changes):
            changes.setdefault("task", None)
            changes.setdefault("num_classes", None)
            if "loss" not in changes and isinstance(self.loss, TaskLoss):
                changes["loss"] = None
        return replace(self, **changes)

    # --- helpers every consumer uses (never re-implement them) ----------------------------------

    def build_model(self) -> torch.nn.Module:
        """Call the model factory and make sure it gave a new module (never one it gave before)."""
        if isinstance(self.model, torch.nn.Module):  # callable, but calling it runs forward()
            kind = type(self.model).__name__
            raise RecipeError(f"recipe {self.name!r}: model= is an nn.Module instance ({kind}); pass its class or a "
                              "function that builds it, without calling it (model=Net, not model=Net()), so that "
                              "every run starts from a fresh model")
        try:
            model = self.model()
        except RecipeError:
            raise
        except Exception as e:
            raise RecipeError(f"recipe {self.name!r}: its model factory raised {type(e).__name__}: {e}") from e
        if not isinstance(model, torch.nn.Module):
            raise RecipeError(f"recipe {self.name!r}: model factory returned {type(model).__name__}, "
                              "expected a torch.nn.Module; return the model, not its class or output")
        if _BUILT.get(id(model)) is model:  # runs would share one model, each training on from the last's weights
            raise RecipeError(f"recipe {self.name!r}: its model factory returned the same {type(model).__name__} object "
                              "as an earlier call; it must build a new model each call (model=Net or "
                              "model=lambda: Net(...), not model=lambda: net)")
        _BUILT[id(model)] = model
        return model

    def load_data(self, validate: bool = True) -> Data:
        """Call the data factory and make sure it gave `Data`.

        With `validate` (the default) data no training can use is a one-line RecipeError
        (`check_data`), and a batch size larger than the training split is a one-line warning.
        The sanity suite loads with `validate=False` and reports each problem as its own check.
        """
        try:
            data = self.data()
        except RecipeError:
            raise
        except Exception as e:
            raise RecipeError(f"recipe {self.name!r}: its data factory raised {type(e).__name__}: {e}") from e
        if not isinstance(data, Data):
            raise RecipeError(f"recipe {self.name!r}: data factory returned {type(data).__name__}, "
                              "expected harness.Data(train=..., val=..., test=...)")
        if validate:
            check_data(data, self.task, where=f"recipe {self.name!r}")
            warn_batch_size(self.batch_size, split_len(data.train), where=f"recipe {self.name!r}")
        return data

    def make_optimizer(self, model: torch.nn.Module, lr: Optional[float] = None) -> torch.optim.Optimizer:
        """The recipe's optimizer for `model` at `lr` (default: the recipe's)."""
        return make_optimizer(self.optimizer, model, self.lr if lr is None else lr, where=f"recipe {self.name!r}")

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """The recipe's LR scheduler for a run of `total_steps` optimizer steps, or None."""
        if self.scheduler is None:
            return None
        try:
            if _accepts(self.scheduler, "epochs"):  # e.g. a Lightning schedule with interval "epoch"
                return self.scheduler(optimizer, total_steps, epochs=self.epochs)
            return self.scheduler(optimizer, total_steps)
        except RecipeError:
            raise
        except Exception as e:
            raise RecipeError(f"recipe {self.name!r}: its scheduler factory raised {type(e).__name__}: {e}; "
                              "it is called as scheduler(optimizer, total_steps)") from e

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        """The recipe's loss (or the task's default), checked to be one number."""
        loss = self.loss(outputs, targets)
        if isinstance(loss, torch.Tensor) and loss.dim() == 0:  # the hot path, without another call
            return loss
        return checked_loss(loss)

    def step(self, model, inputs, targets, optimizer, scheduler=None):
        """One training step: the recipe's train_step or zero_grad/forward/loss/backward/step; the
        scheduler (if any) steps after it. Returns (loss, outputs or None)."""
        if self.train_step is not None:
            loss, outputs = step_result(self.train_step(model, inputs, targets, optimizer, self.compute_loss))
        else:
            loss, outputs = default_step(model, inputs, targets, optimizer, self.compute_loss, self.forward)
        if scheduler is not None:
            scheduler.step()
        return loss, outputs


_STEP_COUNT_PARAMETERS = ("T_max", "T_0", "total_iters", "total_steps")


def _scheduler_class_problem(scheduler) -> Optional[str]:
    """What goes wrong when `scheduler=` is a torch scheduler class whose second parameter is not a
    step count (scheduler(optimizer, total_steps) would pass total_steps as OneCycleLR's max_lr,
    ExponentialLR's gamma, StepLR's step_size), else None. CosineAnnealingLR (T_max) and the like
    are fine as classes."""
    kinds = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if not (isinstance(scheduler, type) and issubclass(scheduler, kinds)):
        return None
    try:
        params = list(inspect.signature(scheduler).parameters.values())
    except (TypeError, ValueError):
        return None
    second = params[1].name if len(params) > 1 else None
    if second in _STEP_COUNT_PARAMETERS:
        return None
    name = scheduler.__name__
    return (f"Recipe.scheduler is the class {name}; it is called as scheduler(optimizer, total_steps), which would "
            f"pass total_steps as {name}'s {second}; give a function, e.g. scheduler=lambda optimizer, total_steps: "
            f"torch.optim.lr_scheduler.{name}(optimizer, ...)")


def _built_kind(value) -> str:
    """'optimizer' / 'scheduler' for an instance of one (given where a factory is wanted), else ''."""
    if isinstance(value, torch.optim.Optimizer):
        return "optimizer"
    if isinstance(value, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return "scheduler"
    return ""


_FACTORY_FIX = {  # (field, what was given instead) -> the fix
    ("optimizer", "optimizer"): "; an optimizer instance is bound to one model's parameters: pass a function that "
                                "builds one, optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr)",
    ("scheduler", "scheduler"): "; a scheduler instance is bound to one optimizer: pass a function that builds one, "
                                "scheduler=lambda optimizer, total_steps: torch.optim.lr_scheduler.StepLR(optimizer, "
                                "total_steps // 3)",
}


def _task_example_args(cls) -> str:
    """The arguments of an example instance of a task class, for the line that asks for one."""
    return {"Classification": "10", "MultiLabel": "10", "Regression": "1", "Dense": "10",
            "CausalLM": "vocab_size"}.get(cls.__name__, "...")


def _resolve_task(task, num_classes):
    """The task from `task=` or the `num_classes=` shorthand; both must agree when both are given."""
    if task is None:
        if num_classes is None:
            raise RecipeError("Recipe needs task=tasks.Classification(C) (or another harness.tasks task) "
                              "or the shorthand num_classes=C")
        try:
            return tasks.Classification(num_classes)
        except RecipeError as e:
            raise RecipeError(f"Recipe.num_classes must be an int >= 2, got {num_classes!r}; "
                              "for regression use task=tasks.Regression()") from e
    if isinstance(task, type):
        raise RecipeError(f"Recipe.task is the class {task.__name__}, not a task; give an instance, "
                          f"e.g. task=tasks.{task.__name__}({_task_example_args(task)})")
    if not all(callable(getattr(task, m, None)) for m in ("loss", "check_outputs", "meter", "skip_reason")):
        raise RecipeError(f"Recipe.task must be a harness.tasks task (e.g. tasks.Classification(10)), got {task!r}")
    own = getattr(task, "num_classes", None)
    if num_classes is not None and own != num_classes:
        raise RecipeError(f"Recipe: num_classes={num_classes!r} disagrees with task={task!r}; give only task=")
    return task


def nothing_to_train(model) -> Optional[str]:
    """One line when the model has no parameter that could train (none at all, or all frozen), else None."""
    params = list(model.parameters())
    if not params:
        return ("the model has no parameters, so there is nothing to train; "
                "check that its layers are attributes (or in nn.ModuleList), not plain lists")
    if not any(p.requires_grad for p in params):
        return f"all {len(params)} parameter tensors of the model are frozen (requires_grad=False); unfreeze the ones to train"
    return None


def make_optimizer(factory, model, lr, where="fit"):
    """`factory(params, lr)` (or `factory(model, lr)`), with a model that has something to train."""
    if problem := nothing_to_train(model):
        raise RecipeError(f"{where}: {problem}")
    try:
        opt = factory(model, lr) if _takes_model(factory) else factory(model.parameters(), lr)
    except RecipeError:
        raise
    except Exception as e:
        raise RecipeError(f"{where}: its optimizer factory raised {type(e).__name__}: {e}; it is called as "
                          "optimizer(params, lr), or optimizer(model, lr) when its first parameter is named model") from e
    if not isinstance(opt, torch.optim.Optimizer):
        raise RecipeError(f"{where}: the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
    return opt


def with_settings(base, **settings):
    """The optimizer `base` builds, with each setting (momentum, weight_decay) set in every param
    group: `--momentum` / `--weight-decay` on a recipe's own optimizer (its Adam stays Adam). An
    optimizer without that setting (Adam has no momentum) is one line naming the way out."""
    def make(model, lr):  # named `model`: make_optimizer passes the model, and base gets what it takes
        opt = make_optimizer(base, model, lr, where="the recipe's optimizer")
        for name, value in settings.items():
            if any(name not in group for group in opt.param_groups):
                raise RecipeError(f"--{name.replace('_', '-')} {value:g}: the recipe's optimizer "
                                  f"{type(opt).__name__} has no {name}; give --optimizer sgd to replace it, or set it "
                                  "in the recipe's optimizer factory")
            for group in opt.param_groups:
                group[name] = value
            opt.defaults[name] = value  # for groups added later, and readers of the defaults
        return opt
    make.__qualname__ = f"{getattr(base, '__qualname__', type(base).__name__)} with " + \
        ", ".join(f"{k}={v:g}" for k, v in settings.items())
    return make


def checked_loss(loss):
    """The loss, if it is a one-number tensor; a per-sample loss (reduction='none'), a Python
    number (loss.item()) or anything else is a one-line RecipeError."""
    if isinstance(loss, (int, float)):
        raise RecipeError(f"the loss returned a {type(loss).__name__} ({loss:.4g}), not a tensor; return the loss "
                          "tensor itself (not loss.item() or float(loss)): backward() needs it")
    if not isinstance(loss, torch.Tensor):
        what = f"a {type(loss).__name__} of {len(loss)} items" if isinstance(loss, (tuple, list, dict)) else \
            f"a {type(loss).__name__}"
        raise RecipeError(f"the loss returned {what}, not a tensor; return the one loss tensor (a loss with extras "
                          "needs a train_step that returns (loss, outputs))")
    if isinstance(loss, torch.Tensor) and loss.dim() != 0:
        raise RecipeError(f"the loss returned a tensor of shape {tuple(loss.shape)}, not one number; "
                          "a loss with reduction='none' needs .mean() (or reduction='mean')")
    return loss


# --- validation at the boundary -------------------------------------------------------------------

def check_hparams(lr=None, batch_size=None, epochs=None, where="fit", required: bool = False):
    """Validate hyperparameters at the boundary (harness.parse); one line naming the parameter and the fix.
    None means "not given" and is skipped, unless `required` (a Recipe's own values)."""
    if lr is not None or required:
        parse.positive_number(lr, f"{where}: lr", "try lr=0.1 for plain SGD or 1e-3 for Adam")
    if batch_size is not None or required:
        parse.integer(batch_size, f"{where}: batch_size", 1, "try batch_size=128")
    if epochs is not None or required:
        parse.integer(epochs, f"{where}: epochs", 1, "try epochs=15")


def warn_batch_size(batch_size, n_train: int, where="fit", stacklevel: int = 3) -> Optional[str]:
    """Warn when the batch size exceeds the training split.

    Training still works (every epoch is one full-batch step, as in the default batch-size
    sweep's 2048 on digits28's 1,258 samples), so this is a warning, not an error.
    """
    if not isinstance(batch_size, int) or not n_train or batch_size <= n_train:
        return None
    message = (f"{where}: batch_size {batch_size} is larger than the {n_train}-sample training split, "
               f"so every epoch is one full-batch step; use batch_size <= {n_train} unless that is intended")
    warnings.warn(HarnessWarning(message), stacklevel=stacklevel)
    return message


def is_tensor_split(split) -> bool:
    """A split given as an (inputs, targets) pair (rather than a Dataset or DataLoader)."""
    return is_pair(split)


def check_data(data: Data, task=None, where="data", finite: bool = True) -> None:
    """Raise RecipeError (one line naming the split and the fix) for data no training can use.

    Pair splits are checked in full: every leaf of the same length, a non-empty training split,
    finite float inputs, targets the task accepts (`task.check_targets`; an int is taken as
    `num_classes`). A Dataset or DataLoader split is only checked for length. `finite=False`
    skips the NaN/Inf scan (for callers that treat a NaN loss as divergence, like `fit`).
    """
    if isinstance(task, int) or hasattr(task, "__index__"):
        task = tasks.Classification(task)
    if data.train is None:
        raise RecipeError(f"{where}: the train split is None; return Data(train=(x, y), ...)")
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        if not is_pair(split):
            if not hasattr(split, "__len__") or isinstance(split, (str, bytes, torch.Tensor)):
                raise RecipeError(f"{where}: the {name} split is a {type(split).__name__}; give (inputs, targets), "
                                  "a Dataset or a DataLoader")
            if isinstance(split, (tuple, list)):
                raise RecipeError(f"{where}: the {name} split is a {type(split).__name__} of {len(split)} items; give "
                                  "(inputs, targets) with tensors or numpy arrays on each side")
            if split_len(split) == 0:
                raise RecipeError(f"{where}: the {name} split is empty; give it samples"
                                  + (" or pass val=None" if name == "val" else ""))
            continue
        x, y = batching.tensors(split[0]), batching.tensors(split[1])
        sizes = batching.lengths(x) + batching.lengths(y)
        if len(set(sizes)) > 1:
            per_sample = _per_sample_list(split[0], "inputs", y) or _per_sample_list(split[1], "targets", x)
            if per_sample:
                raise RecipeError(f"{where}: {name} {per_sample}")
            shown = sizes if len(sizes) <= 6 else [*sizes[:3], "...", *sizes[-2:]]
            raise RecipeError(f"{where}: {name} has {batching.batch_len(x)} inputs but {batching.batch_len(y)} targets "
                              f"(first dimensions {shown}); slice inputs and targets with the same indices")
        if sizes[0] == 0:
            raise RecipeError(f"{where}: the {name} split is empty; give it samples"
                              + (" or pass val=None" if name == "val" else ""))
        if finite:
            for leaf in batching.leaves(x):
                if leaf.is_floating_point() or leaf.is_complex():
                    bad = int((~torch.isfinite(leaf)).sum())
                    if bad:
                        raise RecipeError(f"{where}: {name} inputs hold {bad} NaN/Inf values; drop or impute those "
                                          "samples (pytest -m sanity, check inputs_finite, shows where)")
        if task is not None and isinstance(y, torch.Tensor):
            problem = task.check_targets(y) or _targets_beyond_task(task, y)
            if problem:
                raise RecipeError(f"{where}: {name} {problem}")


def _targets_beyond_task(task, y) -> Optional[str]:
    """What the task's own target check lets through but no training under that task can use:
    multi-hot rows given as class probabilities, token ids outside the task's vocabulary."""
    name = getattr(task, "name", "")
    if name == "classification" and y.is_floating_point() and y.dim() == 2 and len(y):
        sums = y.sum(1)
        if float((sums - 1).abs().max()) > 1e-3:
            lo, hi = float(sums.min()), float(sums.max())
            if bool(((y == 0) | (y == 1)).all()) and hi > 1:
                return (f"targets {tuple(y.shape)} hold several 1s per row (up to {hi:g}); class probabilities sum to 1 "
                        f"per row: for several labels per sample use task=tasks.MultiLabel({y.shape[1]})")
            return (f"targets {tuple(y.shape)} are float rows summing to {lo:.3g}..{hi:.3g}, not 1; give class "
                    f"probabilities (y / y.sum(1, keepdim=True)) or class indices as integers")
    vocab = getattr(task, "vocab_size", None)
    if name == "causal_lm" and vocab is not None and not y.is_floating_point():
        ignore = getattr(task, "ignore_index", None)
        valid = y[y != ignore] if ignore is not None else y
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab):
            return (f"token ids run from {int(valid.min())} to {int(valid.max())}, outside [0, {vocab}) "
                    f"(ignore_index {ignore} aside); give tasks.CausalLM({max(int(valid.max()) + 1, vocab)}), "
                    f"the model's vocabulary size")
    return None


def _per_sample_list(side, what: str, other) -> Optional[str]:
    """What is wrong when one side of a pair is a Python list of per-sample tensors or dicts (as many
    items as the other side has samples) rather than one batch; None otherwise."""
    n = batching.batch_len(other) if batching.leaves(other) else 0
    if not isinstance(side, (list, tuple)) or len(side) != n or n < 2:
        return None
    if all(isinstance(item, dict) for item in side):
        return (f"{what} are a list of {n} per-sample dicts (torchvision's detection format), not a batch; the harness "
                f"batches tensors along their first dimension, so give {what} as tensors of shape ({n}, ...)")
    if all(isinstance(item, torch.Tensor) for item in side):
        return (f"{what} are a list of {n} per-sample tensors of shape {tuple(side[0].shape)}, not a batch; "
                f"torch.stack({what}) makes one ({n}, ...) tensor")
    return None


def check_inputs_match_model(model: torch.nn.Module, split, where="fit") -> None:
    """Float inputs of another precision than the model's parameters (numpy's float64) are one line."""
    if not is_pair(split):
        return
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is None:
        return
    for leaf in batching.leaves(split[0]):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and leaf.dtype != dtype:
            got, want = str(leaf.dtype).replace("torch.", ""), str(dtype).replace("torch.", "")
            raise RecipeError(f"{where}: the inputs are {got} but the model's parameters are {want}; convert the "
                              f"inputs (x.to(torch.{want}), or x.astype('{want}') in numpy, whose default is float64)")
