"""`pytest -m sanity`: is the recipe wired right? Seconds, before any real training.

    pytest -m sanity                                   # the embedded default (digits28)
    pytest --pyargs harness.suites -m sanity --recipe my_recipe.py:RECIPE

The blog's steps in order: inspect the data, check shapes and the loss at init, check
gradients and one step, check the training step against a reference, overfit one sample,
then one batch. Every check runs the recipe's own forward, loss, optimizer, lr, scheduler and
train_step (harness.checks.recipe_ops); a check that does not apply to the recipe's task, or to
this model or data, is skipped with the reason, never passed. Data checks read a fixed-size
sample of each split. Augmentation is declared by a training Dataset whose __getitem__ is
random (reading one index twice gives different inputs); augmentation_labels then checks it.
"""
import dataclasses
import time

import pytest
import torch

from harness.checks import data as data_checks
from harness.checks import model as model_checks
from harness.batching import batch_len, leaves, take
from harness.checks.gradcheck import check_gradcheck
from harness.checks.loss import check_loss_per_label, check_loss_per_sample, check_target_shift
from harness.checks.overfit import check_overfit, overfit_rows
from harness.checks.recipe_ops import has_batchnorm
from harness.checks.step import check_train_step
from harness.batching import split_len, to_device
from harness.recipe import RecipeError
from harness.suites import budget

pytestmark = pytest.mark.sanity
BATCH = 64
SMALL_ROWS = 16       # rows per batch of the checks that train (overfit_batch, train_step) and batch_independence,
FULL_BATCH_WORK = 2.0  # unless 500 of the recipe's steps on the whole batch cost under this many seconds of work


def small_rows(n: int, step_seconds) -> int:
    """Rows per batch for the costly checks: the whole batch when 500 of the recipe's steps on it cost
    under FULL_BATCH_WORK seconds of work (CPU seconds on CPU, wall on CUDA: a small model, whose
    checks cost next to nothing, keeps the stiffer test of memorising more rows), else SMALL_ROWS.
    On the stock gallery 16 rows cost 0.3-0.6x what 64 do in the recipe's own steps (ResNet-18 about
    1x: it needs twice the steps), and every model still overfits them."""
    if step_seconds is None or step_seconds.work * 500 < FULL_BATCH_WORK:
        return n
    return min(n, SMALL_ROWS)


# --- fixtures: the model and the batches are built once per session -----------------------------

@pytest.fixture(scope="session")
def sample(recipe, recipe_data, device, harness_settings):
    """max(2 x 64, batch size) training rows drawn from the whole split, on the device; None when
    the split cannot give a batch. Only those rows are read, so the cost does not grow with the split."""
    train = recipe_data.train
    if not budget.usable(train):
        return None
    index = budget.sample_indices(split_len(train), max(2 * BATCH, recipe.batch_size), harness_settings["seed"])
    return to_device(budget.rows(train, index), device)


@pytest.fixture
def batches(sample):
    """Two disjoint batches of (up to) 64 training samples, on the device (copies: a step that
    changes its inputs in place cannot change what the next check sees)."""
    if sample is None:  # a skip, not an error: the data checks already fail and say why
        pytest.skip("no batch to test the model with: the train split is empty or its inputs and targets "
                    "differ in length; fix the data first (see test_split_shapes)")
    first, second = slice(0, BATCH), slice(BATCH, 2 * BATCH)
    return tuple(tuple(_copy(take(side, rows)) for side in sample) for rows in (first, second))


def _copy(tree):
    return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


@pytest.fixture
def batch(batches):
    return batches[0]


@pytest.fixture(scope="session")
def init_outputs() -> dict:
    """Holds the session model's eval-mode outputs on the first batch once `outputs` computed them."""
    return {}


@pytest.fixture
def outputs(model, recipe, sample, init_outputs):
    """The model's eval-mode outputs on `batch` at its initial state (model_checks.Outputs), computed
    once per session by the first check that asks (so its cost is in that check's row) and shared
    with every check that reads the same outputs; each check gets its own copy. None without a batch."""
    if sample is None:
        return None
    if "shared" not in init_outputs:
        init_outputs["shared"] = model_checks.eval_outputs(recipe, model, tuple(take(side, slice(0, BATCH))
                                                                               for side in sample))
    shared = init_outputs["shared"]
    return dataclasses.replace(shared, value=_copy(shared.value))


