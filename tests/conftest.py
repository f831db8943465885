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


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    """The runs that tests train are kept in a scratch folder, never in the repo's runs/."""
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


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
    os.environ["HEADLESS"] = "1"  # notebooks run by nbmake inherit it: plain-text progress, no widget state


# The device kinds: 'cpu' runs everywhere (so CI keeps these tests working), the others where they exist.
DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no Apple MPS here")),
]
ACCELERATORS = DEVICES[1:]


class OnDevice(torch.Tensor):
    """A CPU tensor that behaves like a CUDA or MPS one where it matters to the plots: `.numpy()`, and so
    numpy and matplotlib, fail unless `.cpu()` came first. Whatever is computed from it stays 'on the device'."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert a device tensor to numpy: use Tensor.cpu() first")
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and "cpu" in str((args[1:], kwargs))):
            with torch._C.DisableTorchFunctionSubclass():
                return args[0].to("cpu", copy=True)  # a plain CPU tensor again
        return super().__torch_function__(func, types, args, kwargs)


def on_device(*tensors):
    """The tensors as `OnDevice` tensors (one, or a tuple)."""
    moved = tuple(t.as_subclass(OnDevice) for t in tensors)
    return moved[0] if len(moved) == 1 else moved
