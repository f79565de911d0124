"""The stock-architecture gallery through `pytest -m sanity --recipe`, as a user would run it:
every torchvision classification family (tests/gallery/stock.py) must pass with no false alarm.

    pytest tests/test_stock_gallery.py                       # the CI part: stock.CI (3 models)
    HARNESS_STOCK=all pytest tests/test_stock_gallery.py     # every model (about 10 minutes on 2 CPUs)

The full result, with timings, is recorded in docs/head-to-head.md.
"""
import os
from pathlib import Path

import pytest

from tests.gallery import stock

GALLERY = Path(__file__).parent / "gallery"
FULL = os.environ.get("HARNESS_STOCK", "") == "all"


def _cases():
    for name in stock.STOCK:
        marks = () if FULL or name in stock.CI else (
            pytest.mark.skip(reason="the full stock gallery runs with HARNESS_STOCK=all"),)
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", _cases())
def test_stock_model_raises_no_false_alarm(pytester, name):
    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe",
                                f"{GALLERY / 'stock.py'}:{name}", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:pytest_torch")
    outcomes = result.parseoutcomes()
    text = result.stdout.str()
    expected = stock.EXPECTED_FINDINGS.get(name)
    if expected:  # a documented true finding, not a false alarm: exactly that one failure
        assert outcomes.get("failed", 0) == 1 and f"[{expected}]" in text, text[-4000:]
        return
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, text[-4000:]
    assert outcomes.get("passed", 0) >= 15, text[-2000:]
