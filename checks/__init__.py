"""Checks: functions that take a recipe (or a model and a batch) and return a `CheckResult`.

    from harness.checks import CheckResult
    from harness.checks.model import check_loss_at_init
"""
from harness.checks.result import CheckResult

__all__ = ["CheckResult"]
