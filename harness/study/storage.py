"""Where a study lives: an Optuna storage (SQLite inside --out by default, or any URL such as
postgresql+psycopg://user@host/db) holding one study per sweep or search.

    from harness.study.storage import open_storage, open_study, finished_results
    storage = open_storage("sqlite:///results/digits28/sweep-lr/study.db")
    study = open_study(storage, "sweep-lr", identity, plan)   # creates it, or joins it after checking identity
    results = finished_results(study)                          # one result per configuration, in trial order

How trials are shared. The creator of a study enqueues its whole plan (every configuration x
seed) as WAITING trials; every worker, on any machine, claims a WAITING trial by moving it to
RUNNING, which the storage does for exactly one of them. So no configuration runs twice and
none is skipped, with any number of workers. (Optuna's GridSampler and QMCSampler can hand
two concurrent workers the same point; the plan is therefore drawn once, up front.)

How a killed worker's trial comes back. A running trial's worker writes a heartbeat every
`heartbeat` seconds; a trial whose heartbeat is older than 3x that is failed by the next
worker that looks (optuna.storages.fail_stale_trials), and Optuna's
RetryHeartbeatStaleTrialCallback enqueues it again. A worker stopped by SIGINT/SIGTERM
re-enqueues its trial at once.
"""
from __future__ import annotations

import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.errors import RecipeError

if TYPE_CHECKING:  # configs imports torch; the CLI names its worker pool (redact, default_url) before that
    from harness.study.configs import Config

HEARTBEAT = 10          # seconds between a running trial's heartbeats; stale after 3x
PLAN_STALL = 5          # seconds a joining worker waits for the creator's next trial: silent this long, it was stopped
CONNECT_TIMEOUT = 10    # seconds to reach a PostgreSQL server (a host that drops packets would hang for minutes)
FINISHED = ("COMPLETE", "PRUNED")


def default_url(out) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def open_storage(url: str, heartbeat: int = HEARTBEAT, named: Optional[str] = None):
    """An RDBStorage with heartbeats and retry of stale trials. A storage that cannot be used is one
    line (RecipeError) naming it as the user gave it (`named`, e.g. "--out results/x"; default
    "--storage URL"): a full disk, a damaged SQLite file (delete it to start afresh), a bad URL.
    Ctrl-C waits until it is open (at most the connect timeout): one in the middle of its first
    imports left SQLAlchemy half-imported, and a notebook kernel failed every later study."""
    with signals_held():
        return _open_storage(url, heartbeat, named)


