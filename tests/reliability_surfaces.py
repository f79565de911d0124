"""Run one recipe the three ways a user would, and say what the user saw.

    outcome = via_api(spec)        # train(load_recipe(spec))
    outcome = via_cli(spec, tmp)   # harness train --recipe SPEC (in-process)
    outcome = via_pytest(pytester, spec)   # pytest --pyargs harness.suites -m sanity --recipe SPEC

Each returns Outcome(kind, text): kind is 'ran' (finished without an error), 'line' (stopped
with one clear line: a RecipeError, `harness: error: ...`, a pytest usage error, or failing
checks that each say what is wrong), or 'traceback' (a raw exception, a Python traceback or
pytest's `file.py:123: SomeError` frame, or INTERNALERROR).
"""
import contextlib
import io
import re
import warnings
from dataclasses import dataclass, field

TRACE = re.compile(r"Traceback \(most recent call last\)|^\S+\.py:\d+: \w*(Error|Exception|Interrupt)\b"
                   r"|INTERNALERROR|^E\s+\w+(Error|Exception)\b", re.M)


@dataclass
class Outcome:
    kind: str   # ran | line | traceback
    text: str
    warnings: list = field(default_factory=list)
    value: object = None

    def has(self, *fragments) -> bool:
        return any(all(f in line for f in fragments) for line in self.text.splitlines())


def via_api(call) -> Outcome:
    """Call `call()` as a user of the Python API would."""
    from harness import RecipeError

    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        try:
            value = call()
        except RecipeError as e:
            message = str(e)
            kind = "line" if "\n" not in message.strip() else "traceback"
            return Outcome(kind, message, [str(w.message) for w in caught])
        except BaseException as e:  # noqa: BLE001 (anything else reaches the user as a traceback)
            if isinstance(e, KeyboardInterrupt):
                raise
            return Outcome("traceback", f"{type(e).__name__}: {e}", [str(w.message) for w in caught])
    return Outcome("ran", out.getvalue(), [str(w.message) for w in caught], value)


def via_cli(argv, capsys=None) -> Outcome:
    """`harness ARGV` in-process; an exception escaping main() is what the user sees as a traceback."""
    from harness import cli

    err = io.StringIO()
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            return Outcome("traceback", f"{type(e).__name__}: {e}\n{err.getvalue()}")
    text = out.getvalue() + err.getvalue()
    ws = [str(w.message) for w in caught]
    if TRACE.search(text):
        return Outcome("traceback", text, ws, code)
    if code == 0:
        return Outcome("ran", text, ws, code)
    errors = [line for line in err.getvalue().splitlines() if line.startswith("harness: ")]
    return Outcome("line" if len(errors) == 1 else "traceback", text, ws, code)


def via_cli_process(argv, cwd=None, timeout=600) -> Outcome:
    """`python -m harness ARGV` in its own process, as a user runs it (nothing shared between runs)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-m", "harness", *[str(a) for a in argv]], capture_output=True, text=True,
                          env=env, cwd=cwd or root, timeout=timeout)
    text = done.stdout + done.stderr
    if TRACE.search(text):
        return Outcome("traceback", text, value=done.returncode)
    if done.returncode == 0:
        return Outcome("ran", text, value=done.returncode)
    errors = [line for line in done.stderr.splitlines() if line.startswith("harness: ")]
    return Outcome("line" if len(errors) == 1 else "traceback", text, value=done.returncode)


def via_pytest(pytester, *args) -> Outcome:
    """`pytest --pyargs harness.suites -m sanity ARGS` in-process."""
    result = pytester.runpytest("--pyargs", "harness.suites", "-m", "sanity", "-p", "no:cacheprovider",
                                "-p", "no:randomly", "-p", "no:pytest_torch", *args)
    text = result.stdout.str() + "\n" + result.stderr.str()
    if TRACE.search(text):
        return Outcome("traceback", text, value=result.ret)
    if result.ret == 0:
        return Outcome("ran", text, value=result.ret)
    return Outcome("line", text, value=result.ret)
