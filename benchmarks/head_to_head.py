"""The head-to-head: the public bug gallery and the healthy recipes through our sanity suite and
through torchtest2, neural-net-checklist and pytest-torch; caught / missed / false alarms per tool.

    .venv/bin/pip install torchtest2 neural-net-checklist pytest-torch     # not project dependencies
    python benchmarks/head_to_head.py                   # writes docs/head-to-head.md (about 15 min on 2 CPUs)
    python benchmarks/head_to_head.py --only SGD_LR_ON_ADAM,LSTM --out /tmp/h2h.md

Every tool gets what it can take from the same recipe: the model, one training batch of 64 from
the recipe's train split, the recipe's loss, and (where the tool accepts one) the recipe's own
optimizer. Ours runs as a user runs it (`pytest --pyargs harness.suites -m sanity --recipe ...`,
one process per recipe). A bug counts as caught when the tool reports any failure on it; for ours
the table also says whether the failure names the expected symptom. A healthy recipe with any
failure is a false alarm. The other tools' defaults are used, with their gradient checks turned on.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.batching import as_pair, subset, take  # noqa: E402
from harness.recipes import load_recipe  # noqa: E402
from tests.gallery import bugs, healthy  # noqa: E402

GALLERY = ROOT / "tests" / "gallery"
TOOLS = ("recipe-harness", "torchtest2", "neural-net-checklist", "pytest-torch")
KEEP = "<!-- recorded by hand below: kept when this script rewrites the file -->"


def cases(only=None):
    """(name, spec, expected symptom or None for a healthy recipe)."""
    out = [(n, f"{GALLERY / 'bugs.py'}:{n}", s) for n, s in bugs.CAUGHT_BY.items()]
    out += [(n, f"{GALLERY / 'healthy.py'}:{n}", None) for n in healthy.HEALTHY]
    out += [("DIGITS28 (default)", "digits28", None)]
    return [c for c in out if not only or c[0].split()[0] in only]


def batch_of(recipe, n=64, seed=0):
    data = recipe.load_data(validate=False)
    x, y = as_pair(subset(data.train, 2 * n, seed))
    return take(x, slice(0, n)), take(y, slice(0, n))


# --- ours ---------------------------------------------------------------------------------------

def run_ours(spec):
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "harness.suites", "-m", "sanity", "--recipe", spec,
           "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:pytest_torch"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1")).stdout
    symptoms = sorted(set(re.findall(r"^E?\s*\[([a-z_]+)\] ", out, re.M)) | set(re.findall(r"Failed: \[([a-z_]+)\]", out)))
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", out)) else 0
    return failed > 0, symptoms


# --- torchtest2 ---------------------------------------------------------------------------------

def run_torchtest2(recipe):
    import torchtest2
    torch.manual_seed(0)
    model = recipe.build_model()
    x, y = batch_of(recipe)
    report = torchtest2.check_model(model, x, y, loss_fn=recipe.compute_loss,
                                    optimizer=recipe.make_optimizer(model), gradcheck=True)
    bad = [r.name for r in report if str(r.status) == "FAIL"]
    return bool(bad), bad


# --- neural-net-checklist -----------------------------------------------------------------------

def run_checklist(recipe):
    from neural_net_checklist import torch_diagnostics as nnc
    x, y = batch_of(recipe)
    classes = getattr(recipe.task, "num_classes", None) or 2
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(0)
            nnc.assert_all_for_classification_cross_entropy_loss(recipe.build_model, (x, y), num_classes=classes,
                                                                 device="cpu")
        return False, []
    except Exception as e:  # AssertionError from a check, or the tool crashing on the model
        frames = [f.name for f in traceback.extract_tb(e.__traceback__) if f.name.startswith("assert_")]
        return True, [frames[-1] if frames else type(e).__name__]


# --- pytest-torch -------------------------------------------------------------------------------

def run_pytest_torch(recipe):
    import pytest_torch as pt
    x, y = batch_of(recipe)
    loss = (lambda out: recipe.compute_loss(out, y))
    failed = []
    checks = {
        "assert_gradients_finite": lambda m: pt.assert_gradients_finite(m, x, loss),
        "assert_all_params_receive_grad": lambda m: pt.assert_all_params_receive_grad(m, x, loss),
        "assert_optimizer_coverage": lambda m: pt.assert_optimizer_coverage(m, recipe.make_optimizer(m)),
        "assert_batch_invariant": lambda m: pt.assert_batch_invariant(m.eval(), x),
        "assert_loss_decreases": lambda m: pt.assert_loss_decreases(
            m, x, loss, optimizer=lambda params: recipe.optimizer(params, recipe.lr)),
        "assert_overfits_one_batch": lambda m: pt.assert_overfits_one_batch(m, x, loss),
    }
    for name, check in checks.items():
        torch.manual_seed(0)
        try:
            check(recipe.build_model())
        except Exception:
            failed.append(name)
    return bool(failed), failed


RUNNERS = {"torchtest2": run_torchtest2, "neural-net-checklist": run_checklist, "pytest-torch": run_pytest_torch}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated recipe names")
    parser.add_argument("--out", default=str(ROOT / "docs" / "head-to-head.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name, spec, expected in cases(set(filter(None, args.only.split(",")))):
        recipe = load_recipe(spec)
        row = {"name": name, "expected": expected}
        t = time.perf_counter()
        flagged, symptoms = run_ours(spec)
        row["recipe-harness"] = (flagged, symptoms, time.perf_counter() - t)
        for tool, run in RUNNERS.items():
            t = time.perf_counter()
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    flagged, found = run(recipe)
            except Exception as e:  # the tool could not run on this recipe at all
                flagged, found = True, [f"crashed: {type(e).__name__}"]
            row[tool] = (flagged, found, time.perf_counter() - t)
        rows.append(row)
        print(name, {k: (v[0], v[1][:3]) for k, v in row.items() if k in TOOLS}, flush=True)
    out = Path(args.out)
    kept = out.read_text().partition(KEEP)[1:] if out.exists() else ("", "")
    out.write_text(render(rows, " ".join(sys.argv[1:]) if argv is None else " ".join(argv)) + "".join(kept))  # the hand-recorded sections after KEEP stay
    print(f"wrote {args.out}")


def render(rows, args: str = "") -> str:
    bug_rows = [r for r in rows if r["expected"]]
    ok_rows = [r for r in rows if not r["expected"]]
    lines = ["# Head-to-head: the bug gallery through four tools", "",
             "Reproduce: `.venv/bin/pip install torchtest2 neural-net-checklist pytest-torch` (not project "
             "dependencies), then `python benchmarks/head_to_head.py` (writes this file).", "",
             "Each tool gets the recipe's model, one training batch of 64, the recipe's loss and, where it takes "
             "one, the recipe's optimizer; ours runs `pytest -m sanity --recipe ...` as a user would. "
             "Caught: the tool reports at least one failure on a planted bug (for ours, `right name`: the failure "
             "names the expected symptom). False alarm: any failure on a healthy recipe.", "",
             f"This run: `python benchmarks/head_to_head.py {args}`".rstrip() + f" ({len(rows)} recipes).", "",
             "| tool | caught | right name | missed | false alarms | seconds |", "|---|---|---|---|---|---|"]
    for tool in TOOLS:
        caught = sum(r[tool][0] for r in bug_rows)
        right = sum(r["expected"] in r[tool][1] for r in bug_rows) if tool == "recipe-harness" else None
        alarms = sum(r[tool][0] for r in ok_rows)
        seconds = sum(r[tool][2] for r in rows)
        lines.append(f"| {tool} | {caught}/{len(bug_rows)} | {right if right is not None else 'n/a'} | "
                     f"{len(bug_rows) - caught} | {alarms}/{len(ok_rows)} | {seconds:.0f} |")
    lines += ["", "## Per recipe", "", "`-` = nothing reported; otherwise the failing checks (ours: symptoms).", "",
              "| recipe | expected | " + " | ".join(TOOLS) + " |", "|---|---|" + "---|" * len(TOOLS)]
    for r in rows:
        cells = [", ".join(r[t][1][:4]) if r[t][0] else "-" for t in TOOLS]
        lines.append(f"| {r['name']} | {r['expected'] or 'healthy'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
