"""No data file runs code when it is read: CIFAR-10 through a restricted unpickler, FashionMNIST
through torchvision's IDX reader, checkpoints through torch.load(weights_only=True).

Each malicious file would write a marker file (and, for os.system, run a shell command that
writes another) if anything unpickled it with the plain `pickle.load`; the tests prove no marker
appears and the load fails with one line, with checksums on and off, while the real formats
(tests/fakedata.py) still load.

    pytest tests/test_unpickle.py
"""
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import RecipeError
from harness.data import cifar10, fashion_mnist
from harness.io import UnsafePickleError, load_plain_pickle
from tests.fakedata import write_cifar10, write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
TRACE = re.compile(r"Traceback \(most recent call last\)")


class _WriteMarker:
    """Unpickling this calls pathlib.Path(marker).write_text('ran')."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


class _System:
    """Unpickling this calls os.system('touch marker')."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    """Unpickling this calls builtins.eval(...) that writes the marker."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('ran')",))


PAYLOADS = {"os.system": _System, "pathlib write_text": _WriteMarker, "eval": _Eval}


def _malicious_batch(payload, marker):
    """A dict shaped like a CIFAR-10 batch whose labels hide a payload."""
    data = np.zeros((100, 3072), dtype=np.uint8)
    return {"batch_label": "evil", "data": data, "labels": [0] * 99 + [payload(marker)]}


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar10(tmp_path)
    return tmp_path


@pytest.mark.parametrize("verify", ["0", "1"])
@pytest.mark.parametrize("file", ["data_batch_1", "test_batch", "batches.meta"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_malicious_cifar_file_runs_nothing_and_fails_with_one_line(cifar_root, tmp_path, monkeypatch,
                                                                        verify, file, payload):
    marker = tmp_path / "marker"
    obj = ({"label_names": [PAYLOADS[payload](marker)] * 10} if file == "batches.meta"
           else _malicious_batch(PAYLOADS[payload], marker))
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        with open(cifar_root / "cifar-10-batches-py" / file, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
        monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", verify)
        with pytest.raises(RecipeError) as info:
            cifar10(cifar_root, download=False)
        message = str(info.value)
        assert not marker.exists(), f"the {payload} payload in {file} ran"
        assert "\n" not in message
        if verify == "1":  # our files are not the published ones: the checksum refuses first
            assert "failed its checksum" in message
        else:
            assert f"{file} is not a CIFAR-10 batch" in message and "nothing in it was run" in message, message
            assert "download it again with --download" in message


def test_the_cli_refuses_a_malicious_cifar_file_with_one_line_and_runs_nothing(cifar_root, tmp_path):
    marker = tmp_path / "marker"
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump(_malicious_batch(_System, marker), f, protocol=2)
    env = dict(os.environ, HARNESS_VERIFY_CHECKSUMS="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "harness", "eda", "--recipe", "cifar_mlp", "--data-root",
                          str(cifar_root), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert not marker.exists()
    assert not TRACE.search(out.stderr), out.stderr
    lines = [line for line in out.stderr.splitlines() if "harness: error:" in line]
    assert len(lines) == 1 and "data_batch_3 is not a CIFAR-10 batch (it asks for posix.system" in lines[0], out.stderr


def test_the_real_cifar_format_still_loads_with_checksums_off(cifar_root, monkeypatch):
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "0")
    data = cifar10(cifar_root, download=False)
    x, y = data.train
    assert x.shape == (400, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert data.val[0].shape == (100, 3, 32, 32) and data.test[0].shape == (200, 3, 32, 32)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # the same pixels and labels torchvision's own (pickle) reader gives for our trusted file
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # noqa: S301 (our own file, written by fakedata)
    expected = torch.from_numpy(entry["data"].reshape(-1, 3, 32, 32)).float() / 255.0
    assert torch.equal(x[:100], expected)
    assert y[:100].tolist() == entry["labels"]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_of_every_protocol_loads(tmp_path, protocol):
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "name": "x",
           "raw": b"\x00\xff", "f": 1.5, "i": np.int64(7), "t": (1, None, True), "a32": np.ones(3, np.float32)}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    back = load_plain_pickle(path)
    assert back.keys() == obj.keys()
    assert np.array_equal(back["data"], obj["data"]) and back["data"].dtype == np.uint8
    assert back["labels"] == [1, 2, 3] and back["name"] == "x" and back["raw"] == b"\x00\xff"
    assert back["f"] == 1.5 and back["i"] == 7 and back["t"] == (1, None, True)


def test_python2_style_latin1_strings_load(tmp_path):
    # CIFAR-10's published files were written by Python 2: str as 8-bit strings, read as latin1
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"(dp0\nS'batch_label'\np1\nS'training batch 1 of 5'\np2\ns.")
    assert load_plain_pickle(path) == {"batch_label": "training batch 1 of 5"}


@pytest.mark.parametrize("obj,named", [
    (np.array([1, "a"], dtype=object), "an array of Python objects"),
    (torch.zeros(2), "torch._utils._rebuild_tensor_v2"),
    ({1, 2}, "set"),  # __builtin__.set under protocol 2
    (_WriteMarker("/nonexistent/marker"), "getattr"),  # getattr(Path, "write_text")
])
def test_anything_but_plain_data_is_refused_and_named(tmp_path, obj, named):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        load_plain_pickle(path)
    assert named in str(info.value)


def test_a_truncated_pickle_is_one_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"data": np.zeros((10, 3072), np.uint8)})[:500])
    with pytest.raises(UnsafePickleError, match="not a readable pickle"):
        load_plain_pickle(path)


