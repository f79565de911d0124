"""The recipe contract: what a user hands the harness, and how a `--recipe` spec is found.

    from harness import Recipe, Data
    RECIPE = Recipe(model=build_model, data=load_data, num_classes=10)

`load_recipe("digits28")`, `load_recipe("path/to/file.py:NAME")` and
`load_recipe("package.module:NAME")` all return a `Recipe`; anything else raises
`RecipeError` with one line that says what is wrong and how to fix it.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F


class RecipeError(ValueError):
    """A recipe (or a `--recipe` spec) is unusable; the message is one line with the fix."""


def sgd(params, lr: float) -> torch.optim.Optimizer:
    """The recipe's default optimizer: plain SGD, no momentum (as in the seed notebook)."""
    return torch.optim.SGD(params, lr=lr)


@dataclass(frozen=True)
class Data:
    """Three splits; each is an `(inputs, targets)` tensor pair or a `torch.utils.data.Dataset`."""
    train: Any
    val: Any
    test: Any = None
    class_names: Optional[tuple] = None


TrainStep = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer, Callable], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """Everything the checks, suites and sweeps need to train a user's model.

    model:      () -> nn.Module, a fresh, freshly initialised model per call.
    data:       () -> Data.
    loss:       (outputs, targets) -> scalar tensor.
    optimizer:  (params, lr) -> torch.optim.Optimizer.
    train_step: optional (model, inputs, targets, optimizer, loss) -> loss tensor (or
                (loss, outputs)), replacing the harness's own zero_grad/forward/backward/step.
    suppress:   names of checks that are known not to apply to this recipe.
    diverge_lr: the too-high lr of the recipe suite, when 1.0 (or 10x lr) is not too high for
                this model; `--harness-diverge-lr` overrides it.
    """
    model: Callable[[], torch.nn.Module]
    data: Callable[[], Data]
    num_classes: int
    loss: Callable = F.cross_entropy
    optimizer: Callable = sgd
    lr: float = 0.1
    batch_size: int = 128
    epochs: int = 15
    train_step: Optional[TrainStep] = None
    name: str = "recipe"
    suppress: tuple = ()
    input_range: Optional[tuple] = None  # (low, high) the inputs are expected to lie in
    diverge_lr: Optional[float] = None   # the lr `pytest -m recipe` expects to diverge (default 1.0 or 10x lr)

    def __post_init__(self):
        if not callable(self.model):
            raise RecipeError(f"Recipe.model must be a function returning a fresh nn.Module, got {type(self.model).__name__}")
        if not callable(self.data):
            raise RecipeError(f"Recipe.data must be a function returning harness.Data, got {type(self.data).__name__}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise RecipeError(f"Recipe.num_classes must be an int >= 2, got {self.num_classes!r}")
        check_hparams(lr=self.lr, batch_size=self.batch_size, epochs=self.epochs, where="Recipe")
        if self.diverge_lr is not None:
            check_hparams(lr=self.diverge_lr, where="Recipe diverge_lr")

    def replace(self, **changes) -> "Recipe":
        return replace(self, **changes)

    def build_model(self) -> torch.nn.Module:
        """Call the model factory and make sure it gave a module."""
        try:
            model = self.model()
        except Exception as e:
            raise RecipeError(f"recipe {self.name!r}: its model factory raised {type(e).__name__}: {e}") from e
        if not isinstance(model, torch.nn.Module):
            raise RecipeError(f"recipe {self.name!r}: model factory returned {type(model).__name__}, "
                              "expected a torch.nn.Module; return the model, not its class or output")
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
            check_data(data, self.num_classes, where=f"recipe {self.name!r}")
            warn_batch_size(self.batch_size, split_len(data.train), where=f"recipe {self.name!r}")
        return data


def check_hparams(lr=None, batch_size=None, epochs=None, where="fit"):
    """Validate hyperparameters at the boundary; one line naming the parameter and the fix."""
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool)
                           or not math.isfinite(lr) or lr <= 0):
        raise RecipeError(f"{where}: lr must be a positive finite number, got {lr!r}; try lr=0.1 for plain SGD or 1e-3 for Adam")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise RecipeError(f"{where}: batch_size must be an integer >= 1, got {batch_size!r}; try batch_size=128")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise RecipeError(f"{where}: epochs must be an integer >= 1, got {epochs!r}; try epochs=15")


class HarnessWarning(UserWarning):
    """Something that works but is probably not what was meant; the message is one line."""


def warn_batch_size(batch_size, n_train: int, where="fit", stacklevel: int = 3) -> Optional[str]:
    """Warn, once per (where, sizes), when the batch size exceeds the training split.

    Training still works (every epoch is one full-batch step, as in the default batch-size
    sweep's 2048 on digits28's 1,258 samples), so this is a warning, not an error.
    """
    if not isinstance(batch_size, int) or not n_train or batch_size <= n_train:
        return None
    message = (f"{where}: batch_size {batch_size} is larger than the {n_train}-sample training split, "
               f"so every epoch is one full-batch step; use batch_size <= {n_train} unless that is intended")
    warnings.warn(HarnessWarning(message), stacklevel=stacklevel)
    return message


