"""Healthy recipes beyond the built-ins: the sanity and recipe suites must raise no false alarm.

    pytest --pyargs harness.suites -m sanity --recipe tests/gallery/healthy.py:SMALL_CNN
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from harness import Data, Recipe
from harness.data import digits28
from harness.models import fashion_mlp, frozen_first_layer, mlp, row_lstm, small_cnn
from harness.schedules import adam, sgd


def adamw(weight_decay):
    return lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

# lr 1.0 is not too high for this CNN (it sometimes trains well at 1.0); 5.0 kills or explodes it
SMALL_CNN = Recipe(model=small_cnn, data=digits28, num_classes=10, lr=0.1, batch_size=64,
                   epochs=10, diverge_lr=5.0, name="small_cnn")

BN_DROPOUT_MLP_ADAM = Recipe(model=partial(mlp, 784, (256, 128), 10, batchnorm=True, dropout=0.2),
                             data=digits28, num_classes=10, optimizer=adam(), lr=1e-3,
                             batch_size=64, epochs=15, name="bn_dropout_mlp_adam")

LSTM = Recipe(model=row_lstm, data=digits28, num_classes=10, optimizer=adam(), lr=3e-3,
              batch_size=64, epochs=15, name="row_lstm")

# With its first layer frozen at random features the MLP wants a larger lr: at 0.1 the recipe
# suite rightly reports that 1.0 beats it (recipe_lr_not_best); 0.5 is this recipe's tuned lr.
FROZEN_FIRST_LAYER = Recipe(model=lambda: frozen_first_layer(fashion_mlp()), data=digits28,
                            num_classes=10, lr=0.5, batch_size=128, epochs=15, name="frozen_first_layer")


# --- healthy twins of the issue-10 bug classes (tests/gallery/bugs.py) -------------------------

# twin of WRONG_CUSTOM_BACKWARD: the same custom autograd ReLU with its backward right
class _ReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class _CustomReLU(nn.Module):
    def forward(self, x):
        return _ReLUFunction.apply(x)


CUSTOM_BACKWARD = Recipe(model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 256), _CustomReLU(),
                                                     nn.Linear(256, 128), _CustomReLU(), nn.Linear(128, 10)),
                         data=digits28, num_classes=10, lr=0.1, batch_size=128, epochs=15, name="custom_backward")


# twin of OVERCONFIDENT_HEAD and of the zero-init false alarm: a zero-initialised head (as torchvision's
# ViT), SGD with momentum and weight decay, label smoothing and a warmup-cosine schedule stepped per step
def _zero_head_mlp():
    model = fashion_mlp()
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].bias.zero_()
    return model


def _warmup_cosine(optimizer, total_steps):
    warm = max(1, total_steps // 20)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warm))], milestones=[warm])


ZERO_HEAD_SMOOTHED_SGD = Recipe(model=_zero_head_mlp, data=digits28, num_classes=10,
                                optimizer=sgd(momentum=0.9, weight_decay=5e-4), lr=0.05,
                                loss=partial(F.cross_entropy, label_smoothing=0.1), scheduler=_warmup_cosine,
                                batch_size=128, epochs=15, name="zero_head_smoothed_sgd")

# twin of SGD_LR_ON_ADAM / ADAM_LR_TINY / HUGE_WEIGHT_DECAY: AdamW at its usual lr and weight decay
ADAMW = Recipe(model=fashion_mlp, data=digits28, num_classes=10, optimizer=adamw(0.01), lr=1e-3,
               batch_size=128, epochs=15, name="adamw")

# twin of LABEL_CHANGING_AUGMENTATION: random shifts of up to 2 pixels keep every digit's meaning
def _shift(image):
    dy, dx = torch.randint(-2, 3, (2,)).tolist()
    return torch.roll(image, shifts=(dy, dx), dims=(1, 2))


def _shift_augmented():
    from tests.gallery.bugs import AugmentedDigits
    d = digits28()
    return Data(train=AugmentedDigits(d.train, _shift), val=d.val, test=d.test)


SHIFT_AUGMENTATION = Recipe(model=small_cnn, data=_shift_augmented, num_classes=10, lr=0.1, batch_size=64,
                            epochs=10, name="shift_augmentation")

# a healthy recipe with 150,000 training samples (digits28's train split tiled, each copy with its own
# small noise): the suite's cost must not grow with the split (issue 10: under 30 s)
def _digits_150k():
    d = digits28()
    x, y = d.train
    reps = -(-150_000 // len(y))
    g = torch.Generator().manual_seed(0)
    big = x.repeat(reps, 1, 1, 1)[:150_000]
    big = (big + 0.02 * torch.randn(big.shape, generator=g)).clamp_(0, 1)
    return Data(train=(big, y.repeat(reps)[:150_000]), val=d.val, test=d.test)


LARGE_150K = Recipe(model=fashion_mlp, data=_digits_150k, num_classes=10, lr=0.1, batch_size=128, epochs=1,
                    name="large_150k")

# conditional computation: a top-1 mixture of experts. A router picks one of 8 experts per sample by
# argmax and scales its output by the gate (so the router trains); an expert no sample of a batch is
# routed to is not run, and gets no gradient from that batch. `harness train`, 5 epochs: val accuracy 0.933 and
# 0.929 (seeds 0, 1). At init the router sends most rows to 1-3 experts, the rest get rows as it trains.
class TopOneMoE(nn.Module):
    def __init__(self, experts: int = 8, width: int = 64):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU())
        self.router = nn.Linear(width, experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(experts))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = self.trunk(x)                                        # (N, width)
        gate, choice = self.router(h).softmax(-1).max(-1)        # (N,), (N,): the top-1 expert per sample
        mixed = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            rows = (choice == e).nonzero().squeeze(1)
            if len(rows):                                        # experts with no sample are not run
                mixed = mixed.index_add(0, rows, expert(h[rows]) * gate[rows, None])
        return self.head(h + mixed)


TOP1_MOE = Recipe(model=TopOneMoE, data=digits28, num_classes=10, optimizer=adam(), lr=1e-3, batch_size=64,
                  epochs=5, name="top1_moe")

HEALTHY = ["SHIFT_AUGMENTATION", "SMALL_CNN", "BN_DROPOUT_MLP_ADAM", "LSTM", "FROZEN_FIRST_LAYER", "CUSTOM_BACKWARD",
           "ZERO_HEAD_SMOOTHED_SGD", "ADAMW", "TOP1_MOE"]


# --- healthy recipes of other tasks (tests/test_gallery.py runs them with their task's counts) -------

# twin of task_bugs.py's SEGMENTATION_FLIP_IMAGE_ONLY: the same random flips applied to image and mask
def SEGMENTATION_FLIPS():
    from tests.gallery.task_bugs import segmentation_flipped
    return segmentation_flipped(flip_masks=True, name="segmentation_flips")


HEALTHY_DENSE = ["SEGMENTATION_FLIPS"]
