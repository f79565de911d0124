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
