"""The CUDA fast path for small batches: the reference training step captured once as a CUDA
graph and replayed, or compiled with torch.compile(mode="reduce-overhead").

    from harness import graphs
    step = graphs.fast_step(step, model, optimizer, batch_size, device, step_scheduler)   # fit() does this
    HARNESS_CUDA_STEP=graphs|compile|auto|eager  # eager (default); auto: graphs for batches <= GRAPH_MAX_BATCH

At small batch sizes a GPU step is bound by kernel launches (a few hundred per step, ~5-10 us
each from Python), not by arithmetic; replaying a captured graph launches them all at once.
On CPU, for a custom `train_step` (which may read values on the host or branch on them), and
for batches above GRAPH_MAX_BATCH, `fast_step` returns the step unchanged.

The captured step is the reference step (zero_grad, forward, loss, backward, optimizer.step) on
static input buffers. Three warm-up steps (needed before capture) run on the first batch and
are then undone (weights, buffers and optimizer state put back), so a graphed fit takes exactly
the steps an eager fit takes. A batch of another shape (the last, partial one) runs eagerly on
the same parameters and optimizer state. A change of lr (a scheduler) re-captures. A model the
graph cannot capture (data-dependent control flow, host reads) falls back to eager with one
warning. Optimizer step hooks (fit counts steps with one) are called once per replay.

Opt-in: the default is eager, because this path has not yet been measured on a GPU (no GPU was
lent to the session that wrote it); `benchmarks/gpu_fit.py` is the measurement to run first.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict

import torch
from torch.utils import _pytree as pytree

from harness.recipe import default_step

GRAPH_MAX_BATCH = 512  # above this a step is bound by arithmetic, and a graph saves nothing
WARMUP_STEPS = 3       # eager steps on a side stream before capture (cuDNN/cuBLAS autotuning, lazy state)
MODES = ("auto", "eager", "graphs", "compile")


def cuda_step_mode() -> str:
    """HARNESS_CUDA_STEP: eager (default, until the graph path is measured on a GPU), auto, graphs or compile."""
    mode = os.environ.get("HARNESS_CUDA_STEP", "eager").strip().lower() or "eager"
    if mode not in MODES:
        raise ValueError(f"HARNESS_CUDA_STEP={mode!r}: use one of {', '.join(MODES)}, e.g. HARNESS_CUDA_STEP=graphs")
    return mode


def fast_step(recipe, model, optimizer, batch_size: int, device, scheduler=None, mode: str | None = None):
    """The recipe whose step fit should run: `recipe` itself, or a copy whose train_step replays a
    captured (or compiled) reference step. Unchanged on CPU, for a custom train_step, with a
    per-step scheduler (its lr changes every step), and for batches above GRAPH_MAX_BATCH."""
    mode = mode or cuda_step_mode()
    if torch.device(device).type != "cuda" or recipe.train_step is not None or scheduler is not None:
        return recipe
    if mode == "auto":
        mode = "graphs" if batch_size <= GRAPH_MAX_BATCH else "eager"
    if mode == "graphs":
        return recipe.replace(train_step=GraphedStep(model, optimizer, recipe.forward))
    if mode == "compile":
        return recipe.replace(train_step=CompiledStep(model, recipe.forward))
    return recipe


# --- CUDA graphs ---------------------------------------------------------------------------------

class GraphedStep:
    """A callable with the train_step signature that replays one captured reference step."""

    def __init__(self, model, optimizer, forward):
        self.model, self.optimizer, self.forward = model, optimizer, forward
        self.graph = None
        self.key = None          # (input shape, input dtype, target shape, lrs) the graph was captured for
        self.failed = False      # capture failed once: eager from then on
        self.static = None       # (inputs, targets, loss, outputs) buffers of the captured graph
        _make_capturable(optimizer)

    def __call__(self, model, inputs, targets, optimizer, loss_fn):
        def eager():
            return default_step(model, inputs, targets, optimizer, loss_fn, self.forward)

        leaves = pytree.tree_leaves((inputs, targets))
        if self.failed or not all(isinstance(t, torch.Tensor) and t.is_cuda for t in leaves):
            return eager()
        shapes = tuple((tuple(t.shape), t.dtype) for t in leaves)
        key = (shapes, tuple(g["lr"] for g in optimizer.param_groups))
        if self.key is not None and shapes != self.key[0]:
            return eager()  # a partial batch
        if key != self.key:
            first = self.graph is None
            # the first step runs eagerly: it creates the optimizer's state, which a graph must find in place
            out = eager() if first else None
            try:
                self._capture(inputs, targets, loss_fn, warm_up=first)
            except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
                self.failed, self.graph = True, None
                warnings.warn(f"CUDA graph capture of the training step failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); training eagerly", stacklevel=2)
                return out if first else eager()
            self.key = key
            if first:
                return out
        static_leaves, loss, outputs = self.static
        for buffer, value in zip(static_leaves, leaves):
            buffer.copy_(value, non_blocking=True)
        _run_step_hooks(optimizer, "pre")
        self.graph.replay()
        _run_step_hooks(optimizer, "post")
        # the graph overwrites its outputs at the next replay: hand out copies
        return loss.detach().clone(), pytree.tree_map(lambda t: t.detach().clone(), outputs)

    def _capture(self, inputs, targets, loss_fn, warm_up: bool):
        model, optimizer, forward = self.model, self.optimizer, self.forward
        hooks = _silence_step_hooks(optimizer)
        saved = _save(model, optimizer) if warm_up else None
        try:
            x, y = pytree.tree_map(lambda t: t.detach().clone(), (inputs, targets))
            if warm_up:  # on a side stream, as CUDA graphs require; undone below
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(WARMUP_STEPS):
                        optimizer.zero_grad(set_to_none=True)
                        loss_fn(forward(model, x), y).backward()
                        optimizer.step()
                torch.cuda.current_stream().wait_stream(side)
                _restore(model, optimizer, saved)
            graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):  # recorded, not run: the state is as it was before
                outputs = forward(model, x)
                loss = loss_fn(outputs, y)
                loss.backward()
                optimizer.step()
            self.graph, self.static = graph, (pytree.tree_leaves((x, y)), loss, outputs)
        except Exception:
            if saved is not None:
                _restore(model, optimizer, saved)
            raise
        finally:
            _restore_step_hooks(optimizer, hooks)


def _make_capturable(optimizer):
    """Adam-family optimizers keep their step count on the host unless `capturable`; a graph needs it on the device."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True


