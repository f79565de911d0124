"""A new user's mistakes and faults beyond the README's bad-input table, each tried the ways a
user would: `harness` (the CLI), the Python API (`train()`, `fit()`, `harness.io`) and
`pytest --pyargs harness.suites -m sanity --recipe`.

Expected, every time: a correct result, or ONE clear line naming the parameter and the fix
(a warning line where the input works but is probably not what was meant). Never a raw
traceback, nothing silent, nothing lost, nothing executed. A case that does not behave yet
is a strict xfail naming its owner (see /work/team/TEAM.md, "Reliability findings from H7").

    pytest tests/test_reliability.py
"""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

import harness.cli  # noqa: F401  imported before pytester snapshots sys.modules (see reliability_surfaces)
import harness.study  # noqa: F401
from harness.data import cifar10, fashion_mnist
from harness.recipes import load_recipe
from tests import reliability_recipes as R
from tests.fakedata import write_cifar10, write_fashion_mnist
from tests.reliability_surfaces import TRACE, Outcome, via_api, via_cli, via_cli_process, via_pytest

try:
    import optuna  # noqa: F401  the study's storage imports SQLAlchemy; keep it out of pytester's snapshot
except ImportError:  # pragma: no cover
    pass

ROOT = Path(__file__).resolve().parents[1]
FILE = R.__file__


# --- what a case expects ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    kind: str                 # "ok": a correct result; "line": one clear line; "warn": works, one warning line
    fragments: tuple = ()     # what the line must hold (the parameter and the fix)
    xfail: Optional[str] = None  # "owner: H2 — what happens now"


def ok(xfail=None):
    return Expect("ok", (), xfail)


def line(*fragments, xfail=None):
    return Expect("line", fragments, xfail)


def warn(*fragments, xfail=None):
    return Expect("warn", fragments, xfail)


def category(outcome: Outcome, expect: Expect) -> str:
    """What the user got: correct | line | unclear (a line without the parameter or the fix) | traceback | silent."""
    if outcome.kind == "traceback":
        return "traceback"
    if expect.kind == "line":
        if outcome.kind == "ran":
            return "silent"
        return "line" if not TRACE.search(outcome.text) and outcome.has(*expect.fragments) else "unclear"
    if outcome.kind != "ran":
        return "unclear"
    if expect.kind == "warn":
        texts = outcome.warnings + outcome.text.splitlines()
        return "correct" if any(all(f in w for f in expect.fragments) for w in texts) else "silent"
    return "correct"


def _said(outcome: Outcome, expect: Expect) -> str:
    """The line the user got that holds the expected fragments (else the last line or warning)."""
    lines = outcome.warnings + [s for s in outcome.text.splitlines() if s.strip()]
    return next((s for s in lines if expect.fragments and all(f in s for f in expect.fragments)),
                lines[-1] if lines else "")[:300]


def judge(outcome: Outcome, expect: Expect, surface: str):
    """Assert the user saw what `expect` says, else say what they saw."""
    if os.environ.get("H7_TALLY"):  # `H7_TALLY=file pytest tests/test_reliability.py` counts the outcomes
        with open(os.environ["H7_TALLY"], "a") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],  # outer test, or
                                # the inner run's when pytester ran in-process: `surface` names the case too
                                "surface": surface, "got": category(outcome, expect),
                                "said": _said(outcome, expect)}) + "\n")
    seen = f"{surface} gave {outcome.kind}:\n{outcome.text[-2500:]}\nwarnings: {outcome.warnings}"
    if expect.kind in ("ok", "warn"):
        assert outcome.kind == "ran", seen
        if expect.kind == "warn":
            texts = outcome.warnings + outcome.text.splitlines()
            assert any(all(f in w for f in expect.fragments) for w in texts), seen
            assert all("\n" not in w for w in outcome.warnings), seen
        return
    assert outcome.kind == "line", seen
    assert not TRACE.search(outcome.text), seen
    assert outcome.has(*expect.fragments), f"no line holds all of {expect.fragments}; {seen}"


# --- recipes with one mistake each: (what, api, cli, pytest) -----------------------------------------
# api: train(load_recipe(spec), epochs=1); cli: harness train --recipe SPEC --epochs 1;
# pytest: pytest --pyargs harness.suites -m sanity --recipe SPEC.

