"""The multi-seed script: runs the suites per (recipe, seed), tables them, exits 1 on any failure.

    pytest tests/test_robustness.py
"""
import json
from pathlib import Path

from harness import robustness
from harness.checks import registry
from tests.outcomes import RECIPE_SKIPS

BUG = f"{Path(__file__).parent / 'gallery' / 'bugs.py'}:NO_ZERO_GRAD"


def test_a_failing_recipe_fails_the_run_and_is_listed_with_its_rerun_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # pytest --pyargs harness.suites from the project root
    out = tmp_path / "summary.json"
    code = robustness.main(["--seeds", "1", "--first-seed", "4", "--recipes", f"digits28,{BUG}",
                            "--suites", "sanity", "-n", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    summary = json.loads(out.read_text())
    assert summary["complete"] and summary["runs"] == summary["planned_runs"] == 2
    by_recipe = {r["recipe"]: r for r in summary["rows"]}
    assert by_recipe["digits28"]["seeds_passed"] == 1
    applies = registry.count("sanity", "classification")  # less the checks digits28 lacks the data for
    assert applies - RECIPE_SKIPS <= by_recipe["digits28"]["tests_passed"] <= applies
    assert by_recipe[BUG]["seeds_passed"] == 0 and by_recipe[BUG]["failed_seeds"] == [4]
    assert f"FAILED sanity seed 4 {BUG}" in printed and "[gradients_accumulate_across_steps]" in printed
    assert f"re-run: pytest --pyargs harness.suites -m sanity --recipe {BUG} --harness-seed 4" in printed
    assert "1/2 runs passed (1 of 2 runs FAILED)" in printed


def test_an_unknown_recipe_is_one_line_before_any_run(capsys):
    try:
        code = robustness.main(["--seeds", "1", "--recipes", "digits29"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "--recipe 'digits29': no built-in recipe" in err and "Traceback" not in err
