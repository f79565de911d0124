"""outputs_are_logits under a sigmoid-per-label loss: a sigmoid before binary cross-entropy with
logits is the multi-label twin of softmax before cross_entropy."""
import pytest
import torch
from torch import nn

from harness import Recipe, tasks
from harness.checks.model import check_outputs_not_probabilities


def _model(sigmoid: bool):
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 6)]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


@pytest.mark.parametrize("loss", [None, nn.BCEWithLogitsLoss(), nn.functional.binary_cross_entropy_with_logits])
def test_sigmoid_before_a_with_logits_loss_is_named(loss):
    recipe = Recipe(model=lambda: _model(True), data=lambda: None, task=tasks.MultiLabel(6), loss=loss)
    batch = (torch.randn(32, 16), torch.randint(0, 2, (32, 6)).float())
    assert check_outputs_not_probabilities(recipe, _model(True), batch).name == "outputs_are_probabilities"
    assert check_outputs_not_probabilities(recipe, _model(False), batch).passed


def test_probabilities_trained_with_plain_bce_are_fine():
    recipe = Recipe(model=lambda: _model(True), data=lambda: None, task=tasks.MultiLabel(6),
                    loss=nn.functional.binary_cross_entropy)
    batch = (torch.randn(32, 16), torch.randint(0, 2, (32, 6)).float())
    assert check_outputs_not_probabilities(recipe, _model(True), batch).passed
