"""Files that must never be half-written: results, tables, checkpoints.

    atomic_write_text(path, text); atomic_write_json(path, obj)
    save_weights(model, path); load_weights(model, path)   # weights only, torch.load(weights_only=True)
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path

import torch

from harness.recipe import RecipeError


class OutputError(RecipeError):
    """An output file cannot be written (folder not writable, a file in the way, disk full)."""


def _atomic(path, write):
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see the old
    file or the new one, never half of one. A failure leaves the old file untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _unwritable(path, e) from None
        raise


def _unwritable(path: Path, error: OSError) -> OutputError:
    what = error.strerror or type(error).__name__
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    return OutputError(f"cannot write {path}: {what}{where}; choose an output folder you can write (--out DIR)")


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def save_weights(model: torch.nn.Module, path) -> None:
    """Write the model's state_dict (tensors only) atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic(path, lambda f: torch.save(state, f))


def load_weights(model: torch.nn.Module, path, device="cpu") -> torch.nn.Module:
    """Load a state_dict written by `save_weights`; a file holding anything but tensors is refused."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))  # what the file would have run
        what = f"it holds {found.group(1)}, not just tensors" if found else "it holds more than tensors"
        raise RecipeError(f"{path} is not a weights-only checkpoint ({what}); save it with "
                          "harness.io.save_weights(model, path), or torch.save(model.state_dict(), path)") from None
    model.load_state_dict(state)
    return model
