"""A two-input (two-tower) model: each digit arrives as its left and right halves.

    pytest --pyargs harness.suites -m sanity --recipe examples/two_input.py:RECIPE
    harness train --recipe examples/two_input.py:RECIPE

The inputs of every split are a tuple `(left, right)` of (N, 1, 28, 14) tensors; the harness
batches every element of the tuple with the same indices and calls `model(left, right)`.
"""
import torch
from torch import nn

from harness import Data, Recipe, tasks
from harness.data import digits28


def _halves(split):
    x, y = split
    return (x[..., :14].contiguous(), x[..., 14:].contiguous()), y  # ((N,1,28,14), (N,1,28,14)), (N,)


def load_data() -> Data:
    d = digits28()
    return Data(train=_halves(d.train), val=_halves(d.val), test=_halves(d.test), class_names=d.class_names)


def _tower() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 14, 7)
                         nn.Flatten(), nn.Linear(16 * 14 * 7, 64), nn.ReLU())


class TwoTower(nn.Module):
    """Encode each half on its own, then classify the concatenated features."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.left, self.right = _tower(), _tower()
        self.head = nn.Linear(2 * 64, num_classes)

    def forward(self, left, right):
        return self.head(torch.cat([self.left(left), self.right(right)], dim=1))  # (N, C)


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


RECIPE = Recipe(
    model=TwoTower,
    data=load_data,
    task=tasks.Classification(10),
    optimizer=adam,
    lr=1e-3,
    batch_size=64,
    epochs=8,
    name="two_input",
)
