"""Optimizer and learning-rate schedule factories, in the shapes `fit` takes.

    from harness.schedules import sgd, adam, step_lr, cosine, warmup
    fit(model, data, optimizer=sgd(momentum=0.9, weight_decay=5e-4), scheduler=step_lr(20, 0.1))

Optimizer factories are (params, lr) -> Optimizer: `plain_sgd` is one (the recipes' default),
`sgd(...)` and `adam(...)` build one. The schedule factories here are (optimizer, epochs) ->
scheduler, stepped once per epoch by `fit(scheduler=...)` and `--scheduler`; a Recipe's own
`scheduler=` is (optimizer, total_steps), stepped after every optimizer step.
"""
from __future__ import annotations

import torch

from harness import parse
from harness.errors import RecipeError


def plain_sgd(params, lr: float) -> torch.optim.Optimizer:
    """The recipes' default optimizer: torch.optim.SGD without momentum (as in the seed notebook)."""
    return torch.optim.SGD(params, lr=lr)


def sgd(momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
    """Plain SGD by default; momentum, Nesterov and weight decay as options."""
    def make(params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    return make


def adam(weight_decay: float = 0.0, betas=(0.9, 0.999)):
    """Adam (the blog's choice, lr 1e-3)."""
    def make(params, lr):
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    return make


def step_lr(step_size: int, gamma: float = 0.1):
    """Multiply the lr by `gamma` every `step_size` epochs (the blog's StepLR(20, 0.1))."""
    return lambda opt, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)


def cosine(min_lr: float = 0.0):
    """Cosine decay from the lr to `min_lr` over the run's epochs."""
    return lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=min_lr)


def warmup(epochs: int, start_factor: float = 0.1):
    """Linear warmup from `start_factor` x lr to lr over the first `epochs` epochs, then constant."""
    return lambda opt, total: torch.optim.lr_scheduler.LinearLR(opt, start_factor=start_factor,
                                                                end_factor=1.0, total_iters=epochs)


def parse_optimizer(name: str, momentum: float = 0.0, weight_decay: float = 0.0):
    """'sgd' or 'adam' -> a factory; used by the CLI."""
    name = parse.choice(name, "--optimizer", ("sgd", "adam"))
    return sgd(momentum=momentum, weight_decay=weight_decay) if name == "sgd" else adam(weight_decay=weight_decay)


def parse_scheduler(text):
    """'step:20:0.1', 'cosine', 'warmup:3' or None -> a schedule factory; used by the CLI."""
    if not text or text == "none":
        return None
    kind, *args = str(text).split(":")
    try:
        if kind == "step":
            step_size = int(args[0])
            gamma = float(args[1]) if len(args) > 1 else 0.1
            if step_size < 1 or not gamma > 0 or gamma != gamma or gamma == float("inf"):
                raise ValueError("STEP must be an integer >= 1 and GAMMA a positive finite number")
            return step_lr(step_size, gamma)
        if kind == "cosine":
            min_lr = float(args[0]) if args else 0.0
            if not 0.0 <= min_lr < float("inf"):
                raise ValueError("MIN_LR must be a finite number >= 0")
            return cosine(min_lr)
        if kind == "warmup":
            epochs = int(args[0]) if args else 5
            if epochs < 1:
                raise ValueError("EPOCHS must be an integer >= 1")
            return warmup(epochs)
    except (ValueError, IndexError) as e:
        raise RecipeError(f"--scheduler {text!r}: bad arguments ({e}); e.g. step:20:0.1, cosine, warmup:3") from e
    raise RecipeError(f"--scheduler {text!r}: unknown; use step:STEP[:GAMMA], cosine[:MIN_LR] or warmup:EPOCHS")
