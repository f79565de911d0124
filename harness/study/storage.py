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

import time
import warnings
from pathlib import Path
from typing import Optional

from harness.recipe import RecipeError
from harness.study.configs import Config, describe_recipe

HEARTBEAT = 10          # seconds between a running trial's heartbeats; stale after 3x
PLAN_WAIT = 30          # seconds a joining worker waits for the creator to enqueue the plan
FINISHED = ("COMPLETE", "PRUNED")


def default_url(out) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def open_storage(url: str, heartbeat: int = HEARTBEAT):
    """An RDBStorage with heartbeats and retry of stale trials; a bad URL is one line."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = _sqlite_engine(url) if url.startswith("sqlite:///") else {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 5:  # another process creating the same tables at this moment: theirs win, use them
                raise
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RecipeError(f"--storage {redact(url)}: cannot open it ({first}); give a database URL such as "
                              "postgresql+psycopg://user@host/db or sqlite:///path/study.db") from None


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


def open_study(storage, name: str, identity: dict, plan: list, distributions: dict, sampler=None):
    """Create the study and enqueue `plan`, or join it: refuse (one line) when it belongs to another
    recipe or other settings, and re-enqueue planned configurations that only ever failed."""
    import optuna
    from optuna.distributions import distribution_to_json

    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        theirs = _wait_for(study, "identity")
        if theirs is not None and theirs != identity:
            raise RecipeError(refusal(name, theirs, identity))
        if _wait_for(study, "planned") is None or plan:
            enqueue(study, [c for c in plan if c.key() in _missing(study, plan)])
            study.set_user_attr("planned", len(plan))
        return study
    study.set_user_attr("identity", identity)
    study.set_user_attr("distributions", {k: distribution_to_json(d) for k, d in distributions.items()})
    enqueue(study, plan, distributions)
    study.set_user_attr("planned", len(plan))
    return study


def _wait_for(study, attr: str):
    """A study attribute its creator sets just after creating it (None after PLAN_WAIT seconds)."""
    deadline = time.monotonic() + PLAN_WAIT
    while True:
        value = study.user_attrs.get(attr)
        if value is not None or time.monotonic() > deadline:
            return value
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


def refusal(name: str, theirs: dict, ours: dict) -> str:
    """One line naming both recipes (and the settings that differ)."""
    def fmt(value):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
            else (f"{value:g}" if isinstance(value, float) else str(value))
    keys = [k for k in dict.fromkeys([*theirs["settings"], *ours["settings"]])
            if theirs["settings"].get(k) != ours["settings"].get(k)]
    def describe(ident):
        settings = "; ".join(f"{k} {fmt(ident['settings'].get(k, '-'))}" for k in keys)
        return describe_recipe(ident["recipe"]) + (f" with {settings}" if settings else "")
    return (f"study {name!r} holds runs of {describe(theirs)}, not {describe(ours)}; "
            "use another --out (or --study), or the same recipe and settings to continue it")


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


def counts(study) -> dict:
    """Trials by state, and the best accuracy so far (None before the first)."""
    out = {"complete": 0, "pruned": 0, "running": 0, "waiting": 0, "fail": 0, "best": None}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
        if t.state.name == "COMPLETE" and t.value is not None and (out["best"] is None or t.value > out["best"]):
            out["best"] = t.value
    return out


def load_existing(storage_url: str, name: Optional[str]):
    """An existing study for `harness report` (the only one in the storage when no name is given)."""
    import optuna

    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise RecipeError(f"--study {name!r}: not in {redact(storage_url)} (studies there: "
                          f"{', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)
