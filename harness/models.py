"""Model builders: plain functions named after what they build.

    from harness.models import fashion_mlp, cifar_mlp, small_cnn, row_lstm
    model = fashion_mlp()                                # the seed notebook's MLP
    model = cifar_mlp(batchnorm=True, dropout=0.2)        # the blog's MLP and its regularised form
"""
from __future__ import annotations

from torch import nn


def mlp(in_features: int, hidden: tuple, num_classes: int, batchnorm: bool = False,
        dropout: float = 0.0) -> nn.Sequential:
    """Flatten -> [Linear -> (BatchNorm) -> ReLU -> (Dropout)] * len(hidden) -> Linear."""
    layers: list = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def fashion_mlp(num_classes: int = 10) -> nn.Sequential:
    """The seed notebook's model: Flatten -> 784->256 -> ReLU -> 256->128 -> ReLU -> 10."""
    return mlp(28 * 28, (256, 128), num_classes)


def cifar_mlp(num_classes: int = 10, hidden: int = 100, batchnorm: bool = False,
              dropout: float = 0.0) -> nn.Sequential:
    """The blog's model: 3072->100 -> ReLU -> 100->100 -> ReLU -> 10, BatchNorm/Dropout optional."""
    return mlp(3 * 32 * 32, (hidden, hidden), num_classes, batchnorm=batchnorm, dropout=dropout)


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """Two conv blocks and a linear head, for 28x28 (or 32x32) images."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(2 * width * 16, num_classes),
    )


class RowLSTM(nn.Module):
    """Reads an image row by row (a 28-step sequence of 28 features) and classifies the last state."""

    def __init__(self, row_size: int = 28, hidden: int = 64, num_classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(row_size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        seq = x.flatten(1, -2) if x.dim() > 3 else x  # (B, 1, 28, 28) -> (B, 28, 28)
        out, _ = self.lstm(seq)
        return self.head(out[:, -1])


def row_lstm(row_size: int = 28, hidden: int = 64, num_classes: int = 10) -> RowLSTM:
    return RowLSTM(row_size, hidden, num_classes)


def frozen_first_layer(model: nn.Module) -> nn.Module:
    """Freeze the first parameterised layer of `model` (requires_grad=False), e.g. a fixed feature layer."""
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params:
            for p in params:
                p.requires_grad_(False)
            break
    return model
