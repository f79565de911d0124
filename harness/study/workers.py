"""Worker processes on this machine: K processes, each running the study's trial loop with
cores // K torch threads, that die with their parent.

    from harness.study.workers import Pool
    with Pool("sqlite:///results/x/study.db") as pool:   # starts importing torch, Optuna, ... now
        recipe = load_recipe(spec)                       # ... while the caller does its own work
        pool.run(job, jobs=2, threads=1)                 # returns when the study has nothing left to run

    python -m harness.study.workers --pool LABEL PARENT_PID      # the pool process (job on stdin)
    python -m harness.study.workers JOB_JSON THREADS PARENT_PID  # one worker (where there is no fork)

On Linux a Pool is one fresh `python -m harness.study.workers --pool` process, started as soon
as the caller knows it will want workers. It imports torch (with torch._dynamo, which the
first optimizer step would import), Optuna, SQLAlchemy and the harness's engine while the
caller loads its recipe, runs no torch op and no thread, and then forks the K workers: each
is ready in milliseconds instead of paying those imports again (seconds each). The pool is
not multiprocessing's forkserver: it serves one study, waits for its K children, and nothing
else is started (no resource tracker). Elsewhere each worker is a fresh process.

Each worker joins the study through its storage exactly as a worker on another machine would
(harness.study.trials). Dying with the parent: the pool and each worker ask the kernel
(prctl(PR_SET_PDEATHSIG)) for SIGTERM when their parent dies, even by SIGKILL (elsewhere a
thread polls the parent's pid every second). SIGTERM and SIGINT put a worker's running trial
back in the queue before it exits; the pool passes SIGTERM on to its workers and waits for
them. Threads are capped (two processes of two threads each on two cores run about 9x slower
at batch 8 than two of one thread each).
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import RecipeError

if TYPE_CHECKING:  # imported where used: a Pool starts before its caller imports torch (harness.cli)
    from harness.study.trials import Job

STOP_GRACE = 5.0  # seconds a worker gets to re-enqueue its trial after SIGTERM before SIGKILL
RECIPE_ERROR = 2  # a worker's exit status when the recipe is at fault (the CLI's usage-error status)
PRELOAD = ("harness.study.trials", "harness.study.stacked", "harness.recipes", "torch._dynamo",
           "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "alembic.context", "alembic.op",
           "optuna.storages._rdb.models")  # what a worker imports, slowest first measured: seconds in all
POSTGRES_PRELOAD = ("sqlalchemy.dialects.postgresql", "psycopg")


def forks() -> bool:
    """Whether workers are forked from a pool process (Linux: fork, and PR_SET_PDEATHSIG)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class Pool:
    """The workers of one study on this machine (see the module's docstring). `label` names the
    study in the pool's command line (ps shows it; no password: the caller redacts it);
    `threads` is the likely threads per worker, for the libraries that read it at import;
    `start=False`: no pool process (run() then starts fresh workers, as where there is no fork)."""

    def __init__(self, label: str, threads: int = 1, start: bool = True):
        self.proc, self.log = None, None
        if start and forks():
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": "1"}  # OpenBLAS starts its threads at import: none before the fork
            self.log = tempfile.TemporaryFile(mode="w+")
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.study.workers", "--pool", label,
                                          str(os.getpid())], stdin=subprocess.PIPE, stdout=self.log,
                                         stderr=self.log, env=env, text=True)

    def run(self, job: Job, jobs: int, threads: int) -> None:
        """Run `jobs` workers until the study has nothing left; a worker's error stops the others
        and is raised (TrialError, its one line); an interrupt of this process stops them all."""
        from harness.study.trials import TrialError

        if self.proc is None:
            return run_workers(job, jobs, threads)
        with tempfile.TemporaryDirectory(prefix="harness-workers-") as logs:
            try:
                self.proc.stdin.write(json.dumps({"job": job.to_json(), "jobs": jobs, "threads": threads,
                                                  "logs": logs}) + "\n")
                self.proc.stdin.close()
            except OSError:  # the pool is gone (it could not import): its own output says why
                pass
            try:
                self.proc.wait()  # Ctrl-C or SIGTERM of this process interrupts the wait (KeyboardInterrupt)
                if self.proc.returncode < 0:  # the pool itself was killed (kill -9, the OOM killer)
                    raise TrialError(f"the worker pool (pid {self.proc.pid}) was killed by "
                                     f"{signal.Signals(-self.proc.returncode).name}; its workers put their trials "
                                     "back and finished trials are saved: run the same command again to resume")
                if self.proc.returncode:
                    logs_ = [Path(logs) / f"worker{i}.log" for i in range(jobs)]
                    _raise(_last_error([p for p in logs_ if p.exists()] + [self.log], self.proc.returncode),
                           self.proc.returncode)
            finally:
                self.close()

    def close(self) -> None:
        if self.proc is not None:
            # the pool's own backstop SIGKILLs its workers STOP_GRACE + 1 s after it stops them: wait past it,
            # or a worker blocked in C (a SQLite lock) outlived both when the pool was killed first
            stop([self.proc], grace=STOP_GRACE + 3)
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_workers(job: Job, jobs: int, threads: int) -> None:
    """Without fork: start `jobs` fresh worker processes and wait for them (as Pool.run)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(jobs)]
    command = [sys.executable, "-m", "harness.study.workers", job.to_json(), str(threads), str(os.getpid())]
    procs = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env) for log in logs]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None:
                _raise(_last_error([logs[failed]], codes[failed]), codes[failed])
            if all(c == 0 for c in codes):
                return
            time.sleep(0.2)
    finally:
        stop(procs)
        for log in logs:
            log.close()


def stop(procs: list, grace: float = STOP_GRACE) -> None:
    """SIGTERM the processes still running, give them `grace` seconds, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _raise(line: str, code: int):
    """A worker's error as TrialError, caused by a RecipeError when the recipe was at fault (the CLI
    then exits 2, as when the same error happens in its own process)."""
    from harness.study.trials import TrialError

    if code == RECIPE_ERROR:
        raise TrialError(line) from RecipeError(line)
    raise TrialError(line)


