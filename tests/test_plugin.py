"""The pytest plugin is a good citizen: inert until asked, options that cannot collide, one ini line,
suites that cannot be shadowed, one line for every usage error, a re-run line that works anywhere.

Each test runs pytest in a subprocess in a scratch project under tmp_path, as a user would, with
this package installed in the same environment. Other installed plugins that import torch at
start-up (pytest-torch) are disabled in both arms (`-p no:pytest_torch`), so what is measured is ours.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.checks import registry
from tests.outcomes import RECIPE_SKIPS

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ("-p", "no:pytest_torch", "-p", "no:cacheprovider", "-p", "no:randomly")

CONFTEST = '''
def pytest_addoption(parser):  # what many ML projects add: our options must not collide with these
    parser.addoption("--device", default="cpu")
    parser.addoption("--seed", default="0")
'''
ONE_TEST = '''
import sys


def test_one(request):
    assert request.config.getoption("device") == "cpu"
    assert "torch" not in sys.modules, "the plugin imported torch in an unrelated run"
'''
RECIPE = '''
from harness.recipes import digits28

RECIPE = digits28()
'''


def run(cwd, *args, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", *OTHERS, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def write(folder: Path, files: dict) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def project(tmp_path):
    """A user's project: a conftest.py adding --device and --seed, one unrelated one-line test."""
    return write(tmp_path / "project", {"conftest.py": CONFTEST, "test_one.py": ONE_TEST, "pytest.ini": "[pytest]\n"})


