"""A configuration whose run raises (a batch size that leaves BatchNorm a batch of 1, an
out-of-memory batch) is a result of a sweep or search, not its end: it is recorded as failed
with its one line, the other configurations run, the table and results.json hold both, and the
command exits 1 (2 when no run finished and the recipe is at fault). --fail-fast stops at the
first, as before. A re-run retries the failed ones; --drop-last is the way past BatchNorm's batch of 1.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from harness import data as hdata, study
from harness.recipe import Recipe
from harness.study.storage import default_url, failed_runs, load_existing

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
N_TRAIN = 201  # batch 4 leaves a last batch of 1 (201 = 50 x 4 + 1); 16 and 32 leave 9


def small_data():
    return hdata.synthetic(n_train=N_TRAIN, n_val=64, n_test=64, shape=(1, 8, 8), seed=5)


def batchnorm_mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 10))


class Broken(torch.nn.Module):
    """Every run raises: a recipe bug, not a setting."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)  # (N, 1, 8, 8) into Linear(64): a shape error in every run


BN = Recipe(model=batchnorm_mlp, data=small_data, num_classes=10, lr=0.1, batch_size=16, epochs=2, name="bn")
BROKEN = Recipe(model=Broken, data=small_data, num_classes=10, lr=0.1, batch_size=16, epochs=2, name="broken")


