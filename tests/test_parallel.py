"""Parallel sweeps: worker processes with capped threads give the same table as sequential runs.

    .venv/bin/python -m pytest tests/test_parallel.py -q
"""
from pathlib import Path

import pytest
import torch

from harness import data as hdata, models
from harness.recipe import Recipe
from harness.study.runs import Config, execute, plan

SPEC = f"{Path(__file__).resolve()}:RECIPE"   # workers load the recipe from this file
TIMING = ("Train_time_s", "Infer_time_s")


def tiny_data():
    return hdata.synthetic(n_train=384, n_val=96, n_test=96, shape=(1, 8, 8), seed=3)


def tiny_model():
    return models.mlp(64, (16,), 10)


RECIPE = Recipe(model=tiny_model, data=tiny_data, num_classes=10, lr=0.1, batch_size=32, epochs=2, name="tiny")


def configs():
    return [Config(lr=lr, batch_size=32, epochs=2, seed=s) for lr in (0.01, 0.1, 0.5) for s in (0, 1)]


def run(jobs, data=None, vectorize="off"):
    got = {}
    chosen = execute(SPEC, configs(), on_result=lambda c, r: got.__setitem__(c, r), data=data,
                     jobs=jobs, vectorize=vectorize)
    return got, chosen


def same_table(a: dict, b: dict):
    assert a.keys() == b.keys()
    for config in a:
        ra, rb = a[config], b[config]
        assert ra["key"] == rb["key"]
        for column, value in ra["row"].items():
            if column not in TIMING:
                assert value == pytest.approx(rb["row"][column], abs=1e-5), (config, column)
        for field in ("train_loss", "val_loss", "train_acc", "val_acc", "steps", "lr"):
            assert ra["history"][field] == pytest.approx(rb["history"][field], abs=1e-5), (config, field)


@pytest.fixture(scope="module")
def sequential():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers run one thread each; keep the float rounding alike
    try:
        return run(jobs=1)[0]
    finally:
        torch.set_num_threads(before)


def test_two_workers_give_the_sequential_table(sequential, capfd):
    parallel, chosen = run(jobs=2)
    assert chosen.jobs == 2 and chosen.threads >= 1
    assert "2 worker processes x" in capfd.readouterr().err
    same_table(parallel, sequential)


def test_tensor_data_given_by_the_caller_is_shipped_to_workers(sequential):
    parallel, _ = run(jobs=2, data=tiny_data())
    same_table(parallel, sequential)


def test_threads_per_worker_are_capped_to_cores_over_jobs(monkeypatch):
    monkeypatch.setattr("harness.runtime.cores", lambda: 8)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    chosen = plan(SPEC, RECIPE, None, configs(), jobs=4)
    assert (chosen.jobs, chosen.threads) == (4, 2)
    assert plan(SPEC, RECIPE, None, configs()[:2], jobs=4).jobs == 2   # never more workers than runs


def test_without_a_spec_it_runs_sequentially_and_says_why(capfd):
    got = []
    chosen = execute(None, configs()[:2], on_result=lambda c, r: got.append(c), recipe=RECIPE, jobs=2)
    assert chosen.jobs == 1 and len(got) == 2
    assert "needs a recipe spec" in capfd.readouterr().err


def test_bad_modes_name_the_flag():
    with pytest.raises(ValueError, match="--vectorize"):
        plan(SPEC, RECIPE, None, configs(), vectorize="sometimes")
