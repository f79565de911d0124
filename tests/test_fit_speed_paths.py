"""The fit loop's fast paths keep its numbers: loss/accuracy bookkeeping, divergence stop,
counted steps, and the thread choice (harness.runtime). Correctness only; no timing asserts.

    .venv/bin/python -m pytest tests/test_fit_speed_paths.py -q
"""
import math

import pytest
import torch
import torch.nn.functional as F

from harness import fit, runtime
from harness.data import synthetic
from harness.fit import default_step
from harness.models import mlp

DATA = synthetic(n_train=300, n_val=50, n_test=0, shape=(1, 4, 4), seed=2)   # 300 = 9 x 32 + 12


def model():
    torch.manual_seed(0)
    return mlp(16, (8,), 10)


def recording_step(log):
    def step(m, x, y, opt, loss_fn):
        loss, out = default_step(m, x, y, opt, loss_fn)
        log.append((float(loss.detach()), int((out.argmax(1) == y).sum()), len(y)))
        return loss, out
    return step


def test_epoch_loss_and_accuracy_are_the_sample_weighted_means_of_the_steps():
    log = []
    hist = fit(model(), DATA, lr=0.1, batch_size=32, epochs=1, train_step=recording_step(log))
    n = sum(size for *_, size in log)
    assert n == 300 and log[-1][2] == 12                           # the short last batch counts by its size
    assert hist.train_loss[0] == pytest.approx(sum(l * s for l, _, s in log) / n, rel=1e-6)
    assert hist.train_acc[0] == pytest.approx(sum(c for _, c, _ in log) / n, abs=1e-9)


def test_a_nan_loss_stops_the_epoch_at_the_next_64_step_check():
    data = synthetic(n_train=4 * 200, n_val=8, n_test=0, shape=(1, 4, 4))
    calls = []

    def step(m, x, y, opt, loss_fn):
        calls.append(1)
        loss, out = default_step(m, x, y, opt, loss_fn)
        return (loss * math.nan if len(calls) == 70 else loss), out

    hist = fit(model(), data, lr=0.1, batch_size=4, epochs=3, train_step=step)
    assert len(calls) == 128 and hist.steps == [128]              # checked at 64 (finite) and 128 (NaN)
    assert hist.diverged and math.isnan(hist.train_loss[0]) and math.isnan(hist.val_acc[0])


def test_steps_are_the_optimizer_steps_taken():
    def every_other(m, x, y, opt, loss_fn):
        every_other.n += 1
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        if every_other.n % 2:
            opt.step()
        return loss
    every_other.n = 0
    hist = fit(model(), DATA, lr=0.1, batch_size=32, epochs=2, train_step=every_other)
    assert hist.steps == [5, 5] and math.isnan(hist.train_acc[0])  # 10 batches an epoch, half stepped


def test_a_float_loss_from_a_custom_step_is_accepted():
    hist = fit(model(), DATA, lr=0.1, batch_size=64, epochs=1,
               train_step=lambda m, x, y, o, l: default_step(m, x, y, o, l)[0].item())
    assert math.isfinite(hist.train_loss[0])


def test_harness_threads_pins_the_count_and_fit_restores_it(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("HARNESS_THREADS", "1")
    seen = []
    fit(model(), DATA, lr=0.1, batch_size=32, epochs=1,
        train_step=lambda *a: (seen.append(torch.get_num_threads()), default_step(*a))[1])
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_bad_harness_threads_names_the_variable(monkeypatch):
    monkeypatch.setenv("HARNESS_THREADS", "zero")
    with pytest.raises(ValueError, match="HARNESS_THREADS"):
        runtime.override()


def test_the_cap_is_cores_over_xdist_workers(monkeypatch):
    monkeypatch.setattr(runtime, "cores", lambda: 8)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert runtime.thread_cap() == 2
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")
    assert runtime.thread_cap() == 1


def test_the_measurement_picks_a_candidate_and_leaves_the_rng_and_threads_alone(monkeypatch):
    monkeypatch.setattr(runtime, "thread_cap", lambda: 2)
    monkeypatch.setenv("HARNESS_THREADS", "auto")
    runtime._cache.clear()
    net = mlp(16, (8,), 10, dropout=0.5)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    chosen = runtime.threads_for(net, DATA.train, 32, F.cross_entropy, samples=10 ** 6)
    assert chosen in (1, 2)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert runtime.threads_for(net, DATA.train, 32, F.cross_entropy, samples=10 ** 6) == chosen  # cached


def test_short_runs_and_non_cpu_devices_are_not_measured(monkeypatch):
    monkeypatch.setattr(runtime, "_measure", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setenv("HARNESS_THREADS", "auto")
    runtime.threads_for(model(), DATA.train, 32, F.cross_entropy, samples=300)
    runtime.threads_for(model(), DATA.train, 32, F.cross_entropy, device="meta", samples=10 ** 6)


def test_without_auto_the_thread_count_is_a_fixed_rule(monkeypatch):
    """The default never measures, so two processes with the same seed use the same threads."""
    monkeypatch.setattr(runtime, "_measure", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.delenv("HARNESS_THREADS", raising=False)
    monkeypatch.setattr(runtime, "thread_cap", lambda: 1)
    assert runtime.threads_for(model(), DATA.train, 32, F.cross_entropy, samples=10 ** 6) == 1
