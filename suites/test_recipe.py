"""`pytest -m recipe`: does the recipe train the way the seed notebook and the blog say it should?

    pytest -m recipe                                        # the embedded default (digits28), ~30 s on 2 cores
    pytest --pyargs harness.suites -m recipe --recipe my_recipe.py:RECIPE --harness-diverge-lr 10

Learning rate (a too-high lr diverges and is caught, a tiny lr learns far less, the recipe's lr is
the best of 1e-4..1.0), batch size (steps counted per epoch, smaller batches reach a lower loss),
the lr range test, the blog's subset tuning, early stopping, StepLR and the zero-input baseline.
Every run is seeded by the test's `seed`; tolerances are in checks/dynamics.py. Each test is named
`test_<check id>` (harness.checks.registry), so `--harness-suppress <id>` skips it before it runs.
"""
import pytest
import torch

from harness.checks import dynamics as dyn
from harness.data import split_len
from harness.fit import evaluate_loss_acc, train
from harness.lr_find import lr_find
from harness.schedules import step_lr

pytestmark = pytest.mark.recipe
BATCH_SUBSET = 4096  # batch-size runs train on at most this many samples, to keep batch 8 affordable


def run(recipe, data, seed, device, **overrides):
    return train(recipe, data=data, seed=seed, device=device, **overrides).history


def test_lr_divergence(recipe, recipe_data, harness_settings, device, seed, verify):
    lr = dyn.high_lr(recipe.lr, harness_settings["diverge_lr"] or recipe.diverge_lr)
    history = run(recipe, recipe_data, seed, device, lr=lr, diverge_factor=dyn.DIVERGE_FACTOR)
    verify(dyn.check_diverges(history, lr, recipe.epochs, recipe.num_classes))


def test_low_lr_learns_less(recipe, recipe_data, device, seed, verify):
    low = dyn.low_lr(recipe.lr)
    low_run, recipe_run = (run(recipe, recipe_data, seed, device, lr=lr) for lr in (low, recipe.lr))
    verify(dyn.check_low_lr_learns_less(low_run, recipe_run, low, recipe.lr, recipe.num_classes))


def test_recipe_lr_best(recipe, recipe_data, device, seed, verify):
    runs = {lr: run(recipe, recipe_data, seed, device, lr=lr) for lr in {*dyn.LR_GRID, recipe.lr}}
    verify(dyn.check_recipe_lr_best(runs, recipe.lr))


@pytest.mark.parametrize("batch_size, drop_last", [(8, False), (8, True), (100, True), (2048, False)])
def test_steps_counted(recipe, recipe_data, device, seed, verify, batch_size, drop_last):
    n = min(split_len(recipe_data.train), BATCH_SUBSET)
    history = run(recipe, recipe_data, seed, device, batch_size=batch_size, drop_last=drop_last, epochs=1, subset=n)
    verify(dyn.check_steps_per_epoch(history, n, batch_size, drop_last))


def test_batch_size_loss(recipe, recipe_data, device, seed, verify):
    n, epochs = min(split_len(recipe_data.train), BATCH_SUBSET), min(recipe.epochs, 3)
    small, large = (run(recipe, recipe_data, seed, device, batch_size=b, epochs=epochs, subset=n) for b in (8, 2048))
    verify(dyn.check_small_batch_lower_loss(small, large, 8, 2048, recipe.lr))


def test_lr_find(recipe, recipe_data, device, seed, verify):
    torch.manual_seed(seed)
    result = lr_find(recipe.build_model(), recipe_data, loss=recipe.loss, optimizer=recipe.optimizer, batch_size=recipe.batch_size,
                     train_step=recipe.train_step, lr_max=10.0, device=device, seed=seed)
    verify(dyn.check_lr_find(result, recipe.lr, lr_max=10.0))


def test_subset_ranking(recipe, recipe_data, device, seed, verify):
    n = split_len(recipe_data.train)
    lrs, k = [recipe.lr * f for f in (0.1, 1.0, 10.0)], dyn.subset_size(n)
    epochs = dyn.subset_epochs(recipe.epochs, n, k, recipe.batch_size)  # as many steps as on the full set
    on_subset = {lr: run(recipe, recipe_data, seed, device, lr=lr, subset=k, epochs=epochs) for lr in lrs}
    on_full = {lr: run(recipe, recipe_data, seed, device, lr=lr) for lr in lrs}
    verify(dyn.check_subset_ranking(on_subset, on_full, k, n))


def test_early_stopping(recipe, recipe_data, device, seed, verify):
    trained = train(recipe, data=recipe_data, seed=seed, device=device, patience=2)
    _, val_acc = evaluate_loss_acc(trained.model, recipe_data.val, recipe.loss, device,
                                   task=recipe.task, forward=recipe.forward)  # the task's main metric, as fit
    verify(dyn.check_early_stopping(trained.history, val_acc, split_len(recipe_data.val)))


def test_step_lr(recipe, recipe_data, device, seed, verify):
    history = run(recipe, recipe_data, seed, device, epochs=5, scheduler=step_lr(2, 0.1),
                  subset=min(split_len(recipe_data.train), 512))
    verify(dyn.check_step_lr(history, recipe.lr, 2, 0.1))


def test_input_baseline(recipe, recipe_data, device, seed, verify):
    epochs = min(recipe.epochs, 5)
    real = run(recipe, recipe_data, seed, device, epochs=epochs)
    zero = run(recipe, dyn.zeroed(recipe_data), seed, device, epochs=epochs)
    verify(dyn.check_uses_inputs(real, zero))
