"""harness.batching: nested batches sliced leaf by leaf, and pair / Dataset / DataLoader splits.

    .venv/bin/python -m pytest tests/test_batching.py -q
"""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from harness import RecipeError
from harness.batching import as_pair, batch_len, batches, is_pair, leaves, split_len, subset, take, to_device


def nested(n=10):
    x = {"ids": torch.arange(n), "pair": (torch.arange(n) * 10.0, torch.arange(2 * n).view(n, 2))}
    return x, torch.arange(n) % 3


def test_batch_len_take_and_to_device_walk_every_leaf():
    x, y = nested()
    assert batch_len(x) == batch_len(y) == 10
    part = take(x, torch.tensor([3, 1]))
    assert part["ids"].tolist() == [3, 1] and part["pair"][0].tolist() == [30.0, 10.0]
    assert part["pair"][1].tolist() == [[6, 7], [2, 3]]
    assert take(x, slice(2, 4))["ids"].tolist() == [2, 3]
    moved = to_device({"a": np.ones((2, 3), dtype=np.float32)}, "cpu")
    assert isinstance(moved["a"], torch.Tensor) and moved["a"].shape == (2, 3)


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_batches_keep_rows_together_and_cover_the_split(drop_last):
    x, y = nested(11)
    seen = []
    g = torch.Generator().manual_seed(0)
    for xb, yb in batches((x, y), 4, shuffle=True, generator=g, drop_last=drop_last):
        assert (xb["pair"][0] == xb["ids"] * 10).all() and (yb == xb["ids"] % 3).all()
        seen += xb["ids"].tolist()
    assert len(seen) == (8 if drop_last else 11) and len(set(seen)) == len(seen)
    assert seen != sorted(seen)


def test_in_order_batches_are_slices():
    x, y = nested(10)
    sizes = [batch_len(yb) for _, yb in batches((x, y), 4, shuffle=False, generator=None)]
    assert sizes == [4, 4, 2]


def test_split_len_as_pair_and_subset_for_every_kind():
    x, y = torch.randn(20, 3), torch.arange(20) % 2
    ds = TensorDataset(x, y)
    loader = DataLoader(ds, batch_size=8)
    for split in ((x, y), ds, loader):
        assert split_len(split) == 20
        xs, ys = as_pair(split, limit=5)
        assert torch.equal(xs, x[:5]) and torch.equal(ys, y[:5])
        assert split_len(subset(split, 7, seed=1)) == 7
    assert is_pair((x, y)) and not is_pair(ds) and not is_pair(loader)
    assert is_pair((x.numpy(), y.numpy()))


def test_a_dataset_is_batched_with_default_collate():
    x, y = torch.randn(10, 3), torch.arange(10)
    got = [yb.tolist() for _, yb in batches(TensorDataset(x, y), 4, shuffle=False, generator=None)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_dataloader_is_used_as_given_at_its_batch_size_and_rebuilt_for_another():
    calls = []

    def collate(items):
        calls.append(len(items))
        xs, ys = zip(*items)
        return {"x": torch.stack(xs)}, torch.stack(ys)

    loader = DataLoader(TensorDataset(torch.randn(10, 3), torch.arange(10)), batch_size=5, collate_fn=collate)
    out = list(batches(loader, 5, shuffle=True, generator=None))
    assert calls == [5, 5] and isinstance(out[0][0], dict)
    calls.clear()
    out = list(batches(loader, 4, shuffle=False, generator=None))
    assert calls == [4, 4, 2] and [yb.tolist() for _, yb in out][0] == [0, 1, 2, 3]  # its collate_fn kept


def test_a_batch_that_is_not_a_pair_is_one_line():
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.zeros(2), "y": 0}

    with pytest.raises(RecipeError, match="expected \\(inputs, targets\\)"):
        list(batches(Dicts(), 2, shuffle=False, generator=None))


def test_leaves_are_in_a_fixed_order():
    x, _ = nested(2)
    assert [tuple(t.shape) for t in leaves(x)] == [(2,), (2,), (2, 2)]
