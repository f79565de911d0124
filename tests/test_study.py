"""The study engine: configs, resume, the table (mean ± std over seeds), CSV/JSON and the figures.

    OMP_NUM_THREADS=1 python -m pytest tests/test_study.py -q -p no:cacheprovider
"""
import csv
import io
import json

import numpy as np
import pytest

from harness import study
from harness.data import digits28
from harness.eda import format_summary, summarize_data, write_eda
from harness.study.runs import Config
from tests.recipes_dynamics.recipes import TINY

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_sweep_configs_vary_one_setting():
    lr = study.sweep_configs("lr", [1e-3, 1e-2], lr=0.5, batch_size=64, epochs=3, seeds=[0, 1])
    assert [(c.lr, c.batch_size, c.seed) for c in lr] == [(1e-3, 64, 0), (1e-3, 64, 1), (1e-2, 64, 0), (1e-2, 64, 1)]
    bs = study.sweep_configs("batch-size", [8, 32], lr=0.01, batch_size=128, epochs=3)
    assert [(c.lr, c.batch_size) for c in bs] == [(0.01, 8), (0.01, 32)]
    assert len({c.key() for c in lr + bs}) == 6


def test_search_draws_distinct_pairs_reproducibly():
    a = study.search_configs(5, [1e-3, 1e-2, 1e-1], [16, 32, 64], epochs=2, rng_seed=7)
    b = study.search_configs(5, [1e-3, 1e-2, 1e-1], [16, 32, 64], epochs=2, rng_seed=7)
    assert a == b and len({(c.lr, c.batch_size) for c in a}) == 5
    assert all(c.lr in (1e-3, 1e-2, 1e-1) and c.batch_size in (16, 32, 64) for c in a)
    assert len(study.search_configs(12, [1e-3, 1e-2], [16, 32], epochs=2)) == 12  # repeats once the grid is used


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


def test_single_seed_rows_are_the_runs_rows():
    results = [fake_result(0.01, 0, 0.6), fake_result(0.1, 0, 0.9)]
    rows = study.summarize(results)
    assert rows == [results[1]["row"], results[0]["row"]] and "±" not in study.format_table(rows)


def test_csv_has_the_notebook_columns_and_one_row_per_config():
    rows = study.summarize([fake_result(0.01, 0, 0.6), fake_result(0.1, 0, 0.9)])
    table = list(csv.DictReader(io.StringIO(study.to_csv(rows))))
    assert len(table) == 2 and set(study.COLUMNS) <= set(table[0])
    assert [float(r["Accuracy"]) for r in table] == [0.9, 0.6]


@pytest.fixture(scope="module")
def data():
    return digits28()


def test_run_study_saves_each_run_and_resumes(tmp_path, data, capsys):
    configs = study.sweep_configs("lr", [0.01, 0.1, 1.0], lr=0.1, batch_size=128, epochs=2)
    first = study.run_study(None, configs[:2], tmp_path, recipe=TINY, data=data)
    saved = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    assert len(saved) == 2 and [r["key"] for r in first] == [c.key() for c in configs[:2]]
    capsys.readouterr()
    results = study.run_study(None, configs, tmp_path, recipe=TINY, data=data)
    err = capsys.readouterr().err
    assert "resuming: 2 of 3 runs already" in err and err.count("3/3") == 1
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json") if p.name in saved} == saved
    assert [r["config"]["lr"] for r in results] == [0.01, 0.1, 1.0]
    assert len(results[0]["history"]["train_loss"]) == 2


def test_a_half_written_run_file_is_run_again(tmp_path, data):
    configs = study.sweep_configs("lr", [0.1], lr=0.1, batch_size=128, epochs=2)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{configs[0].key()}.json").write_text('{"key": "')
    assert study.load_done(tmp_path) == {}
    assert len(study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False)) == 1


def test_write_outputs_writes_tables_json_and_pngs(tmp_path, data):
    configs = study.sweep_configs("batch-size", [64, 256], lr=0.1, batch_size=128, epochs=2, seeds=[0, 1])
    results = study.run_study(None, configs, tmp_path, recipe=TINY, data=data, progress=False)
    rows = study.summarize(results)
    paths = study.write_outputs(tmp_path, results, rows, ("batch_size",), title="test")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == 2 and len(saved["runs"]) == 4
    assert all(len(r["history"]["val_acc"]) == 2 for r in saved["runs"])
    pngs = [p for name, p in paths.items() if name.endswith(".png")]
    assert {"overlay.png", "bars.png"} <= set(paths) and len(pngs) == 2 + 4  # overlay, bars, a curve per run
    assert all(is_png(p) for p in pngs)
    assert (tmp_path / "table.txt").read_text().count("±") >= 2


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


def test_jobs_and_vectorize_reach_execute_when_it_takes_them(tmp_path, data, monkeypatch):
    seen = {}

    def execute(spec, configs, on_result, device="cpu", recipe=None, data=None, jobs=1, vectorize=False):
        seen.update(jobs=jobs, vectorize=vectorize)
        for c in configs:
            on_result(c, {**fake_result(c.lr, c.seed, 0.5), "key": c.key()})

    monkeypatch.setattr(study.sweeps, "execute", execute)
    configs = study.sweep_configs("lr", [0.01, 0.1], lr=0.1, batch_size=32, epochs=2)
    study.run_study(None, configs, tmp_path, recipe=TINY, data=data, jobs=2, vectorize=True, progress=False)
    assert seen == {"jobs": 2, "vectorize": True}
