"""The study engine on Optuna, in one process: plans, resume, identity, pruning, reports.

    OMP_NUM_THREADS=1 python -m pytest tests/test_study.py -q -p no:cacheprovider

Worker processes, kills and shared storages are tested in tests/test_study_workers.py.
"""
import csv
import io
import json
import math
import os
import stat
import warnings

import numpy as np
import optuna
import pytest
import torch

from harness import study
from harness.data import digits28
from harness.eda import format_summary, summarize_data, write_eda
from harness.recipe import RecipeError
from harness.study import Config, Space
from harness.study.progress import StudyProgress
from harness.study.reports import labels
from harness.study.storage import counts, default_url, load_existing
from tests.recipes_dynamics.recipes import TINY

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


# --- plans: grids and sampled points, never a repeat by accident -------------------------------------

def test_sweep_configs_vary_one_setting():
    lr = study.sweep_configs("lr", [1e-3, 1e-2], lr=0.5, batch_size=64, epochs=3, seeds=[0, 1])
    assert [(c.lr, c.batch_size, c.seed) for c in lr] == [(1e-3, 64, 0), (1e-3, 64, 1), (1e-2, 64, 0), (1e-2, 64, 1)]
    bs = study.sweep_configs("batch-size", [8, 32], lr=0.01, batch_size=128, epochs=3)
    assert [(c.lr, c.batch_size) for c in bs] == [(0.01, 8), (0.01, 32)]
    assert len({c.key() for c in lr + bs}) == 6


@pytest.mark.parametrize("sampler", ["qmc", "random"])
def test_search_plans_are_distinct_reproducible_and_in_range(sampler):
    space = Space.parse("1e-4:1", "8:512")
    a = study.search_configs(12, space, epochs=2, seeds=[0, 1, 2], sampler=sampler, rng_seed=7)
    b = study.search_configs(12, space, epochs=2, seeds=[0, 1, 2], sampler=sampler, rng_seed=7)
    assert a == b and len(a) == 36
    points = [(c.lr, c.batch_size) for c in a if c.seed == 0]
    assert len(set(points)) == 12  # no configuration twice
    assert all(1e-4 <= lr <= 1 and 8 <= bs <= 512 for lr, bs in points)
    assert sorted(c.seed for c in a if (c.lr, c.batch_size) == points[0]) == [0, 1, 2]  # seeds are seeds
    assert len({c.key() for c in a}) == 36


def test_search_on_a_small_space_refuses_instead_of_repeating():
    with pytest.raises(RecipeError, match=r"--trials 7: the space .* holds only 6 distinct"):
        study.search_configs(7, Space.parse("1e-3,1e-2,1e-1", "16,32"), epochs=2)
    plan = study.search_configs(6, Space.parse("1e-3,1e-2,1e-1", "16,32"), epochs=2)
    assert len({(c.lr, c.batch_size) for c in plan}) == 6


def test_bad_ranges_name_the_flag():
    for lr, bs, flag in (("1:0.1", "8:16", "--lr"), ("x", "8:16", "--lr"), ("0.1", "8.5:16", "--batch-size")):
        with pytest.raises(RecipeError, match=flag):
            Space.parse(lr, bs)


def test_bad_ranges_say_what_is_wrong_and_the_fix():
    """A reversed range, a log range from 0 and an infinite bound: one line each, with the range to give
    (were the same generic line, and an infinite bound a traceback from the sampler or int())."""
    for lr, bs, says in (("1:1e-4", "8:16", "give --lr 0.0001:1"), ("0:1", "8:16", "0 has no logarithm"),
                         ("1e-3:inf", "8:16", "--lr '1e-3:inf': the bounds must be finite"),
                         ("0.1", "8:inf", "--batch-size '8:inf'"), ("0.1", "0:8", "give e.g. --batch-size 1:8"),
                         ("0.1,0", "8", "0 is not a positive number")):
        with pytest.raises(RecipeError) as info:
            Space.parse(lr, bs)
        assert says in str(info.value) and "\n" not in str(info.value)


# --- tables ----------------------------------------------------------------------------------------------

def fake_result(lr, seed, acc, seconds=1.0, diverged=False):
    config = Config(lr=lr, batch_size=32, epochs=2, seed=seed)
    row = {"learning_rate": lr, "batch_size": 32, "seed": seed, "Accuracy": acc, "Precision_macro": acc,
           "Recall_macro": acc, "F1_macro": acc, "Train_time_s": seconds, "Infer_time_s": 0.01, "steps": 20,
           "steps_per_epoch": 10, "epochs_run": 2, "diverged": diverged, "train_samples": 320}
    return {"key": config.key(), "config": {"lr": lr, "batch_size": 32, "epochs": 2, "seed": seed, "options": []},
            "row": row, "history": {}}


