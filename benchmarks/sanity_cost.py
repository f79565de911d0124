"""What the sanity suite costs on stock architectures, side by side with pytest-torch's checks.

    .venv/bin/pip install pytest-torch                  # for the measurement only (not a dependency)
    .venv/bin/python benchmarks/sanity_cost.py          # every stock model, writes docs/sanity-cost.md
    .venv/bin/python benchmarks/sanity_cost.py --models resnet18 --out -    # one model, to stdout

For each model (random weights, small inputs, its usual optimizer) and in one process per tool,
interleaved model by model (which tool runs first alternates) so load from elsewhere hits both alike:

- ours: `pytest -m sanity --recipe <model> --harness-durations=0` in a subprocess; the suite's
  own cost table gives the checks' seconds (session set-up excluded) and the same seconds in
  training steps of the model at its recipe's batch size (measured once in that session).
- pytest-torch: its inference contract and its training checks (gradients finite, every
  parameter gets a gradient, optimizer coverage, loss decreases, overfits one batch) on the same
  model and the same 64-sample batch, timed in a subprocess after the model is built.
- wall: `time pytest -m sanity` on the default recipe (digits28), start-up included.

The models come from tests/gallery/stock.py when it exists (the stock-architecture gallery);
otherwise the four below. The budget: at most BUDGET_STEPS training steps per model.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import Recipe  # noqa: E402
from harness.data import synthetic  # noqa: E402
from harness.suites.budget import BUDGET_STEPS  # noqa: E402

PYTHON = sys.executable


# --- the fallback stock gallery (random weights, small inputs) ------------------------------------

def _data(shape):
    return partial(synthetic, n_train=1024, n_val=256, n_test=0, shape=shape, num_classes=10)


def _sgd(params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)


def _adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.05)


def _resnet18():
    import torchvision
    return torchvision.models.resnet18(num_classes=10)


def _mobilenet_v3_small():
    import torchvision
    return torchvision.models.mobilenet_v3_small(num_classes=10)


def _squeezenet():
    import torchvision
    return torchvision.models.squeezenet1_1(num_classes=10)


def _resnet10t():
    import timm
    return timm.create_model("resnet10t", num_classes=10, pretrained=False)


FALLBACK = {
    "resnet18": Recipe(model=_resnet18, data=_data((3, 32, 32)), num_classes=10, optimizer=_sgd, lr=0.05,
                       batch_size=128, name="resnet18"),
    "mobilenet_v3_small": Recipe(model=_mobilenet_v3_small, data=_data((3, 32, 32)), num_classes=10,
                                 optimizer=_adamw, lr=1e-3, batch_size=128, name="mobilenet_v3_small"),
    "squeezenet1_1": Recipe(model=_squeezenet, data=_data((3, 32, 32)), num_classes=10, optimizer=_sgd,
                            lr=0.01, batch_size=128, name="squeezenet1_1"),
    "timm_resnet10t": Recipe(model=_resnet10t, data=_data((3, 32, 32)), num_classes=10, optimizer=_sgd,
                             lr=0.05, batch_size=128, name="timm_resnet10t"),
}


def stock_recipes() -> dict:
    """name -> (spec for --recipe, Recipe): the stock gallery's recipes, or the fallback four."""
    stock = ROOT / "tests" / "gallery" / "stock.py"
    if stock.exists():
        from tests.gallery import stock as module
        names = getattr(module, "STOCK", None) or [n for n in dir(module) if isinstance(getattr(module, n), Recipe)]
        return {n: (f"{stock}:{n}", getattr(module, n)) for n in names}
    return {n: (f"{Path(__file__).resolve()}:FALLBACK_{n.upper()}", r) for n, r in FALLBACK.items()}


for _name, _recipe in FALLBACK.items():  # addressable as --recipe benchmarks/sanity_cost.py:FALLBACK_RESNET18
    globals()[f"FALLBACK_{_name.upper()}"] = _recipe


# --- ours --------------------------------------------------------------------------------------------

TOTAL = re.compile(r"total ([\d.]+) s = ([\d.]+) training steps of the recipe \(one step ([\d.]+) ms wall, "
                   r"([\d.]+) ms CPU at batch (\d+)")
