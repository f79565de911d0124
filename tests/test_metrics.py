"""Classification's macro scores are computed from counts, without importing sklearn.metrics:
they must equal scikit-learn's precision_recall_fscore_support(average="macro", zero_division=0)."""
import warnings

import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from harness.tasks import macro_scores


def sklearn_scores(true, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on the 0/0 classes it sets to 0
        p, r, f1, _ = precision_recall_fscore_support(true.numpy(), pred.numpy(), average="macro", zero_division=0)
    return {"precision_macro": p, "recall_macro": r, "f1_macro": f1}


@pytest.mark.parametrize("seed", range(20))
def test_macro_scores_equal_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(50):
        n, classes = int(torch.randint(1, 80, (1,), generator=g)), int(torch.randint(1, 15, (1,), generator=g))
        true = torch.randint(0, classes, (n,), generator=g)
        pred = torch.where(torch.rand(n, generator=g) < 0.6, true, torch.randint(0, classes, (n,), generator=g))
        assert macro_scores(true, pred) == pytest.approx(sklearn_scores(true, pred), abs=1e-12)


@pytest.mark.parametrize("true, pred", [
    ([0, 0, 0], [0, 0, 0]),              # one class, all right
    ([3, 3, 3], [5, 5, 5]),              # classes only in pred or only in true (never predicted: 0/0)
    ([0, 1, 2, 9], [9, 9, 9, 9]),        # one predicted class, gaps in the numbering
    ([7], [2]),
])
def test_macro_scores_edge_cases(true, pred):
    true, pred = torch.tensor(true), torch.tensor(pred)
    assert macro_scores(true, pred) == pytest.approx(sklearn_scores(true, pred), abs=1e-12)


def test_evaluating_a_classifier_does_not_import_sklearn():
    import subprocess
    import sys
    code = ("import sys, torch; from harness import tasks; from harness.fit import evaluate; "
            "m = torch.nn.Linear(4, 3); x = torch.randn(30, 4); y = torch.randint(0, 3, (30,)); "
            "print(evaluate(m, (x, y), task=tasks.Classification(3), batch_size=8)['f1_macro'] >= 0, "
            "'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
