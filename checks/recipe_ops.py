"""What the checks ask of a recipe: its task, forward, loss, optimizer, scheduler and step.

    from harness.checks.recipe_ops import forward, loss, optimizer_for, step, skip_reason
    opt = optimizer_for(recipe, model)
    loss_value = step(recipe, model, x, y, opt)

Every check trains and evaluates through these few functions, so a check runs the recipe's
own optimizer, lr, scheduler and `train_step` (contract v2's `Recipe.make_optimizer`,
`make_scheduler`, `forward`, `compute_loss` and `step`) and never a copy of them.
"""
from __future__ import annotations

import torch
from torch import nn



def task_of(recipe):
    return recipe.task


def skip_reason(recipe, check_id: str):
    """Why `check_id` does not apply to this recipe's task, or None when it applies: the registry's
    `tasks` for the check (empty: every task), then the task's own `skip_reason`."""
    from harness.checks import registry
    entry = registry.CHECKS.get(check_id)
    if entry is not None and entry.tasks and recipe.task.name not in entry.tasks:
        return f"{check_id} applies to {' and '.join(entry.tasks)} only, not to {recipe.task.name}"
    return recipe.task.skip_reason(check_id)


def task_hook(recipe, name: str):
    """The task's `name` method (output_groups, output_space, loss_parts, part_name, overfit_rows,
    unseen_classes_expected), or harness.tasks.Task's default for a task object that does not
    subclass Task."""
    found = getattr(recipe.task, name, None)
    if callable(found):
        return found
    from harness import tasks
    return getattr(tasks.Task, name).__get__(recipe.task)


def init_loss(recipe):
    """The loss an untrained model should show (ln C for classification), or None."""
    return recipe.task.init_loss()


def forward(recipe, model, inputs):
    """The recipe's forward with its outputs unwrapped to one tensor."""
    return recipe.forward(model, inputs)


def loss(recipe, outputs, targets):
    return recipe.compute_loss(outputs, targets)


def optimizer_for(recipe, model, lr=None):
    """The recipe's own optimizer over `model` at the recipe's lr (or `lr`)."""
    return recipe.make_optimizer(model, lr=lr)


def scheduler_for(recipe, optimizer, total_steps: int):
    """The recipe's scheduler spread over `total_steps` optimizer steps, or None."""
    return recipe.make_scheduler(optimizer, total_steps)


def step(recipe, model, inputs, targets, optimizer, scheduler=None):
    """One training step as the recipe takes it (its train_step, then its scheduler); returns the loss."""
    return recipe.step(model, inputs, targets, optimizer, scheduler)[0]


def describe_optimizer(optimizer) -> str:
    """`SGD(lr=0.1, momentum=0.9, weight_decay=0.0005)`: the settings that decide a step's size."""
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    keys = ("lr", "momentum", "betas", "weight_decay")
    parts = [f"{k}={group[k]:g}" if isinstance(group.get(k), float) else f"{k}={group[k]}"
             for k in keys if k in group and not (k == "momentum" and not group[k])]
    return f"{type(optimizer).__name__}({', '.join(parts)})"


def has_batchnorm(model) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


STOCHASTIC = ("Dropout", "DropPath", "StochasticDepth", "DropBlock")


def stochastic_layers(model):
    """Modules that add noise in train mode (dropout, stochastic depth), by class name."""
    return [m for m in model.modules() if any(s in type(m).__name__ for s in STOCHASTIC)]


class train_mode_without_noise:
    """`with train_mode_without_noise(model):` train mode (BatchNorm uses batch statistics),
    dropout-like layers in eval mode; the previous modes are restored on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = {m: m.training for m in self.model.modules()}
        self.model.train()
        for m in stochastic_layers(self.model):
            m.eval()
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes.items():
            m.training = mode
        return False


def is_float_tensor(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


# --- batches: a tensor or a nested tuple/list/dict of tensors sharing the first dimension ------

from harness.batching import batch_len, leaves, take  # noqa: E402  (re-exported for the checks)


def tree_map(fn, tree):
    from torch.utils import _pytree as pytree
    return pytree.tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, tree)


def replace_row(tree, k: int, source, j: int):
    """A copy of `tree` whose row k is `source`'s row j (every leaf)."""
    from torch.utils import _pytree as pytree
    flat, spec = pytree.tree_flatten(tree)
    src = pytree.tree_leaves(source)
    out = []
    for t, s in zip(flat, src):
        if isinstance(t, torch.Tensor):
            t = t.clone()
            t[k] = s[j]
        out.append(t)
    return pytree.tree_unflatten(out, spec)


def rows_equal(tree, k: int, j: int) -> bool:
    return all(torch.equal(t[k], t[j]) for t in leaves(tree))


def skipped(check: str, reason: str):
    """A result for a check that does not apply: the suite skips it with `reason`, never passes it."""
    from harness.checks.result import CheckResult
    return CheckResult(check=check, name=check, passed=True, observed=f"skipped: {reason}",
                       data={"skipped": reason})


def outputs_problem(recipe, model, batch):
    """One line when the model's outputs on `batch` do not fit the task (or the forward raises):
    checks that need the loss skip with it, so output_shape alone reports the problem."""
    x, y = batch
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = forward(recipe, model, x)
        return recipe.task.check_outputs(out, y)
    except Exception as e:
        return f"the forward raised {type(e).__name__}"
    finally:
        model.train(was)


def defer_to_output_shape(check: str, recipe, model, batch):
    """`skipped(...)` when the outputs do not fit the task (see output_shape), else None."""
    problem = outputs_problem(recipe, model, batch)
    return skipped(check, f"the outputs do not fit the task; output_shape reports it ({problem})") if problem else None


def grad_of(p: torch.Tensor):
    """A detached dense copy of `p.grad` (None when it has none): sparse gradients (an
    nn.Embedding(sparse=True)) are densified, so the checks read every gradient alike."""
    if p.grad is None:
        return None
    grad = p.grad.detach()
    return grad.to_dense() if grad.is_sparse else grad.clone()


def defer_to_gradients(check: str, model):
    """`skipped(...)` when the model has nothing to train (no parameters, or all frozen): the
    gradients check reports it in one line, the training checks skip; else None."""
    from harness.recipe import nothing_to_train
    return skipped(check, "the model has nothing to train; gradients reports it") if nothing_to_train(model) else None
