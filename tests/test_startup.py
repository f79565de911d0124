"""Start-up of the `harness` command: a sweep or search with --jobs > 1 starts its worker pool
before this process imports torch, so the pool's imports (torch, Optuna, the engine: 2-3 s)
run beside the parent's instead of after them."""
import subprocess
import sys

import pytest

from harness.study.workers import forks


def run(code: str) -> list:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_the_command_parses_its_arguments_without_importing_torch():
    assert run("import sys, harness.cli as cli; cli.build_parser().parse_args(['sweep', 'lr', '--jobs', '0']); "
               "import harness.study, harness.study.workers, harness.runtime; "
               "print('torch' in sys.modules)") == ["False"]


@pytest.mark.skipif(not forks(), reason="the pool process is started where workers are forked (Linux)")
@pytest.mark.parametrize("argv, started", [
    (["sweep", "lr", "--jobs", "2"], True),
    (["search", "--jobs", "2", "--storage", "postgresql+psycopg://me:secret@db/x"], True),
    (["sweep", "lr"], False),                 # one process: no pool
    (["train", "--epochs", "1"], False),      # not a study
])
def test_a_sweep_with_workers_starts_its_pool_before_torch(argv, started):
    out = run("import sys, harness.cli as cli; "
              f"pool = cli._early_pool(cli.build_parser().parse_args({argv!r})); "
              "print(pool.proc is not None, 'torch' in sys.modules, "
              "'secret' in ' '.join(pool.proc.args) if pool.proc else False); pool.close()")
    assert out == [str(started), "False", "False"]
