"""What a study runs: one training configuration (`Config`), the sweep grids, the search plans
drawn by Optuna's samplers, and the identity that ties a study to its recipe and settings.

    from harness.study.configs import Config, sweep_configs, search_configs, Space
    grid = sweep_configs("lr", [1e-4, 1e-3, 1e-2], lr=0.1, batch_size=128, epochs=15, seeds=[0, 1])
    plan = search_configs(8, Space.parse(lr="1e-4:1", batch_size="8:512"), epochs=15, seeds=[0, 1, 2])

A configuration is never repeated by accident: a grid repeats no value, and a search plan
draws (lr, batch size) points until it holds `trials` distinct ones (lr rounded to three
significant digits, batch size a whole number), or says the space is too small. Seeds are a
separate axis: every configuration runs once per seed, and tables pool them as mean ± std.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from harness.recipe import RecipeError, with_settings
from harness.schedules import parse_optimizer, parse_scheduler, plain_sgd

SAMPLERS = ("qmc", "random", "tpe")


@dataclass(frozen=True)
class Config:
    """One training configuration. `options` holds extra fit settings as sorted (key, value) pairs:
    optimizer ('sgd'|'adam'), momentum, weight_decay, scheduler ('step:20:0.1'...), patience, subset,
    drop_last."""
    lr: float
    batch_size: int
    epochs: int
    seed: int = 0
    options: tuple = ()

    def key(self) -> str:
        """A stable id: the same config always gets the same key (12 hex digits)."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def params(self) -> dict:
        """The Optuna trial parameters of this config (the rest is the study's identity)."""
        return {"lr": self.lr, "batch_size": self.batch_size, "seed": self.seed}

    def fit_overrides(self, base_optimizer=None) -> dict:
        """fit's settings for this config; `base_optimizer`: the recipe's factory, which momentum and
        weight_decay modify when no optimizer is named (default: plain SGD, the recipes' default)."""
        opts = dict(self.options)
        out = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        if "optimizer" in opts:
            out["optimizer"] = parse_optimizer(opts["optimizer"], opts.get("momentum", 0.0),
                                               opts.get("weight_decay", 0.0))
        elif "momentum" in opts or "weight_decay" in opts:
            out["optimizer"] = with_settings(base_optimizer or plain_sgd,
                                             **{k: opts[k] for k in ("momentum", "weight_decay") if k in opts})
        if opts.get("scheduler"):  # it replaces the recipe's own schedule (the two multiplied, unsaid)
            out["scheduler"] = parse_scheduler(opts["scheduler"])
            out["step_scheduler"] = None
        if opts.get("patience") is not None:
            out["patience"] = int(opts["patience"])
        if opts.get("subset") is not None:
            out["subset"] = opts["subset"]
        if opts.get("drop_last"):
            out["drop_last"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls(lr=d["lr"], batch_size=d["batch_size"], epochs=d["epochs"], seed=d.get("seed", 0),
                   options=tuple(tuple(pair) for pair in d.get("options", ())))


def round_lr(lr: float) -> float:
    """Three significant digits: lrs closer than that are one configuration, not two."""
    return float(f"{lr:.3g}")


# --- sweeps: grids ----------------------------------------------------------------------------------

def sweep_configs(kind: str, values: Sequence, *, lr: float, batch_size: int, epochs: int,
                  seeds: Sequence[int] = (0,), options: tuple = ()) -> list:
    """One Config per (value, seed): kind 'lr' varies the lr at a fixed batch size, 'batch-size' the reverse."""
    if kind not in ("lr", "batch-size"):
        raise ValueError(f"sweep kind must be 'lr' or 'batch-size', got {kind!r}")
    return [Config(lr=v if kind == "lr" else lr, batch_size=batch_size if kind == "lr" else v,
                   epochs=epochs, seed=s, options=options) for v in values for s in seeds]


# --- search: ranges and the points Optuna's samplers draw in them ----------------------------------

@dataclass(frozen=True)
class Range:
    """A log-scale range `low:high`, or an explicit list of choices."""
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()

    @classmethod
    def parse(cls, text: str, convert, flag: str) -> "Range":
        """`flag`'s text as a range or choices; a bad one is one line naming the fix (RecipeError)."""
        text = str(text).strip()
        try:
            if ":" in text:
                low, high = (convert(t) for t in text.split(":", 1))
            else:
                choices = tuple(dict.fromkeys(convert(t) for t in text.split(",") if t.strip()))
        except ValueError:
            raise RecipeError(f"{flag} {text!r}: give a range LOW:HIGH (0 < LOW <= HIGH, log scale) "
                              "or comma-separated values") from None
        if ":" not in text:
            bad = [f"{c:g}" for c in choices if not (math.isfinite(c) and c > 0)] or ([] if choices else ["nothing"])
            if bad:
                raise RecipeError(f"{flag} {text!r}: {bad[0]} is not a positive number; give a range LOW:HIGH "
                                  "(log scale) or comma-separated positive values")
            return cls(choices=choices)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise RecipeError(f"{flag} {text!r}: the bounds must be finite numbers; give a range such as "
                              f"{flag} {'1e-4:1' if convert is float else '8:512'}")
        if low > high:
            raise RecipeError(f"{flag} {text!r}: LOW is above HIGH; give {flag} {high:g}:{low:g}")
        if low <= 0:
            raise RecipeError(f"{flag} {text!r}: the range is log scale, so LOW must be above 0 ({low:g} has no "
                              f"logarithm); give e.g. {flag} {high / 1e4 if convert is float else 1:g}:{high:g}")
        return cls(low=low, high=high)

    def distribution(self, integer: bool):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))
        if integer:
            return IntDistribution(int(self.low), int(self.high), log=True)
        return FloatDistribution(self.low, self.high, log=True)

    def describe(self) -> str:
        return ",".join(f"{c:g}" for c in self.choices) if self.choices else f"{self.low:g}:{self.high:g}"

    def size(self, integer: bool) -> float:
        if self.choices:
            return len(self.choices)
        return int(self.high) - int(self.low) + 1 if integer else math.inf


