"""Running a study's trials: claim a waiting trial, keep its heartbeat, train it, tell the result.

    from harness.study.trials import Job, run_trials
    job = Job(storage="sqlite:///results/x/study.db", study="sweep-lr", spec="digits28")
    run_trials(job)                       # until no trial is waiting or running; returns trials run

This loop is the same in the CLI's own process (--jobs 1), in each worker process
(harness.study.workers) and on every other machine that joins the study. Each result is told
to the study at once, so a kill loses at most the trials running at that moment, and those
come back (see harness.study.storage). A run that diverges ends as PRUNED with the reason in
the trial's `pruned_reason` attribute; `prune="median"|"hyperband"` also prunes on the val
loss per epoch (reported as its negative, so that higher is better like the accuracy).
With the TPE sampler there is no plan: a worker with nothing waiting asks TPE for a new
configuration, refuses a repeat, and enqueues its other seeds for whoever is free.
"""
from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Optional

from harness.errors import RecipeError
from harness.study.configs import Config, Space, pick
from harness.study.one_run import check_lr_is_used, run_config
from harness.study.storage import (HEARTBEAT, FINISHED, claim_trial, fail_stale_trials, open_storage,
                                   row_split, signals_held, storage_errors, study_distributions)

PRUNERS = ("none", "median", "hyperband")


@dataclass
class Job:
    """Everything a worker needs to join a study (JSON-able: workers get it on their command line)."""
    storage: str
    study: str
    spec: Optional[str] = None
    device: str = "cpu"
    heartbeat: int = HEARTBEAT
    prune: str = "none"
    vectorize: bool = False
    group: int = 1                     # stacked copies per claim when vectorize is on
    tpe: Optional[dict] = None         # {"trials", "lr", "batch_size", "seeds", "epochs", "options", "seed"}
    lr_check: Optional[dict] = None    # a config: check that the optimizer factory takes its lr before any trial
    named: Optional[str] = None        # how the user named the storage, for messages ("--out DIR")
    data_settings: list = field(default_factory=lambda: [None, False])  # harness.data settings: root, download
    data_file: Optional[str] = None    # tensors saved by the parent when it was given data, not a spec
    fail_fast: bool = False            # a trial that raises stops the worker (else: recorded FAIL, go on)

    def to_json(self) -> str:
        import json
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Job":
        import json
        return cls(**json.loads(text))


class TrialError(RuntimeError):
    """A trial raised; the message is the one line to show (the trial is marked FAIL with it)."""


class StudyFailures(TrialError):
    """Some configurations raised; the others finished. `results` are the finished runs (what
    run_study would have returned), `failures` those that raised (storage.failed_runs' dicts)."""

    def __init__(self, message: str, results: list, failures: list):
        super().__init__(message)
        self.results, self.failures = results, failures


def score_of(row: dict) -> float:
    """What Optuna maximises: the task's main metric on the val split when the recipe has one, else
    where the row was scored (rows from before these existed: Accuracy)."""
    if "Val_score" in row:
        return row["Val_score"]
    return row.get("Score", row.get("Accuracy"))



def _sampler(job: Job):
    import optuna
    if job.tpe:
        return optuna.samplers.TPESampler(seed=job.tpe.get("seed", 0) + os.getpid(), n_startup_trials=5)
    return optuna.samplers.RandomSampler()  # never consulted: every trial is enqueued with its params


def _pruner(job: Job):
    import optuna
    return {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
            "hyperband": optuna.pruners.HyperbandPruner(min_resource=1),
            "none": optuna.pruners.NopPruner()}[job.prune]


def run_trials(job: Job, recipe=None, data=None, stop: Optional[threading.Event] = None, storage=None) -> int:
    """Run trials of `job.study` until none is waiting or running (or `stop` is set); return how many.
    `storage`: the caller's open storage for `job.storage` (else it is opened here). A storage that
    fails meanwhile (a full disk) is one line (RecipeError)."""
    with storage_errors(job.storage, job.named):
        return _run_trials(job, recipe, data, stop, storage)


def _run_trials(job: Job, recipe, data, stop: Optional[threading.Event], storage) -> int:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")
    warnings.filterwarnings("ignore", message=".*Fixed parameter.*")
    storage = storage or open_storage(job.storage, job.heartbeat, job.named)
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=_sampler(job), pruner=_pruner(job))
    dists = study_distributions(study)
    if recipe is None:
        recipe, data = _load(job)
    elif data is None:
        data = recipe.load_data()
    if job.lr_check:  # done here, not by the parent of worker processes: it need not import torch._dynamo
        check_lr_is_used(recipe, Config.from_dict(job.lr_check))
    done, pause = 0, 0.25
    while not (stop and stop.is_set()):
        fail_stale_trials(study, storage)  # a killed worker's trial goes back to the queue
        claimed = []
        try:
            with signals_held():  # Ctrl-C or SIGTERM arrives after the claim is recorded, not inside it
                claimed = _claim(study, storage, job)
                if not claimed and job.tpe:
                    claimed = _ask_tpe(study, storage, job, dists)
            if claimed:
                done += _run(study, storage, claimed, dists, recipe, data, job)
                pause = 0.25
                continue
        except KeyboardInterrupt:  # the interrupted trials wait for the next worker at once
            _requeue(study, storage, claimed)
            raise
        if not any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
            break
        time.sleep(pause)  # others are running the last trials (or a dead one goes stale): look again soon
        pause = min(2 * pause, job.heartbeat, 2)
    return done


