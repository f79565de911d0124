"""How many CPU threads torch uses for a training run: a fixed rule by default, measured on request.

    from harness import runtime
    n = runtime.threads_for(model, train_split, batch_size, loss)   # fit() calls this
    HARNESS_THREADS=1 harness sweep ...                             # pin it
    HARNESS_THREADS=auto harness sweep ...                          # measure 1 thread vs the cap

The default is deterministic: torch's current thread count, capped at the cores this process
may use divided by the pytest-xdist workers sharing them. The thread count changes float
rounding (about 1e-7 in the weights after a few epochs), so a rule that depended on the load
of the moment would break "the same seed gives bit-identical histories across processes".

On a few cores a small batch often trains faster on one thread than on all of them (the
per-op thread hand-off costs more than the arithmetic it shares), and when other processes
already load the cores, extra threads only wait on each other. `HARNESS_THREADS=auto` (or
`set_threads_override("auto")`) therefore times a few forward/backward passes of a copy of the
model at one thread and at the cap for CPU runs long enough to matter, and keeps the faster;
the answer is cached per model shape and batch size for a minute. Use it for speed when
bit-for-bit reproducibility across processes does not matter.
"""
from __future__ import annotations

import copy
import os
import time
from typing import TYPE_CHECKING, Optional

from harness import parse

if TYPE_CHECKING:
    import torch

MEASURE_MIN_SAMPLES = 20_000  # samples per run below which measuring would cost more than it saves
MEASURE_TTL = 60.0            # seconds a measurement is trusted: the load from other processes moves
_override: Optional[int] = None
_cache: dict = {}


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """The one thread-cap rule: the cores this process may use, shared evenly by `workers`
    processes (pytest-xdist workers, sweep worker processes), at least 1 each."""
    return max(1, cores() // max(1, int(workers)))


def thread_cap() -> int:
    """threads_per_worker(pytest-xdist workers): the most threads a run in this process should use."""
    return threads_per_worker(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))


def set_threads_override(n) -> None:
    """Use exactly `n` threads in every following fit; "auto" measures; None restores the default rule."""
    global _override
    _override = None if n is None else ("auto" if n == "auto" else parse_threads(n))


def parse_threads(value) -> int:
    """A thread count from HARNESS_THREADS / --threads (a string or an int), via harness.parse."""
    text = value.strip() if isinstance(value, str) else value
    number = int(text) if isinstance(text, str) and text.lstrip("-").isdigit() else text
    return parse.integer(number, "HARNESS_THREADS / threads", 1, "give an integer >= 1 or 'auto', e.g. HARNESS_THREADS=1")


def override():
    """The pinned thread count or "auto", from `set_threads_override` or HARNESS_THREADS, else None."""
    if _override is not None:
        return _override
    env = os.environ.get("HARNESS_THREADS")
    if not env:
        return None
    return "auto" if env.strip().lower() == "auto" else parse_threads(env)


def threads_for(model: torch.nn.Module, split, batch_size: int, loss_fn, device=None,
                samples: Optional[int] = None) -> int:
    """The thread count to train `model` on `split` with; see the module docstring.

    `samples` is how many samples the run will process (epochs x split length); short runs
    keep the current setting rather than pay for a measurement.
    """
    import torch

    pinned = override()
    if pinned is not None and pinned != "auto":
        return pinned
    cap, current = thread_cap(), torch.get_num_threads()
    if pinned is None:
        return min(current, cap)  # the deterministic default
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cpu" or not (isinstance(split, (tuple, list)) and len(split) == 2
                                    and all(isinstance(t, torch.Tensor) for t in split)):  # measured on tensor pairs only
        return min(current, cap)
    if cap == 1 or (samples is not None and samples < MEASURE_MIN_SAMPLES):
        return min(current, cap)
    key = (type(model).__name__, tuple(tuple(p.shape) for p in model.parameters()),
           tuple(split[0].shape[1:]), min(batch_size, len(split[0])), cap)
    if key not in _cache or time.monotonic() - _cache[key][1] > MEASURE_TTL:
        try:
            choice = _measure(model, split, batch_size, loss_fn, (1, cap))
        except Exception:  # a model that cannot be copied or probed keeps the current setting
            choice = min(current, cap)
        _cache[key] = (choice, time.monotonic())
    return _cache[key][0]


def _measure(model, split, batch_size, loss_fn, candidates, rounds: int = 3) -> int:
    """Time forward+backward of a copy of `model` on one batch at each thread count; the fastest wins.

    Candidates are alternated, so a burst of load elsewhere hits each of them; one that is
    over twice as slow as the best is dropped (on loaded cores extra threads can be 100x slower).
    """
    import torch

    x, y = split[0][:batch_size], split[1][:batch_size]
    probe = copy.deepcopy(model).train()
    before = torch.get_num_threads()
    best: dict = {}
    try:
        with torch.random.fork_rng(devices=[]):  # dropout in the probe must not move the run's RNG
            for _ in range(rounds):
                for n in candidates:
                    fastest = min(best.values(), default=float("inf"))
                    if best.get(n, 0.0) > 2 * fastest:
                        continue
                    torch.set_num_threads(n)
                    best[n] = min(best.get(n, float("inf")), _time_steps(probe, x, y, loss_fn, 2 * fastest))
    finally:
        torch.set_num_threads(before)
    return min(best, key=lambda n: (best[n], n))


def _time_steps(model, x, y, loss_fn, cutoff: float, budget: float = 0.03) -> float:
    """Seconds per forward+backward over about `budget` seconds; stops early once over `cutoff` per step."""
    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
    step()  # warm-up
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < budget:
        step()
        n += 1
        if (time.perf_counter() - t0) / n > cutoff:
            break
    return (time.perf_counter() - t0) / n


# --- the FLOP bound the benchmarks report against -------------------------------------------

def matmul_flops_per_s(threads: Optional[int] = None, n: int = 2048, repeats: int = 5) -> float:
    """float32 FLOP/s of a large square matmul on the CPU (the best of `repeats`), at `threads`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * n ** 3 / best


def train_flops_per_sample(model: torch.nn.Module, sample: torch.Tensor) -> float:
    """Training FLOPs per sample: 3x the forward pass's (forward, and backward at twice that),
    counted by torch.utils.flop_counter on one sample (matmuls and convolutions)."""
    import torch

    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(sample[:1].cpu())
    return 3.0 * counter.get_total_flops()
