"""Splits and batches of any structure: a tensor, or a nested tuple/list/dict of tensors.

    from harness.batching import batches, batch_len, take, to_device, split_len, as_pair
    for inputs, targets in batches(split, 128, shuffle=True, generator=g, device=dev):
        ...
    n = batch_len(inputs)                 # the first dimension every leaf shares
    first = take(inputs, slice(0, 8))     # the same slice (or index tensor) of every leaf
    x, y = as_pair(split, limit=256)      # any split as one (inputs, targets) batch

A split is one of
- a pair `(inputs, targets)` where each side is a tensor (or a numpy array) or a nested
  tuple/list/dict of them, all sharing the first dimension; it is batched by slicing every leaf
  (torch.utils._pytree), on the device, with no host sync;
- a `torch.utils.data.Dataset` whose items are (inputs, targets): batched with torch's default collate;
- a `torch.utils.data.DataLoader`: used as given when its batch size is the one asked for,
  otherwise rebuilt from its dataset, collate_fn and workers at the new batch size.

This module imports nothing else of ours but the error type, so the contract can use it.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch.utils import _pytree as pytree
from torch.utils.data import DataLoader, Dataset, Subset

from harness.errors import RecipeError


def _is_leaf(x) -> bool:
    return isinstance(x, torch.Tensor) or type(x).__module__ == "numpy" and hasattr(x, "shape")


def leaves(tree) -> list:
    """The tensors (or arrays) of a batch, in a fixed order."""
    return pytree.tree_leaves(tree)


def is_batch(tree) -> bool:
    """A tensor or a nested tuple/list/dict holding only tensors (or numpy arrays), at least one."""
    found = leaves(tree)
    return bool(found) and all(_is_leaf(x) for x in found)


def is_pair(split) -> bool:
    """A split given as `(inputs, targets)` (rather than a Dataset or a DataLoader)."""
    return (isinstance(split, (tuple, list)) and not isinstance(split, Dataset) and len(split) == 2
            and all(is_batch(side) for side in split))


def batch_len(tree) -> int:
    """The first dimension of a batch (that of its first leaf)."""
    if isinstance(tree, torch.Tensor):  # the common case, without the tree walk
        return tree.shape[0] if tree.dim() else 1
    found = leaves(tree)
    if not found:
        raise RecipeError("a batch holds no tensors")
    first = found[0]
    return int(first.shape[0]) if getattr(first, "shape", ()) else 1


def take(tree, index):
    """The same rows of every leaf: `index` is a slice or a 1-D index tensor (on the leaves' device)."""
    if isinstance(tree, torch.Tensor):  # the common case, without the tree walk
        return tree[index] if isinstance(index, slice) else tree.index_select(0, index)
    if isinstance(index, slice):
        return pytree.tree_map(lambda t: t[index], tree)
    return pytree.tree_map(lambda t: t.index_select(0, index), tree)


def to_device(tree, device, non_blocking: bool = False):
    """Move every tensor leaf to `device` (no copy when it is already there); numpy leaves become
    tensors; other leaves (strings, ids a collate_fn kept) pass through."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device, non_blocking=non_blocking)

    def move(leaf):
        return as_tensor(leaf).to(device, non_blocking=non_blocking) if _is_leaf(leaf) else leaf
    return pytree.tree_map(move, tree)


def as_tensor(x):
    """A tensor for a tensor or numpy array (no copy where numpy allows)."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, RuntimeError) as e:
        raise RecipeError(f"a split holds a {type(x).__name__} torch cannot convert ({e}); give tensors or numeric numpy arrays") from e


def tensors(tree):
    """The same structure with numpy leaves turned into tensors."""
    return pytree.tree_map(as_tensor, tree)


def lengths(tree) -> list:
    """The first dimension of every leaf (they must agree)."""
    return [int(x.shape[0]) if getattr(x, "shape", ()) else 1 for x in leaves(tree)]


def split_len(split) -> int:
    """Samples in a split of any kind."""
    if split is None:
        return 0
    if is_pair(split):
        return batch_len(split[1])
    if isinstance(split, DataLoader):
        return len(split.dataset)
    return len(split)


def as_pair(split, limit: Optional[int] = None):
    """`(inputs, targets)` for the first `limit` samples (all when None) of a split of any kind.

    A pair is sliced; a Dataset or DataLoader is read item by item and collated (the loader's
    collate_fn, else torch's default collate)."""
    if is_pair(split):
        x, y = tensors(split[0]), tensors(split[1])
        return (take(x, slice(0, limit)), take(y, slice(0, limit))) if limit is not None else (x, y)
    dataset, collate = (split.dataset, split.collate_fn) if isinstance(split, DataLoader) else (split, None)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(n)]
    batch = (collate or torch.utils.data.default_collate)(items)
    return _pair_of(batch)


