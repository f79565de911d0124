"""A learning-rate sweep trained as one model: K copies with the same initial weights, on the
same batches, each with its own learning rate.

    from harness.study.stacked import why_not, run_configs
    reason = why_not(recipe, configs)           # "" when the configs can be trained together
    results = run_configs(recipe, data, configs, device)   # one run_config-shaped result each

Each copy's parameters are a slice of a stacked tensor (K, *shape); `torch.func.vmap` over
`functional_call` runs the K forward passes as batched ops and one backward gives every
copy its own gradient (the copies share no weights, so the summed loss separates). Each step
is `harness.recipe.default_step`, the step `fit` runs, on the copies (`Copies`) with an optimizer
whose update is torch.optim.SGD's with a per-copy lr (`StackedSGD`). Each copy's History and table row equal
those of a separate `run_config` with the same seed within float rounding (about 1e-6 after
a few epochs; tests hold it to 1e-5): same initial weights (the model is built once under
torch.manual_seed(seed)), same shuffling (the same seeded generator), same per-epoch
evaluation, divergence detection and step counts. A copy that diverges is frozen at the
step where its separate run would have stopped.

It applies when the configs differ only in lr, use plain SGD (momentum, dampening, weight
decay and Nesterov are fine) and no scheduler or early stopping, the recipe has no custom
train_step, and the model has no buffers (BatchNorm) and no dropout. `why_not` says which
condition fails. Epoch seconds are the joint epoch's wall time divided by K (each copy's share).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from harness.data import split_len, subset as take_subset
from harness.fit import (DIVERGE_CHECK_EVERY, EVAL_BATCH, History, _divergence, _score, batches,
                         evaluate, to_device)
from harness.batching import batch_len
from harness.recipe import DEFAULT_FORWARD, Data, Recipe, default_step, make_optimizer
from harness.tasks import Classification
from harness.study.one_run import make_result, run_config, scored_split


def why_not(recipe: Recipe, configs: list) -> str:
    """Why `configs` cannot be trained as one stacked model ("" when they can)."""
    configs = list(configs)
    if len(configs) < 2:
        return "fewer than 2 configs"
    if len({replace(c, lr=0.0) for c in configs}) > 1:
        return "the configs differ in more than the learning rate"
    opts = dict(configs[0].options)
    if opts.get("scheduler") not in (None, "", "none"):
        return "a learning-rate schedule is set"
    if opts.get("patience") is not None:
        return "early stopping (patience) is set"
    if recipe.train_step is not None:
        return "the recipe has a custom train_step"
    if recipe.scheduler is not None:
        return "the recipe has a learning-rate scheduler"
    if recipe.forward.fn is not None:
        return "the recipe has a custom forward"
    if not isinstance(recipe.task, Classification):
        return f"stacked runs support classification only, not {recipe.task.name}"
    sgd = _sgd_settings(recipe, configs[0])
    if isinstance(sgd, str):
        return sgd
    torch.manual_seed(configs[0].seed)
    model = recipe.build_model()
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. BatchNorm running statistics)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "the model uses dropout (each copy would draw different masks)"
    if not all(p.requires_grad for p in model.parameters()):
        return "the model has frozen parameters"
    return ""


def _sgd_settings(recipe: Recipe, config):
    """torch.optim.SGD's settings for this config's optimizer, or the reason it is not plain SGD."""
    factory = config.fit_overrides(recipe.optimizer).get("optimizer", recipe.optimizer)
    probe = make_optimizer(factory, nn.Linear(1, 1), 0.1, where="stacked")
    if type(probe) is not torch.optim.SGD:
        return f"the optimizer is {type(probe).__name__}, not SGD"
    d = probe.defaults
    if d.get("maximize") or d.get("differentiable"):
        return "SGD with maximize/differentiable is not supported"
    return {k: d.get(k, 0.0) for k in ("momentum", "dampening", "weight_decay", "nesterov")}


def run_configs(recipe: Recipe, data: Data, configs: list, device="cpu") -> list:
    """Train `configs` (same except lr) as one stacked model; return a run_config-shaped result for each."""
    if len(configs) == 1:  # a share of a split sweep can be a single config
        return [run_config(recipe, data, configs[0], device)]
    reason = why_not(recipe, configs)
    if reason:
        raise ValueError(f"cannot vectorize these configs: {reason}")
    cfg = configs[0]
    settings = cfg.fit_overrides(recipe.optimizer)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model = recipe.build_model().to(device)
    histories, params = fit_stacked(
        model, data, [c.lr for c in configs], _sgd_settings(recipe, cfg), loss=recipe.loss, batch_size=settings["batch_size"],
        epochs=settings["epochs"], subset=settings.get("subset"), seed=cfg.seed, device=device,
        num_classes=recipe.num_classes)
    split = getattr(data, scored_split(data))
    results = []
    for k, (config, hist) in enumerate(zip(configs, histories)):
        model.load_state_dict({name: p[k] for name, p in params.items()})
        results.append(make_result(config, hist, evaluate(model, split, device=device, task=recipe.task), data,
                                   main=recipe.task.main_metric))
    return results


def fit_stacked(model: nn.Module, data: Data, lr_values: list, sgd: dict, *, loss, batch_size: int,
                epochs: int, subset=None, seed: int = 0, device="cpu",
                num_classes: Optional[int] = None, diverge_factor: float = 4.0):
    """Train len(lr_values) copies of `model` (its current weights) as `fit` would train each; return
    (histories, stacked params {name: (K, *shape)})."""
    K = len(lr_values)
    train_split = data.train
    if subset is not None:
        n = subset if isinstance(subset, int) else int(round(subset * split_len(train_split)))
        train_split = take_subset(train_split, n, seed=seed)
    train_split, val_split = to_device(train_split, device), to_device(data.val, device)
    copies = Copies(model, K)
    opt = StackedSGD(copies.params, torch.tensor(lr_values, dtype=torch.float32, device=device), sgd)
    generator = torch.Generator().manual_seed(seed)
    hists = [History() for _ in range(K)]
    best = [None] * K                                         # best val_acc so far, per copy
    for epoch in range(1, epochs + 1):
        live = [k for k in range(K) if not hists[k].diverged]
        if not live:
            break
        t0 = time.perf_counter()
        loss_sum, correct, seen, steps, peak = _train_epoch(copies, opt, loss, train_split, batch_size, generator, device)
        seconds = (time.perf_counter() - t0) / len(live)
        val_loss, val_acc = _evaluate(copies, loss, val_split, device)
        for k in live:
            h = hists[k]
            h.lr.append(lr_values[k])
            h.seconds.append(seconds)
            h.steps.append(int(steps[k]))
            h.train_loss.append(float(loss_sum[k]) / max(int(seen[k]), 1))
            h.train_acc.append(float(correct[k]) / max(int(seen[k]), 1))
            h.peak_loss.append(float(peak[k]))
            finite = math.isfinite(h.train_loss[-1])
            h.val_loss.append(float(val_loss[k]) if finite else math.nan)
            h.val_acc.append(float(val_acc[k]) if finite else math.nan)
            reason = _divergence(h.train_loss, diverge_factor, num_classes, h.peak_loss)
            if reason:
                h.diverged, h.diverged_reason = True, reason
                opt.active[k] = False
                continue
            score = _score(h, "val_acc")
            if best[k] is None or score > best[k]:
                best[k], h.best_epoch = score, epoch
    return hists, {name: p.detach() for name, p in copies.params.items()}


class Copies:
    """K copies of `model` called as one: parameters stacked (K, *shape), the forward pass vmapped over
    them. Called like the model (a tensor, positional or keyword inputs), it returns (K, B, ...) outputs."""

    def __init__(self, model: nn.Module, K: int):
        self.model = model
        self.params, _ = stack_module_state([model] * K)  # (K, *shape) leaves, each copy the same weights
        self._call = vmap(lambda p, args, kwargs: functional_call(model, (p, {}), args, kwargs), in_dims=(0, None, None))

    def __call__(self, *args, **kwargs):
        return self._call(self.params, args, kwargs)


class StackedSGD(torch.optim.Optimizer):
    """torch.optim.SGD's update on stacked parameters, with one lr per copy (`lrs`, shape (K,)).

    `active` marks the copies that have not diverged; `running` (reset from it every epoch)
    the copies still stepping; a stopped copy's parameters are left untouched."""

    def __init__(self, params: dict, lrs: torch.Tensor, sgd: dict):
        super().__init__(list(params.values()), {"lr": 1.0})  # the real lrs are per copy, in `lrs`
        self.lrs, self.sgd = lrs, sgd
        self.active = torch.ones(len(lrs), dtype=torch.bool, device=lrs.device)
        self.start_epoch()

    def start_epoch(self):
        self.set_running(self.active.clone())

    def set_running(self, running: torch.Tensor):
        """Which copies step (read on the host only here, at the 64-step checks and epoch starts)."""
        self.running = running
        self.all_running = bool(running.all())
        self.step_lr = torch.where(running, self.lrs, torch.zeros_like(self.lrs))

    @torch.no_grad()
    def step(self, closure=None):
        sgd, running, lr = self.sgd, self.running, self.step_lr
        for p in self.param_groups[0]["params"]:
            g = p.grad
            mask = running.view(-1, *([1] * (p.dim() - 1)))
            if sgd["weight_decay"]:
                g = g.add(p, alpha=sgd["weight_decay"])
            if sgd["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = g.clone()
                else:
                    buf.copy_(torch.where(mask, buf * sgd["momentum"] + (1 - sgd["dampening"]) * g, buf))
                g = g.add(buf, alpha=sgd["momentum"]) if sgd["nesterov"] else buf
            if self.all_running:
                p.addcmul_(g, lr.view(mask.shape), value=-1.0)       # p -= lr_k * g, without a temporary
            else:
                p.sub_(torch.where(mask, g * lr.view(mask.shape), 0.0))  # a stopped copy's NaN grads stay out


class _PerCopyLoss:
    """The summed loss of the copies (what backward needs); keeps the last per-copy losses (K,)."""

    def __init__(self, loss):
        self.per_copy, self.last = vmap(loss, in_dims=(0, None)), None

    def __call__(self, outputs, targets):
        self.last = self.per_copy(outputs, targets)
        return self.last.sum()


def _train_epoch(copies, opt, loss, split, batch_size, generator, device):
    """One joint pass of the shared training step (harness.recipe.default_step, the step fit runs);
    a copy whose running loss turns non-finite stops (frozen) at that check."""
    K = len(opt.lrs)
    loss_fn = _PerCopyLoss(loss)
    loss_sum = torch.zeros(K, device=device)
    correct = torch.zeros(K, device=device)
    seen = torch.zeros(K, dtype=torch.long, device=device)
    steps = torch.zeros(K, dtype=torch.long, device=device)
    peak = torch.full((K,), -math.inf, device=device)          # the largest single-step loss, per copy
    opt.start_epoch()
    for i, (xb, yb) in enumerate(batches(split, batch_size, shuffle=True, generator=generator,
                                         device=device), start=1):
        _, out = default_step(copies, xb, yb, opt, loss_fn)  # zero_grad, forward (K, B, C), loss, backward, step
        losses, running, n = loss_fn.last.detach(), opt.running, batch_len(yb)
        with torch.no_grad():
            loss_sum += torch.where(running, losses * n, 0.0)
            correct += torch.where(running, (out.argmax(2) == yb).sum(1).to(correct.dtype), 0.0)
            seen += running * n
            steps += running
            peak = torch.where(running, torch.maximum(peak, losses), peak)
        if i % DIVERGE_CHECK_EVERY == 0:
            stopped = running & ~torch.isfinite(loss_sum)
            if stopped.any():                                 # as fit: stop at once, keep the non-finite loss
                opt.set_running(running & ~stopped)
                if not opt.running.any():
                    break
    return loss_sum.tolist(), correct.tolist(), seen.tolist(), steps.tolist(), peak.tolist()


@torch.no_grad()
def _evaluate(copies, loss, split, device):
    """Per-copy mean loss and accuracy on a split, batched as evaluate_loss_acc does."""
    K = len(next(iter(copies.params.values())))
    if split is None:
        return [math.nan] * K, [math.nan] * K
    per_copy_loss = vmap(loss, in_dims=(0, None))
    loss_sum = torch.zeros(K, device=device)
    correct = torch.zeros(K, device=device)
    n = 0
    for xb, yb in batches(split, EVAL_BATCH, shuffle=False, generator=None, device=device):
        out = DEFAULT_FORWARD(copies, xb)
        loss_sum += per_copy_loss(out, yb).float() * batch_len(yb)
        correct += (out.argmax(2) == yb).sum(1)
        n += batch_len(yb)
    return (loss_sum / max(n, 1)).tolist(), (correct / max(n, 1)).tolist()
