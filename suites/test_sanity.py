"""`pytest -m sanity`: is the recipe wired right? Seconds, before any real training.

    pytest -m sanity                                   # the embedded default (digits28)
    pytest --pyargs harness.suites -m sanity --recipe my_recipe.py:RECIPE

The blog's steps in order: inspect the data, check shapes and the loss at init, check
gradients and one step, check the training step against a reference, overfit one sample,
then one batch.
"""
import pytest
import torch

from harness.checks import data as data_checks
from harness.checks import model as model_checks
from harness.checks.overfit import check_overfit
from harness.checks.step import check_train_step
from harness.data import as_tensors, is_tensor_split, split_len
from harness.recipe import RecipeError

pytestmark = pytest.mark.sanity
BATCH = 64


@pytest.fixture
def batches(recipe_data, device, seed):
    """Two disjoint batches of 64 training samples, on the device."""
    train = recipe_data.train
    if is_tensor_split(train) and len(train[0]) != len(train[1]) or split_len(train) == 0:
        pytest.fail("no batch to test the model with: the train split is empty or its inputs and targets "
                    "differ in length; fix the data first (see test_split_shapes)", pytrace=False)
    n = split_len(recipe_data.train)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:2 * BATCH]
    x, y = as_tensors(recipe_data.train) if n <= 100_000 else as_tensors(recipe_data.train, limit=2 * BATCH)
    x, y = x[idx[idx < len(x)]], y[idx[idx < len(y)]]
    return (x[:BATCH].to(device), y[:BATCH].to(device)), (x[BATCH:].to(device), y[BATCH:].to(device))


@pytest.fixture
def batch(batches):
    return batches[0]


@pytest.fixture
def model(recipe, device, seed):
    """A fresh, seeded model from the recipe's factory, on the device."""
    torch.manual_seed(seed)
    try:
        return recipe.build_model().to(device)
    except RecipeError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


# --- the data ---------------------------------------------------------------------------------

def test_split_shapes(recipe_data, verify):
    verify(data_checks.check_split_shapes(recipe_data))


def test_inputs_finite(recipe_data, verify):
    verify(data_checks.check_inputs_finite(recipe_data))


def test_input_range(recipe, recipe_data, verify):
    verify(data_checks.check_input_range(recipe_data, recipe.input_range))


def test_labels(recipe, recipe_data, verify):
    verify(data_checks.check_labels(recipe_data, recipe.num_classes))


def test_class_balance(recipe, recipe_data, verify, record_property):
    result = verify(data_checks.check_class_balance(recipe_data, recipe.num_classes))
    record_property("class_counts", result.data.get("counts"))


def test_splits_disjoint(recipe_data, verify):
    verify(data_checks.check_splits_disjoint(recipe_data))


def test_labels_predictable(recipe, recipe_data, verify):
    verify(data_checks.check_labels_predictable(recipe_data, recipe.num_classes))


# --- the model at initialisation --------------------------------------------------------------

def test_output_shape(model, batch, recipe, verify):
    verify(model_checks.check_output_shape(model, batch, recipe.num_classes))


def test_outputs_are_logits(model, batch, recipe, verify):
    verify(model_checks.check_outputs_not_probabilities(model, batch, recipe.loss))


def test_loss_at_init(model, batch, recipe, verify):
    verify(model_checks.check_loss_at_init(model, batch, recipe.loss, recipe.num_classes))


def test_gradients(model, batch, recipe, verify):
    verify(model_checks.check_gradients(model, batch, recipe.loss))


def test_registered_submodules(model, verify):
    verify(model_checks.check_registered_submodules(model))


def test_one_step(model, batch, recipe, verify):
    verify(model_checks.check_one_step(model, batch, recipe))


def test_batch_independence(model, batch, verify):
    verify(model_checks.check_batch_independence(model, batch))


def test_eval_deterministic(model, batch, verify):
    verify(model_checks.check_eval_deterministic(model, batch))


# --- the training step and overfitting --------------------------------------------------------

def test_train_step(model, batches, recipe, seed, verify):
    (x1, y1), (x2, y2) = batches
    # the second batch's labels are rotated so its gradient is nearly orthogonal to the first's
    verify(check_train_step(model, [(x1, y1), (x2, (y2 + 1) % recipe.num_classes)], recipe, seed=seed))


def test_overfit_one_sample(model, batch, recipe, verify):
    x, y = batch
    # BatchNorm cannot train on a batch of one; the same sample twice is still one sample
    copies = 2 if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1
    verify(check_overfit(model, (x[:1].repeat_interleave(copies, 0), y[:1].repeat_interleave(copies)),
                         recipe, max_steps=150))


def test_overfit_one_batch(model, batch, recipe, verify):
    verify(check_overfit(model, batch, recipe, max_steps=500))