def _open_storage(url: str, heartbeat: int, named: Optional[str]):
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = _sqlite_engine(url) if url.startswith("sqlite:///") else {"pool_pre_ping": True}
    if url.startswith("postgresql") and "connect_timeout" not in url:  # a timeout in the URL wins
        engine["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except sqlalchemy.exc.SQLAlchemyError as e:
            # another process creating the same tables at this moment ("already exists" on SQLite, an
            # IntegrityError or ProgrammingError elsewhere): theirs win, use them
            racing = isinstance(e, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) \
                or "already exists" in str(e)
            if not racing or attempt == 5:
                raise RecipeError(storage_problem(e, url, named)) from None
            time.sleep(0.2 * (attempt + 1))
        except (ImportError, ValueError) as e:
            raise RecipeError(storage_problem(e, url, named)) from None


@contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM (POSIX, main thread) for the duration; they are delivered after."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # Windows, or not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def storage_problem(error: BaseException, url: str, named: Optional[str] = None) -> str:
    """The one line for a storage error (SQLAlchemy's, or Optuna's StorageInternalError around it)."""
    import optuna

    wrapped = isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None
    cause = error.__cause__ if wrapped else error  # Optuna's "An exception is raised during the commit"
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    named = named or f"--storage {redact(url)}"
    flag = named.split()[0]
    low = text.lower()
    if "disk is full" in low or "no space left" in low:
        return f"{named}: the disk is full ({text}); free some space or choose another {flag}"
    if url.startswith("sqlite:///") and ("malformed" in low or "not a database" in low):
        path = url[len("sqlite:///"):]
        return (f"{named}: {path} is damaged ({text}); delete it to start the study afresh (its finished "
                f"trials are lost), or use another {flag}")
    scheme = url.split("://", 1)[0]
    if "can't load plugin" in low:  # postgres://, sqlte://: a scheme SQLAlchemy does not know
        return (f"{named}: {scheme!r} is not a database scheme SQLAlchemy knows; give sqlite:///path/study.db or "
                "postgresql+psycopg://user@host/db")
    if "failed to import db access module" in low:
        return (f"{named}: the driver for {scheme} is not installed in this environment; for PostgreSQL pip install "
                "'recipe-harness[postgres]' (postgresql+psycopg://), for MySQL pip install pymysql (mysql+pymysql://)")
    if any(words in low for words in ("connection failed", "failed to resolve host", "could not connect",
                                      "timeout expired")):
        return (f"{named}: cannot connect ({text}); check that the server is running and reachable from here, "
                "and the host, port, user, password and database in the URL")
    if url.startswith("sqlite:///") and "unable to open database file" in low:
        return f"{named}: {_sqlite_path_problem(Path(url[len('sqlite:///'):]))}"
    return (f"{named}: cannot open it ({text}); give a database URL such as postgresql+psycopg://user@host/db "
            "or sqlite:///path/study.db")


def _sqlite_path_problem(path: Path) -> str:
    """Why SQLite could not open the file at `path`, and the fix (its message names neither)."""
    import os

    if path.is_dir():
        return f"{path} is a folder; give a file in it, e.g. sqlite:///{path / 'study.db'}"
    relative = "" if path.is_absolute() else (f" (a relative path, from {Path.cwd()}; an absolute path takes four "
                                              f"slashes: sqlite:////{path})")
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist{relative}; create it or correct the path"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"cannot write {path} (read-only); choose a folder you can write to"
    return f"SQLite cannot open {path}{relative}; choose a file in a folder you can write to"


@contextmanager
def storage_errors(url: str, named: Optional[str] = None):
    """Turn a storage failure inside the block (a disk that fills up, a file damaged meanwhile)
    into its one line (RecipeError)."""
    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise RecipeError(storage_problem(e, url, named)) from None


def _sqlite_engine(url: str) -> dict:
    """SQLite in WAL mode with synchronous=NORMAL: one fsync per checkpoint instead of two or three
    per commit (a trial's ~8 commits took 300 ms, now about 115 ms on this machine), still whole
    after a kill -9 of any process; only a power cut can drop the last commits. Writers wait up
    to 120 s for each other instead of failing with "database is locked"."""
    import sqlite3

    path = url[len("sqlite:///"):]

    def connect():
        connection = sqlite3.connect(path, timeout=120, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection
    return {"creator": connect}


def claim_trial(storage, trial_id: int) -> bool:
    """Move a WAITING trial to RUNNING; True for exactly one caller however many try at once.

    One conditional UPDATE (... WHERE state = WAITING), so the database decides. Optuna's
    set_trial_state_values reads the state, then writes: on SQLite the read is outside the
    write's transaction, and two workers that read WAITING together both "claim" the trial
    and both train it (seen on this machine: the second one's result is refused at the end)."""
    from datetime import datetime, timezone

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    with _create_scoped_session(storage.scoped_session) as session:
        updated = (session.query(models.TrialModel)
                   .filter(models.TrialModel.trial_id == trial_id, models.TrialModel.state == TrialState.WAITING)
                   .update({models.TrialModel.state: TrialState.RUNNING,  # the start in naive UTC, as Optuna's
                            models.TrialModel._datetime_start_utc: datetime.now(timezone.utc).replace(tzinfo=None)},
                           synchronize_session=False))
    return updated == 1


def fail_stale_trials(study, storage) -> None:
    """Fail, and enqueue again, the study's trials whose worker is gone: RUNNING with a heartbeat
    older than the grace period (Optuna's fail_stale_trials), or with no heartbeat at all and
    started longer ago than that (a worker killed between its claim and its first heartbeat:
    Optuna never looks at those, and a resumed study waited for them forever)."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    retry = storage.get_heartbeat_stale_trial_callback()
    grace = storage.grace_period or 2 * (storage.heartbeat_interval or HEARTBEAT)  # Optuna's default
    for trial_id in _without_heartbeat(storage, study._study_id, grace):
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and retry is not None:
                retry(study, storage.get_trial(trial_id))
        except UpdateFinishedTrialError:  # another worker failed it first, or it just finished
            pass


def _without_heartbeat(storage, study_id: int, grace: float) -> list:
    """Ids of the study's RUNNING trials that have no heartbeat and started more than `grace` s ago."""
    from datetime import datetime, timedelta, timezone

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=grace)  # naive UTC, as stored
    with _create_scoped_session(storage.scoped_session) as session:
        rows = (session.query(trial.trial_id)
                .outerjoin(beat, beat.trial_id == trial.trial_id)
                .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING,
                        beat.trial_heartbeat_id.is_(None), trial._datetime_start_utc < cutoff)
                .all())
    return [row[0] for row in rows]


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}:***@{tail}" if ":" in user else url


