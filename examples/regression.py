"""Regression: how far has each digit been rotated?

    pytest --pyargs harness.suites -m sanity --recipe examples/regression.py:RECIPE
    harness train --recipe examples/regression.py:RECIPE

Every digit is rotated by a random angle in [-45, 45] degrees; the target is that angle
divided by 45, a (N, 1) float in [-1, 1], and the model's output is (N, 1) to match (the task
refuses a (N, 1) output against (N,) targets instead of broadcasting them). Loss: MSE;
metrics: MSE, MAE and R².
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from harness import Data, Recipe, tasks
from harness.data import digits28

MAX_DEGREES = 45.0


def _rotated(split, seed: int):
    x, _ = split
    g = torch.Generator().manual_seed(seed)
    turns = torch.rand(len(x), generator=g) * 2 - 1                      # (N,) in [-1, 1]
    theta = turns * math.radians(MAX_DEGREES)
    cos, sin, zero = theta.cos(), theta.sin(), torch.zeros_like(theta)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False), turns.unsqueeze(1)  # (N, 1, 28, 28), (N, 1)


def load_data() -> Data:
    d = digits28()
    return Data(train=_rotated(d.train, 0), val=_rotated(d.val, 1), test=_rotated(d.test, 2))


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 7, 7)
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
        nn.Linear(64, 1),                                             # (N, 1): the angle / 45
    )


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


RECIPE = Recipe(
    model=build_model,
    data=load_data,
    task=tasks.Regression(1),
    optimizer=adam,
    lr=1e-3,
    batch_size=64,
    epochs=10,
    name="regression",
)
