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
from harness.study.configs import Config, Space, search_configs, sweep_configs
from harness.study.one_run import run_config
from harness.study.reports import COLUMNS, METRICS, format_table, summarize, to_csv, write_outputs
from harness.study.sweeps import load_study_results, run_study

__all__ = ["Config", "Space", "run_config", "COLUMNS", "METRICS", "format_table", "load_study_results", "run_study",
           "search_configs", "summarize", "sweep_configs", "to_csv", "write_outputs"]
