"""The suites' run-time plugin: the recipe and settings, the fixtures, suppress, and a crash as one line.

Registered by harness/suites/plugin.py (`activate`) only when a run asks for the harness, so
importing torch happens here and nowhere earlier. Everything a user can get wrong at start-up
(a recipe that does not load, an unknown check id in a suppress list, a bad seed or device) is a
one-line usage error; a check that raises fails as that check, with one line and the re-run
command, never a traceback from deep inside torch.
"""
from __future__ import annotations

import math
import os
import shlex
from pathlib import Path

import pytest
import torch

from harness import data as harness_data
from harness import runtime
from harness.checks import registry
from harness.errors import RecipeError
from harness.fit import resolve_device
from harness.recipe import warn_batch_size
from harness.recipes import load_recipe
from harness.suites.settings import INJECTED, SUITES, as_pytest_flags, looks_like_file, recipe_spec, setting, test_seed

_KEY = pytest.StashKey[dict]()
_BAD_MARKER = pytest.StashKey[str]()  # an item whose harness_check marker names no registered check


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


def _load(spec):
    """The recipe for `spec` (None: the default); anything that goes wrong is one usage-error line."""
    try:
        return load_recipe(spec)
    except RecipeError as e:
        raise pytest.UsageError(as_pytest_flags(str(e))) from None
    except SystemExit as e:  # load_recipe turns these into RecipeError; a second net for older engines
        raise pytest.UsageError(f"--recipe {spec!r}: loading it called sys.exit({e.code!r}); move script code "
                                "under `if __name__ == \"__main__\":`") from None
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        raise pytest.UsageError(f"--recipe {spec!r}: loading it raised {type(e).__name__}: {first}") from None


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        torch.set_num_threads(runtime.thread_cap())  # the engine's one rule: cores // xdist workers
    root = setting(config, "harness_data_root")
    if root:
        harness_data.settings.root = root
    if config.getoption("harness_download") or config.getini("harness_download"):
        harness_data.settings.download = True
    spec = recipe_spec(config)
    recipe = _load(spec)
    try:
        device = resolve_device(setting(config, "harness_device", "cpu"))
        suppress = {*registry.validate_suppress(recipe.suppress, "Recipe.suppress"),
                    *registry.validate_suppress(config.getini("harness_suppress"), "ini harness_suppress"),
                    *registry.validate_suppress(config.getoption("harness_suppress"), "--harness-suppress")}
    except RecipeError as e:
        raise pytest.UsageError(as_pytest_flags(str(e))) from None
    except registry.UnknownCheck as e:
        raise pytest.UsageError(str(e)) from None
    diverge_lr = setting(config, "harness_diverge_lr")
    config.stash[_KEY] = {
        "recipe": recipe, "spec": spec, "device": device,
        "seed": parse_seed(setting(config, "harness_seed", 0)), "suppress": suppress,
        "diverge_lr": parse_lr(diverge_lr, "--harness-diverge-lr") if diverge_lr is not None else None,
    }
    durations = config.getoption("harness_durations")
    if durations is not None:
        from harness.suites import budget
        config.pluginmanager.register(budget.CostReport(config, budget.parse_durations(durations)),
                                      "recipe_harness_durations")


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


# --- which check a test runs, suppress before it runs, a crash as one line ---------------------

def check_id(item):
    """The registered check a test runs: its `harness_check` marker, else its name `test_<id>`
    (for the suites' own tests); None for any other test."""
    marker = item.get_closest_marker("harness_check")
    if marker is not None:
        return registry.get(marker.args[0] if marker.args else None, "@pytest.mark.harness_check").id
    if not _in_suites(item):
        return None
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    return name if name in registry.CHECKS else None


def _in_suites(item) -> bool:
    return Path(str(item.path)).resolve().parent == SUITES


