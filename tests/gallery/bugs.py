"""The bug gallery: recipes with one planted bug each, and the sanity check that must catch it.

    pytest --pyargs harness.suites -m sanity --recipe tests/gallery/bugs.py:SOFTMAX_BEFORE_CE

Every recipe here is the healthy digits28 recipe with exactly one thing broken; `CAUGHT_BY`
maps each recipe to the symptom the sanity suite must name. tests/test_gallery.py runs them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from harness import Data, Recipe
from harness.data import digits28
from harness.models import fashion_mlp
from harness.schedules import adam, sgd


def _recipe(name, **changes):
    base = dict(model=fashion_mlp, data=digits28, num_classes=10, lr=0.1, batch_size=128, epochs=15, name=name)
    base.update(changes)
    return Recipe(**base)


# 1. softmax applied before cross_entropy (which applies log-softmax again)
def _softmax_mlp():
    return nn.Sequential(fashion_mlp(), nn.Softmax(dim=1))


SOFTMAX_BEFORE_CE = _recipe("softmax_before_ce", model=_softmax_mlp)


# 2. a reshape that mixes samples across the batch: (B, 1, 28, 28) viewed as (784, B) then transposed
class _MixingMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = fashion_mlp()

    def forward(self, x):
        mixed = x.reshape(28 * 28, -1).t()  # should be x.reshape(len(x), -1)
        return self.net(mixed)


BATCH_MIXING_RESHAPE = _recipe("batch_mixing_reshape", model=_MixingMLP)


# 3. a layer left out of the optimizer: only the later layers are handed to SGD
def _sgd_skipping_first_layer(params, lr):
    params = list(params)
    return torch.optim.SGD(params[2:], lr=lr)  # bug: params[0:2] (first Linear) never trained


LAYER_LEFT_OUT_OF_OPTIMIZER = _recipe("layer_left_out_of_optimizer", optimizer=_sgd_skipping_first_layer)


# 4. inputs left in 0-255
def _digits_0_255():
    d = digits28()
    return Data(train=(d.train[0] * 255, d.train[1]), val=(d.val[0] * 255, d.val[1]),
                test=(d.test[0] * 255, d.test[1]))


INPUTS_0_255 = _recipe("inputs_0_255", data=_digits_0_255)


# 5. a custom train_step that never calls zero_grad
def _step_without_zero_grad(model, x, y, optimizer, loss_fn):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()  # bug: gradients from every earlier step are still there
    return loss


NO_ZERO_GRAD = _recipe("no_zero_grad", train_step=_step_without_zero_grad)


# 6. a dead-ReLU initialisation: large negative biases switch every hidden unit off
def _dead_relu_mlp():
    model = fashion_mlp()
    with torch.no_grad():
        model[1].bias.fill_(-10.0)
    return model


DEAD_RELU_INIT = _recipe("dead_relu_init", model=_dead_relu_mlp)


# 7. a validation split overlapping the training split
def _val_overlaps_train():
    d = digits28()
    x, y = d.train
    return Data(train=(x, y), val=(x[:200], y[:200]), test=d.test)


VAL_OVERLAPS_TRAIN = _recipe("val_overlaps_train", data=_val_overlaps_train)


# 8. NaN in the data
def _digits_with_nan():
    d = digits28()
    x = d.train[0].clone()
    x[::50, 0, 14, 14] = float("nan")
    return Data(train=(x, d.train[1]), val=d.val, test=d.test)


NAN_IN_DATA = _recipe("nan_in_data", data=_digits_with_nan)


# 9. labels shuffled apart from their inputs
def _shuffled_labels():
    d = digits28()
    g = torch.Generator().manual_seed(0)
    x, y = d.train
    return Data(train=(x, y[torch.randperm(len(y), generator=g)]), val=d.val, test=d.test)


LABELS_SHUFFLED = _recipe("labels_shuffled", data=_shuffled_labels)


# 10. optimizer.step() before loss.backward()
def _step_before_backward(model, x, y, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    optimizer.step()  # bug: steps on the (cleared) gradient, before backward
    loss.backward()
    return loss


STEP_BEFORE_BACKWARD = _recipe("step_before_backward", train_step=_step_before_backward)


# 11. dropout that stays on in eval mode
class _AlwaysDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = fashion_mlp()

    def forward(self, x):
        return self.net(F.dropout(x, p=0.2, training=True))  # should be training=self.training


DROPOUT_IN_EVAL = _recipe("dropout_in_eval", model=_AlwaysDropout)


# 12. the wrong number of outputs
WRONG_OUTPUT_WIDTH = _recipe("wrong_output_width", model=lambda: fashion_mlp(num_classes=9))


# 13. labels numbered from 1
def _labels_from_one():
    d = digits28()
    return Data(train=(d.train[0], d.train[1] + 1), val=(d.val[0], d.val[1] + 1), test=(d.test[0], d.test[1] + 1))


LABELS_FROM_ONE = _recipe("labels_from_one", data=_labels_from_one)


# 14. hidden layers kept in a plain Python list (invisible to .parameters())
class _ListMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = [nn.Linear(784, 256), nn.Linear(256, 128)]  # should be nn.ModuleList
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


LAYERS_IN_PLAIN_LIST = _recipe("layers_in_plain_list", model=_ListMLP)


# 15. a detach that cuts the graph after the first layer
class _DetachedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(784, 256)
        self.rest = nn.Sequential(nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.rest(self.first(x.flatten(1)).detach())  # bug: no gradient reaches self.first


DETACHED_FIRST_LAYER = _recipe("detached_first_layer", model=_DetachedMLP)


# 16. a last layer initialised far too large
def _huge_head_mlp():
    model = fashion_mlp()
    with torch.no_grad():
        model[-1].weight.mul_(100.0)
    return model


HUGE_LAST_LAYER_INIT = _recipe("huge_last_layer_init", model=_huge_head_mlp)


# --- bug classes from issue 10: each also has a healthy twin in healthy.py ---------------------

# 17. Adam at an lr far too small to learn anything (1e-7)
ADAM_LR_TINY = _recipe("adam_lr_tiny", optimizer=adam(), lr=1e-7)


# 18. SGD's lr (1.0, fine for SGD on this MLP) handed to Adam
SGD_LR_ON_ADAM = _recipe("sgd_lr_on_adam", optimizer=adam(), lr=1.0)


# 19. a weight decay so large it pulls every weight to zero faster than the loss can move it
HUGE_WEIGHT_DECAY = _recipe("huge_weight_decay", optimizer=sgd(momentum=0.9, weight_decay=5.0))


# 20. a custom autograd Function whose backward forgets the mask (ReLU forward, identity backward)
class _LeakyBackwardReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) + 0.5 * grad * (x <= 0)  # bug: negative inputs pass half the gradient


class _CustomReLU(nn.Module):
    def forward(self, x):
        return _LeakyBackwardReLU.apply(x)


def _wrong_backward_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), _CustomReLU(), nn.Linear(256, 128),
                         _CustomReLU(), nn.Linear(128, 10))


WRONG_CUSTOM_BACKWARD = _recipe("wrong_custom_backward", model=_wrong_backward_mlp)


# 21. a last layer initialised over-confident, though the loss at init stays inside 1/2..2 x ln C
def _overconfident_head_mlp():
    model = fashion_mlp()
    with torch.no_grad():
        model[-1].weight.mul_(30.0)
    return model


OVERCONFIDENT_HEAD = _recipe("overconfident_head", model=_overconfident_head_mlp)


# 22. an LSTM given (N, T, F) without batch_first=True: it runs along the batch, mixing samples
class _TimeMajorLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 64)  # bug: batch_first=False, but the input is (N, T, F)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        out, _ = self.lstm(x.flatten(1, -2))
        return self.head(out[:, -1])


RNN_TIME_MAJOR = _recipe("rnn_time_major", model=_TimeMajorLSTM, optimizer=adam(), lr=3e-3)


# 23. inputs divided by 255 although they were already in [0, 1]
def _digits_scaled_twice():
    d = digits28()
    return Data(train=(d.train[0] / 255, d.train[1]), val=(d.val[0] / 255, d.val[1]),
                test=(d.test[0] / 255, d.test[1]))


INPUTS_SCALED_TWICE = _recipe("inputs_scaled_twice", data=_digits_scaled_twice)


# 24. a debug subset left on: the first 100 training samples only
def _debug_subset():
    d = digits28()
    return Data(train=(d.train[0][:100], d.train[1][:100]), val=d.val, test=d.test)


DEBUG_SUBSET = _recipe("debug_subset", data=_debug_subset)


# 25. a debug subset tiled back to full size: 64 samples repeated
def _tiled_subset():
    d = digits28()
    x, y = d.train
    reps = len(y) // 64
    return Data(train=(x[:64].repeat(reps, 1, 1, 1), y[:64].repeat(reps)), val=d.val, test=d.test)


TILED_DEBUG_SUBSET = _recipe("tiled_debug_subset", data=_tiled_subset)


# 26. a validation split standardised while the training split stays in [0, 1]
def _val_standardised():
    d = digits28()
    xv = d.val[0]
    return Data(train=d.train, val=((xv - 0.3) / 0.33, d.val[1]), test=d.test)


VAL_PREPROCESSED_DIFFERENTLY = _recipe("val_preprocessed_differently", data=_val_standardised)


# 27. augmentation that changes the label's meaning: half the images rotated 180 degrees (a 6 becomes a 9)
class AugmentedDigits(torch.utils.data.Dataset):
    """digits28's training split as a Dataset whose __getitem__ applies a random `transform`:
    the way a recipe declares augmentation (see harness.checks.data.check_augmentation_labels)."""

    def __init__(self, split, transform):
        self.x, self.y = split
        self.transform = transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def _rotate_half_180(image):
    return torch.rot90(image, 2, dims=(1, 2)) if torch.rand(()) < 0.5 else image


def _label_changing_augmentation():
    d = digits28()
    return Data(train=AugmentedDigits(d.train, _rotate_half_180), val=d.val, test=d.test)


LABEL_CHANGING_AUGMENTATION = _recipe("label_changing_augmentation", data=_label_changing_augmentation)


# 28. SqueezeNet 1.1 (torchvision, random weights, 64x64 digits) with SGD momentum at lr 0.01, wd 2e-4:
# its head is Conv -> ReLU -> AvgPool, so every logit is >= 0, and these steps push each class's channel
# below zero everywhere: all logits 0, the loss sits at ln 10, and nothing reaches the model again.
# Evidence (2026-11-30): `harness train --recipe tests/gallery/stock.py:SQUEEZENET` with this setting gave
# val accuracy 0.1004 after 100 steps (the lead); here 0.096 and 0.137 on seeds 0 and 1 (train loss
# 2.307 -> 2.303). The stock gallery's SQUEEZENET trains the same model with Adam (see stock.py).
def SQUEEZENET_DEAD_HEAD():
    import importlib.util
    import sys
    from pathlib import Path

    key = "_harness_stock_gallery"
    if key not in sys.modules:  # by path: a --recipe file is not imported as part of the tests package
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name("stock.py"))
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    stock = sys.modules[key]
    return stock.SQUEEZENET.replace(optimizer=stock.sgd_momentum(2e-4), lr=0.01, scheduler=None,
                                    name="squeezenet_dead_head")


CAUGHT_BY = {
    "SOFTMAX_BEFORE_CE": "outputs_are_probabilities",
    "BATCH_MIXING_RESHAPE": "batch_samples_interact",
    "LAYER_LEFT_OUT_OF_OPTIMIZER": "params_not_in_optimizer",
    "INPUTS_0_255": "inputs_out_of_range",
    "NO_ZERO_GRAD": "gradients_accumulate_across_steps",
    "DEAD_RELU_INIT": "params_get_zero_gradient",
    "VAL_OVERLAPS_TRAIN": "splits_overlap",
    "NAN_IN_DATA": "inputs_not_finite",
    "LABELS_SHUFFLED": "labels_look_shuffled",
    "STEP_BEFORE_BACKWARD": "optimizer_steps_before_backward",
    "DROPOUT_IN_EVAL": "eval_not_deterministic",
    "WRONG_OUTPUT_WIDTH": "output_shape_wrong",
    "LABELS_FROM_ONE": "labels_out_of_range",
    "LAYERS_IN_PLAIN_LIST": "unregistered_submodules",
    "DETACHED_FIRST_LAYER": "params_get_no_gradient",
    "HUGE_LAST_LAYER_INIT": "loss_at_init_too_high",
    "ADAM_LR_TINY": "recipe_settings_cannot_overfit",
    "SGD_LR_ON_ADAM": "recipe_settings_cannot_overfit",
    "HUGE_WEIGHT_DECAY": "recipe_settings_cannot_overfit",
    "WRONG_CUSTOM_BACKWARD": "gradient_mismatches_finite_differences",
    "OVERCONFIDENT_HEAD": "logits_overconfident_at_init",
    "RNN_TIME_MAJOR": "batch_samples_interact",
    "INPUTS_SCALED_TWICE": "inputs_scale_too_small",
    "DEBUG_SUBSET": "train_smaller_than_val",
    "TILED_DEBUG_SUBSET": "train_rows_mostly_duplicates",
    "VAL_PREPROCESSED_DIFFERENTLY": "train_val_distribution_shift",
    "LABEL_CHANGING_AUGMENTATION": "augmentation_changes_labels",
    "SQUEEZENET_DEAD_HEAD": "cannot_overfit_batch",
}
