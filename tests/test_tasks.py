"""Each task: a healthy tiny model trains with `fit`, its metrics equal an oracle computed with plain
torch / scikit-learn, and wrong shapes are one-line problems.

    .venv/bin/python -m pytest tests/test_tasks.py -q
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from torch import nn

from harness import Data, RecipeError, tasks
from harness.fit import evaluate, evaluate_loss_acc, fit


def split(x, y, n_val=64):
    return Data(train=(x[n_val:], y[n_val:]), val=(x[:n_val], y[:n_val]))


def outputs_of(model, x):
    with torch.no_grad():
        return model(x)


# --- the five tasks, each trained and measured ------------------------------------------------

def test_classification_trains_and_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 6, generator=g)
    y = (x[:, :3].argmax(1) + 3 * (x[:, 3] > 1).long()) % 4
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    data, task = split(x, y), tasks.Classification(4)
    h = fit(model, data, task=task, lr=0.3, batch_size=32, epochs=8)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.6
    got = evaluate(model, data.val, task=task, batch_size=24)
    pred = outputs_of(model, data.val[0]).argmax(1).numpy()
    true = data.val[1].numpy()
    p, r, f1, _ = skm.precision_recall_fscore_support(true, pred, average="macro", zero_division=0)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(true, pred))
    assert (got["precision_macro"], got["recall_macro"], got["f1_macro"]) == pytest.approx((p, r, f1))
    assert task.init_loss() == pytest.approx(math.log(4))


def test_multilabel_trains_and_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(320, 8, generator=g)
    y = (x[:, :3] + 0.3 * x[:, 3:6] > 0).float()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    data, task = split(x, y), tasks.MultiLabel(3)
    h = fit(model, data, task=task, lr=0.5, batch_size=32, epochs=8)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.7
    got = evaluate(model, data.val, task=task, batch_size=24)
    scores = outputs_of(model, data.val[0])
    pred, true = (scores > 0).numpy().astype(int), data.val[1].numpy().astype(int)
    assert got["f1_micro"] == pytest.approx(skm.f1_score(true, pred, average="micro"))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(true, pred, average="macro", zero_division=0))
    assert got["mAP"] == pytest.approx(skm.average_precision_score(true, scores.numpy(), average="macro"))
    # BCE with logits at p = 0.5 is ln 2 per label
    assert task.loss(torch.zeros(5, 3), torch.ones(5, 3)).item() == pytest.approx(task.init_loss())


@pytest.mark.parametrize("k", [1, 2])
def test_regression_trains_and_matches_sklearn(k):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(320, 5, generator=g)
    w = torch.randn(5, k, generator=g)
    y = x @ w + 0.1 * torch.randn(320, k, generator=g)
    y = y[:, 0] if k == 1 else y
    torch.manual_seed(0)
    head = nn.Linear(5, k)
    model = nn.Sequential(head, nn.Flatten(0)) if k == 1 else head
    data, task = split(x, y), tasks.Regression(k)
    h = fit(model, data, task=task, lr=0.05, batch_size=32, epochs=10)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.8   # val_acc holds R²
    got = evaluate(model, data.val, task=task, batch_size=24)
    pred, true = outputs_of(model, data.val[0]).numpy(), data.val[1].numpy()
    assert got["mse"] == pytest.approx(skm.mean_squared_error(true, pred), rel=1e-5)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(true, pred), rel=1e-5)
    assert got["r2"] == pytest.approx(skm.r2_score(true, pred), rel=1e-5)
    assert task.init_loss() is None


def test_regression_never_broadcasts_n1_against_n():
    task = tasks.Regression()
    problem = task.check_outputs(torch.zeros(8, 1), torch.zeros(8))
    assert problem and "\n" not in problem and "squeeze" in problem
    with pytest.raises(RecipeError, match="squeeze"):
        task.loss(torch.zeros(8, 1), torch.zeros(8))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    with pytest.raises(RecipeError, match=r"\(16, 1\) vs targets \(16,\)"):
        fit(nn.Linear(3, 1), Data(train=(x, x[:, 0]), val=None), task=task, lr=0.1, batch_size=16, epochs=1)


def _iou_oracle(true, pred, ignore):
    keep = true != ignore
    true, pred = true[keep], pred[keep]
    labels = np.union1d(np.unique(true), np.unique(pred))
    return skm.accuracy_score(true, pred), skm.jaccard_score(true, pred, labels=labels, average="macro")


def test_dense_segmentation_trains_and_matches_sklearn():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(192, 2, 6, 6, generator=g)
    y = (x[:, 0] > 0.5).long() + (x[:, 1] > 0.7).long()       # 3 classes per pixel
    y[:, 0, 0] = -100                                          # ignored positions
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 16, 1), nn.ReLU(), nn.Conv2d(16, 3, 1))
    data, task = split(x, y), tasks.Dense(3)
    h = fit(model, data, task=task, lr=0.5, batch_size=16, epochs=6)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.7
    got = evaluate(model, data.val, task=task, batch_size=20)
    pred = outputs_of(model, data.val[0]).argmax(1).numpy().ravel()
    acc, miou = _iou_oracle(data.val[1].numpy().ravel(), pred, -100)
    assert got["accuracy"] == pytest.approx(acc) and got["mean_iou"] == pytest.approx(miou)
    loss, _ = evaluate_loss_acc(model, data.val, task=task)
    expected = F.cross_entropy(outputs_of(model, data.val[0]), data.val[1], ignore_index=-100)
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_dense_tagging_with_class_dim_last():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(192, 7, 4, generator=g)
    y = x.argmax(-1)                                           # (N, T), 4 tags
    torch.manual_seed(0)
    model = nn.Linear(4, 4)                                    # (N, T, 4)
    data, task = split(x, y), tasks.Dense(4, class_dim=-1)
    h = fit(model, data, task=task, lr=1.0, batch_size=16, epochs=6)
    assert h.val_acc[-1] > 0.8
    got = evaluate(model, data.val, task=task)
    pred = outputs_of(model, data.val[0]).argmax(-1).numpy().ravel()
    acc, miou = _iou_oracle(data.val[1].numpy().ravel(), pred, -100)
    assert got["accuracy"] == pytest.approx(acc) and got["mean_iou"] == pytest.approx(miou)
    problem = task.check_outputs(torch.zeros(7, 8, 4), torch.zeros(8, 7, dtype=torch.long))
    assert problem and "\n" not in problem


class Bigram(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, ids):
        return self.head(self.emb(ids))                         # (N, T, V): each position sees its own token


def test_causal_lm_trains_and_matches_plain_torch():
    V, g = 8, torch.Generator().manual_seed(5)
    start = torch.randint(0, V, (256, 1), generator=g)
    ids = (start + torch.arange(10)) % V                        # next token = this token + 1
    targets = ids.clone()
    targets[:8, -3:] = -100                                     # padding, ignored
    torch.manual_seed(0)
    model = Bigram(V)
    data, task = split(ids, targets), tasks.CausalLM(V)
    h = fit(model, data, task=task, lr=1.0, batch_size=32, epochs=6)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.9
    got = evaluate(model, data.val, task=task)
    logits = outputs_of(model, data.val[0])[:, :-1].reshape(-1, V)
    labels = data.val[1][:, 1:].reshape(-1)
    keep = labels != -100
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == labels)[keep].float().mean()))
    nll = F.cross_entropy(logits, labels, ignore_index=-100)
    assert got["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-5)
    assert task.init_loss() == pytest.approx(math.log(V))


# --- shapes: one line each ------------------------------------------------------------------------

@pytest.mark.parametrize("task, outputs, targets, fragment", [
    (tasks.Classification(10), torch.zeros(4, 7), torch.zeros(4, dtype=torch.long), "(N, 10)"),
    (tasks.Classification(10), torch.zeros(3, 10), torch.zeros(4, dtype=torch.long), "3 samples but targets 4"),
    (tasks.MultiLabel(5), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), "Classification"),
    (tasks.Regression(2), torch.zeros(4, 3), torch.zeros(4, 2), "(4, 3) vs targets (4, 2)"),
    (tasks.Dense(3), torch.zeros(2, 3, 5, 5), torch.zeros(2, 4, 4, dtype=torch.long), "positions"),
    (tasks.CausalLM(50), torch.zeros(2, 6, 50), torch.zeros(6, 2, dtype=torch.long), "time-major"),
    (tasks.CausalLM(50), (torch.zeros(2, 6, 50),), torch.zeros(2, 6, dtype=torch.long), "not a tensor"),
])
def test_shape_mismatches_are_one_line(task, outputs, targets, fragment):
    problem = task.check_outputs(outputs, targets)
    assert problem and fragment in problem and "\n" not in problem


def test_healthy_shapes_pass():
    assert tasks.Classification(3).check_outputs(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])) is None
    assert tasks.Classification(3).check_outputs(torch.zeros(4, 3), torch.full((4, 3), 1 / 3)) is None
    assert tasks.MultiLabel(2).check_outputs(torch.zeros(4, 2), torch.ones(4, 2)) is None
    assert tasks.Regression().check_outputs(torch.zeros(4), torch.ones(4)) is None
    assert tasks.Dense(3).check_outputs(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)) is None
    assert tasks.CausalLM(9).check_outputs(torch.zeros(2, 5, 9), torch.zeros(2, 5, dtype=torch.long)) is None


def test_causal_lm_loss_shifts_by_one():
    V = 5
    ids = torch.tensor([[0, 1, 2, 3, 4]])
    perfect_next = F.one_hot((ids + 1) % V, V).float() * 50   # position t predicts token t + 1
    copy_input = F.one_hot(ids, V).float() * 50               # an unshifted model: predicts its own token
    task = tasks.CausalLM(V)
    assert task.loss(perfect_next, ids).item() < 1e-6
    assert task.loss(copy_input, ids).item() > 10


def test_tasks_skip_checks_that_do_not_apply_with_a_reason():
    assert tasks.Classification(3).skip_reason("class_balance") is None
    assert "regression" in tasks.Regression().skip_reason("class_balance")
    assert tasks.Regression().skip_reason("loss_at_init")
    assert tasks.Classification(3).skip_reason("causality")
    assert tasks.CausalLM(4).skip_reason("causality") is None


def test_counts_accept_numpy_integers_and_refuse_nonsense():
    assert tasks.Classification(np.int64(7)).num_classes == 7
    for bad in (1, 2.5, True, "10"):
        with pytest.raises(RecipeError):
            tasks.Classification(bad)


def test_metrics_keep_tallies_not_outputs():
    """Dense and regression meters keep a few sums per batch, not the (N, C, H, W) outputs."""
    meter = tasks.Dense(3).meter()
    for _ in range(5):
        meter.update(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4, 32, 32)))
    assert not meter.kept and all(t.numel() == 9 for t in meter.tallies)


# --- what the overfit check asks of a task: output groups and loss parts ------------------------

def test_default_output_groups_are_distinct_inputs():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    groups = tasks.Classification(3).output_groups(x, torch.zeros(3, 3))
    assert groups.shape == (3,) and groups[0] == groups[2] != groups[1]
    pair = (x, torch.tensor([0, 1, 1]))  # a tuple input: every leaf counts
    assert len(set(tasks.Regression().output_groups(pair, torch.zeros(3)).tolist())) == 3


def test_causal_lm_groups_outputs_by_prefix_and_position():
    ids = torch.tensor([[5, 1, 2, 3],
                        [5, 1, 7, 3],
                        [6, 1, 2, 3],
                        [5, 1, 2, 3]])
    groups = tasks.CausalLM(8).output_groups(ids, torch.zeros(4, 4, 8))
    assert groups.shape == (4, 4)
    assert sorted(set(groups.flatten().tolist())) == list(range(int(groups.max()) + 1))  # ids 0..K-1
    # oracle: two outputs share a group exactly when they sit at the same position after the same prefix
    for a in range(4):
        for b in range(4):
            for t in range(4):
                for s in range(4):
                    same = t == s and ids[a, :t + 1].tolist() == ids[b, :s + 1].tolist()
                    assert bool(groups[a, t] == groups[b, s]) == same, (a, b, t, s)


def test_causal_lm_groups_read_every_per_position_leaf_and_fall_back_to_whole_samples():
    ids = torch.tensor([[5, 1, 2], [5, 1, 2]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the same ids, padding at the end of the second
    groups = tasks.CausalLM(8).output_groups({"input_ids": ids, "attention_mask": mask}, torch.zeros(2, 3, 8))
    assert groups[0, :2].tolist() == groups[1, :2].tolist() and groups[0, 2] != groups[1, 2]
    flat = torch.tensor([[0.5, 1.0], [0.5, 1.0]])  # no (N, T) leaf: every sample and position apart
    groups = tasks.CausalLM(8).output_groups(flat, torch.zeros(2, 3, 8))
    assert groups[0].tolist() == groups[1].tolist() and len(set(groups[0].tolist())) == 3


def test_multilabel_loss_parts_are_the_per_label_bce():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(16, 5, generator=g), (torch.rand(16, 5, generator=g) > 0.5).float()
    oracle = torch.stack([F.binary_cross_entropy_with_logits(out[:, j], y[:, j]) for j in range(5)])
    assert torch.allclose(tasks.MultiLabel(5).loss_parts(out, y), oracle, atol=1e-6)
    assert tasks.MultiLabel(5).part_name(3) == "label 3"
    assert tasks.Classification(5).loss_parts(out, y.argmax(1)) is None


def test_coarse_grid_finds_logits_upsampled_from_a_smaller_map():
    coarse = torch.randn(3, 5, 8, 8)
    for mode, extra in (("bilinear", {"align_corners": False}), ("bilinear", {"align_corners": True}), ("nearest", {})):
        outputs = F.interpolate(coarse, size=(64, 64), mode=mode, **extra)
        down, up = tasks.Dense(5).output_space(outputs)
        assert down(outputs).shape == (3, 5, 8, 8), mode
        assert torch.allclose(up(down(outputs)), outputs, atol=1e-5), mode
    assert tasks.Dense(5).output_space(torch.randn(3, 5, 64, 64)) is None      # a logit per pixel (a U-Net)
    assert tasks.Dense(5).output_space(torch.ones(3, 5, 64, 64)) is None       # constant: nothing to tell
    assert tasks.Dense(5, class_dim=-1).output_space(torch.randn(3, 16, 5)) is None  # tagging
    assert tasks.Classification(5).output_space(torch.randn(3, 5)) is None


@pytest.mark.parametrize("size, stride", [(28, 16), (30, 8), (50, 32)])
def test_coarse_grid_finds_a_map_whose_stride_does_not_divide_the_image(size, stride):
    """DeepLabV3 on 28x28: a stride-16 backbone leaves a ceil(28/16) = 2 x 2 map, upsampled to 28 x 28."""
    h = -(-size // stride)
    outputs = F.interpolate(torch.randn(2, 4, h, h), size=(size, size), mode="bilinear", align_corners=False)
    down, up = tasks.Dense(4).output_space(outputs)
    assert down(outputs).shape == (2, 4, h, h)
    assert torch.allclose(up(down(outputs)), outputs, atol=1e-5)


def test_classification_overfit_rows_hold_every_class_equally_often():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (64,), generator=g)
    y[y == 3] = 4                                         # a batch without class 3, and class 4 twice as common
    rows = tasks.Classification(10).overfit_rows(y, 16)
    counts = torch.bincount(y[rows], minlength=10)
    present = torch.bincount(y, minlength=10) > 0
    assert bool((counts[present] == 2).all()) and int(counts[~present].sum()) == 0  # 9 classes, 16 // 9 = 1: two each
    rows = tasks.Classification(10).overfit_rows(y, 64)
    counts = torch.bincount(y[rows], minlength=10)[present]
    assert int(counts.max()) == 64 // 9 and rows.tolist() == sorted(rows.tolist())  # 7 each, in batch order
    assert len(set(rows.tolist())) == len(rows)
    assert tasks.Regression().overfit_rows(torch.randn(20), 16).tolist() == list(range(16))
    probabilities = torch.softmax(torch.randn(20, 10), 1)  # soft targets: the first rows
    assert tasks.Classification(10).overfit_rows(probabilities, 16).tolist() == list(range(16))


def test_overfit_hooks_have_defaults_for_a_task_that_does_not_subclass_task():
    from harness.checks import recipe_ops
    from harness.checks.overfit import overfit_rows

    class OwnTask:  # the four methods Recipe asks for, nothing else
        name = "own"
        loss = check_outputs = meter = skip_reason = staticmethod(lambda *a: None)

    recipe = type("R", (), {"task": OwnTask()})()
    assert overfit_rows(recipe, torch.zeros(20), 16).tolist() == list(range(16))
    assert recipe_ops.task_hook(recipe, "loss_parts")(torch.zeros(4, 2), torch.zeros(4, 2)) is None
    assert recipe_ops.task_hook(recipe, "output_groups")(torch.ones(3, 2), torch.zeros(3, 2)).tolist() == [0, 0, 0]


def test_unseen_classes_are_expected_only_for_a_class_per_token():
    """A token vocabulary (tags, seq2seq targets) keeps ids never used as targets; per-sample classes
    and per-pixel masks should hold every class (the labels check fails class_missing)."""
    assert tasks.Dense(10, class_dim=-1).unseen_classes_expected(torch.zeros(4, 7, dtype=torch.long))
    assert tasks.Dense(10).unseen_classes_expected(torch.zeros(4, 8, 8, dtype=torch.long)) is None
    assert tasks.Classification(10).unseen_classes_expected(torch.zeros(4, dtype=torch.long)) is None
