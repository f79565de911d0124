"""`CheckResult`: what every check returns. The suites decide what to do with it.

    result = check_loss_at_init(recipe, batch)
    if not result.passed:
        print(result.message())   # seen / why it matters / what to try / how to silence / read more
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.checks import registry


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict.

    check:    the check's stable id, used to silence it (`--harness-suppress CHECK`, `Recipe(suppress=...)`).
    name:     the symptom seen (`loss_at_init_too_high`), or the check id when it passed.
    expected: what a healthy setup shows, in words with numbers.
    observed: what this setup showed, with numbers.
    why:      why it matters.
    hints:    likely causes / next experiments, most likely first.
    """
    check: str
    name: str
    passed: bool
    expected: str = ""
    observed: str = ""
    why: str = ""
    hints: tuple = ()
    data: dict = field(default_factory=dict, compare=False)

    def message(self) -> str:
        lines = [f"[{self.name}] {self.observed}"]
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.why:
            lines.append(f"  why it matters: {self.why}")
        if self.hints:
            lines.append("  what to try:")
            lines += [f"    {i}. {h}" for i, h in enumerate(self.hints, 1)]
        entry = registry.CHECKS.get(self.check)  # every check is registered; tests/test_plugin.py holds us to it
        if entry is not None:
            lines.append(f"  check: {self.check} ({entry.step}; catches {entry.catches})")
        lines.append(f"  if this is intended: --harness-suppress {self.check} (or Recipe(suppress=({self.check!r},)))")
        lines.append(f"  read more: {entry.docs if entry else registry.DOCS}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message() if not self.passed else f"[{self.check}] ok: {self.observed}"


def passed(check: str, observed: str = "", **data: Any) -> CheckResult:
    return CheckResult(check=check, name=check, passed=True, observed=observed, data=data)


def failed(check: str, name: str, observed: str, expected: str, why: str, hints, **data: Any) -> CheckResult:
    return CheckResult(check=check, name=name, passed=False, observed=observed, expected=expected,
                       why=why, hints=tuple(hints), data=data)
