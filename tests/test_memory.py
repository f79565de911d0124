"""Memory stays flat as a sweep's number of runs grows: models and histories are released.

    pytest tests/test_memory.py -s      # prints the measured numbers

Three measures after N sequential runs (digits28, 1 epoch on 256 samples each): models still
alive (weak references; must be none), tensors tracked by the garbage collector, and the
process's resident set size (RSS, from /proc). Growth from 5 to 20 runs must stay under small
bounds; one leaked model per run would add about 0.9 MB (the MLP's 235k float32 weights)
and 2 x 6 tensors (weights and, for SGD, no state) per run.
"""
import gc
import os
import weakref

import pytest
import torch

from harness import load_recipe
from harness.study import Config, run_config, run_study

MB = 2**20


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no lazy attributes


def tracked_recipe():
    """digits28 whose model factory keeps a weak reference to every model it builds."""
    recipe = load_recipe("digits28")
    built = []

    def model():
        m = recipe.model()
        built.append(weakref.ref(m))
        return m
    return recipe.replace(model=model), built


def configs(n):
    return [Config(lr=0.05 + 0.01 * i, batch_size=64, epochs=1, seed=i, options=(("subset", 256),)) for i in range(n)]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc for RSS")
def test_memory_is_flat_over_sequential_runs(one_thread, record_property):
    recipe, built = tracked_recipe()
    data = recipe.load_data()
    results, marks = [], {}
    for i, config in enumerate(configs(20), start=1):
        results.append(run_config(recipe, data, config))  # a sweep keeps every result (row + history)
        if i in (5, 20):
            marks[i] = (live_tensors(), rss_bytes())
    gc.collect()
    alive = sum(ref() is not None for ref in built)
    (t5, r5), (t20, r20) = marks[5], marks[20]
    record_property("memory", {"tensors_after_5": t5, "tensors_after_20": t20,
                               "rss_mb_after_5": round(r5 / MB, 1), "rss_mb_after_20": round(r20 / MB, 1)})
    print(f"\nrun_config x20: models alive {alive}/{len(built)}; tensors {t5} after 5 runs, {t20} after 20; "
          f"RSS {r5 / MB:.1f} MB after 5, {r20 / MB:.1f} MB after 20 ({(r20 - r5) / MB:+.1f} MB)")
    assert len(built) == 20 and alive == 0
    assert t20 - t5 <= 4  # 15 leaked models would be 90 tensors
    assert r20 - r5 < 12 * MB  # 15 leaked models would be about 14 MB, and allocator noise is a few MB


def test_a_study_releases_every_model(one_thread, tmp_path):
    recipe, built = tracked_recipe()
    kept = run_study(None, configs(8), tmp_path, recipe=recipe, progress=False)
    gc.collect()
    assert len(kept) == 8 and len(built) == 9  # eight runs and the recipe fingerprint (its parameter count)
    assert sum(ref() is not None for ref in built) == 0
    assert all(isinstance(r["history"], dict) for r in kept)  # results hold plain data, not tensors
    assert not any(isinstance(v, torch.Tensor) for r in kept for v in r["row"].values())
