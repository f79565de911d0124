"""A torchvision ResNet-18 (random weights) on the default digits, resized to 3x32x32.

    pytest --pyargs harness.suites -m sanity --recipe examples/resnet18_digits.py:RECIPE
    harness train --recipe examples/resnet18_digits.py:RECIPE

The model is torchvision's own `resnet18(num_classes=10)`, unchanged: no glue, the harness
calls `model(x)` on the (N, 3, 32, 32) batches. SGD with momentum and weight decay, as the
ResNet paper trains it.
"""
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from harness import Data, Recipe, tasks
from harness.data import digits28


def _rgb32(split):
    x, y = split
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)  # (N, 1, 32, 32)
    return x.expand(-1, 3, -1, -1).contiguous(), y  # (N, 3, 32, 32): grey digits as RGB


def load_data() -> Data:
    d = digits28()
    return Data(train=_rgb32(d.train), val=_rgb32(d.val), test=_rgb32(d.test), class_names=d.class_names)


def build_model() -> torch.nn.Module:
    return resnet18(num_classes=10)  # random weights: nothing is downloaded


def sgd_momentum(params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


RECIPE = Recipe(
    model=build_model,
    data=load_data,
    task=tasks.Classification(10),
    optimizer=sgd_momentum,
    lr=0.02,
    batch_size=64,
    epochs=5,
    name="resnet18_digits",
)
