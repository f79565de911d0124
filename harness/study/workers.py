"""Worker processes on this machine: K processes, each running the study's trial loop with
cores // K torch threads, that die with their parent.

    from harness.study.workers import run_workers
    run_workers(job, jobs=2, threads=1)      # returns when the study has nothing left to run

    python -m harness.study.workers JOB_JSON THREADS PARENT_PID   # what each worker runs

Each worker is a fresh `python -m harness.study.workers` (no forkserver, no multiprocessing
resource tracker: nothing is left behind to outlive the parent). It joins the study through
its storage exactly as a worker on another machine would (harness.study.trials). It dies with
its parent: on Linux prctl(PR_SET_PDEATHSIG) sends it SIGTERM when the parent dies, even by
SIGKILL; elsewhere a thread polls the parent's pid every second. SIGTERM and SIGINT put the
running trial back in the queue before the worker exits. Threads are capped (two processes of
two threads each on two cores run about 9x slower at batch 8 than two of one thread each).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness.study.trials import Job, TrialError, run_trials

STOP_GRACE = 5.0  # seconds a worker gets to re-enqueue its trial after SIGTERM before SIGKILL


def run_workers(job: Job, jobs: int, threads: int) -> None:
    """Start `jobs` workers and wait for them; a worker's error stops the others and is raised
    (TrialError, its one line); an interrupt of this process stops them all."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(jobs)]
    command = [sys.executable, "-m", "harness.study.workers", job.to_json(), str(threads), str(os.getpid())]
    procs = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env) for log in logs]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None:
                raise TrialError(_last_error(logs[failed], codes[failed]))
            if all(c == 0 for c in codes):
                return
            time.sleep(0.2)
    finally:
        stop(procs)
        for log in logs:
            log.close()


def stop(procs: list) -> None:
    """SIGTERM the workers still running, give them STOP_GRACE seconds, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _last_error(log, code: int) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    errors = [line.split("harness: error: ", 1)[1] for line in lines if "harness: error: " in line]
    if errors:
        return errors[-1]
    tail = lines[-1] if lines else "no output"
    return f"a worker process exited with status {code}: {tail}"


# --- inside a worker -----------------------------------------------------------------------------

def die_with_parent(parent: int) -> None:
    """Get SIGTERM when `parent` dies (PR_SET_PDEATHSIG on Linux, a polling thread elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


def _interrupt(signum, frame):
    """SIGTERM/SIGINT: put the trial back (run_trials) and go; SIGALRM ends the process in 5 s if that
    hangs (a database that does not answer), so a worker never outlives its parent by long."""
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(5)
    raise KeyboardInterrupt


def main(argv: list) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    job, threads, parent = Job.from_json(argv[1]), int(argv[2]), int(argv[3])
    die_with_parent(parent)
    import torch

    from harness import runtime

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    runtime.set_threads_override(threads)  # fit must not measure its way past the worker's share
    signal.signal(signal.SIGINT, _interrupt)
    try:
        run_trials(job)
    except KeyboardInterrupt:
        sys.stderr.flush()
        os._exit(130)  # skip interpreter teardown (seconds for torch on a loaded machine)
    except Exception as e:  # TrialError, RecipeError, a storage error: one line for the parent to show
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"harness: error: {line}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
