"""Datasets the built-in recipes train on, and helpers that turn any split into tensors.

    from harness.data import digits28, fashion_mnist, cifar10, synthetic
    data = digits28()                      # offline, ~1 s: sklearn's digits at 1x28x28
    data = fashion_mnist(root, download)   # torchvision FashionMNIST, 54k/6k/10k
    data = cifar10(root, download)         # CIFAR-10 (torchvision's files, read without pickle), 40k/10k/10k

Every loader returns `harness.Data` with float32 inputs in [0, 1] and int64 targets.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from harness.io import UnsafePickleError, load_plain_pickle
from harness.batching import as_pair, split_len, subset  # noqa: F401 (re-exported)
from harness.errors import RecipeError
from harness.recipe import Data, is_tensor_split  # noqa: F401 (re-exported)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataSettings:
    """Where dataset files live and whether the loaders may download them.

    The pytest plugin and the CLI set these from `--data-root` / `--download`; the
    environment variables HARNESS_DATA_ROOT and HARNESS_DOWNLOAD=1 do the same.
    """
    def __init__(self):
        self.root: Optional[Path] = None
        self.download: Optional[bool] = None

    def resolved_root(self) -> Path:
        if self.root is not None:
            return Path(self.root).expanduser()
        if os.environ.get("HARNESS_DATA_ROOT"):
            return Path(os.environ["HARNESS_DATA_ROOT"]).expanduser()
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache) / "recipe-harness" / "data"

    def resolved_download(self) -> bool:
        if self.download is not None:
            return self.download
        return os.environ.get("HARNESS_DOWNLOAD", "") == "1"


settings = DataSettings()


# --- split helpers (harness.batching; kept here under their old names) ------------------------

def as_tensors(split, limit: Optional[int] = None):
    """Return `(inputs, targets)` for a split of any kind (see harness.batching.as_pair)."""
    return as_pair(split, limit)


# --- the embedded default ---------------------------------------------------------------------

_DIGITS_CACHE: dict = {}


def digits28(seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Data:
    """scikit-learn's bundled digits (1,797 8x8 images, 10 classes) resized to 1x28x28 in [0, 1].

    Split train/val/test (about 70/15/15 %) stratified by class with a fixed seed, so every
    run of every test sees the same splits. Reads the CSV that ships inside scikit-learn
    directly (importing sklearn.datasets alone costs about a second).
    """
    key = (seed, val_fraction, test_fraction)
    if key not in _DIGITS_CACHE:
        raw = _bundled_digits()  # (1797, 65): 64 pixels in 0..16, then the label
        x = torch.from_numpy(raw[:, :64].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
        y = torch.from_numpy(raw[:, 64].astype(np.int64))
        parts = _stratified_split(y.numpy(), (1 - val_fraction - test_fraction, val_fraction), seed)
        _DIGITS_CACHE[key] = tuple((x[i].contiguous(), y[i].contiguous()) for i in parts)
    train, val, test = _DIGITS_CACHE[key]
    return Data(train=train, val=val, test=test, class_names=tuple(str(i) for i in range(10)))


def _bundled_digits() -> np.ndarray:
    import importlib.util

    folder = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0])
    path = folder / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a future layout: fall back to the public loader
        from sklearn.datasets import load_digits
        d = load_digits()
        return np.column_stack([d.data, d.target])
    return np.loadtxt(path, delimiter=",")


def _stratified_split(labels: np.ndarray, fractions, seed: int):
    """Index arrays for len(fractions) + 1 parts, each class divided in the same proportions."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


# --- torchvision datasets ---------------------------------------------------------------------

