"""The pytest plugin: every option, ini key, marker and fixture of the suites, in one place.

Registered through the `pytest11` entry point, so in any project where recipe-harness is
installed:

    pytest --pyargs harness.suites -m sanity --recipe path/to/file.py:RECIPE
    pytest --pyargs harness.suites -m recipe --recipe mypkg.recipes:RECIPE --harness-device cuda

Settings flow one way: built-in defaults < ini keys < command line. Per-test seeds derive
from `--harness-seed` and the test's id, so outcomes do not depend on test order or on xdist.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import zlib

import pytest
import torch

from harness import data as harness_data
from harness.fit import resolve_device
from harness.recipe import RecipeError, load_recipe, warn_batch_size

MARKERS = {
    "sanity": "seconds-fast checks that model, data and training step are wired right (always on)",
    "recipe": "training-dynamics claims: lr ranking, divergence, batch size, subset (minutes)",
    "bench": "pytest-benchmark timings per batch size (opt-in, serial: -m bench -p no:xdist)",
}


def pytest_addoption(parser):
    group = parser.getgroup("recipe-harness", "recipe-harness: test a training recipe")
    group.addoption("--recipe", dest="harness_recipe", default=None,
                    help="recipe to test: a built-in name (digits28, fashion_mlp, cifar_mlp), "
                         "path/to/file.py[:NAME] or package.module[:NAME]; NAME defaults to RECIPE")
    group.addoption("--harness-device", dest="harness_device", default=None,
                    help="cpu, cuda or auto (default: ini 'harness_device' or cpu)")
    group.addoption("--harness-seed", dest="harness_seed", default=None, help="base seed; each test derives its own from it (default 0)")
    group.addoption("--harness-data-root", dest="harness_data_root", default=None, help="folder holding FashionMNIST / CIFAR-10 files")
    group.addoption("--harness-download", dest="harness_download", action="store_true", default=None, help="allow dataset downloads")
    group.addoption("--harness-suppress", dest="harness_suppress", action="append", default=[], metavar="CHECK",
                    help="silence a check by name (repeatable), e.g. --harness-suppress batch_independence")
    group.addoption("--harness-diverge-lr", dest="harness_diverge_lr", default=None, help="learning rate that must diverge (default 1.0)")
    group.addoption("--harness-durations", dest="harness_durations", default=None, metavar="N",
                    help="after a sanity run, show the N slowest checks' cost in seconds and in training "
                         "steps of the recipe (0: every check), like --durations")
    parser.addini("harness_recipe", "default for --recipe")
    parser.addini("harness_device", "default for --harness-device")
    parser.addini("harness_seed", "default for --harness-seed")
    parser.addini("harness_data_root", "default for --harness-data-root")
    parser.addini("harness_download", "default for --harness-download", type="bool", default=False)
    parser.addini("harness_suppress", "checks to silence, one per line (added to --harness-suppress)", type="linelist")
    parser.addini("harness_diverge_lr", "default for --harness-diverge-lr")


def _setting(config, option, ini, default=None):
    value = config.getoption(option)
    if value is None:
        value = config.getini(ini) or None
    return default if value is None else value


def parse_seed(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"--harness-seed {text!r}: must be an integer, e.g. --harness-seed 0") from None


def parse_lr(text, flag) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise pytest.UsageError(f"{flag} {text!r}: must be a positive number, e.g. {flag} 1.0")
    return value


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    _limit_threads_under_xdist()
    if config.getoption("harness_durations") is not None:  # the cost table (suites/budget.py), only when asked
        from harness.suites import budget
        config.pluginmanager.register(budget.CostReport(config, budget.parse_durations(config.getoption("harness_durations"))),
                                      "harness-durations")
    root = _setting(config, "harness_data_root", "harness_data_root")
    if root:
        harness_data.settings.root = root
    if config.getoption("harness_download") or config.getini("harness_download"):
        harness_data.settings.download = True
    spec = _setting(config, "harness_recipe", "harness_recipe")
    try:
        recipe = load_recipe(spec)
        device = resolve_device(_setting(config, "harness_device", "harness_device", "cpu"))
    except RecipeError as e:
        raise pytest.UsageError(as_pytest_flags(str(e))) from None
    diverge_lr = _setting(config, "harness_diverge_lr", "harness_diverge_lr")
    suppress = set(recipe.suppress) | set(config.getini("harness_suppress")) | set(config.getoption("harness_suppress"))
    config.stash[_KEY] = {
        "recipe": recipe, "device": device, "seed": parse_seed(_setting(config, "harness_seed", "harness_seed", 0)),
        "suppress": suppress, "diverge_lr": (parse_lr(diverge_lr, "--harness-diverge-lr")
                                             if diverge_lr is not None else None),  # None: the suite picks
    }


_KEY = pytest.StashKey[dict]()
_CLI_FLAG = re.compile(r"(?<![\w-])--(device|seed|data-root|download|diverge-lr|suppress)\b")


def as_pytest_flags(message: str) -> str:
    """The engine's errors name the CLI's flags (--device, --data-root...); under pytest they are --harness-..."""
    return _CLI_FLAG.sub(r"--harness-\1", message)


def _limit_threads_under_xdist():
    """Under pytest-xdist give each worker cores // workers torch threads (uncapped workers crawl)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_report_header(config):
    s = config.stash.get(_KEY, None)
    if not s:
        return None
    parts = [f"recipe: {s['recipe'].name}"]
    if s["device"].type != "cpu":
        parts.append(f"device: {s['device']}")
    if s["seed"] != 0:
        parts.append(f"seed: {s['seed']}")
    if s["suppress"]:
        parts.append(f"suppressed: {', '.join(sorted(s['suppress']))}")
    return "recipe-harness: " + ", ".join(parts)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def harness_settings(pytestconfig) -> dict:
    return pytestconfig.stash[_KEY]


