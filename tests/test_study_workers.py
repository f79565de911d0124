"""Many workers on one study: processes on this machine and `harness search` processes sharing a
storage (SQLite in a folder, and a real PostgreSQL server), killed in every way.

    OMP_NUM_THREADS=1 python -m pytest tests/test_study_workers.py -q -p no:cacheprovider

- two `harness search` processes on one study finish exactly the trials asked for, none twice;
- a kill -9 of one of them mid-study loses no finished trial and leaves no duplicate (its running
  trial goes stale and the other process runs it again);
- SIGINT, SIGTERM or SIGKILL of a `--jobs 2` sweep's parent leaves no worker behind;
- under load (both cores busy) an interrupted and resumed sweep equals a clean one, --jobs 1 and 2.
PostgreSQL: HARNESS_TEST_POSTGRES_URL (set by .ci/run), or a throw-away server started here.
"""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from harness import data as hdata, models
from harness.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{Path(__file__).resolve()}:RECIPE"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TIMING = ("Train_time_s", "Infer_time_s")


def tiny_data():
    return hdata.synthetic(n_train=1024, n_val=256, n_test=256, shape=(1, 16, 16), seed=3)


RECIPE = Recipe(model=lambda: models.mlp(256, (64,), 10), data=tiny_data, num_classes=10, lr=0.1, batch_size=32,
                epochs=3, name="workers")


@pytest.fixture(scope="module")
def postgres():
    from tests.study_postgres import postgres_url, stop_servers
    try:
        yield postgres_url()
    finally:
        stop_servers()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres")


def search(storage: str, study: str, out: Path, trials=6, epochs=3, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "harness", "search", "--storage", storage, "--study", study, "--recipe", SPEC,
               "--trials", str(trials), "--epochs", str(epochs), "--lr", "1e-3:0.5", "--batch-size", "16:128",
               "--out", str(out), "--quiet", "--no-figures", "--heartbeat", "2", "--threads", "1", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def trials_of(storage: str, study: str) -> list:
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    except Exception:  # not created yet
        return []


def finished(trials: list) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def unique_name(tmp_path) -> str:
    return f"s{abs(hash(str(tmp_path))) % 10**8}-{time.monotonic_ns() % 10**6}"


def assert_only_retries(trials: list, keys: Counter) -> None:
    """Every FAIL is a trial put back for another try, whose configuration then finished once: a killed
    worker's, or a live one's whose heartbeat came late (a starved machine: seen 4 s old on a loaded 2-core
    machine, stale at 3 x --heartbeat 2 = 6 s; a process stopped 8 s mid-trial gets one). None is a run
    that raised (those carry an `error`)."""
    bad = [(t.number, t.user_attrs) for t in trials if t.state.name == "FAIL"
           and ("error" in t.user_attrs or t.user_attrs.get("key") not in keys)]
    assert not bad, bad


def wait(procs, timeout=600):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


# --- two processes, one study -------------------------------------------------------------------------

def test_two_searches_finish_exactly_the_trials_asked_for(storage, tmp_path):
    name = unique_name(tmp_path)
    procs = [search(storage, name, tmp_path / f"w{i}", 8, 3, "--seeds", "2") for i in range(2)]
    wait(procs)
    trials = trials_of(storage, name)
    keys = Counter(t.user_attrs["key"] for t in finished(trials))
    assert len(keys) == 16 and set(keys.values()) == {1}  # 8 configurations x 2 seeds, each once
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert_only_retries(trials, keys)
    points = {(t.user_attrs["config"]["lr"], t.user_attrs["config"]["batch_size"]) for t in finished(trials)}
    assert len(points) == 8
    print(f"\nworkers that ran trials: {Counter(t.user_attrs['worker'] for t in finished(trials))}")


def test_a_kill_9_of_one_worker_loses_nothing_and_duplicates_nothing(storage, tmp_path):
    name = unique_name(tmp_path)
    victim, survivor = (search(storage, name, tmp_path / f"w{i}", 10, 6) for i in range(2))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        trials = trials_of(storage, name)
        if len(finished(trials)) >= 2 and any(t.state.name == "RUNNING" for t in trials):
            break
        time.sleep(0.05)
    before = {t.number: (t.user_attrs["key"], t.datetime_complete) for t in finished(trials_of(storage, name))}
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    wait([survivor])
    trials = trials_of(storage, name)
    after = {t.number: (t.user_attrs["key"], t.datetime_complete) for t in finished(trials)}
    keys = Counter(key for key, _ in after.values())
    assert {n: after[n] for n in before} == before  # every trial finished before the kill is still there, as it was
    assert len(keys) == 10 and set(keys.values()) == {1}  # all ten, none twice
    assert_only_retries(trials, keys)  # the killed one's trial (and any a starved machine made late)
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks; reads /proc")
def test_a_kill_9_of_one_jobs_worker_lets_the_others_finish_the_sweep(tmp_path):
    """kill -9 (or the OOM killer) of one of a --jobs 2 sweep's workers: the other one carries on and
    retries its trial; the command finishes every trial once (it stopped the sweep, exit 1, with the
    pool's log line "a worker process exited with status 137: forking 2 workers; ...")."""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "harness", "sweep", "lr", "--values", "0.01,0.02,0.05,0.1,0.2,0.3",
               "--epochs", "200", "--recipe", SPEC, "--jobs", "2", "--out", str(out), "--quiet", "--no-figures",
               "--heartbeat", "1", "--threads", "1"]  # 200 epochs (1-2 s a trial): still running at the kill
    # (with 40, 0.3 s a trial, a sweep whose workers start fast ended before the test saw one trial finished)
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and parent.poll() is None:
        trials = trials_of(storage, "sweep-lr")
        if finished(trials) and any(t.state.name == "RUNNING" for t in trials):
            break
        time.sleep(0.05)
    assert parent.poll() is None, parent.stderr.read()[-3000:]
    workers = [w for k in children(parent.pid) for w in children(k)]
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    _, err = parent.communicate(timeout=300)
    assert parent.returncode == 0, err[-3000:]
    keys = Counter(t.user_attrs["key"] for t in finished(trials_of(storage, "sweep-lr")))
    assert len(keys) == 6 and set(keys.values()) == {1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks; reads /proc")
def test_a_kill_9_of_the_worker_pool_is_one_line_saying_how_to_resume(tmp_path):
    """The pool process killed (its workers die with it and put their trials back): one line naming the pool
    and the way on (it was "a worker process exited with status -9: forking 2 workers; ...")."""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "harness", "sweep", "lr", "--values", "0.01,0.02,0.05,0.1,0.2,0.3",
               "--epochs", "200", "--recipe", SPEC, "--jobs", "2", "--out", str(out), "--quiet", "--no-figures",
               "--heartbeat", "1", "--threads", "1"]  # 200 epochs: with 40 the sweep ended before the test
    # saw a trial running, and the parent was gone when the test read /proc (CI, once)
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and parent.poll() is None:
        if any(t.state.name == "RUNNING" for t in trials_of(storage, "sweep-lr")):
            break
        time.sleep(0.05)
    assert parent.poll() is None, parent.stderr.read()[-3000:]
    (pool,) = children(parent.pid)
    os.kill(pool, signal.SIGKILL)
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 1 and len(err.strip().splitlines()) == 1, err[-3000:]
    assert f"the worker pool (pid {pool}) was killed by SIGKILL" in err and "run the same command again" in err