def distributions_for(plan: list, space=None) -> dict:
    """The trial parameters' distributions: the search space, or the span of the plan's values."""
    from optuna.distributions import FloatDistribution, IntDistribution

    dists = dict(space.distributions()) if space is not None else {}
    if "lr" not in dists:
        lrs = [c.lr for c in plan]
        dists["lr"] = FloatDistribution(min(lrs), max(lrs), log=True)
    if "batch_size" not in dists:
        sizes = [c.batch_size for c in plan]
        dists["batch_size"] = IntDistribution(min(sizes), max(sizes), log=True)
    seeds = [c.seed for c in plan] or [0]
    dists["seed"] = IntDistribution(min(seeds), max(seeds))
    return dists


def open_study(storage, name: str, identity: dict, plan: list, distributions: dict, sampler=None,
               shared: bool = False):
    """Create the study and enqueue `plan`, or join it: refuse (one line) when it belongs to another
    recipe or other settings, and re-enqueue planned configurations that only ever failed.
    shared: a --storage URL (the refusal's way out is another --study, not another --out)."""
    import optuna
    from optuna.distributions import distribution_to_json

    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        study.joined = True  # for messages: this process did not create it
        theirs = _wait_for(study, "identity", storage)
        if theirs is not None and _compared(theirs) != _compared(identity):
            raise RecipeError(refusal(name, theirs, identity, out=not shared))
        if theirs is None and storage.get_n_trials(study._study_id):  # trials, and no identity: not a harness study
            raise RecipeError(f"study {name!r} was not made by harness (it has trials but no recipe identity); "
                              "give another --study name")
        attrs = study.user_attrs  # a creator stopped before saying what the study is: say it for it
        for attr, value in (("identity", identity), ("distributions", {k: distribution_to_json(d)
                                                                        for k, d in distributions.items()})):
            if attr not in attrs:
                study.set_user_attr(attr, value)
        if _wait_for(study, "planned", storage) is None or plan:
            missing = _missing(study, plan)  # once: each call reads every trial of the study
            enqueue(study, [c for c in plan if c.key() in missing])
            study.set_user_attr("planned", len(plan))
        return study
    study.set_user_attr("identity", identity)
    study.set_user_attr("distributions", {k: distribution_to_json(d) for k, d in distributions.items()})
    enqueue(study, plan, distributions)
    study.set_user_attr("planned", len(plan))
    return study


def _compared(identity: dict) -> dict:
    """The identity with its recipe spec as `same_spec` spells it: one recipe file given by another
    path (another machine's checkout, ./recipes.py) is the same recipe."""
    from harness.study.configs import same_spec

    recipe = identity.get("recipe", {})
    return {**identity, "recipe": {**recipe, "spec": same_spec(recipe.get("spec", ""))}}


def _wait_for(study, attr: str, storage):
    """A study attribute its creator sets at the start (identity) or once its plan is enqueued
    (planned). None once PLAN_STALL seconds pass with no trial added: the creator was stopped
    (Ctrl-C at the start), and the same command run again goes on. A creator still enqueuing a
    big plan is waited for however long that takes (a joiner enqueuing too would duplicate trials)."""
    added, since = None, time.monotonic()
    while True:
        value = study.user_attrs.get(attr)
        if value is not None:
            return value
        trials, now = storage.get_n_trials(study._study_id), time.monotonic()
        if trials != added:
            added, since = trials, now
        elif now - since > PLAN_STALL:
            return None
        time.sleep(0.2)