def _save(model, optimizer):
    """Copies of the weights, buffers and optimizer state, to be written back into the same tensors
    (a graph captured later must find the very tensors it was captured with)."""
    with torch.no_grad():
        tensors = [(t, t.detach().clone()) for t in [*model.parameters(), *model.buffers()]]
        state = {p: {k: (v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v))
                     for k, v in s.items()} for p, s in optimizer.state.items()}
    return tensors, state, torch.cuda.get_rng_state()


def _restore(model, optimizer, saved):
    tensors, state, rng = saved
    torch.cuda.set_rng_state(rng)  # the warm-up's dropout draws are undone too
    with torch.no_grad():
        for t, value in tensors:
            t.copy_(value)
        for p in list(optimizer.state):
            if p not in state:
                del optimizer.state[p]
                continue
            current = optimizer.state[p]
            for k in list(current):
                if k not in state[p]:
                    del current[k]
                elif isinstance(current[k], torch.Tensor):
                    current[k].copy_(state[p][k])
                else:
                    current[k] = copy.deepcopy(state[p][k])


def _silence_step_hooks(optimizer):
    """Warm-up and capture must not count as steps: set the optimizer's step hooks aside."""
    saved = (optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks)
    optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks = OrderedDict(), OrderedDict()
    return saved


def _restore_step_hooks(optimizer, saved):
    optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks = saved


def _run_step_hooks(optimizer, when: str):
    """A replay is a step the hooks did not see: call the pre- or post-step hooks (global, then the optimizer's)."""
    from torch.optim import optimizer as module

    if when == "pre":
        hooks = (*module._global_optimizer_pre_hooks.values(), *optimizer._optimizer_step_pre_hooks.values())
    else:
        hooks = (*module._global_optimizer_post_hooks.values(), *optimizer._optimizer_step_post_hooks.values())
    for hook in hooks:
        hook(optimizer, (), {})


# --- torch.compile(mode="reduce-overhead") ----------------------------------------------------------

class CompiledStep:
    """The reference step with the model compiled in reduce-overhead mode (CUDA graphs by Inductor)."""

    def __init__(self, model, forward):
        self.compiled = torch.compile(model, mode="reduce-overhead")
        self.forward = forward

    def __call__(self, model, inputs, targets, optimizer, loss_fn):
        optimizer.zero_grad(set_to_none=True)
        torch.compiler.cudagraph_mark_step_begin()
        outputs = self.forward(self.compiled, inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        optimizer.step()
        return loss.detach().clone(), pytree.tree_map(lambda t: t.detach().clone(), outputs)
