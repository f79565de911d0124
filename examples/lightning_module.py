"""A Lightning module, trained by the harness with its own training_step and configure_optimizers.

    pip install -e .[lightning]
    pytest --pyargs harness.suites -m sanity --recipe examples/lightning_module.py:RECIPE
    harness train --recipe examples/lightning_module.py:RECIPE
    harness sweep lr --recipe examples/lightning_module.py:RECIPE --values 1e-3,1e-2,1e-1

No Trainer and no glue: `Recipe.from_lightning` calls the module's `training_step` for the loss
and steps the optimizer and the scheduler its `configure_optimizers` returns (here the dict
form, a cosine schedule stepped once per epoch). The recipe's lr is the module's own (0.05);
an lr sweep overrides it. `self.log` calls are accepted and ignored.
"""
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from harness import Recipe, tasks
from harness.data import digits28

EPOCHS = 8


class LitDigits(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 16, 14, 14)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 7, 7)
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10),                      # (N, 10) logits
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}


RECIPE = Recipe.from_lightning(LitDigits, data=digits28, task=tasks.Classification(10),
                               batch_size=64, epochs=EPOCHS, name="lightning_module")
