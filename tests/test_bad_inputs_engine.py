"""Issue 11, the engine's cases: every broken input is one line, and every valid one simply works.

    .venv/bin/python -m pytest tests/test_bad_inputs_engine.py -q

Each test failed on the code before contract v2 (a raw traceback, a silent result, or a refusal
of valid input) and passes now. They use the v1 API only, so they run unchanged against an older checkout.
"""
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

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


def test_val_none_passes_the_data_checks():
    """val=None is a valid recipe: split_shapes passes (saying so) and the train-vs-val checks skip."""
    from harness.checks import data as data_checks
    recipe = Recipe(model=model, data=lambda: Data(train=data().train), num_classes=4)
    d = recipe.load_data()
    result = data_checks.check_split_shapes(d, recipe)
    assert result.passed and "no val split" in str(result), result
    assert "skipped" in data_checks.check_train_val_shift(d).data
    assert data_checks.check_labels_predictable(d, recipe).passed


@pytest.mark.parametrize("kind", ["no parameters", "all frozen"])
def test_a_model_with_nothing_to_train_is_one_sanity_line(kind):
    """Under pytest: gradients fails with the engine's line, the training checks skip naming it."""
    from harness.checks import model as model_checks
    from harness.checks.gradcheck import check_gradcheck
    from harness.checks.overfit import check_overfit
    from harness.checks.step import check_train_step

    def build():
        if kind == "no parameters":
            return torch.nn.Flatten()
        net = model()
        return net.requires_grad_(False)

    recipe = Recipe(model=build, data=data, num_classes=4)
    x, y = data().train
    batch = (x[:16].reshape(16, -1)[:, :4].contiguous(), y[:16]) if kind == "no parameters" else (x[:16], y[:16])
    result = model_checks.check_gradients(recipe, build(), batch)
    assert result.name == "no_trainable_parameters", result
    for other in (model_checks.check_one_step(recipe, build(), batch), check_gradcheck(recipe, build(), batch),
                  check_train_step(recipe, build(), [batch, batch]), check_overfit(recipe, build(), batch)):
        assert "gradients reports it" in other.data.get("skipped", ""), other


def test_a_schedule_driving_the_lr_negative_is_named_by_the_overfit_check():
    from harness.checks.overfit import check_overfit

    def falling(optimizer, total_steps):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - 10.0 * step / total_steps)

    recipe = Recipe(model=model, data=data, num_classes=4, lr=0.1, scheduler=falling)
    x, y = data().train
    result = check_overfit(recipe, model(), (x[:32], y[:32]))
    assert result.name == "recipe_settings_cannot_overfit" and "the lr became -" in str(result), result
    assert "drives the lr negative or NaN" in str(result)


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


# --- an exception from any user part inside fit/evaluate: one line naming the part and its inputs --

class Boom(Exception):
    """What a user's code raises; its message has two lines, the line the user gets has one."""


def boom(*_):
    raise Boom("boom\nsecond line")


class RaisingNet(nn.Module):
    """An MLP that raises in training mode, or only in eval mode (validation)."""

    def __init__(self, when="train"):
        super().__init__()
        self.net, self.when = mlp(16, (8,), 4), when

    def forward(self, x):
        if self.training == (self.when == "train"):
            boom()
        return self.net(x)


class RaisingDataset(torch.utils.data.Dataset):
    def __init__(self, split, bad=5):
        self.x, self.y, self.bad = *split, bad

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if i == self.bad:
            boom()
        return self.x[i], self.y[i]


class RaisingOptimizer(torch.optim.SGD):
    def step(self, closure=None):
        boom()


class RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        boom()


def _split_with(kind):
    d = data()
    if kind == "train":
        return Data(train=RaisingDataset(d.train), val=d.val)
    return Data(train=d.train, val=RaisingDataset(d.val))


