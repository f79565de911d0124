"""Issue 11, the engine's cases: every broken input is one line, and every valid one simply works.

    .venv/bin/python -m pytest tests/test_bad_inputs_engine.py -q

Each test failed on the code before contract v2 (a raw traceback, a silent result, or a refusal
of valid input) and passes now. They use the v1 API only, so they run unchanged against an older checkout.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness import Data, Recipe, RecipeError, fit
from harness.data import synthetic
from harness.models import mlp


def data(n=96):
    return synthetic(n_train=n, n_val=32, n_test=32, shape=(1, 4, 4), num_classes=4, seed=1)


def model():
    torch.manual_seed(0)
    return mlp(16, (8,), 4)


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    return message


def run(train, val="same", **kwargs):
    d = data()
    val = d.val if isinstance(val, str) else val
    settings = {"lr": 0.1, "batch_size": 16, "epochs": 2, **kwargs}
    return fit(kwargs.pop("net", None) or model(), Data(train=train, val=val), **settings)


# --- valid under the contract: it simply works ----------------------------------------------------

def test_numpy_splits_train():
    d = data()
    x, y = d.train[0].numpy(), d.train[1].numpy()
    h = run((x, y), val=(d.val[0].numpy(), d.val[1].numpy()))
    assert all(math.isfinite(v) for v in h.train_loss + h.val_acc)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16])
def test_integer_labels_of_another_width_train(dtype):
    d = data()
    h = run((d.train[0], d.train[1].to(dtype)), val=(d.val[0], d.val[1].to(dtype)))
    ref = run(d.train, val=d.val)
    assert h.train_loss == ref.train_loss and h.val_acc == ref.val_acc


def test_one_hot_float_labels_are_class_probabilities():
    d = data()
    h = run((d.train[0], F.one_hot(d.train[1], 4).float()), val=(d.val[0], F.one_hot(d.val[1], 4).float()))
    ref = run(d.train, val=d.val)
    assert h.train_loss == pytest.approx(ref.train_loss, rel=1e-5)
    assert h.val_acc == ref.val_acc


class TupleOut(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.net, self.kind = mlp(16, (8,), 4), kind

    def forward(self, x):
        logits = self.net(x)
        return (logits, x.mean()) if self.kind == "tuple" else {"logits": logits, "features": x}


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_tuple_and_dict_outputs_train(kind):
    d = data()
    torch.manual_seed(0)
    h = fit(TupleOut(kind), d, lr=0.1, batch_size=16, epochs=2)
    torch.manual_seed(0)
    ref = fit(TupleOut("tuple").net, d, lr=0.1, batch_size=16, epochs=2)
    assert h.train_loss == ref.train_loss and h.val_acc == ref.val_acc


def test_val_none_trains():
    d = data()
    h = fit(model(), Data(train=d.train), lr=0.1, batch_size=16, epochs=2)
    assert h.epochs_run == 2 and math.isnan(h.val_acc[0]) and h.best_epoch is not None


def test_num_classes_may_be_a_numpy_integer():
    recipe = Recipe(model=model, data=data, num_classes=np.int64(4))
    assert recipe.num_classes == 4 and type(recipe.num_classes) is int


def test_history_lr_is_the_lr_the_optimizer_used():
    """A train_step that sets its own lr: History.lr shows what the optimizer stepped with."""
    def halving_step(m, x, y, opt, loss_fn):
        for group in opt.param_groups:
            group["lr"] = 0.05
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        opt.step()
        return loss

    h = fit(model(), data(), lr=0.1, batch_size=16, epochs=2, train_step=halving_step)
    assert h.lr == [0.05, 0.05]


# --- broken: one line that names the problem and the fix ------------------------------------------

def test_float64_inputs_are_one_line():
    d = data()
    with pytest.raises(RecipeError) as info:
        run((d.train[0].double(), d.train[1]))
    assert "float64" in one_line(info) and "float32" in str(info.value)


@pytest.mark.parametrize("labels, fragment", [
    (lambda y: y.float(), "y.long()"),
    (lambda y: F.one_hot(y, 4), "one-hot"),
    (lambda y: y[:, None], "squeeze"),
])
def test_bad_labels_are_one_line(labels, fragment):
    d = data()
    with pytest.raises(RecipeError) as info:
        run((d.train[0], labels(d.train[1])))
    assert fragment in one_line(info)


class NoParams(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :4]


def test_a_model_without_parameters_is_one_line():
    with pytest.raises(RecipeError) as info:
        fit(NoParams(), data(), lr=0.1, batch_size=16, epochs=1)
    assert "no parameters" in one_line(info)


def test_a_model_with_every_parameter_frozen_is_one_line():
    net = model().requires_grad_(False)
    with pytest.raises(RecipeError) as info:
        fit(net, data(), lr=0.1, batch_size=16, epochs=1)
    assert "frozen" in one_line(info)


def test_a_loss_with_reduction_none_is_one_line():
    with pytest.raises(RecipeError) as info:
        fit(model(), data(), lr=0.1, batch_size=16, epochs=1,
            loss=lambda out, y: F.cross_entropy(out, y, reduction="none"))
    assert "reduction='none'" in one_line(info)


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_a_device_this_machine_lacks_is_one_line(device):
    from harness import resolve_device
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(RecipeError) as info:
        resolve_device(device)
    assert device in one_line(info)


@pytest.mark.parametrize("text", ["step:0", "step:-3", "step:5:0", "warmup:0", "step:5:nan"])
def test_a_scheduler_at_step_0_is_one_line(text):
    from harness.schedules import parse_scheduler
    with pytest.raises(RecipeError) as info:
        parse_scheduler(text)
    assert "--scheduler" in one_line(info)


@pytest.mark.parametrize("factor", [lambda e: 1.0 - e, lambda e: math.nan if e else 1.0])
def test_a_schedule_driving_the_lr_negative_or_nan_is_reported_as_such(factor):
    scheduler = lambda opt, epochs: torch.optim.lr_scheduler.LambdaLR(opt, factor)  # noqa: E731
    with pytest.raises(RecipeError) as info:
        fit(model(), data(), lr=0.1, batch_size=16, epochs=4, scheduler=scheduler)
    assert "learning rate became" in one_line(info) and "diverged" not in str(info.value)


@pytest.mark.parametrize("body, fragment", [
    ("import sys\nsys.exit(3)\n", "sys.exit(3)"),
    ("raise ValueError('first line\\nsecond line')\n", "ValueError: first line"),
    ("def RECIPE():\n    raise SystemExit(0)\n", "sys.exit(0)"),
])
def test_a_recipe_that_exits_or_raises_at_import_is_one_line(tmp_path, body, fragment):
    from harness import load_recipe
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(RecipeError) as info:
        load_recipe(f"{path}:RECIPE")
    assert fragment in one_line(info)


def test_evaluating_a_missing_split_is_one_line():
    from harness import evaluate
    with pytest.raises(RecipeError) as info:
        evaluate(model(), None)
    assert "split is None" in one_line(info)