def fashion_mnist(root=None, download=None, val_fraction: float = 0.1) -> Data:
    """FashionMNIST as in the seed notebook: first 54,000 train, last 6,000 val, 10,000 test.

    torchvision reads the raw IDX files (plain bytes, no pickle); an old processed/*.pt cache is
    read with torch.load(weights_only=True), which refuses anything but tensors.
    """
    import pickle  # for its exception only: weights_only=True refuses code with UnpicklingError

    from torchvision import datasets

    root, download = _where(root, download)
    root = _fashion_root(root)
    try:
        train = datasets.FashionMNIST(root, train=True, download=download)
        test = datasets.FashionMNIST(root, train=False, download=download)
    except RuntimeError as e:
        if "not found" in str(e).lower():
            raise RecipeError(_missing("FashionMNIST", root, root / "FashionMNIST" / "raw",
                                       "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                       "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")) from e
        raise RecipeError(_corrupted("FashionMNIST", root / "FashionMNIST", e)) from e
    except (ValueError, IndexError, OSError, EOFError, pickle.UnpicklingError) as e:  # a truncated or foreign file
        raise RecipeError(_corrupted("FashionMNIST", root / "FashionMNIST", e)) from e
    x = train.data.float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y = train.targets.long()
    n_train = len(y) - int(round(val_fraction * len(y)))
    x_test = test.data.float().div_(255.0).unsqueeze(1)
    return Data(train=(x[:n_train], y[:n_train]), val=(x[n_train:], y[n_train:]),
                test=(x_test, test.targets.long()), class_names=FASHION_CLASSES)


_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _fashion_root(root: Path) -> Path:
    """The folder above FashionMNIST/raw, also when given FashionMNIST or FashionMNIST/raw itself;
    .gz files copied there by hand (as published) are unpacked beside themselves."""
    if root.name == "raw" and root.parent.name == "FashionMNIST":
        root = root.parent.parent
    elif root.name == "FashionMNIST" and (root / "raw").is_dir():
        root = root.parent
    raw = root / "FashionMNIST" / "raw"
    for name in _FASHION_FILES:
        packed = raw / f"{name}.gz"
        if not (raw / name).is_file() and packed.is_file():
            import gzip

            from harness.io import atomic_write_bytes
            try:
                with gzip.open(packed) as f:
                    atomic_write_bytes(raw / name, f.read())
            except (OSError, EOFError) as e:
                raise RecipeError(_corrupted("FashionMNIST", raw.parent, e)) from None
    return root


def cifar10(root=None, download=None, val_fraction: float = 0.2, verify: bool = None) -> Data:
    """CIFAR-10 as in the blog: first 40,000 train, last 10,000 val, plus the 10,000 test images.

    Inputs are (N, 3, 32, 32) floats in [0, 1]. The files (Python pickles) are checked against
    torchvision's published MD5s, then read with `harness.io.load_plain_pickle`, which builds
    only arrays, lists, dicts, str and numbers and never runs code from the file, checksums or
    not. `verify=False` (or HARNESS_VERIFY_CHECKSUMS=0) skips the MD5s, for files you made yourself.
    """
    if verify is None:
        verify = os.environ.get("HARNESS_VERIFY_CHECKSUMS", "1") != "0"
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    root, download = _where(root, download)
    if root.name == CIFAR10.base_folder and not (root / CIFAR10.base_folder).is_dir():
        root = root.parent  # given the batches' own folder
    folder = root / CIFAR10.base_folder
    if not folder.is_dir() and (root / CIFAR10.filename).is_file():
        _extract_cifar10(root, verify)  # the archive copied by hand, not yet unpacked
    files = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    if download and not all(check_integrity(str(folder / name), md5) for name, md5 in files):
        _download_cifar10(root)
    if not all((folder / name).is_file() for name, _ in files):
        raise RecipeError(_missing("CIFAR-10", root, folder, "data_batch_1..5, test_batch, batches.meta"))
    if verify and not all(check_integrity(str(folder / name), md5) for name, md5 in files):
        raise RecipeError(f"CIFAR-10 under {folder} failed its checksum (a file is corrupted or not the "
                          "original); delete the folder and run again with --download")
    _read_cifar_meta(folder / CIFAR10.meta["filename"])
    x, y = _read_cifar_batches(folder, [name for name, _ in CIFAR10.train_list])
    x_test, y_test = _read_cifar_batches(folder, [name for name, _ in CIFAR10.test_list])
    n_train = len(y) - int(round(val_fraction * len(y)))
    return Data(train=(x[:n_train].contiguous(), y[:n_train]), val=(x[n_train:].contiguous(), y[n_train:]),
                test=(x_test, y_test), class_names=CIFAR_CLASSES)


def _extract_cifar10(root: Path, verify: bool) -> None:
    import tarfile

    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    archive = root / CIFAR10.filename
    if verify and not check_integrity(str(archive), CIFAR10.tgz_md5):
        raise RecipeError(f"{archive} failed its checksum (corrupted or not the original); delete it and run "
                          "again with --download")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"{CIFAR10.base_folder}/")]
            tar.extractall(root, members=members, filter="data")  # "data": no links out, no devices
    except (tarfile.TarError, OSError, EOFError) as e:
        raise RecipeError(f"{archive} could not be unpacked ({type(e).__name__}: {e}); delete it and run again "
                          "with --download") from None


