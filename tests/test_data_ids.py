"""Data checks on integer inputs (token ids, categorical codes): read as ids, never as values."""
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