def subset(split, n: int, seed: int = 0):
    """A seeded random subset of `n` samples, of the same kind as the split."""
    total = split_len(split)
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:min(int(n), total)]
    if is_pair(split):
        return take(tensors(split[0]), idx), take(tensors(split[1]), idx)
    if isinstance(split, DataLoader):
        return rebuild(split, dataset=Subset(split.dataset, idx.tolist()))
    return Subset(split, idx.tolist())


def rebuild(loader: DataLoader, dataset=None, batch_size=None, shuffle: Optional[bool] = None,
            generator=None, drop_last: Optional[bool] = None) -> DataLoader:
    """A DataLoader like `loader` (its collate_fn, workers, pinning) with some settings changed."""
    shuffled = isinstance(loader.sampler, torch.utils.data.RandomSampler)
    return DataLoader(dataset if dataset is not None else loader.dataset,
                      batch_size=batch_size or loader.batch_size,
                      shuffle=shuffled if shuffle is None else shuffle, generator=generator,
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last if drop_last is None else drop_last,
                      persistent_workers=loader.persistent_workers if loader.num_workers else False)


def batches(split, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator],
            drop_last: bool = False, device=None) -> Iterator[tuple]:
    """Yield `(inputs, targets)` batches. A pair split must already be on `device` (see prepare)."""
    if is_pair(split):
        x, y = split
        n = batch_len(y)
        order = None
        if shuffle:
            order = torch.randperm(n, generator=generator)
            order = order.to(leaves(y)[0].device)
        stop = n - n % batch_size if drop_last else n
        plain = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        for i in range(0, stop, batch_size):
            if order is None:
                index = slice(i, i + batch_size)
                yield (x[index], y[index]) if plain else (take(x, index), take(y, index))
            else:
                index = order[i:i + batch_size]
                yield (x.index_select(0, index), y.index_select(0, index)) if plain else (take(x, index), take(y, index))
        return
    if isinstance(split, DataLoader):
        loader = split if split.batch_size == batch_size and (shuffle or not _shuffled(split)) else rebuild(
            split, batch_size=batch_size, shuffle=shuffle, generator=generator if shuffle else None, drop_last=drop_last)
    else:
        loader = DataLoader(split, batch_size=batch_size, shuffle=shuffle,
                            generator=generator if shuffle else None, drop_last=drop_last)
    for batch in loader:
        xb, yb = _pair_of(batch)
        yield to_device(xb, device, non_blocking=True), to_device(yb, device, non_blocking=True)


def fixed_order(split, batch_size: int) -> bool:
    """Whether training on `split` at `batch_size` would see its samples in the same order every
    epoch: a DataLoader with a SequentialSampler (shuffle=False), which `batches` uses as given
    when its batch size is the one asked for (otherwise it is rebuilt, shuffled)."""
    return (isinstance(split, DataLoader) and split.batch_size == batch_size
            and isinstance(split.sampler, torch.utils.data.SequentialSampler))


def _shuffled(loader: DataLoader) -> bool:
    return isinstance(loader.sampler, torch.utils.data.RandomSampler)


def _pair_of(batch):
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    kind = f"a dict with keys {sorted(batch)}" if isinstance(batch, dict) else f"a {type(batch).__name__}"
    label = next((k for k in ("labels", "label", "targets", "target", "y") if isinstance(batch, dict) and k in batch), None)
    if label is not None:  # the Hugging Face layout: the targets are one entry of the dict
        raise RecipeError(f"a Dataset/DataLoader batch is {kind}, expected (inputs, targets): split the targets off, "
                          f"e.g. __getitem__ returning ({{k: v for k, v in item.items() if k != {label!r}}}, "
                          f"item[{label!r}]) (or a collate_fn that does); the dict's other entries are then passed as model(**inputs)")
    raise RecipeError(f"a Dataset/DataLoader batch is {kind}, expected (inputs, targets); make __getitem__ "
                      "return (inputs, targets), or wrap the batches in a collate_fn that does")