USER_PARTS = {  # part -> (fit settings, what the line must say)
    "model forward": (dict(net=RaisingNet()), "the model's forward (RaisingNet) on train inputs (16, 1, 4, 4) float32"),
    "model forward on val": (dict(net=RaisingNet("eval")), "the model's forward (RaisingNet) on val inputs (32, 1, 4, 4)"),
    "forward=": (dict(forward=lambda m, x: boom()), "forward= (<lambda>) on the model Sequential on train inputs (16,"),
    "loss": (dict(loss=boom), "the loss (boom) on outputs (16, 4) float32 and train targets (16,) int64"),
    "train_step": (dict(train_step=boom), "train_step (boom) on train inputs (16, 1, 4, 4) float32 and targets (16,)"),
    "train Dataset": (dict(data=_split_with("train")), "reading sample 5 of the train split (RaisingDataset)"),
    "val Dataset": (dict(data=_split_with("val")), "reading sample 5 of the val split (RaisingDataset)"),
    "optimizer": (dict(optimizer=lambda params, lr: RaisingOptimizer(params, lr)), "the optimizer's step (RaisingOptimizer)"),
    "scheduler": (dict(step_scheduler=lambda opt, steps: type("S", (), {"step": boom})()), "the scheduler's step (S)"),
    "backward": (dict(loss=lambda out, y: F.cross_entropy(RaisingBackward.apply(out), y)),
                 "loss.backward() raised Boom: boom (the loss () float32 from outputs (16, 4) float32)"),
}


@pytest.mark.parametrize("part", list(USER_PARTS))
def test_an_exception_from_any_user_part_is_one_line_naming_it_and_chained(part):
    settings, fragment = USER_PARTS[part]
    settings = dict(settings)
    d = settings.pop("data", None) or data()
    net = settings.pop("net", None) or model()
    with pytest.raises(RecipeError) as info:
        fit(net, d, lr=0.1, batch_size=16, epochs=1, **settings)
    line = one_line(info)
    assert line.startswith("fit: ") and fragment in line and "raised Boom: boom" in line and "second line" not in line
    assert isinstance(info.value.__cause__, Boom)  # nothing lost for debugging


def test_evaluate_names_the_model_and_its_inputs():
    from harness import evaluate
    with pytest.raises(RecipeError) as info:
        evaluate(RaisingNet("eval"), data().val)
    assert "evaluate: the model's forward (RaisingNet) on inputs (32, 1, 4, 4) float32 raised Boom" in one_line(info)


def test_an_error_in_the_harness_itself_keeps_its_traceback(monkeypatch):
    """Only user code is turned into a line: a bug of ours must stay a bug report."""
    monkeypatch.setattr(sys.modules["harness.fit"], "_accumulate", boom)
    with pytest.raises(Boom):
        fit(model(), data(), lr=0.1, batch_size=16, epochs=1)


