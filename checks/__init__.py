"""Checks: functions that take a recipe (or a model and a batch) and return a `CheckResult`.

    from checks import CheckResult
    from checks.model import check_loss_at_init
"""
from checks.result import CheckResult

__all__ = ["CheckResult"]
