"""A worked example: point the harness at your own model, data and training step.

    pytest --pyargs harness.suites -m sanity --recipe examples/my_recipe.py:RECIPE
    pytest --pyargs harness.suites -m recipe --recipe examples/my_recipe.py:RECIPE
    harness sweep lr --recipe examples/my_recipe.py:RECIPE --values 1e-3,1e-2,1e-1,1

Here "your data" is scikit-learn's 8x8 digits at their native resolution and "your model"
is a small CNN trained with SGD + momentum and a clipped gradient.
"""
import numpy as np
import torch
from torch import nn

from harness import Data, Recipe


def load_data() -> Data:
    """Return Data(train, val, test), each an (inputs, targets) pair: float inputs, int64 targets."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))  # one index for x and y
    x, y = x[order], y[order]
    return Data(train=(x[:1200], y[:1200]), val=(x[1200:1500], y[1200:1500]), test=(x[1500:], y[1500:]))


def build_model() -> nn.Module:
    """A fresh, freshly initialised model per call."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


def train_step(model, inputs, targets, optimizer, loss_fn):
    """Your own step: the sanity suite checks it against zero_grad/forward/backward/step."""
    optimizer.zero_grad(set_to_none=True)
    outputs = model(inputs)
    loss = loss_fn(outputs, targets)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
    optimizer.step()
    return loss, outputs  # returning the outputs lets fit() report training accuracy


RECIPE = Recipe(
    model=build_model,
    data=load_data,
    num_classes=10,
    optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    lr=0.05,
    batch_size=64,
    epochs=10,
    train_step=train_step,
    name="my_recipe",
)
