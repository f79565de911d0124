"""Hooks for the project's own tests.

pytester runs the suites in-process; it removes modules first imported during a run, and
re-importing torch._dynamo or torchvision registers their native ops twice (an abort), so
both are imported up front, outside every run — unless the run selects only the suites
(`pytest -m sanity`), which collects nothing from tests/ and need not pay for them.
"""
import re

SUITE_TIERS = {"sanity", "recipe", "bench"}


def suite_tiers_only(config) -> bool:
    """True when `-m` selects suite tiers only (`sanity`, `recipe or bench`, ...): tests/ holds none."""
    words = set(re.findall(r"[\w-]+", config.option.markexpr or ""))
    return bool(words) and words - {"or"} <= SUITE_TIERS


def pytest_configure(config):
    if not suite_tiers_only(config):
        import torch._dynamo  # noqa: F401
        import torchvision  # noqa: F401


def pytest_ignore_collect(collection_path, config):
    """Under `pytest -m sanity` skip importing tests/' modules (most of the run's time on 2 cores)."""
    if suite_tiers_only(config) and collection_path.suffix == ".py":
        return True
    return None