def test_ctrl_c_in_the_model_is_not_turned_into_a_line():
    class Interrupted(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(nn.Sequential(Interrupted(), nn.Linear(1, 1)), data(), lr=0.1, batch_size=16, epochs=1)


@pytest.mark.parametrize("dtype, fragment", [(torch.uint8, "x.float() / 255"), (torch.int64, "x.to(torch.float32)")])
def test_integer_inputs_into_a_float_model_name_the_conversion(dtype, fragment):
    d = data()
    with pytest.raises(RecipeError) as info:
        run(((d.train[0] * 255).to(dtype), d.train[1]))
    assert "the model's forward (Sequential)" in one_line(info) and fragment in one_line(info)


def test_a_loss_returning_a_python_float_is_one_line():
    with pytest.raises(RecipeError) as info:
        run(data().train, loss=lambda out, y: F.cross_entropy(out, y).item())
    assert "the loss returned a float" in one_line(info) and "loss.item()" in one_line(info)


def test_a_loss_class_instead_of_an_instance_is_one_line():
    with pytest.raises(RecipeError) as info:
        run(data().train, loss=nn.CrossEntropyLoss)
    assert "loss= is the class CrossEntropyLoss" in one_line(info) and "loss=CrossEntropyLoss()" in one_line(info)


def test_a_train_step_with_another_signature_names_the_one_it_needs():
    def step(model, batch, optimizer):
        return F.cross_entropy(model(batch[0]), batch[1])

    with pytest.raises(RecipeError) as info:
        run(data().train, train_step=step)
    assert "train_step step(model, batch, optimizer) cannot be called as train_step(model, inputs, targets, " \
           "optimizer, loss_fn)" in one_line(info)


def test_a_last_batch_of_one_into_batchnorm_names_drop_last():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    d = data(n=97)
    with pytest.raises(RecipeError) as info:
        fit(net, d, lr=0.1, batch_size=16, epochs=1)
    assert "97 training samples at batch_size 16 leave a last batch of 1" in one_line(info) \
        and "drop_last=True" in one_line(info)
    h = fit(net, d, lr=0.1, batch_size=16, epochs=1, drop_last=True)  # the fix it names works
    assert h.steps == [6]


class AnySize(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_val_of_another_sample_shape_is_named_only_when_the_model_rejects_it():
    d = data()
    val = (torch.rand(32, 1, 6, 6), d.val[1])
    with pytest.raises(RecipeError) as info:
        run(d.train, val=val)  # an MLP on 4x4 inputs
    assert "val inputs (1, 6, 6) per sample, train (1, 4, 4)" in one_line(info)
    torch.manual_seed(0)
    h = fit(AnySize(), Data(train=d.train, val=val), lr=0.1, batch_size=16, epochs=1)  # a model that takes both
    assert math.isfinite(h.val_loss[0])


def test_a_model_instance_or_a_shared_model_is_one_line():
    shared = model()
    with pytest.raises(RecipeError) as info:
        Recipe(model=shared, data=data, num_classes=4).build_model()
    assert "model= is an nn.Module instance (Sequential)" in one_line(info)
    recipe = Recipe(model=lambda: shared, data=data, num_classes=4)
    assert recipe.build_model() is shared
    with pytest.raises(RecipeError) as info:
        recipe.build_model()
    assert "model factory returned the same Sequential object" in one_line(info)
    fresh = Recipe(model=model, data=data, num_classes=4)
    assert fresh.build_model() is not fresh.build_model()


def _loader(shuffle, batch_size=16):
    d = data()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*d.train), batch_size=batch_size, shuffle=shuffle)


@pytest.mark.parametrize("shuffle, batch_size, warns", [(False, 16, True), (True, 16, False), (False, 32, False)])
def test_a_train_dataloader_that_never_shuffles_warns(shuffle, batch_size, warns, recwarn):
    """Used as given (same batch size) without shuffling: a warning; rebuilt (another batch size) it is shuffled."""
    run(_loader(shuffle, batch_size))
    said = [str(w.message) for w in recwarn if "shuffle" in str(w.message)]
    assert len(said) == int(warns) and all("\n" not in s for s in said)


def test_a_subset_larger_than_the_split_warns_and_trains_on_all(recwarn):
    h = run(data().train, subset=1000)
    said = [str(w.message) for w in recwarn if "subset" in str(w.message)]
    assert said == ["fit: subset 1000 is more than the 96-sample training split, so it trains on all 96; give a count "
                    "up to 96 or a fraction in (0, 1] (--subset, subset=)"]
    assert h.steps == [6, 6]
    run(data().train, subset=96)
    assert len([w for w in recwarn if "subset" in str(w.message)]) == 1


def test_a_train_step_calling_a_model_that_raises_names_the_model():
    def step(m, x, y, opt, loss_fn):
        return loss_fn(m(x), y)

    with pytest.raises(RecipeError) as info:
        fit(RaisingNet(), data(), lr=0.1, batch_size=16, epochs=1, train_step=step)
    assert "train_step (step) on train inputs (16, 1, 4, 4) float32 and targets (16,) int64 raised Boom: boom " \
           "(in RaisingNet.forward)" in one_line(info)