@pytest.fixture(scope="session")
def recipe(harness_settings):
    """The recipe under test (`--recipe`, default digits28)."""
    return harness_settings["recipe"]


@pytest.fixture(scope="session")
def device(harness_settings) -> torch.device:
    return harness_settings["device"]


@pytest.fixture(scope="session")
def recipe_data(recipe):
    """The recipe's data, loaded once per session (a loading error fails with one line)."""
    try:
        data = recipe.load_data(validate=False)  # the sanity checks report bad data one check at a time
    except RecipeError as e:
        pytest.fail(as_pytest_flags(str(e)), pytrace=False)
    if data.train is not None and harness_data.split_len(data.train) < recipe.batch_size:
        warn_batch_size(recipe.batch_size, harness_data.split_len(data.train), where=f"recipe {recipe.name!r}", stacklevel=2)
    return data


@pytest.fixture
def seed(request, harness_settings) -> int:
    """A per-test seed: stable for a test id and --harness-seed, independent of order and workers."""
    return test_seed(harness_settings["seed"], request.node.nodeid)


def test_seed(base: int, nodeid: str) -> int:
    return (zlib.crc32(nodeid.encode()) + 1_000_003 * base) % (2**31)


test_seed.__test__ = False  # not a test


@pytest.fixture
def verify(harness_settings, seed, request):
    """verify(result): fail with the check's message, or skip when the check is suppressed."""
    def _verify(result):
        __tracebackhide__ = True
        if result.check in harness_settings["suppress"]:
            pytest.skip(f"{result.check} suppressed (--harness-suppress or Recipe.suppress)")
        if not result.passed:
            pytest.fail(f"{result.message()}\n  seed: {seed} (this test's seed, from --harness-seed "
                        f"{harness_settings['seed']} and the test id)\n"
                        f"  re-run: {rerun_command(request, harness_settings)}", pytrace=False)
        return result
    return _verify


def rerun_command(request, settings) -> str:
    """The command that re-runs this one test with the same recipe, seed and settings."""
    config = request.config
    recipe = config.getoption("harness_recipe") or config.getini("harness_recipe")
    parts = ["pytest", shlex.quote(request.node.nodeid)]
    if recipe:
        parts.append(f"--recipe {shlex.quote(recipe)}")
    parts.append(f"--harness-seed {settings['seed']}")  # always: the failure is reproducible only with it
    if settings["device"].type != "cpu":
        parts.append(f"--harness-device {settings['device'].type}")
    root = _setting(config, "harness_data_root", "harness_data_root")
    if root:
        parts.append(f"--harness-data-root {shlex.quote(str(root))}")
    if config.getoption("harness_diverge_lr"):
        parts.append(f"--harness-diverge-lr {config.getoption('harness_diverge_lr')}")
    parts += [f"--harness-suppress {name}" for name in config.getoption("harness_suppress")]
    return " ".join(parts)
