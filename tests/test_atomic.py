"""Nothing lost: atomic writes, weights-only checkpoints, and a sweep that survives Ctrl-C.

    pytest tests/test_atomic.py

A crash at any point of a write leaves the old file whole; a checkpoint is a plain dict of
tensors that `torch.load(weights_only=True)` reads; Ctrl-C during `harness sweep` keeps the
finished trials in the study and the same command resumes without re-running them.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import io
from harness.models import fashion_mlp
from harness.recipe import RecipeError

OLD = "the old, complete file\n"


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("crash", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_crash_mid_write_leaves_the_old_file(tmp_path, crash):
    path = tmp_path / "results.json"
    path.write_text(OLD)

    def half_then_crash(f):
        f.write(b'{"rows": [1, 2')  # half a JSON document reaches the temporary file
        raise crash

    with pytest.raises(type(crash)):
        io._atomic(path, half_then_crash)
    assert path.read_text() == OLD
    assert leftovers(tmp_path) == []


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "table.txt"
    path.write_text(OLD)

    def no_rename(src, dst):
        raise KeyboardInterrupt  # Ctrl-C between the fsync and the rename

    monkeypatch.setattr(io.os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == OLD and leftovers(tmp_path) == []
    io.atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"


KILLED_WRITER = """
import sys, time
from harness import io

def slow(f):
    for i in range(200):
        f.write(b"x" * 10_000)
        f.flush()
        if i == 5:
            print("writing", flush=True)
        time.sleep(0.05)

io._atomic(sys.argv[1], slow)
"""


def test_a_killed_process_leaves_the_old_file(tmp_path):
    """SIGKILL mid-write (no cleanup can run): the target is still the old file."""
    path = tmp_path / "runs" / "abc.json"
    path.parent.mkdir()
    path.write_text(OLD)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=60)
    assert path.read_text() == OLD
    # the orphaned temporary file is hidden and never mistaken for a result
    assert [p.name for p in path.parent.glob("*.json")] == ["abc.json"]


def test_an_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("in the way")
    with pytest.raises(io.OutputError) as info:
        io.atomic_write_json(tmp_path / "a_file" / "out" / "results.json", {"a": 1})
    assert isinstance(info.value, RecipeError) and "\n" not in str(info.value)
    assert "cannot write" in str(info.value) and "Not a directory" in str(info.value)


# --- checkpoints ----------------------------------------------------------------------------------

def test_checkpoints_hold_weights_only_and_load_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = fashion_mlp()
    io.save_weights(model, tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)  # plain torch, no harness code
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert state.keys() == model.state_dict().keys()
    torch.manual_seed(1)
    other = io.load_weights(fashion_mlp(), tmp_path / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_with_code_in_it_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(1), "extra": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(RecipeError) as info:
        io.load_weights(fashion_mlp(), tmp_path / "evil.pt")
    assert "not a weights-only checkpoint" in str(info.value) and "\n" not in str(info.value)


# --- Ctrl-C during a sweep, then the same command ---------------------------------------------------

def sweep_command(out: Path) -> list:
    return [sys.executable, "-m", "harness", "sweep", "lr", "--values", "1e-3,3e-3,1e-2,3e-2,0.1,0.3",
            "--epochs", "8", "--out", str(out), "--no-figures", "--threads", "1"]


def finished(out: Path) -> dict:
    """Finished trials of the sweep's study: key -> (completion time, table row)."""
    import optuna
    try:
        study = optuna.load_study(study_name="sweep-lr", storage=f"sqlite:///{out / 'study.db'}")
        return {t.user_attrs["key"]: (t.datetime_complete, t.user_attrs["row"]) for t in study.get_trials()
                if t.state.name in ("COMPLETE", "PRUNED")}
    except Exception:  # no study yet
        return {}


def test_ctrl_c_keeps_finished_runs_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(sweep_command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not finished(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # five of six 8-epoch runs are still to go (seconds each): a sweep that ends now did not take Ctrl-C
    # (it was a skip, "machine too fast", which hid a sweep that ignored SIGINT)
    ended = proc.poll() is not None
    assert not ended and finished(out), ("the sweep ended (or saved nothing) before Ctrl-C", proc.returncode,
                                         proc.stderr.read()[-2000:] if ended else "")
    proc.send_signal(signal.SIGINT)  # Ctrl-C, after the first run is saved
    stdout, stderr = proc.communicate(timeout=120)
    done = finished(out)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    assert "interrupted; finished trials are saved in study 'sweep-lr'" in stderr
    assert "Run the same command again" in stderr
    assert 1 <= len(done) < 6
    assert leftovers(out) == []

    again = subprocess.run(sweep_command(out), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {len(done)} of 6 trials already finished" in again.stderr
    after = finished(out)
    assert len(after) == 6 and {k: after[k] for k in done} == done  # not re-run
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 6
