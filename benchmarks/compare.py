"""Seconds per epoch of the harness's fit loop against the loops people write, per batch size.

    .venv/bin/python benchmarks/compare.py                      # 54,000 samples, batch 8..2048, 2 rounds
    .venv/bin/python benchmarks/compare.py --batch-sizes 128 --samples 10000 --rounds 1

The seed notebook's MLP (784-256-128-10, plain SGD lr 0.01) on FashionMNIST-shaped synthetic
data, one epoch each, all in one process and interleaved round by round (so a burst of load
from elsewhere hits every loop alike); the table keeps each loop's fastest round:

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

Every loop runs with torch.set_num_threads(--threads) (default: all cores).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from harness import runtime
from harness.data import synthetic
from harness.fit import fit
from harness.models import fashion_mlp
from harness.recipe import Data

LR = 0.01


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_epoch(x, y, bs, device):
    torch.manual_seed(0)
    hist = fit(fashion_mlp(), Data(train=(x, y), val=None), lr=LR, batch_size=bs, epochs=1, device=device)
    return hist.seconds[0]


def plain_epoch(x, y, bs, device):
    torch.manual_seed(0)
    model = fashion_mlp().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sync(device)
    t0 = time.perf_counter()
    order = torch.randperm(len(y), device=device)
    for i in range(0, len(y), bs):
        idx = order[i:i + bs]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


class PerSample(torch.utils.data.Dataset):
    """The blog's Dataset: tensors held whole, one sample per __getitem__."""
    def __init__(self, x, y):
        self.x, self.y = x.view(len(x), -1), y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def blog_epoch(x, y, bs, device):
    from sklearn.metrics import accuracy_score

    torch.manual_seed(0)
    model = fashion_mlp().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(PerSample(x, y), batch_size=bs, shuffle=True)
    criterion = torch.nn.CrossEntropyLoss()
    sync(device)
    t0 = time.perf_counter()
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
    return time.perf_counter() - t0


def lightning_epoch(x, y, bs, device):
    import logging
    import warnings

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = fashion_mlp()

        def training_step(self, batch, _):
            xb, yb = batch
            return F.cross_entropy(self.model(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync(device)
            self.seconds = time.perf_counter() - self.t0

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
    t0 = time.perf_counter()
    model.fit(xs, ys, epochs=1, batch_size=bs, verbose=0)
    return time.perf_counter() - t0


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="8,32,128,512,2048")
    p.add_argument("--samples", type=int, default=54_000)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest is kept")
    p.add_argument("--threads", type=int, default=runtime.cores())
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
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
    data = synthetic(n_train=args.samples, n_val=0, n_test=0, shape=(1, 28, 28))
    x, y = data.train[0].to(device), data.train[1].to(device)
    flops = runtime.train_flops_per_sample(fashion_mlp(), x) * len(y)
    rate = runtime.matmul_flops_per_s(args.threads)
    print(f"{len(y)} samples, {flops / 1e9:.1f} GFLOP an epoch, matmul {rate / 1e9:.0f} GFLOP/s on "
          f"{args.threads} thread(s): bound {flops / rate:.3f} s/epoch; torch {torch.__version__}", flush=True)
    best = {}
    for r in range(args.rounds):
        for bs in sizes:
            for name in loops:
                torch.set_num_threads(args.threads)
                runtime.set_threads_override("auto")  # the harness measures its thread count here
                seconds = LOOPS[name](x, y, bs, device)
                best[name, bs] = min(best.get((name, bs), math.inf), seconds)
                print(f"  round {r + 1} batch {bs:5d} {name:10s} {seconds:7.3f} s", file=sys.stderr, flush=True)
        rate = max(rate, runtime.matmul_flops_per_s(args.threads))  # the best rate seen in the run
    bound = flops / rate
    print(f"\nseconds per epoch (x FLOP bound of {bound:.3f} s at {rate / 1e9:.0f} GFLOP/s, "
          f"{args.threads} thread(s); fastest of {args.rounds} interleaved rounds)\n")
    print("| batch | " + " | ".join(loops) + " | blog / harness |")
    print("|---:|" + "---:|" * (len(loops) + 1))
    for bs in sizes:
        cells = [f"{best[n, bs]:.2f} (x{best[n, bs] / bound:.1f})" for n in loops]
        ratio = f"{best['blog', bs] / best['harness', bs]:.2f}" if {"blog", "harness"} <= set(loops) else "-"
        print(f"| {bs} | " + " | ".join(cells) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
