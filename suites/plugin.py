"""The pytest plugin (entry point `pytest11: recipe_harness`): options, ini keys and markers, and nothing else until asked.

Installing recipe-harness adds this module to every pytest run of the environment, so it stays
inert: it imports neither torch nor the suites, and its options cannot collide with a project's
own (`--recipe`, everything else `--harness-...`). It activates the suites' run-time plugin
(harness/suites/fixtures.py: the recipe, fixtures, suppress, crash handling; it imports torch)
only when asked:

- a harness option is given (`--recipe`, `--harness-seed`, ...) or a harness ini key is set, or
- the run's arguments name the suites (`--pyargs harness.suites...`, or a path inside them), or
- the suites' folder or one of their files is collected.

In a project of your own, one ini line points your plain `pytest -m sanity` at your recipe:

    [tool.pytest.ini_options]
    harness_recipe = "path/to/file.py:NAME"      # relative to this file

With a recipe configured (ini or `--recipe`) and no test paths on the command line, the harness
suites are collected next to your own tests (without `-m`, only the sanity suite of them).

    pytest --pyargs harness.suites -m sanity --recipe path/to/file.py:RECIPE
    pytest --pyargs harness.suites -m recipe --recipe mypkg.recipes:RECIPE --harness-device cuda

Settings flow one way: built-in defaults < ini keys < command line. Per-test seeds derive
from `--harness-seed` and the test's id, so outcomes do not depend on test order or on xdist.
"""
from __future__ import annotations

import importlib

import pytest

from harness.suites.settings import INJECTED, SUITES, recipe_spec

ACTIVE = "recipe_harness_suites"  # the name the run-time plugin is registered under

MARKERS = {
    "sanity": "seconds-fast checks that model, data and training step are wired right (always on)",
    "recipe": "training-dynamics claims: lr ranking, divergence, batch size, subset (minutes)",
    "bench": "pytest-benchmark timings per batch size (opt-in, serial: -m bench -p no:xdist)",
    "harness_check": "harness_check(id): the registered check (harness checks) this test runs, "
                     "when the test is not named test_<id>",
}
# option dest -> (ini key or None, the flag); the ini keys are the dests
OPTIONS = {
    "harness_recipe": "--recipe", "harness_device": "--harness-device", "harness_seed": "--harness-seed",
    "harness_data_root": "--harness-data-root", "harness_download": "--harness-download",
    "harness_suppress": "--harness-suppress", "harness_diverge_lr": "--harness-diverge-lr",
    "harness_durations": "--harness-durations",
}
INI = ("harness_recipe", "harness_device", "harness_seed", "harness_data_root", "harness_download",
       "harness_suppress", "harness_diverge_lr")


def pytest_addoption(parser):
    group = parser.getgroup("recipe-harness", "recipe-harness: test a training recipe")
    group.addoption("--recipe", dest="harness_recipe", action="append", default=None, metavar="SPEC",
                    help="recipe to test: a built-in name (digits28, fashion_mlp, cifar_mlp), "
                         "path/to/file.py[:NAME] or package.module[:NAME]; NAME defaults to RECIPE")
    group.addoption("--harness-device", dest="harness_device", default=None,
                    help="cpu, cuda or auto (default: ini harness_device, else cpu)")
    group.addoption("--harness-seed", dest="harness_seed", default=None,
                    help="base seed; each test derives its own from it (default 0)")
    group.addoption("--harness-data-root", dest="harness_data_root", default=None,
                    help="folder holding FashionMNIST / CIFAR-10 files")
    group.addoption("--harness-download", dest="harness_download", action="store_true", default=None,
                    help="allow dataset downloads")
    group.addoption("--harness-suppress", dest="harness_suppress", action="append", default=None, metavar="CHECK",
                    help="silence a check by id (repeatable; `harness checks` lists them), "
                         "e.g. --harness-suppress batch_independence")
    group.addoption("--harness-diverge-lr", dest="harness_diverge_lr", default=None,
                    help="learning rate that must diverge (default 1.0)")
    group.addoption("--harness-durations", dest="harness_durations", default=None, metavar="N",
                    help="print the N slowest sanity checks with their cost in training steps (0: all)")
    parser.addini("harness_recipe", "default for --recipe (a relative file path starts at the ini file's folder)")
    parser.addini("harness_device", "default for --harness-device")
    parser.addini("harness_seed", "default for --harness-seed")
    parser.addini("harness_data_root", "default for --harness-data-root")
    parser.addini("harness_download", "default for --harness-download", type="bool", default=False)
    parser.addini("harness_suppress", "check ids to silence, one per line (added to --harness-suppress)",
                  type="linelist")
    parser.addini("harness_diverge_lr", "default for --harness-diverge-lr")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    given = config.getoption("harness_recipe") or []
    if len(given) > 1:
        raise pytest.UsageError(f"--recipe given {len(given)} times ({', '.join(map(repr, given))}); "
                                "give it once (one recipe per run)")
    if asked(config):
        no_paths_given = config.args_source != pytest.Config.ArgsSource.ARGS
        if recipe_spec(config) is not None and no_paths_given and not _names_suites(config):
            config.args.append(str(SUITES))  # the one ini line: the suites run next to the project's tests
            config.stash[INJECTED] = True
        activate(config)


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    """The suites' folder is collected as a plain folder: pytest's Package would import its
    __init__.py under the name `suites`, which a project's own `suites` package shadows."""
    if path == SUITES:
        activate(parent.config)
        return pytest.Dir.from_parent(parent, path=path)
    return None


def pytest_pycollect_makemodule(module_path, parent):
    """A suite module is imported by its installed name (`harness.suites.test_sanity`), never as a
    top-level `test_sanity` or `suites.test_sanity` that a project's own modules could shadow."""
    if module_path.parent == SUITES:
        activate(parent.config)
        return SuiteModule.from_parent(parent, path=module_path)
    return None


class SuiteModule(pytest.Module):
    def _getobj(self):
        return importlib.import_module(f"harness.suites.{self.path.stem}")


def asked(config) -> bool:
    """Is a harness option given, a harness ini key set, or are the suites named in the arguments?"""
    if any(config.getoption(dest) not in (None, [], False) for dest in OPTIONS):
        return True
    if any(config.getini(key) for key in INI):
        return True
    return _names_suites(config)


def _names_suites(config) -> bool:
    for arg in config.args:
        target = str(arg).split("::")[0]
        if config.option.pyargs and (target == "harness.suites" or target.startswith("harness.suites.")):
            return True
        path = (config.invocation_params.dir / target).resolve()
        if path == SUITES or SUITES in path.parents:
            return True
    return False


def activate(config) -> None:
    """Register the run-time plugin (torch, the recipe, the fixtures) once for this run."""
    if not config.pluginmanager.has_plugin(ACTIVE):
        from harness.suites import fixtures  # the heavy half: imports torch
        config.pluginmanager.register(fixtures, ACTIVE)
