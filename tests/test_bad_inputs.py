"""Every bad input gets one line the user can act on, and never a traceback from torch or the harness.

One row per bad input: how it is given (the Python API, `pytest --recipe`, or the `harness`
CLI), the input, and fragments of the one line it must get (the parameter or flag it names and
the fix it suggests). docs/reliability.md lists the exact lines.

    pytest tests/test_bad_inputs.py
"""
import math
import re
import warnings

import pytest
import torch

from harness import Data, Recipe, RecipeError, fit
from harness import cli
from harness import data as harness_data
from harness.data import synthetic
from harness.models import fashion_mlp
from harness.recipe import HarnessWarning
from tests.fakedata import write_cifar10, write_fashion_mnist
from tests.outcomes import assert_healthy

# A frame of a Python traceback, or pytest's "file.py:123: SomeError" line under a long report.
TRACE = re.compile(r"Traceback \(most recent call last\)|^\S+\.py:\d+: \w*(Error|Exception)\b", re.M)

BAD_RECIPES = '''
import torch
from harness import Recipe, Data
from harness.data import synthetic
from harness.models import fashion_mlp


def _with(train):
    d = synthetic()
    return lambda: Data(train=train(d.train), val=d.val, test=d.test)


def _nan(split):
    x = split[0].clone()
    x[3, 0, 0, 0] = float("nan")
    return x, split[1]


class _Argmax(torch.nn.Module):  # returns class indices, not logits
    def __init__(self):
        super().__init__()
        self.net = fashion_mlp()

    def forward(self, x):
        return self.net(x).argmax(1, keepdim=True).expand(-1, 10)


def _mlp(out):
    return lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, out))


NAN = Recipe(model=fashion_mlp, data=_with(_nan), num_classes=10)
LABELS = Recipe(model=fashion_mlp, data=_with(lambda s: (s[0], s[1] + 1)), num_classes=10)
EMPTY = Recipe(model=fashion_mlp, data=_with(lambda s: (s[0][:0], s[1][:0])), num_classes=10)
LENGTHS = Recipe(model=fashion_mlp, data=_with(lambda s: (s[0], s[1][:-5])), num_classes=10)
NOT_A_MODULE = Recipe(model=lambda: fashion_mlp, data=synthetic, num_classes=10)
WRONG_WIDTH = Recipe(model=_mlp(7), data=synthetic, num_classes=10)
WRONG_DTYPE = Recipe(model=_Argmax, data=synthetic, num_classes=10)
BIG_BATCH = Recipe(model=fashion_mlp, data=synthetic, num_classes=10, batch_size=5000, epochs=1)
'''


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Path of a recipe file holding one bad recipe per name."""
    path = tmp_path_factory.mktemp("recipes") / "bad_recipes.py"
    path.write_text(BAD_RECIPES)
    return path


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch):
    """The CLI sets --data-root / --download globally; restore them after each row."""
    monkeypatch.setattr(harness_data.settings, "root", None)
    monkeypatch.setattr(harness_data.settings, "download", None)
    monkeypatch.setenv("HARNESS_DOWNLOAD", "0")


def assert_one_line(text, *fragments):
    """`text` holds a line with every fragment; nothing in it is a traceback."""
    assert not TRACE.search(text), text[-3000:]
    lines = [line for line in text.splitlines() if all(f in line for f in fragments)]
    assert lines, f"no line holds all of {fragments}:\n{text[-3000:]}"
    return lines[0]


# --- the Python API ---------------------------------------------------------------------------

def _fit(**kwargs):
    torch.manual_seed(0)
    fit(fashion_mlp(), synthetic(n_train=64, n_val=32, n_test=0), epochs=1, **kwargs)


API = {
    "lr negative": (lambda: _fit(lr=-0.1), ["fit: lr must be a positive finite number, got -0.1", "try lr=0.1"]),
    "lr zero": (lambda: Recipe(model=fashion_mlp, data=synthetic, num_classes=10, lr=0),
                ["Recipe: lr must be a positive finite number, got 0", "try lr="]),
    "lr NaN": (lambda: _fit(lr=math.nan), ["fit: lr must be a positive finite number, got nan"]),
    "batch size 0": (lambda: _fit(batch_size=0), ["fit: batch_size must be an integer >= 1, got 0", "try batch_size=128"]),
    "epochs 0": (lambda: Recipe(model=fashion_mlp, data=synthetic, num_classes=10, epochs=0),
                 ["Recipe: epochs must be an integer >= 1, got 0", "try epochs=15"]),
    "factory returns a class, not a module": (
        lambda: Recipe(model=lambda: fashion_mlp, data=synthetic, num_classes=10).build_model(),
        ["model factory returned function, expected a torch.nn.Module", "return the model"]),
    "data with NaN": (
        lambda: Recipe(model=fashion_mlp, num_classes=10, data=lambda: Data(
            train=(torch.full((8, 1, 28, 28), math.nan), torch.zeros(8, dtype=torch.long)), val=None)).load_data(),
        ["train inputs hold 6272 NaN/Inf values", "drop or impute"]),
    "labels out of range": (
        lambda: Recipe(model=fashion_mlp, num_classes=10, data=lambda: Data(
            train=(torch.rand(8, 1, 28, 28), torch.arange(1, 9) + 3), val=None)).load_data(),
        ["train labels run from 4 to 11, outside [0, 10)", "need -1, or num_classes=10 is wrong"]),
    "empty split": (
        lambda: Recipe(model=fashion_mlp, num_classes=10, data=lambda: Data(
            train=(torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), val=None)).load_data(),
        ["the train split is empty", "give it samples"]),
    "inputs and targets of different lengths": (
        lambda: Recipe(model=fashion_mlp, num_classes=10, data=lambda: Data(
            train=(torch.rand(8, 1, 28, 28), torch.zeros(6, dtype=torch.long)), val=None)).load_data(),
        ["train has 8 inputs but 6 targets", "slice inputs and targets with the same indices"]),
}


@pytest.mark.parametrize("row", list(API))
def test_python_api(row):
    call, fragments = API[row]
    with pytest.raises(RecipeError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert_one_line(message, *fragments)


def test_python_api_batch_larger_than_split_warns_once_and_still_trains():
    recipe = Recipe(model=fashion_mlp, data=lambda: synthetic(n_train=100, n_val=20), num_classes=10,
                    batch_size=128, epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = recipe.load_data()
    messages = [str(w.message) for w in caught if issubclass(w.category, HarnessWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert_one_line(messages[0], "batch_size 128 is larger than the 100-sample training split",
                    "use batch_size <= 100")
    assert fit(recipe.build_model(), data, batch_size=128, epochs=1).steps == [1]


# --- pytest --recipe ----------------------------------------------------------------------------

def run_suite(pytester, *args):
    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "-p", "no:cacheprovider",
                                "-p", "no:randomly", *args)
    return result, result.stdout.str() + result.stderr.str()


USAGE = {  # the run stops before any test, with pytest's usage-error exit status
    "unknown built-in recipe": (["--recipe", "digits29"],
                                ["--recipe 'digits29': no built-in recipe of that name", "path/to/file.py:NAME"]),
    "recipe file with a syntax error": (["--recipe", "{syntax}"], ["syntax error in", "line 2"]),
    "recipe file missing": (["--recipe", "no_such_recipe.py:RECIPE"], ["no such file", "relative paths start at"]),
    "--harness-device cuda without CUDA": (["--harness-device", "cuda"],
                                           ["--harness-device must be a device this machine has, got 'cuda'",
                                            "CUDA is not available here: use cpu or auto"]),
    "--harness-seed not an integer": (["--harness-seed", "x"],
                                      ["--harness-seed 'x': must be an integer, e.g. --harness-seed 0"]),
    "--harness-diverge-lr negative": (["--harness-diverge-lr", "-1"],
                                      ["--harness-diverge-lr '-1': must be a positive number"]),
}


@pytest.mark.parametrize("row", list(USAGE))
def test_pytest_usage_error(pytester, tmp_path, row):
    args, fragments = USAGE[row]
    if row.startswith("--harness-device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    syntax = tmp_path / "broken.py"
    syntax.write_text("from harness import Recipe\nRECIPE = Recipe(model=\n")
    result, out = run_suite(pytester, *[a.replace("{syntax}", str(syntax)) for a in args])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert_one_line(result.stderr.str(), "ERROR: ", *fragments)


FAILS = {  # the suite runs; the broken part fails with the check's line, the rest stop cleanly
    "data with NaN": ("NAN", "inputs_finite", ["[inputs_not_finite] train: 1 non-finite values in 1 of"]),
    "labels out of range": ("LABELS", "labels", ["[labels_out_of_range] train: labels from 1 to 10"]),
    "empty split": ("EMPTY", "split_shapes", ["[split_empty] train has no samples"]),
    "inputs and targets of different lengths": ("LENGTHS", "split_shapes",
                                                ["[split_lengths_differ] train: 512 inputs but 507 targets"]),
    "factory returns a class, not a module": ("NOT_A_MODULE", "output_shape",
                                              ["model factory returned function, expected a torch.nn.Module"]),
    "model output of the wrong shape": ("WRONG_WIDTH", "output_shape",
                                        ["[output_shape_wrong] outputs have shape (64, 7), expected (N, 10) logits for 10 classes"]),
    "model output of the wrong dtype": ("WRONG_DTYPE", "output_shape", ["[output_dtype_wrong] output dtype torch.int64"]),
}


@pytest.mark.parametrize("row", list(FAILS))
def test_pytest_recipe_with_bad_parts(pytester, bad, row):
    name, test, fragments = FAILS[row]
    result, out = run_suite(pytester, "--recipe", f"{bad}:{name}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    line = assert_one_line(out, *fragments)
    assert test in line or test in out  # the failing test is named
    assert "re-run: pytest" in out or "ERROR " in out  # a check failure, or a fixture that stopped cleanly


def test_pytest_batch_larger_than_split_is_one_warning(pytester, bad):
    result, out = run_suite(pytester, "--recipe", f"{bad}:BIG_BATCH")
    outcomes = assert_healthy(result)  # every test passes or skips with its reason; one warning
    assert outcomes.get("warnings") == 1, outcomes
    assert_one_line(out, "HarnessWarning", "batch_size 5000 is larger than the 512-sample training split")


def test_pytest_missing_dataset_files(pytester, tmp_path):
    result, out = run_suite(pytester, "--recipe", "fashion_mlp", "--harness-data-root", str(tmp_path), "-k", "split_shapes")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert_one_line(out, "FashionMNIST is not under", "run with --harness-download", f"--harness-data-root {tmp_path}")


def test_pytest_truncated_fashion_mnist(pytester, tmp_path):
    raw = write_fashion_mnist(tmp_path)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:20_000])
    result, out = run_suite(pytester, "--recipe", "fashion_mlp", "--harness-data-root", str(tmp_path), "-k", "split_shapes")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert_one_line(out, "FashionMNIST under", "looks corrupted or truncated", "download it again with --harness-download")


def test_pytest_cifar10_wrong_checksum(pytester, tmp_path, monkeypatch):
    write_cifar10(tmp_path)  # our own files: their MD5 is not the published one
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "1")
    result, out = run_suite(pytester, "--recipe", "cifar_mlp", "--harness-data-root", str(tmp_path), "-k", "split_shapes")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert_one_line(out, "cifar-10-batches-py failed its checksum", "run again with --harness-download")


# --- the harness CLI ------------------------------------------------------------------------------

def run_cli(capsys, *argv):
    """`harness ARGV` in-process; returns (exit status, what it printed)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


