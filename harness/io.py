"""Files that must never be half-written: results, tables, checkpoints.

    atomic_write_text(path, text); atomic_write_json(path, obj)
    save_weights(model, path); load_weights(model, path)   # weights only, torch.load(weights_only=True)
    load_plain_pickle(path)    # a data pickle (CIFAR-10's batches): arrays, lists, dicts, str, numbers only

New files get the mode any file the user creates gets (0o666 minus the umask), not mkstemp's 0o600.
No file is ever unpickled with the plain `pickle.load`: a pickle can run any code when read.
"""
from __future__ import annotations

import _codecs
import json
import math
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np

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
            os.chmod(tmp, _new_file_mode(path))
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


def _new_file_mode(path: Path) -> int:
    """What open() gives a new file: 0o666 minus the umask (mkstemp alone gives 0o600)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux shows it without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # elsewhere the only way to read it is to set it; set straight back
    os.umask(umask)
    return umask


def _unwritable(path: Path, error: OSError) -> OutputError:
    what = error.strerror or type(error).__name__
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    return OutputError(f"cannot write {path}: {what}{where}; choose an output folder you can write (--out DIR)")


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """Strict JSON: a float that is not finite (a diverged run's loss, an R2 of nan) is written as null,
    since NaN and Infinity are not JSON (jq, JavaScript's JSON.parse and many other readers refuse them)."""
    atomic_write_text(path, json.dumps(_finite_or_null(obj), indent=2, allow_nan=False) + "\n")


def _finite_or_null(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def save_weights(model: torch.nn.Module, path) -> None:
    """Write the model's state_dict (tensors only) atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic(path, lambda f: torch.save(state, f))


def load_weights(model: torch.nn.Module, path, device="cpu") -> torch.nn.Module:
    """Load a state_dict written by `save_weights`; a file holding anything but tensors is refused.
    Every problem (no such file, a truncated file, another model's weights) is one RecipeError line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such file to load weights from; save them first with "
                          "harness.io.save_weights(model, path)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))  # what the file would have run
        what = f"it holds {found.group(1)}, not just tensors" if found else "it holds more than tensors"
        raise RecipeError(f"{path} is not a weights-only checkpoint ({what}); save it with "
                          "harness.io.save_weights(model, path), or torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        said = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise RecipeError(f"{path} is truncated or not a checkpoint ({type(e).__name__}: {said}); "
                          "save it again with harness.io.save_weights(model, path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RecipeError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors; save it with "
                          "harness.io.save_weights(model, path)")
    _check_fits(model, state, path)
    model.load_state_dict(state)
    return model


def _check_fits(model: torch.nn.Module, state: dict, path: Path) -> None:
    """One line naming the first keys and shapes that differ, instead of load_state_dict's many."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = ([f"shape of {shapes[0]}"] if shapes else []) + \
               ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
               ([f"extra {', '.join(unexpected[:3])}"] if unexpected else [])
    if problems:
        raise RecipeError(f"{path} does not fit this {type(model).__name__} ({'; '.join(problems)}); "
                          "load it into the model it was saved from")


# --- reading data pickles without running them --------------------------------------------------

class UnsafePickleError(ValueError):
    """A data pickle asks for something other than plain data; nothing of it was run."""


def _latin1_encode(text, encoding="latin1"):
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1')
    if encoding != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"it calls _codecs.encode with {encoding!r}")
    return _codecs.encode(text, "latin1")


# Every global a numpy array or scalar of any pickle protocol needs, under numpy 1 and 2 names;
# lists, dicts, tuples, bytes, str, ints, floats and bools are pickle opcodes and need none.
_NUMPY_CORE = getattr(np, "_core", None) or np.core
_PLAIN_DATA = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("numpy.core", "numpy._core"):
    _PLAIN_DATA[(f"{_module}.multiarray", "_reconstruct")] = _NUMPY_CORE.multiarray._reconstruct
    _PLAIN_DATA[(f"{_module}.multiarray", "scalar")] = _NUMPY_CORE.multiarray.scalar
    _PLAIN_DATA[(f"{_module}.numeric", "_frombuffer")] = _NUMPY_CORE.numeric._frombuffer


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # every global a pickle names comes through here
        try:
            return _PLAIN_DATA[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"it asks for {module}.{name}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("it holds a persistent id")


def load_plain_pickle(path, encoding: str = "latin1"):
    """Read a pickle that holds only data: numpy arrays (no object dtype), lists, tuples, dicts,
    bytes, str, ints, floats, bools, None. Anything else (a class, a function such as os.system,
    an object array) raises UnsafePickleError naming it, before it can run; a truncated or
    foreign file raises UnsafePickleError too. Used for CIFAR-10's batch files."""
    try:
        with open(path, "rb") as f:
            obj = _PlainDataUnpickler(f, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError, OverflowError) as e:
        raise UnsafePickleError(f"it is not a readable pickle ({type(e).__name__}: {e})") from None
    _refuse_object_arrays(obj)
    return obj


def _refuse_object_arrays(obj):
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise UnsafePickleError("it holds an array of Python objects")
    if isinstance(obj, dict):
        for value in obj.values():
            _refuse_object_arrays(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _refuse_object_arrays(value)
