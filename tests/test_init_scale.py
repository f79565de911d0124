"""init_logit_scale: a head scaled up by hand is named; stock designs with large-ish logits are not."""
import math

import pytest
import torch
from torch import nn

from harness import Recipe, tasks
from harness.checks.model import check_init_logit_scale


class TiedHead(nn.Module):
    """T5's design: the head is the embedding (std 1), features are RMS-normalised and scaled by
    d ** -0.5, so logits start with a spread of about 1 across the vocabulary."""

    def __init__(self, vocab=50, d=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        h = self.mix(self.embed(ids))
        h = h / h.pow(2).mean(-1, keepdim=True).sqrt()
        return self.head(h * h.shape[-1] ** -0.5)


def _scaled_head(model, scale):
    """`model` with its last layer's weights multiplied by `scale` (a head scaled up by hand)."""
    with torch.no_grad():
        model[-1].weight.mul_(scale)
    return model


def _mlp(scale):
    return _scaled_head(nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10)), scale)


@pytest.mark.parametrize("seed", range(10))
def test_a_tied_head_with_spread_near_one_passes(seed):
    torch.manual_seed(seed)
    recipe = Recipe(model=TiedHead, data=lambda: None, task=tasks.Dense(50, class_dim=-1))
    ids = torch.randint(0, 50, (32, 12))
    result = check_init_logit_scale(recipe, TiedHead(), (ids, ids))
    assert result.passed, result


@pytest.mark.parametrize("seed", range(10))
def test_a_head_scaled_up_by_hand_is_named(seed):
    torch.manual_seed(seed)
    recipe = Recipe(model=lambda: _mlp(1.0), data=lambda: None, num_classes=10)
    x = torch.randn(64, 20)
    assert check_init_logit_scale(recipe, _mlp(1.0), (x, None)).passed
    assert check_init_logit_scale(recipe, _mlp(80.0), (x, None)).name == "logits_overconfident_at_init"


def test_a_stock_t5_from_its_config_passes():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                                decoder_start_token_id=0)
    recipe = Recipe(model=lambda: transformers.T5ForConditionalGeneration(cfg), data=lambda: None,
                    task=tasks.Dense(50, class_dim=-1))
    torch.manual_seed(0)
    ids = torch.randint(2, 50, (16, 10))
    result = check_init_logit_scale(recipe, recipe.build_model(), ({"input_ids": ids, "decoder_input_ids": ids}, ids))
    assert result.passed, result
    assert "spread at init 1." in str(result) or "spread at init 0.9" in str(result)  # the design this guards


class CosineHead(nn.Module):
    """CLIP's classifier: normalised features against normalised class prototypes, times a learnable
    temperature initialised at 1 / 0.07 (no Linear with one output per class to compare with)."""

    def __init__(self, d=128, classes=10):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, d))
        self.prototypes = nn.Parameter(torch.randn(classes, d))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x):
        f = nn.functional.normalize(self.trunk(x), dim=1)
        return self.logit_scale.exp() * f @ nn.functional.normalize(self.prototypes, dim=1).T


def _conv_head(scale):
    return _scaled_head(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 5, 1)), scale)


@pytest.mark.parametrize("seed", range(10))
def test_a_cosine_head_with_clip_temperature_passes(seed):
    torch.manual_seed(seed)
    recipe = Recipe(model=CosineHead, data=lambda: None, num_classes=10)
    result = check_init_logit_scale(recipe, CosineHead(), (torch.randn(64, 20), None))
    assert result.passed, result


@pytest.mark.parametrize("seed", range(10))
def test_a_segmentation_head_scaled_up_by_hand_is_named(seed):
    torch.manual_seed(seed)
    recipe = Recipe(model=lambda: _conv_head(1.0), data=lambda: None, task=tasks.Dense(5))
    x = torch.randn(8, 3, 12, 12)
    assert check_init_logit_scale(recipe, _conv_head(1.0), (x, None)).passed
    assert check_init_logit_scale(recipe, _conv_head(60.0), (x, None)).name == "logits_overconfident_at_init"
