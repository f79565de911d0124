"""Each check, called directly: it fires on a deliberately broken setup and passes on a healthy one.

The suite-level proof (a planted bug fails `pytest -m sanity` naming the symptom) is in
test_gallery.py; here the numbers each check reports are compared with plain torch.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import data as D
from harness.checks import model as M
from harness.checks.overfit import check_overfit
from harness.checks.result import CheckResult
from harness.checks.step import check_train_step
from harness.checks.gradcheck import check_gradcheck
from harness.checks.overfit import reachable_loss
from harness import tasks
from harness import Data, Recipe
from harness.data import synthetic
from harness.models import mlp
from tests.gallery import bugs, healthy

torch.set_num_threads(1)


def data():
    return synthetic(n_train=200, n_val=60, n_test=60, shape=(1, 8, 8), num_classes=4, seed=0)


def recipe(**changes):
    base = dict(model=lambda: mlp(64, (32,), 4), data=data, num_classes=4, lr=0.1)
    base.update(changes)
    return Recipe(**base)


@pytest.fixture
def batch():
    x, y = data().train
    return x[:16], y[:16]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mlp(64, (32,), 4)


def test_message_has_the_five_parts():
    r = D.check_inputs_finite(Data(train=(torch.tensor([[math.nan]]), torch.tensor([0])), val=None))
    text = r.message()
    assert isinstance(r, CheckResult) and not r.passed
    for part in ("[inputs_not_finite]", "expected:", "why it matters:", "what to try:", "--harness-suppress inputs_finite", "read more:"):
        assert part in text


def test_split_shapes():
    d = data()
    assert D.check_split_shapes(d, recipe()).passed
    assert D.check_split_shapes(Data(train=(d.train[0], d.train[1][:-1]), val=d.val)).name == "split_lengths_differ"
    assert D.check_split_shapes(Data(train=(d.train[0][:0], d.train[1][:0]), val=d.val)).name == "split_empty"
    floats = Data(train=(d.train[0], d.train[1].float()), val=d.val)
    assert D.check_split_shapes(floats, recipe()).name == "targets_wrong_for_task"
    ids = Data(train=(torch.randint(0, 50, (200, 12)), d.train[1]), val=(torch.randint(0, 50, (60, 12)), d.val[1]))
    assert D.check_split_shapes(ids, recipe()).passed  # token ids are first class


def test_inputs_finite_and_range():
    d = data()
    assert D.check_inputs_finite(d).passed and D.check_input_range(d).passed
    raw = Data(train=((d.train[0] * 255).round(), d.train[1]), val=d.val)
    r = D.check_input_range(raw)
    assert r.name == "inputs_out_of_range" and "raw integer pixel" in r.message()
    assert f"max {float(raw.train[0].max()):.4g}" in r.observed  # the number comes from the data
    assert not D.check_input_range(d, input_range=(0.0, 0.5)).passed
    twice = Data(train=(d.train[0] / 255, d.train[1]), val=d.val)
    r = D.check_input_range(twice)
    assert r.name == "inputs_scale_too_small" and f"{float((d.train[0] / 255).max()):.4g}" in r.observed


def test_labels_range_missing_class_and_balance():
    d = data()
    assert D.check_labels(d, recipe()).passed
    assert D.check_labels(Data(train=(d.train[0], d.train[1] + 1), val=d.val), recipe()).name == "labels_out_of_range"
    only3 = d.train[1].clamp(max=2)
    assert D.check_labels(Data(train=(d.train[0], only3), val=d.val), recipe()).name == "class_missing"
    skew = d.train[1].clone()
    skew[5:] = 0
    r = D.check_class_balance(Data(train=(d.train[0], skew), val=d.val), recipe())
    assert r.name == "classes_imbalanced" and r.data["counts"] == torch.bincount(skew, minlength=4).tolist()
    assert D.check_class_balance(d, recipe()).passed
    regression = recipe(task=tasks.Regression(), num_classes=None)
    assert "skipped" in D.check_class_balance(d, regression).data  # never reported as passed


def _token_targets(vocab: int, reserved: int, n: int = 300, length: int = 12, seed: int = 0):
    """(ids, targets) of a seq2seq-shaped vocabulary: ids 0..reserved-1 are pad, bos, eos, unk; the
    decoder reads bos + the target tokens, targets are the tokens then eos, padding -100."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(reserved, vocab, (n, length - 1), generator=g)
    lengths = torch.randint(3, length, (n, 1), generator=g)
    real = torch.arange(length - 1) < lengths
    targets = torch.cat([torch.where(real, tokens, -100), torch.full((n, 1), -100)], 1)
    targets.scatter_(1, lengths, 2)                                        # eos after the last token
    inputs = torch.cat([torch.ones(n, 1, dtype=torch.long), torch.where(real, tokens, 0)], 1)  # bos, ..., pad 0
    return inputs, targets