RECIPES = {
    "TUPLE_NOT_DATA": ("data factory returns (train, val, test), not Data",
                       line("data factory returned tuple", "harness.Data("),
                       line("data factory returned tuple", "harness.Data("),
                       line("data factory returned tuple")),
    "VAL_EMPTY": ("an empty val split",
                  line("the val split is empty", "val=None"), line("the val split is empty", "val=None"),
                  line("[split_empty] val")),
    "VAL_OTHER_SHAPE": ("val images 32x32, train 28x28",
                        line("val", "(1, 32, 32)", "(1, 28, 28)"), line("val", "(1, 32, 32)", "(1, 28, 28)"),
                        line("[split_shapes_differ]")),
    "VAL_NAN": ("a NaN in the val split only",
                line("val inputs hold 1 NaN/Inf values"), line("val inputs hold 1 NaN/Inf values"),
                line("[inputs_not_finite] val")),
    "LABELS_LIST": ("labels as a Python list",
                    line("train split", "tensors or numpy arrays"), line("train split", "tensors or numpy arrays"),
                    line("train", "tensors or numpy arrays")),
    "CUDA_TENSORS": ("data built on CUDA on a machine without it",
                     line("data factory raised RuntimeError", "NVIDIA driver"),
                     line("data factory raised RuntimeError", "NVIDIA driver"),
                     line("data factory raised RuntimeError")),
    "DATA_RAISES": ("the data factory cannot find its CSV",
                    line("data factory raised FileNotFoundError", "data/train.csv"),
                    line("data factory raised FileNotFoundError", "data/train.csv"),
                    line("data factory raised FileNotFoundError")),
    "UINT8_INPUTS": ("images left as uint8 0..255",
                     line("uint8", "float", "x.float() / 255"), line("uint8", "float", "x.float() / 255"),
                     line("[inputs_not_float]", "uint8")),
    "HALF_INPUTS": ("float16 inputs, float32 model",
                    line("inputs are float16", "convert the inputs"), line("inputs are float16", "convert the inputs"),
                    line("float16")),
    "DICT_DATASET": ("a Dataset whose samples are dicts",
                     line("batch is a dict with keys", "collate_fn"), line("batch is a dict with keys", "collate_fn"),
                     line("batch is a dict with keys")),
    "BROKEN_DATASET": ("a Dataset whose __getitem__ raises on sample 77",
                       line("train", "sample 77"), line("train", "sample 77", "reading"),
                       line("[split_unreadable] train", "KeyError")),
    "DATALOADER_SPLIT": ("a train DataLoader with shuffle=False",
                         warn("shuffle"), warn("shuffle"),
                         ok()),
    "REQUIRES_GRAD_INPUTS": ("inputs that require grad", ok(), ok(), ok()),
    "NHWC_CNN": ("channels-last images (N, 28, 28, 1) into a Conv2d",
                 line("model", "(64, 28, 28, 1)"), line("model", "(64, 28, 28, 1)"),
                 line("to have 1 channels")),
    "BATCHNORM_LAST_BATCH_OF_ONE": ("BatchNorm with 129 samples at batch 64: a last batch of one",
                                    line("batch", "drop_last"), line("batch", "drop_last"),
                                    ok()),
    "HUGE_BATCH": ("batch_size 10,000,000 on 256 samples",
                   warn("batch_size 10000000 is larger than the 256-sample training split"),
                   warn("batch_size 10000000 is larger than the 256-sample training split"),
                   warn("batch_size 10000000 is larger")),
    "LIST_OUTPUT": ("a model that returns [logits]", ok(), ok(), ok()),
    "PRINTS": ("a model whose forward prints", ok(), ok(), ok()),
    "NO_FORWARD": ("a module without forward()",
                   line("forward", "define forward"),
                   line("forward"),
                   line("forward")),
    "NEEDS_ARGS": ("model=Net where Net(hidden) needs an argument",
                   line("model factory raised TypeError", "'hidden'"), line("model factory raised TypeError", "'hidden'"),
                   line("model factory raised TypeError")),
    "MODEL_INSTANCE": ("model=Net() (an instance) instead of a factory",
                       line("model", "instance"), line("model", "instance"), line("model", "instance")),
    "DOUBLE_MODEL": ("a float64 model, float32 inputs",
                     line("model's parameters are float64"), line("model's parameters are float64"),
                     line("float64")),
    "LOSS_CLASS": ("loss=nn.CrossEntropyLoss (the class, not an instance)",
                   line("loss", "CrossEntropyLoss()"), line("loss", "CrossEntropyLoss()"),
                   line("loss")),
    "LOSS_SWAPPED": ("a loss that calls cross_entropy(targets, outputs)",
                     line("loss", "(outputs, targets)"), line("loss", "(outputs, targets)"),
                     line("loss")),
    "LOSS_ITEM": ("a loss that returns loss.item() (a float)",
                  line("loss", "float"), line("loss", "float"),
                  line("loss")),
    "OPT_ONE_ARG": ("optimizer=lambda params: SGD(params, 0.1)",
                    line("optimizer factory raised TypeError", "optimizer(params, lr)"),
                    line("optimizer factory raised TypeError", "optimizer(params, lr)"),
                    line("optimizer")),
    "OPT_RETURNS_NONE": ("an optimizer factory without return",
                         line("optimizer factory returned NoneType"), line("optimizer factory returned NoneType"),
                         line("optimizer factory returned NoneType")),
    "STEP_RETURNS_NONE": ("a train_step without return",
                          line("train_step returned None"), line("train_step returned None"),
                          line("train_step returned None")),
    "STEP_WRONG_SIGNATURE": ("train_step(model, batch, optimizer)",
                             line("train_step", "(model, inputs, targets, optimizer"),
                             line("train_step", "(model, inputs, targets, optimizer"),
                             line("train_step")),
    "STEP_RETURNS_FLOAT": ("a train_step that returns loss.item()", ok(), ok(), ok()),
    "NEEDS_ARGUMENT": ("--recipe names a function that needs an argument",
                       line("calling NEEDS_ARGUMENT() raised TypeError", "'width'"),
                       line("calling NEEDS_ARGUMENT() raised TypeError", "'width'"),
                       line("calling NEEDS_ARGUMENT() raised TypeError")),
}


