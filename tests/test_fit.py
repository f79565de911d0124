"""The fit loop: counted steps, divergence, early stopping, subsets, Datasets, evaluation."""
import math

import pytest
import torch

from harness import Data, History, RecipeError, evaluate, fit, train
from harness.data import synthetic
from harness.models import mlp
from harness.schedules import adam, sgd, step_lr


def small_data(n=200, seed=0):
    return synthetic(n_train=n, n_val=64, n_test=64, shape=(1, 8, 8), num_classes=4, seed=seed)


def small_model():
    torch.manual_seed(0)
    return mlp(64, (32,), 4)


def test_history_records_every_epoch():
    h = fit(small_model(), small_data(), lr=0.1, batch_size=32, epochs=3)
    assert h.epochs_run == 3 and len(h.val_acc) == len(h.lr) == len(h.seconds) == 3
    assert h.steps == [math.ceil(200 / 32)] * 3
    assert h.train_loss[-1] < h.train_loss[0]
    assert History.from_dict(h.to_dict()) == h


def test_drop_last_gives_floor_steps():
    h = fit(small_model(), small_data(), lr=0.1, batch_size=32, epochs=1, drop_last=True)
    assert h.steps == [200 // 32]


def test_steps_are_counted_not_computed():
    calls = []

    def every_other_step(model, x, y, optimizer, loss_fn):
        calls.append(1)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if len(calls) % 2:
            optimizer.step()
        return loss

    h = fit(small_model(), small_data(), lr=0.1, batch_size=20, epochs=1, train_step=every_other_step)
    assert h.steps == [5] and len(calls) == 10
    assert math.isnan(h.train_acc[0])  # a step returning only the loss gives no train accuracy


def test_nan_loss_stops_at_once():
    d = small_data()
    x = d.train[0].clone()
    x[:] = float("nan")
    h = fit(small_model(), Data(train=(x, d.train[1]), val=d.val), lr=0.1, batch_size=2, epochs=5)
    assert h.diverged and h.epochs_run == 1 and "nan" in h.diverged_reason


def test_huge_lr_diverges_and_stops_early():
    h = fit(small_model(), small_data(), lr=1e4, batch_size=16, epochs=10, num_classes=4)
    assert h.diverged and h.epochs_run < 10


def test_early_stopping_restores_the_best_weights():
    d = small_data()
    model = small_model()
    h = fit(model, d, optimizer=adam(), lr=0.05, batch_size=16, epochs=30, patience=2)
    assert h.stopped_early and h.best_epoch < h.epochs_run
    from harness.fit import evaluate_loss_acc
    _, acc = evaluate_loss_acc(model, d.val)
    assert acc == pytest.approx(h.val_acc[h.best_epoch - 1])


def test_step_lr_changes_lr_at_the_right_epochs():
    h = fit(small_model(), small_data(), lr=0.1, batch_size=64, epochs=5, scheduler=step_lr(2, 0.1))
    assert h.lr == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_subset_trains_on_fewer_samples():
    h = fit(small_model(), small_data(), lr=0.1, batch_size=10, epochs=1, subset=0.25)
    assert h.steps == [5]


def test_dataset_split_falls_back_to_a_dataloader():
    d = small_data()
    ds = torch.utils.data.TensorDataset(*d.train)
    h_ds = fit(small_model(), Data(train=ds, val=d.val), lr=0.1, batch_size=32, epochs=2, seed=3)
    assert h_ds.steps == [7, 7] and h_ds.train_loss[-1] < h_ds.train_loss[0]


def test_same_seed_same_history_bit_for_bit():
    d = small_data()
    a = fit(small_model(), d, lr=0.1, batch_size=16, epochs=2, seed=5)
    b = fit(small_model(), d, lr=0.1, batch_size=16, epochs=2, seed=5)
    assert a.train_loss == b.train_loss and a.val_acc == b.val_acc


@pytest.mark.parametrize("kwargs, fragment", [
    ({"lr": -1.0}, "lr must be a positive"), ({"lr": 0.0}, "lr must be a positive"),
    ({"lr": float("nan")}, "lr must be a positive"), ({"batch_size": 0}, "batch_size must be"),
    ({"epochs": 0}, "epochs must be"), ({"device": "cuda:0" if not torch.cuda.is_available() else "nope"}, "--device"),
])
def test_bad_hyperparameters_are_one_line(kwargs, fragment):
    with pytest.raises(RecipeError, match=fragment):
        fit(small_model(), small_data(), **{"lr": 0.1, "batch_size": 8, "epochs": 1, **kwargs})


def test_train_uses_the_recipe_and_evaluate_reports_macro_metrics():
    from harness import Recipe
    recipe = Recipe(model=lambda: mlp(64, (32,), 4), data=small_data, num_classes=4, lr=0.2,
                    batch_size=16, epochs=5, optimizer=sgd(momentum=0.9))
    run = train(recipe, seed=1)
    metrics = evaluate(run.model, small_data().test)
    assert metrics["accuracy"] > 0.5
    assert set(metrics) == {"accuracy", "precision_macro", "recall_macro", "f1_macro", "infer_seconds"}


def test_an_explosion_that_kills_the_network_stops_it_as_diverged():
    """A step past 4x chance, then two epochs at chance: dead units, caught though never non-finite."""
    from harness.fit import _divergence
    reason = _divergence([2.37, 2.33], 4.0, 10, peak_loss=[50.0, 2.4])
    assert "reached 50" in reason
    # a slow lr sits at chance too, but never spikes: not divergence
    assert _divergence([2.305, 2.305, 2.304], 4.0, 10, peak_loss=[2.31, 2.31, 2.31]) == ""
    h = fit(small_model(), small_data(), lr=1e-4, batch_size=16, epochs=4, num_classes=4)
    assert not h.diverged and len(h.peak_loss) == 4 and max(h.peak_loss) >= max(h.train_loss)


def _regression_data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) / 3 + 0.1 * torch.randn(n, 1, generator=g)
    return Data(train=(x[:384], y[:384]), val=(x[384:448], y[384:448]), test=(x[448:], y[448:]))


def test_a_regression_that_explodes_in_its_first_epoch_is_diverged():
    """A regression has no loss at init to compare with, and the only other reference was the first
    epoch: an lr of 1000 that exploded in epoch 1 (loss 7.5e33, then lower) was 'diverged False'
    and a complete trial (found by R on examples/regression.py). The first step's loss is the reference."""
    from harness import tasks
    torch.manual_seed(0)
    h = fit(mlp(8, (32,), 1), _regression_data(), task=tasks.Regression(), optimizer=adam(), lr=1000.0,
            batch_size=32, epochs=3)  # Adam's bounded steps: huge and finite, no NaN to catch
    assert h.diverged and h.epochs_run == 1 and math.isfinite(h.train_loss[0]), h.train_loss
    assert "over 1e+06x the first step's loss (the model at init: " in h.diverged_reason


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("batch_size", [1, 32])
def test_a_healthy_regression_is_not_diverged_even_at_batch_1(seed, batch_size):
    """One batch's loss is the reference: a lucky first sample (batch 1) must not make learning look
    like an explosion (an epoch would have to be 1e6 times its loss)."""
    from harness import tasks
    torch.manual_seed(seed)
    h = fit(mlp(8, (32,), 1), _regression_data(seed=seed), task=tasks.Regression(), lr=0.01, batch_size=batch_size,
            epochs=2, seed=seed)
    assert not h.diverged, h.diverged_reason
