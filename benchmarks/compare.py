"""Seconds per epoch of the harness's fit loop against the loops people write, per batch size.

    .venv/bin/python benchmarks/compare.py                      # the MLP: 54,000 samples, batch 8..2048, 2 rounds
    .venv/bin/python benchmarks/compare.py --batch-sizes 128 --samples 10000 --rounds 1
    .venv/bin/python benchmarks/compare.py --model cnn          # a small ResNet-style CNN on 3x32x32
    .venv/bin/python benchmarks/compare.py --model transformer  # a small transformer encoder on token ids

`--model mlp` (the default) is the seed notebook's MLP (784-256-128-10) on FashionMNIST-shaped
synthetic data; `--model cnn` is a small ResNet-style CNN (two residual stages, BatchNorm) on
CIFAR-shaped data; `--model transformer` is a 2-layer transformer encoder (d=64, 4 heads) over
32 token ids with a mean-pooled classifier. Plain SGD lr 0.01 everywhere, one epoch each, all in
one process and interleaved round by round (so a burst of load from elsewhere hits every loop
alike); the table keeps each loop's fastest round, and `harness / plain` is the fit loop's
overhead over a bare loop (the target: at most 1.05):

- harness: `harness.fit` (tensors sliced on the device, loss/accuracy read once an epoch,
  its thread count chosen by measurement, capped at --threads); the training pass only.
- plain:   a bare tensor-slicing loop (randperm, index, zero_grad/forward/backward/step).
- blog:    the blog's loop: a per-sample Dataset in a DataLoader, `loss.item()` and
  scikit-learn accuracy on every batch.
- lightning: PyTorch Lightning's Trainer on the same model, DataLoader over a TensorDataset
  (skipped with a note unless `pip install lightning`, the `bench` extra).
- keras:   the notebook's Keras model.fit (skipped with a note unless tensorflow is installed).
- bound:   the FLOP lower bound: 3 x forward FLOPs per sample x samples / the FLOP/s of a
  large float32 matmul at --threads, measured in this run.

Every loop runs with torch.set_num_threads(--threads) (default: all cores). `--clock cpu` times
each loop by this process's CPU time instead of the wall clock: on a machine shared with other
jobs the wall clock mostly measures their load; with --threads 1 the CPU time is the loop's own
work (the harness's training pass is then timed by the same clock, as fit times it). The FLOP
bound's matmul rate is measured with the same clock.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import types

import torch
import torch.nn.functional as F

from harness import runtime
from harness.data import synthetic
from harness.fit import fit
from harness.models import fashion_mlp
from harness.recipe import Data

LR = 0.01
clock = time.perf_counter  # --clock cpu: time.process_time


# --- the models (a builder per model, plain functions) -------------------------------------------

class Residual(torch.nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (1x1 conv when the shape changes), then ReLU."""
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def small_resnet(num_classes: int = 10) -> torch.nn.Module:
    """A small ResNet-style CNN for 3x32x32: stem 16, stages 16/32/64 (stride 1/2/2), pooled, linear."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         Residual(16, 16, 1), Residual(16, 32, 2), Residual(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


class TokenEncoder(torch.nn.Module):
    """Token ids (N, T) -> class logits (N, C): embedding + positions, transformer encoder, mean pool."""
    def __init__(self, vocab: int = 1000, length: int = 32, d_model: int = 64, heads: int = 4, layers: int = 2,
                 num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.randn(length, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.position).mean(1))


def token_data(n: int, vocab: int = 1000, length: int = 32, num_classes: int = 10, seed: int = 0):
    """Random token sequences; the label is a function of the tokens (their sum mod C)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    return x, x.sum(1) % num_classes


