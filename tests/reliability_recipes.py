"""Recipes holding one new-user mistake each, for tests/test_reliability.py.

Each is what a user might write; the harness must answer with a correct result or one clear
line naming the parameter and the fix, under `harness`, `train()`/`fit()` and `pytest --recipe`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import Data, Recipe
from harness.data import synthetic
from harness.models import fashion_mlp


def small():
    return synthetic(n_train=256, n_val=64, n_test=64)


def _recipe(**kw):
    settings = dict(model=fashion_mlp, data=small, num_classes=10, lr=0.1, batch_size=64, epochs=1)
    settings.update(kw)
    return Recipe(**settings)


# --- the data factory --------------------------------------------------------------------------

def _tuple_not_data():
    d = small()
    return d.train, d.val, d.test


def _val_empty():
    d = small()
    return Data(train=d.train, val=(d.val[0][:0], d.val[1][:0]), test=d.test)


def _val_other_shape():
    d = small()
    return Data(train=d.train, val=(torch.rand(64, 1, 32, 32), d.val[1]), test=d.test)


def _val_nan():
    d = small()
    x = d.val[0].clone()
    x[5, 0, 3, 3] = float("nan")
    return Data(train=d.train, val=(x, d.val[1]), test=d.test)


def _labels_list():
    d = small()
    return Data(train=(d.train[0], d.train[1].tolist()), val=(d.val[0], d.val[1].tolist()), test=None)


def _cuda_tensors():
    d = small()
    return Data(train=(d.train[0].cuda(), d.train[1].cuda()), val=d.val, test=d.test)


def _raises():
    raise FileNotFoundError("[Errno 2] No such file or directory: 'data/train.csv'")


def _data_missing_val():
    d = small()
    return Data(train=d.train)


def _uint8_inputs():
    d = small()
    return Data(train=((d.train[0] * 255).to(torch.uint8), d.train[1]),
                val=((d.val[0] * 255).to(torch.uint8), d.val[1]), test=None)


def _half_inputs():
    d = small()
    return Data(train=(d.train[0].half(), d.train[1]), val=(d.val[0].half(), d.val[1]), test=None)


class _DictDataset(torch.utils.data.Dataset):
    def __init__(self, split):
        self.x, self.y = split

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def _dict_dataset():
    d = small()
    return Data(train=_DictDataset(d.train), val=_DictDataset(d.val), test=None)


class _BrokenDataset(_DictDataset):
    def __getitem__(self, i):
        if i == 77:
            raise KeyError(f"sample {i}")
        return self.x[i], self.y[i]


def _broken_dataset():
    d = small()
    return Data(train=_BrokenDataset(d.train), val=d.val, test=None)


def _dataloader_split():
    d = small()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*d.train), batch_size=64, shuffle=False)
    return Data(train=loader, val=d.val, test=None)


def _requires_grad_inputs():
    d = small()
    return Data(train=(d.train[0].requires_grad_(), d.train[1]), val=d.val, test=None)


def _nhwc():
    d = small()
    return Data(train=(d.train[0].permute(0, 2, 3, 1), d.train[1]), val=(d.val[0].permute(0, 2, 3, 1), d.val[1]))


def _odd_split_for_batchnorm():
    d = synthetic(n_train=129, n_val=64, n_test=0)
    return d


def _class_names_short():
    d = small()
    return Data(train=d.train, val=d.val, test=d.test, class_names=("a", "b", "c"))


def _random_each_call():
    return synthetic(n_train=256, n_val=64, n_test=64, seed=int(torch.randint(0, 10**6, ())))


# --- the model factory -------------------------------------------------------------------------

class _ListOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = fashion_mlp()

    def forward(self, x):
        return [self.net(x)]


class _Prints(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = fashion_mlp()

    def forward(self, x):
        print("forward", tuple(x.shape))
        return self.net(x)


class _NoForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)


class _NeedsArgs(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)


_SHARED = fashion_mlp()


def _bn_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def _double_model():
    return fashion_mlp().double()


def _cnn_for_nchw():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28 * 28, 10))


# --- loss, optimizer, train step ---------------------------------------------------------------

def _loss_swapped(outputs, targets):
    return F.cross_entropy(targets, outputs)


def _loss_item(outputs, targets):
    return F.cross_entropy(outputs, targets).item()


def _opt_one_arg(params):
    return torch.optim.SGD(params, lr=0.1)


def _opt_none(params, lr):
    torch.optim.SGD(params, lr=lr)


def _step_returns_none(model, inputs, targets, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()


def _step_wrong_signature(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def _step_item(model, inputs, targets, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


TUPLE_NOT_DATA = _recipe(data=_tuple_not_data)
VAL_EMPTY = _recipe(data=_val_empty)
VAL_OTHER_SHAPE = _recipe(data=_val_other_shape)
VAL_NAN = _recipe(data=_val_nan)
LABELS_LIST = _recipe(data=_labels_list)
CUDA_TENSORS = _recipe(data=_cuda_tensors)
DATA_RAISES = _recipe(data=_raises)
DATA_MISSING_VAL = _recipe(data=_data_missing_val)
UINT8_INPUTS = _recipe(data=_uint8_inputs)
HALF_INPUTS = _recipe(data=_half_inputs)
DICT_DATASET = _recipe(data=_dict_dataset)
BROKEN_DATASET = _recipe(data=_broken_dataset)
DATALOADER_SPLIT = _recipe(data=_dataloader_split)
REQUIRES_GRAD_INPUTS = _recipe(data=_requires_grad_inputs)
NHWC_CNN = _recipe(model=_cnn_for_nchw, data=_nhwc)
BATCHNORM_LAST_BATCH_OF_ONE = _recipe(model=_bn_mlp, data=_odd_split_for_batchnorm)
CLASS_NAMES_SHORT = _recipe(data=_class_names_short)
DATA_RANDOM_EACH_CALL = _recipe(data=_random_each_call)
HUGE_BATCH = _recipe(batch_size=10**7)

LIST_OUTPUT = _recipe(model=_ListOut)
PRINTS = _recipe(model=_Prints)
NO_FORWARD = _recipe(model=_NoForward)
NEEDS_ARGS = _recipe(model=_NeedsArgs)
MODEL_INSTANCE = _recipe(model=fashion_mlp())
SAME_INSTANCE = _recipe(model=lambda: _SHARED)
DOUBLE_MODEL = _recipe(model=_double_model)

LOSS_CLASS = _recipe(loss=nn.CrossEntropyLoss)
LOSS_SWAPPED = _recipe(loss=_loss_swapped)
LOSS_ITEM = _recipe(loss=_loss_item)
OPT_ONE_ARG = _recipe(optimizer=_opt_one_arg)
OPT_RETURNS_NONE = _recipe(optimizer=_opt_none)
STEP_RETURNS_NONE = _recipe(train_step=_step_returns_none)
STEP_WRONG_SIGNATURE = _recipe(train_step=_step_wrong_signature)
STEP_RETURNS_FLOAT = _recipe(train_step=_step_item)


def NEEDS_ARGUMENT(width):  # noqa: N802 (a recipe function that wants an argument)
    return _recipe()