def _missing(study, plan: list) -> set:
    """Planned keys with no trial waiting, running or finished (never enqueued, or only failed)."""
    live = {t.user_attrs.get("key") for t in study.get_trials(deepcopy=False)
            if t.state.name in ("WAITING", "RUNNING") + FINISHED}
    return {c.key() for c in plan} - live


def enqueue(study, configs: list, distributions: Optional[dict] = None) -> None:
    """Add each config as a WAITING trial with its parameters already set (one commit each)."""
    import optuna

    distributions = distributions if distributions is not None else study_distributions(study)
    for config in configs:
        attrs = {"key": config.key(), "config": _config_dict(config)}
        params = {k: v for k, v in config.params().items() if k in distributions}
        try:
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING, params=params, user_attrs=attrs,
                distributions={k: distributions[k] for k in params}))
        except ValueError:  # a value outside the study's first ranges: Optuna's own queue records it
            study.enqueue_trial(params, user_attrs=attrs)


def _config_dict(config: Config) -> dict:
    from dataclasses import asdict
    return asdict(config)


def refusal(name: str, theirs: dict, ours: dict, out: bool = True) -> str:
    """One line naming both recipes (and the settings that differ)."""
    from harness.study.configs import describe_recipe

    def fmt(value):
        if isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 for v in value):  # options
            return ", ".join(f"{k}={fmt(v)}" for k, v in value) or "none"
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
            else (f"{value:g}" if isinstance(value, float) else str(value))
    keys = [k for k in dict.fromkeys([*theirs["settings"], *ours["settings"]])
            if theirs["settings"].get(k) != ours["settings"].get(k)]
    def describe(ident):
        absent = {"prune": "none"}  # settings recorded only when not their default
        settings = "; ".join(f"{k} {fmt(ident['settings'].get(k, absent.get(k, '-')))}" for k in keys)
        return describe_recipe(ident["recipe"]) + (f" with {settings}" if settings else "")
    other = "another --out (or --study)" if out else "another --study NAME (--out does not choose it in a --storage)"
    return (f"study {name!r} holds runs of {describe(theirs)}, not {describe(ours)}; "
            f"use {other}, or the same recipe and settings to continue it")


def study_distributions(study) -> dict:
    from optuna.distributions import json_to_distribution
    return {k: json_to_distribution(v) for k, v in study.user_attrs.get("distributions", {}).items()}


# --- reading results back ---------------------------------------------------------------------------

def finished_results(study) -> list:
    """The study's results (runs with a table row), one per configuration key, in trial order."""
    seen, results = set(), []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if t.state.name in FINISHED and "row" in attrs and attrs.get("key") not in seen:
            seen.add(attrs["key"])
            results.append({"key": attrs["key"], "config": attrs["config"], "row": attrs["row"],
                            "history": attrs["history"], "trial": t.number, "state": t.state.name.lower(),
                            "pruned_reason": attrs.get("pruned_reason", "")})
    return results


class Results(list):
    """A study's finished runs (finished_results), and `pruned`: the runs a pruner stopped before their
    last epoch, which have no table row (config, reason and partial history of each)."""

    def __init__(self, runs=(), pruned=()):
        super().__init__(runs)
        self.pruned = list(pruned)


def pruned_runs(study) -> list:
    """The runs a pruner stopped (PRUNED without a row) that never finished since, one per key, in
    trial order: dicts with the key, config, `reason` and the partial `history`."""
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("key") for t in trials if t.state.name in FINISHED and "row" in t.user_attrs}
    return list({t.user_attrs["key"]: {"key": t.user_attrs["key"], "config": t.user_attrs["config"],
                                       "reason": t.user_attrs.get("pruned_reason", ""),
                                       "history": t.user_attrs.get("history", {}), "trial": t.number}
                 for t in trials if t.state.name == "PRUNED" and "row" not in t.user_attrs
                 and "config" in t.user_attrs and t.user_attrs.get("key") not in done}.values())


