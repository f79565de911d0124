"""The harness's own exception and warning; every other module of ours may import these.

    from harness.errors import RecipeError, HarnessWarning
    raise RecipeError("fit: lr must be a positive finite number, got -1; try lr=0.1")

This module imports nothing, so the contract (harness.recipe), the tasks and batching can share
one error type without an import cycle.
"""


class RecipeError(ValueError):
    """A recipe, a split, a flag or a field is unusable; the message is one line with the fix."""


class HarnessWarning(UserWarning):
    """Something that works but is probably not what was meant; the message is one line."""