def test_class_missing_skips_a_vocabularys_reserved_ids_but_not_a_missing_class():
    """A class per token (a seq2seq or tagging vocabulary) keeps ids that are never targets (pad 0,
    bos 1, unk 3 here): healthy. A class missing from one-class-per-sample or per-pixel targets still fails."""
    x, y = _token_targets(vocab=20, reserved=4)
    assert set(range(20)) - set(y[y >= 0].unique().tolist()) == {0, 1, 3}
    seq2seq = recipe(task=tasks.Dense(20, class_dim=-1), num_classes=None)
    r = D.check_labels(Data(train=(x, y), val=(x[:50], y[:50])), seq2seq)
    assert r.passed and "never appear as targets (0, 1, 3)" in r.observed, r
    d = data()  # classification: a real missing class still fails
    only3 = d.train[1].clamp(max=2)
    assert D.check_labels(Data(train=(d.train[0], only3), val=d.val), recipe()).name == "class_missing"
    masks = torch.randint(0, 3, (40, 8, 8), generator=torch.Generator().manual_seed(0))  # class 3 of 4 never drawn
    segmentation = recipe(task=tasks.Dense(4), num_classes=None)
    r = D.check_labels(Data(train=(torch.rand(40, 1, 8, 8), masks), val=None), segmentation)
    assert r.name == "class_missing", r


def test_splits_disjoint_counts_the_shared_samples():
    d = data()
    assert D.check_splits_disjoint(d).passed
    r = D.check_splits_disjoint(Data(train=d.train, val=(d.train[0][:7], d.train[1][:7]), test=d.test))
    assert r.name == "splits_overlap" and r.data["overlaps"] == {"train/val": 7}


