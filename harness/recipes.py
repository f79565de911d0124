"""The built-in recipes, by name, and `load_recipe`, which finds any recipe from a `--recipe` spec.

    from harness.recipes import load_recipe
    recipe = load_recipe("digits28")              # a built-in: digits28 (the default), fashion_mlp, cifar_mlp
    recipe = load_recipe("path/to/file.py:NAME")  # a file; NAME defaults to RECIPE
    recipe = load_recipe("package.module:NAME")   # an importable module

Each built-in is a zero-argument function returning a `Recipe`; dataset loaders read
`--harness-data-root` / `--harness-download` from `harness.data.settings` when they run. Anything
`load_recipe` cannot use raises `RecipeError` with one line that says what is wrong and how to
fix it, including a recipe file that raises or calls sys.exit() while it is imported.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import partial
from pathlib import Path
from typing import Optional

from harness import data, models
from harness.errors import RecipeError
from harness.recipe import Recipe
from harness.schedules import adam


def digits28() -> Recipe:
    """The embedded default: the seed notebook's MLP and plain SGD on digits at 28x28."""
    return Recipe(model=models.fashion_mlp, data=data.digits28, num_classes=10,
                  lr=0.1, batch_size=128, epochs=15, name="digits28")


def fashion_mlp() -> Recipe:
    """The seed notebook: FashionMNIST 54k/6k/10k, 784-256-128-10 MLP, plain SGD lr 0.1."""
    return Recipe(model=models.fashion_mlp, data=data.fashion_mnist, num_classes=10,
                  lr=0.1, batch_size=128, epochs=15, name="fashion_mlp")


def cifar_mlp(batchnorm: bool = False, dropout: float = 0.0) -> Recipe:
    """The blog: CIFAR-10 40k/10k(+10k test), 3072-100-100-10 MLP, Adam lr 1e-3, batch 32."""
    return Recipe(model=partial(models.cifar_mlp, batchnorm=batchnorm, dropout=dropout),
                  data=data.cifar10, num_classes=10, optimizer=adam(), lr=1e-3,
                  batch_size=32, epochs=10, name="cifar_mlp")


BUILTINS = {"digits28": digits28, "fashion_mlp": fashion_mlp, "cifar_mlp": cifar_mlp}
DEFAULT = "digits28"


# --- finding a recipe from a --recipe spec -----------------------------------------------------

def load_recipe(spec: Optional[str]) -> Recipe:
    """Resolve a `--recipe` spec: a built-in name, `file.py[:NAME]` or `package.module[:NAME]`.

    NAME defaults to `RECIPE`. The object found may be a Recipe or a zero-argument function
    returning one.
    """
    if spec is None or spec == "":
        spec = DEFAULT
    if spec in BUILTINS:
        return BUILTINS[spec]()
    target, _, attr = spec.partition(":")
    attr = attr or "RECIPE"
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(target, spec)
    elif ":" in spec or "." in target:
        module = _import_module(target, spec)
    else:
        known = ", ".join(sorted(BUILTINS))
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
        except SystemExit as e:
            raise RecipeError(f"--recipe {spec!r}: calling {attr}() called sys.exit({e.code!r}); "
                              "a recipe factory must return a Recipe, not exit") from e
        except Exception as e:
            raise RecipeError(f"--recipe {spec!r}: calling {attr}() raised {type(e).__name__}: {_one_line(e)}") from e
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
    except (Exception, SystemExit) as e:  # SystemExit: a script's sys.exit() must not end the harness
        del sys.modules[name]
        raise _import_error(spec, path, e) from e
    return module


def _import_module(target: str, spec: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise RecipeError(f"--recipe {spec!r}: no module named {e.name!r}; is it installed or on PYTHONPATH? "
                          "(a file path needs the .py ending)") from e
    except (Exception, SystemExit) as e:
        raise _import_error(spec, target, e) from e


def _import_error(spec: str, what, e: BaseException) -> RecipeError:
    """One line for whatever importing a recipe raised."""
    if isinstance(e, SyntaxError):
        return RecipeError(f"--recipe {spec!r}: syntax error in {e.filename}, line {e.lineno}: {e.msg}")
    if isinstance(e, RecipeError):
        return RecipeError(f"--recipe {spec!r}: {e}")
    if isinstance(e, SystemExit):
        return RecipeError(f"--recipe {spec!r}: importing {what} called sys.exit({e.code!r}); move script code "
                           "under `if __name__ == \"__main__\":` so that importing the recipe does not exit")
    return RecipeError(f"--recipe {spec!r}: importing {what} raised {type(e).__name__}: {_one_line(e)}")


def _one_line(error: BaseException) -> str:
    """An exception's message on one line (the first line, with a note when more were dropped)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] + (" ..." if len(lines) > 1 else "")) if lines else repr(error)
