"""The sanity suite's budget (suites/budget.py): snapshots restore everything, rows are read in
O(rows), the cost table is printed when asked, and a large training split costs what a small one does.

    .venv/bin/python -m pytest -q tests/test_budget.py
"""
import copy
import random
import textwrap

import pytest
import torch
from torch import nn

from harness.suites import budget


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def _state(model, optimizer):
    """Everything a Snapshot promises to restore, as plain values (the oracle: deep copies)."""
    return {"tensors": {k: v.clone() for k, v in model.state_dict().items()},
            "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "modes": [m.training for m in model.modules()],
            "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()],
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "rng": (torch.get_rng_state(), random.getstate())}


def _assert_same(a, b):
    assert a["tensors"].keys() == b["tensors"].keys()
    for k in a["tensors"]:
        assert a["tensors"][k].dtype == b["tensors"][k].dtype and torch.equal(a["tensors"][k], b["tensors"][k]), k
    for n in a["grads"]:
        assert (a["grads"][n] is None) == (b["grads"][n] is None), n
        assert a["grads"][n] is None or torch.equal(a["grads"][n], b["grads"][n]), n
    assert a["requires_grad"] == b["requires_grad"] and a["modes"] == b["modes"] and a["hooks"] == b["hooks"]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name])), (k, name)
    assert torch.equal(a["rng"][0], b["rng"][0]) and a["rng"][1] == b["rng"][1]


def _meddle(model, optimizer):
    """What a careless check does: trains, converts, freezes, hooks, switches modes, draws random numbers."""
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model[0].weight.requires_grad_(False)
    model[4].register_forward_hook(lambda *_: None)
    model.eval()
    model.double()
    random.random()


def test_restored_puts_back_weights_buffers_grads_modes_hooks_optimizer_and_rng():
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
    optimizer.step()  # Adam now holds state worth restoring
    before = _state(model, optimizer)
    with budget.restored(model, optimizer):
        _meddle(model, optimizer)
    _assert_same(_state(model, optimizer), before)


def test_restored_restores_when_the_check_raises():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = _state(model, optimizer)
    with pytest.raises(RuntimeError, match="boom"):
        with budget.restored(model, optimizer):
            _meddle(model, optimizer)
            raise RuntimeError("boom")
    _assert_same(_state(model, optimizer), before)


def test_a_snapshot_restores_many_times_and_its_copies_stay_private():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _state(model, optimizer)
    snapshot = budget.Snapshot(model, optimizer)
    for _ in range(3):
        with budget.restored(model, optimizer, snapshot=snapshot):
            _meddle(model, optimizer)
        _assert_same(_state(model, optimizer), before)


def test_restored_model_trains_exactly_as_a_fresh_one():
    """After a restore the model gives the same outputs, and the same step, as an untouched copy."""
    model = _model()
    fresh = copy.deepcopy(model)
    with budget.restored(model):
        _meddle(model, torch.optim.SGD(model.parameters(), lr=0.5))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for m in (model, fresh):
        torch.manual_seed(1)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_sample_indices_are_distinct_in_range_and_do_not_walk_the_split():
    idx = budget.sample_indices(10**12, 128, seed=3)  # a permutation of 10**12 would not fit in memory
    assert len(idx) == 128 == len(set(idx.tolist())) and int(idx.min()) >= 0 and int(idx.max()) < 10**12
    assert torch.equal(idx, budget.sample_indices(10**12, 128, seed=3))
    assert sorted(budget.sample_indices(5, 128, seed=0).tolist()) == [0, 1, 2, 3, 4]


def test_rows_of_tensor_and_dataset_splits_agree():
    x, y = torch.randn(1000, 3), torch.randint(0, 5, (1000,))
    idx = budget.sample_indices(1000, 10, seed=0)
    tx, ty = budget.rows((x, y), idx)
    dx, dy = budget.rows(torch.utils.data.TensorDataset(x, y), idx)
    assert torch.equal(tx, x[idx]) and torch.equal(ty, y[idx]) and torch.equal(dx, tx) and torch.equal(dy, ty)