# --- workers die with their parent -------------------------------------------------------------------------

def processes_mentioning(text: str) -> list:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(pid))
    return found


def children(pid: int) -> list:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def sweep_with_two_trials_running(out: Path):
    """(process, storage URL) of a --jobs 2 lr sweep, once both its workers run a trial. 300 epochs (about
    ten seconds a trial, stopped long before): with 30, a fast machine finished the sweep while a test read
    /proc, and the exited workers' empty command lines failed the count (seen once in CI)."""
    command = [sys.executable, "-m", "harness", "sweep", "lr", "--values", "0.01,0.02,0.05,0.1,0.2,0.3",
               "--epochs", "300", "--recipe", SPEC, "--jobs", "2", "--out", str(out), "--quiet", "--no-figures"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and parent.poll() is None:
        if sum(t.state.name == "RUNNING" for t in trials_of(storage, "sweep-lr")) >= 2:
            break
        time.sleep(0.1)
    return parent, storage


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_workers_die_with_their_parent(sig, tmp_path):
    out = tmp_path / "sweep"
    parent, storage = sweep_with_two_trials_running(out)
    kids = children(parent.pid)
    workers = [w for k in kids for w in children(k)]
    mentioning = processes_mentioning(str(out.resolve()))
    # one pool process (it imported torch and Optuna once) and the two workers it forked; nothing else
    # (no resource tracker), and all of them name the study's storage in their command line
    assert len(kids) == 1 and len(workers) == 2 and set(kids + workers) <= set(mentioning), (kids, workers, mentioning)
    parent.send_signal(sig)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 10
    while processes_mentioning(str(out.resolve())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(out.resolve())) == []
    assert not [p for p in processes_mentioning("multiprocessing") if p in kids + workers]
    if sig != signal.SIGKILL:
        err = parent.stderr.read()
        assert parent.returncode == 130 and "Traceback" not in err, (parent.returncode, err[-3000:])
    trials = trials_of(storage, "sweep-lr")
    if sig != signal.SIGKILL:
        # interrupted trials go back to the queue at once (the parent SIGTERMs its workers, which re-enqueue them);
        # under a loaded CI machine a worker can run past its grace period and leave its trial RUNNING, which
        # goes stale and is retried (test_a_kill_9_of_one_worker_...): either way none is lost
        assert len({t.user_attrs["key"] for t in trials if t.state.name in ("WAITING", "COMPLETE", "RUNNING")}) == 6
    # after a SIGKILL the workers usually re-enqueue too (PDEATHSIG sends them SIGTERM); one that runs out of
    # its 5 s leaves its trial RUNNING, which goes stale and is retried (test_a_kill_9_of_one_worker_...)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks; reads /proc")
def test_the_pool_forks_from_a_process_with_one_thread(tmp_path):
    """The pool imports torch, Optuna and the engine but starts no thread before it forks, even when the
    workers will use several (a child forked from a process with OpenMP's threads can hang)."""
    import json

    from harness.study.trials import Job
    from harness.study.workers import Pool

    pool = Pool("sqlite:///nowhere.db study test", threads=4)
    try:
        job = Job(storage=f"sqlite:///{tmp_path / 'nowhere.db'}", study="none")
        pool.proc.stdin.write(json.dumps({"job": job.to_json(), "jobs": 0, "threads": 4, "logs": str(tmp_path)}) + "\n")
        pool.proc.stdin.close()
        assert pool.proc.wait(timeout=300) == 0
        pool.log.seek(0)
        said = pool.log.read()
        assert "ready" in said and "forking 0 workers; threads in this process: 1" in said, said
    finally:
        pool.close()


# --- interrupted and resumed under load equals a clean run ---------------------------------------------------

def sweep(out: Path, jobs: int) -> list:
    return [sys.executable, "-m", "harness", "sweep", "lr", "--values", "0.01,0.03,0.1,0.3", "--seeds", "2",
            "--epochs", "3", "--recipe", SPEC, "--jobs", str(jobs), "--threads", "1", "--out", str(out),
            "--no-figures", "--heartbeat", "2"]


def rows(out: Path) -> list:
    import json
    runs = json.loads((out / "results.json").read_text())["runs"]
    return sorted(({k: v for k, v in r["row"].items() if k not in TIMING} | {"val_loss": r["history"]["val_loss"]}
                   for r in runs), key=lambda r: (r["learning_rate"], r["seed"]))


@pytest.fixture
def both_cores_busy():
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
            p.wait()


@pytest.mark.parametrize("jobs", [1, 2])
def test_under_load_an_interrupted_and_resumed_sweep_equals_a_clean_one(jobs, tmp_path, both_cores_busy):
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    subprocess.run(sweep(clean, 1), env=ENV, cwd=ROOT, check=True, capture_output=True, timeout=900)
    proc = subprocess.Popen(sweep(resumed, jobs), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{resumed.resolve() / 'study.db'}"
    deadline = time.monotonic() + 600
    while not finished(trials_of(storage, "sweep-lr")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    done = len(finished(trials_of(storage, "sweep-lr")))
    # a trial the interrupted run left RUNNING (with or without a heartbeat) is failed and retried after the
    # grace period (6 s here), never waited on (tests/test_study.py::test_a_trial_left_running_without_a_...)
    again = subprocess.run(sweep(resumed, jobs), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    if proc.returncode == 130:  # (the Ctrl-C can land after the last trial: then all 8 are)
        assert (f"resuming: {done} of 8 trials already finished" in again.stderr
                or done == 8 and "all 8 trials already finished" in again.stderr), again.stderr[-3000:]
    assert rows(resumed) == rows(clean)  # bit for bit: same seeds, one thread per run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks; reads /proc")
def test_workers_blocked_in_sqlite_do_not_outlive_an_interrupted_sweep(tmp_path):
    """Ctrl-C while the workers wait on a SQLite lock another process holds (their Python signal handlers
    cannot run inside SQLite's C busy loop): the pool's backstop SIGKILLs them. The parent killed the pool
    first (it waited STOP_GRACE + 1 s, the pool's backstop was STOP_GRACE + 1 s too, armed later), and the
    workers outlived both until the lock went (25 s; found by F)."""
    import sqlite3

    out = tmp_path / "sweep"
    parent, _ = sweep_with_two_trials_running(out)
    assert parent.poll() is None, parent.stderr.read()[-3000:]
    lock = sqlite3.connect(out / "study.db", timeout=60, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the workers' next heartbeat or claim waits in SQLite
    try:
        time.sleep(3)
        parent.send_signal(signal.SIGINT)
        parent.wait(timeout=60)
        gone_by = time.monotonic() + 20  # the pool's backstop fires STOP_GRACE + 1 s after it stops them
        while processes_mentioning(str(out.resolve())) and time.monotonic() < gone_by:
            time.sleep(0.2)
        left = processes_mentioning(str(out.resolve()))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert left == [], f"still running with the lock held: {left}"