def harness(*args, timeout=300) -> subprocess.CompletedProcess:
    threads = ["--threads", "1"] if args[0] != "report" else []  # report trains nothing: it has no --threads
    return subprocess.run([sys.executable, "-m", "harness", *args, "--quiet", "--no-figures", *threads],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def spec(name: str) -> str:
    return f"{Path(__file__).resolve()}:{name}"


def states(out: Path) -> dict:
    trials = load_existing(default_url(out), None).get_trials()
    return {t.params["batch_size"]: t.state.name for t in trials}


# --- the Python API ------------------------------------------------------------------------------------

def test_a_run_that_raises_is_recorded_and_the_others_run(tmp_path):
    configs = study.sweep_configs("batch-size", [4, 16, 32], lr=0.1, batch_size=16, epochs=2)
    with pytest.raises(study.StudyFailures) as info:
        study.run_study(None, configs, tmp_path, recipe=BN, progress=False)
    e = info.value
    assert [r["config"]["batch_size"] for r in e.results] == [16, 32]
    assert [f["config"]["batch_size"] for f in e.failures] == [4]
    assert "BatchNorm" in e.failures[0]["error"] and "--drop-last" in e.failures[0]["error"]
    assert str(e).startswith("1 of 3 runs raised (first: lr=0.1 batch=4 seed=0: fit: ") and "\n" not in str(e)
    assert states(tmp_path) == {4: "FAIL", 16: "COMPLETE", 32: "COMPLETE"}


def test_fail_fast_stops_at_the_first_and_leaves_the_others_queued(tmp_path):
    configs = study.sweep_configs("batch-size", [4, 16, 32], lr=0.1, batch_size=16, epochs=2)
    with pytest.raises(study.TrialError) as info:
        study.run_study(None, configs, tmp_path, recipe=BN, progress=False, fail_fast=True)
    assert not isinstance(info.value, study.StudyFailures)
    assert str(info.value).startswith("lr=0.1 batch=4 seed=0: fit: ")
    assert states(tmp_path) == {4: "FAIL", 16: "WAITING", 32: "WAITING"}


def test_a_rerun_retries_the_failed_configuration_only(tmp_path):
    configs = study.sweep_configs("batch-size", [4, 16], lr=0.1, batch_size=16, epochs=2)
    for _ in range(2):
        with pytest.raises(study.StudyFailures):
            study.run_study(None, configs, tmp_path, recipe=BN, progress=False)
    trials = load_existing(default_url(tmp_path), None).get_trials()
    assert sorted((t.params["batch_size"], t.state.name) for t in trials) == [(4, "FAIL"), (4, "FAIL"),
                                                                             (16, "COMPLETE")]
    assert len(failed_runs(load_existing(default_url(tmp_path), None))) == 1  # one per configuration


def test_drop_last_trains_what_batchnorm_could_not(tmp_path):
    configs = study.sweep_configs("batch-size", [4, 16], lr=0.1, batch_size=16, epochs=2,
                                  options=(("drop_last", True),))
    results = study.run_study(None, configs, tmp_path, recipe=BN, progress=False)
    assert [r["row"]["steps_per_epoch"] for r in results] == [N_TRAIN // 4, N_TRAIN // 16]


# --- the command line ------------------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_sweep_reports_what_finished_and_what_failed_then_exits_1(tmp_path, jobs):
    out = tmp_path / "sweep"
    done = harness("sweep", "batch-size", "--recipe", spec("BN"), "--values", "4,16,32", "--epochs", "2",
                   "--out", str(out), "--jobs", jobs)
    assert done.returncode == 1, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert err == ["harness: error: 1 of 3 runs raised (listed above and in results.json 'failed'); the others "
                   "finished; run the same command again to retry them"]
    assert "failed: lr=0.1 batch=4 seed=0: fit: " in done.stdout and "(2 runs, sorted by Accuracy)" in done.stdout
    text = (out / "results.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"results.json holds {c}"))
    assert [r["config"]["batch_size"] for r in report["runs"]] == [16, 32]
    assert [(f["config"]["batch_size"], "BatchNorm" in f["error"]) for f in report["failed"]] == [(4, True)]
    again = harness("report", "--out", str(out))  # the report of the study says the same
    assert again.returncode == 0 and "failed: lr=0.1 batch=4 seed=0: fit: " in again.stdout


def test_fail_fast_on_the_command_line(tmp_path):
    out = tmp_path / "sweep"
    done = harness("sweep", "batch-size", "--recipe", spec("BN"), "--values", "4,16", "--epochs", "2",
                   "--out", str(out), "--fail-fast")
    assert done.returncode == 2, done.stderr[-2000:]  # fit's own check: the recipe at this setting
    assert done.stderr.startswith("harness: error: lr=0.1 batch=4 seed=0: fit: ") and "failed:" not in done.stdout
    assert states(out) == {4: "FAIL", 16: "WAITING"}


def test_a_recipe_that_always_raises_ends_a_tpe_search(tmp_path):
    """TPE counts a point whose run raised as tried: it used to count only the points that ran, so a
    recipe that always raises would have had TPE propose points for ever."""
    out = tmp_path / "search"
    done = harness("search", "--recipe", spec("BROKEN"), "--sampler", "tpe", "--trials", "3", "--epochs", "1",
                   "--batch-size", "8:64", "--out", str(out), timeout=240)
    assert done.returncode == 2, done.stderr[-2000:]  # nothing finished and the recipe is at fault
    assert done.stderr.startswith("harness: error: 3 of 3 runs raised (first: lr=") and "none finished" in done.stderr
    trials = optuna.load_study(study_name="search", storage=default_url(out)).get_trials()
    assert sum(t.state.name == "FAIL" and "error" in t.user_attrs for t in trials) == 3


def test_another_option_in_the_same_study_is_named_in_the_refusal(tmp_path):
    out = tmp_path / "sweep"
    first = harness("sweep", "batch-size", "--recipe", spec("BN"), "--values", "16", "--epochs", "1", "--out", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    second = harness("sweep", "batch-size", "--recipe", spec("BN"), "--values", "16", "--epochs", "1",
                     "--out", str(out), "--drop-last")
    assert second.returncode == 2
    assert "with options none, not " in second.stderr and "with options drop_last=True;" in second.stderr


def test_the_progress_bar_shows_a_failure_when_it_happens_and_counts_it_done(tmp_path, capsys):
    configs = study.sweep_configs("batch-size", [4, 16], lr=0.1, batch_size=16, epochs=2)
    with pytest.raises(study.StudyFailures):
        study.run_study(None, configs, tmp_path, recipe=BN, progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "failed: lr=0.1 batch=4 seed=0: fit: " in err
    assert "2/2" in err and "failed 1" in err  # the failed run counts toward the total: the bar ends full


def test_report_on_a_study_not_finished_says_so(tmp_path):
    """harness report mid-study printed a one-row table as if it were the whole study (found by R)."""
    configs = study.sweep_configs("batch-size", [16, 4, 32], lr=0.1, batch_size=16, epochs=2)
    with pytest.raises(study.TrialError):
        study.run_study(None, configs, tmp_path, recipe=BN, progress=False, fail_fast=True)  # 32 left waiting
    done = harness("report", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the study is not finished (1 waiting): the table holds the 1 run finished so far" in done.stderr
    assert "failed: lr=0.1 batch=4 seed=0: fit: " in done.stdout


def test_tpe_counts_the_points_it_proposed_not_the_rows():
    """A point pruned in every seed has no table row: TPE had found 6 of 6 configurations, and the search
    said 'tpe found 4 of 6 ...: it kept proposing ones already run' (found by R)."""
    from harness.study.trials import proposed_points

    s = optuna.create_study(direction="maximize")
    made = [("COMPLETE", {"point": [0.1, 8], "row": {}}), ("PRUNED", {"point": [0.2, 8]}),  # cut by a pruner
            ("FAIL", {"point": [0.3, 8], "error": "raised"}), ("FAIL", {"point": [0.1, 8], "repeat": True}),
            ("COMPLETE", {"row": {}})]  # a seed copy: no point of its own
    for state, attrs in made:
        s.add_trial(optuna.trial.create_trial(state=getattr(optuna.trial.TrialState, state), user_attrs=attrs,
                                              value=0.5 if state == "COMPLETE" else None))
    assert proposed_points(s) == 3


def test_tpe_trains_with_the_lr_its_trial_records(tmp_path):
    """TPE's trial recorded the lr it suggested (0.018381071086664275) and trained the rounded 0.0184:
    study.best_params named an lr that never ran, and a point's seeds sat at two lrs (found by R)."""
    out = tmp_path / "search"
    done = harness("search", "--recipe", spec("BN"), "--sampler", "tpe", "--trials", "3", "--seeds", "2",
                   "--epochs", "1", "--batch-size", "16:32", "--out", str(out), "--drop-last")
    assert done.returncode == 0, done.stderr[-2000:]
    trials = [t for t in optuna.load_study(study_name="search", storage=default_url(out)).trials if "config" in t.user_attrs]
    assert len(trials) == 6
    assert all(t.params["lr"] == t.user_attrs["config"]["lr"] for t in trials)
    assert all(t.params["lr"] == t.user_attrs["history"]["lr"][0] for t in trials)  # what the optimizer used


def test_a_process_joining_a_shared_study_says_it_joins(tmp_path, capsys):
    """A second `harness search --storage URL --study NAME` said 'running 6 trials in this process' as
    its creator did (found by R)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    configs = study.sweep_configs("batch-size", [16, 4, 32], lr=0.1, batch_size=16, epochs=1)
    with pytest.raises(study.TrialError):
        study.run_study(None, configs, tmp_path / "a", recipe=BN, storage=url, study="s", fail_fast=True)
    assert "running 3 trials in this process; study 's'" in capsys.readouterr().err
    with pytest.raises(study.StudyFailures):
        study.run_study(None, configs, tmp_path / "b", recipe=BN, storage=url, study="s")
    err = capsys.readouterr().err
    assert f"joining study 's' at {url}: 2 trials not finished, run here in this process and by its other workers" in err


def test_a_progress_bar_in_a_log_is_not_redrawn_every_second():
    """stderr to a file (CI, nohup): the bar was redrawn about 1.5 times a second (found by R)."""
    import io

    from harness.study.progress import StudyProgress

    s = optuna.create_study(direction="maximize")
    s.add_trial(optuna.trial.create_trial(value=0.25, user_attrs={"row": {"Score_metric": "R2"}}))
    log = io.StringIO()  # not a terminal
    with StudyProgress(s, total=2, stream=log) as bar:
        for _ in range(20):  # twenty seconds of a study where nothing changes
            bar.refresh()
    assert log.getvalue().count("best R2 0.2500") <= 2, log.getvalue()  # the first draw and the last


def test_runs_a_pruner_stopped_are_in_results_json_and_table_txt(tmp_path):
    """They were only a count on the terminal: the folder read later could not tell which points were
    pruned, at which epoch, or why (found by R)."""
    from harness.study.storage import Results, pruned_runs
    from harness.study.reports import write_outputs

    s = optuna.create_study(direction="maximize")
    config = {"lr": 0.3, "batch_size": 8, "epochs": 3, "seed": 0, "options": []}
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
        "key": "k1", "config": config, "pruned_reason": "median pruner at epoch 2: val loss 2.1",
        "history": {"val_loss": [2.3, 2.1]}}))
    pruned = pruned_runs(s)
    assert [(p["config"]["lr"], p["reason"]) for p in pruned] == [(0.3, "median pruner at epoch 2: val loss 2.1")]
    write_outputs(tmp_path, Results([], pruned), [], ("learning_rate",), title="t", figures=False)
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["pruned"][0]["history"] == {"val_loss": [2.3, 2.1]}
    assert "pruned: lr=0.3 batch=8 seed=0: median pruner at epoch 2: val loss 2.1" in (tmp_path / "table.txt").read_text()


def test_a_joiner_with_another_pruning_policy_is_refused(tmp_path):
    """A joiner with --prune median was accepted into a study made without pruning, and pruned the trials it
    ran: the study's results depended on which machine ran what (found by R2). The refusal names --study,
    not --out, under a --storage."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = harness("sweep", "lr", "--recipe", spec("BN"), "--values", "0.1", "--epochs", "1", "--storage", url,
                    "--study", "s", "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr[-2000:]
    second = harness("sweep", "lr", "--recipe", spec("BN"), "--values", "0.1", "--epochs", "1", "--storage", url,
                     "--study", "s", "--out", str(tmp_path / "b"), "--prune", "median")
    assert second.returncode == 2, second.stderr[-2000:]
    assert "with prune none, not " in second.stderr and "with prune median;" in second.stderr
    assert "use another --study NAME (--out does not choose it in a --storage)" in second.stderr


def test_rerunning_a_finished_study_says_so_without_an_empty_bar(tmp_path, capsys):
    configs = study.sweep_configs("batch-size", [16], lr=0.1, batch_size=16, epochs=1)
    study.run_study(None, configs, tmp_path, recipe=BN, progress=False)
    study.run_study(None, configs, tmp_path, recipe=BN, progress=True)
    err = capsys.readouterr().err
    assert f"all 1 trials already finished in study 'study' at {default_url(tmp_path)}" in err
    assert "running 0" not in err and "0/1" not in err


def test_ctrl_c_waits_while_the_storage_opens(monkeypatch):
    """A Ctrl-C in the first half second of run_study (a notebook cell interrupted at once) landed inside
    SQLAlchemy's first imports and left them half done: every later study in that kernel failed until a
    restart (found by R2). SIGINT is held while the storage opens, and delivered after."""
    import signal

    from harness.study import storage as storage_module

    seen = {}

    class Recording:
        def __init__(self, *args, **kwargs):
            seen["held"] = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])

    monkeypatch.setattr(optuna.storages, "RDBStorage", Recording)
    storage_module.open_storage("sqlite:///unused.db")
    assert seen == {"held": True}
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # and let go after
