"""Data bugs a new user plants without knowing (found by trying them): each is named by a data check.

    .venv/bin/python -m pytest tests/test_red_data.py -q
"""
import pytest
import torch

from harness import Data, Recipe, tasks
from harness.checks import data as data_checks


def padded_lm(seed: int, pad_targets: bool, n: int = 200, length: int = 12, vocab: int = 20):
    """Right-padded sentences as a tokenizer returns them: ids (pad id `vocab`) and an attention_mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (n, length), generator=g)
    real = torch.arange(length) < torch.randint(4, length + 1, (n, 1), generator=g)
    inputs = {"input_ids": torch.where(real, ids, vocab), "attention_mask": real.long()}
    targets = inputs["input_ids"].clone() if pad_targets else torch.where(real, ids, -100)
    return inputs, targets


def recipe_data(seed, pad_targets, task):
    split = padded_lm(seed, pad_targets)
    val = padded_lm(seed + 100, pad_targets)
    data = Data(train=split, val=val, test=None)
    recipe = Recipe(model=lambda: torch.nn.Identity(), data=lambda: data, task=task, lr=1e-3)
    return recipe, data


TASKS = [tasks.CausalLM(21), tasks.Dense(21, class_dim=-1)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", TASKS, ids=["causal_lm", "tagging"])
def test_padding_given_as_targets_is_named(seed, task):
    """Targets copied from input_ids with the pad id left in (not -100): every check passed before
    (the LM learns to predict padding; GPT-2 example data with labels=input_ids, 19 passed)."""
    recipe, data = recipe_data(seed, True, task)
    result = data_checks.check_split_shapes(data, recipe)
    assert not result.passed and result.name == "padding_not_ignored"
    assert "attention_mask marks as padding" in result.observed and "most often 20" in result.observed


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", TASKS, ids=["causal_lm", "tagging"])
def test_padding_with_ignore_index_passes(seed, task):
    recipe, data = recipe_data(seed, False, task)
    assert data_checks.check_split_shapes(data, recipe).passed


def test_a_mask_of_another_shape_or_a_task_without_ignore_index_is_not_read():
    inputs, targets = padded_lm(0, True)
    data = Data(train=(inputs, targets[:, 0] % 2), val=(inputs, targets[:, 0] % 2), test=None)
    recipe = Recipe(model=lambda: torch.nn.Identity(), data=lambda: data, task=tasks.Classification(2), lr=1e-3)
    assert data_checks.check_split_shapes(data, recipe).passed
