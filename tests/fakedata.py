"""Small FashionMNIST and CIFAR-10 files in the datasets' real on-disk formats.

torchvision reads them exactly as it reads the published files, so the loaders are tested
end to end without a download. Images are class prototypes plus noise (learnable, all
distinct), as uint8 like the originals.
"""
import pickle
import struct
from pathlib import Path

import numpy as np


def _images(n, shape, num_classes, seed):
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(num_classes, *shape))
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    noise = rng.normal(0, 40, size=(n, *shape))
    return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_fashion_mnist(root, n_train=600, n_test=200, seed=0) -> Path:
    """Write root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (big-endian IDX)."""
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = _images(n, (28, 28), 10, s)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())
    return raw


def write_cifar10(root, per_batch=100, n_test=200, seed=0) -> Path:
    """Write root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (Python pickles)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        images, labels = _images(n, (3, 32, 32), 10, seed + i)
        entry = {"batch_label": name, "data": images.reshape(n, -1), "labels": labels.astype(int).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"]}, f)
    return folder
