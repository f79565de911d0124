"""recipe-harness: the classic recipe for training networks, as code you can test.

    from harness import Recipe, Data, fit, train, evaluate, load_recipe
"""
from harness.recipe import Data, Recipe, RecipeError, load_recipe, sgd
from harness.fit import History, Run, default_step, evaluate, fit, resolve_device, train

__all__ = ["Data", "Recipe", "RecipeError", "load_recipe", "sgd", "History", "Run",
           "default_step", "evaluate", "fit", "resolve_device", "train"]
