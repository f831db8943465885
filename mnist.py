"""MNIST: where it comes from and how much of it a run uses (`Data`), reading it (download or a local folder, with
errors that say what to do), its transforms, and the two pipelines' loaders: the classic one (PIL transforms in
DataLoader workers) and the fast one (tensors on the device, batched augmentation). Knows no model and no training.
"""

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
from torchvision.datasets.utils import check_integrity

from devices import generator_device

DATA_DIR = Path(__file__).resolve().parent / "data"  # where torchvision downloads MNIST (or we stage a local copy)
MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel mean and std
BLACK = -MEAN / STD  # a black pixel after normalisation


class MNISTDataError(RuntimeError):
    """MNIST could not be found or read; the message says what to do."""


MNIST_FILES = [name.removesuffix(".gz") for name, _ in datasets.MNIST.resources]
MISSING_DATA_HELP = (
    "MNIST is not here and could not be downloaded (no internet?). Put the four original files "
    f"({', '.join(f + '.gz' for f in MNIST_FILES)}; .gz or uncompressed) in a folder and set "
    "MNIST_DIR=/path/to/that/folder, or pass that folder as the data directory."
)


@dataclass(frozen=True)
class Data:
    """Where MNIST comes from, and how much of it a run uses."""

    mnist_dir: str | None = None  # folder with the four MNIST files (.gz or not); None: $MNIST_DIR, else download
    root: str = str(DATA_DIR)  # where torchvision downloads MNIST, or stages the files of mnist_dir
    train_size: int = 0  # use only the first N training images (0: all 60,000)
    test_size: int = 0  # use only the first N test images (0: all 10,000)
    test_batch_size: int = 1000  # images per evaluation batch (changes nothing but speed and memory)
    valid_size: int = 0  # hold out the last N training images and evaluate on them, not on the test set

    def __post_init__(self):
        for name in ("mnist_dir", "root"):  # plain strings, so that a checkpoint's copy loads with weights_only
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, str(getattr(self, name)))
        for name in ("train_size", "test_size", "valid_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.valid_size >= 60_000:
            raise ValueError(f"valid_size must leave training images (MNIST has 60,000), got {self.valid_size}")

    @property
    def evaluates_on(self):
        """What the 'test' figures of a run measure: the test set, or the held-out validation images."""
        return "validation" if self.valid_size else "test"


def image_range(train, n, data):
    """Which of the `n` images of a split a run uses: to train, the first n - valid_size (then the first
    train_size of those); to evaluate, the held-out last valid_size training images if any, else the test
    split (then the first test_size of those)."""
    if train:
        start, stop, size = 0, n - data.valid_size, data.train_size
    elif data.valid_size:
        start, stop, size = n - data.valid_size, n, data.test_size
    else:
        start, stop, size = 0, n, data.test_size
    return range(start, min(stop, start + size) if size else stop)


def mnist_dataset(train, data, transform=None):
    """The MNIST train or test split as a torchvision dataset.

    With `data.mnist_dir` (or the MNIST_DIR environment variable) the four original files are taken
    from that folder; otherwise torchvision downloads them into `data.root` (once).
    """
    raw = Path(data.root) / "MNIST" / "raw"
    mnist_dir = data.mnist_dir or os.environ.get("MNIST_DIR")
    if mnist_dir:
        stage_mnist_files(mnist_dir, raw)
    try:
        return datasets.MNIST(data.root, train=train, transform=transform, download=True)
    except RuntimeError as e:
        if "Error downloading" in str(e):
            raise MNISTDataError(MISSING_DATA_HELP) from None
        raise MNISTDataError(broken_file_message(raw) or f"could not read MNIST in {raw}: {e}") from None
    except (AssertionError, ValueError, TypeError, EOFError, OSError) as e:
        raise MNISTDataError(broken_file_message(raw) or f"could not read MNIST in {raw}: {e}") from None


def stage_mnist_files(mnist_dir, raw):
    """Copy the four MNIST files from `mnist_dir` into torchvision's `raw` folder (again if the folder changed).

    A `.gz` must be the original archive (md5 checked here, so that the error names the user's
    file; torchvision extracts it). An uncompressed file must parse as an idx file.
    """
    src = Path(mnist_dir).expanduser()
    if not src.is_dir():
        raise MNISTDataError(f"MNIST_DIR={str(mnist_dir)!r} is not a folder: point it at the MNIST files' folder.")
    if (src / "MNIST" / "raw").is_dir():  # a torchvision root was given
        src = src / "MNIST" / "raw"
    marker = raw / "SOURCE"  # the folder the staged files came from
    if src.resolve() == raw.resolve() or (marker.exists() and marker.read_text() == str(src.resolve())
                                          and all((raw / name).exists() for name in MNIST_FILES)):
        return
    copies = []  # check every file before replacing any
    for (gz_name, md5), name in zip(datasets.MNIST.resources, MNIST_FILES):
        if (src / name).exists():
            check_idx_file(src / name)
            copies.append(src / name)
        elif (src / gz_name).exists():
            if not check_integrity(str(src / gz_name), md5):
                raise MNISTDataError(f"{src / gz_name} is corrupt or truncated (its md5 is not the published one): "
                                     "download it again, or replace it with the uncompressed file.")
            copies.append(src / gz_name)
        else:
            raise MNISTDataError(f"{src} has neither {name} nor {gz_name}. {MISSING_DATA_HELP}")
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        (raw / name).unlink(missing_ok=True)
        (raw / f"{name}.gz").unlink(missing_ok=True)
    for path in copies:
        shutil.copyfile(path, raw / path.name)
    marker.write_text(str(src.resolve()))


def check_idx_file(path):
    """Raise MNISTDataError naming `path` unless it parses as a complete idx file."""
    try:
        read_sn3_pascalvincent_tensor(str(path), strict=True)
    except Exception as e:  # the parser asserts, or fails on a short buffer: any error means a bad file
        raise MNISTDataError(
            f"{path} is not a valid MNIST idx file (wrong magic number or truncated: {str(e) or type(e).__name__}): "
            "delete it and download it again."
        ) from None


def broken_file_message(raw):
    """The message for the first MNIST file in `raw` that does not parse, if any."""
    for name in MNIST_FILES:
        try:
            check_idx_file(Path(raw) / name)
        except MNISTDataError as e:
            return str(e)
    return None


def train_transforms(recipe):
    """The original S5 augmentation: a rare zoom (crop 22 -> 28), then a rotation of up to `recipe.degrees`."""
    return transforms.Compose([
        transforms.RandomApply([transforms.CenterCrop(22)], p=recipe.zoom_p),
        transforms.Resize((28, 28)),
        transforms.RandomRotation((-recipe.degrees, recipe.degrees), fill=0),
        transforms.ToTensor(),
        transforms.Normalize((MEAN,), (STD,)),
    ])


def test_transforms():
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])