def test_rows_of_inputs_that_require_grad_are_detached_and_train_twice():
    """Inputs with requires_grad=True are valid data; the rows must not carry their graph into the checks
    (a second backward through it raised 'Trying to backward through the graph a second time')."""
    x = (torch.randn(100, 4) * 2).requires_grad_()  # a non-leaf: the rows of a graph
    y = torch.randint(0, 3, (100,))
    rx, ry = budget.rows((x, y), budget.sample_indices(100, 16, seed=0))
    assert not rx.requires_grad and rx.grad_fn is None
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(rx), ry).backward()
        optimizer.step()


def test_checks_that_train_borrow_the_model_and_give_it_back_unchanged():
    """gradients, one_step and train_step train the caller's model itself (no deepcopy) and must put
    back every parameter, buffer, gradient, requires_grad and train/eval flag, also on a step that
    never clears gradients (its leftovers carry into the next step inside the check)."""
    from harness.checks.model import check_gradients, check_one_step
    from harness.checks.step import check_train_step
    from harness.recipe import Recipe

    def no_zero_grad(model, x, y, optimizer, loss_fn):
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    model = _model()
    model[0].weight.requires_grad_(False)
    nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()  # grads to keep
    model.eval()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for step in (None, no_zero_grad):
        recipe = Recipe(model=_model, data=lambda: None, num_classes=3, lr=0.5, train_step=step,
                        optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9))
        before = _state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        check_gradients(recipe, model, (x, y))
        check_one_step(recipe, model, (x, y))
        check_train_step(recipe, model, [(x, y), (x[:8], y[:8].roll(3))])  # (the bug itself: tests/gallery)
        after = _state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        before["rng"] = after["rng"]  # the checks draw random numbers; the suite restores the RNG itself
        _assert_same(after, before)


def test_time_step_leaves_the_model_unchanged():
    from harness.recipe import Recipe
    model = _model()
    before = copy.deepcopy(model.state_dict())
    recipe = Recipe(model=_model, data=lambda: None, num_classes=3)
    seconds = budget.time_step(recipe, model, (torch.randn(16, 4), torch.randint(0, 3, (16,))), "cpu")
    assert seconds > 0 and seconds.cpu > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_parse_durations_names_the_flag():
    assert budget.parse_durations("0") == 0 and budget.parse_durations("7") == 7
    with pytest.raises(pytest.UsageError, match="--harness-durations 'x'"):
        budget.parse_durations("x")


# --- through pytest, as a user runs it ----------------------------------------------------------

def _run(pytester, *args):
    return pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "-p", "no:cacheprovider",
                              "-p", "no:randomly", "-p", "no:pytest_torch", *args)


def test_durations_prints_the_cost_table_in_training_steps(pytester):
    result = _run(pytester, "--harness-durations=3")
    out = result.stdout.str()
    assert "recipe-harness cost of each check" in out
    assert "training steps of the recipe" in out and "cheaper checks hidden" in out
    assert len([line for line in out.splitlines() if "test_sanity.py::test_" in line]) == 3


def test_without_the_flag_there_is_no_table(pytester):
    assert "recipe-harness cost" not in _run(pytester).stdout.str()


LARGE = textwrap.dedent("""
    import torch
    from torch import nn
    from harness import Data, Recipe

    def data():
        g = torch.Generator().manual_seed(0)
        centers = torch.randn(4, 8, generator=g) * 3
        def split(n):
            y = torch.randint(0, 4, (n,), generator=g)
            x = centers[y] + torch.randn(n, 8, generator=g)
            return x / x.abs().max(), y
        return Data(train=split({n}), val=split(2000), test=split(2000))

    def model():
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))

    RECIPE = Recipe(model=model, data=data, num_classes=4, lr=0.1, batch_size=128)
""")


def test_a_healthy_recipe_with_over_100000_training_samples_passes(pytester):
    """The old batches fixture indexed a 128-row prefix with indices drawn from the whole split."""
    path = pytester.makepyfile(large_recipe=LARGE.replace("{n}", "120_000"))
    result = _run(pytester, "--recipe", f"{path}:RECIPE")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