def _last_error(logs: list, code: int) -> str:
    """The last `harness: error:` line of the logs (paths or open files), else the last line."""
    lines = []
    for log in logs:
        if isinstance(log, Path):
            text = log.read_text(errors="replace")
        else:
            log.seek(0)
            text = log.read()
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.split("harness: error: ", 1)[1] for line in lines if "harness: error: " in line]
    if errors:
        return errors[-1]
    tail = lines[-1] if lines else "no output"
    return f"a worker process exited with status {code}: {tail}"


# --- inside the pool process ---------------------------------------------------------------------------

def serve(parent: int, label: str) -> int:
    """The pool: preload, read the job from stdin, fork the workers, wait for them. Exits with the
    first failed worker's status (the others are stopped), 130 when interrupted, else 0."""
    _pdeathsig(parent)
    for name in PRELOAD + (POSTGRES_PRELOAD if label.startswith("postgres") else ()):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional driver: the worker that needs it will say so
            pass
    print("ready", flush=True)  # for tests: the pool waits for its job (and has no thread: see below)
    line = sys.stdin.readline()
    if not line:  # the caller needed no workers after all
        return 0
    message = json.loads(line)
    from harness.study.trials import Job

    job, jobs, threads = Job.from_json(message["job"]), message["jobs"], message["threads"]
    # No torch.set_num_threads here: with more than one thread it starts OpenMP's threads at once, and a
    # child forked from a process with an OpenMP team can hang in its first parallel region. Each worker
    # sets its threads after the fork (_work).
    print(f"forking {jobs} workers; threads in this process: {len(os.listdir('/proc/self/task'))}", flush=True)
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)  # a signal between a fork and the child's handlers waits
    pids = []
    for i in range(jobs):
        pid = os.fork()
        if pid == 0:
            _forked(job, threads, Path(message["logs"]) / f"worker{i}.log", os.getppid())
        pids.append(pid)
    live, state = set(pids), {"code": 0}

    def stop_workers(signum=None, frame=None):
        if signum is not None:
            state["code"] = state["code"] or 130
        for pid in live:
            _kill(pid, signal.SIGTERM)
        signal.signal(signal.SIGALRM, lambda *_: [_kill(p, signal.SIGKILL) for p in live])
        _alarm_once(int(STOP_GRACE) + 1)  # a worker that hangs on its way out (blocked in C) is killed

    signal.signal(signal.SIGTERM, stop_workers)
    signal.signal(signal.SIGINT, stop_workers)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    while live:
        pid, status = os.wait()
        live.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code < 0 and not state["code"] and live:
            # killed from outside (kill -9, the OOM killer), not failed: the others carry on, and its
            # trial goes stale and is retried by one of them
            print(f"worker {pid} was killed by {signal.Signals(-code).name}; the other workers carry on", flush=True)
        elif code < 0 and not state["code"]:  # the last one: say so, the trials left wait for a re-run
            print(f"harness: error: the last worker ({pid}) was killed by {signal.Signals(-code).name} (out of "
                  "memory?); finished trials are saved: run the same command again to resume", flush=True)
            state["code"] = 128 - code
        elif code != 0 and not state["code"]:  # a worker failed: stop the others, report it
            state["code"] = code if code > 0 else 128 - code
            stop_workers()
    return state["code"]


