"""A healthy recipe whose own lr is slower than the reference Adam's (a small T5 at AdamW 1e-3)
closes most of the gap in the step budget: that passes, saying so; lrs that are wrong (1e-7,
SGD's lr on Adam, a huge weight decay; tests/gallery/bugs.py) close almost none of it and fail."""
import pytest
import torch

from harness import Recipe, tasks
from harness.checks.overfit import check_overfit


def _t5():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                                decoder_start_token_id=0)
    return transformers.T5ForConditionalGeneration(cfg)


def _adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


@pytest.mark.parametrize("seed", range(3))
def test_a_t5_at_adamw_1e3_overfits_one_sample_slowly_but_passes(seed):
    torch.manual_seed(seed)
    recipe = Recipe(model=_t5, data=lambda: None, task=tasks.Dense(50, class_dim=-1), optimizer=_adamw, lr=1e-3)
    src = torch.randint(2, 50, (1, 10))
    tgt = src.flip(1)
    dec = torch.cat([torch.zeros(1, 1, dtype=torch.long), tgt[:, :-1]], 1)
    x = {"input_ids": src.repeat(2, 1), "decoder_input_ids": dec.repeat(2, 1)}
    result = check_overfit(recipe, recipe.build_model(), (x, tgt.repeat(2, 1)), max_steps=100)
    assert result.passed and "of the gap with its own settings" in str(result), result  # ~90 % in 100 steps