def test_labels_predictable():
    d = data()
    assert D.check_labels_predictable(d, recipe()).passed
    y = d.train[1][torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    assert D.check_labels_predictable(Data(train=(d.train[0], y), val=d.val), recipe()).name == "labels_look_shuffled"
    yv = d.val[1][torch.randperm(60, generator=torch.Generator().manual_seed(1))]
    r = D.check_labels_predictable(Data(train=d.train, val=(d.val[0], yv)), recipe())
    assert r.name == "val_labels_look_shuffled"


def _shapes(n=256, size=32, contrast=0.6, noise=0.3, seed=0):
    """Segmentation on synthetic scenes: 1-3 ellipses or boxes of classes 1..4 on a textured background,
    each a colour `contrast` from the background's, plus pixel noise `noise`; masks (N, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images, masks = torch.zeros(n, 3, size, size), torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        background = torch.rand(3, 1, 1, generator=g)
        texture = 0.3 * F.interpolate(torch.randn(1, 3, 6, 6, generator=g), size=(size, size), mode="bilinear")[0]
        image = background + texture
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            ry, rx = (3 + torch.rand(2, generator=g) * size / 4).tolist()
            inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1) if torch.rand((), generator=g) < 0.5 \
                else ((yy - cy).abs() < ry) & ((xx - cx).abs() < rx)
            colour = background + contrast * (2 * torch.rand(3, 1, 1, generator=g) - 1)
            image = torch.where(inside, colour + texture, image)
            masks[i][inside] = int(torch.randint(1, 5, (1,), generator=g))
        images[i] = image + noise * torch.randn(3, size, size, generator=g)
    return images, masks


def test_r2_of_a_mask_matches_plain_torch():
    """The share of an image's variance its mask's regions explain, against a per-class loop."""
    from harness.checks.masks import _r2
    x, y = _shapes(n=3, seed=1)
    got = _r2(x.reshape(3, 3, -1), F.one_hot(y.reshape(3, -1), 5).movedim(-1, 1).float(), torch.ones(3, 32 * 32))
    for i in range(3):
        pixels, labels = x[i].reshape(3, -1), y[i].reshape(-1)
        total = ((pixels - pixels.mean(1, keepdim=True)) ** 2).sum()
        within = sum(((pixels[:, labels == k] - pixels[:, labels == k].mean(1, keepdim=True)) ** 2).sum()
                     for k in labels.unique())
        assert float(got[i]) == pytest.approx(float(1 - within / total), rel=1e-4)


def _segmentation(images, masks, val=None):
    return Data(train=(images, masks), val=val), recipe(task=tasks.Dense(5), num_classes=None)


@pytest.mark.parametrize("contrast, noise", [(0.6, 0.3), (0.3, 0.3), (0.15, 0.5), (0.05, 0.5)])
@pytest.mark.parametrize("seed", range(2))
def test_masks_misaligned_catches_transposed_and_flipped_masks_not_faint_images(contrast, noise, seed):
    """Masks that line up with their images pass, however faint the images (down to a contrast no
    alignment can be read from); transposed masks, and masks of images flipped or rotated alone, are
    named wherever the images show their objects."""
    x, y = _shapes(contrast=contrast, noise=noise, seed=seed)
    d, r = _segmentation(x, y)
    assert D.check_labels_predictable(d, r).passed, D.check_labels_predictable(d, r)
    if contrast < 0.3:
        return
    flipped = torch.rand(len(y), generator=torch.Generator().manual_seed(seed)) < 0.5
    for images, masks, moved in ((x, y.transpose(1, 2), "transposed"),
                                 (torch.where(flipped[:, None, None, None], x.flip(-1), x), y, "flipped left-right"),
                                 (torch.where(flipped[:, None, None, None], x.flip(-2), x), y, "flipped upside down"),
                                 (torch.where(flipped[:, None, None, None], x.rot90(1, (-2, -1)), x), y, "rotated 90°")):
        found = D.check_labels_predictable(*_segmentation(images, masks))
        assert found.name == "masks_misaligned" and moved in found.observed, (moved, found)


def test_masks_misaligned_leaves_out_ignored_pixels():
    """VOC-style masks: object borders marked 255 (the task's ignore_index) count for neither fit."""
    x, y = _shapes(n=256, seed=3)
    border = (F.max_pool2d(y[:, None].float(), 3, 1, 1)[:, 0] != -F.max_pool2d(-y[:, None].float(), 3, 1, 1)[:, 0])
    y = torch.where(border, 255, y)
    r = recipe(task=tasks.Dense(5, ignore_index=255), num_classes=None)
    assert D.check_labels_predictable(Data(train=(x, y), val=None), r).passed
    found = D.check_labels_predictable(Data(train=(x, y.transpose(1, 2)), val=None), r)
    assert found.name == "masks_misaligned" and "transposed" in found.observed, found


def test_masks_misaligned_reads_val_and_skips_what_has_no_image():
    x, y = _shapes(n=300)
    d, r = _segmentation(x[:256], y[:256], val=(x[256:], y[256:].transpose(1, 2)))
    found = D.check_labels_predictable(d, r)
    assert found.name == "masks_misaligned" and found.observed.startswith("val:"), found
    tagging = recipe(task=tasks.Dense(5, class_dim=-1), num_classes=None)
    tokens = Data(train=(torch.randn(64, 7, 3), torch.randint(0, 5, (64, 7))), val=None)
    assert "a class per token" in D.check_labels_predictable(tokens, tagging).data["skipped"]


def test_labels_predictable_reads_token_ids_as_a_bag():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    ids = torch.randint(0, 40, (400, 16), generator=g)
    ids[:, :4] = 40 + y.unsqueeze(1) * 3  # each class uses its own few ids
    d = Data(train=(ids[:300], y[:300]), val=(ids[300:], y[300:]))
    assert D.check_labels_predictable(d, recipe()).passed
    shuffled = Data(train=(ids[:300], y[:300][torch.randperm(300, generator=g)]), val=d.val)
    assert D.check_labels_predictable(shuffled, recipe()).name == "labels_look_shuffled"


def test_train_distinct_and_train_val_shift():
    d = data()
    assert D.check_train_distinct(d).passed and D.check_train_val_shift(d).passed
    small = Data(train=(d.train[0][:30], d.train[1][:30]), val=d.val)
    assert D.check_train_distinct(small).name == "train_smaller_than_val"
    tiled = Data(train=(d.train[0][:20].repeat(10, 1, 1, 1), d.train[1][:20].repeat(10)), val=d.val)
    r = D.check_train_distinct(tiled)
    assert r.name == "train_rows_mostly_duplicates" and r.data["distinct"] == pytest.approx(20 / 200)
    shifted = Data(train=d.train, val=(d.val[0] * 255, d.val[1]))
    r = D.check_train_val_shift(shifted)
    oracle = float(d.val[0].mul(255).double().std() / d.train[0].double().std())
    assert r.name == "train_val_distribution_shift" and r.data["scale"] == pytest.approx(oracle, rel=1e-6)


def test_data_checks_read_a_bounded_sample():
    n = 300_000  # larger than any sample: the checks must not read it whole
    x = torch.rand(n, 4)
    y = torch.arange(n) % 4
    calls = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            calls.append(i)
            return x[i], y[i]
    d = Data(train=Counting(), val=(x[:500], y[:500]))
    for check in (D.check_inputs_finite, D.check_input_range, D.check_train_distinct):
        check(d)
    assert len(set(calls)) <= D.SAMPLE + 8


def test_output_shape(model, batch):
    assert M.check_output_shape(recipe(), model, batch).passed
    assert M.check_output_shape(recipe(num_classes=5), model, batch).name == "output_shape_wrong"
    assert M.check_output_shape(recipe(), nn.Linear(3, 4), batch).name == "forward_crashed"


def test_outputs_are_logits(model, batch):
    assert M.check_outputs_not_probabilities(recipe(), model, batch).passed
    soft = nn.Sequential(model, nn.Softmax(1))
    assert M.check_outputs_not_probabilities(recipe(), soft, batch).name == "outputs_are_probabilities"


def test_loss_at_init_matches_plain_torch(model, batch):
    r = M.check_loss_at_init(recipe(), model, batch)
    with torch.no_grad():
        oracle = F.cross_entropy(model(batch[0]), batch[1]).item()
    assert r.passed and r.data["loss"] == pytest.approx(oracle)
    with torch.no_grad():
        model[-1].weight.mul_(200)
    assert M.check_loss_at_init(recipe(), model, batch).name == "loss_at_init_too_high"
    cheat = lambda out, y: F.cross_entropy(out, y) * 0.1  # noqa: E731
    torch.manual_seed(0)
    assert M.check_loss_at_init(recipe(loss=cheat), mlp(64, (32,), 4), batch).name == "loss_at_init_too_low"


def test_init_logit_scale_matches_plain_torch(model, batch):
    r = M.check_init_logit_scale(recipe(), model, batch)
    with torch.no_grad():
        model.eval()
        oracle = float(model(batch[0]).std(1).mean())
        model.train()
    assert r.passed and r.data["spread"] == pytest.approx(oracle, rel=1e-5)
    with torch.no_grad():
        model[-1].weight.mul_(100)
    r = M.check_init_logit_scale(recipe(), model, batch)
    assert r.name == "logits_overconfident_at_init" and "top softmax probability" in r.observed


def _unscaled_bn_net(head_scale=1.0):
    """Features 40 x too large into BatchNorm: in eval mode at init (running mean 0, variance 1) they pass
    unnormalised, as the eval-mode activations of a deep stock ResNet grow; train mode normalises them."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        net[1].weight.mul_(40.0)
        net[-1].weight.mul_(head_scale)
    return net


def test_loss_and_logit_scale_at_init_judge_batchnorm_models_in_train_mode_too(batch):
    """At init BatchNorm's running statistics are not estimated: eval-mode logits of torchvision's
    ResNet-50 (loss 2.3 x ln C), ResNet-101 (88 x) and FCN-ResNet50 (2.9 x) are far off while their
    train-mode ones, what training starts from, are not. A head scaled up fails in both modes."""
    import torchvision.models as tvm
    healthy_net = _unscaled_bn_net()
    healthy_net.eval()
    with torch.no_grad():
        assert float(F.cross_entropy(healthy_net(batch[0]), batch[1])) > 2 * math.log(4)  # what failed before
    for build in (_unscaled_bn_net, lambda: tvm.resnet101(num_classes=4)):
        torch.manual_seed(0)
        model = build()
        x = batch[0] if build is _unscaled_bn_net else F.interpolate(batch[0][:8], size=32).repeat(1, 3, 1, 1)
        r = recipe(model=build)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        loss, scale = M.check_loss_at_init(r, model, (x, batch[1][:len(x)])), M.check_init_logit_scale(r, model, (x, batch[1][:len(x)]))
        assert loss.passed and "in train mode" in loss.observed, loss
        assert scale.passed, scale
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # running statistics untouched
    huge = _unscaled_bn_net(head_scale=30.0)
    assert M.check_loss_at_init(recipe(), huge, batch).name == "loss_at_init_too_high"
    assert M.check_init_logit_scale(recipe(), huge, batch).name == "logits_overconfident_at_init"


def test_gradients(model, batch):
    assert M.check_gradients(recipe(), model, batch).passed

    def dead():  # the bug is in the factory: the check also looks at freshly built models (checks.reach)
        torch.manual_seed(0)
        built = mlp(64, (32,), 4)
        with torch.no_grad():
            built[1].bias.fill_(-100.0)
        return built
    r = M.check_gradients(recipe(model=dead), dead(), batch)
    assert r.name == "params_get_zero_gradient" and "1.weight" in r.observed


class _MaskedMoE(healthy.TopOneMoE):
    """The same top-1 router, written densely: every expert runs on every row and the one-hot gate
    zeroes the ones not picked, so an expert no sample is routed to gets an all-zero gradient."""

    def forward(self, x):
        h = self.trunk(x)
        gate, choice = self.router(h).softmax(-1).max(-1)
        picked = F.one_hot(choice, len(self.experts)).to(h.dtype) * gate[:, None]       # (N, E)
        return self.head(h + (picked[..., None] * torch.stack([e(h) for e in self.experts], 1)).sum(1))


def _digit_batches(seed, rows=64):
    from harness.data import digits28
    x, y = digits28().train
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:2 * rows]
    return (x[index[:rows]], y[index[:rows]]), (x[index[rows:]], y[index[rows:]])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("moe", [healthy.TopOneMoE, _MaskedMoE])
def test_gradients_and_one_step_pass_a_mixture_of_experts(seed, moe):
    """Conditional computation is not a bug: an expert its router sends no sample of the batch to gets
    no (or a zero) gradient from it, but does from other rows or another initialisation; it trains to
    0.93 (tests/gallery/healthy.py:TOP1_MOE). Both checks failed it before (R's MOE_TOP1, 2026-11-30)."""
    r = healthy.TOP1_MOE.replace(model=moe)
    first, second = _digit_batches(seed)
    torch.manual_seed(seed)
    model = r.build_model()
    F.cross_entropy(model(first[0]), first[1]).backward()
    idle = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    model.zero_grad(set_to_none=True)
    assert idle and all(n.startswith("experts.") for n in idle)  # the batch leaves some experts out
    g = M.check_gradients(r, model, first, more=[second], seed=seed)
    assert g.passed and "conditional computation" in g.observed, g
    o = M.check_one_step(r, model, first, more=[second], seed=seed)
    assert o.passed, o


class _Unused(nn.Module):  # a layer built but never called
    def __init__(self):
        super().__init__()
        self.a, self.extra, self.out = nn.Linear(784, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.out(torch.relu(self.a(x.flatten(1))))


class _StackOffByOne(nn.Module):  # a ModuleList whose loop leaves out its last layer
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(784, 64), nn.Linear(64, 10)
        self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(2))

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h))
        return self.out(h)


@pytest.mark.parametrize("model, symptom, names", [
    (bugs._DetachedMLP, "params_get_no_gradient", "first.weight"),
    (_Unused, "params_get_no_gradient", "extra.weight"),
    (_StackOffByOne, "params_get_no_gradient", "layers.1.weight"),
    (bugs._dead_relu_mlp, "params_get_zero_gradient", "1.weight")])
def test_gradients_still_catch_what_no_row_or_initialisation_reaches(model, symptom, names):
    """Looking at other rows and fresh models does not excuse a cut graph, an unused layer or dead units."""
    r = bugs._recipe("bug", model=model)
    first, second = _digit_batches(0)
    torch.manual_seed(0)
    built = r.build_model()
    g = M.check_gradients(r, built, first, more=[second], seed=0)
    assert g.name == symptom and names in g.observed, g
    o = M.check_one_step(r, built, first, more=[second], seed=0)
    assert o.name == "params_not_updated" and names in o.observed, o


def test_one_step_does_not_excuse_a_train_step_that_leaves_a_layer_out_of_its_loss(batch):
    """The reference loss reaches the second head, the recipe's own step never moves it: not a branch
    the batch did not take (that excuse is for what the reference loss does not reach either)."""
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk, self.a, self.b = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU()), nn.Linear(32, 4), nn.Linear(32, 4)

        def forward(self, x):
            h = self.trunk(x)
            return self.a(h) + self.b(h)

    def one_head_step(model, x, y, optimizer, loss_fn):
        optimizer.zero_grad()
        loss = loss_fn(model.a(model.trunk(x)), y)  # bug: head b is left out of the loss
        loss.backward()
        optimizer.step()
        return loss

    r = recipe(model=TwoHeads, train_step=one_head_step)
    torch.manual_seed(0)
    o = M.check_one_step(r, r.build_model(), batch, more=[batch], seed=0)
    assert o.name == "params_not_updated" and "b.weight" in o.observed, o


