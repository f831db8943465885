"""Shared fixtures: tiny synthetic MNIST files in the real idx format, and the real files if present."""

import gzip
import os
import struct
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # no display in tests

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "mnist"
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # uint8 data, 3 or 1 dimensions


def write_idx(path, tensor, compress=False):
    """Write a uint8 tensor as an idx file (the format of the original MNIST files)."""
    header = struct.pack(">I", IDX_MAGIC[tensor.dim()]) + b"".join(struct.pack(">I", s) for s in tensor.shape)
    data = header + tensor.to(torch.uint8).numpy().tobytes()
    path = Path(path)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_digits(n, seed):
    """n fake 28x28 'digits' (a bright bar whose position encodes the label) and their labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 40, (n, 28, 28), generator=g)
    for i, label in enumerate(labels.tolist()):
        images[i, 4 + 2 * label : 6 + 2 * label, 4:24] = 255
    return images.to(torch.uint8), labels.to(torch.uint8)


@pytest.fixture
def mnist_dir(tmp_path):
    """A folder with the four MNIST files (uncompressed): 96 training and 48 test images."""
    src = tmp_path / "mnist"
    src.mkdir()
    for prefix, n, seed in (("train", 96, 0), ("t10k", 48, 1)):
        images, labels = make_digits(n, seed)
        write_idx(src / f"{prefix}-images-idx3-ubyte", images)
        write_idx(src / f"{prefix}-labels-idx1-ubyte", labels)
    return src


@pytest.fixture
def data_root(tmp_path):
    """An empty torchvision root, so that no test touches the repo's data/."""
    return tmp_path / "root"


@pytest.fixture(autouse=True)
def no_env_mnist_dir(monkeypatch):
    """Tests say where data is; the MNIST_DIR of the shell running them must not leak in."""
    monkeypatch.delenv("MNIST_DIR", raising=False)


@pytest.fixture
def offline(monkeypatch):
    """Make torchvision's download fail at once, as it does with no internet."""
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])


@pytest.fixture
def real_mnist_dir():
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the original MNIST files are not in {SHARED_MNIST}")
    return SHARED_MNIST


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