def _param(name, surface, expect):
    marks = [pytest.mark.xfail(strict=True, reason=expect.xfail)] if expect.xfail else []
    return pytest.param(name, expect, id=f"{surface}-{name}", marks=marks)


def _params(index, surface):
    return [_param(name, surface, case[index]) for name, case in RECIPES.items()]


@pytest.mark.parametrize("name,expect", _params(1, "api"))
def test_recipe_mistake_in_the_python_api(name, expect):
    judge(via_api(lambda: harness_train(f"{FILE}:{name}")), expect, f"train() {name}")


def harness_train(spec):
    from harness import train
    return train(load_recipe(spec), epochs=1)


@pytest.mark.parametrize("name,expect", _params(2, "cli"))
def test_recipe_mistake_in_the_cli(name, expect, tmp_path):
    outcome = via_cli(["train", "--recipe", f"{FILE}:{name}", "--epochs", "1", "--out", tmp_path / "out",
                       "--no-figures", "--quiet"])
    judge(outcome, expect, f"harness train {name}")


@pytest.mark.parametrize("name,expect", _params(3, "pytest"))
def test_recipe_mistake_in_the_sanity_suite(name, expect, pytester):
    judge(via_pytest(pytester, "--recipe", f"{FILE}:{name}"), expect, f"pytest -m sanity {name}")


# --- a model factory that hands out one model: runs would share (and continue) its training -----------

def test_a_model_factory_returning_the_same_instance_is_one_line():
    recipe = load_recipe(f"{FILE}:SAME_INSTANCE")
    recipe.build_model()
    outcome = via_api(recipe.build_model)
    judge(outcome, line("model factory returned the same", "new"), "build_model twice")


def test_a_sweep_over_a_shared_model_instance_is_one_line(tmp_path):
    outcome = via_cli(["sweep", "lr", "--recipe", f"{FILE}:SAME_INSTANCE", "--values", "0.01,0.1", "--epochs", "1",
                       "--out", tmp_path / "out", "--no-figures", "--quiet"])
    judge(outcome, line("same", "model"), "harness sweep lr")


# --- recipe files with a typo -------------------------------------------------------------------------