def classic_loaders(recipe, data, seed, device):
    """The original S5 pipeline: PIL transforms per image in `DataLoader` workers; (train_loader, test_loader).

    The training set is shuffled by a generator seeded with `seed`.
    """
    train_set = mnist_dataset(True, data, train_transforms(recipe))
    train_set = Subset(train_set, image_range(True, len(train_set), data))
    test_set = mnist_dataset(data.evaluates_on == "validation", data, test_transforms())  # held out: no augmentation
    test_set = Subset(test_set, image_range(False, len(test_set), data))
    # Workers start afresh each epoch, seeded from `generator`: so a resumed run draws the same augmentations.
    kwargs = dict(num_workers=min(2, os.cpu_count() or 1), pin_memory=device.type == "cuda")  # pinning: CUDA only
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, recipe.batch_size, shuffle=True, generator=generator, **kwargs)
    return train_loader, DataLoader(test_set, data.test_batch_size, shuffle=False, **kwargs)


def mnist_tensors(train, device, data):
    """The images a run trains on (`train`) or evaluates on, as two tensors on `device`: images (N, 1, 28, 28),
    normalised once, and labels (N,)."""
    dataset = mnist_dataset(train or data.evaluates_on == "validation", data)
    used = image_range(train, len(dataset), data)
    images = dataset.data[used.start : used.stop].to(device)  # (N, 28, 28) uint8: moved while still small
    images = (images.unsqueeze(1).float() / 255 - MEAN) / STD  # (N, 1, 28, 28) float32
    return images, dataset.targets[used.start : used.stop].to(device)


def augment(images, generator, degrees=15.0, zoom_p=0.1):
    """The original S5 augmentation for a whole batch at once, drawn per image, on the batch's device.

    Each image is rotated by an angle uniform in +-`degrees` and, with probability `zoom_p`, zoomed
    like CenterCrop(22) + Resize(28). One affine_grid + grid_sample does both, nearest-neighbour as the
    original RandomRotation; outside the image is black, as with its fill=0.
    """
    n = images.shape[0]
    u = torch.rand(2, n, device=generator.device, generator=generator).to(images.device)
    angle = (2 * u[0] - 1) * math.radians(degrees)
    scale = torch.where(u[1] < zoom_p, 22 / 28, 1.0)  # sample the central 22/28 of the image: zoom in
    cos, sin, zero = scale * angle.cos(), scale * angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, 28, 28, 2)
    # grid_sample fills with 0; shifting by BLACK makes that fill a black pixel
    return F.grid_sample(images - BLACK, grid, mode="nearest", padding_mode="zeros", align_corners=False) + BLACK


class TensorLoader:
    """Batches from tensors already on the device, without per-image Python work.

    Iterates like a DataLoader: shuffled by a seeded `randperm` when `shuffle`, augmented per image
    (rotation up to `degrees`, zoom with probability `zoom_p`) a whole batch at a time.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, seed=0, degrees=0.0, zoom_p=0.0):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.degrees, self.zoom_p = batch_size, shuffle, degrees, zoom_p
        self.generator = torch.Generator(generator_device(images.device)).manual_seed(seed)
        self.dataset = TensorDataset(images, labels)  # len(loader.dataset), as for a DataLoader

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = None
        if self.shuffle:
            order = torch.randperm(n, device=self.generator.device, generator=self.generator).to(self.images.device)
        for start in range(0, n, self.batch_size):
            idx = slice(start, start + self.batch_size) if order is None else order[start : start + self.batch_size]
            images, labels = self.images[idx], self.labels[idx]
            if self.degrees or self.zoom_p:
                images = augment(images, self.generator, self.degrees, self.zoom_p)
            yield images, labels


def fast_loaders(recipe, data, seed, device):
    """The fast pipeline: MNIST as tensors on `device`, batched by `TensorLoader`s; (train_loader, test_loader).

    The training batches are shuffled and augmented with the generator seeded with `seed`.
    """
    train_loader = TensorLoader(*mnist_tensors(True, device, data), recipe.batch_size, shuffle=True, seed=seed,
                                degrees=recipe.degrees, zoom_p=recipe.zoom_p)
    return train_loader, TensorLoader(*mnist_tensors(False, device, data), data.test_batch_size)


PIPELINES = {"fast": fast_loaders, "classic": classic_loaders}


def make_loaders(recipe, data, seed, device):
    """(train_loader, test_loader) of the recipe's pipeline."""
    return PIPELINES[recipe.pipeline](recipe, data, seed, device)
