"""Recipe contract v2: v1 recipes unchanged, (model, lr) optimizers, per-step schedulers, forward= and
output unwrapping, Dataset and DataLoader splits, dict and tuple inputs.

    .venv/bin/python -m pytest tests/test_contract.py -q
"""
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness import Data, Recipe, RecipeError, tasks, train
from harness.data import synthetic
from harness.fit import fit
from harness.models import mlp


def data():
    return synthetic(n_train=128, n_val=32, n_test=32, shape=(1, 4, 4), num_classes=4, seed=3)


def net():
    return mlp(16, (8,), 4)


def test_a_v1_recipe_is_unchanged():
    v1 = Recipe(model=net, data=data, num_classes=4, loss=F.cross_entropy,
                optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr), lr=0.1, batch_size=16, epochs=2)
    short = Recipe(model=net, data=data, num_classes=4, lr=0.1, batch_size=16, epochs=2)
    assert short.task == tasks.Classification(4) and short.num_classes == 4
    assert v1.task == short.task and callable(short.loss)
    a, b = train(v1, seed=1).history, train(short, seed=1).history
    assert a.train_loss == b.train_loss and a.val_acc == b.val_acc


def test_task_and_num_classes_must_agree_and_replace_keeps_them_consistent():
    r = Recipe(model=net, data=data, task=tasks.Classification(4))
    assert r.num_classes == 4 and r.loss.task == r.task
    regression = r.replace(task=tasks.Regression())
    assert regression.num_classes is None and regression.loss.task == regression.task
    import pickle
    assert pickle.loads(pickle.dumps(r)) == r
    assert r.replace(num_classes=7).task == tasks.Classification(7)
    with pytest.raises(RecipeError, match="disagrees"):
        Recipe(model=net, data=data, task=tasks.Classification(4), num_classes=5)
    with pytest.raises(RecipeError, match="task="):
        Recipe(model=net, data=data)


def test_an_optimizer_factory_taking_the_model():
    def two_groups(model, lr):   # the first parameter named `model`: it gets the model
        return torch.optim.SGD([{"params": model[1].parameters()}, {"params": model[3].parameters(), "lr": lr / 10}], lr=lr)

    recipe = Recipe(model=net, data=data, num_classes=4, optimizer=two_groups, lr=0.2, batch_size=16, epochs=2)
    opt = recipe.make_optimizer(recipe.build_model())
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.02])
    assert recipe.make_optimizer(recipe.build_model(), lr=1.0).param_groups[1]["lr"] == pytest.approx(0.1)
    assert train(recipe).history.epochs_run == 2


def test_the_scheduler_steps_after_every_optimizer_step():
    def linear_decay(optimizer, total_steps):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total_steps)

    recipe = Recipe(model=net, data=data, num_classes=4, scheduler=linear_decay, lr=0.1, batch_size=16, epochs=3)
    h = train(recipe).history
    steps, total = 8, 24   # 128 / 16 a epoch
    assert h.lr == pytest.approx([0.1 * (1 - e * steps / total) for e in range(3)])
    model = recipe.build_model()
    opt = recipe.make_optimizer(model)
    sched = recipe.make_scheduler(opt, 10)
    x, y = data().train
    loss, outputs = recipe.step(model, x[:8], y[:8], opt, sched)
    assert loss.dim() == 0 and outputs.shape == (8, 4) and opt.param_groups[0]["lr"] == pytest.approx(0.09)


def test_forward_and_output_unwrapping():
    class HFLike(nn.Module):
        def __init__(self, wrap):
            super().__init__()
            self.net, self.wrap = net(), wrap

        def forward(self, x):
            return self.wrap(self.net(x))

    x = torch.randn(5, 1, 4, 4)
    torch.manual_seed(0)
    plain = net()
    expected = plain(x)

    class Output(OrderedDict):      # transformers' ModelOutput: a dict with attributes
        def __getattr__(self, name):
            return self[name]

    recipe = Recipe(model=net, data=data, num_classes=4)
    for wrap in (lambda t: t, lambda t: Output(logits=t), lambda t: {"logits": t}, lambda t: (t, t.sum())):
        m = HFLike(wrap)
        m.net = plain
        assert torch.equal(recipe.forward(m, x), expected)
    doubled = recipe.replace(forward=lambda model, inputs: model(inputs * 2))
    assert torch.equal(doubled.forward(plain, x), plain(x * 2)) and doubled.forward.fn is not None
    bad = HFLike(lambda t: {"scores": t})
    with pytest.raises(RecipeError, match="forward="):
        recipe.forward(bad, x)