CLI = {
    "lr negative": (["train", "--lr", "-1"], ["harness: error: --lr: '-1' is not a positive number"]),
    "lr zero": (["sweep", "lr", "--values", "0,0.1"], ["harness: error: --values: '0' is not a positive number"]),
    "lr NaN": (["train", "--lr", "nan"], ["harness: error: --lr: 'nan' is not a positive number"]),
    "batch size 0": (["train", "--batch-size", "0"], ["harness: error: --batch-size: '0' is not a whole number >= 1"]),
    "epochs 0": (["train", "--epochs", "0"], ["harness: error: --epochs: '0' is not a whole number >= 1"]),
    "unknown built-in recipe": (["eda", "--recipe", "digits29"],
                                ["harness: error: --recipe 'digits29': no built-in recipe of that name"]),
    "--device cuda without CUDA": (["eda", "--device", "cuda"], ["harness: error: --device must be a device this machine has, got 'cuda'", "CUDA is not available"]),
    "data with NaN": (["eda", "--recipe", "{bad}:NAN"], ["harness: error: recipe", "train inputs hold 1 NaN/Inf values"]),
    "labels out of range": (["eda", "--recipe", "{bad}:LABELS"],
                            ["harness: error: recipe", "train labels run from 1 to 10, outside [0, 10)"]),
    "empty split": (["eda", "--recipe", "{bad}:EMPTY"], ["harness: error: recipe", "the train split is empty"]),
    "inputs and targets of different lengths": (["eda", "--recipe", "{bad}:LENGTHS"],
                                                ["harness: error: recipe", "train has 512 inputs but 507 targets"]),
    "dataset files missing": (["eda", "--recipe", "cifar_mlp", "--data-root", "{tmp}"],
                              ["harness: error: CIFAR-10 is not under", "run with --download"]),
    "output folder can't be written": (["eda", "--out", "{tmp}/a_file/results"],
                                       ["harness: error: --out", "cannot write there", "Not a directory", "choose a folder you can write to"]),
}


@pytest.mark.parametrize("row", list(CLI))
def test_harness_cli(capsys, bad, tmp_path, row):
    argv, fragments = CLI[row]
    if "cuda" in row and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "a_file").write_text("in the way of a folder")
    argv = [a.replace("{bad}", str(bad)).replace("{tmp}", str(tmp_path)) for a in argv]
    code, out = run_cli(capsys, *argv)
    assert code == 2, out
    assert_one_line(out, *fragments)
