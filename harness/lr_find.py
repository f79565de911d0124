"""The learning-rate range test: raise the lr exponentially step by step and watch the loss.

    from harness.lr_find import lr_find
    result = lr_find(model, data, lr_min=1e-7, lr_max=10, steps=100)   # model and optimizer restored after
    result.suggested_lr, result.diverge_lr                             # steepest descent, where it blew up

or from the command line: `harness lr-find --recipe digits28 --out results/lr-find`.

The loss is smoothed with a bias-corrected exponential moving average (beta 0.98); the test
stops when the smoothed loss exceeds `stop_factor` x its best value (or turns non-finite), and
that lr is the divergence lr. The suggestion is the lr where the smoothed loss falls fastest
against log(lr).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from harness.fit import batches, default_step, resolve_device, to_device
from harness.recipe import DEFAULT_FORWARD, Data, make_optimizer, plain_sgd as sgd


@dataclass
class LRFind:
    """What the range test saw: one entry per step taken."""
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)      # raw per-step training loss
    smoothed: list = field(default_factory=list)    # bias-corrected EMA of the loss
    suggested_lr: Optional[float] = None            # steepest negative slope vs log(lr)
    diverge_lr: Optional[float] = None              # lr where the smoothed loss passed stop_factor x best; None if never

    def to_dict(self) -> dict:
        return asdict(self)


def lr_find(model: torch.nn.Module, data: Data, *, loss: Optional[Callable] = None,
            optimizer: Callable = sgd, batch_size: int = 128, train_step: Optional[Callable] = None,
            lr_min: float = 1e-7, lr_max: float = 10.0, steps: int = 100, beta: float = 0.98,
            stop_factor: float = 4.0, device="cpu", seed: int = 0, task=None, forward=None) -> LRFind:
    """Run the range test on `data.train`, cycling through batches; restore the model afterwards.

    The optimizer is built with `optimizer(params, lr_min)` and its lr is set before every step
    to lr_min * (lr_max / lr_min) ** (i / (steps - 1)). Model weights (and buffers) are restored
    from a deep copy of the state_dict when the test ends, however it ends.
    """
    device = resolve_device(device)
    model.to(device)
    opt = make_optimizer(optimizer, model, lr_min, where="lr_find")
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    was_training = model.training
    loss = loss or (task.loss if task is not None else F.cross_entropy)
    step = train_step or (lambda m, x, y, o, l: default_step(m, x, y, o, l, forward or DEFAULT_FORWARD))
    split = to_device(data.train, device, task)
    generator = torch.Generator().manual_seed(seed)
    result, avg, best = LRFind(), 0.0, math.inf
    factor = (lr_max / lr_min) ** (1.0 / max(steps - 1, 1))
    try:
        model.train()
        stream = _cycle(split, batch_size, generator, device)
        for i in range(steps):
            lr = lr_min * factor ** i
            for group in opt.param_groups:
                group["lr"] = lr
            xb, yb = next(stream)
            out = step(model, xb, yb, opt, loss)
            value = float((out[0] if isinstance(out, tuple) else out).detach())  # one sync per step: 100 steps
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(value)
            result.smoothed.append(smooth)
            if not math.isfinite(smooth) or smooth > stop_factor * best:
                result.diverge_lr = lr
                break
            best = min(best, smooth)
    finally:
        model.load_state_dict(saved_model)
        opt.load_state_dict(saved_opt)
        model.train(was_training)
    result.suggested_lr = steepest(result.lrs, result.smoothed)
    return result


def steepest(lrs: list, smoothed: list, skip: int = 5) -> Optional[float]:
    """The lr where d(smoothed loss)/d(log lr) is most negative, ignoring the first `skip` steps
    (the EMA is still warming up) and the last one (where the test stopped)."""
    pairs = [(lr, s) for lr, s in zip(lrs, smoothed) if math.isfinite(s)]
    end = len(pairs) - 1 if len(pairs) > skip + 3 else len(pairs)
    pairs = pairs[skip:end] if len(pairs) > skip + 3 else pairs
    if len(pairs) < 3:
        return None
    lr, s = np.array(pairs).T
    slope = np.gradient(s, np.log(lr))
    return float(lr[int(np.argmin(slope))])


def _cycle(split, batch_size, generator, device):
    """Endless shuffled batches: the range test may need more steps than one epoch has."""
    while True:
        empty = True
        for xb, yb in batches(split, batch_size, shuffle=True, generator=generator, device=device):
            empty = False
            yield xb, yb
        if empty:
            raise ValueError("lr_find: the training split is empty")