def check_data(data: Data, num_classes: Optional[int] = None, where="data", finite: bool = True) -> None:
    """Raise RecipeError (one line naming the split and the fix) for data no training can use.

    Tensor splits are checked in full: inputs and targets of the same length, a non-empty
    training split, finite float inputs, integer labels in [0, num_classes). A `Dataset`
    split is only checked for length (reading it is the loader's business). `finite=False`
    skips the NaN/Inf scan (for callers that treat a NaN loss as divergence, like `fit`).
    """
    if data.train is None or split_len(data.train) == 0:
        raise RecipeError(f"{where}: the train split is empty; return Data(train=(x, y), ...) with at least one sample")
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        if not is_tensor_split(split):
            if len(split) == 0 and name == "val":
                raise RecipeError(f"{where}: the val split is empty; give it samples or pass val=None")
            continue
        x, y = split
        if len(x) != len(y):
            raise RecipeError(f"{where}: {name} has {len(x)} inputs but {len(y)} targets; "
                              "slice inputs and targets with the same indices")
        if len(y) == 0:
            if name == "val":
                raise RecipeError(f"{where}: the val split is empty; give it samples or pass val=None")
            continue
        if finite and (x.is_floating_point() or x.is_complex()):
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise RecipeError(f"{where}: {name} inputs hold {bad} NaN/Inf values; drop or impute those "
                                  "samples (pytest -m sanity, check inputs_finite, shows where)")
        if num_classes and not y.is_floating_point() and y.dtype != torch.bool:
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                raise RecipeError(f"{where}: {name} labels run from {lo} to {hi}, outside [0, {num_classes}); "
                                  f"labels numbered from 1 need -1, or num_classes={num_classes} is wrong")


def is_tensor_split(split) -> bool:
    """A split given as an (inputs, targets) tensor pair (rather than a Dataset)."""
    return isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split)


def split_len(split) -> int:
    return len(split[0]) if is_tensor_split(split) else len(split)


# --- finding a recipe from a --recipe spec -----------------------------------------------------

def load_recipe(spec: Optional[str]) -> Recipe:
    """Resolve a `--recipe` spec: a built-in name, `file.py[:NAME]` or `package.module[:NAME]`.

    NAME defaults to `RECIPE`. The object found may be a Recipe or a zero-argument function
    returning one.
    """
    from harness import recipes  # built-ins; imported here to keep this module light

    if spec is None or spec == "":
        spec = recipes.DEFAULT
    if spec in recipes.BUILTINS:
        return recipes.BUILTINS[spec]()
    target, _, attr = spec.partition(":")
    attr = attr or "RECIPE"
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(target, spec)
    elif ":" in spec or "." in target:
        module = _import_module(target, spec)
    else:
        known = ", ".join(sorted(recipes.BUILTINS))
        raise RecipeError(f"--recipe {spec!r}: no built-in recipe of that name (built-ins: {known}); "
                          "for your own recipe use path/to/file.py:NAME or package.module:NAME")
    if not hasattr(module, attr):
        found = [n for n, v in vars(module).items() if isinstance(v, Recipe)]
        hint = f" (Recipe objects there: {', '.join(found)})" if found else ""
        raise RecipeError(f"--recipe {spec!r}: {target} has no attribute {attr!r}{hint}")
    obj = getattr(module, attr)
    if not isinstance(obj, Recipe) and callable(obj) and not isinstance(obj, type):
        try:
            obj = obj()
        except RecipeError:
            raise
        except Exception as e:
            raise RecipeError(f"--recipe {spec!r}: calling {attr}() raised {type(e).__name__}: {e}") from e
    if not isinstance(obj, Recipe):
        raise RecipeError(f"--recipe {spec!r}: {attr} is a {type(obj).__name__}, not a harness.Recipe; "
                          f"define {attr} = Recipe(model=..., data=..., num_classes=...)")
    if obj.name == "recipe":
        obj = obj.replace(name=spec)
    return obj


def _import_file(target: str, spec: str):
    path = Path(target).expanduser()
    if not path.is_file():
        raise RecipeError(f"--recipe {spec!r}: no such file {str(path)!r} (relative paths start at {Path.cwd()})")
    name = f"_harness_recipe_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise RecipeError(f"--recipe {spec!r}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from e
    except RecipeError as e:
        del sys.modules[name]
        raise RecipeError(f"--recipe {spec!r}: {e}") from e
    except Exception as e:
        del sys.modules[name]
        raise RecipeError(f"--recipe {spec!r}: importing {path} raised {type(e).__name__}: {e}") from e
    return module


def _import_module(target: str, spec: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise RecipeError(f"--recipe {spec!r}: no module named {e.name!r}; is it installed or on PYTHONPATH? "
                          "(a file path needs the .py ending)") from e
    except SyntaxError as e:
        raise RecipeError(f"--recipe {spec!r}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from e
    except Exception as e:
        raise RecipeError(f"--recipe {spec!r}: importing {target} raised {type(e).__name__}: {e}") from e