def test_summarize_sorts_by_accuracy_and_pools_seeds():
    results = [fake_result(lr, s, acc) for lr, accs in ((0.01, (0.5, 0.7)), (0.1, (0.9, 0.8)), (1.0, (0.1, 0.1)))
               for s, acc in enumerate(accs)]
    results[-1]["row"]["diverged"] = True
    rows = study.summarize(results)
    assert [r["learning_rate"] for r in rows] == [0.1, 0.01, 1.0]
    assert rows[0]["Accuracy"] == pytest.approx(np.mean([0.9, 0.8]))
    assert rows[0]["Accuracy_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert rows[0]["seeds"] == 2 and rows[2]["diverged"] == 1
    text = study.format_table(rows)
    assert "0.8500 ± 0.0707" in text
    assert len({len(line) for line in text.splitlines()}) == 1  # aligned


def test_seeds_with_a_metric_that_is_not_finite_pool_to_nan():
    """A diverged regression's MSE or a language model's perplexity over seeds: mean and std NaN in the
    table (statistics.stdev raised AttributeError on NaN: a traceback after the whole search had run)."""
    results = [fake_result(1.0, s, math.nan, diverged=True) for s in (0, 1)] + [fake_result(0.1, 0, 0.9)]
    rows = study.summarize(results)
    assert math.isnan(rows[1]["Accuracy"]) and math.isnan(rows[1]["Accuracy_std"]) and rows[1]["diverged"] == 2
    assert "nan ± nan" in study.format_table(rows)


def test_a_configuration_left_with_one_seed_says_so():
    """--seeds 2 with a pruner that stopped one seed of a configuration: its row read like a pooled one (a
    bare value, 'False'); it says 1 seed (diverged 0/1) next to the others' 0/2."""
    rows = study.summarize([fake_result(0.1, 0, 0.9), fake_result(0.1, 1, 0.8), fake_result(0.5, 0, 0.7)])
    assert [r["seeds"] for r in rows] == [2, 1] and "Accuracy_std" not in rows[1]
    assert [line.split()[-1] for line in study.format_table(rows).splitlines()[1:]] == ["0/2", "0/1"]


def test_csv_has_the_notebook_columns_and_one_row_per_config():
    rows = study.summarize([fake_result(0.01, 0, 0.6), fake_result(0.1, 0, 0.9)])
    table = list(csv.DictReader(io.StringIO(study.to_csv(rows))))
    assert len(table) == 2 and set(study.COLUMNS) <= set(table[0])
    assert [float(r["Accuracy"]) for r in table] == [0.9, 0.6]


def test_a_run_that_diverged_ranks_below_every_run_that_did_not():
    """A multi-label sweep whose lr 10 diverged in epoch 1 with F1 0.30 topped the table above a healthy
    lr 1e-3 at 0.22 (the study's own best, which excludes diverged trials, said 0.22). Every seed
    diverged: last, whatever its metric; some seeds diverged: ranked by its mean as before."""
    rows = study.summarize([fake_result(10.0, 0, 0.30, diverged=True), fake_result(1e-3, 0, 0.22),
                            fake_result(0.1, 0, 0.0, diverged=True)])
    assert [r["learning_rate"] for r in rows] == [1e-3, 10.0, 0.1]
    pooled = study.summarize([fake_result(10.0, s, 0.30, diverged=True) for s in (0, 1)] +
                             [fake_result(1.0, 0, 0.9, diverged=True), fake_result(1.0, 1, 0.7)] +
                             [fake_result(1e-3, s, 0.22) for s in (0, 1)])
    assert [(r["learning_rate"], r["diverged"]) for r in pooled] == [(1.0, 1), (1e-3, 0), (10.0, 2)]


def test_numbers_far_from_one_print_in_a_few_characters():
    """A diverged language model's perplexity (1e304) printed as a 300-digit number and widened every row
    of the table; a regression's R2 of -2.47e34 as 35 digits. Numbers of a million or more in size (or
    tiny but not zero) print in 4 significant digits with an exponent; the others as before."""
    results = [fake_result(lr, 0, acc) for lr, acc in ((1e-3, 0.5917), (10.0, -2.4706885e34))]
    results[0]["row"]["Perplexity"], results[1]["row"]["Perplexity"] = 3.7877, 1.0142e304
    results[1]["row"]["Train_time_s"] = 1.2e-7
    text = study.format_table(study.summarize(results))
    assert "1.014e+304" in text and "-2.471e+34" in text and "0.5917" in text and "3.7877" in text
    assert "1.2e-07" in text and max(len(line) for line in text.splitlines()) < 160
    pooled = [fake_result(0.1, s, 0.5, seconds=1.0 + 7e-5 * s) for s in (0, 1)]
    pooled[1]["row"]["Accuracy"] = 1.5e7
    text = study.format_table(study.summarize(pooled))
    assert "1.0000 ± 0.0000" in text and "7.5e+06 ± 1.061e+07" in text  # a spread in the mean's own form


def strict_json(text: str):
    """json.loads as jq, JavaScript's JSON.parse and most other readers parse: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_results_json_is_strict_json_with_null_for_a_metric_that_is_not_finite(tmp_path):
    """A diverged regression over seeds (R2 nan ± nan) and a history with NaN losses: results.json said
    NaN, which jq and JSON.parse refuse; a number that is not finite is written as null."""
    results = [fake_result(1e8, s, math.nan, diverged=True) for s in (0, 1)] + [fake_result(0.1, 0, 0.9)]
    results[0]["history"] = {"train_loss": [math.inf], "val_loss": [math.nan]}
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",), figures=False)
    saved = strict_json((tmp_path / "results.json").read_text())
    assert saved["rows"][1]["Accuracy"] is None and saved["rows"][1]["Accuracy_std"] is None
    assert saved["runs"][0]["history"] == {"train_loss": [None], "val_loss": [None]}
    assert saved["rows"][0]["Accuracy"] == 0.9


def test_table_txt_says_what_study_it_is_and_which_runs_failed(tmp_path):
    """table.txt held the bare columns: opened later, it did not say which recipe, sweep or metric, nor that a
    configuration had failed (the terminal said both). Now its first line is the command's title line."""
    results = [fake_result(0.1, 0, 0.9), fake_result(0.01, 0, 0.5)]
    failed = [{"key": "k", "config": {"lr": 1.0, "batch_size": 1, "seed": 0}, "error": "BatchNorm: batch of 1"}]
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",),
                        title="digits28: lr sweep, batch 32, 2 epochs", figures=False, failed=failed)
    lines = (tmp_path / "table.txt").read_text().splitlines()
    assert lines[0] == "digits28: lr sweep, batch 32, 2 epochs (2 runs, sorted by Accuracy)"
    assert lines[1].split()[:3] == ["learning_rate", "batch_size", "Accuracy"] and len(lines) == 5
    assert lines[-1] == "failed: lr=1 batch=1 seed=0: BatchNorm: batch of 1"
    for r in results:  # a recipe without val or test split: table.txt says so under the table, as the CLI does
        r["row"]["Scored_on"] = "train"
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",), figures=False)
    lines = (tmp_path / "table.txt").read_text().splitlines()
    assert lines[-1].startswith("scored on the training split (the recipe has no val or test split)")


def test_two_lrs_that_print_alike_get_different_figure_names():
    configs = [{"lr": 0.1, "batch_size": 32}, {"lr": 0.1000000001, "batch_size": 32}, {"lr": 0.5, "batch_size": 32}]
    names = labels(configs, ("learning_rate",))
    assert len(set(names)) == 3 and names[2] == "lr=0.5"


def test_two_lrs_that_print_alike_get_different_table_cells():
    """--values 0.1,0.1000001 ran two configurations that the table printed as two rows of lr 0.1."""
    rows = study.summarize([fake_result(lr, 0, acc) for lr, acc in ((0.1, 0.9), (0.1000001, 0.8), (0.5, 0.7))])
    assert [line.split()[0] for line in study.format_table(rows).splitlines()[1:]] == ["0.1", "0.1000001", "0.5"]


# --- running studies in this process --------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return digits28()


def sweep(values, **kw):
    return study.sweep_configs("lr", values, lr=0.1, batch_size=128, epochs=2, **kw)


def test_a_study_resumes_and_runs_only_the_rest(tmp_path, data, capsys):
    configs = sweep([0.01, 0.1, 1.0])
    first = study.run_study(None, configs[:2], tmp_path, recipe=TINY, data=data)
    assert [r["key"] for r in first] == [c.key() for c in configs[:2]]
    capsys.readouterr()
    results = study.run_study(None, configs, tmp_path, recipe=TINY, data=data)
    assert "resuming: 2 of 3 trials already finished" in capsys.readouterr().err
    assert [r["config"]["lr"] for r in results] == [0.01, 0.1, 1.0]
    assert [r["history"] for r in results[:2]] == [r["history"] for r in first]  # not re-run
    trials = load_existing(default_url(tmp_path), "study").get_trials()
    assert len(trials) == 3 and len(results[0]["history"]["train_loss"]) == 2