MODELS = {  # name -> (model builder, data builder (n) -> (x, y), default samples, default batch sizes)
    "mlp": (fashion_mlp, lambda n: synthetic(n_train=n, n_val=0, n_test=0, shape=(1, 28, 28)).train,
            54_000, "8,32,128,512,2048"),
    "cnn": (small_resnet, lambda n: synthetic(n_train=n, n_val=0, n_test=0, shape=(3, 32, 32)).train,
            8_192, "16,64,256"),
    "transformer": (TokenEncoder, token_data, 16_384, "16,64,256"),
}
build_model = fashion_mlp  # the model every loop trains; main() sets it from --model


def matmul_flops_per_s(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a large float32 matmul at `threads`, timed by `clock` (best of `repeats`)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        a @ b
        best = min(best, clock() - t0)
    return 2 * n ** 3 / max(best, 1e-9)


def train_flops_per_sample(model, x) -> float:
    """3 x the forward FLOPs per sample (matmuls and convolutions), counted in train mode on two
    samples: eval mode would send the transformer down its fused fast path, which is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = model.cpu().train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(x[:2].cpu())
    return 3.0 * counter.get_total_flops() / 2


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_epoch(x, y, bs, device):
    fit_module = sys.modules["harness.fit"]  # (`harness.fit` the attribute is the function)

    torch.manual_seed(0)
    model = build_model()
    saved = fit_module.time
    if clock is not time.perf_counter:  # fit times its training pass with time.perf_counter: give it our clock
        fit_module.time = types.SimpleNamespace(perf_counter=clock)
    try:
        hist = fit(model, Data(train=(x, y), val=None), lr=LR, batch_size=bs, epochs=1, device=device)
    finally:
        fit_module.time = saved
    return hist.seconds[0]


def plain_epoch(x, y, bs, device):
    torch.manual_seed(0)
    model = build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sync(device)
    t0 = clock()
    order = torch.randperm(len(y), device=device)
    for i in range(0, len(y), bs):
        idx = order[i:i + bs]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    sync(device)
    return clock() - t0


class PerSample(torch.utils.data.Dataset):
    """The blog's Dataset: tensors held whole, one sample per __getitem__ (flattened for the MLP)."""
    def __init__(self, x, y):
        self.x, self.y = (x.view(len(x), -1) if build_model is fashion_mlp else x), y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def blog_epoch(x, y, bs, device):
    from sklearn.metrics import accuracy_score

    torch.manual_seed(0)
    model = build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(PerSample(x, y), batch_size=bs, shuffle=True)
    criterion = torch.nn.CrossEntropyLoss()
    sync(device)
    t0 = clock()
    losses, accs = [], []
    model.train()
    for xb, yb in loader:
        pred = model(xb)
        loss = criterion(pred, yb)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        probs = torch.argmax(torch.softmax(pred, dim=-1), dim=1)
        accs.append(accuracy_score(yb.cpu().numpy(), probs.cpu().detach().numpy()))
    sync(device)
    return clock() - t0


def lightning_epoch(x, y, bs, device):
    import logging
    import warnings

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = build_model()

        def training_step(self, batch, _):
            xb, yb = batch
            return F.cross_entropy(self.model(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            sync(device)
            self.t0 = clock()

        def on_train_epoch_end(self, trainer, module):
            sync(device)
            self.seconds = clock() - self.t0

    torch.manual_seed(0)
    timer = EpochTimer()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True)
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(Module(), loader)
    return timer.seconds


def keras_epoch(x, y, bs, device):
    import numpy as np
    from tensorflow import keras

    model = keras.Sequential([keras.layers.Input(shape=(28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.0),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    xs, ys = x.view(-1, 28, 28).cpu().numpy(), y.cpu().numpy().astype(np.int64)
    t0 = clock()
    model.fit(xs, ys, epochs=1, batch_size=bs, verbose=0)
    return clock() - t0


LOOPS = {"harness": harness_epoch, "plain": plain_epoch, "blog": blog_epoch,
         "lightning": lightning_epoch, "keras": keras_epoch}


def available(name: str) -> str:
    """'' when the loop can run here, else the note to print."""
    module = {"lightning": "lightning", "keras": "tensorflow"}.get(name)
    if module is None:
        return ""
    try:
        __import__(module)
    except ImportError:
        extra = "pip install 'recipe-harness[bench]'" if name == "lightning" else "pip install tensorflow"
        return f"{name}: skipped, {module} is not installed ({extra})"
    return ""


def paired(rounds: dict, a: str, b: str, bs: int) -> float:
    """Median over rounds of a's time / b's time in the same round (both ran back to back, under one load)."""
    ratios = sorted(x / y for x, y in zip(rounds[a, bs], rounds[b, bs]))
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def main(argv=None) -> int:
    global build_model, clock
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default: per model)")
    p.add_argument("--samples", type=int, default=None, help="training samples (default: per model)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest is kept")
    p.add_argument("--threads", type=int, default=runtime.cores())
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or this process's CPU time (robust to other jobs' load with --threads 1)")
    args = p.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    build_model, make_data, samples, batch_sizes = MODELS[args.model]
    args.samples = args.samples or samples
    args.batch_sizes = args.batch_sizes or batch_sizes
    if args.model != "mlp" and "keras" in args.loops:
        args.loops = ",".join(n for n in args.loops.split(",") if n != "keras")  # the notebook's Keras model is the MLP
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
    device = torch.device(args.device)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    loops = []
    for name in args.loops.split(","):
        note = available(name)
        if note:
            print(note, file=sys.stderr)
        else:
            loops.append(name)
    x, y = make_data(args.samples)
    x, y = x.to(device), y.to(device)
    flops = train_flops_per_sample(build_model(), x) * len(y)
    rate = matmul_flops_per_s(args.threads)
    print(f"model {args.model}: {len(y)} samples, {flops / 1e9:.1f} GFLOP an epoch, matmul {rate / 1e9:.0f} GFLOP/s on "
          f"{args.threads} thread(s): bound {flops / rate:.3f} s/epoch; torch {torch.__version__}", flush=True)
    best, rounds = {}, {}
    for r in range(args.rounds):
        for bs in sizes:
            for name in loops[r % len(loops):] + loops[:r % len(loops)]:  # rotated: no loop always runs first
                torch.set_num_threads(args.threads)
                # wall clock: the harness measures its thread count; CPU clock: every loop on --threads
                runtime.set_threads_override("auto" if args.clock == "wall" else args.threads)
                seconds = LOOPS[name](x, y, bs, device)
                best[name, bs] = min(best.get((name, bs), math.inf), seconds)
                rounds.setdefault((name, bs), []).append(seconds)
                print(f"  round {r + 1} batch {bs:5d} {name:10s} {seconds:7.3f} s", file=sys.stderr, flush=True)
        rate = max(rate, matmul_flops_per_s(args.threads))  # the best rate seen in the run
    bound = flops / rate
    print(f"\n{'CPU ' if args.clock == 'cpu' else ''}seconds per epoch (x FLOP bound of {bound:.3f} s at {rate / 1e9:.0f} GFLOP/s, "
          f"{args.threads} thread(s); fastest of {args.rounds} interleaved rounds)\n")
    print("| batch | " + " | ".join(loops) + " | harness / plain: fastest (median of paired rounds) | blog / harness |")
    print("|---:|" + "---:|" * (len(loops) + 2))
    for bs in sizes:
        cells = [f"{best[n, bs]:.2f} (x{best[n, bs] / bound:.1f})" for n in loops]
        overhead = (f"{best['harness', bs] / best['plain', bs]:.3f} ({paired(rounds, 'harness', 'plain', bs):.3f})"
                    if {"plain", "harness"} <= set(loops) else "-")
        ratio = f"{best['blog', bs] / best['harness', bs]:.2f}" if {"blog", "harness"} <= set(loops) else "-"
        print(f"| {bs} | " + " | ".join(cells) + f" | {overhead} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
