"""Mistakes a new user makes when writing a recipe (found by trying them): each is one clear line.

    .venv/bin/python -m pytest tests/test_red_recipe.py -q
"""
import pytest
import torch
from torch import nn

from harness import Data, Recipe, RecipeError, tasks
from harness.data import synthetic


def data():
    return synthetic(n_train=64, n_val=16, n_test=16, shape=(1, 4, 4), num_classes=4, seed=1)


def model():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))


@pytest.mark.parametrize("cls, example", [(tasks.Classification, "tasks.Classification(10)"),
                                          (tasks.Regression, "tasks.Regression(1)"),
                                          (tasks.MultiLabel, "tasks.MultiLabel(10)")])
def test_a_task_class_not_an_instance_is_one_line(cls, example):
    """`task=tasks.Classification` (no parentheses) was accepted, then check_data raised a raw
    TypeError: check_targets() missing 1 required positional argument."""
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=data, task=cls, lr=0.1)
    message = str(info.value)
    assert "\n" not in message
    assert f"the class {cls.__name__}, not a task" in message and example in message


def test_from_lightning_given_a_module_instance_is_one_line():
    """`Recipe.from_lightning(LitModel(), ...)` called the instance as a factory, i.e. its forward
    with no inputs: 'the module factory raised TypeError: forward() missing 1 required positional argument'."""
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(RecipeError) as info:
        Recipe.from_lightning(Lit(), data=data, task=tasks.Classification(4))
    message = str(info.value)
    assert "\n" not in message
    assert "got a Lit instance; pass its class" in message
    Recipe.from_lightning(Lit, data=data, task=tasks.Classification(4)).build_model()  # the class still works


def test_multi_hot_targets_under_classification_is_one_line():
    """Multi-hot (N, C) float targets under Classification(C) were taken as class probabilities:
    `harness train` ran and reported an accuracy, though no row is a distribution."""
    x = torch.randn(64, 1, 4, 4)
    y = torch.zeros(64, 4)
    y[torch.arange(64), torch.arange(64) % 4] = 1
    y[torch.arange(64), (torch.arange(64) + 1) % 4] = 1
    recipe = Recipe(model=model, data=lambda: Data(train=(x, y), val=(x, y)), task=tasks.Classification(4), lr=0.1)
    with pytest.raises(RecipeError) as info:
        recipe.load_data()
    message = str(info.value)
    assert "\n" not in message and "several 1s per row (up to 2)" in message and "tasks.MultiLabel(4)" in message
    probs = torch.softmax(torch.randn(64, 4), 1)  # real class probabilities still pass, one-hot floats too
    Recipe(model=model, data=lambda: Data(train=(x, probs), val=(x, y[:, :4] * 0 + torch.eye(4)[torch.arange(64) % 4])),
           task=tasks.Classification(4), lr=0.1).load_data()


def test_token_ids_beyond_the_causal_lm_vocabulary_are_one_line():
    """CausalLM(28) on ids up to 31 (the model's head 32 wide) trained silently under `harness train`."""
    ids = torch.randint(32, (64, 8))
    ids[0, 0] = 31
    targets = ids.clone()
    targets[:, -2:] = -100  # padding aside
    recipe = Recipe(model=model, data=lambda: Data(train=(ids, targets), val=(ids, targets)),
                    task=tasks.CausalLM(28), lr=0.1)
    with pytest.raises(RecipeError) as info:
        recipe.load_data()
    message = str(info.value)
    assert "\n" not in message and "outside [0, 28)" in message and "tasks.CausalLM(32)" in message
    Recipe(model=model, data=lambda: Data(train=(ids, targets), val=(ids, targets)),
           task=tasks.CausalLM(33), lr=0.1).load_data()


@pytest.mark.parametrize("kind, text", [("lr", "1e-3:1e-1"), ("lr", "0.001..0.1"), ("batch-size", "32:512")])
def test_a_range_given_to_sweep_values_names_the_list_form(kind, text, capsys):
    """`harness sweep lr --values 1e-3:1e-1` said only "'1e-3:1e-1' is not a positive number"."""
    from harness import cli
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", kind, "--values", text])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a range is not a value list" in err[0] and "comma-separated, e.g. --values" in err[0]


@pytest.mark.parametrize("cls, param", [("OneCycleLR", "max_lr"), ("ExponentialLR", "gamma"), ("StepLR", "step_size"),
                                        ("MultiStepLR", "milestones"), ("ReduceLROnPlateau", "mode")])
def test_a_scheduler_class_whose_second_parameter_is_not_a_step_count_is_one_line(cls, param):
    """`scheduler=torch.optim.lr_scheduler.OneCycleLR` was accepted and called as OneCycleLR(optimizer,
    total_steps): max_lr = total_steps (an lr of hundreds); ExponentialLR got gamma = total_steps."""
    with pytest.raises(RecipeError) as info:
        Recipe(model=model, data=data, num_classes=4, lr=0.1,
               scheduler=getattr(torch.optim.lr_scheduler, cls))
    message = str(info.value)
    assert "\n" not in message and f"the class {cls}" in message and f"{cls}'s {param}" in message


@pytest.mark.parametrize("cls", ["CosineAnnealingLR", "PolynomialLR", "CosineAnnealingWarmRestarts"])
def test_a_scheduler_class_taking_the_step_count_still_works(cls):
    recipe = Recipe(model=model, data=data, num_classes=4, lr=0.1, scheduler=getattr(torch.optim.lr_scheduler, cls))
    optimizer = torch.optim.SGD(model().parameters(), lr=0.1)
    assert recipe.make_scheduler(optimizer, 100) is not None


def test_a_hugging_face_style_dict_batch_names_the_labels_entry_to_split_off():
    """Items {"input_ids", "attention_mask", "labels"} (a Hugging Face dataset's layout) said only
    'expected (inputs, targets)'; the line now names the 'labels' entry and how to split it off."""
    from harness import fit

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return {"input_ids": torch.arange(4), "attention_mask": torch.ones(4), "labels": torch.tensor(i % 2)}

    with pytest.raises(RecipeError) as info:
        fit(nn.Linear(4, 2), Data(train=Items(), val=None), epochs=1, lr=0.1, batch_size=8, num_classes=2)
    message = str(info.value)
    assert "\n" not in message and "item['labels']" in message and "model(**inputs)" in message
