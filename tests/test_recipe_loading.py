"""`--recipe` resolution: built-ins, files, modules, and one clear usage line for every mistake."""
import pytest

from harness import Recipe, RecipeError
from harness.recipes import load_recipe

HEALTHY = """
from harness import Recipe
from harness.data import synthetic
from harness.models import fashion_mlp
RECIPE = Recipe(model=fashion_mlp, data=synthetic, num_classes=10)
def make():
    return RECIPE
"""


def test_builtins_resolve():
    for name in ("digits28", "fashion_mlp", "cifar_mlp"):
        assert load_recipe(name).name == name
    assert load_recipe(None).name == "digits28"


def test_file_and_factory_resolve(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(HEALTHY)
    assert isinstance(load_recipe(f"{path}:RECIPE"), Recipe)
    assert isinstance(load_recipe(str(path)), Recipe)  # NAME defaults to RECIPE
    assert isinstance(load_recipe(f"{path}:make"), Recipe)  # a factory is called


def test_module_resolves():
    assert load_recipe("harness.recipes:digits28").name == "digits28"  # a factory keeps its own name


@pytest.mark.parametrize("body, spec_suffix, fragment", [
    (None, ":RECIPE", "no such file"),
    (HEALTHY, ":NOPE", "has no attribute 'NOPE'"),
    ("RECIPE = 3\n", ":RECIPE", "not a harness.Recipe"),
    ("def RECIPE():\n    raise RuntimeError('boom')\n", ":RECIPE", "raised RuntimeError: boom"),
    ("RECIPE = (\n", ":RECIPE", "syntax error"),
    ("import not_a_module_xyz\n", ":RECIPE", "No module named"),
])
def test_bad_recipe_files_give_one_line(tmp_path, body, spec_suffix, fragment):
    path = tmp_path / "bad.py"
    if body is not None:
        path.write_text(body)
    with pytest.raises(RecipeError) as info:
        load_recipe(f"{path}{spec_suffix}")
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_unknown_builtin_and_module():
    with pytest.raises(RecipeError, match="no built-in recipe of that name"):
        load_recipe("digits29")
    with pytest.raises(RecipeError, match="no module named 'nopkg'"):
        load_recipe("nopkg.recipes:RECIPE")


def test_factory_returning_a_non_module_is_reported():
    recipe = load_recipe("digits28").replace(model=lambda: "not a model")
    with pytest.raises(RecipeError, match="expected a torch.nn.Module"):
        recipe.build_model()


@pytest.mark.parametrize("spec, fragment", [
    ("nope.py:RECIPE", "no such file"),
    ("digits29", "no built-in recipe"),
])
def test_bad_recipe_is_a_pytest_usage_error(pytester, spec, fragment):
    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe", spec, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert fragment in err and "Traceback" not in err


def test_model_crashing_on_a_batch_fails_the_shape_check(pytester, tmp_path):
    path = tmp_path / "crash.py"
    path.write_text(HEALTHY.replace("fashion_mlp, data", "lambda: __import__('torch').nn.Linear(5, 10), data"))
    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe", f"{path}:RECIPE",
                                "-p", "no:cacheprovider", "-k", "output_shape")
    result.assert_outcomes(failed=1)
    assert "[forward_crashed]" in result.stdout.str() and "mat1 and mat2" in result.stdout.str()
