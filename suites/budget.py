"""The sanity suite's budget: one model per session restored between checks, the step clock,
and the cost account printed by `--harness-durations`.

    from harness.suites.budget import restored
    with restored(model, optimizer):        # parameters, buffers, grads, optimizer state, RNG and
        check(model, ...)                   # train/eval mode are put back, whatever the check did

    pytest -m sanity --harness-durations=0   # the cost table of every check (=N: the N costliest)

The suite builds the recipe's model once per session (`suites/test_sanity.py`'s fixtures) and
hands each check that model inside `restored(...)`, so a check pays for its own work and not
for a model build. The step clock times the recipe's own training step once per session, on
the session's model at the recipe's batch size; the cost table divides each check's time by it,
and the overfit check sizes its batch from it (`StepTime.work`).
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Subset
from torch.optim.optimizer import register_optimizer_step_post_hook

from harness.batching import as_pair, is_pair, lengths, split_len, take, tensors
from harness.checks.model import ModelState
from harness.recipe import default_step

BUDGET_STEPS = 150  # the whole suite's budget, in training steps of the recipe's own model


# --- snapshots ---------------------------------------------------------------------------------

class Snapshot:
    """Everything a check may change on a model (and its optimizers), copied once, put back on demand.

    Saved: every parameter and buffer (values, dtype, device, requires_grad), every .grad, each
    module's train/eval flag and hook dicts, each optimizer's state_dict, and the RNG states
    (torch CPU and CUDA, Python's `random`). `restore()` may be called any number of times; the
    copies are never handed out, so a check cannot corrupt them.
    """

    def __init__(self, model: nn.Module, *optimizers: torch.optim.Optimizer):
        self.model, self.optimizers = model, optimizers
        self.state = ModelState(model)  # parameters, buffers, grads, requires_grad, train/eval flags
        self.hooks = [(m, {name: dict(getattr(m, name)) for name in _HOOK_DICTS}) for m in model.modules()]
        self.optimizer_states = [_clone_state(opt.state_dict()) for opt in optimizers]
        self.rng = _rng_state()

    def restore(self) -> None:
        self.state.load()
        for m, dicts in self.hooks:
            for name, saved in dicts.items():
                current = getattr(m, name)
                current.clear()
                current.update(saved)
        for opt, state in zip(self.optimizers, self.optimizer_states):
            opt.load_state_dict(_clone_state(state))
        _set_rng_state(self.rng)


@contextlib.contextmanager
def restored(model: nn.Module, *optimizers: torch.optim.Optimizer, snapshot: Snapshot | None = None):
    """Run the body on `model`, then put the model (and optimizers, RNG, modes) back, in `finally`.

    Pass a `snapshot` taken earlier to restore to that state instead of the state at entry (the
    sanity fixtures take one when the session's model is built and restore it after every check).
    """
    snapshot = snapshot or Snapshot(model, *optimizers)
    try:
        yield model
    finally:
        snapshot.restore()


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _clone_state(state):
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _clone_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_clone_state(v) for v in state)
    return state


def _rng_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda, random.getstate()


def _set_rng_state(state):
    cpu, cuda, python = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(python)


# --- the step clock ----------------------------------------------------------------------------

def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(recipe, model):
    """The recipe's optimizer on `model` (contract v2's `make_optimizer` where the recipe has it)."""
    if hasattr(recipe, "make_optimizer"):
        return recipe.make_optimizer(model)
    return recipe.optimizer(model.parameters(), recipe.lr)


def train_step(recipe, model, x, y, optimizer):
    """One training step of the recipe (its train_step or the reference step)."""
    if hasattr(recipe, "step"):
        return recipe.step(model, x, y, optimizer)
    return (recipe.train_step or default_step)(model, x, y, optimizer, recipe.loss)


class StepTime(float):
    """Seconds of one training step (wall clock), with `.cpu`: the process's CPU seconds for it,
    and `.work`: the one to size checks by (CPU seconds on a CPU device, wall seconds on CUDA).

    On a CPU shared with other jobs the wall clock mostly measures their load, so a check sized
    by it would run differently on a busy machine; CPU time is the step's own work. On CUDA the
    host's CPU time only counts kernel launches, and the wall clock is the measure.
    """
    cpu: float
    work: float

    def __new__(cls, wall: float, cpu: float, device_type: str = "cpu"):
        value = super().__new__(cls, wall)
        value.cpu = cpu
        value.work = cpu if device_type == "cpu" else wall
        return value


def time_step(recipe, model, batch, device, min_steps: int = 3, min_seconds: float = 0.05,
              max_steps: int = 20) -> StepTime:
    """Median seconds (wall, and CPU as `.cpu`) of one training step of the recipe on `batch`,
    after one warm-up step. Runs on `model` inside `restored(...)`: model, RNG and modes come back."""
    x, y = batch
    walls, cpus = [], []
    with restored(model):
        optimizer = make_optimizer(recipe, model)
        model.train()
        train_step(recipe, model, x, y, optimizer)  # warm-up: allocator, lazy optimizer state
        start = time.perf_counter()
        while len(walls) < max_steps and (len(walls) < min_steps or time.perf_counter() - start < min_seconds):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(recipe, model, x, y, optimizer)
            _sync(device)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    walls.sort()
    cpus.sort()
    return StepTime(walls[len(walls) // 2], cpus[len(cpus) // 2], torch.device(device).type)


# --- counting what a check costs ---------------------------------------------------------------

@dataclass
class Counter:
    """Forward passes of the model, backward passes through its outputs, optimizer steps."""
    forward: int = 0
    backward: int = 0
    steps: int = 0
    active: bool = field(default=False, repr=False)

    cpu: float = 0.0  # the process's CPU seconds while measuring

    def as_dict(self) -> dict:
        return {"forward": self.forward, "backward": self.backward, "steps": self.steps, "cpu": self.cpu}


_COUNTER = Counter()


def counting_hooks(model: nn.Module):
    """Count forwards and backwards of `model` (and of copies a check makes) and all optimizer steps.

    The hooks are plain closures (a deepcopy of the model shares them) and count only while a
    check is being measured (`measuring()`). Returns a function that removes them.
    """
    def on_forward(module, args, output):
        if _COUNTER.active:
            _COUNTER.forward += 1
            out = next((t for t in torch.utils._pytree.tree_leaves(output)
                        if isinstance(t, torch.Tensor) and t.requires_grad), None)
            if out is not None:
                out.register_hook(on_backward)

    def on_backward(grad):
        _COUNTER.backward += 1

    shapes = {tuple(p.shape) for p in model.parameters()}

    def on_step(optimizer, args, kwargs):  # only optimizers of the model (or a copy), not of a check's own tensors
        if _COUNTER.active and any(tuple(p.shape) in shapes for g in optimizer.param_groups for p in g["params"][:1]):
            _COUNTER.steps += 1

    handles = [model.register_forward_hook(on_forward),
               register_optimizer_step_post_hook(on_step)]
    return lambda: [h.remove() for h in handles]


@contextlib.contextmanager
def measuring():
    """Count the model's passes and optimizer steps inside the body; yields the Counter (read it after)."""
    counter = _COUNTER
    counter.forward = counter.backward = counter.steps = 0
    counter.active = True
    c0 = time.process_time()
    try:
        yield counter
    finally:
        counter.active = False
        counter.cpu = time.process_time() - c0


# --- the cost account (pytest side) -------------------------------------------------------------

COST_KEY = "harness_cost"        # user property: {"forward", "backward", "steps"} of one check
STEP_KEY = "harness_step_seconds"  # user property: the session's measured step time (seconds)
SETUP_KEY = "harness_setup_seconds"  # user property: session set-up (data, model, step clock) paid in this test


class CostReport:
    """The `--harness-durations` table: each sanity check's time and passes, in training steps.

    Registered by the plugin only when `--harness-durations` is given, and prints only when a
    harness suite ran. Built from test reports, so under pytest-xdist the controller sees every
    worker's checks: times are summed over workers (each worker measures its own step time, and
    the table uses their mean). On CPU a check's cost in steps is its CPU time over one step's
    CPU time (the wall clock of a shared machine mostly measures other jobs); on CUDA, wall / wall.
    """

    def __init__(self, config, limit: int):
        self.config, self.limit = config, limit
        self.rows: dict = {}   # nodeid -> {"seconds" (wall), "cpu", "forward", "backward", "steps"}
        self.clocks: dict = {}  # worker -> (wall, cpu, batch size, device type) of one training step
        self.setup_seconds = 0.0  # loading the data, building the model, the step clock (once per worker)

    def pytest_runtest_logreport(self, report):
        if "sanity" not in report.keywords:
            return
        props = dict(report.user_properties)
        row = self.rows.setdefault(report.nodeid, {"seconds": 0.0, "cpu": 0.0, "forward": 0, "backward": 0, "steps": 0})
        row["seconds"] += report.duration
        if report.when == "teardown" and COST_KEY in props:
            row.update(props[COST_KEY])
            row["seconds"] -= props.get(SETUP_KEY, 0.0)
            self.setup_seconds += props.get(SETUP_KEY, 0.0)
        if STEP_KEY in props:
            gateway = getattr(getattr(report, "node", None), "gateway", None)  # set by xdist on the controller
            self.clocks[gateway.id if gateway else "main"] = tuple(props[STEP_KEY])

    def in_steps(self, row) -> float | None:
        if not self.clocks:
            return None
        clocks = list(self.clocks.values())
        if clocks[0][3] == "cpu":
            step = sum(c[1] for c in clocks) / len(clocks)
            return row["cpu"] / step if step > 0 else None
        return row["seconds"] / (sum(c[0] for c in clocks) / len(clocks))

    def pytest_terminal_summary(self, terminalreporter):
        if not self.rows:
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "recipe-harness cost of each check")
        rows = sorted(self.rows.items(), key=lambda kv: -(self.in_steps(kv[1]) or kv[1]["seconds"]))
        shown = rows if self.limit == 0 else rows[:self.limit]
        write(f"{'wall s':>8} {'cpu s':>7} {'steps':>7} {'fwd':>5} {'bwd':>5} {'opt':>5}  check")
        for nodeid, r in shown:
            steps = self.in_steps(r)
            steps = f"{steps:7.1f}" if steps is not None else f"{'-':>7}"
            write(f"{r['seconds']:8.3f} {r['cpu']:7.3f} {steps} {r['forward']:5d} {r['backward']:5d} {r['steps']:5d}  {nodeid}")
        if len(shown) < len(rows):
            write(f"({len(rows) - len(shown)} cheaper checks hidden; --harness-durations=0 shows all)")
        wall = sum(r["seconds"] for _, r in rows)
        workers = len(self.clocks)
        where = f", summed over {workers} xdist workers" if workers > 1 else ""
        write(f"session set-up (data, model, step clock; once{' per worker' if workers > 1 else ''}): "
              f"{self.setup_seconds:.2f} s, not in the total")
        if self.clocks:
            total = sum(self.in_steps(r) or 0.0 for _, r in rows)
            clocks = list(self.clocks.values())
            step_wall, step_cpu = (sum(c[i] for c in clocks) / len(clocks) for i in (0, 1))
            unit = "CPU time" if clocks[0][3] == "cpu" else "wall time"
            write(f"total {wall:.2f} s = {total:.1f} training steps of the recipe (one step {step_wall * 1e3:.1f} ms "
                  f"wall, {step_cpu * 1e3:.1f} ms CPU at batch {clocks[0][2]}, measured once per session; steps by "
                  f"{unit}{where}); budget {BUDGET_STEPS} steps")
        else:
            write(f"total {wall:.2f} s{where} (no step time: the model could not train one step)")