def test_default_step_with_a_plain_loss_names_the_loss():
    """Callers of default_step with a loss function of their own (the lr range test) get the same line."""
    from harness.diagnose import user_code
    from harness.recipe import default_step
    net = model()
    d = data()
    with pytest.raises(RecipeError) as info, user_code("lr_find", "train"):
        default_step(net, d.train[0][:8], d.train[1][:8], torch.optim.SGD(net.parameters(), 0.1), boom)
    assert "lr_find: the loss (boom) on outputs (8, 4) float32 and train targets (8,) int64 raised Boom" in one_line(info)


def test_a_diagnosis_that_fails_leaves_the_original_exception(monkeypatch):
    import harness.diagnose
    monkeypatch.setattr(harness.diagnose, "explain", boom)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        run((data().train[0][:, :, :2], data().train[1]))  # 8 features into a 16-feature MLP


def test_the_cli_prints_a_harness_warning_as_one_line(tmp_path):
    """`harness` shows a HarnessWarning as the one line it is, without Python's file:line and source line."""
    import os
    import subprocess
    import sys as _sys
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([_sys.executable, "-m", "harness", "train", "--subset", "100000", "--epochs", "1", "--out",
                           str(tmp_path / "out"), "--quiet", "--no-figures"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert [s for s in done.stderr.splitlines() if s.strip()] == [
        "HarnessWarning: fit: subset 100000 is more than the 1258-sample training split, so it trains on all 1258; "
        "give a count up to 1258 or a fraction in (0, 1] (--subset, subset=)"]


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y = torch.sigmoid(self.fc(x.flatten(1)))
        y += 1  # sigmoid's backward needs its output
        return y


class Ragged(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.rand(16 + i % 2), 1


def _loader_of(dataset, **kw):
    return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, **kw)


def _collate_raises(items):
    boom()


MORE_MISTAKES = {  # mistake -> (fit arguments, what the line must say)
    "last layer too narrow": (lambda d: (mlp(16, (8,), 3), d, {}),
                              "outputs have shape (16, 3), expected (N, 4) logits for 4 classes; check the last layer's width"),
    "dict inputs into a plain model": (lambda d: (model(), Data(train=({"x": d.train[0]}, d.train[1])), {}),
                                       "a dict of inputs is passed as model(**inputs)"),
    "an in-place op that backward needs": (lambda d: (InPlace(), d, {}), "make it out-of-place"),
    "samples of different sizes": (lambda d: (mlp(16, (8,), 4), Data(train=Ragged()), {}),
                                   "collating a batch of the train split (torch's default_collate) raised RuntimeError: "
                                   "stack expects each tensor to be equal size"),
    "a collate_fn that raises": (lambda d: (model(), Data(train=_loader_of(TensorDataset(*d.train),
                                                                           collate_fn=_collate_raises)), {}),
                                 "collating a batch of the train split (_collate_raises) raised Boom: boom; it gets a "
                                 "list of samples and must return (inputs, targets)"),
    "a Dataset raising in a worker process": (lambda d: (model(), Data(train=_loader_of(RaisingDataset(d.train),
                                                                                        num_workers=1)), {}),
                                              "reading a batch of the train split (RaisingDataset) raised Boom: "
                                              "boom (Caught Boom in DataLoader worker process 0)"),
}


@pytest.mark.parametrize("mistake", list(MORE_MISTAKES))
def test_more_mistakes_inside_fit_are_one_line_with_the_fix(mistake):
    build, fragment = MORE_MISTAKES[mistake]
    net, d, settings = build(data())
    with pytest.raises(RecipeError) as info:
        fit(net, d, lr=0.1, batch_size=16, epochs=1, num_classes=4, **settings)
    assert fragment in one_line(info)


@pytest.mark.parametrize("name, fragment", [
    ("UINT8_INPUTS", "lr_find: the model's forward (Sequential) on train inputs (64, 1, 28, 28) uint8"),
    ("STEP_WRONG_SIGNATURE", "lr_find: train_step _step_wrong_signature(model, batch, optimizer) cannot be called"),
    ("BROKEN_DATASET", "lr_find: reading sample 77 of the train split (_BrokenDataset) raised KeyError"),
])
def test_harness_lr_find_on_a_broken_recipe_is_one_line(name, fragment, tmp_path, capsys):
    """`harness lr-find` runs the recipe's own step, so its crashes read as fit's (exit 2, one line)."""
    from harness import cli
    from tests import reliability_recipes
    code = cli.main(["lr-find", "--recipe", f"{reliability_recipes.__file__}:{name}", "--steps", "5",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_an_optimizer_or_scheduler_instance_names_the_factory_to_give():
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=data, num_classes=4, optimizer=opt)
    assert "optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr)" in one_line(info)
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=data, num_classes=4, scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))
    assert "scheduler=lambda optimizer, total_steps:" in one_line(info)


def test_a_list_of_per_sample_tensors_or_dicts_is_named_as_such():
    d = data()
    with pytest.raises(RecipeError) as info:
        run((list(d.train[0]), d.train[1]))
    assert "train inputs are a list of 96 per-sample tensors of shape (1, 4, 4), not a batch; torch.stack(inputs)" \
        in one_line(info)
    detection = [{"boxes": torch.ones(1, 4), "labels": torch.ones(1, dtype=torch.long)} for _ in range(96)]
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=lambda: Data(train=(d.train[0], detection)), num_classes=4).load_data()
    assert "train targets are a list of 96 per-sample dicts (torchvision's detection format), not a batch" \
        in one_line(info)


