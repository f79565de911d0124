"""Progress of a study on stderr with tqdm: trials done of the total, running, pruned, failed,
the best value so far of the task's main metric (accuracy, R2, ...), and tqdm's own rate
and time left. A run that raises is written above the bar when it is seen, as one line. On a
stream that is not a terminal (a log file, CI) the bar is drawn when its numbers change, at most
once every LOG_EVERY seconds, not every second: an hour's search wrote half a megabyte of redraws.

    with StudyProgress(study, total=10):
        run_trials(job)           # the bar reads the study's storage every second, on a thread

The bar counts the study's trials, not this process's, so it is right whether the trials run
here, in worker processes, or on other machines. It reads the study every second, or every
total/200 seconds for a study of more than 200 trials.
"""
from __future__ import annotations

import sys
import threading

from harness.study.storage import counts, run_label

LOG_EVERY = 30.0  # seconds between a non-terminal bar's redraws (tqdm's mininterval); the last state is always drawn


class StudyProgress:
    def __init__(self, study, total: int, enabled: bool = True, every: float = 1.0, stream=None):
        # each look reads every trial of the study (with its history): a big study is read less often,
        # so that a hundred machines' bars do not become the database's main load
        self.study, self.total, self.every = study, total, max(every, total / 200)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.bar = None
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown: set = set()  # trial numbers whose failure is on screen (or was before this command)
        self.before = 0  # failures from before this command: their configurations run again

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="trial", file=self.stream, dynamic_ncols=True,
                            mininterval=0.5 if self.tty else LOG_EVERY, smoothing=0.1)
            self.refresh(first=True)
            self.thread.start()
        return self

    def refresh(self, first: bool = False) -> None:
        try:
            c = counts(self.study)
        except Exception:  # a busy database: try again next second
            return
        for number, (config, error) in sorted(c["errors"].items()):
            if number not in self.shown and not first:
                self.bar.write(f"failed: {run_label(config)}: {error}", file=self.stream)
            self.shown.add(number)
        if first:
            self.before = len(c["errors"])
        done = c["complete"] + c["pruned"] + len(c["errors"]) - self.before  # a run that raised is done too
        if first:
            self.bar.reset(total=self.total)  # the clock and rate start now, not with the earlier runs
            self.bar.update(min(done, self.total))
            self.bar.unpause()
        elif done > self.bar.n:
            self.bar.update(min(done, self.total) - self.bar.n)
        best = f"{c['metric']} {c['best']:.4f}" if c["best"] is not None else "-"  # the metric once one is known
        postfix = f"running {c['running']}, pruned {c['pruned']}, failed {c['fail']}, best {best}"
        # a terminal's bar ticks every second (elapsed, time left); a log gets tqdm's throttled redraws
        self.bar.set_postfix_str(postfix, refresh=self.tty or first)

    def _loop(self):
        while not self.stop.wait(self.every):
            self.refresh()

    def __exit__(self, *exc):
        if self.bar is not None:
            self.stop.set()
            self.thread.join()
            self.refresh()
            self.bar.close()
