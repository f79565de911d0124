"""Which embedded Optuna storage survives concurrent workers and kill -9 on one machine:
SQLite (RDBStorage) or the journal file (JournalStorage + JournalFileBackend)?

    .venv/bin/python benchmarks/study_storage.py --workers 4 --trials 300 --kills 12

For each storage: enqueue `--trials` trials, start `--workers` processes that claim a waiting
trial, write a user attribute and tell the result, and SIGKILL a random
worker every half second (restarting it) `--kills` times. Then count, from the storage: trials
finished, finished twice (impossible by construction if claims are atomic), left RUNNING with
no worker (lost unless the storage has heartbeats to retry them), worker errors, and the longest
stall (no trial finished) after a kill. Prints one line per storage; docs/study.md has the numbers.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import optuna


TRAIN = (0.1, 0.3)  # seconds a trial "trains" (--train LOW:HIGH; 0:0 measures the storage alone)


def storage_for(kind: str, path: str, heartbeat: bool = True):
    if kind.startswith("postgresql"):
        return optuna.storages.RDBStorage(kind, heartbeat_interval=1, grace_period=3,
                                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
    if kind == "sqlite":
        extra = dict(heartbeat_interval=1, grace_period=3,
                     heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback()) if heartbeat else {}
        return optuna.storages.RDBStorage(f"sqlite:///{path}.db", engine_kwargs={"connect_args": {"timeout": 120}},
                                          **extra)
    backend = optuna.storages.journal.JournalFileBackend(f"{path}.log")
    return optuna.storages.JournalStorage(backend)


def worker(kind: str, path: str) -> int:
    """Claim, 'train', tell, until nothing is waiting and nothing is running."""
    import warnings
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = storage_for(kind, path)
    study = optuna.load_study(study_name="s", storage=storage)
    beats = hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval()
    errors = 0
    while True:
        try:
            optuna.storages.fail_stale_trials(study)
            waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
            claimed = None
            for t in waiting:
                if storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.RUNNING):
                    claimed = t
                    break
            if claimed is None:
                if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    return 0
                time.sleep(0.2)
                continue
            stop = threading.Event()
            if beats:  # as harness.study.trials: a heartbeat thread while the trial runs
                storage.record_heartbeat(claimed._trial_id)
                threading.Thread(target=beat, args=(storage, claimed._trial_id, stop), daemon=True).start()
            time.sleep(random.uniform(*TRAIN))
            trial = optuna.Trial(study, claimed._trial_id)
            trial.set_user_attr("worker", os.getpid())
            study.tell(trial, 1.0)
            stop.set()
        except Exception as e:  # noqa: BLE001 - counted and printed: that is the measurement
            errors += 1
            print(f"error {type(e).__name__}: {str(e)[:120]}", file=sys.stderr, flush=True)
            time.sleep(0.1)


def beat(storage, trial_id, stop):
    while not stop.wait(1.0):
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # noqa: BLE001
            pass


def measure(kind: str, workers: int, trials: int, kills: int) -> dict:
    folder = tempfile.mkdtemp(prefix="storage-")
    path = os.path.join(folder, "study")
    if kind.startswith("postgresql"):
        optuna.delete_study(study_name="s", storage=kind) if "s" in optuna.get_all_study_names(kind) else None
    study = optuna.create_study(study_name="s", storage=storage_for(kind, path))
    for i in range(trials):
        study.enqueue_trial({"i": i})  # fixed params in system attrs; claims read none
    start = time.monotonic()
    cmd = [sys.executable, __file__, "--worker", kind, path, ":".join(map(str, TRAIN))]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    born = [time.monotonic()] * workers
    stalls, killed_at, errs = [], [], []
    last_done, last_change = 0, time.monotonic()
    while any(p.poll() is None for p in procs) and time.monotonic() - start < 240:
        time.sleep(0.5)
        done = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
        if done != last_done:
            stalls.append(time.monotonic() - last_change)
            last_done, last_change = done, time.monotonic()
        grown = [i for i, t in enumerate(born) if time.monotonic() - t > 4]  # past start-up: claiming trials
        if len(killed_at) < kills and done < trials * 0.8 and grown:
            i = random.choice(grown)
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            errs.append(procs[i].stderr.read())
            killed_at.append(time.monotonic())
            procs[i] = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            born[i] = time.monotonic()
    hung = any(p.poll() is None for p in procs)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        errs.append(p.stderr.read())
    seconds = time.monotonic() - start
    states = Counter(t.state.name for t in optuna.load_study(study_name="s", storage=storage_for(kind, path, False)).get_trials())
    finished = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    twice = sum(c > 1 for c in Counter(t.system_attrs.get("fixed_params", {}).get("i", t.number) for t in finished
                                       if "retry_history" not in t.system_attrs).values())
    error_lines = [line for e in errs for line in e.splitlines() if line.startswith("error")]
    return {"kind": kind, "seconds": seconds, "states": dict(states), "finished": len(finished), "twice": twice,
            "errors": len(error_lines), "first_error": error_lines[0] if error_lines else "",
            "longest_stall_s": max(stalls, default=0.0), "hung": hung, "kills": len(killed_at)}


def main(argv=None) -> int:
    global TRAIN
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        TRAIN = tuple(map(float, sys.argv[4].split(":")))
        return worker(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--kills", type=int, default=12)
    p.add_argument("--kinds", default="sqlite,journal", help="sqlite, journal or a postgresql+psycopg:// URL")
    p.add_argument("--train", default="0.1:0.3", help="seconds a trial trains, LOW:HIGH (0:0: the storage alone)")
    args = p.parse_args(argv)
    TRAIN = tuple(map(float, args.train.split(":")))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings
    warnings.simplefilter("ignore")
    for kind in args.kinds.split(","):
        r = measure(kind, args.workers, args.trials, args.kills)
        lost = args.trials - r["finished"]
        print(f"{kind.split('@')[-1]:8s} {args.workers} workers, {r['kills']} kill -9: {r['finished']}/{args.trials} finished, "
              f"{lost} lost (states {r['states']}), {r['twice']} finished twice, {r['errors']} worker errors, "
              f"longest stall {r['longest_stall_s']:.1f} s, {'HUNG, ' if r['hung'] else ''}{r['seconds']:.0f} s "
              f"({60 * r['finished'] / r['seconds']:.0f} trials/min)"
              + (f"; first error: {r['first_error']}" if r["first_error"] else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
