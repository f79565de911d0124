"""Training and inference speed per batch size, with pytest-benchmark (opt-in, serial).

    pytest -m bench -p no:xdist --benchmark-json=bench.json
    pytest -m bench -p no:xdist --benchmark-autosave                  # store a baseline
    pytest -m bench -p no:xdist --benchmark-compare --benchmark-compare-fail=mean:10%   # gate on it

For batch sizes 8..2048 it times one optimizer step, one epoch (fit, 1 epoch) and inference
over 10,000 samples, for the recipe under test (--recipe, default digits28) and for
FashionMNIST-shaped synthetic data (54,000 samples, the seed notebook's MLP, SGD lr 0.01).
Each result lands in the group "batch N"; `extra_info` holds samples/s, steps/s, the torch
thread count and the multiple of the FLOP bound (training FLOPs / the large-matmul FLOP/s
measured at the start of this run on the same threads). Timed code ends with a device sync.
Under pytest-xdist pytest-benchmark disables itself; these tests then skip and say so.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from harness import runtime
from harness.data import split_len, synthetic
from harness.fit import batches, default_step, fit, to_device
from harness.models import fashion_mlp
from harness.recipe import Data

pytestmark = pytest.mark.bench

BATCH_SIZES = (8, 32, 128, 512, 2048)
INFER_SAMPLES = 10_000


@pytest.fixture(scope="session")
def threads():
    """HARNESS_THREADS=N, else the cap (cores // xdist workers); set for every benchmark."""
    pinned = runtime.override()
    n = pinned if isinstance(pinned, int) else runtime.thread_cap()
    torch.set_num_threads(n)
    return n


@pytest.fixture(scope="session")
def flops_per_s(threads):
    return runtime.matmul_flops_per_s(threads)


@pytest.fixture(scope="session")
def fashion_data():
    return synthetic(n_train=54_000, n_val=6_000, n_test=10_000, shape=(1, 28, 28))


@pytest.fixture(params=["recipe", "fashion"])
def workload(request, recipe, device):
    """(name, model factory, data, lr, optimizer, loss) for the recipe under test or the notebook's MLP."""
    if request.param == "recipe":
        data = request.getfixturevalue("recipe_data")
        return "recipe", recipe.build_model, data, recipe.lr, recipe.optimizer, recipe.loss
    data = request.getfixturevalue("fashion_data")
    return "fashion", fashion_mlp, data, 0.01, lambda p, lr: torch.optim.SGD(p, lr=lr), F.cross_entropy


@pytest.fixture
def bench(benchmark):
    if benchmark.disabled or os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("pytest-benchmark is disabled (under pytest-xdist it always is): "
                    "run the benchmarks serially, pytest -m bench -p no:xdist")
    return benchmark


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def record(benchmark, *, kind, name, batch_size, samples, steps, flops, flops_per_s, threads):
    """Throughput and the multiple of the FLOP bound, from the mean time."""
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "workload": name, "what": kind, "batch_size": batch_size, "threads": threads,
        "samples_per_s": samples / mean, "steps_per_s": steps / mean,
        "flop_bound_s": flops / flops_per_s, "x_flop_bound": mean / (flops / flops_per_s),
        "matmul_gflops": flops_per_s / 1e9,
    })


def tensors(split, device, n=None):
    x, y = to_device(split, device)
    if n is not None:  # repeat a small split up to n samples
        reps = -(-n // len(y))
        x, y = x.repeat(reps, *[1] * (x.dim() - 1))[:n], y.repeat(reps)[:n]
    return x, y


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_step(bench, workload, batch_size, device, flops_per_s, threads):
    name, build, data, lr, optimizer, loss = workload
    x, y = tensors(data.train, device, n=batch_size)
    model = build().to(device)
    opt = optimizer(model.parameters(), lr)
    per_sample = runtime.train_flops_per_sample(model, x)

    def step():
        default_step(model, x, y, opt, loss)
        sync(device)

    bench.group = f"batch {batch_size}"
    bench.pedantic(step, rounds=10, iterations=max(1, 256 // batch_size), warmup_rounds=2)
    record(bench, kind="one optimizer step", name=name, batch_size=batch_size, samples=batch_size, steps=1,
           flops=per_sample * batch_size, flops_per_s=flops_per_s, threads=threads)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_epoch(bench, workload, batch_size, device, flops_per_s, threads):
    name, build, data, lr, optimizer, loss = workload
    train = Data(train=to_device(data.train, device), val=None)
    n = split_len(train.train)
    model = build().to(device)
    per_sample = runtime.train_flops_per_sample(model, train.train[0])

    def epoch():
        fit(model, train, lr=lr, optimizer=optimizer, loss=loss, batch_size=batch_size, epochs=1, device=device)
        sync(device)

    bench.group = f"batch {batch_size}"
    bench.pedantic(epoch, rounds=1 if n // batch_size > 1000 else 2, iterations=1, warmup_rounds=0)
    used = runtime.threads_for(model, train.train, batch_size, loss, device, samples=n)  # fit's choice (cached)
    record(bench, kind="one epoch", name=name, batch_size=batch_size, samples=n, steps=-(-n // batch_size),
           flops=per_sample * n, flops_per_s=flops_per_s, threads=used)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_inference(bench, workload, batch_size, device, flops_per_s, threads):
    name, build, data, *_ = workload
    split = data.test if data.test is not None else data.val
    x, y = tensors(split, device, n=INFER_SAMPLES)
    model = build().to(device).eval()
    per_sample = runtime.train_flops_per_sample(model, x) / 3  # forward only

    @torch.no_grad()
    def infer():
        for xb, _ in batches((x, y), batch_size, shuffle=False, generator=None, device=device):
            model(xb).argmax(1)
        sync(device)

    bench.group = f"batch {batch_size}"
    bench.pedantic(infer, rounds=3, iterations=1, warmup_rounds=1)
    record(bench, kind=f"inference over {INFER_SAMPLES} samples", name=name, batch_size=batch_size,
           samples=INFER_SAMPLES, steps=-(-INFER_SAMPLES // batch_size), flops=per_sample * INFER_SAMPLES,
           flops_per_s=flops_per_s, threads=threads)
