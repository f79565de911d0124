"""Planted-bug twins of the examples: each example in examples/ with one bug typical of its task.

    pytest --pyargs harness.suites -m sanity --recipe tests/gallery/task_bugs.py:LM_CAUSAL_MASK_MISSING

Each twin is a zero-argument function returning the example's RECIPE with one thing broken,
so a `--recipe` spec imports only the example it names (the Hugging Face and Lightning ones
need their extras). `CAUGHT_BY` maps each twin to the symptom the sanity suite must name, and
`EXAMPLE` to the example it is a twin of; tests/test_examples.py runs them.
"""
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness import Data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str):
    """Import examples/NAME.py as a module (examples/ is a folder of files, not a package)."""
    key = f"_harness_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


# resnet18_digits: images left in 0-255 (the scaling step of the loader forgotten)
def RESNET_INPUTS_0_255():
    ex = example("resnet18_digits")

    def load_data():
        d = ex.load_data()
        return Data(*((x * 255, y) for x, y in (d.train, d.val, d.test)))

    return ex.RECIPE.replace(data=load_data, name="resnet_inputs_0_255")


# two_input: the right tower runs under no_grad (meant for a frozen tower, but its layers are trained)
def TWO_INPUT_TOWER_WITHOUT_GRAD():
    ex = example("two_input")

    class NoGradRight(ex.TwoTower):
        def forward(self, left, right):
            with torch.no_grad():
                features = self.right(right)  # bug: self.right gets no gradient
            return self.head(torch.cat([self.left(left), features], dim=1))

    return ex.RECIPE.replace(model=NoGradRight, name="two_input_tower_without_grad")


# multilabel: trained with softmax cross-entropy, so the labels compete for one unit of probability
def MULTILABEL_SOFTMAX_CE():
    ex = example("multilabel")
    return ex.RECIPE.replace(loss=lambda outputs, targets: F.cross_entropy(outputs, targets),
                             name="multilabel_softmax_ce")


# multilabel: the last label was added to the data later, and the model's head wired it to a bias only
def MULTILABEL_LAST_LABEL_CONSTANT():
    ex = example("multilabel")

    class NineLabelHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = ex.build_model()
            self.net[-1] = nn.Linear(128, 9)            # bug: the head still has the old 9 outputs
            self.last = nn.Parameter(torch.zeros(1))   # and the 10th label is one learned constant

        def forward(self, x):
            out = self.net(x)
            return torch.cat([out, self.last.expand(len(out), 1)], dim=1)  # (N, 10)

    return ex.RECIPE.replace(model=NineLabelHead, name="multilabel_last_label_constant")


# regression: (N, 1) outputs against (N,) targets, which MSE would broadcast to (N, N)
def REGRESSION_BROADCAST():
    ex = example("regression")

    def load_data():
        d = ex.load_data()
        return Data(*((x, y.squeeze(1)) for x, y in (d.train, d.val, d.test)))  # targets (N,)

    return ex.RECIPE.replace(data=load_data, name="regression_broadcast")


# segmentation: each image "standardised" with the statistics of the whole batch, not its own
def SEGMENTATION_MIXES_SAMPLES():
    ex = example("segmentation")

    class BatchStandardisedUNet(ex.UNet):
        def forward(self, x):
            x = (x - x.mean()) / (x.std() + 1e-5)  # bug: should be x.mean(dim=(1, 2, 3), keepdim=True), ...
            return super().forward(x)

    return ex.RECIPE.replace(model=BatchStandardisedUNet, name="segmentation_mixes_samples")


class RandomFlips(torch.utils.data.Dataset):
    """A segmentation split (images, masks) as a Dataset that flips half the images left-right at
    random, and their masks too when `flip_masks` (the healthy augmentation: healthy.py's
    SEGMENTATION_FLIPS) or not (the bug below)."""

    def __init__(self, split, flip_masks: bool = True):
        self.x, self.y = split
        self.flip_masks = flip_masks

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x, y = self.x[i], self.y[i]
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), (y.flip(-1) if self.flip_masks else y)
        return x, y


# segmentation: a random flip applied to the image but not to its mask (R's SEG_FLIP_IMAGE_ONLY: 19 checks passed)
def SEGMENTATION_FLIP_IMAGE_ONLY():
    return segmentation_flipped(flip_masks=False, name="segmentation_flip_image_only")


def segmentation_flipped(flip_masks: bool, name: str):
    """The segmentation example with random horizontal flips of its train images (and of their masks)."""
    ex = example("segmentation")

    def load_data():
        d = ex.load_data()
        return Data(train=RandomFlips(d.train, flip_masks=flip_masks), val=d.val, test=d.test,
                    class_names=d.class_names)

    return ex.RECIPE.replace(data=load_data, name=name)


# segmentation: masks transposed relative to their images, H and W swapped (square images, so every
# shape matches; R's SEG_MASK_TRANSPOSED: 20 checks passed)
def SEGMENTATION_MASKS_TRANSPOSED():
    ex = example("segmentation")

    def load_data():
        d = ex.load_data()
        return Data(*((x, y.transpose(1, 2).contiguous()) for x, y in (d.train, d.val, d.test)),
                    class_names=d.class_names)

    return ex.RECIPE.replace(data=load_data, name="segmentation_masks_transposed")


# tagging: the LSTM is built without batch_first but fed (N, T, F), so it runs along the batch
def TAGGING_TIME_MAJOR():
    ex = example("tagging")

    class TimeMajorTagger(ex.Tagger):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(ex.FEATURES, 64, bidirectional=True)  # bug: batch_first=False

    return ex.RECIPE.replace(model=TimeMajorTagger, name="tagging_time_major")


