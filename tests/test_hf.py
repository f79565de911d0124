"""Hugging Face models built from a config run through the harness with no glue code.

    pytest tests/test_hf.py          # needs transformers: pip install -e .[hf]

Dict inputs (`input_ids`, `attention_mask`) are batched key by key and passed as `model(**x)`;
the `ModelOutput` a model returns is unwrapped to `.logits`. The examples examples/hf_bert.py
and examples/hf_gpt2.py pass the sanity suite in tests/test_examples.py; here the same models
train with `fit`, and a GPT-2 given plain (N, T) id tensors (no dict) passes the sanity suite.
"""
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from harness import evaluate, load_recipe, tasks, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def example(name):
    return load_recipe(f"{ROOT / 'examples' / name}.py:RECIPE")


@pytest.mark.parametrize("name, shape", [("hf_bert", (4, 10)), ("hf_gpt2", (4, 16, 33))])
def test_model_output_is_unwrapped_to_its_logits(name, shape):
    recipe = example(name)
    model, (x, _) = recipe.build_model(), recipe.load_data().train
    with torch.no_grad():
        out = recipe.forward(model.eval(), {k: v[:4] for k, v in x.items()})
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == shape


def test_tiny_bert_classifier_learns_with_fit():
    recipe = example("hf_bert")
    history = train(recipe, epochs=3).history
    assert history.train_loss[-1] < 0.9 * history.train_loss[0]
    assert history.val_acc[-1] > 0.25  # chance is 0.1; 0.44 seen


def test_tiny_gpt2_language_model_learns_with_fit():
    recipe = example("hf_gpt2")
    run = train(recipe, epochs=2)
    assert run.history.train_loss[-1] < 0.8 * math.log(recipe.task.vocab_size)  # below the loss at init
    metrics = evaluate(run.model, recipe.load_data().test, task=recipe.task, forward=recipe.forward)
    assert metrics["perplexity"] < recipe.task.vocab_size


GPT2_ON_TENSORS = '''
import importlib.util
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from harness import Data, Recipe, tasks

spec = importlib.util.spec_from_file_location("causal_lm_example", {path!r})
language = importlib.util.module_from_spec(spec)
spec.loader.exec_module(language)

def load_data():  # plain (N, 16) id tensors, targets aligned with the inputs
    train, val = language.sentences(600, 0), language.sentences(200, 1)
    return Data(train=(train, train), val=(val, val))

RECIPE = Recipe(model=lambda: GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=32, n_layer=1,
                                                          n_head=2, bos_token_id=0, eos_token_id=0)),
                data=load_data, task=tasks.CausalLM(32), optimizer=lambda p, lr: torch.optim.AdamW(p, lr=lr),
                lr=3e-3, batch_size=32, epochs=5)
'''


def test_gpt2_on_plain_id_tensors_passes_the_sanity_suite(pytester):
    path = pytester.makepyfile(gpt2_recipe=GPT2_ON_TENSORS.format(path=str(ROOT / 'examples' / 'causal_lm.py')))
    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "--recipe", f"{path}:RECIPE",
                                "-p", "no:cacheprovider", "-p", "no:randomly", "-rfEs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-4000:]
    assert "causality" not in " ".join(l for l in result.stdout.lines if l.startswith("SKIPPED"))


def test_the_task_is_what_the_outputs_mean_not_the_model_class():
    assert example("hf_gpt2").task == tasks.CausalLM(33)
    assert example("hf_bert").task == tasks.Classification(10)