def test_each_trial_holds_what_the_reports_need(tmp_path, data):
    study.run_study(None, sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False)
    trial = load_existing(default_url(tmp_path), None).get_trials()[0]
    assert trial.params == {"lr": 0.1, "batch_size": 128, "seed": 0} and trial.value == trial.user_attrs["row"]["Val_score"]
    assert {"key", "config", "row", "history", "worker"} <= set(trial.user_attrs)
    assert len(trial.user_attrs["history"]["val_loss"]) == 2
    # optuna-dashboard's label: what Optuna maximises is the val split's (tests/test_study_scoring.py)
    assert load_existing(default_url(tmp_path), None).metric_names == ["val Accuracy"]


def test_another_recipe_in_the_same_folder_is_refused_naming_both(tmp_path, data):
    study.run_study("tiny", sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False)
    other = TINY.replace(model=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), name="small")
    with pytest.raises(RecipeError) as info:
        study.run_study("small", sweep([0.1]), tmp_path, recipe=other, data=data, progress=False)
    line = str(info.value)
    assert "\n" not in line and "tiny (Sequential, 235,146 params" in line and "small (Sequential, 7,850 params" in line
    with pytest.raises(RecipeError, match="epochs"):  # other settings, same recipe
        study.run_study("tiny", study.sweep_configs("lr", [0.1], lr=0.1, batch_size=128, epochs=3), tmp_path,
                        recipe=TINY, data=data, progress=False)


def test_one_recipe_file_spelled_another_way_is_the_same_recipe(tmp_path, data, monkeypatch):
    """recipes.py:TINY, ./recipes.py:TINY and /abs/path/recipes.py:TINY (another machine's checkout)
    join one study; they were refused as another recipe with two identical fingerprints."""
    monkeypatch.chdir(tmp_path)
    study.run_study("recipes.py:TINY", sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False)
    for spec in ("./recipes.py:TINY", "/elsewhere/checkout/recipes.py:TINY"):
        assert len(study.run_study(spec, sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False)) == 1
    with pytest.raises(RecipeError, match="holds runs of recipes.py:TINY"):  # another object is another recipe
        study.run_study("recipes.py:SMALL", sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False)


def test_a_sqlite_storage_that_cannot_be_opened_names_the_path_problem(tmp_path, monkeypatch):
    """SQLite says only "unable to open database file"; the line says which: a folder, a missing folder, a
    relative path where an absolute one was meant (three slashes, not four). It said to give a PostgreSQL URL."""
    from harness.study.storage import open_storage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir.db").mkdir()
    for url, says in ((f"sqlite:///{tmp_path / 'adir.db'}", "adir.db is a folder; give a file in it"),
                      (f"sqlite:///{tmp_path / 'nope' / 'x.db'}", f"the folder {tmp_path / 'nope'} does not exist"),
                      ("sqlite:///nope/x.db", "an absolute path takes four slashes: sqlite:////nope/x.db")):
        with pytest.raises(RecipeError) as info:
            open_storage(url)
        assert says in str(info.value) and str(info.value).startswith(f"--storage {url}: "), str(info.value)


def test_a_storage_url_with_an_unknown_scheme_or_no_driver_names_the_fix():
    """A typo'd scheme, a driver that is not installed, a server that does not answer: one line each with
    what to give, install or check (all said SQLAlchemy's or Optuna's words, then to give a PostgreSQL URL)."""
    from harness.study.storage import open_storage

    for url, says in (("postgres://me@db/studies", "'postgres' is not a database scheme SQLAlchemy knows"),
                      ("mysql+mysqldb://me@db/studies", "the driver for mysql+mysqldb is not installed"),
                      ("postgresql+psycopg://me@127.0.0.1:1/studies", "check that the server is running")):
        with pytest.raises(RecipeError) as info:
            open_storage(url)
        assert says in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_database_server_that_never_answers_is_one_line_not_a_hang(monkeypatch):
    """A host that accepts the connection and then says nothing (or drops packets): a connect timeout
    (storage.CONNECT_TIMEOUT, 10 s; here 1 s), then the one line; without it psycopg waits for ever."""
    import socket
    import threading

    from harness.study import storage

    monkeypatch.setattr(storage, "CONNECT_TIMEOUT", 1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    outcome = []

    def connect():
        try:
            storage.open_storage(f"postgresql+psycopg://me@127.0.0.1:{server.getsockname()[1]}/studies")
        except RecipeError as e:
            outcome.append(str(e))
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(60)  # not a speed bound: without the timeout it never returns
    server.close()
    assert outcome and "cannot connect" in outcome[0] and "check that the server is running" in outcome[0], outcome


def test_another_study_in_the_same_folder_is_refused(tmp_path, data):
    """A sweep in a search's --out would overwrite the search's table and figures: refused in one line."""
    study.run_study(None, sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False, study="search")
    with pytest.raises(RecipeError) as info:
        study.run_study(None, sweep([0.1]), tmp_path, recipe=TINY, data=data, progress=False, study="sweep-lr")
    assert f"--out {tmp_path} holds study 'search', not 'sweep-lr'" in str(info.value)
    assert optuna.get_all_study_names(default_url(tmp_path)) == ["search"]


def test_progress_names_the_tasks_main_metric():
    """The bar's best value is the task's main metric (R2 for a regression), not always 'acc'."""
    s = optuna.create_study(direction="maximize")
    stream = io.StringIO()
    with StudyProgress(s, total=2, stream=stream):  # before the first result: no metric named yet
        pass
    assert "best -" in stream.getvalue() and "Accuracy" not in stream.getvalue()
    s.add_trial(optuna.trial.create_trial(value=0.25, user_attrs={"row": {"Score_metric": "R2"}}))
    with StudyProgress(s, total=2, stream=stream):
        pass
    assert counts(s)["metric"] == "R2" and "best R2 0.2500" in stream.getvalue()


def test_a_factory_that_ignores_lr_fails_naming_it(tmp_path, data):
    def fixed_sgd(params, lr):
        return torch.optim.SGD(params, lr=0.1)
    recipe = TINY.replace(optimizer=fixed_sgd)
    with pytest.raises(RecipeError) as info:
        study.run_study(None, sweep([0.01, 0.1]), tmp_path, recipe=recipe, data=data, progress=False, kind="lr")
    assert "fixed_sgd ignores its lr argument" in str(info.value) and "\n" not in str(info.value)


def test_a_run_that_raises_names_its_configuration(tmp_path, data):
    """A search over batch sizes on a BatchNorm model: batch 1 raises in forward. The line says which
    configuration (it said only what fit said, and the search's other points ran fine)."""
    from harness.study.trials import TrialError

    bn = TINY.replace(model=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8),
                                                        torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 10)))
    configs = study.sweep_configs("batch-size", [1], lr=0.1, batch_size=128, epochs=1)
    with pytest.raises(TrialError) as info:
        study.run_study(None, configs, tmp_path, recipe=bn, data=data, progress=False)
    assert str(info.value).startswith("lr=0.1 batch=1 seed=0: fit: the model's forward (Sequential)")