# causal_lm: attention without the causal mask, so position t sees the tokens it must predict
def LM_CAUSAL_MASK_MISSING():
    ex = example("causal_lm")
    return ex.RECIPE.replace(model=lambda: ex.TinyGPT(causal=False), name="lm_causal_mask_missing")


# causal_lm: a hand-written loss that compares position t with token t instead of t+1
def LM_UNSHIFTED_TARGETS():
    ex = example("causal_lm")

    def unshifted_loss(outputs, targets):  # bug: no shift, the model is trained to copy its input
        return F.cross_entropy(outputs.flatten(0, 1), targets.flatten())

    return ex.RECIPE.replace(loss=unshifted_loss, name="lm_unshifted_targets")


# causal_lm: the token embedding is fed the positions instead of the ids, so no output depends on the text
def LM_HEAD_IGNORES_INPUT():
    ex = example("causal_lm")

    class PositionsOnly(ex.TinyGPT):
        def forward(self, ids):
            positions = torch.arange(ids.shape[1], device=ids.device)
            x = self.tok(positions.expand_as(ids)) + self.pos(positions)  # bug: self.tok(ids)
            return self.head(self.ln_f(self.blocks(x)))

    return ex.RECIPE.replace(model=PositionsOnly, name="lm_head_ignores_input")


# hf_bert: the config's num_labels left at its default (2) for a 10-class problem
def HF_NUM_LABELS_LEFT_AT_DEFAULT():
    ex = example("hf_bert")
    from transformers import BertForSequenceClassification

    config = ex.CONFIG.__class__(**{**ex.CONFIG.to_dict(), "num_labels": 2})
    config.id2label, config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    return ex.RECIPE.replace(model=lambda: BertForSequenceClassification(config), name="hf_num_labels_left_at_default")


# hf_gpt2: a BERT language-model head in place of GPT-2, without is_decoder=True: it attends both ways
def HF_BERT_LM_WITHOUT_IS_DECODER():
    ex = example("hf_gpt2")
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(vocab_size=ex.CONFIG.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=ex.LENGTH, pad_token_id=ex.PAD)
    # bug: BertLMHeadModel is only causal with is_decoder=True
    return ex.RECIPE.replace(model=lambda: BertLMHeadModel(config), name="hf_bert_lm_without_is_decoder")


# lightning_module: configure_optimizers hands only the last layer to the optimizer
def LIGHTNING_LAYER_LEFT_OUT():
    ex = example("lightning_module")
    from harness import Recipe

    class HeadOnly(ex.LitDigits):
        def configure_optimizers(self):
            return torch.optim.SGD(self.net[-1].parameters(), lr=self.hparams.lr, momentum=0.9)  # bug

    return Recipe.from_lightning(HeadOnly, data=ex.RECIPE.data, task=ex.RECIPE.task, batch_size=64,
                                 epochs=ex.EPOCHS, name="lightning_layer_left_out")


CAUGHT_BY = {
    "RESNET_INPUTS_0_255": "inputs_out_of_range",
    "TWO_INPUT_TOWER_WITHOUT_GRAD": "params_get_no_gradient",
    "MULTILABEL_SOFTMAX_CE": "labels_compete_in_loss",
    "MULTILABEL_LAST_LABEL_CONSTANT": "cannot_overfit_batch",
    "REGRESSION_BROADCAST": "output_shape_wrong",
    "SEGMENTATION_MIXES_SAMPLES": "batch_samples_interact",
    "SEGMENTATION_FLIP_IMAGE_ONLY": "masks_misaligned",
    "SEGMENTATION_MASKS_TRANSPOSED": "masks_misaligned",
    "TAGGING_TIME_MAJOR": "batch_samples_interact",
    "LM_CAUSAL_MASK_MISSING": "future_tokens_leak",
    "LM_UNSHIFTED_TARGETS": "targets_not_shifted",
    "LM_HEAD_IGNORES_INPUT": "cannot_overfit_batch",
    "HF_NUM_LABELS_LEFT_AT_DEFAULT": "output_shape_wrong",
    "HF_BERT_LM_WITHOUT_IS_DECODER": "future_tokens_leak",
    "LIGHTNING_LAYER_LEFT_OUT": "params_not_in_optimizer",
}

EXAMPLE = {
    "RESNET_INPUTS_0_255": "resnet18_digits",
    "TWO_INPUT_TOWER_WITHOUT_GRAD": "two_input",
    "MULTILABEL_SOFTMAX_CE": "multilabel",
    "MULTILABEL_LAST_LABEL_CONSTANT": "multilabel",
    "REGRESSION_BROADCAST": "regression",
    "SEGMENTATION_MIXES_SAMPLES": "segmentation",
    "SEGMENTATION_FLIP_IMAGE_ONLY": "segmentation",
    "SEGMENTATION_MASKS_TRANSPOSED": "segmentation",
    "TAGGING_TIME_MAJOR": "tagging",
    "LM_CAUSAL_MASK_MISSING": "causal_lm",
    "LM_UNSHIFTED_TARGETS": "causal_lm",
    "LM_HEAD_IGNORES_INPUT": "causal_lm",
    "HF_NUM_LABELS_LEFT_AT_DEFAULT": "hf_bert",
    "HF_BERT_LM_WITHOUT_IS_DECODER": "hf_gpt2",
    "LIGHTNING_LAYER_LEFT_OUT": "lightning_module",
}