def failed_runs(study) -> list:
    """The configurations whose run raised and that never finished since, one per key, in trial
    order: dicts with the key, config and `error` (the run's one line, its latest)."""
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("key") for t in trials if t.state.name in FINISHED}
    failed: dict = {}
    for t in trials:
        attrs = t.user_attrs
        if t.state.name == "FAIL" and "error" in attrs and "config" in attrs and attrs.get("key") not in done:
            failed[attrs["key"]] = {"key": attrs["key"], "config": attrs["config"], "error": attrs["error"],
                                    "recipe_error": attrs.get("recipe_error", False), "trial": t.number}
    return sorted(failed.values(), key=lambda f: f["trial"])


def pruned_early(study) -> str:
    """'' or the line saying how many trials a pruner stopped before their last epoch (they have no
    table row: no test metrics) and how many runs ended without a finite score (their row reads nan)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    reasons = [t.user_attrs.get("pruned_reason", "") for t in trials if "row" not in t.user_attrs]
    unscored = [t.user_attrs["pruned_reason"] for t in trials
                if t.user_attrs.get("pruned_reason", "").startswith("no score")]
    notes = []
    if reasons:
        pruners = sorted({r.split(" at epoch")[0] for r in reasons})
        one = len(reasons) == 1
        notes.append(f"{len(reasons)} trial{'' if one else 's'} stopped early by the {' and '.join(pruners)} "
                     f"{'is' if one else 'are'} not in the table (partial histories are in the study)")
    if unscored:
        notes.append(f"{len(unscored)} run{'' if len(unscored) == 1 else 's'} ended without a finite score "
                     f"({unscored[0][len('no score: '):]}: NaN outputs?); rows read nan")
    return "; ".join(notes)


def run_label(config: dict) -> str:
    """A run in one line's words, from its config dict: 'lr=0.1 batch=16 seed=0'."""
    return f"lr={config['lr']:g} batch={config['batch_size']} seed={config['seed']}"


def objective_name(metric: str, split: str) -> str:
    """What a study maximises, in words: 'val Accuracy', 'R2' (on test), 'train Accuracy'."""
    return metric if split == "test" else f"{split} {metric}"


def row_split(row: dict) -> str:
    """The split of a run's objective (trials.score_of): val when the row has its score, else where it was scored."""
    return "val" if "Val_score" in row else row.get("Scored_on", "test")


def row_objective(row: dict) -> str:
    """objective_name of a run's row: its val metric when it has one."""
    return objective_name(row.get("Score_metric") or "Accuracy", row_split(row))


def counts(study) -> dict:
    """Trials by state (failed: those whose run raised), the best value so far (None before the first),
    the metric it is (the task's main metric as the table names it: Accuracy, R2, F1_micro, ...) and
    `errors`: {trial number: (config dict, error line)} of the runs that raised."""
    out = {"complete": 0, "pruned": 0, "running": 0, "waiting": 0, "fail": 0, "best": None, "metric": None,
           "errors": {}}
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "FAIL" and "error" not in t.user_attrs:
            continue  # not a failure: a killed or interrupted worker's trial (retried), a TPE repeat
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
        if t.state.name == "FAIL" and "config" in t.user_attrs:  # by trial number: the run's config and line
            out["errors"][t.number] = (t.user_attrs["config"], t.user_attrs["error"])
        if t.state.name == "COMPLETE" and t.value is not None and (out["best"] is None or t.value > out["best"]):
            out["best"] = t.value
            out["metric"] = row_objective(t.user_attrs.get("row", {}))
    return out


def load_existing(storage_url: str, name: Optional[str]):
    """An existing study for `harness report` (the only one in the storage when no name is given)."""
    import optuna

    path = storage_url[len("sqlite:///"):] if storage_url.startswith("sqlite:///") else None
    if path is not None and not Path(path).is_file():  # opening it would create an empty database there
        raise RecipeError(f"--storage {storage_url}: no such file {path}; give the study.db a sweep or search "
                          "wrote (or its folder as --out)")
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name is None and len(names) == 1:
        name = names[0]
    if name is None:
        raise RecipeError(f"{redact(storage_url)} holds {len(names)} studies ({', '.join(names)}); name one with "
                          "--study NAME" if names else f"{redact(storage_url)} holds no study yet; run harness "
                          "sweep or search with this --storage first")
    if name not in names:
        raise RecipeError(f"--study {name!r}: not in {redact(storage_url)} (studies there: "
                          f"{', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)
