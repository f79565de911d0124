"""The CUDA fast path (harness/graphs.py): on CPU nothing changes; on a GPU a graphed fit takes the
same steps as an eager one and gives the same history and weights.

    .venv/bin/python -m pytest -q tests/test_graphs.py          # the CUDA tests skip without a GPU
"""
import pytest
import torch
from torch import nn

from harness import graphs
from harness.fit import fit
from harness.recipe import Data, Recipe

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a GPU): CUDA graphs are CUDA-only")


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


def _data(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 64, generator=g) * 0.5 + nn.functional.one_hot(y, 64).float()
    return Data(train=(x, y), val=(x[:200], y[:200]))


def _recipe(**kw):
    return Recipe(model=_mlp, data=_data, num_classes=10, **kw)


def test_on_cpu_the_step_is_unchanged():
    recipe = _recipe()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for mode in graphs.MODES:
        assert graphs.fast_step(recipe, model, opt, 32, "cpu", mode=mode) is recipe


def test_a_custom_step_or_a_per_step_scheduler_is_never_graphed():
    def my_step(model, x, y, optimizer, loss_fn):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    custom = _recipe(train_step=my_step)
    assert graphs.fast_step(custom, model, opt, 32, "cuda", mode="graphs") is custom
    plain = _recipe()
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    assert graphs.fast_step(plain, model, opt, 32, "cuda", scheduler=sched, mode="graphs") is plain


def test_the_mode_variable_is_validated(monkeypatch):
    monkeypatch.setenv("HARNESS_CUDA_STEP", "fast")
    with pytest.raises(ValueError, match="HARNESS_CUDA_STEP='fast'"):
        graphs.cuda_step_mode()
    monkeypatch.setenv("HARNESS_CUDA_STEP", "graphs")
    assert graphs.cuda_step_mode() == "graphs"


# --- on a GPU -------------------------------------------------------------------------------------

def _fit(mode, monkeypatch, optimizer=None, batch_size=64, n=1000, epochs=2, scheduler=None, model=_mlp):
    monkeypatch.setenv("HARNESS_CUDA_STEP", mode)
    torch.manual_seed(0)
    m = model()
    settings = dict(lr=0.05, batch_size=batch_size, epochs=epochs, device="cuda", seed=0, num_classes=10)
    if optimizer is not None:
        settings["optimizer"] = optimizer
    if scheduler is not None:
        settings["scheduler"] = scheduler
    hist = fit(m, _data(n), **settings)
    return hist, m


def _same(a, b, tol=1e-4):
    (ha, ma), (hb, mb) = a, b
    assert ha.steps == hb.steps
    assert ha.train_loss == pytest.approx(hb.train_loss, rel=tol, abs=tol)
    assert ha.val_loss == pytest.approx(hb.val_loss, rel=tol, abs=tol)
    for (name, ta), tb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.allclose(ta.float(), tb.float(), rtol=tol, atol=tol), name


@needs_cuda
def test_graphed_fit_matches_eager_sgd_momentum_with_a_partial_last_batch(monkeypatch):
    sgd = lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)  # noqa: E731
    _same(_fit("graphs", monkeypatch, sgd, n=1000), _fit("eager", monkeypatch, sgd, n=1000))  # 1000 % 64 != 0


@needs_cuda
def test_graphed_fit_matches_eager_adamw(monkeypatch):
    adamw = lambda params, lr: torch.optim.AdamW(params, lr=lr * 0.1, weight_decay=0.01)  # noqa: E731
    _same(_fit("graphs", monkeypatch, adamw), _fit("eager", monkeypatch, adamw))


@needs_cuda
def test_an_epoch_scheduler_recaptures_at_the_new_lr(monkeypatch):
    sched = lambda opt, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # noqa: E731
    graphed, eager = _fit("graphs", monkeypatch, epochs=3, scheduler=sched), _fit("eager", monkeypatch, epochs=3, scheduler=sched)
    _same(graphed, eager)
    assert graphed[0].lr == pytest.approx([0.05, 0.025, 0.0125])


@needs_cuda
def test_a_model_that_cannot_be_captured_trains_eagerly_with_a_warning(monkeypatch):
    class HostRead(nn.Module):  # reads a value on the host every forward: not capturable
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x) * (1.0 if float(x.abs().sum()) >= 0 else 0.0)

    with pytest.warns(UserWarning, match="CUDA graph capture of the training step failed"):
        graphed = _fit("graphs", monkeypatch, model=HostRead)
    _same(graphed, _fit("eager", monkeypatch, model=HostRead))


@needs_cuda
def test_compiled_fit_trains_like_eager(monkeypatch):
    compiled, eager = _fit("compile", monkeypatch, epochs=1), _fit("eager", monkeypatch, epochs=1)
    assert compiled[0].steps == eager[0].steps
    assert compiled[0].train_loss == pytest.approx(eager[0].train_loss, rel=1e-2)