SETUP = re.compile(r"session set-up .*?: ([\d.]+) s")
OUTCOME = re.compile(r"^=* ?(\d+ (?:passed|failed|error).*?) in [\d.]+s", re.M)
ROW = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+([\d.-]+)\s+\d+\s+\d+\s+\d+\s+\S*::(\S+)", re.M)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ours(spec: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0, c0 = time.perf_counter(), child_cpu()
    proc = subprocess.run([PYTHON, "-m", "pytest", "--pyargs", "harness.suites", "-m", "sanity", "--recipe", spec,
                           "--harness-durations=0", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:pytest_torch",
                           "-q", "-rfE"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, child_cpu() - c0
    out = proc.stdout
    total, setup, outcome = TOTAL.search(out), SETUP.search(out), OUTCOME.search(out)
    rows = [(name, float(w), float(c), float(st) if st != "-" else None) for w, c, st, name in ROW.findall(out)]
    failures = re.findall(r"^(?:FAILED|ERROR) \S+ - (.*)$", out, re.M)
    return {"seconds": float(total.group(1)) if total else None, "steps": float(total.group(2)) if total else None,
            "step_ms": float(total.group(3)) if total else None, "step_cpu_ms": float(total.group(4)) if total else None,
            "batch": int(total.group(5)) if total else None, "cpu": sum(r[2] for r in rows),
            "setup": float(setup.group(1)) if setup else None, "wall": wall, "process_cpu": cpu,
            "outcome": outcome.group(1) if outcome else out[-300:], "failures": failures[:5],
            "slowest": [(name, st) for name, _, _, st in rows[:3]]}


# --- pytest-torch --------------------------------------------------------------------------------------

PYTEST_TORCH = r"""
import copy, json, sys, time, torch
sys.path.insert(0, {root!r})
from benchmarks.sanity_cost import stock_recipes
from harness.suites.budget import sample_indices, rows
import pytest_torch as pt

spec, recipe = stock_recipes()[{name!r}]
torch.manual_seed(0)
model = recipe.build_model()
data = recipe.load_data()
x, y = rows(data.train, sample_indices(len(data.train[1]), 64, 0))
opt = recipe.make_optimizer(model)
from harness.recipe import unwrap_outputs  # {{'out': ...}} (torchvision segmentation) -> the tensor, as ours gets
loss = lambda out: recipe.compute_loss(out if isinstance(out, torch.Tensor) else unwrap_outputs(out), y)
times, failures = {{}}, []
cpu = {{}}
def timed(name, fn):
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        fn()
    except Exception as e:
        failures.append(f"{{name}}: {{str(e).splitlines()[0]}}")
    times[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
timed("inference_contract", lambda: pt.check_inference_contract(copy.deepcopy(model).eval(), x))
timed("gradients_finite", lambda: pt.assert_gradients_finite(model, x, loss))
timed("all_params_receive_grad", lambda: pt.assert_all_params_receive_grad(model, x, loss))
timed("optimizer_coverage", lambda: pt.assert_optimizer_coverage(model, opt))
timed("loss_decreases", lambda: pt.assert_loss_decreases(model, x, loss))
timed("overfits_one_batch", lambda: pt.assert_overfits_one_batch(model, x, loss))
print(json.dumps({{"seconds": sum(times.values()), "cpu": sum(cpu.values()), "times": cpu, "failures": failures}}))
"""


def run_pytest_torch(name: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([PYTHON, "-c", PYTEST_TORCH.format(root=str(ROOT), name=name)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"seconds": None, "cpu": None, "times": {}, "failures": proc.stderr.strip().splitlines()[-1:]}


def default_recipe_wall(threads: int) -> tuple:
    """(wall, CPU) seconds of `pytest -m sanity` on the default recipe, start-up included."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0, c0 = time.perf_counter(), child_cpu()
    subprocess.run([PYTHON, "-m", "pytest", "-m", "sanity", "-q", "-p", "no:cacheprovider", "-p", "no:pytest_torch"],
                   cwd=ROOT, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, child_cpu() - c0


# --- the report ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="", help="comma-separated names (default: all)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run (1: CPU time is the work)")
    p.add_argument("--out", default=str(ROOT / "docs" / "sanity-cost.md"), help="markdown file, or - for stdout")
    p.add_argument("--no-pytest-torch", action="store_true")
    p.add_argument("--default-runs", type=int, default=3, help="timed runs of the default recipe (0: none)")
    args = p.parse_args(argv)
    recipes = stock_recipes()
    names = [n for n in args.models.split(",") if n] or list(recipes)
    load = os.getloadavg()
    results = {}
    for i, name in enumerate(names):
        spec, _ = recipes[name]
        before = os.getloadavg()[0]
        skip = args.no_pytest_torch
        if i % 2 and not skip:  # the order alternates model by model, so neither tool always runs first
            theirs = run_pytest_torch(name, args.threads)
        ours = run_ours(spec, args.threads)
        if not i % 2 or skip:
            theirs = {"seconds": None, "cpu": None} if skip else run_pytest_torch(name, args.threads)
        ours["load"] = before  # `uptime`'s 1-minute load average as this model's pair of runs started
        print(f"{name}: ours {ours['cpu']:.1f} s CPU = {ours['steps']} steps ({ours['outcome']}); "
              f"pytest-torch {theirs['cpu']} s CPU; load {before:.1f}", file=sys.stderr, flush=True)
        results[name] = ours, theirs
        write(args.out, report(results, load, [], args.threads))  # partial results survive an interrupted run
    runs = [default_recipe_wall(args.threads) for _ in range(args.default_runs)]
    write(args.out, report(results, load, runs, args.threads))
    return 0


def write(out, text):
    if out == "-":
        print(text)
    else:
        Path(out).write_text(HEADER + text)


def report(results, load, runs, threads) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
             f"OMP_NUM_THREADS={threads}, load average {load[0]:.1f} at the start and "
             f"{os.getloadavg()[0]:.1f} at the end (2 cores, shared with other jobs).\n"]
    lines.append("| model | ours: training steps (budget %d) | ours: CPU s | one step: CPU ms (wall ms), batch | "
                 "pytest-torch: CPU s | pytest-torch in steps | ours / pytest-torch (CPU) | ours: outcome | "
                 "ours: costliest checks (steps) | load |" % BUDGET_STEPS)
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for name, (ours, theirs) in results.items():
        ok = ours["cpu"] and theirs.get("cpu")
        ratio = f"{ours['cpu'] / theirs['cpu']:.2f}" if ok else "-"
        theirs_steps = (f"{theirs['cpu'] / (ours['step_cpu_ms'] / 1e3):.0f}" if ok and ours["step_cpu_ms"] else "-")
        slow = ", ".join(f"{n.replace('test_', '')} {s:.0f}" for n, s in ours["slowest"] if s is not None)
        lines.append(f"| {name} | {ours['steps']} | {ours['cpu']:.1f} | {ours['step_cpu_ms']} ({ours['step_ms']}), "
                     f"{ours['batch']} | {theirs.get('cpu') and round(theirs['cpu'], 1)} | {theirs_steps} | {ratio} | "
                     f"{ours['outcome']} | {slow} | {ours.get('load', float('nan')):.1f} |")
    lines.append("")
    measured = [(o, t) for o, t in results.values() if o["steps"] is not None]
    within = sum(o["steps"] <= BUDGET_STEPS for o, _ in measured)
    compared = [(o, t) for o, t in measured if o["cpu"] and t.get("cpu")]
    faster = sum(o["cpu"] < t["cpu"] for o, t in compared)
    lines.append(f"Budget ({BUDGET_STEPS} steps) held on {within} of {len(results)} models; faster than pytest-torch "
                 f"(CPU, same run) on {faster} of {len(compared)}"
                 + (f" (ours / pytest-torch: median {sorted(o['cpu'] / t['cpu'] for o, t in compared)[len(compared) // 2]:.2f}, "
                    f"worst {max(o['cpu'] / t['cpu'] for o, t in compared):.2f})" if compared else "") + ".\n")
    if runs:
        lines.append(f"Default recipe, `pytest -m sanity` (start-up included), {len(runs)} runs: wall "
                     + ", ".join(f"{w:.1f}" for w, _ in runs) + " s; CPU " + ", ".join(f"{c:.1f}" for _, c in runs) + " s.")
    failures = {n: (o["failures"], t.get("failures")) for n, (o, t) in results.items() if o["failures"] or t.get("failures")}
    if failures:
        lines.append("\nFailures (ours; pytest-torch):\n")
        for n, (ours_f, theirs_f) in failures.items():
            lines.append(f"- {n}: {ours_f or '-'}; {theirs_f or '-'}")
    return "\n".join(lines) + "\n"


HEADER = """# What the sanity suite costs on stock architectures

`benchmarks/sanity_cost.py` (see its docstring): each model's sanity suite with its own cost
table (`--harness-durations=0`), and pytest-torch's checks on the same model and batch, in one
run. "In training steps" divides the suite's check time (session set-up excluded) by one
training step of the model at its recipe's batch size, measured in the same session.

"""

if __name__ == "__main__":
    sys.exit(main())