def parse_durations(text) -> int:
    """`--harness-durations N`: show the N slowest checks; 0 shows all."""
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        from pytest import UsageError
        raise UsageError(f"--harness-durations {text!r}: must be an integer >= 0 (0 shows every check), "
                         "e.g. --harness-durations=10")
    return n


# --- rows of a split -----------------------------------------------------------------------------

def sample_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """k distinct indices in [0, n), drawn at random in O(k) (never a permutation of the whole split)."""
    return torch.tensor(random.Random(seed).sample(range(n), min(k, n)), dtype=torch.long)


def rows(split, index: torch.Tensor):
    """The rows `index` of a split of any kind, as (inputs, targets): a pair's leaves are indexed, a
    Dataset (or a DataLoader's) is read item by item and collated, so the cost is that of the rows.

    The rows are detached: data that requires grad (valid, if unusual) would otherwise carry its
    graph into every check, and the second backward through it would fail."""
    if is_pair(split):
        picked = take(tensors(split[0]), index), take(tensors(split[1]), index)
    elif isinstance(split, torch.utils.data.DataLoader):
        picked = as_pair(torch.utils.data.DataLoader(Subset(split.dataset, index.tolist()), collate_fn=split.collate_fn))
    else:
        picked = as_pair(Subset(split, index.tolist()))
    return torch.utils._pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, picked)


def usable(split) -> bool:
    """A split a batch can be drawn from: non-empty, and (for a pair) every leaf of one length."""
    if split is None:
        return False
    if is_pair(split) and len(set(lengths(split))) > 1:
        return False
    return split_len(split) > 0
