"""labels_predictable beyond images of classes: integer inputs (token ids, categorical codes) read as
ids, never as values; regression targets judged by nearest neighbours against permuted targets."""
import pytest
import torch

from harness import Data, Recipe
from harness.checks import data as D
from harness.models import mlp


def recipe():
    return Recipe(model=lambda: mlp(), data=lambda: None, num_classes=5)


@pytest.mark.parametrize("seed", range(10))
def test_labels_predictable_reads_ids_by_position(seed):
    """The label is the last token's id mod 5: a bag of ids cannot see it, a bag of (position, id)
    pairs can. A healthy order-dependent task passes; the same labels shuffled still fail."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (512, 12), generator=g)
    y = ids[:, -1] % 5
    d = Data(train=(ids[:384], y[:384]), val=(ids[384:], y[384:]))
    result = D.check_labels_predictable(d, recipe())
    assert result.passed, result
    shuffled = Data(train=(ids[:384], y[:384][torch.randperm(384, generator=g)]), val=d.val)
    assert D.check_labels_predictable(shuffled, recipe()).name == "labels_look_shuffled"


def _regression(n=600, seed=0, shuffle=False, where="train"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, :2] ** 2).sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)  # symmetric: linear R² ~ 0
    train, val = (x[:400], y[:400]), (x[400:], y[400:])
    if shuffle:
        perm = lambda s: (s[0], s[1][torch.randperm(len(s[1]), generator=g)])
        train, val = (perm(train), val) if where == "train" else (train, perm(val))
    return Data(train=train, val=val)


@pytest.mark.parametrize("seed", range(10))
def test_regression_targets_that_follow_their_inputs_pass_and_shuffled_ones_fail(seed):
    from harness import tasks
    r = Recipe(model=lambda: mlp(), data=lambda: None, task=tasks.Regression(1))
    result = D.check_labels_predictable(_regression(seed=seed), r)
    assert result.passed, result
    assert D.check_labels_predictable(_regression(seed=seed, shuffle=True), r).name == "labels_look_shuffled"
    assert D.check_labels_predictable(_regression(seed=seed, shuffle=True, where="val"), r).name == \
        "val_labels_look_shuffled"