@pytest.fixture
def small_batches(batches, step_seconds):
    """`batches`, each cut to `small_rows` rows: what the costly checks run on."""
    n = small_rows(batch_len(batches[0][0]), step_seconds)
    return tuple(tuple(take(side, slice(0, n)) for side in pair) for pair in batches)


@pytest.fixture(scope="session")
def session_model(recipe, device, harness_settings, pytestconfig):
    """The recipe's model, built once per session (seeded), and a snapshot of its initial state;
    a one-line message instead when the factory fails."""
    torch.manual_seed(harness_settings["seed"])
    try:
        model = recipe.build_model().to(device)
    except RecipeError as e:
        yield str(e)
        return
    remove = (budget.counting_hooks(model) if pytestconfig.getoption("harness_durations", None) is not None
              else lambda: None)
    yield model, budget.Snapshot(model)
    remove()  # the global optimizer hook must not outlive the session (pytester runs share the process)


@pytest.fixture
def model(session_model, seed):
    """The session's model in its initial state, seeded with this test's seed; whatever the check
    does to it (weights, buffers, grads, modes, hooks, RNG) is undone afterwards, in finally."""
    if isinstance(session_model, str):
        pytest.fail(session_model, pytrace=False)
    model, snapshot = session_model
    torch.manual_seed(seed)
    try:
        yield model
    finally:
        snapshot.restore()


@pytest.fixture(scope="session")
def step_seconds(recipe, session_model, sample, device):
    """Seconds of one training step of the recipe's model at its batch size, measured once per
    session (None when there is no model or batch to time). The expensive checks size from it."""
    if isinstance(session_model, str) or sample is None:
        return None
    x, y = (take(side, slice(0, recipe.batch_size)) for side in sample)
    try:
        return budget.time_step(recipe, session_model[0], (x, y), device)
    except Exception:  # a step that cannot run is reported by the checks, one failure each
        return None


@pytest.fixture(autouse=True)
def cost_account(request, pytestconfig):
    """With --harness-durations: count this check's passes and steps, for the cost table."""
    if pytestconfig.getoption("harness_durations", None) is None:
        yield
        return
    t0 = time.perf_counter()  # the session's one-time set-up is its own row, not the first check's
    for name in ("recipe_data", "sample", "session_model", "step_seconds"):
        request.getfixturevalue(name)
    setup = time.perf_counter() - t0
    with budget.measuring() as counter:
        yield
    request.node.user_properties += [(budget.COST_KEY, counter.as_dict()), (budget.SETUP_KEY, setup)]
    clock = request.getfixturevalue("step_seconds")
    if clock is not None:
        request.node.user_properties.append((budget.STEP_KEY, (float(clock), clock.cpu, batch_len(
            take(request.getfixturevalue("sample")[1], slice(0, request.getfixturevalue("recipe").batch_size))),
            request.getfixturevalue("device").type)))


# --- the data ---------------------------------------------------------------------------------

def check(verify, result):
    """verify(result), or skip with the reason when the check does not apply to the recipe's task."""
    __tracebackhide__ = True
    if "skipped" in result.data:
        pytest.skip(f"{result.check}: {result.data['skipped']}")
    return verify(result)


def test_split_shapes(recipe, recipe_data, verify):
    check(verify, data_checks.check_split_shapes(recipe_data, recipe))


def test_inputs_finite(recipe_data, verify):
    check(verify, data_checks.check_inputs_finite(recipe_data))


def test_input_range(recipe, recipe_data, verify):
    check(verify, data_checks.check_input_range(recipe_data, recipe.input_range))


def test_labels(recipe, recipe_data, verify):
    check(verify, data_checks.check_labels(recipe_data, recipe))


def test_class_balance(recipe, recipe_data, verify, record_property):
    result = check(verify, data_checks.check_class_balance(recipe_data, recipe))
    record_property("class_counts", result.data.get("counts"))


def test_splits_disjoint(recipe_data, verify):
    check(verify, data_checks.check_splits_disjoint(recipe_data))