def test_dataset_and_dataloader_splits_train():
    d = data()
    base = Recipe(model=net, data=data, num_classes=4, lr=0.1, batch_size=16, epochs=2)
    ref = train(base, seed=2).history
    ds = Data(train=TensorDataset(*d.train), val=TensorDataset(*d.val))
    h_ds = train(base.replace(data=lambda: ds), seed=2).history
    loader = Data(train=DataLoader(TensorDataset(*d.train), batch_size=16, shuffle=True), val=DataLoader(TensorDataset(*d.val), batch_size=7))
    h_dl = train(base.replace(data=lambda: loader), seed=2).history
    assert h_ds.steps == h_dl.steps == ref.steps == [8, 8]
    assert h_ds.val_loss[-1] < h_ds.val_loss[0] and h_dl.val_loss[-1] < h_dl.val_loss[0]
    # validation reads every sample whatever the loader's batch size
    assert h_ds.val_acc[0] * 32 == pytest.approx(round(h_ds.val_acc[0] * 32))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(5, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, left, right):
        return self.head(torch.relu(self.a(left) + self.b(right)))


def two_input_data(as_dict: bool):
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(160, 3, generator=g), torch.randn(160, 5, generator=g)
    y = ((left[:, 0] + right[:, 0]) > 0).long()
    x = {"left": left, "right": right} if as_dict else (left, right)
    take = (lambda s: {k: v[s] for k, v in x.items()}) if as_dict else (lambda s: (x[0][s], x[1][s]))
    return Data(train=(take(slice(32, None)), y[32:]), val=(take(slice(0, 32)), y[:32]))


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_two_input_models_train_on_tuple_and_dict_inputs(as_dict):
    d = two_input_data(as_dict)
    recipe = Recipe(model=TwoInputs, data=lambda: d, num_classes=2, lr=0.5, batch_size=16, epochs=5)
    h = train(recipe).history
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.8
    from harness import evaluate
    run = train(recipe)
    assert set(evaluate(run.model, d.val)) >= {"accuracy", "f1_macro"}


def test_fit_takes_a_config_object_and_restores_threads_and_mode_when_it_raises():
    from harness.fit import FitConfig
    model = net().eval()
    threads = torch.get_num_threads()

    def boom(m, x, y, opt, loss_fn):
        raise RuntimeError("boom")

    with pytest.raises(RecipeError, match="train_step .* raised RuntimeError: boom") as info:  # one line, chained
        fit(model, data(), FitConfig(lr=0.1, batch_size=16, epochs=1, train_step=boom))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not model.training and torch.get_num_threads() == threads
    with pytest.raises(RecipeError, match="unknown setting 'learning_rate'"):
        fit(model, data(), learning_rate=0.1)
    h = fit(net(), data(), FitConfig(lr=0.1, batch_size=16, epochs=1), epochs=2)
    assert h.epochs_run == 2 and math.isfinite(h.train_loss[-1])


def test_torchvision_segmentation_dict_output_is_unwrapped_to_out():
    """FCN / DeepLabV3 / LRASPP return {"out": ..., "aux": ...}: "out" holds the logits."""
    from harness.recipe import unwrap_outputs

    out, aux = torch.randn(2, 11, 8, 8), torch.randn(2, 11, 8, 8)
    assert unwrap_outputs({"out": out, "aux": aux}) is out
    with pytest.raises(RecipeError, match=r"\['out'\]"):
        unwrap_outputs({"masks": out})
