"""Recipes for the recipe suite's own tests: three with one planted dynamics bug each, and healthy ones.

    pytest --pyargs harness.suites -m recipe --recipe tests/recipes_dynamics/recipes.py:SKIPS_OPTIMIZER_STEP

`CAUGHT_BY` maps each broken recipe to the symptom `pytest -m recipe` must name;
tests/test_dynamics.py runs them. TINY is a two-epoch digits28 recipe for fast CLI and study tests.
"""
import torch
from torch import nn

from harness import Recipe
from harness.data import digits28
from harness.fit import default_step
from harness.models import fashion_mlp
from tests.gallery import healthy


def _recipe(name, **changes):
    base = dict(model=fashion_mlp, data=digits28, num_classes=10, lr=0.1, batch_size=128, epochs=15, name=name)
    base.update(changes)
    return Recipe(**base)


# 1. an lr 100x too high for plain SGD on this MLP
LR_FAR_TOO_HIGH = _recipe("lr_far_too_high", lr=10.0)


# 2. a custom step that skips optimizer.step() on every third batch (a stray early return)
def _skipping_step():
    calls = [0]

    def step(model, inputs, targets, optimizer, loss_fn):
        calls[0] += 1
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        if calls[0] % 3 == 0:
            return loss, outputs  # bug: this batch's gradient is thrown away
        optimizer.step()
        return loss, outputs
    return step


SKIPS_OPTIMIZER_STEP = _recipe("skips_optimizer_step", train_step=_skipping_step())


# 3. a model whose output does not depend on its input (it learns the class prior only)
class _IgnoresInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = fashion_mlp()
        self.logits = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * self.features(x)  # bug: x is multiplied away


IGNORES_INPUTS = _recipe("ignores_inputs", model=_IgnoresInputs)

CAUGHT_BY = {
    "LR_FAR_TOO_HIGH": "recipe_lr_not_best",
    "SKIPS_OPTIMIZER_STEP": "steps_per_epoch_wrong",
    "IGNORES_INPUTS": "model_ignores_inputs",
}

# healthy: the gallery's frozen-first-layer MLP at an lr it trains well with (its lr 0.1 scores
# ~0.78 val accuracy where lr 0.5-1.0 scores ~0.94, which the recipe suite rightly flags)
FROZEN_FIRST_LAYER_TUNED = healthy.FROZEN_FIRST_LAYER.replace(lr=0.5, name="frozen_first_layer_lr0.5")
DEFAULT_STEP_COPY = _recipe("default_step_copy", train_step=default_step)
TINY = _recipe("tiny", epochs=2)