def test_gradients_and_one_step_accept_zero_initialised_last_layers(batch):
    torch.manual_seed(0)
    zero_head = mlp(64, (32, 32), 4)
    with torch.no_grad():
        zero_head[-1].weight.zero_()  # as torchvision's ViT head: the layers behind get gradient at step 2
    assert M.check_gradients(recipe(), zero_head, batch).passed
    assert M.check_one_step(recipe(), zero_head, batch).passed
    assert M.check_one_step(recipe(optimizer=lambda p, lr: torch.optim.Adam(p, lr=1e-3)), zero_head, batch).passed


def test_gradcheck(model, batch):
    assert check_gradcheck(recipe(), model, batch).passed
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), bugs._CustomReLU(), nn.Linear(32, 4))
    assert check_gradcheck(recipe(), wrong, batch).name == "gradient_mismatches_finite_differences"

    class Float32Only(nn.Module):  # builds a float32 tensor inside forward: cannot run in float64
        def __init__(self):
            super().__init__()
            self.net = mlp(64, (32,), 4)

        def forward(self, x):
            return self.net(x) + torch.zeros(4, dtype=torch.float32) @ torch.ones(4, 4, dtype=torch.float32)
    r = check_gradcheck(recipe(), Float32Only(), batch)
    assert r.passed or "skipped" in r.data


