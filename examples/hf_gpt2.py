"""A Hugging Face GPT-2 language model, built from a config (nothing downloaded), with no glue code.

    pip install -e .[hf]
    pytest --pyargs harness.suites -m sanity --recipe examples/hf_gpt2.py:RECIPE
    harness train --recipe examples/hf_gpt2.py:RECIPE

The language is examples/causal_lm.py's (32 words, each followed by one of its 3 successors),
in sentences of 8 to 16 words, right-padded to 16. Inputs are a dict `{"input_ids", "attention_mask"}` (N, 16) as a
tokenizer returns it; targets are the ids, aligned with the inputs, with -100 on padding so the
loss and the metrics skip it. `tasks.CausalLM` shifts the targets by one in its loss; the
harness calls `model(**inputs)` and reads `.logits`, (N, 16, 33).
"""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from harness import Data, Recipe, tasks

WORDS, LENGTH = 32, 16
PAD = WORDS  # one extra token id, never a target


def sentences(n: int, seed: int) -> torch.Tensor:
    """(n, 16) ids: each word followed by one of its 3 successors (probabilities 0.6, 0.3, 0.1)."""
    successors = torch.stack([torch.randperm(WORDS, generator=torch.Generator().manual_seed(w))[:3]
                              for w in range(WORDS)])                           # (32, 3)
    g = torch.Generator().manual_seed(seed)
    choice = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n * LENGTH, replacement=True, generator=g)
    ids = torch.empty(n, LENGTH, dtype=torch.long)
    ids[:, 0] = torch.randint(WORDS, (n,), generator=g)
    for t in range(1, LENGTH):
        ids[:, t] = successors[ids[:, t - 1], choice.view(n, LENGTH)[:, t]]
    return ids


def _padded(ids: torch.Tensor, seed: int):
    lengths = torch.randint(8, LENGTH + 1, (len(ids), 1), generator=torch.Generator().manual_seed(seed))
    real = torch.arange(LENGTH) < lengths                                          # (N, 16): False on padding
    inputs = {"input_ids": torch.where(real, ids, PAD), "attention_mask": real.long()}
    return inputs, torch.where(real, ids, -100)                                    # padding is no target


def load_data() -> Data:
    inputs, targets = _padded(sentences(3000, 0), 0)
    seen, keep = set(), []                                   # each padded sentence once, in one split only
    for i, row in enumerate(map(tuple, inputs["input_ids"].tolist())):
        if row not in seen:
            seen.add(row)
            keep.append(i)
    keep = torch.tensor(keep)                                # sentences were drawn at random: no shuffle needed

    def part(idx):
        return {k: v[idx] for k, v in inputs.items()}, targets[idx]

    return Data(train=part(keep[:2000]), val=part(keep[2000:2300]), test=part(keep[2300:2600]))


CONFIG = GPT2Config(vocab_size=WORDS + 1, n_positions=LENGTH, n_embd=64, n_layer=2, n_head=4,
                    pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD)


def build_model():
    return GPT2LMHeadModel(CONFIG)  # random weights from the config


def adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


RECIPE = Recipe(
    model=build_model,
    data=load_data,
    task=tasks.CausalLM(WORDS + 1),
    optimizer=adamw,
    lr=3e-3,
    batch_size=64,
    epochs=10,
    name="hf_gpt2",
)