def _load(job: Job):
    from harness import data as data_module
    from harness.recipe import Data
    from harness.recipes import load_recipe

    data_module.settings.root, data_module.settings.download = job.data_settings
    recipe = load_recipe(job.spec)
    if job.data_file:
        import torch
        data = Data(**torch.load(job.data_file, weights_only=True))
    else:
        data = recipe.load_data()
    return recipe, data


# --- claiming ----------------------------------------------------------------------------------------

def _claim(study, storage, job: Job, only: Optional[str] = None) -> list:
    """Move WAITING trials to RUNNING (the storage lets exactly one worker do so per trial): one,
    or with vectorize up to `job.group` that differ only in lr; `only`: the one with this key."""
    from optuna.trial import TrialState

    claimed, first = [], None
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        config = Config.from_dict(t.user_attrs["config"]) if "config" in t.user_attrs else None
        if only is not None and t.user_attrs.get("key") != only:
            continue
        if first is not None and (config is None or _but_lr(config) != first):
            continue
        if not claim_trial(storage, t._trial_id):
            continue
        storage.record_heartbeat(t._trial_id)  # at once: a trial without one would never be found stale
        claimed.append(t)
        if not job.vectorize or len(claimed) >= job.group or config is None:
            break
        first = _but_lr(config)
    return claimed


def _but_lr(config: Config):
    from dataclasses import replace
    return replace(config, lr=0.0)