def test_a_diverged_run_is_a_pruned_trial_with_its_reason(tmp_path, data):
    results = study.run_study(None, sweep([50.0]), tmp_path, recipe=TINY.replace(epochs=4), data=data,
                              progress=False)
    trial = load_existing(default_url(tmp_path), None).get_trials()[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["pruned_reason"].startswith("diverged")
    assert results[0]["row"]["diverged"] and results[0]["state"] == "pruned"


def test_median_pruning_stops_a_slow_trial(tmp_path, data, capsys):
    configs = study.sweep_configs("lr", [0.1, 0.2, 0.15, 1e-5], lr=0.1, batch_size=128, epochs=4)
    results = study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False, prune="median")
    # the table has fewer runs than trials: it says why
    assert len(results) == 3 and "1 trial stopped early by the median pruner is not in the table" in \
        capsys.readouterr().err
    trials = load_existing(default_url(tmp_path), None).get_trials()
    slow = next(t for t in trials if t.params["lr"] == 1e-5)
    assert slow.state == optuna.trial.TrialState.PRUNED and "median pruner at epoch" in slow.user_attrs["pruned_reason"]
    assert len(slow.user_attrs["history"]["val_loss"]) < 4


def test_hyperband_pruning_stops_slow_trials(tmp_path, data):
    """Hyperband (successive halving in brackets; its max resource is the epochs of the first finished
    trial, which is therefore never pruned): trials whose lr barely moves the loss lose at a rung of
    their bracket to the good lrs that reached it first."""
    configs = study.sweep_configs("lr", [0.1, 0.2, 0.15, 0.12, 1e-5, 2e-5, 3e-5, 4e-5], lr=0.1, batch_size=128,
                                  epochs=6)
    study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False, prune="hyperband")
    trials = load_existing(default_url(tmp_path), None).get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all("hyperband pruner at epoch" in t.user_attrs["pruned_reason"] for t in pruned)
    assert all(len(t.user_attrs["history"]["val_loss"]) < 6 for t in pruned)  # stopped early, history kept
    assert {t.params["lr"] for t in pruned} >= {1e-5, 2e-5, 3e-5, 4e-5}  # val loss 2.305 (chance) at epoch 1
    assert {t.params["lr"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE} >= {0.1, 0.2}


def test_tpe_search_runs_distinct_configurations_with_explicit_seeds(tmp_path, data):
    tpe = {"trials": 4, "seeds": [0, 1], "epochs": 1, "options": [], "seed": 0}
    results = study.run_study(None, [], tmp_path, recipe=TINY, data=data, progress=False, tpe=tpe,
                              space=Space.parse("1e-3:1", "32:256"))
    points = {(r["config"]["lr"], r["config"]["batch_size"]) for r in results}
    assert len(results) == 8 and len(points) == 4
    assert all(sorted(r["config"]["seed"] for r in results if (r["config"]["lr"], r["config"]["batch_size"]) == p)
               == [0, 1] for p in points)
    assert counts(load_existing(default_url(tmp_path), None))["complete"] + 0 >= 1


def test_a_study_whose_creator_was_stopped_at_the_start_is_joined_without_waiting(tmp_path, monkeypatch):
    """Ctrl-C while a study was being created (identity set, plan not yet enqueued): the same command run
    again waited PLAN_WAIT (30 s) for a creator that was gone, then left the study without its
    distributions. Now it goes on once no trial has been added for PLAN_STALL seconds (virtual clock)."""
    from types import SimpleNamespace

    from harness.study import storage as storage_module

    clock = {"now": 0.0}
    monkeypatch.setattr(storage_module, "time", SimpleNamespace(
        monotonic=lambda: clock["now"], sleep=lambda s: clock.__setitem__("now", clock["now"] + s)))
    plan = sweep([0.01, 0.1])
    identity = {"recipe": {"spec": "tiny"}, "settings": {}}
    st = storage_module.open_storage(default_url(tmp_path))
    optuna.create_study(study_name="study", storage=st, direction="maximize").set_user_attr("identity", identity)
    joined = storage_module.open_study(st, "study", identity, plan, storage_module.distributions_for(plan))
    assert clock["now"] < 30  # the old fixed wait
    assert sorted(t.user_attrs["key"] for t in joined.get_trials()) == sorted(c.key() for c in plan)
    assert set(storage_module.study_distributions(joined)) == {"lr", "batch_size", "seed"}


def test_joining_a_study_reads_its_trials_once_however_big_the_plan(tmp_path, monkeypatch):
    """Every re-run (and every worker joining) checks which planned configurations are missing: that read
    every trial once per configuration, so re-running a 900-trial search spun for minutes before its first trial."""
    from harness.study import storage as storage_module

    plan = study.sweep_configs("lr", [10 ** -k for k in range(1, 6)], lr=0.1, batch_size=128, epochs=1,
                               seeds=range(8))
    identity = {"recipe": {"spec": "tiny"}, "settings": {}}
    st = storage_module.open_storage(default_url(tmp_path))
    storage_module.open_study(st, "study", identity, plan, storage_module.distributions_for(plan))
    reads = []
    original = optuna.Study.get_trials
    monkeypatch.setattr(optuna.Study, "get_trials", lambda self, *a, **k: reads.append(1) or original(self, *a, **k))
    joined = storage_module.open_study(st, "study", identity, plan, storage_module.distributions_for(plan))
    assert len(reads) <= 2 and len(joined.get_trials()) == 40


def test_a_creator_still_enqueuing_a_big_plan_is_waited_for(tmp_path, monkeypatch):
    """A plan of tens of thousands of trials takes its creator minutes to enqueue; a joiner gave up after
    30 s and enqueued the missing ones itself, so the creator's later ones ran twice. Now it waits while
    trials keep coming (virtual clock: one every 0.2 s for 60 s, then the plan is complete)."""
    from itertools import count
    from types import SimpleNamespace

    from harness.study import storage as storage_module

    plan = sweep([0.01, 0.1])
    identity = {"recipe": {"spec": "tiny"}, "settings": {}}
    st = storage_module.open_storage(default_url(tmp_path))
    creator = optuna.create_study(study_name="study", storage=st, direction="maximize")
    creator.set_user_attr("identity", identity)
    dists = storage_module.distributions_for(plan)
    creator.set_user_attr("distributions", {k: optuna.distributions.distribution_to_json(d) for k, d in dists.items()})
    clock, added = {"now": 0.0}, count()

    def sleep(seconds):
        clock["now"] += seconds
        if clock["now"] >= 60 and "planned" not in creator.user_attrs:  # the creator's last enqueue
            storage_module.enqueue(creator, plan, dists)
            creator.set_user_attr("planned", len(plan))
    monkeypatch.setattr(storage_module, "time", SimpleNamespace(monotonic=lambda: clock["now"], sleep=sleep))
    monkeypatch.setattr(st, "get_n_trials", lambda study_id, state=None: next(added))  # still adding
    joined = storage_module.open_study(st, "study", identity, plan, dists)
    assert clock["now"] >= 60
    assert sorted(t.user_attrs["key"] for t in joined.get_trials()) == sorted(c.key() for c in plan)


def test_a_study_made_by_other_code_is_refused_not_taken_over(tmp_path, monkeypatch):
    """An Optuna study of the same name that harness did not make (trials, no identity): one line, and
    nothing written into it (it was given our identity and plan after a wait)."""
    from types import SimpleNamespace

    from harness.study import storage as storage_module

    clock = {"now": 0.0}
    monkeypatch.setattr(storage_module, "time", SimpleNamespace(
        monotonic=lambda: clock["now"], sleep=lambda s: clock.__setitem__("now", clock["now"] + s)))
    st = storage_module.open_storage(default_url(tmp_path))
    theirs = optuna.create_study(study_name="study", storage=st)
    theirs.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    plan = sweep([0.1])
    with pytest.raises(RecipeError, match="study 'study' was not made by harness"):
        storage_module.open_study(st, "study", {"recipe": {"spec": "tiny"}, "settings": {}}, plan,
                                  storage_module.distributions_for(plan))
    assert len(theirs.get_trials()) == 2 and theirs.user_attrs == {}


def test_tpe_asking_for_a_new_point_leaves_the_enqueued_seed_copies_alone(tmp_path):
    """With several workers, one can ask TPE for a new point while another point's seed copy waits: Optuna's
    study.ask() popped that copy, which was then taken for a repeat and failed, so that seed never ran (seen
    with 4 workers on PostgreSQL: 11 of 12 runs, one point with one seed and nothing said)."""
    from harness.study import storage as storage_module
    from harness.study.trials import Job, _ask_tpe

    space = Space.parse("1e-3:1", "32:256")
    dists = storage_module.distributions_for([], space)
    st = storage_module.open_storage(default_url(tmp_path))
    s = storage_module.open_study(st, "study", {"recipe": {"spec": "tiny"}, "settings": {}}, [], dists)
    copy = Config(lr=0.01, batch_size=64, epochs=1, seed=1)
    storage_module.enqueue(s, [copy], space.distributions())
    (number,) = [t.number for t in s.get_trials()]
    tpe = {"trials": 4, "seeds": [0, 1], "epochs": 1, "options": [], "seed": 0}
    claimed = _ask_tpe(s, st, Job(storage=default_url(tmp_path), study="study", tpe=tpe),
                       storage_module.study_distributions(s))
    waiting = s.get_trials()[number]
    assert waiting.state.name == "WAITING" and waiting.user_attrs["key"] == copy.key()
    assert claimed and claimed[0].number != number and claimed[0].user_attrs["point"]


def test_a_run_without_a_finite_score_is_kept_as_pruned_not_failed(tmp_path):
    """A run whose test metric is NaN without diverging (a model taking the log of its inputs, trained on
    positive ones and tested on negative ones): Optuna fails a trial told NaN, so every re-run said "2 of 2
    trials did not finish; run the same command again" for ever. It is kept, pruned with the reason."""
    from harness.study.trials import _tell

    s = optuna.create_study(direction="maximize")
    trial = s.ask()
    result = fake_result(0.1, 0, math.nan)
    result["row"].update(Score=math.nan, Score_metric="Accuracy")
    _tell(s, trial, {"row": result["row"], "history": {}, "worker": "here"})
    (told,) = s.get_trials()
    assert told.state.name == "PRUNED" and told.user_attrs["pruned_reason"] == "no score: the test Accuracy is nan"


def _one_done_one_claimed(tmp_path, data):
    """A study with lr 0.01 finished and lr 0.1 claimed (RUNNING) by a "worker" that then dies:
    (configs, the study, its storage, the claimed trial)."""
    configs = sweep([0.01, 0.1])
    study.run_study(None, configs[:1], tmp_path, recipe=TINY, data=data, progress=False, heartbeat=1)
    storage = optuna.storages.RDBStorage(default_url(tmp_path), heartbeat_interval=1, grace_period=3)
    s = optuna.load_study(study_name="study", storage=storage)
    s.enqueue_trial(configs[1].params(), user_attrs={"key": configs[1].key(),
                                                     "config": json.loads(json.dumps(configs[1].__dict__))})
    return configs, s, storage, s.ask()


def test_a_stale_trial_of_a_killed_worker_is_retried(tmp_path, data):
    """A RUNNING trial whose heartbeat stopped (its worker was killed) runs again, once."""
    configs, s, storage, zombie = _one_done_one_claimed(tmp_path, data)  # dies after its first heartbeat
    storage.record_heartbeat(zombie._trial_id)
    results = study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False, heartbeat=1)
    states = [t.state.name for t in s.get_trials()]
    assert [r["config"]["lr"] for r in results] == [0.01, 0.1]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1  # the zombie failed, its retry finished
    assert counts(s)["fail"] == 0  # the progress bar does not call a retried trial failed


