"""The built-in recipes, by name: `--recipe digits28` (the default), `fashion_mlp`, `cifar_mlp`.

Each entry is a zero-argument function returning a `Recipe`; dataset loaders read
`--data-root` / `--download` from `harness.data.settings` when they run.
"""
from __future__ import annotations

from functools import partial

from harness import data, models
from harness.recipe import Recipe
from harness.schedules import adam


def digits28() -> Recipe:
    """The embedded default: the seed notebook's MLP and plain SGD on digits at 28x28."""
    return Recipe(model=models.fashion_mlp, data=data.digits28, num_classes=10,
                  lr=0.1, batch_size=128, epochs=15, name="digits28")


def fashion_mlp() -> Recipe:
    """The seed notebook: FashionMNIST 54k/6k/10k, 784-256-128-10 MLP, plain SGD lr 0.1."""
    return Recipe(model=models.fashion_mlp, data=data.fashion_mnist, num_classes=10,
                  lr=0.1, batch_size=128, epochs=15, name="fashion_mlp")


def cifar_mlp(batchnorm: bool = False, dropout: float = 0.0) -> Recipe:
    """The blog: CIFAR-10 40k/10k(+10k test), 3072-100-100-10 MLP, Adam lr 1e-3, batch 32."""
    return Recipe(model=partial(models.cifar_mlp, batchnorm=batchnorm, dropout=dropout),
                  data=data.cifar10, num_classes=10, optimizer=adam(), lr=1e-3,
                  batch_size=32, epochs=10, name="cifar_mlp")


BUILTINS = {"digits28": digits28, "fashion_mlp": fashion_mlp, "cifar_mlp": cifar_mlp}
DEFAULT = "digits28"