def test_registered_submodules():
    assert M.check_registered_submodules(mlp(64, (32,), 4)).passed
    assert M.check_registered_submodules(nn.LSTM(4, 4)).passed  # torch's own private lists are fine
    assert M.check_registered_submodules(bugs._ListMLP()).name == "unregistered_submodules"


def test_one_step(model, batch):
    assert M.check_one_step(recipe(), model, batch).passed
    half = recipe(optimizer=lambda params, lr: torch.optim.SGD(list(params)[2:], lr=lr))
    assert M.check_one_step(half, model, batch).name == "params_not_in_optimizer"
    model[1].weight.requires_grad_(False)
    r = M.check_one_step(recipe(), model, batch)
    assert r.passed and "1 frozen unchanged" in r.observed

    def writes_frozen(m, x, y, opt, loss_fn):
        with torch.no_grad():
            m[1].weight.add_(1.0)
        return bugs._step_without_zero_grad(m, x, y, opt, loss_fn)
    assert M.check_one_step(recipe(train_step=writes_frozen), model, batch).name == "frozen_params_changed"


def test_batch_independence_and_eval_determinism(model, batch):
    assert M.check_batch_independence(recipe(), model, batch).passed
    assert M.check_eval_deterministic(recipe(), model, batch).passed
    x28 = torch.rand(16, 1, 28, 28)
    r28 = recipe(num_classes=10)
    assert M.check_batch_independence(r28, bugs._MixingMLP(), (x28, batch[1])).name == "batch_samples_interact"
    assert M.check_eval_deterministic(r28, bugs._AlwaysDropout(), (x28, batch[1])).name == "eval_not_deterministic"
    # a coupling that flows one way along the batch (an RNN run over dim 0) shows from sample 0
    assert M.check_batch_independence(r28, bugs._TimeMajorLSTM(), (x28, batch[1])).name == "batch_samples_interact"
    bn_train_coupling = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    assert M.check_batch_independence(recipe(), bn_train_coupling, batch).passed  # eval mode: no coupling


def test_batch_independence_backward_catches_a_gradient_only_coupling(batch):
    class GradientCoupling(nn.Module):  # outputs per sample, but a mean over the batch enters detached-free
        def __init__(self):
            super().__init__()
            self.net = mlp(64, (32,), 4)

        def forward(self, x):
            out = self.net(x)
            return out + 0 * out.mean(0, keepdim=True)  # forward unchanged, gradient flows across samples
    r = M.check_batch_independence(recipe(), GradientCoupling(), batch)
    assert r.passed or r.name == "batch_gradients_interact"  # 0 * grad is exactly zero: no false alarm


def test_causality():
    class TinyLM(nn.Module):
        def __init__(self, causal=True):
            super().__init__()
            self.causal = causal
            self.emb = nn.Embedding(20, 16)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.out = nn.Linear(16, 20)

        def forward(self, ids):
            h = self.emb(ids)
            T = ids.shape[1]
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if self.causal else None
            return self.out(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])
    lm = recipe(task=tasks.CausalLM(20), num_classes=None)
    ids = torch.randint(0, 20, (8, 10), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    assert M.check_causality(lm, TinyLM(), (ids, ids)).passed
    assert M.check_causality(lm, TinyLM(causal=False), (ids, ids)).name == "future_tokens_leak"
    assert "skipped" in M.check_causality(recipe(), TinyLM(), (ids, ids)).data  # classification: n/a


def _two_batches():
    x, y = data().train
    return [(x[:32], y[:32]), (x[32:64], (y[32:64] + 1) % 4)]


def clip_norm_step(model, x, y, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y) * 4.0  # a scaled loss and a clipped gradient keep its direction
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.01)
    optimizer.step()
    return loss