def test_a_trial_left_running_without_a_heartbeat_is_retried(tmp_path, data):
    """A worker killed between its claim and its first heartbeat leaves a RUNNING trial that never goes
    stale by Optuna's rule; once older than the grace period it is failed and retried, not waited on."""
    import threading

    configs, s, _, _ = _one_done_one_claimed(tmp_path, data)  # the worker dies before its first heartbeat
    done = []
    resume = threading.Thread(target=lambda: done.append(study.run_study(
        None, configs, tmp_path, recipe=TINY, data=data, progress=False, heartbeat=1)), daemon=True)
    resume.start()
    resume.join(timeout=120)  # before the fix it waited forever
    assert done, "the resumed study is still waiting on the trial without a heartbeat"
    states = [t.state.name for t in s.get_trials()]
    assert [r["config"]["lr"] for r in done[0]] == [0.01, 0.1]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1 and "RUNNING" not in states


def test_report_and_outputs_come_from_the_study(tmp_path, data):
    configs = study.sweep_configs("batch-size", [64, 256], lr=0.1, batch_size=128, epochs=2, seeds=[0, 1])
    study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False)
    _, results = study.load_study_results(default_url(tmp_path), None)
    rows = study.summarize(results)
    paths = study.write_outputs(tmp_path, results, rows, ("batch_size",), title="test")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == 2 and len(saved["runs"]) == 4
    assert all(len(r["history"]["val_acc"]) == 2 for r in saved["runs"])
    pngs = [p for name, p in paths.items() if name.endswith(".png")]
    assert {"overlay.png", "bars.png", "against.png"} <= set(paths)
    assert len(pngs) == 3 + 4  # overlay, bars, metric against batch size, a curve per run
    assert all(is_png(p) for p in pngs)
    assert (tmp_path / "table.txt").read_text().count("±") >= 2