RECIPE_FILES = {
    "NAME typo (RECIPES)": ("from tests.reliability_recipes import HUGE_BATCH as RECIPE\n", ":RECIPES",
                            ["has no attribute 'RECIPES'", "Recipe objects there: RECIPE"]),
    "keyword typo (batchsize=)": ("from harness import Recipe\nfrom harness.data import synthetic\n"
                                  "from harness.models import fashion_mlp\n"
                                  "RECIPE = Recipe(model=fashion_mlp, data=synthetic, num_classes=10, batchsize=64)\n",
                                  "", ["unexpected keyword argument 'batchsize'"]),
    "lr as a string": ("from harness import Recipe\nfrom harness.data import synthetic\n"
                       "from harness.models import fashion_mlp\n"
                       "RECIPE = Recipe(model=fashion_mlp, data=synthetic, num_classes=10, lr='0.1')\n",
                       "", ["lr must be a positive finite number, got '0.1'"]),
    "imports a package that is not installed": ("import tensorflow_not_installed\n", "",
                                                ["No module named 'tensorflow_not_installed'"]),
    "a recipe file that is a directory": (None, "", ["no such file"]),
    "lowercase recipe name": ("from tests.reliability_recipes import HUGE_BATCH as recipe\n", "",
                              ["has no attribute 'RECIPE'", "Recipe objects there: recipe"]),
}


def _recipe_file(tmp_path, row):
    source, suffix, fragments = RECIPE_FILES[row]
    if source is None:
        (tmp_path / "recipes").mkdir()
        return str(tmp_path / "recipes") + suffix, fragments
    path = tmp_path / "my_recipe.py"
    path.write_text(source)
    return str(path) + suffix, fragments