def test_labels_predictable(recipe, recipe_data, verify):
    check(verify, data_checks.check_labels_predictable(recipe_data, recipe))


def test_train_distinct(recipe, recipe_data, verify):
    check(verify, data_checks.check_train_distinct(recipe_data, recipe))


def test_train_val_shift(recipe_data, verify):
    check(verify, data_checks.check_train_val_shift(recipe_data))


def test_augmentation_labels(recipe, recipe_data, verify):
    check(verify, data_checks.check_augmentation_labels(recipe_data, recipe))


# --- the model at initialisation --------------------------------------------------------------

def test_output_shape(model, batch, recipe, outputs, verify):
    check(verify, model_checks.check_output_shape(recipe, model, batch, outputs=outputs))


def test_outputs_are_logits(model, batch, recipe, outputs, verify):
    check(verify, model_checks.check_outputs_not_probabilities(recipe, model, batch, outputs=outputs))


def test_init_logit_scale(model, batch, recipe, verify):
    check(verify, model_checks.check_init_logit_scale(recipe, model, batch))


def test_loss_at_init(model, batch, recipe, outputs, verify):
    check(verify, model_checks.check_loss_at_init(recipe, model, batch, outputs=outputs))


def test_gradients(model, batches, recipe, outputs, seed, verify):
    # a parameter the first batch does not reach is looked for in the second and in fresh models (a routed expert)
    check(verify, model_checks.check_gradients(recipe, model, batches[0], outputs=outputs, more=batches[1:], seed=seed))


def test_gradcheck(model, batch, recipe, outputs, verify):
    check(verify, check_gradcheck(recipe, model, batch, outputs=outputs))


def test_loss_per_label(batch, recipe, verify):
    check(verify, check_loss_per_label(recipe, batch))


def test_loss_per_sample(batch, recipe, outputs, verify):
    check(verify, check_loss_per_sample(recipe, batch, outputs=outputs))


def test_target_shift(batch, recipe, verify):
    check(verify, check_target_shift(recipe, batch))


def test_registered_submodules(model, verify):
    check(verify, model_checks.check_registered_submodules(model))


def test_batch_independence(model, small_batches, recipe, verify):
    check(verify, model_checks.check_batch_independence(recipe, model, small_batches[0], source=small_batches[1][0]))


def test_causality(model, batch, recipe, outputs, verify):
    check(verify, model_checks.check_causality(recipe, model, batch, outputs=outputs))


def test_eval_deterministic(model, batch, recipe, outputs, verify):
    check(verify, model_checks.check_eval_deterministic(recipe, model, batch, outputs=outputs))


# --- the training step and overfitting --------------------------------------------------------

def test_one_step(model, batches, recipe, outputs, seed, verify):
    check(verify, model_checks.check_one_step(recipe, model, batches[0], outputs=outputs, more=batches[1:], seed=seed))


def test_train_step(model, small_batches, recipe, seed, outputs, verify):
    (x1, y1), (x2, y2) = small_batches
    # the second batch's targets come from a third of the first batch's, so its gradient points elsewhere
    y2 = y1.roll(len(y1) // 3, 0)[:len(y2)] if len(y1) >= len(y2) else y2
    check(verify, check_train_step(recipe, model, [(x1, y1), (x2, y2)], seed=seed, outputs=outputs))


def test_overfit_sample(model, batch, recipe, verify):
    x, y = batch
    if has_batchnorm(model):
        pytest.skip("overfit_sample: BatchNorm in train mode normalises copies of one sample by a batch variance "
                    "of 0 (and eval mode then divides by it), so one sample cannot be fit; overfit_batch covers "
                    "this model")
    one = torch.zeros(1, dtype=torch.long, device=leaves(y)[0].device)
    check(verify, check_overfit(recipe, model, (take(x, one), take(y, one)), max_steps=150))


def test_overfit_batch(model, batch, step_seconds, recipe, verify):
    x, y = batch
    rows = overfit_rows(recipe, y, small_rows(batch_len(x), step_seconds))  # classification: each class equally often
    check(verify, check_overfit(recipe, model, (take(x, rows), take(y, rows)), max_steps=500))
