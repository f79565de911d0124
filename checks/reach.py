"""Which parameters a model's loss reaches beyond one batch: conditional computation or a bug?

    from harness.checks.reach import cut_off, reached_elsewhere
    cut, reached = cut_off(recipe, model, x, y, names)   # ran and got no gradient / got one in this pass
    conditional = reached_elsewhere(recipe, model, ["experts.3.0.weight"], batch, more=[other_batch])

A parameter can get no gradient (or only zeros) from one batch for two different reasons. Either
the graph never reaches it (a `.detach()`, a layer built but never called, a dead ReLU): a bug,
the same for every batch and every initialisation. Or the model chose not to run it on these rows
(a mixture of experts whose router sent no sample of the batch to one expert, a branch some inputs
take): conditional computation, healthy, and other rows or another freshly built model (whose
router is initialised differently) do run it. `reached_elsewhere` tells them apart by looking.
"""
from __future__ import annotations

import torch

from harness.checks import recipe_ops as ops

INITS = 32    # freshly built models tried at most (a top-1 router at init often sends every row to 1-3 of its experts)
GIVE_UP = 6   # ... or this many, when none of them reached any parameter (a bug looks the same in each)


def owners(model) -> dict:
    """{parameter name: the module that holds it directly}."""
    return {f"{prefix}.{name}" if prefix else name: module
            for prefix, module in model.named_modules() for name in module._parameters}


def cut_off(recipe, model, x, y, names) -> tuple:
    """(cut, reached) among `names` after one forward and backward of the loss on (x, y): `cut`, those
    whose module ran on at least one row (a non-empty first input) and got no gradient at all (the graph
    is cut after them); `reached`, those that got a non-zero gradient in this very pass."""
    found, modules = owners(model), {}
    for n in names:
        if n in found:
            modules.setdefault(id(found[n]), (found[n], []))[1].append(n)
    ran = set()

    def record(module, args, kwargs):
        tensors = [t for t in ops.leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if tensors and tensors[0].numel() > 0:
            ran.update(modules[id(module)][1])

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m, _ in modules.values()]
    try:
        reached, no_grad = _gradients(recipe, model, x, y, names)
    finally:
        for hook in hooks:
            hook.remove()
    return ran & no_grad, reached


def _reached(recipe, model, x, y, names) -> set:
    """The names among `names` that get a finite, non-zero gradient from the loss on (x, y)."""
    return _gradients(recipe, model, x, y, names)[0]


def _gradients(recipe, model, x, y, names) -> tuple:
    """(names that get a finite non-zero gradient, names that get no gradient at all) from the loss on
    (x, y); the model's gradients are cleared before and after."""
    model.zero_grad(set_to_none=True)
    try:
        ops.loss(recipe, ops.forward(recipe, model, x), y).backward()
    except Exception:
        model.zero_grad(set_to_none=True)
        return set(), set()
    params = dict(model.named_parameters())
    reached, no_grad = set(), set()
    for n in names:
        grad = ops.grad_of(params[n]) if n in params else None
        if grad is None:
            no_grad.add(n)
        elif bool(torch.isfinite(grad).all()) and bool(grad.any()):
            reached.add(n)
    model.zero_grad(set_to_none=True)
    return reached, no_grad


def reached_elsewhere(recipe, model, names, batch, more=(), inits: int = INITS, give_up: int = GIVE_UP,
                      seed: int = 0) -> set:
    """The names among `names` (parameters with no or only zero gradient on `batch`) that get a
    non-zero gradient on the other batches in `more`, or in a freshly built model (the recipe's
    factory, under seeds drawn from `seed`) on `batch` and `more`: conditional computation.

    Stops when every name is reached, after `inits` fresh models, or after `give_up` when nothing
    was reached at all (a cut graph or a dead layer looks the same in every model). `model` is left in train mode with its gradients cleared; the caller
    restores it (checks.model.borrowed). The global RNG is left as it was."""
    left, found = set(names), set()
    if not left:
        return found
    batches = [batch, *more]
    was = model.training
    model.train()
    for x, y in batches[1:]:
        found |= _reached(recipe, model, x, y, left - found)
    model.train(was)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    devices = [device.index or 0] if device.type == "cuda" else []
    for k in range(inits):
        if not left - found or (k >= give_up and not found):
            break
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((seed * 1_000_003 + 7_919 * (k + 1)) % 2**31)  # not the model under test's seed
            try:
                fresh = recipe.build_model().to(device).train()
            except Exception:
                break
            for x, y in batches:
                found |= _reached(recipe, fresh, x, y, left - found)
        del fresh
    return found