def _download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    try:  # the archive is checked against its published MD5 before it is extracted
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as e:
        raise RecipeError(f"CIFAR-10 could not be downloaded to {root} ({type(e).__name__}: {e}); check the "
                          f"connection, or copy cifar-10-python.tar.gz's contents there and pass --data-root {root}") from None


def _cifar_unreadable(path: Path, why: str) -> RecipeError:
    return RecipeError(f"CIFAR-10 file {path} is not a CIFAR-10 batch ({why}; nothing in it was run); delete "
                       f"{path.parent} and download it again with --download")


def _read_cifar_meta(path: Path) -> None:
    try:
        meta = load_plain_pickle(path)
    except UnsafePickleError as e:
        raise _cifar_unreadable(path, str(e)) from None
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and len(names) == len(CIFAR_CLASSES)):
        raise _cifar_unreadable(path, "no list of 10 label_names")


def _read_cifar_batches(folder: Path, names):
    """(N, 3, 32, 32) float32 in [0, 1] and int64 labels from CIFAR-10 batch files."""
    xs, ys = [], []
    for name in names:
        path = folder / name
        try:
            entry = load_plain_pickle(path)
        except UnsafePickleError as e:
            raise _cifar_unreadable(path, str(e)) from None
        data = entry.get("data") if isinstance(entry, dict) else None
        labels = entry.get("labels") if isinstance(entry, dict) else None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise _cifar_unreadable(path, "no 'data' array of uint8 rows of 3072 pixels")
        if not (isinstance(labels, list) and len(labels) == len(data)
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels)):
            raise _cifar_unreadable(path, f"no 'labels' list of {len(data)} integers")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(torch.as_tensor(np.asarray(labels, dtype=np.int64)))
    return torch.cat(xs).float().div_(255.0), torch.cat(ys)


def _where(root, download):
    root = Path(root).expanduser() if root is not None else settings.resolved_root()
    download = settings.resolved_download() if download is None else download
    if root.exists() and not root.is_dir():
        raise RecipeError(f"--data-root {root}: not a folder; pass the folder that holds FashionMNIST/ or "
                          "cifar-10-batches-py/")
    return root, download


def _corrupted(name, folder, error) -> str:
    said = (str(error).strip().splitlines() or [""])[0][:200]  # torch's errors run to many lines
    return (f"{name} under {folder} looks corrupted or truncated ({type(error).__name__}: {said}); "
            f"delete {folder} and download it again with --download")


def _missing(name, root, folder, files) -> str:
    return (f"{name} is not under {folder} ({files}) and downloading is off; "
            f"run with --download (or HARNESS_DOWNLOAD=1) on a machine with internet, "
            f"or copy the files there and pass --data-root {root}")


# --- synthetic data for fast tests ------------------------------------------------------------

def synthetic(n_train: int = 512, n_val: int = 128, n_test: int = 128, shape=(1, 28, 28),
              num_classes: int = 10, seed: int = 0, noise: float = 0.5) -> Data:
    """Learnable synthetic classification data of any input shape.

    Each class has a random prototype in [0, 1]; a sample is its prototype plus Gaussian noise,
    clipped to [0, 1]. Classes are balanced; splits never share a sample.
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((num_classes, *shape), generator=g)

    def make(n):
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = (prototypes[y] + noise * torch.randn((n, *shape), generator=g)).clamp_(0.0, 1.0)
        return x, y

    return Data(train=make(n_train), val=make(n_val), test=make(n_test) if n_test else None,
                class_names=tuple(str(i) for i in range(num_classes)))
