"""Vectorised lr sweeps: K stacked copies equal K separate runs within 1e-5.

    .venv/bin/python -m pytest tests/test_vectorized.py -q
"""
from functools import partial
from pathlib import Path

import pytest

from harness import data as hdata, models
from harness.recipe import Recipe
from harness.study import Config, run_config, run_study
from harness.study.stacked import run_configs, why_not

SPEC = f"{Path(__file__).resolve()}:RECIPE"
TIMING = ("Train_time_s", "Infer_time_s")
DATA = hdata.synthetic(n_train=512, n_val=128, n_test=128, shape=(1, 8, 8), seed=5)


def tiny_data():
    return DATA


RECIPE = Recipe(model=partial(models.mlp, 64, (32, 16), 10), data=tiny_data, num_classes=10, name="tiny")


def sweep(lrs, epochs=3, batch_size=32, **options):
    opts = tuple(sorted(options.items()))
    return [Config(lr=lr, batch_size=batch_size, epochs=epochs, seed=7, options=opts) for lr in lrs]


def assert_same(stacked: list, separate: list, tol=1e-5):
    for a, b in zip(stacked, separate):
        assert a["key"] == b["key"]
        for column, value in a["row"].items():
            if column not in TIMING:
                assert value == pytest.approx(b["row"][column], abs=tol), column
        for field in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "steps"):
            assert a["history"][field] == pytest.approx(b["history"][field], abs=tol, nan_ok=True), field
        for field in ("best_epoch", "diverged", "epochs_run" if "epochs_run" in a["history"] else "stopped_early"):
            assert a["history"][field] == b["history"][field], field


@pytest.mark.parametrize("options", [{}, {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
                                     {"momentum": 0.9, "weight_decay": 5e-4}],
                         ids=["plain-sgd", "momentum-wd", "momentum-wd-on-the-recipes-sgd"])
def test_stacked_copies_equal_separate_runs(options):
    configs = sweep((1e-3, 3e-3, 1e-2, 3e-2), **options)
    assert why_not(RECIPE, configs) == ""
    separate = [run_config(RECIPE, DATA, c) for c in configs]
    assert_same(run_configs(RECIPE, DATA, configs), separate)


def test_a_diverging_copy_stops_where_its_separate_run_stops():
    configs = sweep((0.01, 50.0), epochs=2, batch_size=4)          # 128 steps an epoch: two 64-step checks
    stacked = run_configs(RECIPE, DATA, configs)
    separate = [run_config(RECIPE, DATA, c) for c in configs]
    assert separate[1]["history"]["diverged"] and stacked[1]["history"]["diverged"]
    assert stacked[1]["history"]["steps"] == separate[1]["history"]["steps"]
    assert stacked[1]["history"]["diverged_reason"].split(" ")[:3] == separate[1]["history"]["diverged_reason"].split(" ")[:3]
    assert_same(stacked[:1], separate[:1])                            # the healthy copy is unaffected


@pytest.mark.parametrize("change, reason", [
    (lambda cs: [cs[0], Config(lr=0.5, batch_size=64, epochs=3, seed=7)], "differ in more than"),
    (lambda cs: sweep((0.1, 0.2), optimizer="adam"), "Adam, not SGD"),
    (lambda cs: sweep((0.1, 0.2), scheduler="step:1:0.5"), "schedule"),
    (lambda cs: sweep((0.1, 0.2), patience=2), "early stopping"),
    (lambda cs: cs[:1], "fewer than 2"),
])
def test_why_not_names_the_condition(change, reason):
    assert reason in why_not(RECIPE, change(sweep((0.1, 0.2))))


@pytest.mark.parametrize("recipe, reason", [
    (RECIPE.replace(train_step=lambda m, x, y, o, l: l(m(x), y)), "train_step"),
    (RECIPE.replace(model=partial(models.mlp, 64, (16,), 10, dropout=0.2)), "dropout"),
    (RECIPE.replace(model=partial(models.mlp, 64, (16,), 10, batchnorm=True)), "buffers"),
    (RECIPE.replace(model=lambda: models.frozen_first_layer(models.mlp(64, (16,), 10))), "frozen"),
])
def test_why_not_names_the_model_or_step(recipe, reason):
    assert reason in why_not(recipe, sweep((0.1, 0.2)))


def test_a_vectorized_study_gives_the_sequential_table(tmp_path, capfd):
    configs = sweep((1e-3, 1e-2, 3e-2), epochs=2)
    results = run_study(None, configs, tmp_path, recipe=RECIPE, data=DATA, vectorize="on")
    assert "lr-only groups stacked" in capfd.readouterr().err
    assert_same(results, [run_config(RECIPE, DATA, c) for c in configs])


def test_a_vectorized_study_in_two_workers_gives_the_sequential_table(tmp_path):
    configs = sweep((1e-3, 1e-2, 3e-2), epochs=2)
    results = run_study(SPEC, configs, tmp_path, vectorize="on", jobs=2, progress=False)
    assert_same(results, [run_config(RECIPE, DATA, c) for c in configs])


def test_auto_on_cpu_does_not_stack(tmp_path, capfd):
    run_study(None, sweep((1e-3, 1e-2), epochs=1), tmp_path, recipe=RECIPE, data=DATA, vectorize="auto", device="cpu")
    assert "stacked" not in capfd.readouterr().err


def test_a_grid_stacks_each_batch_size_separately(tmp_path):
    configs = sweep((1e-3, 1e-2), epochs=1, batch_size=32) + sweep((1e-3, 1e-2), epochs=1, batch_size=64)
    results = run_study(None, configs, tmp_path, recipe=RECIPE, data=DATA, vectorize="on", progress=False)
    assert_same(results, [run_config(RECIPE, DATA, c) for c in configs])


def test_what_cannot_be_stacked_is_said(tmp_path, capfd):
    run_study(None, sweep((0.1, 0.2), optimizer="adam"), tmp_path, recipe=RECIPE, data=DATA, vectorize="on")
    assert "not vectorized: the optimizer is Adam, not SGD" in capfd.readouterr().err