def test_an_unrelated_project_runs_green_without_torch(project):
    result = run(project, "-q", "--device", "cpu", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    loaded = run(project, "-q", "--trace-config")
    assert "harness.suites.plugin" in loaded.stdout, "the plugin was not loaded at all; the test would prove nothing"


def test_the_plugin_is_what_keeps_torch_out(project):
    """The same check fails when the plugin is made to activate: the assertion above can fail."""
    result = run(project, "-q", "--harness-seed", "0")
    assert result.returncode == 1 and "the plugin imported torch" in result.stdout, result.stdout[-2000:]


def test_one_ini_line_runs_the_sanity_suite_against_the_recipe(project):
    write(project, {"recipes/mine.py": RECIPE,
                    "pytest.ini": "[pytest]\nharness_recipe = recipes/mine.py:RECIPE\n"})
    (project / "test_one.py").write_text("def test_one():\n    pass\n")
    result = run(project, "-m", "sanity", "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed, skipped = (int(re.search(rf"(\d+) {word}", result.stdout).group(1)) for word in ("passed", "skipped"))
    assert passed + skipped == registry.count("sanity"), result.stdout[-2000:]
    assert passed >= registry.count("sanity", "classification") - RECIPE_SKIPS, result.stdout[-2000:]
    plain = run(project, "-q", "-rA", "--collect-only")  # no -m: the project's tests and our sanity tier only
    assert "test_one.py::test_one" in plain.stdout and "test_sanity.py::test_labels" in plain.stdout
    assert "test_recipe.py" not in plain.stdout, plain.stdout[-2000:]


def test_a_project_with_its_own_checks_and_suites_packages_runs_both(project):
    write(project, {
        "checks/__init__.py": "MINE = True\n",
        "suites/__init__.py": "MINE = True\n",
        "suites/test_theirs.py": "import checks, suites\n\ndef test_theirs():\n    assert checks.MINE and suites.MINE\n",
        "test_one.py": "def test_one():\n    pass\n",
        "pytest.ini": "[pytest]\nharness_recipe = digits28\npythonpath = .\n",
    })
    result = run(project, "-m", "sanity or not sanity and not recipe and not bench", "-q", "-p", "no:xdist", "-rA")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "PASSED suites/test_theirs.py::test_theirs" in result.stdout, result.stdout[-3000:]
    passed = [ln for ln in result.stdout.splitlines() if re.match(r"PASSED .*test_sanity\.py", ln)]
    skipped = [int(n) for n in re.findall(r"SKIPPED \[(\d+)\] \S*test_sanity\.py", result.stdout)]
    assert len(passed) + sum(skipped) == registry.count("sanity"), result.stdout[-3000:]


def test_an_unknown_suppress_id_is_one_line_naming_the_closest(project):
    result = run(project, "-q", "--recipe", "digits28", "--harness-suppress", "batch_independance")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == ["ERROR: --harness-suppress: unknown check id 'batch_independance'; "
                     "did you mean 'batch_independence'?"], result.stderr


def test_suppress_as_a_string_in_the_recipe_is_one_line_with_the_fix(project):
    write(project, {"rec.py": "from harness.recipes import digits28\n\nRECIPE = digits28()\n"
                              "object.__setattr__(RECIPE, 'suppress', 'labels')\n"})
    result = run(project, "-q", "--recipe", "rec.py:RECIPE")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "suppress=('labels',)" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("body", ["import sys\nsys.exit(3)\n", "raise KeyError('boom')\n"])
def test_a_recipe_that_exits_or_raises_on_import_is_one_usage_line(project, body):
    write(project, {"bad.py": body})
    result = run(project, "-q", "--recipe", "bad.py:RECIPE")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:] + result.stderr
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--recipe 'bad.py:RECIPE'" in result.stderr


def test_recipe_given_twice_is_one_usage_line(project):
    result = run(project, "-q", "--recipe", "digits28", "--recipe", "fashion_mlp")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.strip() == ("ERROR: --recipe given 2 times ('digits28', 'fashion_mlp'); "
                                     "give it once (one recipe per run)")


CRASHES = '''
import pytest
import torch


@pytest.mark.harness_check("gradients")
def test_crashes_inside_torch(recipe):
    torch.nn.functional.linear(torch.zeros(2, 3), torch.zeros(4, 5))


@pytest.mark.harness_check("labels")
def test_suppressed_never_runs(recipe):
    raise AssertionError("a suppressed check ran")
'''


def test_a_check_that_raises_fails_as_that_check_in_one_line_and_suppressed_never_runs(project):
    write(project, {"test_crash.py": CRASHES})
    result = run(project, "test_crash.py", "--recipe", "digits28", "--harness-suppress", "labels")
    out = result.stdout
    assert "1 failed, 1 skipped" in out, out[-3000:]
    assert "[gradients] the check raised RuntimeError: mat1 and mat2 shapes cannot be multiplied" in out
    assert "re-run: pytest" in out and "INTERNALERROR" not in out
    assert "torch/nn/functional" not in out and "Traceback" not in out  # no frames from inside torch


def test_a_typo_in_the_harness_check_marker_fails_that_test_in_one_line(project):
    write(project, {"test_typo.py": "import pytest\n\n\n@pytest.mark.harness_check('gradiens')\n"
                                    "def test_x(recipe):\n    pass\n"})
    result = run(project, "test_typo.py", "--recipe", "digits28")
    assert "1 error" in result.stdout and "INTERNALERROR" not in result.stdout, result.stdout[-3000:]
    assert "@pytest.mark.harness_check: unknown check id 'gradiens'; did you mean 'gradients'?" in result.stdout


def test_the_rerun_line_of_a_failure_works_from_another_folder(project, tmp_path):
    bugs = ROOT / "tests" / "gallery" / "bugs.py"
    write(project, {"bugs_copy.py": bugs.read_text(), "pytest.ini": "[pytest]\nharness_recipe = bugs_copy.py:DROPOUT_IN_EVAL\n"})
    first = run(project, "-m", "sanity", "-q", "-k", "eval_deterministic")
    assert first.returncode == 1, first.stdout[-3000:]
    line = next(ln.strip() for ln in first.stdout.splitlines() if ln.strip().startswith("re-run: pytest"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run([sys.executable, "-m", *line.removeprefix("re-run: ").split(), *OTHERS], cwd=elsewhere,
                           capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 1 and "1 failed" in again.stdout, line + "\n" + again.stdout[-3000:] + again.stderr
    assert "[eval_not_deterministic]" in again.stdout
    seeds = [re.search(r"seed: (\d+) \(this test's seed", o).group(1) for o in (first.stdout, again.stdout)]
    assert seeds[0] == seeds[1], "the re-run used another seed"


# --- the registry against the suites and the checks ------------------------------------------

def test_every_suite_test_runs_one_registered_check_and_every_check_has_its_tests(pytester):
    result = pytester.runpytest_subprocess("--pyargs", "harness.suites", "--collect-only", "-q", "-m", "sanity or recipe",
                                           *OTHERS)
    ids = [ln for ln in result.stdout.lines if "::" in ln]
    names = [re.sub(r"\[.*\]$", "", i.split("::")[-1]).removeprefix("test_") for i in ids]
    unregistered = sorted(set(names) - set(registry.CHECKS))
    assert not unregistered, f"suite tests not named test_<registered id>: {unregistered}"
    for suite in ("sanity", "recipe"):
        for check in registry.in_suite(suite):
            assert names.count(check.id) == check.cases, f"{check.id}: {names.count(check.id)} tests, registered {check.cases}"


def _literal_ids_and_symptoms():
    """Check ids and symptom names as the check modules write them: `check = "id"`, `passed("id"`,
    `failed("id", "symptom"` / `failed(check, "symptom"`."""
    ids, symptoms = set(), set()
    for path in (ROOT / "checks").glob("*.py"):
        text = path.read_text()
        ids |= set(re.findall(r'\bcheck\s*=\s*"(\w+)"', text))
        ids |= set(re.findall(r'\b(?:passed|failed)\(\s*"(\w+)"', text))
        symptoms |= set(re.findall(r'\bfailed\(\s*(?:"\w+"|check)\s*,\s*"(\w+)"', text))
    return ids, symptoms


def test_every_check_id_and_symptom_in_the_checks_is_registered():
    ids, symptoms = _literal_ids_and_symptoms()
    assert ids and symptoms, "the scan found nothing; it would prove nothing"
    assert not ids - set(registry.CHECKS), f"unregistered check ids: {sorted(ids - set(registry.CHECKS))}"
    known = {s for c in registry.CHECKS.values() for s in c.symptoms}
    assert not symptoms - known, f"symptoms no registered check lists: {sorted(symptoms - known)}"


def test_every_registered_check_has_its_row_and_symptoms_in_the_installed_docs():
    rows = {m.group(1): line for line in registry.DOCS.read_text().splitlines()
            for m in re.finditer(r'<a id="(\w+)"></a>', line)}
    missing = [c.id for c in registry.CHECKS.values() if c.id not in rows]
    assert not missing, f"no anchor in {registry.DOCS}: {missing}"
    unlisted = [f"{c.id}: {s}" for c in registry.CHECKS.values() for s in c.symptoms if f"`{s}`" not in rows[c.id]]
    assert not unlisted, f"symptoms missing from their row in {registry.DOCS}: {unlisted}"


def test_registry_errors_are_one_line_with_the_fix():
    with pytest.raises(registry.UnknownCheck, match=r"^check: unknown check id 'gradiens'; did you mean 'gradients'\?$"):
        registry.get("gradiens")
    with pytest.raises(registry.UnknownCheck, match=r"write suppress=\('labels',\)"):
        registry.validate_suppress("labels", "Recipe.suppress")
    with pytest.raises(registry.UnknownCheck, match="not a check id"):
        registry.validate_suppress([3], "Recipe.suppress")
    assert registry.validate_suppress(["labels", "gradients"], "x") == ("labels", "gradients")


def test_harness_checks_lists_the_registry(capsys):
    from harness import cli

    assert cli.main(["checks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(registry.CHECKS) and out[0].split()[:2] == [next(iter(registry.CHECKS)), "data"]
    assert cli.main(["checks", "gradiens"]) == 2
    assert capsys.readouterr().err.strip() == ("harness: error: harness checks: unknown check id 'gradiens'; "
                                               "did you mean 'gradients'?")


# --- importing the plugin stays light ----------------------------------------------------------

def test_importing_the_plugin_and_the_package_does_not_import_torch():
    code = "import sys, harness, harness.suites.plugin, harness.checks.registry; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_every_public_name_of_the_lazy_package_resolves():
    import harness

    for name in harness.__all__:
        assert getattr(harness, name) is not None, name
    assert {"Recipe", "Data", "tasks", "load_recipe", "fit", "RecipeError"} <= set(harness.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Recpie'"):
        harness.Recpie  # noqa: B018


def test_a_recipe_with_suppress_as_a_string_or_a_typo_is_one_line(tmp_path, capsys):
    from harness import RecipeError, cli
    from harness.recipes import digits28

    with pytest.raises(RecipeError, match=r"^Recipe.suppress='labels' is a string.*write suppress=\('labels',\)"):
        digits28().replace(suppress="labels")
    with pytest.raises(RecipeError, match=r"^Recipe.suppress: unknown check id 'labls'; did you mean 'labels'\?$"):
        digits28().replace(suppress=("labls",))
    recipe = tmp_path / "typo.py"
    recipe.write_text("from harness.recipes import digits28\n\nRECIPE = digits28().replace(suppress=('labls',))\n")
    assert cli.main(["eda", "--recipe", f"{recipe}:RECIPE", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("did you mean 'labels'?"), err
