"""A tiny causal transformer language model on a language with real structure.

    pytest --pyargs harness.suites -m sanity --recipe examples/causal_lm.py:RECIPE
    harness train --recipe examples/causal_lm.py:RECIPE

The language: 32 words, each followed by one of its own 3 successors (with probabilities 0.6,
0.3, 0.1; the successor table is fixed by a seed), in sentences of 16 words. The first word
cannot be predicted; every later one can, up to the choice among 3 successors (a loss floor
of about 0.9 nats against ln 32 = 3.47 at init). No sentence occurs twice.

Inputs are token ids (N, 16) int64; the targets are the same ids, aligned with the inputs:
`tasks.CausalLM` shifts them by one in its loss (position t predicts token t+1). Outputs are
(N, 16, 32) logits. Metrics: token accuracy and perplexity.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness import Data, Recipe, tasks

VOCAB, LENGTH = 32, 16


def sentences(n: int, seed: int, vocab: int = VOCAB, length: int = LENGTH) -> torch.Tensor:
    """(n, length) token ids from the language above; the successor table is the same for every seed."""
    successors = torch.stack([torch.randperm(vocab, generator=torch.Generator().manual_seed(w))[:3]
                              for w in range(vocab)])                           # (V, 3)
    g = torch.Generator().manual_seed(seed)
    choice = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n * length, replacement=True,
                               generator=g).view(n, length)
    ids = torch.empty(n, length, dtype=torch.long)
    ids[:, 0] = torch.randint(vocab, (n,), generator=g)
    for t in range(1, length):
        ids[:, t] = successors[ids[:, t - 1], choice[:, t]]
    return ids


def load_data() -> Data:
    ids = sentences(2600, 0).unique(dim=0)                                      # distinct sentences, sorted
    ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))]
    train, val, test = ids[:2000], ids[2000:2300], ids[2300:2600]
    return Data(train=(train, train), val=(val, val), test=(test, test))  # targets = inputs, aligned


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = VOCAB
    block_size: int = LENGTH
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool = True):
        super().__init__()
        self.n_head, self.causal = cfg.n_head, causal
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x):                                                      # (N, T, E)
        n, t, e = x.shape
        q, k, v = self.qkv(x).split(e, dim=2)
        q, k, v = (z.view(n, t, self.n_head, e // self.n_head).transpose(1, 2) for z in (q, k, v))  # (N, H, T, E/H)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)     # position t sees 0..t only
        return self.proj(y.transpose(1, 2).reshape(n, t, e))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool = True):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.n_embd), SelfAttention(cfg, causal)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A decoder-only transformer in the shape of nanoGPT's, a few thousand times smaller."""

    def __init__(self, cfg: GPTConfig = GPTConfig(), causal: bool = True):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.Sequential(*(Block(cfg, causal) for _ in range(cfg.n_layer)))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        for p in self.parameters():  # small init, so the loss at init is close to ln(vocab)
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):                                                    # (N, T) int64
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.ln_f(self.blocks(x)))                            # (N, T, V)


def adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


RECIPE = Recipe(
    model=TinyGPT,
    data=load_data,
    task=tasks.CausalLM(VOCAB),
    optimizer=adamw,
    lr=3e-3,
    batch_size=64,
    epochs=10,
    name="causal_lm",
)