def clip_value_step(model, x, y, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    optimizer.step()
    return loss


@pytest.mark.parametrize("step", [None, clip_norm_step, clip_value_step])
def test_train_step_accepts_correct_steps(model, step):
    r = check_train_step(recipe(train_step=step), model, _two_batches())
    assert r.passed, r.message()
    r = check_train_step(recipe(train_step=step, optimizer=lambda p, lr: torch.optim.Adam(p, lr=1e-3)), model,
                         _two_batches())
    assert r.passed, r.message()


@pytest.mark.parametrize("step, symptom", [
    (bugs._step_without_zero_grad, "gradients_accumulate_across_steps"),
    (bugs._step_before_backward, "optimizer_steps_before_backward"),
])
def test_train_step_catches_broken_steps(model, step, symptom):
    assert check_train_step(recipe(train_step=step), model, _two_batches()).name == symptom


def test_train_step_catches_a_skipped_step(model):
    calls = []

    def skip_second(m, x, y, opt, loss_fn):
        calls.append(1)
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        if len(calls) == 1:
            opt.step()
        return loss
    assert check_train_step(recipe(train_step=skip_second), model, _two_batches()).name == "optimizer_step_skipped"


def test_overfit(model, batch):
    r = check_overfit(recipe(), model, batch)
    assert r.passed and "SGD(lr=0.1" in r.observed  # the recipe's own optimizer and lr
    torch.manual_seed(0)
    soft = nn.Sequential(mlp(64, (32,), 4), nn.Softmax(1))
    r = check_overfit(recipe(), soft, batch, max_steps=300)
    assert r.name == "cannot_overfit_batch" and "softmax" in r.message()
    torch.manual_seed(0)
    assert check_overfit(recipe(), mlp(64, (32,), 4), (batch[0][:1], batch[1][:1]), max_steps=150).passed


def test_overfit_names_the_recipe_settings_when_they_are_the_problem(batch):
    torch.manual_seed(0)
    tiny = recipe(optimizer=lambda p, lr: torch.optim.Adam(p, lr=lr), lr=1e-7)
    r = check_overfit(tiny, mlp(64, (32,), 4), batch, max_steps=200)
    assert r.name == "recipe_settings_cannot_overfit" and "Adam(lr=1e-07" in r.message()
    torch.manual_seed(0)
    decay = recipe(optimizer=lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=5.0))
    assert check_overfit(decay, mlp(64, (32,), 4), batch, max_steps=200).name == "recipe_settings_cannot_overfit"


def test_overfit_target_comes_from_what_the_loss_can_reach(batch):
    smooth = lambda out, y: F.cross_entropy(out, y, label_smoothing=0.2)  # noqa: E731
    torch.manual_seed(0)
    r = check_overfit(recipe(loss=smooth), mlp(64, (32,), 4), batch)
    assert r.passed, r.message()
    # the floor of label-smoothed cross-entropy, from plain torch: the smoothed target's entropy
    q = torch.full((4,), 0.2 / 4)
    q[0] += 0.8
    oracle = float(-(q * q.log()).sum())
    floor = reachable_loss(recipe(loss=smooth), torch.zeros(16, 4), batch[1])
    assert floor == pytest.approx(oracle, rel=1e-2)
    ignore = lambda out, y: F.cross_entropy(out, torch.where(y == 0, -100, y), ignore_index=-100)  # noqa: E731
    assert reachable_loss(recipe(loss=ignore), torch.zeros(16, 4), batch[1]) < 0.01


def _prefix_entropy(ids, targets, ignore_index=-100):
    """Oracle for a causal LM's reachable loss: at each position, sequences sharing a prefix can only
    be given one distribution, so the best loss is the entropy of their next tokens (plain Python)."""
    from collections import Counter, defaultdict
    total, count = 0.0, 0
    for t in range(ids.shape[1] - 1):
        nexts = defaultdict(Counter)
        for row, target in zip(ids.tolist(), targets.tolist()):
            if target[t + 1] != ignore_index:
                nexts[tuple(row[:t + 1])][target[t + 1]] += 1
        for c in nexts.values():
            n = sum(c.values())
            total -= sum(k * math.log(k / n) for k in c.values())
            count += n
    return total / count


def _random_text_lm(seed, vocab=4, length=8, n=64, pad_from=None):
    """A tiny causal transformer (examples/causal_lm.py) on uniformly random text: the first
    positions cannot be predicted, the later ones (unique prefixes) can be memorised."""
    from tests.gallery.task_bugs import example
    ex = example("causal_lm")
    ids = torch.randint(vocab, (n, length), generator=torch.Generator().manual_seed(seed))
    targets = ids.clone()
    if pad_from is not None:  # right padding on every other sequence: no target there
        targets[::2, pad_from:] = -100
    rec = Recipe(model=lambda: ex.TinyGPT(ex.GPTConfig(vocab_size=vocab, block_size=length)),
                 data=lambda: Data(train=(ids, targets), val=(ids, targets)), task=tasks.CausalLM(vocab),
                 optimizer=ex.adamw, lr=3e-3, batch_size=n, epochs=1)
    return rec, ids, targets


