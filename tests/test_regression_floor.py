"""The overfit floor for outputs in the targets' units: regression targets far from unit scale
(left unstandardised) are a reachable floor of 0 that the model cannot approach, not a floor equal
to the starting loss (Adam steps on free outputs never travelled from ~0 to ~5000)."""
import pytest
import torch
from torch import nn

from harness import Recipe, tasks
from harness.checks.overfit import check_overfit, reachable_loss


def _data(seed, shift, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, generator=g)
    y = (x[:, :2] @ torch.randn(2, 2, generator=g)) * scale + shift
    return x, y


def _model():
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))


def _adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


@pytest.mark.parametrize("seed", range(5))
def test_the_floor_of_unscaled_regression_targets_is_zero(seed):
    x, y = _data(seed, 5000.0, 900.0)
    recipe = Recipe(model=_model, data=lambda: None, task=tasks.Regression(2))
    torch.manual_seed(seed)
    assert reachable_loss(recipe, _model()(x), y, inputs=x) < 1e-3 * float((y ** 2).mean())


@pytest.mark.parametrize("seed", range(5))
def test_unscaled_targets_fail_overfit_naming_the_scale_and_standardised_ones_pass(seed):
    recipe = Recipe(model=_model, data=lambda: None, task=tasks.Regression(2), optimizer=_adam, lr=1e-3)
    torch.manual_seed(seed)
    result = check_overfit(recipe, _model(), _data(seed, 5000.0, 900.0))
    assert not result.passed and "far from unit scale" in str(result), result
    torch.manual_seed(seed)
    result = check_overfit(recipe.replace(lr=1e-2), _model(), _data(seed, 0.0, 1.0))
    assert result.passed, result
