"""One line for an exception from the user's code: which part raised it, what it was fed, the fix.

    from harness.diagnose import user_code
    with user_code("fit", "train", split, batch_size=128):
        for xb, yb in batches(split, 128, ...):
            recipe.step(model, xb, yb, opt)   # a raw error from the model, the loss, the train_step
                                              # or the split's Dataset leaves the block as ONE
                                              # RecipeError line, chained to the original (`from e`)

The block costs nothing per step: it sits around the loop (a try block is free in Python 3.11)
and reads nothing until something fails. Then the traceback says which part was running: the
innermost of the harness's call sites into user code (`Forward.__call__`: the model's forward or
`forward=`; `Recipe.compute_loss`: the loss; `Recipe.step`: the train_step or the scheduler;
`default_step`: backward, a plain loss function or the optimizer; `batching.batches` and
`batching.as_pair`: reading a Dataset split or collating its samples), and that
frame's locals hold what the part was fed (their shapes and dtypes go in the line). An error
raised by the harness's own code (no call site in the traceback), a RecipeError (already one
line) and a BaseException that is not an Exception (Ctrl-C) pass through unchanged.
"""
from __future__ import annotations

import inspect
import linecache
import re
from typing import Optional

import torch
from torch.utils.data import Dataset

from harness import batching, tasks
from harness.errors import RecipeError
from harness.recipe import Forward, Recipe, TaskLoss, default_step

TRAIN_STEP_CALL = "train_step(model, inputs, targets, optimizer, loss_fn)"

# the harness's call sites into user code: code object -> the part it calls
_SITES = {
    Forward.__call__.__code__: "forward",
    Recipe.compute_loss.__code__: "loss",
    Recipe.step.__code__: "train_step",
    default_step.__code__: "default_step",
    batching.batches.__code__: "read",
    batching.as_pair.__code__: "read",
    tasks.Meter.update.__code__: "metric",
}


class user_code:
    """`with user_code(where, split_name, split, batch_size=B, reference=train_split):` turns an
    exception from user code inside the block into one RecipeError line (see the module docstring).

    where:      the prefix of the line ("fit", "evaluate").
    split_name: "train", "val", or None (a split of unknown name).
    batch_size: the batch size asked for (names a last batch of one).
    reference:  the training split, to compare per-sample input shapes with (for val/test).
    others:     other splits the block reads, by name (a Dataset that raises is named by its split).
    """

    def __init__(self, where: str, split_name: Optional[str], split=None, *, batch_size: Optional[int] = None,
                 reference=None, others: Optional[dict] = None):
        self.where, self.split_name, self.split = where, split_name, split
        self.batch_size, self.reference, self.others = batch_size, reference, others or {}

    def name_of(self, split) -> Optional[str]:
        """The name of a split this block reads (by identity), else the block's own split name."""
        named = [(self.split_name, self.split), ("train", self.reference), *self.others.items()]
        return next((name for name, known in named if known is not None and split is known), self.split_name)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if not isinstance(error, Exception) or isinstance(error, RecipeError):
            return False
        try:
            line = explain(error, self)
        except Exception:  # noqa: BLE001 (a diagnosis that fails must not hide what it diagnoses)
            line = None
        if line is None:
            return False  # the harness's own code failed (or the diagnosis did): keep the traceback
        raise RecipeError(line) from error