def test_lengths_that_differ_print_a_few_dimensions_only():
    d = data()
    inputs = tuple(d.train[0][:, :, i] for i in range(4)) + (d.train[0][:10],) * 8  # 12 leaves, the last 8 shorter
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=lambda: Data(train=(inputs, d.train[1])), num_classes=4).load_data()
    assert "first dimensions [96, 96, 96, '...', 10, 96]" in one_line(info)


def test_a_loss_returning_a_tuple_is_one_line():
    with pytest.raises(RecipeError) as info:
        run(data().train, loss=lambda out, y: (F.cross_entropy(out, y), 0))
    assert "the loss returned a tuple of 2 items, not a tensor" in one_line(info)


def test_a_recipe_with_epochs_none_is_one_line():
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=data, num_classes=4, epochs=None)
    assert "Recipe: epochs must be an integer >= 1, got None" in one_line(info)


def test_a_batch_larger_than_the_split_warns_once_per_run_not_per_epoch(recwarn):
    run(data().train, batch_size=1000, epochs=3)
    assert len([w for w in recwarn if "batch_size 1000 is larger" in str(w.message)]) == 1


def test_a_forward_with_another_signature_names_the_one_it_needs():
    with pytest.raises(RecipeError) as info:
        run(data().train, forward=lambda inputs: inputs)
    assert "forward= <lambda>(inputs) cannot be called as forward(model, inputs)" in one_line(info)


def test_outputs_a_custom_loss_takes_but_the_task_does_not_are_one_line():
    """A (N,) output with a BCE loss under Classification(2): the loss works, the task's accuracy cannot."""
    d = synthetic(n_train=96, n_val=32, n_test=0, shape=(1, 4, 4), num_classes=2, seed=1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Flatten(0))
    with pytest.raises(RecipeError) as info:
        fit(net, d, num_classes=2, lr=0.1, batch_size=16, epochs=1,
            loss=lambda out, y: F.binary_cross_entropy_with_logits(out, y.float()))
    assert "the task's metric (Classification(num_classes=2)) on outputs (16,) float32" in one_line(info) \
        and "expected (N, 2) logits for 2 classes" in one_line(info)
