"""--momentum and --weight-decay modify the recipe's own optimizer (they replaced it with plain SGD,
unsaid: a regression recipe's Adam at --weight-decay 1e-6 fell from R2 0.94 to 0.01); --optimizer
still replaces it; a setting the optimizer does not have is one line."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import RecipeError
from harness.recipe import make_optimizer
from harness.study import Config

ROOT = Path(__file__).resolve().parents[1]


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


def adamw_of_model(model, lr):  # a factory that takes the model (as a Lightning module's does)
    return torch.optim.AdamW([{"params": model.weight}, {"params": model.bias, "weight_decay": 0.0}], lr=lr)


def built(options: tuple, base) -> torch.optim.Optimizer:
    factory = Config(lr=0.01, batch_size=8, epochs=1, options=options).fit_overrides(base).get("optimizer", base)
    return make_optimizer(factory, torch.nn.Linear(3, 2), 0.01)


def test_weight_decay_keeps_the_recipes_optimizer():
    opt = built((("weight_decay", 1e-4),), adam)
    assert type(opt) is torch.optim.Adam and [g["weight_decay"] for g in opt.param_groups] == [1e-4]
    assert opt.param_groups[0]["lr"] == 0.01


def test_a_factory_that_takes_the_model_gets_it_and_every_group_is_set():
    opt = built((("weight_decay", 0.05),), adamw_of_model)
    assert type(opt) is torch.optim.AdamW and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.05]


def test_momentum_on_the_default_plain_sgd_is_sgd_with_momentum():
    opt = built((("momentum", 0.9),), None)
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.9


def test_momentum_on_an_optimizer_without_it_is_one_line():
    with pytest.raises(RecipeError) as info:
        built((("momentum", 0.9),), adam)
    assert str(info.value).startswith("--momentum 0.9: the recipe's optimizer Adam has no momentum; give "
                                      "--optimizer sgd") and "\n" not in str(info.value)


def test_optimizer_still_replaces_it():
    opt = built((("optimizer", "sgd"), ("weight_decay", 1e-4)), adam)
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["weight_decay"] == 1e-4


def test_adam_with_momentum_on_the_command_line_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "train", "--optimizer", "adam", "--momentum", "0.9",
                           "--epochs", "1", "--out", str(tmp_path / "t"), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "harness: error: --momentum 0.9: Adam has no momentum (its betas play that part); drop --momentum, "
        "or give --optimizer sgd"]


def test_scheduler_replaces_the_recipes_own_schedule():
    """A recipe (or Lightning module) with its own per-step schedule and --scheduler step:1:0.1: the lrs
    were both multiplied (0.1, 0.00962, 0.000854 with a module's cosine; found by R)."""
    from harness.data import synthetic
    from harness.recipe import Recipe
    from harness.study.one_run import run_config

    def halve_every_step(opt, total_steps):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)

    recipe = Recipe(model=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)),
                    data=lambda: synthetic(n_train=64, n_val=32, n_test=32, shape=(1, 4, 4), seed=0),
                    num_classes=10, lr=0.1, batch_size=32, epochs=3, scheduler=halve_every_step)
    own = run_config(recipe, recipe.load_data(), Config(lr=0.1, batch_size=32, epochs=3))
    assert own["history"]["lr"][1] < 0.1 * 0.5  # the recipe's schedule runs without --scheduler
    ours = run_config(recipe, recipe.load_data(), Config(lr=0.1, batch_size=32, epochs=3,
                                                         options=(("scheduler", "step:1:0.1"),)))
    assert ours["history"]["lr"] == pytest.approx([0.1, 0.01, 0.001])
