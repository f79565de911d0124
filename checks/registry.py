"""Every check, registered once: its id, its step, what it catches and the symptoms it reports.

    from harness.checks import registry
    registry.get("gradients").catches          # 'detached branches, unused layers, dead ReLUs'
    registry.in_suite("sanity")                # the sanity suite's checks, in the blog's order
    registry.validate_suppress(recipe.suppress, "Recipe.suppress")

The id is the same everywhere: `CheckResult.check`, the suite's test (`test_<id>`, or a
`@pytest.mark.harness_check("<id>")` marker), `--harness-suppress <id>`, `Recipe(suppress=("<id>",))`
and the anchor in suites/README.md. Adding a check: one `Check(...)` below, a test in the suite
named after it, a row in suites/README.md. This module imports nothing of ours (and not torch):
the pytest plugin and the CLI read it at start-up.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

STEPS = ("data", "model", "step", "overfit", "dynamics")  # the blog's order; dynamics is the recipe suite
DOCS = Path(__file__).resolve().parent.parent / "suites" / "README.md"  # installed as harness/suites/README.md


class UnknownCheck(ValueError):
    """A check id that is not registered, or a malformed suppress list; the message is one line."""


@dataclass(frozen=True)
class Check:
    """One registered check.

    id:       the stable id (snake_case).
    step:     data | model | step | overfit | dynamics (dynamics checks run in the recipe suite).
    catches:  what it catches, one line.
    symptoms: the names its failures report (`CheckResult.name`), e.g. `loss_at_init_too_high`.
    tasks:    the task names it applies to (`harness.tasks` `.name`); () means every task.
    cases:    how many tests the suite runs for it (parametrized cases), for counting.
    """
    id: str
    step: str
    catches: str
    symptoms: tuple = ()
    tasks: tuple = ()
    cases: int = 1

    def __post_init__(self):
        if self.step not in STEPS:
            raise ValueError(f"Check {self.id!r}: step {self.step!r} is not one of {', '.join(STEPS)}")
        for field in ("symptoms", "tasks"):
            if isinstance(getattr(self, field), str):
                raise ValueError(f"Check {self.id!r}: {field} must be a tuple of names, "
                                 f"e.g. {field}=({getattr(self, field)!r},)")

    @property
    def suite(self) -> str:
        """The pytest suite (marker) that runs it: `recipe` for dynamics, else `sanity`."""
        return "recipe" if self.step == "dynamics" else "sanity"

    @property
    def docs(self) -> str:
        """Where to read more: the installed suites/README.md with this check's anchor."""
        return f"{DOCS}#{self.id}"