def test_a_truncated_cifar_batch_is_one_line(cifar_root, monkeypatch):
    path = cifar_root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:1000])
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "0")
    with pytest.raises(RecipeError, match=r"data_batch_2 is not a CIFAR-10 batch \(it is not a readable pickle"):
        cifar10(cifar_root, download=False)


def test_a_cifar_batch_of_the_wrong_shape_is_one_line(cifar_root, monkeypatch):
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_4", "wb") as f:
        pickle.dump({"data": np.zeros((10, 784), np.uint8), "labels": [0] * 10}, f)
    monkeypatch.setenv("HARNESS_VERIFY_CHECKSUMS", "0")
    with pytest.raises(RecipeError, match="no 'data' array of uint8 rows of 3072 pixels"):
        cifar10(cifar_root, download=False)


def test_fashion_mnist_reads_idx_files_without_pickle(tmp_path, monkeypatch):
    """torchvision's FashionMNIST reads raw IDX bytes; prove no unpickling happens on the way."""
    write_fashion_mnist(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("FashionMNIST unpickled something")
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    data = fashion_mnist(tmp_path, download=False)
    assert data.train[0].shape == (540, 1, 28, 28) and data.test[0].shape == (200, 1, 28, 28)


def test_a_legacy_fashion_mnist_cache_holding_code_is_refused(tmp_path):
    """torchvision prefers an old processed/training.pt; it is read with weights_only=True."""
    write_fashion_mnist(tmp_path)
    processed = tmp_path / "FashionMNIST" / "processed"
    processed.mkdir()
    marker = tmp_path / "marker"
    for name in ("training.pt", "test.pt"):
        torch.save((_System(marker), torch.zeros(3)), processed / name)
    with pytest.raises(RecipeError) as info:
        fashion_mnist(tmp_path, download=False)
    assert not marker.exists()
    assert "\n" not in str(info.value) and "looks corrupted or truncated" in str(info.value)


UNSAFE_READ = re.compile(r"\bpickle\.loads?\(|\bUnpickler\(|torch\.load\((?![^)]*weights_only=True)"
                         r"|allow_pickle\s*=\s*True|\bjoblib\.load|\bdill\.|yaml\.load\(|\bmarshal\.load|\bshelve\.")


def test_no_unsafe_read_anywhere_in_the_project():
    """Every read of a pickle in the package is restricted; only tests may read their own files."""
    offenders = []
    for folder in ("harness", "checks", "suites", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if UNSAFE_READ.search(code) and "class _PlainDataUnpickler(pickle.Unpickler)" not in code:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_control_the_payloads_do_run_under_plain_pickle(tmp_path, payload):
    """Without the restricted reader each payload runs: the tests above test something real."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_malicious_batch(PAYLOADS[payload], marker), protocol=2))  # noqa: S301
    assert marker.exists()
