"""Models with sparse gradients (nn.EmbeddingBag / nn.Embedding with sparse=True and plain SGD):
the model and step checks read them like dense ones, instead of crashing."""
import pytest
import torch
from torch import nn

from harness import Recipe
from harness.checks.gradcheck import check_gradcheck
from harness.checks.model import check_gradients, check_one_step
from harness.checks.step import check_train_step


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 16, mode="mean", sparse=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, ids):
        return self.fc(self.bag(ids))


def sgd(params, lr):
    return torch.optim.SGD(params, lr=lr)


@pytest.mark.parametrize("seed", range(3))
def test_sparse_gradients_are_read_not_crashed_on(seed):
    torch.manual_seed(seed)
    recipe = Recipe(model=Bag, data=lambda: None, num_classes=5, optimizer=sgd, lr=0.5)
    ids = torch.randint(0, 50, (64, 10))
    y = (ids < 10).sum(1).clamp(max=4)
    batch = (ids, y)
    for result in (check_gradients(recipe, Bag(), batch), check_one_step(recipe, Bag(), batch),
                   check_train_step(recipe, Bag(), [(ids[:32], y[:32]), (ids[32:], y[32:])]),
                   check_gradcheck(recipe, Bag(), batch)):
        assert result.passed, result
