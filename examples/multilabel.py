"""Multi-label: which digits appear in an image of two digits side by side?

    pytest --pyargs harness.suites -m sanity --recipe examples/multilabel.py:RECIPE
    harness train --recipe examples/multilabel.py:RECIPE

Each input is two digits placed side by side, (N, 1, 28, 56); the target is a (N, 10) 0/1
vector with a 1 for each digit shown (one 1 when both digits are the same). The task's loss is
binary cross-entropy on the logits, one independent yes/no per label; metrics are micro and
macro F1 and mean average precision.
"""
import torch
from torch import nn

from harness import Data, Recipe, tasks
from harness.data import digits28


def _pairs(split, n: int, seed: int):
    x, y = split
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(len(y), (n,), generator=g), torch.randint(len(y), (n,), generator=g)
    images = torch.cat([x[a], x[b]], dim=3)  # (n, 1, 28, 56)
    targets = torch.zeros(n, 10)
    targets[torch.arange(n), y[a]] = 1.0
    targets[torch.arange(n), y[b]] = 1.0
    return images, targets  # float (n, 10) of 0/1


def load_data() -> Data:
    d = digits28()  # pairs are drawn within each split, so no digit image crosses splits
    return Data(train=_pairs(d.train, 2000, 0), val=_pairs(d.val, 400, 1), test=_pairs(d.test, 400, 2),
                class_names=d.class_names)


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 16, 14, 28)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 7, 14)
        nn.Flatten(), nn.Linear(32 * 7 * 14, 128), nn.ReLU(),
        nn.Linear(128, 10),                                           # (N, 10) logits, one per label
    )


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


RECIPE = Recipe(
    model=build_model,
    data=load_data,
    task=tasks.MultiLabel(10),
    optimizer=adam,
    lr=1e-3,
    batch_size=64,
    epochs=8,
    name="multilabel",
)