def explain(error: Exception, ctx: user_code) -> Optional[str]:
    """The one line for `error`, or None when no user part was running."""
    site = _innermost_site(error.__traceback__)
    if site is None:
        return None
    part, frame, lineno = site
    names = frame.f_locals
    said = f"{type(error).__name__}: {first_line(error)}"
    if part == "read":
        return _reading(error, names.get("split"), ctx, said)
    if part == "loss":
        recipe = names["self"]
        return _loss(recipe.loss, names.get("outputs"), names.get("targets"), ctx, said, task=recipe.task)
    if part == "forward":
        return _forward(names["self"], names.get("model"), names.get("inputs"), error, ctx, said)
    if part == "metric":  # the task's metric on the user's outputs: a line only when the outputs do not fit the task
        task, outputs, targets = names["self"].task, names.get("outputs"), names.get("targets")
        problem = _outputs_problem(task, outputs, targets)
        return problem and (f"{ctx.where}: the task's metric ({task!r}) on outputs {describe(outputs)} and "
                            f"{_split(ctx)}targets {describe(targets)} raised {said}; {problem}")
    code = linecache.getline(frame.f_code.co_filename, lineno)
    if part == "default_step":
        if "loss_fn(" in code:  # a plain loss function (Recipe.compute_loss would be the innermost site)
            return _loss(names["loss_fn"], names.get("outputs"), names.get("targets"), ctx, said)
        if ".backward(" in code:
            loss, outputs = names.get("loss"), names.get("outputs")
            return (f"{ctx.where}: loss.backward() raised {said} (the loss {describe(loss)} from outputs "
                    f"{describe(outputs)}); {_backward_fix(error)}")
        optimizer = names.get("optimizer")
        return (f"{ctx.where}: the optimizer's step ({type(optimizer).__name__}) raised {said}; check the optimizer "
                "factory's settings")
    if "scheduler" in code and "train_step" not in code:  # Recipe.step: scheduler.step()
        scheduler = names.get("scheduler")
        return f"{ctx.where}: the scheduler's step ({type(scheduler).__name__}) raised {said}; check its factory"
    step = names["self"].train_step
    if step is None:
        return None
    return _train_step(step, names.get("inputs"), names.get("targets"), error, ctx, said)


def _innermost_site(tb):
    """(part, frame, line number) of the innermost call site into user code in a traceback, or None."""
    found = None
    while tb is not None:
        part = _SITES.get(tb.tb_frame.f_code)
        if part is not None:
            found = (part, tb.tb_frame, tb.tb_lineno)
        tb = tb.tb_next
    return found


# --- one function per part ------------------------------------------------------------------------

def _forward(forward: Forward, model, inputs, error, ctx: user_code, said: str) -> str:
    who = (f"forward= ({_name(forward.fn)}) on the model {type(model).__name__}" if forward.fn is not None
           else f"the model's forward ({type(model).__name__})")
    if forward.fn is not None and isinstance(error, TypeError) and not _binds(forward.fn, 2):
        return (f"{ctx.where}: forward= {_name(forward.fn)}{_signature(forward.fn)} cannot be called as "
                f"forward(model, inputs) ({said}); give it that signature and return the outputs")
    fix = _input_fixes(model, inputs, error, ctx) or ["check that the model takes inputs of this shape and dtype"]
    return f"{ctx.where}: {who} on {_split(ctx)}inputs {describe(inputs)} raised {said}; {'; '.join(fix)}"


def _loss(loss, outputs, targets, ctx: user_code, said: str, task=None) -> str:
    if isinstance(loss, type):  # loss=nn.CrossEntropyLoss: calling the class builds a module
        return (f"{ctx.where}: loss= is the class {loss.__name__}, not a loss: loss(outputs, targets) called its "
                f"constructor ({said}); pass an instance, loss={loss.__name__}()")
    who = f"the task's default loss ({loss.task!r})" if isinstance(loss, TaskLoss) else f"the loss ({_name(loss)})"
    fix = _outputs_problem(task, outputs, targets)  # the outputs do not fit the task: the model, not the loss
    if fix is None:
        fix = ("the outputs do not fit the task's loss" if isinstance(loss, TaskLoss) else
               "it is called as loss(outputs, targets): check the order of the arguments inside it (torch's losses "
               "take (input, target)) and that the targets fit the outputs")
    return (f"{ctx.where}: {who} on outputs {describe(outputs)} and {_split(ctx)}targets {describe(targets)} "
            f"raised {said}; {fix}")


def _outputs_problem(task, outputs, targets) -> Optional[str]:
    """What the task says is wrong with these outputs and targets (e.g. the last layer's width), or None."""
    if task is None or not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return None
    try:
        return task.check_outputs(outputs, targets)
    except Exception:  # noqa: BLE001 (a task that cannot judge these outputs: say nothing more)
        return None


def _train_step(step, inputs, targets, error, ctx: user_code, said: str) -> str:
    name = _name(step)
    if isinstance(error, TypeError) and not _binds(step, 5):
        return (f"{ctx.where}: train_step {name}{_signature(step)} cannot be called as {TRAIN_STEP_CALL} ({said}); "
                "give it that signature and return the loss (or (loss, outputs))")
    module = _outermost_forward(error.__traceback__)
    inside = f" (in {type(module).__name__}.forward)" if module is not None else ""
    return (f"{ctx.where}: train_step ({name}) on {_split(ctx)}inputs {describe(inputs)} and targets "
            f"{describe(targets)} raised {said}{inside}; it is called as {TRAIN_STEP_CALL}")


