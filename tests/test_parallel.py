"""Worker processes: two workers on one study give the same table as one process.

    .venv/bin/python -m pytest tests/test_parallel.py -q

Workers are `python -m harness.study.workers` processes with capped threads that claim trials
from the study's storage (tests/test_study_workers.py kills them).
"""
from pathlib import Path

import pytest
import torch

from harness import data as hdata, models
from harness.recipe import Recipe, RecipeError
from harness.study import Config, run_study

SPEC = f"{Path(__file__).resolve()}:RECIPE"   # workers load the recipe from this file
TIMING = ("Train_time_s", "Infer_time_s")


def tiny_data():
    return hdata.synthetic(n_train=384, n_val=96, n_test=96, shape=(1, 8, 8), seed=3)


def tiny_model():
    return models.mlp(64, (16,), 10)


RECIPE = Recipe(model=tiny_model, data=tiny_data, num_classes=10, lr=0.1, batch_size=32, epochs=2, name="tiny")


def configs():
    return [Config(lr=lr, batch_size=32, epochs=2, seed=s) for lr in (0.01, 0.1, 0.5) for s in (0, 1)]


def same_table(a: list, b: list):
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b):
        for column, value in ra["row"].items():
            if column not in TIMING:
                assert value == pytest.approx(rb["row"][column], abs=1e-5), (ra["config"], column)
        for field in ("train_loss", "val_loss", "train_acc", "val_acc", "steps", "lr"):
            assert ra["history"][field] == pytest.approx(rb["history"][field], abs=1e-5), (ra["config"], field)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers run one thread each; keep the float rounding alike
    try:
        return run_study(SPEC, configs(), tmp_path_factory.mktemp("seq"), progress=False)
    finally:
        torch.set_num_threads(before)


def test_two_workers_give_the_sequential_table(sequential, tmp_path, capfd):
    parallel = run_study(SPEC, configs(), tmp_path, jobs=2, progress=True)
    assert "running 6 trials in 2 worker processes" in capfd.readouterr().err
    same_table(parallel, sequential)


def test_tensor_data_given_by_the_caller_is_shipped_to_workers(sequential, tmp_path):
    same_table(run_study(SPEC, configs(), tmp_path, jobs=2, data=tiny_data(), progress=False), sequential)


def test_never_more_workers_than_trials_left(tmp_path, capfd):
    run_study(SPEC, configs()[:1], tmp_path, jobs=4)
    assert "running 1 trial in this process" in capfd.readouterr().err


def test_without_a_spec_it_runs_sequentially_and_says_why(tmp_path, capfd):
    results = run_study(None, configs()[:2], tmp_path, recipe=RECIPE, jobs=2)
    assert len(results) == 2 and "needs a recipe spec" in capfd.readouterr().err


def test_bad_modes_name_the_flag(tmp_path):
    with pytest.raises(RecipeError, match="--vectorize"):
        run_study(None, configs(), tmp_path, recipe=RECIPE, vectorize="sometimes", progress=False)