def test_causal_lm_floor_is_the_entropy_after_each_shared_prefix():
    torch.manual_seed(0)
    for pad_from in (None, 5):
        rec, ids, targets = _random_text_lm(0, pad_from=pad_from)
        outputs = rec.forward(rec.build_model(), ids).detach()
        oracle = _prefix_entropy(ids, targets)
        assert oracle > 0.3  # random text: its first tokens cannot be memorised
        assert reachable_loss(rec, outputs, targets, inputs=ids) == pytest.approx(oracle, abs=0.01)
        assert reachable_loss(rec, outputs, targets) < 0.02  # one free output per sequence: the old, wrong floor


@pytest.mark.parametrize("seed", [0, 1])
def test_overfit_passes_a_healthy_causal_lm_on_random_text(seed):
    rec, ids, targets = _random_text_lm(seed)
    torch.manual_seed(seed)
    r = check_overfit(rec, rec.build_model(), (ids, targets))
    assert r.passed, r.message()
    assert float(r.observed.split("reachable floor ")[1].split(",")[0]) > 0.3


def test_overfit_catches_a_causal_lm_that_ignores_its_input():
    rec, ids, targets = _random_text_lm(0, vocab=8)
    from tests.gallery.task_bugs import example
    ex = example("causal_lm")

    class PositionsOnly(ex.TinyGPT):
        def forward(self, ids):
            positions = torch.arange(ids.shape[1])
            return self.head(self.ln_f(self.blocks(self.tok(positions.expand_as(ids)) + self.pos(positions))))
    torch.manual_seed(0)
    model = PositionsOnly(ex.GPTConfig(vocab_size=8, block_size=8))
    assert check_overfit(rec, model, (ids, targets), max_steps=200).name == "cannot_overfit_batch"


