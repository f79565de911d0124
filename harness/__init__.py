"""recipe-harness: the classic recipe for training networks, as code you can test.

    from harness import Recipe, Data, tasks, fit, train, evaluate, load_recipe

The public names load on first use (PEP 562), so `import harness` (and the pytest plugin,
which every pytest run in the environment imports) does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {  # public name -> the module that defines it
    "Data": "harness.recipe", "Recipe": "harness.recipe",
    "RecipeError": "harness.errors", "HarnessWarning": "harness.errors",
    "load_recipe": "harness.recipes",
    "sgd": "harness.schedules", "adam": "harness.schedules",
    "History": "harness.fit", "Run": "harness.fit", "default_step": "harness.fit", "evaluate": "harness.fit",
    "fit": "harness.fit", "resolve_device": "harness.fit", "train": "harness.fit",
}
_SUBMODULES = ("tasks",)  # `from harness import tasks`

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"harness.{name}")
    else:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})


class _SubmoduleSafe(type(importlib)):
    """`harness.fit` is the function even after `import harness.fit`: importing a submodule binds
    its name on the package, which would otherwise shadow the function of the same name."""

    @property
    def fit(self):
        return importlib.import_module("harness.fit").fit

    @fit.setter
    def fit(self, module):  # the import system binding the submodule; keep the function
        pass


import sys as _sys  # noqa: E402
_sys.modules[__name__].__class__ = _SubmoduleSafe