_ALL = (
    # --- the data -------------------------------------------------------------------------------
    Check("split_shapes", "data", "misaligned or mistyped splits",
          ("split_empty", "split_lengths_differ", "split_unreadable", "targets_wrong_for_task",
           "split_shapes_differ", "padding_not_ignored")),
    Check("inputs_finite", "data", "NaN/Inf in the data", ("inputs_not_finite",)),
    Check("input_range", "data", "raw 0-255 pixels, missing normalisation, inputs scaled twice",
          ("inputs_out_of_range", "inputs_scale_too_small")),
    Check("labels", "data", "labels from 1, a wrong num_classes, unstratified splits",
          ("labels_out_of_range", "class_missing")),
    Check("class_balance", "data", "a majority class the model will learn instead", ("classes_imbalanced",)),
    Check("splits_disjoint", "data", "val/test samples that are also in train", ("splits_overlap",)),
    Check("labels_predictable", "data", "labels shuffled apart from their inputs (train or val); segmentation "
          "masks flipped or transposed relative to their images", ("labels_look_shuffled", "val_labels_look_shuffled",
                                                                    "masks_misaligned")),
    Check("train_distinct", "data", "a debug subset left on: few distinct training samples",
          ("train_rows_mostly_duplicates", "train_smaller_than_val")),
    Check("train_val_shift", "data", "a validation split preprocessed differently from the training split",
          ("train_val_distribution_shift",)),
    Check("augmentation_labels", "data", "augmentation that changes a label's meaning (a 6 rotated into a 9)",
          ("augmentation_changes_labels",), tasks=("classification",)),
    # --- the model at initialisation ------------------------------------------------------------
    Check("output_shape", "model", "layer size mismatches, a wrong head",
          ("forward_crashed", "output_not_tensor", "output_shape_wrong", "output_dtype_wrong",
           "outputs_not_finite", "inputs_not_float", "inputs_not_ids", "inputs_dtype_differs_from_model")),
    Check("outputs_are_logits", "model", "softmax before cross_entropy", ("outputs_are_probabilities",)),
    Check("init_logit_scale", "model", "a last layer initialised over-confident (large logits at init)",
          ("logits_overconfident_at_init",)),
    Check("loss_at_init", "model", "loss at init outside 1/2..2 x ln C, both directions",
          ("loss_at_init_too_high", "loss_at_init_too_low", "loss_crashed")),
    Check("gradients", "model", "detached branches, unused layers, dead ReLUs",
          ("params_get_no_gradient", "params_get_zero_gradient", "gradient_not_finite", "loss_crashed",
           "train_step_crashed", "no_trainable_parameters")),
    Check("gradcheck", "model", "a custom autograd Function with a wrong backward (finite differences, float64)",
          ("gradient_mismatches_finite_differences",)),
    Check("loss_per_label", "model", "a multi-label model trained with softmax cross-entropy (labels compete)",
          ("labels_compete_in_loss", "loss_crashed"), tasks=("multilabel",)),
    Check("loss_per_sample", "model", "a loss that couples samples (a softmax over the batch axis, batch statistics)",
          ("loss_couples_samples",)),
    Check("target_shift", "model", "a language model's loss not shifted by one (it learns to copy its input)",
          ("targets_not_shifted", "targets_shifted_twice", "loss_crashed"), tasks=("causal_lm",)),
    Check("registered_submodules", "model", "layers in a plain Python list", ("unregistered_submodules",)),
    Check("batch_independence", "model", "a reshape or time-major layer that mixes samples across the batch",
          ("batch_samples_interact", "batch_gradients_interact")),
    Check("causality", "model", "a language model that sees future tokens (a missing causal mask)",
          ("future_tokens_leak",), tasks=("causal_lm",)),
    Check("eval_deterministic", "model", "dropout left on in eval mode", ("eval_not_deterministic",)),
    # --- the training step ----------------------------------------------------------------------
    Check("one_step", "step", "a layer left out of the optimizer, a frozen layer that drifts",
          ("params_not_in_optimizer", "params_not_updated", "frozen_params_changed", "train_step_crashed",
           "optimizer_crashed")),
    Check("train_step", "step", "a step that never clears gradients, steps before backward, or skips steps",
          ("gradients_accumulate_across_steps", "optimizer_steps_before_backward", "optimizer_step_skipped",
           "step_gradient_differs")),
    # --- overfitting ----------------------------------------------------------------------------
    Check("overfit_sample", "overfit", "anything that stops the model memorising one sample",
          ("cannot_overfit_sample", "recipe_settings_cannot_overfit",
           "overfit_lost_in_eval_mode", "train_step_crashed")),
    Check("overfit_batch", "overfit", "an lr or weight decay wrong for the recipe's optimizer; anything that stops "
          "the model memorising one batch",
          ("cannot_overfit_batch", "recipe_settings_cannot_overfit",
           "overfit_lost_in_eval_mode", "train_step_crashed")),
    # --- training dynamics (the recipe suite) ---------------------------------------------------
    Check("lr_divergence", "dynamics", "a too-high lr that does not diverge, or a divergence fit does not stop",
          ("lr_does_not_diverge", "divergence_not_detected"), tasks=("classification",)),
    Check("low_lr_learns_less", "dynamics", "a tiny lr that learns as much as the recipe's (the lr is ignored)",
          ("low_lr_learns_as_much",), tasks=("classification",)),
    Check("recipe_lr_best", "dynamics", "a recipe lr far from the best of 1e-4..1.0", ("recipe_lr_not_best",)),
    Check("steps_counted", "dynamics", "optimizer steps per epoch other than ceil(N/B) (floor with drop_last)",
          ("steps_per_epoch_wrong",), cases=4),
    Check("batch_size_loss", "dynamics", "smaller batches that do not reach a lower training loss",
          ("small_batch_not_lower_loss",)),
    Check("lr_find", "dynamics", "an lr range test whose divergence lr is below the recipe's lr",
          ("lr_find_default_above_divergence",)),
    Check("subset_ranking", "dynamics", "an lr that wins on a subset but not on the full set",
          ("subset_ranking_differs",)),
    Check("early_stopping", "dynamics", "early stopping that keeps the last epoch's weights, not the best",
          ("early_stopping_not_restoring",)),
    Check("step_lr", "dynamics", "a StepLR schedule that changes the lr at the wrong epochs", ("step_lr_wrong",)),
    Check("input_baseline", "dynamics", "a model that ignores its inputs (zeroed inputs train as well)",
          ("model_ignores_inputs",)),
)

CHECKS: dict = {c.id: c for c in _ALL}
assert len(CHECKS) == len(_ALL), "a check id is registered twice"


def closest(check_id: str):
    """The registered id nearest to `check_id` (difflib), or None."""
    found = difflib.get_close_matches(str(check_id), CHECKS, n=1, cutoff=0.5)
    return found[0] if found else None


def _unknown(check_id, where: str) -> UnknownCheck:
    near = closest(check_id)
    hint = f"did you mean {near!r}?" if near else "`harness checks` lists them"
    return UnknownCheck(f"{where}: unknown check id {check_id!r}; {hint}")


def get(check_id: str, where: str = "check") -> Check:
    """The registered check; an unknown id raises UnknownCheck naming the closest id (and `where`)."""
    try:
        return CHECKS[check_id]
    except (KeyError, TypeError):
        raise _unknown(check_id, where) from None


def in_suite(suite: str) -> list:
    """The checks a suite runs ('sanity' or 'recipe'), in registration order."""
    return [c for c in CHECKS.values() if c.suite == suite]


def applies(check: Check, task=None) -> bool:
    """Does the check apply to a task (a task name such as "classification"; None: any task)?"""
    return task is None or not check.tasks or task in check.tasks


def count(suite: str, task=None) -> int:
    """How many tests the suite runs for one recipe of `task` (a task name; None counts every check);
    the rest of the suite's tests skip, saying why."""
    return sum(c.cases for c in in_suite(suite) if applies(c, task))


def validate_suppress(value, where: str) -> tuple:
    """A suppress list as a tuple of registered ids; a string, a non-string entry or an unknown id raises.

    `where` names the field or flag in the message, e.g. "Recipe.suppress" or "--harness-suppress".
    """
    if value is None:
        return ()
    if isinstance(value, str):
        raise UnknownCheck(f"{where}={value!r} is a string, not a list of check ids; "
                           f"write suppress=({value!r},) (note the comma)")
    try:
        ids = tuple(value)
    except TypeError:
        raise UnknownCheck(f"{where}={value!r}: must be a tuple of check ids, e.g. "
                           "suppress=('batch_independence',)") from None
    for check_id in ids:
        if not isinstance(check_id, str):
            raise UnknownCheck(f"{where}: {check_id!r} is not a check id (a string), e.g. 'batch_independence'")
        if check_id not in CHECKS:
            raise _unknown(check_id, where)
    return ids