class _StrideEightSeg(nn.Module):
    """Stride-8 features, logits upsampled bilinearly to the input's size, as torchvision's FCN,
    DeepLabV3 and LR-ASPP do: on 32x32 images the logits live on a 4x4 grid."""

    def __init__(self, classes=11):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(64, classes, 1))

    def forward(self, x):
        return F.interpolate(self.net(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _digit_masks_32(n=16):
    from harness.data import digits28
    x, labels = digits28().train
    x = F.interpolate(x[:n], size=(32, 32), mode="bilinear", align_corners=False)
    return x, torch.where(x[:, 0] > 0.3, labels[:n, None, None] + 1, 0)  # (n, 32, 32): 0 background, 1 + digit


def test_segmentation_floor_counts_logits_upsampled_from_a_coarse_grid():
    x, y = _digit_masks_32()
    rec = Recipe(model=_StrideEightSeg, data=lambda: Data(train=(x, y), val=(x, y)), task=tasks.Dense(11),
                 optimizer=lambda p, lr: torch.optim.Adam(p, lr=lr), lr=3e-3, batch_size=16, epochs=1)
    torch.manual_seed(0)
    model = rec.build_model()
    outputs = model(x).detach()
    # oracle: the best cross-entropy of any 4x4 logits upsampled as the model does (plain torch)
    coarse = torch.zeros(16, 11, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([coarse], lr=0.2)
    for _ in range(400):
        opt.zero_grad()
        loss = F.cross_entropy(F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False), y)
        loss.backward()
        opt.step()
    oracle = float(loss.detach())
    assert oracle > 0.1  # thin strokes cannot be drawn from a 4x4 grid
    assert reachable_loss(rec, outputs, y, inputs=x) == pytest.approx(oracle, abs=0.01)
    r = check_overfit(rec, model, (x, y))
    assert r.passed, r.message()  # judged against a free logit per pixel (floor 0.001) it failed: loss 0.187


def _many_labels(labels=40, n=64, dead=()):
    """Random features, random 0/1 labels: every label can be memorised; `dead` labels are a constant."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 32, generator=g), (torch.rand(n, labels, generator=g) < 0.3).float()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, labels))
            self.constant = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            out = self.net(x).clone()
            out[:, list(dead)] = self.constant  # a bias-only label: its frequency, never the sample's answer
            return out
    rec = Recipe(model=Net, data=lambda: Data(train=(x, y), val=(x, y)), task=tasks.MultiLabel(labels),
                 optimizer=lambda p, lr: torch.optim.Adam(p, lr=lr), lr=1e-3, batch_size=n, epochs=1)
    return rec, x, y


def test_overfit_judges_each_label_of_a_multilabel_task():
    torch.manual_seed(0)
    rec, x, y = _many_labels()
    assert check_overfit(rec, rec.build_model(), (x, y)).passed
    torch.manual_seed(0)
    rec, x, y = _many_labels(dead=(39,))
    r = check_overfit(rec, rec.build_model(), (x, y))
    assert r.name == "cannot_overfit_batch" and "1 of 40 labels did not close their gap: label 39" in r.observed
    # the mean over 40 labels reached its target: judged as a whole, the dead label would have passed
    loss, target = (float(r.observed.split(" -> ")[1].split(" ")[0]),
                    float(r.observed.split("target ")[1].split(")")[0]))
    assert loss <= target, r.observed


def test_overfit_passes_a_batchnorm_model_whose_running_statistics_lag(batch):
    torch.manual_seed(0)
    slow_bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32, momentum=0.001), nn.ReLU(),
                            nn.Linear(32, 4))
    r = check_overfit(recipe(), slow_bn, batch)
    assert r.passed and "re-estimated" in r.observed


def test_batchnorm_re_estimated_on_the_batch_makes_eval_mode_compute_what_train_mode_did():
    from harness.checks.overfit import _recalibrate_batchnorm
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(64, 32)]
    for _ in range(8):  # deep, on 10 rows: BatchNorm's stored (unbiased) variance is 10/9 of what train mode used
        layers += [nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32)]
    model = nn.Sequential(*layers, nn.Linear(32, 4))
    x = data().train[0][:10]
    with torch.no_grad():
        train_mode = model.train()(x)  # the oracle: what train mode computes on this batch
    _recalibrate_batchnorm(recipe(), model, x)
    with torch.no_grad():
        eval_mode = model.eval()(x)
    assert torch.allclose(eval_mode, train_mode, atol=1e-4), float((eval_mode - train_mode).abs().max())


def test_overfit_catches_a_model_that_differs_in_eval_mode(batch):
    class EvalBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(64, (32,), 4)

        def forward(self, x):
            out = self.net(x)
            return out if self.training else out.flip(1)  # bug: eval mode permutes the classes
    torch.manual_seed(0)
    assert check_overfit(recipe(), EvalBranch(), batch).name == "overfit_lost_in_eval_mode"


def test_augmentation_labels():
    from tests.gallery.bugs import AugmentedDigits, _rotate_half_180
    from tests.gallery.healthy import _shift
    from harness.data import digits28
    d = digits28()
    r10 = recipe(num_classes=10)
    assert "skipped" in D.check_augmentation_labels(d, r10).data  # tensors: no augmentation to check
    torch.manual_seed(0)
    healthy = D.check_augmentation_labels(Data(train=AugmentedDigits(d.train, _shift), val=d.val), r10)
    assert healthy.passed and "skipped" not in healthy.data, healthy.message()
    torch.manual_seed(0)
    bug = D.check_augmentation_labels(Data(train=AugmentedDigits(d.train, _rotate_half_180), val=d.val), r10)
    assert bug.name == "augmentation_changes_labels"


def test_input_dtype_mismatch_is_flagged_only_against_the_first_layer(batch):
    ids = torch.randint(0, 20, (16, 8))
    bag = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(64, 4))
    assert M.check_output_shape(recipe(), bag, (ids, batch[1])).passed  # token ids into an embedding
    assert M.check_output_shape(recipe(), bag, (ids.float(), batch[1])).name == "inputs_not_ids"
    r = M.check_output_shape(recipe(), mlp(64, (32,), 4), ((batch[0] * 255).long(), batch[1]))
    assert r.name == "inputs_not_float"


def test_float_dtype_mismatch_names_both_dtypes(model, batch):
    r = M.check_output_shape(recipe(), model, (batch[0].half(), batch[1]))
    assert r.name == "inputs_dtype_differs_from_model" and "torch.float16" in r.observed


def test_loss_per_label_catches_softmax_over_labels():
    from harness.checks.loss import check_loss_per_label
    y = (torch.rand(16, 5, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    multi = recipe(task=tasks.MultiLabel(5), num_classes=None)
    assert check_loss_per_label(multi, (torch.zeros(16, 3), y)).passed  # the task's BCE with logits
    softmax_ce = multi.replace(loss=lambda out, t: F.cross_entropy(out, t))
    assert check_loss_per_label(softmax_ce, (torch.zeros(16, 3), y)).name == "labels_compete_in_loss"
    assert "skipped" in check_loss_per_label(recipe(), (torch.zeros(16, 3), torch.zeros(16).long())).data


def test_target_shift_catches_an_unshifted_and_a_doubly_shifted_loss():
    from harness.checks.loss import check_target_shift
    ids = torch.randint(0, 20, (8, 12), generator=torch.Generator().manual_seed(0))
    lm = recipe(task=tasks.CausalLM(20), num_classes=None)
    r = check_target_shift(lm, (ids, ids))
    assert r.passed, r.message()
    unshifted = lm.replace(loss=lambda out, t: F.cross_entropy(out.flatten(0, 1), t.flatten()))
    assert check_target_shift(unshifted, (ids, ids)).name == "targets_not_shifted"
    pre_shifted = ids.roll(-1, 1)  # targets already shifted, and the task's loss shifts again
    assert check_target_shift(lm, (ids, pre_shifted)).name == "targets_shifted_twice"


def test_checks_that_need_the_loss_defer_to_output_shape(model, batch):
    wide = nn.Sequential(model, nn.Linear(4, 5))  # 5 outputs for 4 classes: output_shape's finding
    assert M.check_output_shape(recipe(), wide, batch).name == "output_shape_wrong"
    for result in (M.check_gradients(recipe(), wide, batch), M.check_one_step(recipe(), wide, batch),
                   check_gradcheck(recipe(), wide, batch), check_overfit(recipe(), wide, batch)):
        assert "skipped" in result.data and "output_shape" in result.data["skipped"]


def test_train_step_compares_only_the_parameters_the_optimizer_holds(model):
    head_only = recipe(optimizer=lambda params, lr: torch.optim.SGD(list(params)[-2:], lr=lr))
    r = check_train_step(head_only, model, _two_batches())
    assert r.passed, r.message()