@dataclass(frozen=True)
class Space:
    """The search space: lr and batch size, each a log-scale range or a list of choices."""
    lr: Range = field(default_factory=lambda: Range(1e-4, 1.0))
    batch_size: Range = field(default_factory=lambda: Range(8, 512))

    @classmethod
    def parse(cls, lr: str = "1e-4:1", batch_size: str = "8:512") -> "Space":
        return cls(Range.parse(lr, float, "--lr"), Range.parse(batch_size, _whole, "--batch-size"))

    def distributions(self) -> dict:
        return {"lr": self.lr.distribution(False), "batch_size": self.batch_size.distribution(True)}

    def describe(self) -> str:
        return f"lr {self.lr.describe()}, batch size {self.batch_size.describe()}"


def _whole(text) -> int:
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError
    return int(value)


def pick(params: dict) -> tuple:
    """(lr, batch size) of a sampled point: lr rounded to 3 significant digits, batch a whole number."""
    return round_lr(params["lr"]), int(params["batch_size"])


def check_room(trials: int, space: Space) -> None:
    """Refuse (RecipeError) a space that holds fewer distinct configurations than `trials`."""
    limit = space.lr.size(False) * space.batch_size.size(True)
    if trials > limit:
        raise RecipeError(f"--trials {trials}: the space ({space.describe()}) holds only {limit} distinct "
                          "configurations; ask for fewer trials or widen --lr/--batch-size")


def search_configs(trials: int, space: Space, *, epochs: int, seeds: Sequence[int] = (0,), options: tuple = (),
                   sampler: str = "qmc", rng_seed: int = 0) -> list:
    """`trials` distinct (lr, batch size) points drawn by Optuna's QMC (scrambled Sobol) or random
    sampler, each run once per seed; the same arguments always give the same plan.

    Raises RecipeError when the space holds fewer distinct configurations than `trials`.
    """
    import optuna

    if sampler not in ("qmc", "random"):
        raise RecipeError(f"--sampler {sampler!r}: a plan is drawn by qmc or random (tpe adapts as trials finish)")
    check_room(trials, space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    draw = (optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=rng_seed, warn_independent_sampling=False)
            if sampler == "qmc" else optuna.samplers.RandomSampler(seed=rng_seed))
    scratch = optuna.create_study(sampler=draw)  # in memory: only the sampler's sequence is wanted
    points: dict = {}
    for _ in range(200 * trials):
        trial = scratch.ask(space.distributions())
        scratch.tell(trial, 0.0)
        points.setdefault(pick(trial.params), None)
        if len(points) == trials:
            break
    if len(points) < trials:
        raise RecipeError(f"--trials {trials}: {sampler} found only {len(points)} distinct configurations in "
                          f"{space.describe()} (lr to 3 significant digits); ask for fewer trials or widen the ranges")
    return [Config(lr=lr, batch_size=b, epochs=epochs, seed=s, options=options) for lr, b in points for s in seeds]


# --- identity: which recipe and settings a study belongs to ---------------------------------------

def recipe_identity(spec: Optional[str], recipe, data) -> dict:
    """The recipe's spec plus a fingerprint of what it builds: task, model class and parameter
    count, data sizes. Two recipes that differ in any of these cannot share a study."""
    import torch

    from harness.batching import split_len

    state = torch.random.get_rng_state()
    try:
        model = recipe.build_model()
    finally:
        torch.random.set_rng_state(state)
    task = getattr(recipe, "task", None)
    sizes = {name: split_len(getattr(data, name)) for name in ("train", "val", "test")
             if getattr(data, name) is not None}
    return {"spec": spec or recipe.name, "name": recipe.name, "model": type(model).__name__,
            "params": sum(p.numel() for p in model.parameters()),
            "task": getattr(task, "name", None) or f"classification({recipe.num_classes})",
            "data": sizes}


def same_spec(spec: str) -> str:
    """A recipe spec as identities compare it: a file by its name and object, `recipes.py:RECIPE`,
    however its path is spelled (`recipes.py`, `./recipes.py:RECIPE`, or /home/me/... on one machine
    and /srv/... on another joining the same study); module and built-in specs as they are."""
    target, _, attr = str(spec).partition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        file = target.replace("\\", "/").rsplit("/", 1)[-1]
        return f"{file}:{attr or 'RECIPE'}"
    return f"{target}:{attr or 'RECIPE'}" if ":" in str(spec) or "." in target else str(spec)


def describe_recipe(identity: dict) -> str:
    sizes = "/".join(str(v) for v in identity["data"].values())
    return f"{identity['spec']} ({identity['model']}, {identity['params']:,} params, {identity['task']}, data {sizes})"