def _reading(error, split, ctx: user_code, said: str) -> Optional[str]:
    if split is None or batching.is_pair(split):
        return None  # a pair split is sliced by the harness: not user code
    dataset, index = _dataset_item(error.__traceback__)
    name = ctx.name_of(split)
    if dataset is None and _collating(error.__traceback__, split):
        collate = getattr(split, "collate_fn", None)
        who = _name(collate) if collate is not None and not _is_torch(collate) else "torch's default_collate"
        fix = ("samples are batched by stacking, so they need equal shapes; give a DataLoader whose collate_fn "
               "pads them" if who.startswith("torch") else "it gets a list of samples and must return (inputs, targets)")
        return f"{ctx.where}: collating a batch of the {name + ' ' if name else ''}split ({who}) raised {said}; {fix}"
    if dataset is None:
        dataset = split.dataset if isinstance(split, torch.utils.data.DataLoader) else split
    what = f"sample {index!r}" if index is not None else "a batch"
    size = f" for every index below len() = {len(dataset)}" if hasattr(dataset, "__len__") else ""
    return (f"{ctx.where}: reading {what} of the {name + ' ' if name else ''}split ({type(dataset).__name__}) "
            f"raised {said}; the Dataset's __getitem__ must return (inputs, targets){size}")


def _collating(tb, split) -> bool:
    """Whether the traceback runs through the split's collate_fn or torch's default collate."""
    collate = getattr(getattr(split, "collate_fn", None), "__code__", None)
    while tb is not None:
        code = tb.tb_frame.f_code
        if code is collate or code.co_filename.endswith(("data/_utils/collate.py", "data\\_utils\\collate.py")):
            return True
        tb = tb.tb_next
    return False


def _is_torch(fn) -> bool:
    return (getattr(fn, "__module__", "") or "").startswith("torch.")


def _outermost_forward(tb):
    """The first nn.Module whose forward is in the traceback (the model a train_step called), or None."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "forward" and isinstance(frame.f_locals.get("self"), torch.nn.Module):
            return frame.f_locals["self"]
        tb = tb.tb_next
    return None


def _dataset_item(tb):
    """(dataset, index) of the innermost Dataset.__getitem__ in the traceback, else (None, None)."""
    found = (None, None)
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        if code.co_name == "__getitem__" and isinstance(frame.f_locals.get("self"), Dataset) and code.co_argcount >= 2:
            found = (frame.f_locals["self"], frame.f_locals.get(code.co_varnames[1]))
        tb = tb.tb_next
    return found


# --- fixes ------------------------------------------------------------------------------------------

def _input_fixes(model, inputs, error, ctx: user_code) -> list:
    """What to change, read from the inputs' dtype and shape and the error: a list of short clauses."""
    text = str(error)
    fixes = []
    leaves = [x for x in batching.leaves(inputs) if isinstance(x, torch.Tensor)]
    param = next((p for p in model.parameters() if p.is_floating_point()), None) if model is not None else None
    for x in leaves:
        if x.dtype == torch.uint8:
            fixes.append("the inputs are uint8 but the model computes in float: convert them in the data factory, "
                         "x.float() / 255 for 0..255 images")
            break
        if not x.is_floating_point() and param is not None and any(w in text for w in ("dtype", "scalar type",
                                                                                          "Long", "Int")):
            want = str(param.dtype).replace("torch.", "")
            fixes.append(f"the inputs are {str(x.dtype).replace('torch.', '')} but the model computes in {want}: "
                         f"convert them (x.to(torch.{want})), or embed token ids with an nn.Embedding first")
            break
    x = leaves[0] if leaves else None
    if x is not None and x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4) \
            and "channels" in text:
        fixes.append(f"the inputs look channels-last (N, H, W, C) = {tuple(x.shape)}; Conv2d takes (N, C, H, W): "
                     "x.permute(0, 3, 1, 2) in the data factory")
    if x is not None and batching.batch_len(inputs) == 1 and (ctx.batch_size or 0) > 1 and ctx.split_name == "train":
        n = batching.split_len(ctx.split) if ctx.split is not None else None
        fixes.append(f"{n} training samples at batch_size {ctx.batch_size} leave a last batch of 1, which BatchNorm "
                     "cannot train on: pass drop_last=True to train() or fit() (harness commands: --drop-last), "
                     "or choose another batch size")
    if isinstance(error, TypeError) and isinstance(inputs, (dict, tuple, list)):
        fixes.append("a dict of inputs is passed as model(**inputs), a tuple or list as model(*inputs); give the recipe "
                     "forward=lambda model, inputs: ... to call the model another way")
    if isinstance(error, NotImplementedError) and "forward" in text and model is not None:
        fixes.append(f"define forward(self, ...) in {type(model).__name__}")
    theirs, ours = per_sample(inputs), per_sample(ctx.reference[0]) if batching.is_pair(ctx.reference) else None
    if ours is not None and theirs != ours:
        fixes.append(f"{ctx.split_name or 'these'} inputs {_shapes(theirs)} per sample, train {_shapes(ours)}: give "
                     "every split the same per-sample shape (resize or crop in the data factory)")
    if "out of memory" in text.lower():
        fixes.append(f"a smaller batch_size than {ctx.batch_size or batching.batch_len(inputs)} needs less memory")
    return fixes


