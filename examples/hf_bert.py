"""A Hugging Face BERT classifier, built from a config (nothing downloaded), with no glue code.

    pip install -e .[hf]
    pytest --pyargs harness.suites -m sanity --recipe examples/hf_bert.py:RECIPE
    harness train --recipe examples/hf_bert.py:RECIPE

Each digit becomes a sentence: after a [CLS] token, one word per inked pixel of its 7x7
version, row by row, naming the pixel's position and whether its ink is faint or strong (98
words). Sentences are as long as the digit has ink and are padded to 50 tokens, so the inputs
are a dict `{"input_ids": (N, 50), "attention_mask": (N, 50)}` of int64, exactly what a tokenizer returns. The harness calls `model(**inputs)` and reads
`.logits` from the `SequenceClassifierOutput` it returns.
"""
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from harness import Data, Recipe, tasks
from harness.data import digits28

PAD, CLS = 0, 1
PIXELS, LENGTH = 49, 1 + 49  # [CLS] + at most one word per pixel


def _sentences(split):
    x, y = split
    pixels = F.avg_pool2d(x, 4).flatten(1)                                       # (N, 49) in [0, 1]
    ink = pixels > 0.1
    words = 2 + 2 * torch.arange(PIXELS) + (pixels > 0.5).long()                 # (N, 49): position x faint/strong
    order = torch.argsort((~ink).long(), dim=1, stable=True)                     # inked pixels first, in order
    ids = torch.gather(torch.where(ink, words, PAD), 1, order)                   # (N, 49), padding at the end
    ids = torch.cat([torch.full((len(x), 1), CLS), ids], dim=1)                  # (N, 50)
    mask = (ids != PAD).long()                                                   # (N, 50): 1 on real tokens
    return {"input_ids": ids, "attention_mask": mask}, y


def _unseen(split, seen: set):
    """The samples of `split` whose sentence is not in `seen` (then adds them): coarse pixels can
    turn two different digits into the same sentence, which must not sit in two splits."""
    x, y = split
    keep = []
    for i, row in enumerate(map(tuple, x["input_ids"].tolist())):
        if row not in seen:
            keep.append(i)
            seen.add(row)
    keep = torch.tensor(keep)
    return {k: v[keep] for k, v in x.items()}, y[keep]


def load_data() -> Data:
    d = digits28()
    seen = set(map(tuple, _sentences(d.train)[0]["input_ids"].tolist()))
    return Data(train=_sentences(d.train), val=_unseen(_sentences(d.val), seen),
                test=_unseen(_sentences(d.test), seen), class_names=d.class_names)


CONFIG = BertConfig(vocab_size=2 + 2 * PIXELS, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=LENGTH, num_labels=10, pad_token_id=PAD)


def build_model():
    return BertForSequenceClassification(CONFIG)  # random weights from the config


def adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


RECIPE = Recipe(
    model=build_model,
    data=load_data,
    task=tasks.Classification(10),
    optimizer=adamw,
    lr=2e-3,
    batch_size=32,
    epochs=8,
    name="hf_bert",
)
