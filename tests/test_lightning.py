"""Recipe.from_lightning: a LightningModule's own training_step and configure_optimizers, no Trainer.

    pytest tests/test_lightning.py
"""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from harness import Data, Recipe, tasks  # noqa: E402
from harness.lightning import configure_optimizer, lightning_scheduler, lightning_step  # noqa: E402
from harness.recipe import RecipeError  # noqa: E402


def blobs(n=256, seed=0) -> Data:
    """Four Gaussian blobs in 8 dimensions: easy, so a few epochs separate them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (n,), generator=g)
    centers = torch.randn(4, 8, generator=g) * 3
    x = centers[y] + torch.randn(n, 8, generator=g)
    return Data(train=(x[: n // 2], y[: n // 2]), val=(x[n // 2:], y[n // 2:]))


class Lit(pl.LightningModule):
    """A small classifier whose configure_optimizers returns whatever `form` says."""

    def __init__(self, form="optimizer", lr=0.05):
        super().__init__()
        self.form, self.lr = form, lr
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.log_dict({"batch_idx": float(batch_idx)})
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        halve = lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # noqa: E731
        return {
            "optimizer": opt,
            "list": [opt],
            "tuple": (opt,),
            "two lists": ([opt], [halve()]),
            "dict": {"optimizer": opt},
            "dict+scheduler": {"optimizer": opt, "lr_scheduler": halve()},
            "dict+step": {"optimizer": opt, "lr_scheduler": {"scheduler": halve(), "interval": "step", "frequency": 2}},
            "dict+epoch": {"optimizer": opt, "lr_scheduler": {"scheduler": halve(), "interval": "epoch"}},
            "list of dicts": [{"optimizer": opt}],
            "groups": torch.optim.SGD([{"params": self.body.parameters()},
                                       {"params": self.head.parameters(), "lr": self.lr / 5}], lr=self.lr),
            "two optimizers": [opt, torch.optim.Adam(self.head.parameters())],
            "two dicts": [{"optimizer": opt}, {"optimizer": torch.optim.Adam(self.head.parameters())}],
            "plateau": {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
                        "monitor": "val_loss"},
            "none": None,
        }[self.form]


def lrs(optimizer):
    return [round(g["lr"], 6) for g in optimizer.param_groups]


def after_step(optimizer, schedule):
    """One optimizer step (no gradients: nothing moves) then the schedule, as the harness orders them."""
    optimizer.step()
    schedule.step()
    return lrs(optimizer)[0]


@pytest.mark.parametrize("form", ["optimizer", "list", "tuple", "two lists", "dict", "dict+scheduler",
                                  "dict+step", "dict+epoch", "list of dicts"])
def test_every_single_optimizer_form_gives_the_modules_optimizer(form):
    module = Lit(form)
    optimizer = configure_optimizer(module, 0.05)
    assert isinstance(optimizer, torch.optim.SGD)
    assert lrs(optimizer) == [0.05]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in module.parameters()}


def test_recipe_lr_is_the_lr_the_module_sets():
    assert Recipe.from_lightning(lambda: Lit(lr=0.03), data=blobs, task=tasks.Classification(4)).lr == 0.03
    assert Recipe.from_lightning(Lit, data=blobs, task=tasks.Classification(4), lr=0.2).lr == 0.2


def test_harness_lr_overrides_the_modules_lr_and_the_schedulers_base():
    module = Lit("dict+scheduler", lr=0.05)
    optimizer = configure_optimizer(module, 0.4)
    assert lrs(optimizer) == [0.4]
    schedule = lightning_scheduler(optimizer, total_steps=3, epochs=3)
    after_step(optimizer, schedule)  # one epoch of one step: StepLR halves the harness's lr, not the module's
    assert lrs(optimizer) == [0.2]


def test_param_groups_keep_their_ratio_under_an_lr_override():
    optimizer = configure_optimizer(Lit("groups", lr=0.05), 0.5)
    assert lrs(optimizer) == [0.5, 0.1]


def test_step_interval_steps_every_frequency_optimizer_steps():
    optimizer = configure_optimizer(Lit("dict+step", lr=0.8), 0.8)
    schedule = lightning_scheduler(optimizer, total_steps=100, epochs=1)
    seen = [after_step(optimizer, schedule) for _ in range(4)]
    assert seen == [0.8, 0.4, 0.4, 0.2]  # frequency 2: after steps 2 and 4


@pytest.mark.parametrize("form", ["dict+epoch", "dict+scheduler", "two lists"])
def test_epoch_interval_steps_once_per_epoch(form):
    optimizer = configure_optimizer(Lit(form, lr=0.8), 0.8)
    schedule = lightning_scheduler(optimizer, total_steps=9, epochs=3)  # 3 steps per epoch
    seen = [after_step(optimizer, schedule) for _ in range(9)]
    assert seen == [0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1]


@pytest.mark.parametrize("form, words", [("two optimizers", "2 optimizers"), ("two dicts", "2 optimizers"),
                                         ("plateau", "ReduceLROnPlateau"), ("none", "returned None")])
def test_unsupported_configurations_are_one_line_errors(form, words):
    with pytest.raises(RecipeError) as info:
        Recipe.from_lightning(lambda: Lit(form), data=blobs, task=tasks.Classification(4))
    message = str(info.value)
    assert words in message and "\n" not in message
    if form.startswith("two"):
        assert "not supported" in message


def test_manual_optimization_is_a_one_line_error():
    class Manual(Lit):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    with pytest.raises(RecipeError, match="manual optimization"):
        Recipe.from_lightning(Manual, data=blobs, task=tasks.Classification(4))


def test_configure_optimizers_that_needs_a_trainer_is_a_one_line_error():
    class NeedsTrainer(Lit):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            steps = self.trainer.estimated_stepping_batches  # no Trainer here
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)}

    with pytest.raises(RecipeError) as info:
        Recipe.from_lightning(NeedsTrainer, data=blobs, task=tasks.Classification(4))
    assert "without a Trainer" in str(info.value) and "\n" not in str(info.value)


def test_fields_that_come_from_the_module_cannot_be_given():
    with pytest.raises(RecipeError, match="optimizer"):
        Recipe.from_lightning(Lit, data=blobs, task=tasks.Classification(4), optimizer=torch.optim.SGD)


def test_training_step_runs_without_a_trainer_and_self_log_is_quiet():
    module = Lit()
    optimizer = configure_optimizer(module, 0.05)
    x, y = blobs().train
    before = module.head.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a self.log warning would fail the test
        loss = lightning_step(module, x[:32], y[:32], optimizer)
    assert loss.shape == () and torch.isfinite(loss)
    assert not torch.equal(before, module.head.weight)


def test_a_lightning_module_trains_with_fit():
    from harness import train

    recipe = Recipe.from_lightning(lambda: Lit("dict+epoch", lr=0.3), data=blobs, task=tasks.Classification(4),
                                   batch_size=32, epochs=4)
    history = train(recipe).history
    assert history.steps == [4, 4, 4, 4]
    assert history.lr == pytest.approx([0.3, 0.15, 0.075, 0.0375])  # the module's StepLR, once per epoch
    assert history.train_loss[-1] < history.train_loss[0] / 2
    assert history.val_acc[-1] > 0.9


def test_an_lr_sweep_overrides_the_modules_lr():
    from harness import train

    recipe = Recipe.from_lightning(lambda: Lit("dict+epoch", lr=0.3), data=blobs, task=tasks.Classification(4),
                                   batch_size=32, epochs=6)
    # epochs overridden too: the per-epoch schedule follows the run's epochs, not the recipe's
    assert train(recipe, lr=0.01, epochs=2).history.lr == pytest.approx([0.01, 0.005])


class BlobsModule(pl.LightningDataModule):
    def setup(self, stage):
        self.data = blobs()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*self.data.train), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*self.data.val), batch_size=32)


@pytest.mark.parametrize("datamodule", [BlobsModule, BlobsModule()], ids=["class", "instance"])
def test_a_lightning_datamodule_gives_the_splits(datamodule):
    from harness import train

    recipe = Recipe.from_lightning(lambda: Lit(lr=0.3), data=datamodule, task=tasks.Classification(4),
                                   batch_size=32, epochs=3)
    data = recipe.load_data()
    assert data.test is None and len(data.train.dataset) == 128 and len(data.val.dataset) == 128
    history = train(recipe).history
    assert history.steps == [4, 4, 4] and history.val_acc[-1] > 0.9


def test_a_module_from_the_standalone_pytorch_lightning_package_works_too():
    ptl = pytest.importorskip("pytorch_lightning")
    from harness import train

    class Standalone(ptl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(8, 4)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            loss = F.cross_entropy(self(batch[0]), batch[1])
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2)

    recipe = Recipe.from_lightning(Standalone, data=blobs, task=tasks.Classification(4), batch_size=32, epochs=2)
    assert recipe.lr == 0.2
    assert train(recipe).history.val_acc[-1] > 0.8


def test_importing_harness_does_not_import_lightning():
    code = "import sys, harness, harness.recipe; assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
