"""The `harness` command: outputs of every subcommand, one-line argument errors, resume after a kill,
reports from a study's storage, the default folder per recipe.

    OMP_NUM_THREADS=1 python -m pytest tests/test_cli.py -q -p no:cacheprovider
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from harness.cli import main
from harness.study import COLUMNS

TINY = f"{Path(__file__).parent / 'recipes_dynamics' / 'recipes.py'}:TINY"
PNG = b"\x89PNG\r\n\x1a\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def harness(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def table(out: Path) -> list:
    with open(out / "table.csv") as f:
        return list(csv.DictReader(f))


def finished(out: Path, name: str = "sweep-lr") -> dict:
    """Finished trials in OUT/study.db: key -> completion time ({} while there is no study yet)."""
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
        return {t.user_attrs["key"]: t.datetime_complete for t in study.get_trials()
                if t.state.name in ("COMPLETE", "PRUNED")}
    except Exception:  # not created yet, or its tables are being written
        return {}


def pngs(out: Path) -> list:
    found = sorted((out / "figures").glob("*.png"))
    assert found and all(p.read_bytes()[:8] == PNG for p in found)
    return [p.name for p in found]


def test_sweep_lr_writes_the_table_json_and_figures(tmp_path, capsys):
    assert main(["sweep", "lr", "--values", "1e-3,0.1,1", "--epochs", "3", "--recipe", TINY,
                 "--out", str(tmp_path), "--quiet"]) == 0
    rows = table(tmp_path)
    assert [float(r["learning_rate"]) for r in rows][0] == 0.1 and len(rows) == 3
    assert set(COLUMNS) <= set(rows[0]) and all(r["batch_size"] == "128" for r in rows)
    accs = [float(r["Accuracy"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    printed = capsys.readouterr().out
    assert "learning_rate" in printed and "Accuracy" in printed
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert sorted(len(r["history"]["val_loss"]) for r in runs)[-1] == 3
    assert {"overlay.png", "bars.png", "curves_lr0.1.png"} <= set(pngs(tmp_path))


def test_sweep_batch_size_counts_steps(tmp_path):
    assert main(["sweep", "batch-size", "--values", "64,512", "--lr", "0.05", "--epochs", "2", "--recipe", TINY,
                 "--out", str(tmp_path), "--quiet", "--no-figures"]) == 0
    rows = {int(r["batch_size"]): r for r in table(tmp_path)}
    assert set(rows) == {64, 512} and all(r["learning_rate"] == "0.05" for r in rows.values())
    assert int(rows[64]["steps"]) == 2 * 20 and int(rows[512]["steps"]) == 2 * 3  # ceil(1258/B) per epoch


def test_seeds_report_mean_and_std(tmp_path, capsys):
    assert main(["sweep", "lr", "--values", "0.1", "--seeds", "3", "--epochs", "2", "--recipe", TINY,
                 "--out", str(tmp_path), "--quiet", "--no-figures"]) == 0
    assert "±" in capsys.readouterr().out
    (row,) = table(tmp_path)
    assert row["seeds"] == "3" and float(row["Accuracy_std"]) >= 0
    assert len(finished(tmp_path)) == 3


def test_search_runs_the_trials(tmp_path):
    assert main(["search", "--trials", "3", "--lr", "0.01,0.1", "--batch-size", "64,128", "--epochs", "2",
                 "--recipe", TINY, "--out", str(tmp_path), "--quiet"]) == 0
    rows = table(tmp_path)
    assert len(rows) == 3 and len({(r["learning_rate"], r["batch_size"]) for r in rows}) == 3
    assert "overlay.png" in pngs(tmp_path)


def test_search_over_ranges_with_seeds(tmp_path, capsys):
    assert main(["search", "--trials", "2", "--seeds", "2", "--lr", "0.01:1", "--batch-size", "32:256",
                 "--epochs", "1", "--recipe", TINY, "--out", str(tmp_path), "--quiet", "--no-figures"]) == 0
    rows = table(tmp_path)
    assert len(rows) == 2 and all(r["seeds"] == "2" for r in rows)
    assert all(0.01 <= float(r["learning_rate"]) <= 1 and 32 <= int(r["batch_size"]) <= 256 for r in rows)


def test_report_reads_a_study_from_its_storage(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "lr", "--values", "0.05,0.1", "--epochs", "1", "--recipe", TINY, "--out", str(out),
                 "--quiet", "--no-figures"]) == 0
    swept = capsys.readouterr().out
    url = f"sqlite:///{out / 'study.db'}"
    assert main(["report", "--storage", url, "--study", "sweep-lr", "--out", str(tmp_path / "r"), "--no-figures"]) == 0
    assert table(tmp_path / "r") == table(out)
    assert capsys.readouterr().out.splitlines()[1:3] == swept.splitlines()[1:3]
    assert main(["report", "--storage", url, "--study", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "'nope': not in" in capsys.readouterr().err


def test_report_without_a_study_name_or_storage_is_one_line(tmp_path, capsys):
    """Several studies and no --study: name them (was "--study None: not in ..."); a sqlite file that does
    not exist is named, not created empty."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("search", "sweep-lr"):
        optuna.create_study(study_name=name, storage=url)
    assert main(["report", "--storage", url, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (f"harness: error: {url} holds 2 studies (search, sweep-lr); "
                                               "name one with --study NAME")
    assert main(["report", "--storage", f"sqlite:///{tmp_path / 'typo.db'}", "--out", str(tmp_path / "r")]) == 2
    assert f"no such file {tmp_path / 'typo.db'}" in capsys.readouterr().err
    assert not (tmp_path / "typo.db").exists()


def test_the_default_folder_is_per_recipe(tmp_path):
    args = ["sweep", "lr", "--values", "0.1", "--epochs", "1", "--quiet", "--no-figures"]
    for recipe in (TINY, "digits28"):
        result = subprocess.run([sys.executable, "-m", "harness", *args, "--recipe", recipe], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300,
                                env={**ENV, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert result.returncode == 0, result.stderr
    assert {p.parent.parent.name for p in tmp_path.glob("results/*/sweep-lr/study.db")} == {"tiny", "digits28"}


def test_recipe_given_twice_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "lr", "--recipe", "digits28", "--recipe", TINY])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("harness: error: --recipe given twice") and len(err.splitlines()) == 1


def test_train_with_early_stopping_and_a_scheduler(tmp_path, capsys):
    assert main(["train", "--lr", "0.5", "--epochs", "8", "--patience", "1", "--scheduler", "step:2:0.5",
                 "--recipe", TINY, "--out", str(tmp_path), "--quiet"]) == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["lr"][:3] == [0.5, 0.5, 0.25] and history["best_epoch"] >= 1
    assert len(history["train_loss"]) <= 8 and "best epoch" in capsys.readouterr().out
    assert any(name.startswith("curves_") for name in pngs(tmp_path))


def test_eda_and_lr_find(tmp_path, capsys):
    assert main(["eda", "--out", str(tmp_path / "eda")]) == 0
    assert "samples per class" in capsys.readouterr().out
    assert pngs(tmp_path / "eda") == ["class_counts.png", "samples.png"]
    assert main(["lr-find", "--recipe", TINY, "--steps", "60", "--out", str(tmp_path / "lr")]) == 0
    assert "suggested lr" in capsys.readouterr().out
    result = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(result["lrs"]) <= 60 and result["recipe_lr"] == 0.1
    assert pngs(tmp_path / "lr") == ["lr_find.png"]


@pytest.mark.parametrize("args, flag", [
    (["sweep", "lr", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "-1"], "--lr"),
    (["sweep", "batch-size", "--lr", "nan"], "--lr"),
    (["sweep", "lr", "--values", "0.1,-2"], "--values"),
    (["sweep", "batch-size", "--values", "8,0.5"], "--values"),
    (["search", "--trials", "0"], "--trials"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--recipe", "no_such_recipe"], "--recipe"),
    (["train", "--scheduler", "bogus"], "--scheduler"),
    (["lr-find", "--lr-min", "1", "--lr-max", "0.1"], "--lr-min"),
    (["sweep", "lr", "--values", ""], "--values: '' is empty"),  # was a sweep of the default values
    (["search", "--lr", "1e-3:inf"], "--lr '1e-3:inf'"),  # was a traceback
    (["search", "--lr", "-1:1"], "--lr=VALUE"),  # argparse reads -1:1 as an option
    (["sweep", "lr", "--lr", "0.5", "--values", "0.1,0.01"], "--lr: an lr sweep takes its lrs from --values"),
    (["sweep", "batch-size", "--batch-size", "64"], "--batch-size: a batch-size sweep takes its sizes"),  # were ignored
    (["search", "--sampler", "tpe", "--trials", "3", "--lr", "0.1,0.01", "--batch-size", "32"],
     "--trials 3: the space (lr 0.1,0.01, batch size 32) holds only 2"),  # tpe ran 2 and asked 20 repeats
])
def test_bad_arguments_are_one_line_naming_the_flag(args, flag, capsys):
    with pytest.raises(SystemExit) as e:
        sys.exit(main(args + ["--out", "/nonexistent/never-written"]))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("harness: error: ") and flag in err, err


def test_python_dash_m_harness_and_a_one_line_error():
    result = harness("train", "--lr", "-1")
    assert result.returncode == 2 and result.stderr.strip() == "harness: error: --lr: '-1' is not a positive number"
    assert "sweep" in harness("--help").stdout


def wait_for_a_finished_trial(proc, out: Path) -> None:
    deadline = time.time() + 240
    while not finished(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    args = [sys.executable, "-m", "harness", "sweep", "lr", "--values", "0.01,0.02,0.05,0.1", "--epochs", "25",
            "--out", str(tmp_path), "--no-figures", "--heartbeat", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    wait_for_a_finished_trial(proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished(tmp_path)
    assert 1 <= len(done) < 4 and not (tmp_path / "table.csv").exists()
    result = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(done)} of 4 trials already finished" in result.stderr
    after = finished(tmp_path)
    assert {k: after[k] for k in done} == done and len(after) == 4  # not re-run, and the killed one retried
    assert len(table(tmp_path)) == 4


def test_ctrl_c_keeps_finished_runs_and_says_how_to_resume(tmp_path):
    args = [sys.executable, "-m", "harness", "sweep", "lr", "--values", "0.01,0.02,0.05,0.1", "--epochs", "25",
            "--out", str(tmp_path), "--no-figures"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_a_finished_trial(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err.lower(), err
    assert "Traceback" not in err and finished(tmp_path)
