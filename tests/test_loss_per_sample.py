"""loss_per_sample: a loss that couples samples is named; every task's default loss passes."""
import pytest
import torch
import torch.nn.functional as F

from harness import Recipe, tasks
from harness.checks.loss import check_loss_per_sample


def _recipe(task, loss=None):
    return Recipe(model=lambda: torch.nn.Linear(1, 1), data=lambda: None, task=task, loss=loss)


def _softmax_over_batch(outputs, targets):
    return -F.log_softmax(outputs, dim=0)[torch.arange(len(targets)), targets].mean()


def _batch_normalised_mse(outputs, targets):
    return F.mse_loss((outputs - outputs.mean(0)) / outputs.std(0), targets)


CASES = {  # task, outputs shape, targets
    "classification": (tasks.Classification(10), (16, 10), lambda g: torch.randint(0, 10, (16,), generator=g)),
    "multilabel": (tasks.MultiLabel(6), (16, 6), lambda g: torch.randint(0, 2, (16, 6), generator=g).float()),
    "regression": (tasks.Regression(2), (16, 2), lambda g: torch.randn(16, 2, generator=g)),
    "segmentation": (tasks.Dense(5), (16, 5, 6, 6), lambda g: torch.randint(-1, 5, (16, 6, 6), generator=g)
                     .masked_fill_(torch.rand(16, 6, 6, generator=g) < 0.2, -100)),
    "causal_lm": (tasks.CausalLM(20), (16, 8, 20), lambda g: torch.randint(0, 20, (16, 8), generator=g)),
}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_task_default_loss_passes(name, seed):
    task, shape, targets = CASES[name]
    g = torch.Generator().manual_seed(seed)
    y = targets(g).clamp(min=-100)
    if name == "segmentation":
        y[(y < 0) & (y != -100)] = 0
    result = check_loss_per_sample(_recipe(task), (None, y), torch.randn(shape, generator=g))
    assert result.passed, result


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("loss, task, shape, targets", [
    (_softmax_over_batch, tasks.Classification(10), (16, 10), lambda g: torch.randint(0, 10, (16,), generator=g)),
    (_batch_normalised_mse, tasks.Regression(2), (16, 2), lambda g: torch.randn(16, 2, generator=g)),
])
def test_a_loss_that_mixes_the_batch_is_named(loss, task, shape, targets, seed):
    g = torch.Generator().manual_seed(seed)
    result = check_loss_per_sample(_recipe(task, loss), (None, targets(g)), torch.randn(shape, generator=g))
    assert result.name == "loss_couples_samples", result