def _ask_tpe(study, storage, job: Job, dists: dict) -> list:
    """A new configuration from TPE with its other seeds enqueued; [] when the study has enough."""
    import optuna
    from optuna.trial import TrialState

    spec = job.tpe
    seeds = spec["seeds"]
    options = tuple(tuple(p) for p in spec["options"])
    space = {k: dists[k] for k in ("lr", "batch_size")}
    for _ in range(20):
        trials = study.get_trials(deepcopy=False)
        primaries = [t for t in trials if t.user_attrs.get("point") and tried_point(t)]
        if len(primaries) >= spec["trials"]:
            return []
        # a new trial, not study.ask(): ask pops any WAITING trial first, i.e. another point's enqueued
        # seed copy, which was then taken for a new point (a repeat: failed, and that seed never ran)
        study._thread_local.cached_all_trials = None  # as ask does: the sampler sees the latest trials
        trial = optuna.Trial(study, storage.create_new_trial(study._study_id))
        for name, dist in space.items():
            trial._suggest(name, dist)
        storage.record_heartbeat(trial._trial_id)
        point = list(pick(trial.params))
        if any(t.user_attrs["point"] == point for t in primaries):  # a repeat: TPE converged here
            trial.set_user_attr("repeat", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        # trained with the lr TPE suggested (the trial's params, what best_params and optuna-dashboard show);
        # `point`, rounded, only tells repeats apart
        configs = [Config(lr=trial.params["lr"], batch_size=point[1], epochs=spec["epochs"], seed=s, options=options)
                   for s in seeds]
        for name, value in (("point", point), ("key", configs[0].key()), ("config", asdict(configs[0]))):
            trial.set_user_attr(name, value)
        ranked = sorted(t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("point") and tried_point(t))
        if trial.number not in ranked[:spec["trials"]]:  # another worker took the last place first
            study.tell(trial, state=TrialState.FAIL)
            return []
        from harness.study.storage import enqueue
        enqueue(study, configs[1:], space)  # TPE's space: lr and batch size; the seed is in the config
        return [storage.get_trial(trial._trial_id)]
    return []


def proposed_points(study) -> int:
    """How many distinct configurations TPE proposed that count toward --trials (whatever became of
    them: finished, pruned in every seed, or raised)."""
    return len({tuple(t.user_attrs["point"]) for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("point") and tried_point(t)})


def tried_point(trial) -> bool:
    """A TPE point that counts toward --trials: not a repeat or a lost race (FAIL without an error);
    one whose run raised does count (its line is reported), so TPE cannot propose failures for ever."""
    return trial.state.name != "FAIL" or "error" in trial.user_attrs


# --- running -----------------------------------------------------------------------------------------

class Heartbeat:
    """Record the claimed trials' heartbeats every `interval` seconds on a thread while they run."""

    def __init__(self, storage, trial_ids: list, interval: int):
        self.storage, self.ids, self.interval = storage, trial_ids, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):  # the first beat was recorded when the trial was claimed
        while not self.stop.wait(self.interval):
            for trial_id in self.ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a busy database: the next beat comes soon; staleness takes 3 missed
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _suggest(trial, config: Config, dists: dict) -> None:
    """Record the trial's parameters (enqueued values are returned as fixed by each suggest)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    for name in ("lr", "batch_size", "seed"):
        dist = dists.get(name)
        if dist is None:  # TPE studies keep the seed out of the sampler's space
            continue
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        else:
            trial.suggest_int(name, dist.low, dist.high, log=dist.log)


def _run(study, storage, claimed: list, dists: dict, recipe, data, job: Job) -> int:
    import optuna
    import torch
    from optuna.trial import TrialState

    trials = [optuna.Trial(study, t._trial_id) for t in claimed]
    configs = [Config.from_dict(t.user_attrs["config"]) for t in claimed]
    for trial, config in zip(trials, configs):
        if "lr" not in trial.params:
            _suggest(trial, config, dists)
    seen: dict = {}

    def on_epoch(epoch, history):  # a pruner's look at the val loss, one trial at a time
        seen["history"] = history
        if job.prune != "none" and history.val_loss and history.val_loss[-1] == history.val_loss[-1]:
            trials[0].report(-history.val_loss[-1], epoch)
            if trials[0].should_prune():
                raise optuna.TrialPruned(f"{job.prune} pruner at epoch {epoch}: val loss {history.val_loss[-1]:.4g}")

    threads = torch.get_num_threads()
    with Heartbeat(storage, [t._trial_id for t in claimed], job.heartbeat):
        try:
            if len(configs) > 1:
                from harness.study.stacked import run_configs
                results = run_configs(recipe, data, configs, job.device)
            else:
                results = [run_config(recipe, data, configs[0], job.device,
                                      on_epoch=on_epoch if job.prune != "none" else None)]
        except optuna.TrialPruned as pruned:
            torch.set_num_threads(threads)
            history = seen["history"].to_dict() if "history" in seen else {}
            trials[0].set_user_attr("pruned_reason", str(pruned))
            trials[0].set_user_attr("history", history)
            trials[0].set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
            study.tell(trials[0], state=TrialState.PRUNED)
            return 1
        except Exception as e:
            torch.set_num_threads(threads)
            line = str(e).splitlines()[0] if str(e) else type(e).__name__
            at_fault = isinstance(e, RecipeError) or isinstance(e.__cause__, RecipeError)
            for trial in trials:
                trial.set_user_attr("error", line)
                if at_fault:  # the recipe, as fit's checks found it: a usage error when no run finished
                    trial.set_user_attr("recipe_error", True)
                study.tell(trial, state=TrialState.FAIL)
            if not job.fail_fast:  # an out-of-memory batch size is a result of the search, not its end
                return 0
            lrs = ",".join(f"{c.lr:g}" for c in configs)  # which run: in a search, the one setting that fails
            raise TrialError(f"lr={lrs} batch={configs[0].batch_size} seed={configs[0].seed}: {line}") from e
        except BaseException:  # interrupted: run_trials puts the trials back in the queue
            torch.set_num_threads(threads)
            raise
    told = 0
    for trial, config, result in zip(trials, configs, results):
        attrs = {"row": result["row"], "history": result["history"],
                 "worker": f"{os.uname().nodename}:{os.getpid()}"}  # each attribute is one commit: few of them
        try:
            told += _tell(study, trial, attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker found this trial stale (our heartbeats were late: a starved machine or a
            # slow database) and re-enqueued it. Hand the result to that copy if nobody took it yet.
            copy = _claim(study, storage, Job(**{**asdict(job), "vectorize": False}),
                          only=config.key())
            if copy:
                told += _tell(study, optuna.Trial(study, copy[0]._trial_id), attrs, config, dists)
    return told


def _tell(study, trial, attrs: dict, config: Optional[Config] = None, dists: Optional[dict] = None) -> int:
    from optuna.trial import TrialState

    if config is not None and "lr" not in trial.params:
        _suggest(trial, config, dists)
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    score = score_of(attrs["row"])
    if attrs["row"]["diverged"]:
        trial.set_user_attr("pruned_reason", f"diverged: {attrs['history'].get('diverged_reason', '')}")
        study.tell(trial, state=TrialState.PRUNED)
    elif not (isinstance(score, (int, float)) and math.isfinite(score)):
        # Optuna fails a trial told NaN: it would be retried on every re-run, and never be in the table
        metric = attrs["row"].get("Score_metric") or "Accuracy"
        trial.set_user_attr("pruned_reason", f"no score: the {row_split(attrs['row'])} {metric} is {score}")
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, score)
    return 1


def _requeue(study, storage, claimed: list) -> None:
    """Mark claimed trials that are still RUNNING as FAIL and enqueue each again (Optuna's own retry
    callback), so that an interrupted worker's trials are taken up at once."""
    import optuna
    from optuna.trial import TrialState

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
    for frozen in claimed:
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL):
                retry(study, storage.get_trial(frozen._trial_id))
        except Exception:  # finished meanwhile, or the storage is unreachable: the heartbeat covers it
            pass


def finished_keys(study) -> set:
    return {t.user_attrs.get("key") for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED}


__all__ = ["Job", "PRUNERS", "Space", "StudyFailures", "TrialError", "finished_keys", "run_trials"]
