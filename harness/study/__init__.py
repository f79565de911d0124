"""The study: sweeps and searches over training configurations, run and reported.

    from harness.study import Config, sweep_configs, run_study, summarize, write_outputs

- `runs`: one configuration (`Config`), how to run it (`run_config`) and many (`execute`);
- `workers`: worker processes with capped threads;
- `stacked`: an lr-only sweep trained as one stacked model (torch.func);
- `sweeps`: the sweep/search grids, resume from `--out`, the table, CSV and figures.
"""
from harness.study.runs import Config, execute, run_config
from harness.study.sweeps import (COLUMNS, METRICS, format_table, load_done, run_study, search_configs,
                                  summarize, sweep_configs, to_csv, write_outputs)

__all__ = ["Config", "execute", "run_config", "COLUMNS", "METRICS", "format_table", "load_done", "run_study",
           "search_configs", "summarize", "sweep_configs", "to_csv", "write_outputs"]
