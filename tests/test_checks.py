"""Each check, called directly: it fires on a deliberately broken setup and passes on a healthy one.

The suite-level proof (a planted bug fails `pytest -m sanity` naming the symptom) is in
test_gallery.py; here the numbers each check reports are compared with plain torch.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import data as D
from harness.checks import model as M
from harness.checks.overfit import check_overfit
from harness.checks.result import CheckResult
from harness.checks.step import check_train_step
from harness import Data, Recipe
from harness.data import synthetic
from harness.models import mlp
from tests.gallery import bugs

torch.set_num_threads(1)


def data():
    return synthetic(n_train=200, n_val=60, n_test=60, shape=(1, 8, 8), num_classes=4, seed=0)


def recipe(**changes):
    base = dict(model=lambda: mlp(64, (32,), 4), data=data, num_classes=4, lr=0.1)
    base.update(changes)
    return Recipe(**base)


@pytest.fixture
def batch():
    x, y = data().train
    return x[:16], y[:16]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mlp(64, (32,), 4)


def test_message_has_the_five_parts():
    r = D.check_inputs_finite(Data(train=(torch.tensor([[math.nan]]), torch.tensor([0])), val=None))
    text = r.message()
    assert isinstance(r, CheckResult) and not r.passed
    for part in ("[inputs_not_finite]", "expected:", "why it matters:", "what to try:", "--harness-suppress inputs_finite", "read more:"):
        assert part in text


def test_split_shapes():
    assert D.check_split_shapes(data()).passed
    d = data()
    assert D.check_split_shapes(Data(train=(d.train[0], d.train[1][:-1]), val=d.val)).name == "split_lengths_differ"
    assert D.check_split_shapes(Data(train=(d.train[0][:0], d.train[1][:0]), val=d.val)).name == "split_empty"
    assert D.check_split_shapes(Data(train=(d.train[0], d.train[1].float()), val=d.val)).name == "targets_not_class_indices"


def test_inputs_finite_and_range():
    d = data()
    assert D.check_inputs_finite(d).passed and D.check_input_range(d).passed
    raw = Data(train=((d.train[0] * 255).round(), d.train[1]), val=d.val)
    r = D.check_input_range(raw)
    assert r.name == "inputs_out_of_range" and "raw integer pixel" in r.message()
    assert f"max {float(raw.train[0].max()):.4g}" in r.observed  # the number comes from the data
    assert not D.check_input_range(d, input_range=(0.0, 0.5)).passed


def test_labels_range_missing_class_and_balance():
    d = data()
    assert D.check_labels(d, 4).passed
    assert D.check_labels(Data(train=(d.train[0], d.train[1] + 1), val=d.val), 4).name == "labels_out_of_range"
    only3 = d.train[1].clamp(max=2)
    assert D.check_labels(Data(train=(d.train[0], only3), val=d.val), 4).name == "class_missing"
    skew = d.train[1].clone()
    skew[5:] = 0
    r = D.check_class_balance(Data(train=(d.train[0], skew), val=d.val), 4)
    assert r.name == "classes_imbalanced" and r.data["counts"] == torch.bincount(skew, minlength=4).tolist()
    assert D.check_class_balance(d, 4).passed


def test_splits_disjoint_counts_the_shared_samples():
    d = data()
    assert D.check_splits_disjoint(d).passed
    r = D.check_splits_disjoint(Data(train=d.train, val=(d.train[0][:7], d.train[1][:7]), test=d.test))
    assert r.name == "splits_overlap" and r.data["overlaps"] == {"train/val": 7}


def test_labels_predictable():
    d = data()
    assert D.check_labels_predictable(d, 4).passed
    y = d.train[1][torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    assert D.check_labels_predictable(Data(train=(d.train[0], y), val=d.val), 4).name == "labels_look_shuffled"


def test_output_shape(model, batch):
    assert M.check_output_shape(model, batch, 4).passed
    assert M.check_output_shape(model, batch, 5).name == "output_shape_wrong"
    assert M.check_output_shape(nn.Linear(3, 4), batch, 4).name == "forward_crashed"


def test_outputs_are_logits(model, batch):
    assert M.check_outputs_not_probabilities(model, batch, F.cross_entropy).passed
    soft = nn.Sequential(model, nn.Softmax(1))
    assert M.check_outputs_not_probabilities(soft, batch, F.cross_entropy).name == "outputs_are_probabilities"
    assert M.check_outputs_not_probabilities(soft, batch, F.nll_loss).passed  # other losses: not applicable


def test_loss_at_init_matches_plain_torch(model, batch):
    r = M.check_loss_at_init(model, batch, F.cross_entropy, 4)
    with torch.no_grad():
        oracle = F.cross_entropy(model(batch[0]), batch[1]).item()
    assert r.passed and r.data["loss"] == pytest.approx(oracle)
    with torch.no_grad():
        model[-1].weight.mul_(200)
    assert M.check_loss_at_init(model, batch, F.cross_entropy, 4).name == "loss_at_init_too_high"
    cheat = lambda out, y: F.cross_entropy(out, y) * 0.1  # noqa: E731
    torch.manual_seed(0)
    assert M.check_loss_at_init(mlp(64, (32,), 4), batch, cheat, 4).name == "loss_at_init_too_low"


def test_gradients(model, batch):
    assert M.check_gradients(model, batch, F.cross_entropy).passed
    with torch.no_grad():
        model[1].bias.fill_(-100.0)
    r = M.check_gradients(model, batch, F.cross_entropy)
    assert r.name == "params_get_zero_gradient" and "1.weight" in r.observed


def test_registered_submodules():
    assert M.check_registered_submodules(mlp(64, (32,), 4)).passed
    assert M.check_registered_submodules(nn.LSTM(4, 4)).passed  # torch's own private lists are fine
    assert M.check_registered_submodules(bugs._ListMLP()).name == "unregistered_submodules"


def test_one_step(model, batch):
    assert M.check_one_step(model, batch, recipe()).passed
    half = recipe(optimizer=lambda params, lr: torch.optim.SGD(list(params)[2:], lr=lr))
    assert M.check_one_step(model, batch, half).name == "params_not_in_optimizer"
    model[1].weight.requires_grad_(False)
    r = M.check_one_step(model, batch, recipe())
    assert r.passed and "1 frozen unchanged" in r.observed

    def writes_frozen(m, x, y, opt, loss_fn):
        with torch.no_grad():
            m[1].weight.add_(1.0)
        return bugs._step_without_zero_grad(m, x, y, opt, loss_fn)
    assert M.check_one_step(model, batch, recipe(train_step=writes_frozen)).name == "frozen_params_changed"


def test_batch_independence_and_eval_determinism(model, batch):
    assert M.check_batch_independence(model, batch).passed
    assert M.check_eval_deterministic(model, batch).passed
    mixing = bugs._MixingMLP()
    x28 = torch.rand(16, 1, 28, 28)
    assert M.check_batch_independence(mixing, (x28, batch[1])).name == "batch_samples_interact"
    assert M.check_eval_deterministic(bugs._AlwaysDropout(), (x28, batch[1])).name == "eval_not_deterministic"


def _two_batches():
    x, y = data().train
    return [(x[:32], y[:32]), (x[32:64], (y[32:64] + 1) % 4)]


def clip_norm_step(model, x, y, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y) * 4.0  # a scaled loss and a clipped gradient keep its direction
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.01)
    optimizer.step()
    return loss


def clip_value_step(model, x, y, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    optimizer.step()
    return loss


@pytest.mark.parametrize("step", [None, clip_norm_step, clip_value_step])
def test_train_step_accepts_correct_steps(model, step):
    r = check_train_step(model, _two_batches(), recipe(train_step=step))
    assert r.passed, r.message()
    r = check_train_step(model, _two_batches(), recipe(train_step=step, optimizer=lambda p, lr: torch.optim.Adam(p, lr=1e-3)))
    assert r.passed, r.message()


@pytest.mark.parametrize("step, symptom", [
    (bugs._step_without_zero_grad, "gradients_accumulate_across_steps"),
    (bugs._step_before_backward, "optimizer_steps_before_backward"),
])
def test_train_step_catches_broken_steps(model, step, symptom):
    assert check_train_step(model, _two_batches(), recipe(train_step=step)).name == symptom


def test_train_step_catches_a_skipped_step(model):
    calls = []

    def skip_second(m, x, y, opt, loss_fn):
        calls.append(1)
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        if len(calls) == 1:
            opt.step()
        return loss
    assert check_train_step(model, _two_batches(), recipe(train_step=skip_second)).name == "optimizer_step_skipped"


def test_overfit(model, batch):
    assert check_overfit(model, batch, recipe()).passed
    torch.manual_seed(0)
    soft = nn.Sequential(mlp(64, (32,), 4), nn.Softmax(1))
    r = check_overfit(soft, batch, recipe(), max_steps=300)
    assert r.name == "cannot_overfit_batch" and "softmax" in r.message()
    torch.manual_seed(0)
    assert check_overfit(mlp(64, (32,), 4), (batch[0][:1], batch[1][:1]), recipe(), max_steps=150).passed
