"""Where a study's runs are scored, and what Optuna maximises.

The table reports the task's metrics on the test split (as the notebook), and says so when the
recipe has none (scored on val, or on the training split). What Optuna maximises, what TPE adapts
to and optuna-dashboard ranks by, is the main metric on the val split at the epoch the run kept:
a sampler fed the test metric selects on the test split. Found by R."""
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from harness import Data, History, study
from harness.data import synthetic
from harness.recipe import Recipe
from harness.study.one_run import make_result
from harness.study.storage import default_url
from harness.study.trials import score_of

ROOT = Path(__file__).resolve().parents[1]


def splits(val=True, test=True) -> Data:
    d = synthetic(n_train=128, n_val=64, n_test=64, shape=(1, 4, 4), seed=1)
    return Data(train=d.train, val=d.val if val else None, test=d.test if test else None)


def history() -> History:
    return History(train_loss=[2.0, 1.0, 0.9], val_acc=[0.5, 0.8, 0.7], val_loss=[1.5, 1.0, 1.1], best_epoch=2,
                   steps=[4, 4, 4])


METRICS = {"accuracy": 0.6, "infer_seconds": 0.0}


@pytest.mark.parametrize("val, test, scored_on", [(True, True, "test"), (True, False, "val"), (False, False, "train")])
def test_the_row_says_where_it_was_scored(val, test, scored_on):
    row = make_result(study.Config(lr=0.1, batch_size=8, epochs=3), history(), METRICS, splits(val, test))["row"]
    assert row["Scored_on"] == scored_on and row["Score"] == 0.6


def test_optuna_maximises_the_val_metric_of_the_kept_epoch():
    config = study.Config(lr=0.1, batch_size=8, epochs=3)
    last = make_result(config, history(), METRICS, splits())["row"]
    assert last["Val_score"] == 0.7 and score_of(last) == 0.7            # the last epoch: the weights it ended with
    patient = make_result(study.Config(lr=0.1, batch_size=8, epochs=3, options=(("patience", 1),)), history(),
                          METRICS, splits())["row"]
    assert patient["Val_score"] == 0.8                                   # --patience restores the best epoch's
    no_val = make_result(config, history(), METRICS, splits(val=False, test=True))["row"]
    assert "Val_score" not in no_val and score_of(no_val) == 0.6         # no val split: the test metric


def test_the_studys_objective_is_named_val(tmp_path):
    recipe = Recipe(model=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)),
                    data=splits, num_classes=10, lr=0.1, batch_size=16, epochs=2, name="tiny")
    results = study.run_study(None, study.sweep_configs("lr", [0.05, 0.1], lr=0.1, batch_size=16, epochs=2), tmp_path,
                              recipe=recipe, progress=False)
    s = optuna.load_study(study_name="study", storage=default_url(tmp_path))
    assert s.metric_names == ["val Accuracy"]
    assert sorted(t.value for t in s.trials) == sorted(r["row"]["Val_score"] for r in results)




def harness(tmp_path, *args):
    recipe = tmp_path / "r.py"
    recipe.write_text("import torch\nfrom harness import Data, Recipe\nfrom harness.data import synthetic\n"
                      "def load():\n    d = synthetic(n_train=128, n_val=64, n_test=64, shape=(1, 4, 4), seed=1)\n"
                      "    return Data(train=d.train, val=None, test=None)\n"
                      "RECIPE = Recipe(model=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)),"
                      " data=load, num_classes=10, lr=0.1, batch_size=16, epochs=2, name='noval')\n")
    return subprocess.run([sys.executable, "-m", "harness", "sweep", "lr", "--recipe", f"{recipe}:RECIPE", "--values",
                           "0.05,0.1", "--out", str(tmp_path / "out"), "--quiet", "--no-figures", "--threads", "1",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_a_table_scored_on_the_training_split_says_so(tmp_path):
    done = harness(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scored on the training split (the recipe has no val or test split)" in done.stdout


def test_prune_without_a_val_split_is_one_line(tmp_path):
    done = harness(tmp_path, "--prune", "median")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "harness: error: --prune median: the recipe has no val split, and the pruner reads the val loss of each "
        "epoch; give the recipe a val split, or drop --prune"]
