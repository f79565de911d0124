"""Run configurations in worker processes, each with a capped number of torch threads.

    from harness.study.workers import run_parallel
    for config, result in run_parallel("digits28", configs, jobs=2, threads=1):
        ...                                   # results arrive as they finish, in any order

Workers are forked from a "forkserver" that imported torch once but never ran an op (so no
thread pool is forked; "spawn" where there is no forkserver, e.g. Windows). An initializer
sets torch.set_num_threads(threads) and pins fit's thread choice to it, so jobs x threads
never exceeds the cores: two processes of two threads each on two cores run about 9x slower
at batch 8 than two of one thread each. A worker re-loads the recipe from its spec string (a built-in
name or file.py:NAME), loads its data once, and reuses both for every config it runs;
tensor data passed in by the caller is sent to the workers instead of re-loaded.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator, Optional

import torch

from harness.recipe import Data

_worker: dict = {}  # per worker process: recipe, data, device


def _init_worker(spec: str, data: Optional[Data], device: str, threads: int, data_settings: tuple) -> None:
    from harness import data as data_module, runtime

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    runtime.set_threads_override(threads)  # fit must not measure its way past the worker's share
    from harness.recipe import load_recipe

    data_module.settings.root, data_module.settings.download = data_settings
    recipe = load_recipe(spec)
    _worker.update(recipe=recipe, data=data, device=device)


def _run_one(config):
    """Run one config (or a list of lr-only configs as one stacked model) in a worker."""
    from harness.study.runs import run_config

    if _worker["data"] is None:
        _worker["data"] = _worker["recipe"].load_data()
    recipe, data, device = _worker["recipe"], _worker["data"], _worker["device"]
    if isinstance(config, list):
        from harness.study.stacked import run_configs
        return run_configs(recipe, data, config, device)
    return run_config(recipe, data, config, device)


def run_parallel(spec: str, tasks: list, *, jobs: int, threads: int, device="cpu",
                 data: Optional[Data] = None) -> Iterator[tuple]:
    """Yield (task, result) as each finishes. A task is a Config, or a list of Configs that
    differ only in lr, trained together as one stacked model (its result is then a list)."""
    from harness import data as data_module

    ctx = _context()
    settings = (data_module.settings.root, data_module.settings.download)
    shipped = data if data is not None and _is_tensor_data(data) else None
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                               initargs=(spec, shipped, str(device), threads, settings))
    try:
        pending = {pool.submit(_run_one, task): task for task in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                yield task, future.result()
    finally:  # on an error (or a caller that stops early) drop the queued configs
        pool.shutdown(wait=True, cancel_futures=True)


def _context():
    """forkserver where there is one (its server imports torch once; each worker is then a fast
    fork of a process that never ran a torch op), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["harness.study.runs", "harness.study.stacked", "sklearn.metrics"])
    return ctx


def _is_tensor_data(data: Data) -> bool:
    from harness.data import is_tensor_split
    return all(split is None or is_tensor_split(split) for split in (data.train, data.val, data.test))
