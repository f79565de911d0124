"""The fit loop on a GPU at small batch sizes: bare loop, Lightning, harness eager, harness with a
CUDA graph, harness with torch.compile(mode="reduce-overhead"), side by side; then the CUDA-path tests.

    python benchmarks/gpu_fit.py                 # about 3 minutes on an H200
    python benchmarks/gpu_fit.py --models mlp --batch-sizes 32 --no-tests     # a quick look

For each model (compare.py's: the notebook's MLP, the small ResNet-style CNN, the transformer
encoder) and batch size, each loop trains two epochs on synthetic data already on the GPU (plain
SGD lr 0.01, like benchmarks/compare.py) and the table shows the second epoch's seconds (steady
state) with the first's in brackets (CUDA-graph capture and compilation are paid there). The
harness runs through `harness.fit` with HARNESS_CUDA_STEP=eager|graphs|compile. torch.compile
runs only at the smallest batch size (its compilation takes tens of seconds per shape).
Exits 1 if CUDA is missing or the CUDA-path tests fail.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import compare  # noqa: E402
from harness.fit import fit  # noqa: E402
from harness.recipe import Data  # noqa: E402

LR = 0.01
SAMPLES = {"mlp": 16_384, "cnn": 8_192, "transformer": 8_192}
DEVICE = "cuda"  # --device cpu: a dry run of the script itself (graphs and compile are then eager)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def plain(build, x, y, bs):
    """The bare loop: randperm, index, zero_grad/forward/backward/step; seconds of each of two epochs."""
    torch.manual_seed(0)
    model = build().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    seconds = []
    for _ in range(2):
        sync()
        t0 = time.perf_counter()
        order = torch.randperm(len(y), device=DEVICE)
        for i in range(0, len(y), bs):
            idx = order[i:i + bs]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sync()
        seconds.append(time.perf_counter() - t0)
    return seconds


def harness(mode):
    def run(build, x, y, bs):
        os.environ["HARNESS_CUDA_STEP"] = mode
        torch.manual_seed(0)
        hist = fit(build(), Data(train=(x, y), val=None), lr=LR, batch_size=bs, epochs=2, device=DEVICE,
                   num_classes=10)
        return hist.seconds  # fit reads the loss on the host at the end of each epoch: synchronised
    return run


def lightning(build, x, y, bs):
    import logging
    import warnings

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = build()

        def training_step(self, batch, _):
            xb, yb = batch
            return F.cross_entropy(self.model(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    class Timer(L.Callback):
        seconds: list = []

        def on_train_epoch_start(self, trainer, module):
            sync()
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync()
            self.seconds.append(time.perf_counter() - self.t0)

    torch.manual_seed(0)
    timer = Timer()
    timer.seconds = []
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True)
    trainer = L.Trainer(max_epochs=2, accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(Module(), loader)
    return timer.seconds


LOOPS = {"plain": plain, "lightning": lightning, "harness eager": harness("eager"),
         "harness graphs": harness("graphs"), "harness compile": harness("compile")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,cnn,transformer")
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--no-tests", action="store_true")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run this script")
    p.add_argument("--samples", type=int, default=None, help="training samples per model (default: per model)")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_fit: needs CUDA (no GPU visible to torch)", file=sys.stderr)
        return 1
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    try:
        import lightning  # noqa: F401
        loops = list(LOOPS)
    except ImportError:
        print("lightning: skipped, not installed (pip install lightning)", file=sys.stderr)
        loops = [n for n in LOOPS if n != "lightning"]
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run)"
    print(f"{gpu}, torch {torch.__version__}; seconds of epoch 2 (epoch 1 in brackets)\n")
    print("| model | batch | steps/epoch | " + " | ".join(loops) + " | eager / graphs | plain / graphs |")
    print("|---|---:|---:|" + "---:|" * (len(loops) + 2))
    t_start = time.perf_counter()
    for name in args.models.split(","):
        build, make_data, _, _ = compare.MODELS[name]
        x, y = make_data(args.samples or SAMPLES[name])
        x, y = x.to(DEVICE), y.to(DEVICE)
        for bs in sizes:
            cells, best = [], {}
            for loop in loops:
                if loop == "harness compile" and bs != min(sizes):
                    cells.append("-")
                    continue
                try:
                    seconds = LOOPS[loop](build, x, y, bs)
                    best[loop] = seconds[-1]
                    cells.append(f"{seconds[-1]:.3f} ({seconds[0]:.2f})")
                except Exception as e:  # noqa: BLE001 - one loop failing must not hide the others
                    cells.append(f"failed: {type(e).__name__}")
                    print(f"  {name} {bs} {loop}: {type(e).__name__}: {e}", file=sys.stderr)
            g = best.get("harness graphs")
            ratio = lambda k: f"{best[k] / g:.2f}" if g and k in best else "-"  # noqa: E731
            print(f"| {name} | {bs} | {-(-len(y) // bs)} | " + " | ".join(cells) +
                  f" | {ratio('harness eager')} | {ratio('plain')} |", flush=True)
    print(f"\nbenchmark: {time.perf_counter() - t_start:.0f} s")
    if args.no_tests:
        return 0
    os.environ.pop("HARNESS_CUDA_STEP", None)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                            "tests/test_graphs.py"], cwd=ROOT)
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
