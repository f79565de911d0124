"""Sequence tagging: read a row of handwritten digits and tag each one with its class.

    pytest --pyargs harness.suites -m sanity --recipe examples/tagging.py:RECIPE
    harness train --recipe examples/tagging.py:RECIPE

Each input is a sequence of up to 8 digits, each digit a 7x7 image flattened to 49 features:
(N, 8, 49). Sequences are 3 to 8 digits long; the rest is padding, tagged with the ignore
index -100 so it counts in neither the loss nor the metrics. Targets: (N, 8) int64. The model
is a bidirectional LSTM with `batch_first=True` and (N, 8, 10) outputs: the class along the
last dim, which is `tasks.Dense(10, class_dim=-1)`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from harness import Data, Recipe, tasks
from harness.data import digits28

LENGTH, FEATURES = 8, 49


def _sequences(split, n: int, seed: int):
    x, y = split
    pixels = F.avg_pool2d(x, 4).flatten(1)                         # (M, 49): each digit at 7x7
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(y), (n, LENGTH), generator=g)         # (n, 8) digit indices
    lengths = torch.randint(3, LENGTH + 1, (n, 1), generator=g)
    real = torch.arange(LENGTH) < lengths                          # (n, 8): False on padding
    inputs = pixels[pick] * real[..., None]                        # (n, 8, 49), zeros on padding
    tags = torch.where(real, y[pick], -100)                        # (n, 8)
    return inputs, tags


def load_data() -> Data:
    d = digits28()
    return Data(train=_sequences(d.train, 1000, 0), val=_sequences(d.val, 200, 1),
                test=_sequences(d.test, 200, 2), class_names=d.class_names)


class Tagger(nn.Module):
    def __init__(self, num_classes: int = 10, hidden: int = 64):
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, x):                                          # (N, T, 49)
        h, _ = self.rnn(x)                                         # (N, T, 2 * hidden)
        return self.head(h)                                        # (N, T, C)


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


RECIPE = Recipe(
    model=Tagger,
    data=load_data,
    task=tasks.Dense(10, class_dim=-1),
    optimizer=adam,
    lr=3e-3,
    batch_size=64,
    epochs=10,
    name="tagging",
)
