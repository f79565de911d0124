"""How a healthy recipe's suite run should end, counted from the check registry (never a literal).

    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe", spec)
    assert_healthy(result, "sanity", "classification")
"""
from __future__ import annotations

from harness.checks import registry


RECIPE_SKIPS = 3  # checks a healthy recipe may skip for what it lacks (augmentation, a BatchNorm1d one-sample fit)


def assert_healthy(result, suite: str = "sanity", task: str = "classification") -> dict:
    """No failure or error; every test of the suite ran or skipped; every check that does not apply
    to `task` skipped, and at most RECIPE_SKIPS others (each skip says why)."""
    outcomes = result.parseoutcomes()
    passed, skipped = outcomes.get("passed", 0), outcomes.get("skipped", 0)
    bad = {k: v for k, v in outcomes.items() if k in ("failed", "errors", "error", "xpassed") and v}
    text = result.stdout.str()[-3000:]
    assert not bad, f"{bad}\n{text}"
    assert passed + skipped == registry.count(suite), f"{passed} passed + {skipped} skipped != {registry.count(suite)}\n{text}"
    assert skipped >= registry.count(suite) - registry.count(suite, task), text
    assert passed >= registry.count(suite, task) - RECIPE_SKIPS, text
    return outcomes
