"""Hooks for the project's own tests.

pytester runs the suites in-process; it removes modules first imported during a run, and
re-importing torch._dynamo or torchvision registers their native ops twice (an abort), so
both are imported up front, outside every run — unless the run selects only the suites
(`pytest -m sanity`), which collects nothing from tests/ and need not pay for them.
"""
import re
import signal

SUITE_TIERS = {"sanity", "recipe", "bench"}


def suite_tiers_only(config) -> bool:
    """True when `-m` selects suite tiers only (`sanity`, `recipe or bench`, ...): tests/ holds none."""
    words = set(re.findall(r"[\w-]+", config.option.markexpr or ""))
    return bool(words) and words - {"or"} <= SUITE_TIERS


def pytest_configure(config):
    restore_ctrl_c()
    if not suite_tiers_only(config):
        import torch._dynamo  # noqa: F401
        import torchvision  # noqa: F401


def restore_ctrl_c() -> None:
    """Give this process Python's own SIGINT handler if it started with SIGINT ignored.

    A shell without job control starts a background command (`pytest ... &` in a script, a
    loop run beside a CPU hog) with SIGINT ignored, and Python then leaves it ignored; every
    `harness` a test starts inherited that, so the tests that press Ctrl-C on it (SIGINT) saw
    the command shrug it off and finish (exit 0, not 130). With a handler here, a child gets
    SIGINT's default action at exec, as from a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_ignore_collect(collection_path, config):
    """Under `pytest -m sanity` skip importing tests/' modules (most of the run's time on 2 cores)."""
    if suite_tiers_only(config) and collection_path.suffix == ".py":
        return True
    return None