def _forked(job: Job, threads: int, log: Path, pool: int) -> None:
    """A forked worker: its own log and signal handlers, then the trial loop; never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        die_with_parent(pool)
        import torch
        torch.set_num_interop_threads(1)
        code = _work(job, threads)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into the pool's loop; no interpreter teardown


# --- inside a worker -----------------------------------------------------------------------------

def _pdeathsig(parent: int) -> None:
    """SIGTERM when `parent` dies (Linux); at once if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent: int) -> None:
    """Get SIGTERM when `parent` dies (PR_SET_PDEATHSIG on Linux, also a polling thread)."""
    _pdeathsig(parent)

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alarm_once(seconds: int) -> None:
    """SIGALRM in `seconds`, unless one is already due: a second signal (the parent's SIGTERM, then its
    death) keeps the first deadline (each one pushed it further)."""
    left = signal.alarm(seconds)
    if left:
        signal.alarm(left)


def _interrupt(signum, frame):
    """SIGTERM/SIGINT: put the trial back (run_trials) and go; SIGALRM ends the process in 5 s if that
    hangs (a database that does not answer), so a worker never outlives its parent by long."""
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        _alarm_once(5)
    raise KeyboardInterrupt


def _work(job: Job, threads: int) -> int:
    """The trial loop with `threads` torch threads; returns the exit status (errors: one line on stderr)."""
    import torch

    from harness import runtime
    from harness.study.trials import run_trials

    torch.set_num_threads(threads)
    runtime.set_threads_override(threads)  # fit must not measure its way past the worker's share
    try:
        run_trials(job)
    except KeyboardInterrupt:
        sys.stderr.flush()
        os._exit(130)  # skip interpreter teardown (seconds for torch on a loaded machine)
    except Exception as e:  # TrialError, RecipeError, a storage error: one line for the parent to show
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"harness: error: {line}", file=sys.stderr, flush=True)
        return RECIPE_ERROR if isinstance(e, RecipeError) or isinstance(e.__cause__, RecipeError) else 1
    return 0


def main(argv: list) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    if argv[1] == "--pool":  # until the workers exist, SIGTERM or SIGINT just ends the pool
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = serve(int(argv[3]), argv[2])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no interpreter teardown: seconds for torch on a loaded machine
    from harness.study.trials import Job

    job, threads, parent = Job.from_json(argv[1]), int(argv[2]), int(argv[3])
    die_with_parent(parent)
    import torch

    torch.set_num_interop_threads(1)
    signal.signal(signal.SIGINT, _interrupt)
    return _work(job, threads)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
