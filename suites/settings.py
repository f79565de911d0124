"""What a run asked of the harness: reading the options and ini keys the plugin registers.

Shared by the light entry point (harness/suites/plugin.py) and the run-time plugin
(harness/suites/fixtures.py); imports nothing but pytest.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest

SUITES = Path(__file__).resolve().parent  # installed as harness/suites
INJECTED = pytest.StashKey[bool]()         # the suites were added to the run by a configured recipe


def setting(config, dest: str, default=None):
    """The command line's value, else the ini key's, else `default`."""
    value = config.getoption(dest)
    if value is None:
        value = config.getini(dest) or None
    return default if value is None else value


def recipe_spec(config):
    """The `--recipe` spec (as given), else the ini `harness_recipe` with a relative file path made
    absolute from the ini file's folder; None when neither is set (the suites use the default)."""
    given = config.getoption("harness_recipe")
    if given:
        return given[0]
    spec = config.getini("harness_recipe").strip()
    if not spec:
        return None
    target, sep, attr = spec.partition(":")
    if looks_like_file(target) and not Path(target).expanduser().is_absolute():
        base = config.inipath.parent if config.inipath else config.rootpath
        target = str(base / target)
    return target + sep + attr


def looks_like_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


_CLI_FLAG = re.compile(r"(?<![\w-])--(device|seed|data-root|download|diverge-lr|suppress)\b")


def as_pytest_flags(message: str) -> str:
    """The engine's errors name the CLI's flags (--device, --data-root...); under pytest they are --harness-..."""
    return _CLI_FLAG.sub(r"--harness-\1", message)


def test_seed(base: int, nodeid: str) -> int:
    """A test's seed: stable for a test id and base seed, independent of order and workers."""
    return (zlib.crc32(nodeid.encode()) + 1_000_003 * base) % (2**31)


test_seed.__test__ = False  # not a test