def pytest_collection_modifyitems(config, items):
    """A suppressed check, or one that does not apply to the recipe's task, gets a skip marker: pytest
    skips it in setup, before any fixture is built, and reports it at the test's own line. Suites
    added by a configured recipe (no test paths given) run only their sanity tier without -m."""
    settings = config.stash.get(_KEY, None)
    for item in items:
        try:
            reason = _skip_reason(check_id(item), settings)
        except registry.UnknownCheck as e:  # a typo in @pytest.mark.harness_check: the test fails, in one line
            item.stash[_BAD_MARKER] = str(e)
            continue
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    if not config.stash.get(INJECTED, False) or config.option.markexpr:
        return
    keep, drop = [], []
    for item in items:
        (drop if _in_suites(item) and item.get_closest_marker("sanity") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _BAD_MARKER in item.stash:
        pytest.fail(item.stash[_BAD_MARKER], pytrace=False)


def _skip_reason(cid, settings):
    if cid is None or settings is None:
        return None
    if cid in settings["suppress"]:
        return f"{cid} suppressed (--harness-suppress, ini harness_suppress or Recipe.suppress)"
    task = getattr(settings["recipe"], "task", None)
    reason = task.skip_reason(cid) if hasattr(task, "skip_reason") else None
    applies_to = registry.CHECKS[cid].tasks if cid in registry.CHECKS else ()
    if not reason and applies_to and getattr(task, "name", None) not in applies_to:
        reason = f"applies to {', '.join(applies_to)} only; this recipe's task is {task.name}"
    return f"{cid}: {reason}" if reason else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A harness check whose code raised (not a failed or skipped check): one line naming the check."""
    report = yield
    error = call.excinfo.value if call.excinfo is not None else None
    if report.failed and isinstance(error, Exception) and _BAD_MARKER not in item.stash:  # fail/skip: not Exceptions
        cid = check_id(item)
        settings = item.config.stash.get(_KEY, None)
        if cid is not None and settings is not None:
            first = (str(error).strip().splitlines() or [""])[0][:300]
            where = _innermost_frame_outside_torch(call.excinfo)
            report.longrepr = (f"[{cid}] the check raised {type(error).__name__}: {first}{where}\n"
                               f"  re-run: {rerun_command(item, settings)}")
    return report


def _innermost_frame_outside_torch(excinfo) -> str:
    torch_dir = str(Path(torch.__file__).parent)
    for entry in reversed(excinfo.traceback):
        path = str(entry.path)
        if not path.startswith(torch_dir) and "/_pytest/" not in path and "/pluggy/" not in path:
            return f" (at {path}:{entry.lineno + 1})"
    return ""


def test_key(item) -> str:
    """The test's id independent of the folder pytest runs from: `harness.suites.test_sanity::test_labels`
    for the suites' tests (also the --pyargs selector that re-runs it), the node id for any other test."""
    if _in_suites(item):
        return f"harness.suites.{Path(str(item.path)).stem}::{item.nodeid.split('::', 1)[1]}"
    return item.nodeid


test_key.__test__ = False  # not a test


def rerun_command(item, settings) -> str:
    """The command that re-runs this one test with the same recipe, seed and settings, from any folder."""
    config = item.config
    if _in_suites(item):
        parts = ["pytest", "--pyargs", shlex.quote(test_key(item))]
    else:
        parts = ["pytest", shlex.quote(f"{item.path}::{item.nodeid.split('::', 1)[1]}")]
    spec = settings["spec"]
    if spec:
        target, sep, attr = spec.partition(":")
        if looks_like_file(target):
            target = str(Path(target).expanduser().resolve())
        parts.append(f"--recipe {shlex.quote(target + sep + attr)}")
    parts.append(f"--harness-seed {settings['seed']}")  # always: the failure is reproducible only with it
    if settings["device"].type != "cpu":
        parts.append(f"--harness-device {settings['device'].type}")
    root = setting(config, "harness_data_root")
    if root:
        parts.append(f"--harness-data-root {shlex.quote(str(Path(root).expanduser().resolve()))}")
    if settings["diverge_lr"] is not None:
        parts.append(f"--harness-diverge-lr {settings['diverge_lr']:g}")
    given = [*config.getini("harness_suppress"), *(config.getoption("harness_suppress") or [])]
    parts += [f"--harness-suppress {name}" for name in dict.fromkeys(given)]
    return " ".join(parts)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def harness_settings(pytestconfig) -> dict:
    return pytestconfig.stash[_KEY]


@pytest.fixture(scope="session")
def recipe(harness_settings):
    """The recipe under test (`--recipe` or ini harness_recipe, default digits28)."""
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
        warn_batch_size(recipe.batch_size, harness_data.split_len(data.train), where=f"recipe {recipe.name!r}",
                        stacklevel=2)
    return data


@pytest.fixture
def seed(request, harness_settings) -> int:
    """A per-test seed: stable for a test id and --harness-seed, independent of order, workers and
    the folder pytest runs from."""
    return test_seed(harness_settings["seed"], test_key(request.node))


@pytest.fixture
def verify(harness_settings, seed, request):
    """verify(result): fail with the check's message, or skip when the check is suppressed."""
    def _verify(result):
        __tracebackhide__ = True
        if result.check in harness_settings["suppress"]:
            pytest.skip(f"{result.check} suppressed (--harness-suppress, ini harness_suppress or Recipe.suppress)")
        if not result.passed:
            pytest.fail(f"{result.message()}\n  seed: {seed} (this test's seed, from --harness-seed "
                        f"{harness_settings['seed']} and the test id)\n"
                        f"  re-run: {rerun_command(request.node, harness_settings)}", pytrace=False)
        return result
    return _verify
