"""Do segmentation masks line up with their images? Statistics for labels_predictable on dense targets.

    from harness.checks.masks import image_for, alignment
    image = image_for(inputs, masks)                  # (N, C, H, W) floats of the masks' size, or None
    stats = alignment(image, masks, ignore_index=-100)
    stats.wins["transpose"]                           # share of samples a transposed mask fits better

How well a mask fits its image: the share of the image's variance (over pixels, summed over
channels) that the mask's regions explain, R² = between-region / total sum of squares. A mask that
lines up with its image explains it better than the same mask flipped or transposed, and better than
other samples' masks. So, per sample:

- a geometric alternative T (flipped left-right, upside down, rotated 90°, 180° or 270°, transposed) *wins* when
  the transformed mask fits the image more than 1.2 x better than the mask itself and better than
  every one of OTHERS unrelated masks (other samples' masks: how well a mask fits by chance). Masks
  transposed relative to their images lose to `transpose` on almost every sample; an augmentation
  that flips the image but not its mask loses to `hflip` on the samples it flipped.
- the mask itself *fits* when it beats every one of the OTHERS unrelated masks. Masks shuffled apart
  from their images fit no more often than chance, 1 / (OTHERS + 1).

Images are smoothed (3x3 mean) and pooled to at most 32 x 32, masks pooled as class fractions, so the
cost stays that of a few small matrix products. On images carrying little of their mask (low contrast,
heavy noise) every alternative wins about as rarely as chance, so nothing is called misaligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.batching import leaves

OTHERS = 16     # unrelated masks per sample: the chance level of fitting an image
RATIO = 1.2     # how much better a transformed mask must fit than the mask itself to win
GRID = 32       # images and masks are pooled to at most GRID x GRID


@dataclass(frozen=True)
class Alignment:
    """What `alignment` measured on n samples (shares of the samples where it applies)."""
    n: int
    wins: dict          # alternative -> share of samples (the mask changes under it) where it fits better
    fits: float         # share of samples whose mask fits its image better than every unrelated mask
    chance: float       # the share `fits` would have if masks were unrelated to images: 1 / (OTHERS + 1)


def image_for(inputs, masks):
    """The float input leaf that is an image of the masks' height and width ((N, C, H, W) or (N, H, W)),
    as (N, C, H, W), or None."""
    size = tuple(masks.shape[-2:])
    for t in leaves(inputs):
        t = torch.as_tensor(t)
        if t.is_floating_point() and t.dim() in (3, 4) and tuple(t.shape[-2:]) == size and len(t) == len(masks):
            return t if t.dim() == 4 else t[:, None]
    return None


def _fractions(masks, ignore_index, classes, rows: int = 32):
    """(N, K, h, w) share of each present class per pooled cell, and (N, h, w) share of valid pixels;
    built class by class on `rows` samples at a time, so large masks never exist as one-hot tensors."""
    parts, weights = [], []
    for chunk in masks.split(rows):
        valid = chunk != ignore_index
        parts.append(torch.cat([_pool(((chunk == c) & valid)[:, None].float()) for c in classes.tolist()], 1))
        weights.append(_pool(valid[:, None].float())[:, 0])
    return torch.cat(parts), torch.cat(weights)


def _pool(t):
    h, w = t.shape[-2:]
    return F.adaptive_avg_pool2d(t, (min(h, GRID), min(w, GRID))) if max(h, w) > GRID else t


def _r2(image, regions, weight):
    """(N,) share of each image's variance its regions explain. image (N, C, P); regions (N, K, P)
    class fractions per cell; weight (N, P) the valid share of each cell."""
    regions = regions * weight[:, None]
    total_w = weight.sum(1).clamp(min=1e-9)                                     # (N,)
    total_s = torch.einsum("ncp,np->nc", image, weight)                          # (N, C)
    total_ss = torch.einsum("ncp,np->nc", image ** 2, weight) - total_s ** 2 / total_w[:, None]
    counts = regions.sum(2).clamp(min=1e-9)                                      # (N, K)
    sums = torch.einsum("ncp,nkp->nck", image, regions)                          # (N, C, K)
    between = (sums ** 2 / counts[:, None]).sum(2) - total_s ** 2 / total_w[:, None]
    return between.sum(1) / total_ss.sum(1).clamp(min=1e-12)


def _alternatives(square: bool) -> dict:
    """Name -> the transform of (..., H, W) maps it stands for."""
    found = {"hflip": lambda m: m.flip(-1), "vflip": lambda m: m.flip(-2), "rot180": lambda m: m.flip(-1).flip(-2)}
    if square:
        found["transpose"] = lambda m: m.transpose(-1, -2)
        found["rot90"] = lambda m: m.rot90(1, (-2, -1))
        found["rot270"] = lambda m: m.rot90(-1, (-2, -1))
    return found


def alignment(image, masks, ignore_index=-100) -> Alignment:
    """How well `masks` (N, H, W) int line up with `image` (N, C, H, W) float: see the module docstring."""
    image = torch.nan_to_num(image.detach().float())
    masks = masks.detach().long()
    n = len(masks)
    image = F.avg_pool2d(_pool(image), 3, stride=1, padding=1, count_include_pad=False)
    pixels = image.reshape(n, image.shape[1], -1)
    classes = masks[masks != ignore_index].unique()
    if n < 2 or len(classes) < 2:
        return Alignment(n, {}, 1.0, 1.0)
    regions, weight = _fractions(masks, ignore_index, classes)                  # (N, K, h, w), (N, h, w)

    def fit(r, w):
        return _r2(pixels, r.reshape(n, len(classes), -1), w.reshape(n, -1))

    own = fit(regions, weight)
    others = min(OTHERS, n - 1)
    chance = torch.stack([fit(regions.roll(k, 0), weight * weight.roll(k, 0)) for k in range(1, others + 1)])
    unrelated = chance.max(0).values                                             # (N,)
    informative = (regions.flatten(2).sum(2) > 0).sum(1) >= 2                  # two classes or more in the mask
    wins = {}
    for name, transform in _alternatives(masks.shape[-1] == masks.shape[-2]).items():
        moved, moved_weight = transform(regions), transform(weight)
        changes = (moved - regions).abs().flatten(1).amax(1) > 1e-6
        both = weight * moved_weight
        theirs, mine = fit(moved, both), fit(regions, both)
        won = changes & informative & (theirs > RATIO * mine) & (theirs > unrelated)
        wins[name] = float(won.sum()) / max(int((changes & informative).sum()), 1)
    fits = float((own > unrelated)[informative].double().mean()) if informative.any() else 1.0
    return Alignment(n, wins, fits, 1.0 / (others + 1))
