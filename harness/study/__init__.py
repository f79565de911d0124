"""The study: sweeps and searches over training configurations as Optuna studies, run and reported.

    from harness.study import Config, sweep_configs, search_configs, run_study, summarize, write_outputs

Modules, each importing only those above it:
- `configs`: one configuration (`Config`), the sweep grids, search plans, the recipe identity;
- `one_run`: training one configuration (`run_config`) and checking the swept value was used;
- `stacked`: an lr-only group of configurations trained as one stacked model (torch.func);
- `storage`: the Optuna storage and study (create or join, the plan, reading results back);
- `trials`: the loop that claims a trial, keeps its heartbeat, runs it and tells the result;
- `workers`: worker processes on this machine that die with their parent;
- `progress`: the tqdm bar read from the study;
- `sweeps`: `run_study`, which puts these together;
- `reports`: the table, CSV, results.json and figures, from a study's results.
"""
from __future__ import annotations

import importlib

_EXPORTS = {  # public name -> the module that defines it; loaded on first use (PEP 562), so the CLI can
    # start its worker pool (harness.study.workers) before this process imports torch
    "Config": "configs", "Space": "configs", "search_configs": "configs", "sweep_configs": "configs",
    "run_config": "one_run",
    "COLUMNS": "reports", "METRICS": "reports", "format_table": "reports", "summarize": "reports",
    "scored_note": "reports", "to_csv": "reports", "write_outputs": "reports",
    "describe": "sweeps", "load_study_results": "sweeps", "run_study": "sweeps",
    "StudyFailures": "trials", "TrialError": "trials",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harness.study.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