def _backward_fix(error) -> str:
    if "inplace operation" in str(error):
        return ("an in-place operation in forward (y += 1, x.relu_(), nn.ReLU(inplace=True)) overwrote a value "
                "backward needs: make it out-of-place (y = y + 1)")
    if "does not require grad" in str(error):
        return ("the loss is not connected to the model's parameters: do not detach the outputs, call .item() or "
                "compute them under torch.no_grad()")
    return "check the operations between the model's outputs and the loss"


# --- words --------------------------------------------------------------------------------------------

def first_line(error: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, at most `limit` characters."""
    lines = [s.strip() for s in str(error).splitlines() if s.strip()]
    text = lines[0] if lines else ""
    if text.startswith("Caught ") and "Original Traceback" in str(error):  # re-raised from a DataLoader worker
        said = re.compile(rf"^(\w+\.)*{type(error).__name__}: ")  # the original's own line, module-qualified or not
        first = next((said.sub("", s) for s in lines if said.match(s)), lines[-1])
        text = f"{first} ({text.rstrip('.')})"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(tree, depth: int = 0) -> str:
    """Shapes and dtypes of a batch: '(64, 1, 28, 28) uint8', "{'ids': (8, 16) int64}", ..."""
    if isinstance(tree, torch.Tensor):
        return f"{tuple(tree.shape)} {str(tree.dtype).replace('torch.', '')}"
    if depth < 2 and isinstance(tree, dict):
        items = [f"{k!r}: {describe(v, depth + 1)}" for k, v in list(tree.items())[:4]]
        return "{" + ", ".join(items) + (", ..." if len(tree) > 4 else "") + "}"
    if depth < 2 and isinstance(tree, (tuple, list)):
        items = [describe(v, depth + 1) for v in tree[:4]]
        return "(" + ", ".join(items) + (", ..." if len(tree) > 4 else "") + ")"
    if isinstance(tree, (int, float)):
        return f"a {type(tree).__name__} {tree!r}"
    return f"a {type(tree).__name__}"


def per_sample(inputs):
    """The shape of one sample of each tensor in a batch (without the first dimension), or None."""
    shapes = tuple(tuple(x.shape[1:]) for x in batching.leaves(inputs) if isinstance(x, torch.Tensor) and x.dim())
    return shapes or None


def _shapes(shapes: tuple) -> str:
    return str(shapes[0]) if len(shapes) == 1 else ", ".join(map(str, shapes))


def _split(ctx: user_code) -> str:
    return f"{ctx.split_name} " if ctx.split_name else ""


def _name(fn) -> str:
    """A function's name as the user wrote it: 'step', 'Net.step' (no '<locals>' path), or its type."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return name.split("<locals>.")[-1]


def _signature(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _binds(fn, n: int) -> bool:
    """Whether `fn` accepts `n` positional arguments (True when its signature cannot be read)."""
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:
        return True
    return True