@pytest.mark.parametrize("row", list(RECIPE_FILES))
def test_recipe_file_typo_in_the_cli(row, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    spec, fragments = _recipe_file(tmp_path, row)
    outcome = via_cli(["train", "--recipe", spec, "--epochs", "1", "--out", tmp_path / "out", "--quiet"])
    judge(outcome, line(*fragments), "harness train")


@pytest.mark.parametrize("row", list(RECIPE_FILES))
def test_recipe_file_typo_in_the_python_api(row, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    spec, fragments = _recipe_file(tmp_path, row)
    judge(via_api(lambda: load_recipe(spec)), line(*fragments), "load_recipe")


@pytest.mark.parametrize("row", list(RECIPE_FILES))
def test_recipe_file_typo_in_pytest(row, tmp_path, pytester, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    spec, fragments = _recipe_file(tmp_path, row)
    outcome = via_pytest(pytester, "--recipe", spec)
    judge(outcome, line("ERROR: --recipe", *fragments), "pytest --recipe")
    assert outcome.value == pytest.ExitCode.USAGE_ERROR


# --- command-line values ------------------------------------------------------------------------------

CLI_VALUES = {
    "--lr 1 (an int)": (["train", "--lr", "1"], ok()),
    "--lr 1e-1": (["train", "--lr", "1e-1"], ok()),
    "--device gpu": (["train", "--device", "gpu"], line("--device", "'gpu'", "use cpu, cuda or auto")),
    "--device cuda:7": (["train", "--device", "cuda:7"], line("--device", "'cuda:7'", "use cpu")),
    "--scheduler step (no step size)": (["train", "--scheduler", "step"], line("--scheduler 'step'", "step:20:0.1")),
    "--scheduler cosine:abc": (["train", "--scheduler", "cosine:abc"], line("--scheduler 'cosine:abc'")),
    "--batch-size 64.0": (["train", "--batch-size", "64.0"], line("--batch-size: '64.0' is not a whole number")),
    "--subset 1.5": (["train", "--subset", "1.5"], line("--subset", "a fraction must be in (0, 1]")),
    "--subset 100000 (more than the split)": (["train", "--subset", "100000"],
                                              warn("subset", "1258")),
    "--values with an empty item": (["sweep", "lr", "--values", "0.1,,0.2"], ok()),
    "--values repeated": (["sweep", "lr", "--values", "0.1,0.1"], line("--values", "repeats a value")),
    "--momentum 1.5": (["train", "--momentum", "1.5"],
                       line("--momentum", "1.5", "[0, 1)")),
    "--seed -1": (["train", "--seed", "-1"], ok()),
    "--threads 0": (["train", "--threads", "0"], line("--threads: '0' is not a whole number >= 1")),
    "--jobs -1": (["train", "--jobs", "-1"], line("--jobs: '-1' is not a whole number >= 0")),
    "--epochs 1.5": (["train", "--epochs", "1.5"], line("--epochs: '1.5' is not a whole number >= 1")),
}


def _cli_param(row):
    argv, expect = CLI_VALUES[row]
    marks = [pytest.mark.xfail(strict=True, reason=expect.xfail)] if expect.xfail else []
    return pytest.param(row, id=row, marks=marks)


@pytest.mark.parametrize("row", [_cli_param(r) for r in CLI_VALUES])
def test_cli_value(row, tmp_path):
    argv, expect = CLI_VALUES[row]
    if "cuda" in row and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    extra = (["--epochs", "1"] if "--epochs" not in argv else []) + (["--subset", "200"] if "--subset" not in argv else [])
    outcome = via_cli([*argv, *extra, "--out", tmp_path / "out", "--no-figures", "--quiet"])
    judge(outcome, expect, "harness " + " ".join(argv))


# --- the output folder: read-only, full, a corrupt file left by a crash, Ctrl-C, file modes -----------

@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder with those options; skips where mounting is not allowed."""
    mounted = []

    def make(options):
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_read_only_out_is_one_line_before_training(mount):
    folder = mount("ro,size=1m")
    outcome = via_cli(["train", "--epochs", "1", "--out", folder / "results", "--no-figures", "--quiet"])
    judge(outcome, line("--out", "Read-only file system", "choose a folder you can write to"), "harness train")


def test_a_full_disk_is_one_line_and_leaves_no_half_file(mount):
    folder = mount("size=48k")  # room for the probe and the run file, not for results and figures
    (folder / "filler").write_bytes(b"\0" * 36 * 1024)
    outcome = via_cli(["train", "--epochs", "1", "--subset", "200", "--out", folder, "--quiet"])
    judge(outcome, line("--out", "full"), "harness train on a full disk")
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")], list(folder.rglob("*"))
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())  # whatever was written is whole


def test_io_on_a_full_disk_keeps_the_old_file(mount):
    from harness.io import OutputError, atomic_write_text

    folder = mount("size=16k")
    target = folder / "results.json"
    atomic_write_text(target, '{"old": true}\n')
    with pytest.raises(OutputError) as info:
        atomic_write_text(target, "x" * 64 * 1024)
    assert "\n" not in str(info.value) and "No space left on device" in str(info.value)
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in folder.iterdir()) == ["results.json"]


def _finished_sweep(tmp_path):
    """A finished two-run sweep, run as its own process (as are the re-runs below: an in-process run
    would keep the study's database open)."""
    out = tmp_path / "out"
    argv = ["sweep", "lr", "--values", "0.05,0.1", "--epochs", "1", "--subset", "200", "--out", out,
            "--no-figures", "--quiet"]
    first = via_cli_process(argv)
    assert first.kind == "ran", first.text
    return out, argv


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a database"])
def test_a_study_database_left_damaged_is_rerun_or_one_line(tmp_path, damage):
    out, argv = _finished_sweep(tmp_path)
    db = out / "study.db"
    assert db.is_file(), list(out.rglob("*"))
    data = db.read_bytes()
    db.write_bytes({"truncated": data[: len(data) // 3], "empty": b"", "not a database": b"garbage" * 100}[damage])
    outcome = via_cli_process(argv)
    if outcome.kind == "ran":  # started afresh: the results are whole again
        assert len(json.loads((out / "results.json").read_text())["runs"]) == 2
    else:
        judge(outcome, line("study.db", "delete"), "harness sweep lr (resume)")


@pytest.mark.parametrize("damage", ["truncated", "not json"])
def test_a_corrupt_results_json_is_rewritten_or_one_line(tmp_path, damage):
    out, argv = _finished_sweep(tmp_path)
    text = (out / "results.json").read_text()
    (out / "results.json").write_text({"truncated": text[:100], "not json": "garbage"}[damage])
    outcome = via_cli_process(argv)
    if outcome.kind == "ran":
        json.loads((out / "results.json").read_text())
    else:
        judge(outcome, line("results.json"), "harness sweep lr (resume)")


SLOW_RECIPE = '''
import time
from pathlib import Path
import torch
from harness import Recipe
from harness.data import synthetic
from harness.models import fashion_mlp

class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = fashion_mlp()

    def forward(self, x):
        if self.training:
            Path({marker!r}).touch()
            time.sleep(0.05)
        return self.net(x)

RECIPE = Recipe(model=Slow, data=lambda: synthetic(n_train=2000, n_val=64, n_test=64), num_classes=10,
                batch_size=16, epochs=3)
'''


def test_ctrl_c_during_the_first_epoch_is_one_line_and_leaves_nothing_half_written(tmp_path):
    marker = tmp_path / "training"
    recipe = tmp_path / "slow.py"
    recipe.write_text(SLOW_RECIPE.format(marker=str(marker)))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "train", "--recipe", str(recipe), "--out", str(out),
                             "--quiet", "--no-figures"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert not TRACE.search(stderr), stderr
    said = [s for s in stderr.splitlines() if s.strip()]
    assert len(said) == 1 and "interrupted" in said[0] and "Run the same command again" in said[0], stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for path in out.rglob("*.json"):
        json.loads(path.read_text())


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_give_new_files_the_users_normal_mode(tmp_path, umask, mode):
    from harness.io import atomic_write_json, atomic_write_text, save_weights

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"x": 1})
        save_weights(torch.nn.Linear(2, 2), tmp_path / "c.pt")
        atomic_write_text(tmp_path / "a.txt", "rewritten")  # an existing file gets the same
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    # the same mode a plain open() gives
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


def test_cli_outputs_get_the_users_normal_mode(tmp_path):
    old = os.umask(0o022)
    try:
        outcome = via_cli(["train", "--epochs", "1", "--subset", "200", "--out", tmp_path / "out", "--quiet"])
    finally:
        os.umask(old)
    assert outcome.kind == "ran", outcome.text
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


# --- checkpoints (harness.io) ------------------------------------------------------------------------

def test_loading_weights_from_a_missing_file_is_one_line(tmp_path):
    from harness.io import load_weights
    judge(via_api(lambda: load_weights(torch.nn.Linear(2, 2), tmp_path / "nope.pt")),
          line("nope.pt", "no such file"), "load_weights")


def test_loading_another_models_weights_is_one_line(tmp_path):
    from harness.io import load_weights, save_weights
    save_weights(torch.nn.Linear(4, 3), tmp_path / "other.pt")
    judge(via_api(lambda: load_weights(torch.nn.Linear(2, 2), tmp_path / "other.pt")),
          line("other.pt", "does not fit", "weight"), "load_weights")


def test_loading_a_truncated_checkpoint_is_one_line(tmp_path):
    from harness.io import load_weights, save_weights
    save_weights(torch.nn.Linear(20, 20), tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    judge(via_api(lambda: load_weights(torch.nn.Linear(20, 20), tmp_path / "cut.pt")),
          line("cut.pt", "truncated or not a checkpoint"), "load_weights")


# --- dataset files a user copied by hand -------------------------------------------------------------

def test_fashion_mnist_gz_files_not_yet_extracted_load(tmp_path):
    import gzip
    raw = write_fashion_mnist(tmp_path)
    for path in list(raw.iterdir()):
        (raw / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    judge(via_api(lambda: fashion_mnist(tmp_path, download=False)), ok(), "fashion_mnist")
    assert fashion_mnist(tmp_path, download=False).train[0].shape == (540, 1, 28, 28)


def test_data_root_pointing_inside_the_cifar_folder_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "0")
    folder = write_cifar10(tmp_path)
    data = via_api(lambda: cifar10(folder, download=False))
    judge(data, ok(), "cifar10(ROOT/cifar-10-batches-py)")
    assert data.value.train[0].shape == (400, 3, 32, 32)


def test_data_root_pointing_inside_the_fashion_mnist_folder_loads(tmp_path):
    raw = write_fashion_mnist(tmp_path)
    for inner in (raw, raw.parent):
        outcome = via_api(lambda: fashion_mnist(inner, download=False))
        judge(outcome, ok(), f"fashion_mnist({inner})")
        assert outcome.value.train[0].shape == (540, 1, 28, 28)


def test_the_cifar_archive_not_yet_extracted_loads(tmp_path, monkeypatch):
    import tarfile
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "0")
    made = tmp_path / "made"
    folder = write_cifar10(made)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    outcome = via_api(lambda: cifar10(tmp_path, download=False))
    judge(outcome, ok(), "cifar10 with only the archive")
    assert outcome.value.train[0].shape == (400, 3, 32, 32)


def test_the_cli_with_a_data_root_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    from harness import data as harness_data

    # the CLI sets --data-root process-wide: put it back, or every later test in this process (whichever
    # pytest-xdist sends here) would look for datasets under this file
    monkeypatch.setattr(harness_data.settings, "root", harness_data.settings.root)
    monkeypatch.setattr(harness_data.settings, "download", harness_data.settings.download)
    (tmp_path / "data").write_text("not a folder")
    outcome = via_cli(["eda", "--recipe", "fashion_mlp", "--data-root", tmp_path / "data", "--out", tmp_path / "out"])
    judge(outcome, line("--data-root", "not a folder"), "harness eda")
