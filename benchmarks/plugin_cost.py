"""What installing recipe-harness costs an unrelated pytest run, and the sanity suite's wall time.

    python benchmarks/plugin_cost.py                         # 15 interleaved rounds, then 5 sanity rounds
    python benchmarks/plugin_cost.py --baseline /work/baseline --rounds 15 --sanity-rounds 5

Start-up: a scratch project holding one one-line test, run in a fresh process per measurement,
the arms interleaved round by round (so a load change hits every arm alike):

- `plugin`: this checkout's plugin, loaded through its pytest11 entry point;
- `disabled`: the same run with `-p no:recipe_harness`;
- `before` (with --baseline DIR): the code before the plugin was made inert, run as it was
  installed then (PYTHONPATH=DIR, its entry point `suites.plugin` loaded with `-p`).

Each run reports wall seconds, the child's CPU seconds (user + system; steadier than wall on a
shared machine) and its peak RSS, from os.wait4. Other installed plugins that
import torch (pytest-torch) are disabled in every arm, so the difference is ours.

Sanity: `pytest -m sanity suites/` on the default recipe, this checkout against the baseline,
interleaved, median of --sanity-rounds each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMON = ["-p", "no:pytest_torch", "-p", "no:cacheprovider", "-p", "no:randomly", "-q"]


def timed(cmd, cwd, env) -> tuple:
    """(wall seconds, CPU seconds, peak RSS MiB, return code) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def env_with(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def startup(rounds: int, baseline) -> dict:
    with tempfile.TemporaryDirectory(prefix="plugin-cost-") as tmp:
        project = Path(tmp)
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
        pytest = [sys.executable, "-m", "pytest", *COMMON, "test_one.py"]
        arms = {"plugin": (pytest, env_with()), "disabled": (pytest + ["-p", "no:recipe_harness"], env_with())}
        if baseline:
            arms["before"] = (pytest + ["-p", "no:recipe_harness", "-p", "suites.plugin"],
                              env_with(PYTHONPATH=str(baseline)))
        for cmd, env in arms.values():  # warm the file cache once per arm
            subprocess.run(cmd, cwd=project, env=env, capture_output=True)
        results = {name: [] for name in arms}
        for _ in range(rounds):
            for name, (cmd, env) in arms.items():
                wall, cpu, rss, code = timed(cmd, project, env)
                assert code == 0, f"{name}: exit {code}: {' '.join(cmd)}"
                results[name].append((wall, cpu, rss))
        return results


def sanity(rounds: int, baseline) -> dict:
    arms = {"after": (HERE, env_with())}
    if baseline:
        arms["before"] = (Path(baseline), env_with(PYTHONPATH=str(baseline)))
    results = {name: [] for name in arms}
    for _ in range(rounds):
        for name, (root, env) in arms.items():
            extra = ["-p", "no:recipe_harness", "-p", "suites.plugin"] if name == "before" else []
            cmd = [sys.executable, "-m", "pytest", *COMMON, *extra, "-m", "sanity", "suites/"]
            wall, cpu, rss, code = timed(cmd, root, env)
            assert code == 0, f"{name}: exit {code}: {' '.join(cmd)} in {root}"
            results[name].append((wall, cpu, rss))
    return results


def summary(results: dict, reference: str) -> None:
    """Median wall and CPU seconds (and their ratio to the reference arm) and peak RSS per arm."""
    base_wall = statistics.median(w for w, _, _ in results[reference])
    base_cpu = statistics.median(c for _, c, _ in results[reference])
    for name, runs in results.items():
        wall, cpu, rss = (statistics.median(col) for col in zip(*runs))
        print(f"  {name:<9} wall {wall:6.3f} s (x{wall / base_wall:.2f})  CPU {cpu:6.3f} s (x{cpu / base_cpu:.2f})  "
              f"peak RSS {rss:5.0f} MiB   [wall min {min(w for w, _, _ in runs):.3f}, max {max(w for w, _, _ in runs):.3f}]")
    print(f"  (ratios against {reference}; medians of {len(results[reference])} runs each)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--sanity-rounds", type=int, default=5)
    p.add_argument("--baseline", default=None, help="a checkout of the code before the change (its own folder)")
    args = p.parse_args(argv)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min); cores {os.cpu_count()}")
    print(f"one-line unrelated test, {args.rounds} interleaved rounds:")
    summary(startup(args.rounds, args.baseline), "disabled")
    if args.sanity_rounds:
        print(f"pytest -m sanity on the default recipe, {args.sanity_rounds} interleaved rounds:")
        summary(sanity(args.sanity_rounds, args.baseline), "before" if args.baseline else "after")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
