"""Validators for fields and flags, one family: each returns the clean value or raises one line.

    from harness import parse
    lr = parse.positive_number(value, "--lr", fix="try 0.1 for plain SGD")
    epochs = parse.integer(value, "Recipe.epochs", minimum=1, fix="try epochs=15")
    mode = parse.choice(value, "--vectorize", ("auto", "on", "off"))
    device = parse.device("cuda", "--harness-device")

Every message has the shape `NAME must be ..., got VALUE; the fix`, where NAME is the flag or
field the user typed (`--lr`, `Recipe.epochs`, `fit: lr`), so the same check reads right from the CLI, the pytest plugin and Python.
Errors are `harness.errors.RecipeError` (a ValueError). This module imports nothing else of ours.
"""
from __future__ import annotations

import difflib
import math
from typing import Iterable

from harness.errors import RecipeError


def fail(name: str, problem: str, value, fix: str = "") -> RecipeError:
    """The one-line error of this family (returned, so callers `raise parse.fail(...)`)."""
    return RecipeError(f"{name} {problem}, got {value!r}" + (f"; {fix}" if fix else ""))


def positive_number(value, name: str, fix: str = "") -> float:
    """A finite number > 0 (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
        raise fail(name, "must be a positive finite number", value, fix)
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise fail(name, "must be a positive finite number", value, fix)
    return float(value) if not isinstance(value, int) else value


def integer(value, name: str, minimum: int = 1, fix: str = "") -> int:
    """An integer >= minimum: an int or numpy integer (np.int64(10) is 10), never a bool or a float."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise fail(name, f"must be an integer >= {minimum}", value, fix)
    value = int(value.__index__())
    if value < minimum:
        raise fail(name, f"must be an integer >= {minimum}", value, fix)
    return value


def choice(value, name: str, options: Iterable[str]) -> str:
    """One of `options`; the error names the closest one."""
    options = tuple(options)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=1)
    hint = f"did you mean {close[0]!r}" if close else ""
    raise fail(name, f"must be one of {', '.join(options)}", value, hint + "?" if hint else "")


def device(value, name: str = "--device"):
    """'auto' -> cuda when available, else cpu; a device this machine lacks is one line naming `name`."""
    import torch

    if value is None or value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as e:
        raise fail(name, "must be a device", value, "use cpu, cuda or auto") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise fail(name, "must be a device this machine has", value, "CUDA is not available here: use cpu or auto")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise fail(name, "must be a device this machine has", value, "MPS (Apple GPU) is not available here: use cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise fail(name, "must be cpu, cuda or mps", value, f"the harness does not train on {dev.type}: use cpu or auto")
    return dev


def _is_numpy_number(value) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0
