"""Multi-seed robustness: run the sanity and recipe suites on several recipes with many seeds.

    python -m harness.robustness --seeds 20 -n 2
    python -m harness.robustness --seeds 2 --recipes digits28 --suites sanity --out robustness.json

Each (recipe, suite, seed) is one `pytest --pyargs harness.suites -m SUITE --recipe R --harness-seed S` in its
own process with one torch thread; `-n` runs that many at once. Prints one line per finished
run, then a table of seeds passed per recipe and suite, the failures (with the command that
re-runs each) and the total time. Exits 1 if any run failed, so it can gate CI. `--out`
writes the same summary as JSON, atomically.

The default recipes are digits28 and, when tests/gallery/healthy.py is under the current
folder, the healthy gallery (SMALL_CNN, BN_DROPOUT_MLP_ADAM, LSTM, FROZEN_FIRST_LAYER).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

HEALTHY_FILE = Path("tests/gallery/healthy.py")
HEALTHY = ("SMALL_CNN", "BN_DROPOUT_MLP_ADAM", "LSTM", "FROZEN_FIRST_LAYER")
SUITES = ("sanity", "recipe")


@dataclass
class Outcome:
    """One pytest run: a recipe, a suite, a seed, and what came of it."""
    recipe: str
    suite: str
    seed: int
    returncode: int = -1
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0  # wall time of the pytest process
    failures: list = field(default_factory=list)  # "test_name: first line of the message"
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.errors == 0 and self.passed > 0


def default_recipes() -> list:
    recipes = ["digits28"]
    if HEALTHY_FILE.is_file():
        recipes += [f"{HEALTHY_FILE}:{name}" for name in HEALTHY]
    return recipes


def pytest_command(recipe: str, suite: str, seed: int, junit: str = None) -> list:
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "harness.suites", "-m", suite, "--recipe", recipe,
           "--harness-seed", str(seed), "-p", "no:cacheprovider", "-p", "no:randomly", "-q"]
    return cmd + ([f"--junitxml={junit}"] if junit else [])


def run_one(recipe: str, suite: str, seed: int, timeout: float) -> Outcome:
    """Run one suite on one recipe with one seed, in a fresh process with one torch thread."""
    outcome = Outcome(recipe, suite, seed)
    outcome.command = " ".join(shlex.quote(a) for a in ["pytest"] + pytest_command(recipe, suite, seed)[3:])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    with tempfile.TemporaryDirectory(prefix="harness-robustness-") as tmp:
        junit = os.path.join(tmp, "junit.xml")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(pytest_command(recipe, suite, seed, junit), env=env, capture_output=True,
                                  text=True, timeout=timeout)
            outcome.returncode = proc.returncode
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        except subprocess.TimeoutExpired:
            outcome.returncode, tail = 124, [f"timed out after {timeout:g} s"]
        outcome.seconds = time.perf_counter() - t0
        _read_junit(junit, outcome)
    if not outcome.ok and not outcome.failures:
        outcome.failures = [" | ".join(tail)]  # a usage error or a crash: no per-test record
    return outcome


def _read_junit(path: str, outcome: Outcome) -> None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return
    for case in root.iter("testcase"):
        bad = case.find("failure")
        bad = bad if bad is not None else case.find("error")
        if bad is not None:
            if bad.tag == "failure":
                outcome.failed += 1
            else:
                outcome.errors += 1
            first = (bad.get("message") or "").strip().splitlines()[:1]
            outcome.failures.append(f"{case.get('name')}: {first[0] if first else bad.tag}"[:300])
        elif case.find("skipped") is not None:
            outcome.skipped += 1
        else:
            outcome.passed += 1


def run_all(recipes, suites, seeds, jobs: int = 1, timeout: float = 1800, stream=sys.stderr,
            on_outcome=None) -> list:
    """Every (recipe, suite, seed), `jobs` at a time, seed by seed (so a run cut short still
    covers every recipe for its first seeds), the slow recipe suite first within a seed.
    `on_outcome(outcomes_so_far)` is called after each run finishes."""
    todo = [(r, s, seed) for seed in seeds for s in sorted(suites, key=lambda s: s != "recipe") for r in recipes]
    outcomes, lock, start = [], threading.Lock(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_one, r, s, seed, timeout) for r, s, seed in todo]
        try:
            for future in as_completed(futures):
                o = future.result()
                with lock:
                    outcomes.append(o)
                    verdict = "ok  " if o.ok else "FAIL"
                    print(f"[{len(outcomes)}/{len(todo)}] {verdict} {o.suite:6} seed {o.seed:<3} {o.recipe} "
                          f"({o.passed} passed, {o.failed + o.errors} failed, {o.seconds:.0f} s; "
                          f"{time.perf_counter() - start:.0f} s total)", file=stream, flush=True)
                    if on_outcome:
                        on_outcome(list(outcomes))
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise
    order = {key: i for i, key in enumerate(todo)}
    return sorted(outcomes, key=lambda o: order[(o.recipe, o.suite, o.seed)])


def summarize(outcomes: list, seconds: float) -> dict:
    rows = {}
    for o in outcomes:
        row = rows.setdefault((o.recipe, o.suite), {"recipe": o.recipe, "suite": o.suite, "seeds": 0,
                                                    "seeds_passed": 0, "tests_passed": 0, "tests_failed": 0,
                                                    "seconds": 0.0, "failed_seeds": []})
        row["seeds"] += 1
        row["seeds_passed"] += o.ok
        row["tests_passed"] += o.passed
        row["tests_failed"] += o.failed + o.errors
        row["seconds"] += o.seconds
        if not o.ok:
            row["failed_seeds"].append(o.seed)
    return {"passed": all(o.ok for o in outcomes) and bool(outcomes), "runs": len(outcomes),
            "runs_passed": sum(o.ok for o in outcomes), "wall_seconds": seconds,
            "rows": list(rows.values()), "outcomes": [asdict(o) | {"ok": o.ok} for o in outcomes]}


def format_summary(summary: dict) -> str:
    head = ("recipe", "suite", "seeds passed", "tests passed", "tests failed", "process s")
    cells = [(r["recipe"], r["suite"], f"{r['seeds_passed']}/{r['seeds']}", str(r["tests_passed"]),
              str(r["tests_failed"]), f"{r['seconds']:.0f}") for r in summary["rows"]]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    failures = [o for o in summary["outcomes"] if not o["ok"]]
    for o in failures:
        lines.append(f"FAILED {o['suite']} seed {o['seed']} {o['recipe']}: {'; '.join(o['failures'])[:400]}")
        lines.append(f"  re-run: {o['command']}")
    verdict = "all passed" if summary["passed"] else f"{len(failures)} of {summary['runs']} runs FAILED"
    lines.append(f"{summary['runs_passed']}/{summary['runs']} runs passed ({verdict}) in "
                 f"{summary['wall_seconds']:.0f} s wall time")
    return "\n".join(lines)


# --- the command line -------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _names(text: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; give comma-separated names")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.robustness",
                                description="Run the suites on several recipes with many seeds.")
    p.add_argument("--seeds", type=_positive_int, default=20, help="how many seeds (default 20)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST .. FIRST+SEEDS-1 (default 0)")
    p.add_argument("--recipes", type=_names, default=None,
                   help="comma-separated --recipe specs (default: digits28 and tests/gallery/healthy.py's recipes)")
    p.add_argument("--suites", type=_names, default=list(SUITES), help="sanity,recipe (default both)")
    p.add_argument("-n", "--jobs", type=_positive_int, default=1, help="pytest processes at once (default 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run (default 1800)")
    p.add_argument("--out", default=None, help="write the summary as JSON here (atomically)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"--suites: unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    recipes = args.recipes or default_recipes()
    from harness.recipe import RecipeError
    from harness.recipes import load_recipe
    try:
        for spec in recipes:  # a typo fails here in one line, not 2 x seeds times in subprocesses
            load_recipe(spec)
    except RecipeError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"robustness: {len(recipes)} recipes x {len(args.suites)} suites x {args.seeds} seeds = "
          f"{len(recipes) * len(args.suites) * args.seeds} pytest runs, {args.jobs} at a time, 1 torch thread each",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    command = " ".join(["python -m harness.robustness"] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    total = len(recipes) * len(args.suites) * args.seeds

    def save(outcomes, complete=False):
        """The summary so far, rewritten atomically after every run: an interrupted run keeps its results."""
        summary = summarize(outcomes, time.perf_counter() - start)
        summary.update(command=command, planned_runs=total, complete=complete)
        if args.out:
            from harness.io import atomic_write_json
            atomic_write_json(args.out, summary)
        return summary

    from harness.io import OutputError
    try:
        save([])  # an unwritable --out fails now, not after an hour of runs
        outcomes = run_all(recipes, args.suites, seeds, jobs=args.jobs, timeout=args.timeout, on_outcome=save)
        summary = save(outcomes, complete=True)
    except OutputError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except KeyboardInterrupt:
        print(f"robustness: interrupted; finished runs are in {args.out or '(no --out given)'}", file=sys.stderr)
        return 130
    print(format_summary(summary))
    if args.out:
        print(f"wrote {args.out}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
