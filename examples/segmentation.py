"""Segmentation: label every pixel of a digit with its class, background with 0.

    pytest --pyargs harness.suites -m sanity --recipe examples/segmentation.py:RECIPE
    harness train --recipe examples/segmentation.py:RECIPE

Inputs (N, 1, 28, 28); targets (N, 28, 28) int64: 0 where there is no ink, 1 + the digit's
class where there is. The model is a small U-Net with (N, 11, 28, 28) outputs: a class per
pixel along dim 1, which is what `tasks.Dense(11)` expects. Metrics: pixel accuracy, mean IoU.
"""
import torch
from torch import nn

from harness import Data, Recipe, tasks
from harness.data import digits28

INK = 0.3  # a pixel brighter than this belongs to the digit


def _masks(split):
    x, y = split
    masks = torch.where(x[:, 0] > INK, y[:, None, None] + 1, 0)  # (N, 28, 28)
    return x, masks


def load_data() -> Data:
    d = digits28()
    return Data(train=_masks(d.train), val=_masks(d.val), test=_masks(d.test),
                class_names=("background",) + d.class_names)


def _block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class UNet(nn.Module):
    """Two levels down, two up, with skip connections (Ronneberger et al., 2015), small."""

    def __init__(self, num_classes: int = 11, width: int = 16):
        super().__init__()
        self.down1, self.down2 = _block(1, width), _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2), _block(4 * width, 2 * width)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2), _block(2 * width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):                                             # (N, 1, 28, 28)
        d1 = self.down1(x)                                            # (N, w, 28, 28)
        d2 = self.down2(self.pool(d1))                                # (N, 2w, 14, 14)
        b = self.bottom(self.pool(d2))                                # (N, 4w, 7, 7)
        u2 = self.dec2(torch.cat([self.up2(b), d2], dim=1))           # (N, 2w, 14, 14)
        u1 = self.dec1(torch.cat([self.up1(u2), d1], dim=1))          # (N, w, 28, 28)
        return self.head(u1)                                          # (N, C, 28, 28)


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


RECIPE = Recipe(
    model=UNet,
    data=load_data,
    task=tasks.Dense(11),
    optimizer=adam,
    lr=3e-3,
    batch_size=32,
    epochs=5,
    name="segmentation",
)
