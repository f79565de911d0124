"""Files that must never be half-written: results, tables, checkpoints.

    atomic_write_text(path, text); atomic_write_json(path, obj)
    save_weights(model, path); load_weights(model, path)   # weights only, torch.load(weights_only=True)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model