def test_figures_name_the_tasks_metric_and_draw_a_run_that_diverged_at_once(tmp_path, monkeypatch):
    """A regression's curves and overlay say R2, not accuracy; a run with no finite point (diverged in its
    first epoch) draws without matplotlib's "No artists with labels" warning."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    nan = math.nan
    results = [fake_result(lr, 0, acc) for lr, acc in ((0.1, 0.9), (1.0, nan))]
    for r, h in zip(results, ([1.0, 0.5], [nan])):
        r["row"].update(Score=r["row"]["Accuracy"], Score_metric="R2")
        r["history"] = {"train_loss": h, "val_loss": h, "train_acc": h, "val_acc": h}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    assert drawn["curves_lr0.1.png"].axes[1].get_title() == "R2"
    assert drawn["overlay.png"].axes[1].get_title() == "val R2 per epoch"


def test_figures_mark_diverged_runs_and_keep_healthy_ones_readable_beside_exploded_ones(tmp_path, monkeypatch):
    """A regression lr sweep where lr 1000 exploded (R2 -2.47e34, MSE 7.8e33): on linear axes the healthy
    runs' R2 0.96 and 0.30 were one flat line at 0 and their MSE bars invisible; a causal LM's perplexity
    1e304 hid 3.8 and 22. The diverged run was a bar and a line like the others (the multi-label lr 10
    bar, diverged, stood tallest). Now: symlog/log axes when the values span many orders of magnitude,
    diverged runs dashed and named in the legend, their bars hatched and labelled; accuracy stays linear."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    results = [fake_result(lr, 0, r2) for lr, r2 in ((1e-3, 0.957), (0.1, 0.299), (1000.0, -2.47e34))]
    for r, mse in zip(results, (0.0135, 0.221, 7.8e33)):
        r2 = r["row"].pop("Accuracy")
        for name in ("Precision_macro", "Recall_macro", "F1_macro"):
            del r["row"][name]
        r["row"].update(R2=r2, Mse=mse, Score=r2, Score_metric="R2")
        h = [mse * 2, mse]
        r["history"] = {"train_loss": h, "val_loss": h, "train_acc": [r2] * 2, "val_acc": [r2] * 2, "diverged": False}
    results[2]["row"]["diverged"] = results[2]["history"]["diverged"] = True
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    overlay, bars = drawn["overlay.png"].axes, drawn["bars.png"].axes
    assert overlay[1].get_yscale() == "symlog" and overlay[0].get_yscale() == "log"
    assert [t.get_text() for t in overlay[1].get_legend().get_texts()] == ["lr=0.001", "lr=0.1", "lr=1000 (diverged)"]
    assert overlay[1].get_lines()[2].get_linestyle() == "--"
    assert bars[0].get_yscale() == "symlog" and bars[1].get_yscale() == "log" and bars[2].get_yscale() == "linear"
    assert [t.get_text() for t in bars[0].get_xticklabels()] == ["lr=0.001", "lr=0.1", "lr=1000\n(diverged)"]
    assert [p.get_hatch() for p in bars[0].patches] == [None, None, "//"]
    assert drawn["curves_lr1000.png"].axes[0].get_yscale() == "linear"  # 2x in one run: no reason for log
    assert drawn["curves_lr1000.png"].axes[1].get_ylabel() == "R2"
    low, high = bars[1].get_ylim()  # every bar within the log axis, room above the tallest for its value
    assert low == pytest.approx(0.0135 / 2) and 7.8e33 * 1e3 < high < 7.8e33 * 1e4
    drawn.clear()  # a causal LM's perplexity of 1e304 (the bar axis autoscaled to 1..10, every bar cut off)
    lm = [fake_result(lr, 0, acc) for lr, acc in ((1e-3, 0.59), (0.1, 0.11), (10.0, 0.005))]
    for r, perplexity in zip(lm, (3.79, 22.3, 1.01e304)):
        r["row"].update(Perplexity=perplexity)
        for name in ("Precision_macro", "Recall_macro", "F1_macro"):  # a causal LM: token accuracy, perplexity
            del r["row"][name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow in matplotlib's log ticks near 1e308
        study.write_outputs(tmp_path, with_histories(lm), study.summarize(lm), ("learning_rate",))
        drawn["bars.png"].savefig(io.BytesIO(), format="png")
    perplexity = drawn["bars.png"].axes[1]
    assert perplexity.get_title() == "Perplexity per configuration" and perplexity.get_yscale() == "log"
    low, high = perplexity.get_ylim()  # the bar stops at 1e100, its value written above it
    assert low == pytest.approx(3.79 / 2) and 1e109 < high < 1e111
    assert [t.get_text() for t in perplexity.texts] == ["3.79", "22.3", "1.01e+304"]
    low, high = overlay[1].get_ylim()  # symlog: a decade beyond the data, not 30 decades
    assert low == pytest.approx(-2.47e35) and high == pytest.approx(1.457)
    loss = [5.1e17, 5.5e11, 3.1e8]  # examples/regression.py at lr 10: every R2 far below zero
    figures.curves({"train_loss": loss, "val_loss": loss, "train_acc": [-1.5e18, -1.6e12, -9.1e8],
                    "val_acc": [-7.5e12, -8.2e8, -9.1e8]}, "lr=10", tmp_path / "lr10.png", metric="R2")
    assert drawn["lr10.png"].axes[0].get_yscale() == "log"
    assert drawn["lr10.png"].axes[1].get_ylim() == pytest.approx((-1.5e19, -8.2e7))  # the top a decade above

    drawn.clear()  # an accuracy sweep keeps its linear axes, an F1 at 0 for epochs and a tiny loss too
    results = [fake_result(lr, 0, acc) for lr, acc in ((0.01, 0.5), (0.1, 0.9), (1.0, 0.0))]
    for r in results:
        r["history"] = {k: [1.0, r["row"]["Accuracy"]] for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
        r["history"]["val_acc"] = [0.0, 0.0, 0.0, 1e-6, r["row"]["Accuracy"]]
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    assert drawn["overlay.png"].axes[1].get_yscale() == "linear" and drawn["bars.png"].axes[0].get_yscale() == "linear"
    assert drawn["overlay.png"].axes[1].get_ylim()[0] > -0.1  # no symlog margin below an F1 of 0


def test_the_overlay_draws_each_configuration_as_the_mean_of_its_seeds(tmp_path, monkeypatch):
    """With --seeds 3 the overlay drew each configuration's first seed alone, saying nothing (the table
    and bars pool the seeds); its legend came in trial order, so `harness report` after a resume listed
    the lrs in another order than the sweep did. Now: the mean over seeds in a band from the lowest to
    the highest seed, a seed that diverged counted in the legend, configurations in the bars' order."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    curves = {(0.1, 0): [0.5, 0.7], (0.1, 1): [0.7, 0.9], (1.0, 0): [0.1], (1.0, 1): [0.2, 0.4], (0.01, 0): [0.3, 0.3],
              (0.01, 1): [0.3, 0.5]}
    results = [fake_result(lr, seed, acc[-1], diverged=len(acc) == 1) for (lr, seed), acc in curves.items()]
    for r, acc in zip(results, curves.values()):
        r["history"] = {"train_loss": [1.0] * len(acc), "val_loss": [1.0 - a for a in acc], "train_acc": acc,
                        "val_acc": acc, "diverged": len(acc) == 1}
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    ax = drawn["overlay.png"].axes[1]
    lines = {text.get_text(): line for text, line in zip(ax.get_legend().get_texts(), ax.get_lines())}
    assert list(lines) == ["lr=0.01", "lr=0.1", "lr=1 (diverged 1/2)"]
    assert list(lines["lr=0.1"].get_ydata()) == pytest.approx([0.6, 0.8])
    assert list(lines["lr=1 (diverged 1/2)"].get_ydata()) == pytest.approx([0.15, 0.4])
    assert len(ax.collections) == 3 and "mean of 2 seeds" in ax.get_title()
    band = ax.collections[1].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(0.5) and max(band) == pytest.approx(0.9)


def with_histories(results: list) -> list:
    for r in results:
        r["history"] = {k: [1.0, r["row"]["Accuracy"]] for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
    return results


def test_a_figure_plots_the_metric_against_each_varied_setting_on_a_log_axis(tmp_path, monkeypatch):
    """What an lr sweep is read for (fastai's and Lightning's lr finder plot, Optuna's slice plot): the metric
    against the lr on a log axis. There were only bars in the order of their labels, evenly spaced
    whatever the lrs. Seeds pooled with their std; a diverged configuration a red x, not on the line;
    in a search each setting's points coloured by the other one."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    results = [fake_result(lr, s, acc + 0.02 * s, diverged=lr == 1.0)
               for lr, acc in ((0.1, 0.9), (1e-3, 0.2), (1.0, 0.1), (0.01, 0.6)) for s in (0, 1)]
    with_histories(results)
    paths = study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    assert paths["against.png"] == tmp_path / "figures" / "against.png"
    ax, = drawn["against.png"].axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate (log scale)" and ax.get_ylabel() == "Accuracy"
    line, = [line for line in ax.get_lines() if line.get_marker() == "o"]  # errorbar adds its caps as lines
    cross, = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(line.get_xdata()) == [1e-3, 0.01, 0.1] and list(line.get_ydata()) == pytest.approx([0.21, 0.61, 0.91])
    assert list(cross.get_xdata()) == [1.0] and cross.get_color() == "tab:red"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["diverged"]

    drawn.clear()  # a search: one panel per setting, points not joined
    results = [fake_result(lr, 0, acc) for lr, acc in ((0.1, 0.9), (0.003, 0.4))]
    results[1]["row"]["batch_size"] = results[1]["config"]["batch_size"] = 256
    with_histories(results)
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate", "batch_size"))
    panels = {ax.get_xlabel(): ax for ax in drawn["against.png"].axes}
    lr_ax, batch_ax = panels["learning rate (log scale)"], panels["batch size (log scale)"]
    dots = batch_ax.collections[0]  # coloured by the lr, and the lr panel by the batch size, with colour bars
    assert [list(xy) for xy in dots.get_offsets()] == [[32, 0.9], [256, 0.4]] and list(dots.get_array()) == [0.1, 0.003]
    assert list(lr_ax.collections[0].get_array()) == [32, 256] and not lr_ax.get_lines()  # points, no line
    paths = study.write_outputs(tmp_path / "one", results[:1], study.summarize(results[:1]), ("learning_rate",))
    assert "against.png" not in paths  # harness train: one configuration, nothing to plot it against
    assert {ax.get_ylabel() for ax in drawn["against.png"].axes} >= {"learning rate", "batch size"}


def test_a_report_after_more_seeds_finished_leaves_no_figure_of_the_earlier_names(tmp_path):
    """--seeds 2 reported after the first seeds only drew curves_lr0.1.png; reported again once every seed had
    run, it drew curves_lr0.1_seed0.png and _seed1.png and left the old file: the same run twice in figures/."""
    results = with_histories([fake_result(lr, s, 0.5) for lr in (0.1, 0.01) for s in (0, 1)])
    study.write_outputs(tmp_path, results[::2], study.summarize(results[::2]), ("learning_rate",))
    assert sorted(p.name for p in (tmp_path / "figures").glob("curves_*")) == ["curves_lr0.01.png", "curves_lr0.1.png"]
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    assert sorted(p.name for p in (tmp_path / "figures").glob("curves_*")) == [
        "curves_lr0.01_seed0.png", "curves_lr0.01_seed1.png", "curves_lr0.1_seed0.png", "curves_lr0.1_seed1.png"]


def test_the_overlay_of_a_recipe_without_a_val_split_draws_the_training_curves(tmp_path, monkeypatch):
    """A recipe with val=None: the overlay drew nothing but empty axes from epoch -0.045 to 0.045 (every val
    point nan). It draws the train loss and metric, and its titles say there is no val split."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    nan = math.nan
    results = [fake_result(lr, s, 0.8) for lr in (0.01, 0.1) for s in (0, 1)]
    for r, acc in zip(results, ([0.3, 0.7], [0.35, 0.72], [0.6, 0.9], [0.6, 0.86])):
        r["history"] = {"train_loss": [2.0, 1.0], "train_acc": acc, "val_loss": [nan, nan], "val_acc": [nan, nan],
                        "diverged": False}
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    loss_ax, acc_ax = drawn["overlay.png"].axes
    assert loss_ax.get_title().startswith("train loss per epoch (no val split)")
    assert acc_ax.get_ylabel() == "train Accuracy" and list(acc_ax.get_lines()[1].get_ydata()) == pytest.approx([0.6, 0.88])
    assert list(acc_ax.get_xlim()) == pytest.approx([0.95, 2.05])


def test_figures_of_a_search_of_20_configurations_stay_readable(tmp_path, monkeypatch):
    """harness search --trials 20 --epochs 1: the bars' 20 slanted labels and values ran into each other,
    the overlay repeated tab10's colours (two lrs per colour) under two 20-line legends covering the
    curves, and one epoch's x axis read 0.945 ... 1.05. Now: a wider figure with upright labels and
    values, 20 distinct colours, one legend outside the panels, a single tick at epoch 1."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    results = [fake_result(round(1e-4 * 1.5 ** i, 7), 0, 0.1 + 0.03 * i) for i in range(20)]
    for r in results:
        r["history"] = {k: [r["row"]["Accuracy"]] for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    bars, overlay = drawn["bars.png"], drawn["overlay.png"]
    assert bars.get_figwidth() >= 20
    assert all(t.get_rotation() == 90 for ax in bars.axes for t in ax.get_xticklabels())
    assert all(t.get_rotation() == 90 for ax in bars.axes for t in ax.texts)
    loss_ax, acc_ax = overlay.axes
    assert loss_ax.get_legend() is None and len(acc_ax.get_legend().get_texts()) == 20
    assert len({line.get_color() for line in acc_ax.get_lines()}) == 20
    assert list(acc_ax.get_xticks()) == [1] and list(drawn["curves_lr0.0001.png"].axes[0].get_xticks()) == [1]

    drawn.clear()  # a sweep of five keeps its look: slanted labels, a legend in each panel
    study.write_outputs(tmp_path, results[:5], study.summarize(results[:5]), ("learning_rate",))
    assert drawn["bars.png"].get_figwidth() == 14 and drawn["overlay.png"].axes[0].get_legend() is not None
    assert drawn["bars.png"].axes[0].get_xticklabels()[0].get_rotation() == 30


def test_against_draws_no_panel_for_a_setting_that_did_not_vary(tmp_path, monkeypatch):
    """`harness search --batch-size 64` (one value), or `harness report` of a study run_study made from a notebook
    (no 'vary' stored: both settings): against.png drew a batch-size panel of one x, its points coloured by the
    lr, and beside the lr panel a colour bar reading 1.28x10^2 six times, its label over the next panel's."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    results = with_histories([fake_result(lr, 0, acc) for lr, acc in ((1e-3, 0.1), (1e-2, 0.12), (0.1, 0.5))])
    study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate", "batch_size"))
    fig = drawn["against.png"]
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "learning rate (log scale)"  # no colour bar either
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1e-3, 1e-2, 0.1]  # joined, as a sweep


def test_figures_of_a_search_of_hundreds_of_configurations_draw_the_best_20(tmp_path, monkeypatch):
    """docs/scaling.md's search, --trials 400 --seeds 3: 1,203 figures (42 MB, 2.5 minutes of drawing after
    the study had finished), an overlay 6,890 pixels wide with a 400-line legend and bars 28,203 pixels wide.
    Past 20 configurations the curves, overlay and bars show the 20 best, their titles say so, and against.png
    keeps every point; a report drawn again removes the curves of configurations no longer among them."""
    from harness import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__(path.name, fig))
    results = with_histories([fake_result(round(1e-4 * 1.1 ** i, 9), s, (i % 50) / 50 + 0.001 * s)
                              for i in range(60) for s in (0, 1)])
    rows = study.summarize(results)
    paths = study.write_outputs(tmp_path, results, rows, ("learning_rate",), title="digits28: qmc search")
    best = {r["learning_rate"] for r in rows[:20]}
    curves = [name for name in paths if name.startswith("curves_")]
    assert len(curves) == 40 and all(f"_seed{s}.png" in " ".join(curves) for s in (0, 1))
    assert set(curves) == {f"curves_{study.reports.slug(n)}_seed{r['config']['seed']}.png" for r, n in
                           zip(results, labels([r["config"] for r in results], ("learning_rate",)))
                           if r["config"]["lr"] in best}
    acc_ax = drawn["overlay.png"].axes[1]
    assert len(acc_ax.get_legend().get_texts()) == 20 and "20 best of 60 configurations" in drawn["overlay.png"]._suptitle.get_text()
    assert len(drawn["bars.png"].axes[0].patches) == 20 and "20 best of 60" in drawn["bars.png"]._suptitle.get_text()
    assert drawn["bars.png"].get_figwidth() < 30 and drawn["overlay.png"].get_figwidth() < 20
    assert max(len(line.get_xdata()) for line in drawn["against.png"].axes[0].get_lines()) == 60  # every one

    (tmp_path / "figures").mkdir(exist_ok=True)
    for name in curves:
        (tmp_path / "figures" / name).write_bytes(PNG)
    better = with_histories([fake_result(0.5 + 0.01 * i, 0, 0.99) for i in range(20)])  # 20 new best ones
    study.write_outputs(tmp_path, results + better, study.summarize(results + better), ("learning_rate",))
    assert not any((tmp_path / "figures" / name).exists() for name in curves)


@pytest.mark.parametrize("seeds", [1, 2])
def test_figures_of_a_sweep_where_every_run_diverged_to_nan(tmp_path, seeds):
    """A regression whose every lr diverged (R2 nan, MSE inf, histories all nan): with seeds the overlay's
    empty band raised ValueError ('Data cannot be log-scaled') after the whole sweep had run, and bars of
    nan/inf heights put numpy's 'invalid value encountered in dot' on the user's terminal."""
    results = [fake_result(lr, s, math.nan, diverged=True) for lr in (1.0, 10.0) for s in range(seeds)]
    for r in results:
        for name in ("Accuracy", "Precision_macro", "Recall_macro", "F1_macro"):
            del r["row"][name]
        r["row"].update(R2=math.nan, Mse=math.inf, Score=math.nan, Score_metric="R2")
        r["history"] = {k: [math.nan] for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
        r["history"]["diverged"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    assert all(is_png(p) for name, p in paths.items() if name.endswith(".png"))


def test_output_files_get_the_users_mode(tmp_path, data):
    old = os.umask(0o022)
    try:
        configs = sweep([0.1])
        results = study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False)
        study.write_outputs(tmp_path, results, study.summarize(results), ("learning_rate",))
    finally:
        os.umask(old)
    for name in ("study.db", "table.txt", "table.csv", "results.json", "figures/overlay.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# --- EDA ---------------------------------------------------------------------------------------------------

def test_eda_counts_and_channel_stats_match_numpy(tmp_path, data):
    s = summarize_data(data, 10)
    x, y = data.train[0].numpy(), data.train[1].numpy()
    assert s["class_counts"] == np.bincount(y, minlength=10).tolist()
    assert s["channels"][0]["mean"] == pytest.approx(x.mean(), rel=1e-5)
    assert s["channels"][0]["std"] == pytest.approx(x.std(ddof=1), rel=1e-4)
    assert s["resolution"] == "28x28" and s["input_dtype"] == "float32" and s["splits"]["train"] == len(y)
    assert "samples per class" in format_summary(s)
    paths = write_eda(tmp_path, data, s)
    assert is_png(paths["class_counts.png"]) and is_png(paths["samples.png"])


def test_eda_on_rgb_images(tmp_path):
    from harness.data import synthetic
    d = synthetic(n_train=64, n_val=16, n_test=0, shape=(3, 32, 32))
    s = summarize_data(d)
    assert len(s["channels"]) == 3 and s["resolution"] == "32x32"
    assert is_png(write_eda(tmp_path, d, s)["samples.png"])
