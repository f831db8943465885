"""Everything around the model: parameters, device, data, training, checkpoints, results, plots.

The notebooks, `main.py`, `bench/` and the tests all call these functions; none of them
re-implements a step. A run is described by a `Recipe` (hyperparameters) and a `Data` (where
MNIST comes from, how much of it); `prepare` turns them into a `Trainer` and `fit` trains it.
"""

import inspect
import math
import os
import platform
import random
import re
import shutil
import sys
import time
import warnings
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
from torchvision.datasets.utils import check_integrity
from tqdm.auto import tqdm

import runs
from lr_finder import lr_find, plot_lr_find  # noqa: F401  (re-exported, as below)
from model import get_model
from plots import (  # noqa: F401  (re-exported: the notebooks import everything from utils)
    confusion_matrix,
    plot_confusion,
    plot_correct,
    plot_digits,
    plot_missed,
    plot_samples,
    plot_stats,
)
from runs import list_runs, plot_runs  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"  # where torchvision downloads MNIST (or we stage a local copy)
IMAGES_DIR = ROOT / "images"
MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel mean and std
BLACK = -MEAN / STD  # a black pixel after normalisation


# ----------------------------------------------------------------------------- parameters


def env(name, default):
    """`default`, unless the environment variable `name` is set: then its value, cast to
    the type of `default` (so `EPOCHS=1 make train` works for any notebook parameter)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={value!r}: expected true/false")
    if default is None:
        return value
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a {type(default).__name__}") from None


def headless():
    """True when a notebook runs without a person watching (`make train`, nbmake: HEADLESS=1): plain-text
    progress instead of widgets, so that no widget state lands in the committed notebook."""
    return env("HEADLESS", False)


# ----------------------------------------------------------------------------- device


def get_device(name=None):
    """The device to train on: `name` ('cuda', 'mps', 'cpu') if given, else the best there is."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = str(name).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here (no NVIDIA GPU, or a CPU-only torch): "
                         "use 'cpu' or 'auto'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is only on Apple-silicon Macs (macOS 12.3+): use 'cpu' or 'auto'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}: use 'cuda', 'mps', 'cpu' or 'auto'")
    return torch.device(name)


def seed_everything(seed):
    """Seed Python's and torch's generators (all devices): same seed, same run on CPU."""
    random.seed(seed)
    torch.manual_seed(seed)


# oneDNN's instruction-set levels as its dnnl_cpu_isa_t bit masks: a level includes each level whose bits it has
ONEDNN_ISAS = {"SSE41": 0x1, "AVX": 0x3, "AVX2": 0x7, "AVX2_VNNI": 0xF, "AVX2_VNNI_2": 0x1F, "AVX512_CORE": 0x27,
               "AVX512_CORE_VNNI": 0x67, "AVX512_CORE_BF16": 0xE7, "AVX10_1_512": 0x1EF, "AVX512_CORE_FP16": 0x1EF,
               "AVX10_1_512_AMX": 0xFEF, "AVX512_CORE_AMX": 0xFEF, "AVX10_1_512_AMX_FP16": 0x1FEF,
               "AVX512_CORE_AMX_FP16": 0x1FEF}
# (Linux's flag, the name people know, the oneDNN level that uses it), widest first
CPU_ISAS = [("amx_bf16", "AMX", "AVX512_CORE_AMX"), ("avx512_bf16", "AVX512-BF16", "AVX512_CORE_BF16"),
            ("avx512f", "AVX-512", "AVX512_CORE"), ("avx2", "AVX2", "AVX2"), ("avx", "AVX", "AVX"),
            ("sse4_1", "SSE4.1", "SSE41")]


def isa_cap():
    """The cap set on oneDNN's instruction set (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA), which
    no torch API reports; None if there is none, or one oneDNN ignores (ALL, DEFAULT, a typo)."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").upper()
        if value:
            return value if value in ONEDNN_ISAS else None
    return None


def cpu_isa(cpuinfo="/proc/cpuinfo", capped=True):
    """The widest instructions training here can use, by the name people know ('AVX512-BF16', 'AVX2', ...): the
    CPU's widest, within oneDNN's cap if one is set (and `capped`); the machine's kind ('arm64', ...) where Linux
    lists no flags."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:  # not Linux
        flags = set()
    cap = ONEDNN_ISAS.get(isa_cap(), -1) if capped else -1  # -1: every bit allowed
    for flag, name, level in CPU_ISAS:
        if flag in flags and ONEDNN_ISAS[level] & ~cap == 0:
            return name
    return platform.machine()


def cpu_has_fast_bf16(cpuinfo="/proc/cpuinfo"):
    """True on CPUs with native bf16 dot products (AVX512-BF16 or AMX) that oneDNN may use; elsewhere, and under a
    cap below them (an AVX2 laptop's, say), bf16 is emulated, and slow."""
    return cpu_isa(cpuinfo) in ("AMX", "AVX512-BF16")


def native_bf16(device):
    """Whether `device` computes in bf16 natively. On CUDA, not through emulation: a T4 (Colab's free GPU)
    reports bf16 support by default only because torch can emulate it, slowly."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast to `dtype` (None: plain fp32), and why that was chosen."""

    dtype: torch.dtype | None
    why: str

    @property
    def scaled(self):
        """fp16's narrow range needs loss scaling (a GradScaler); bf16 keeps fp32's range."""
        return self.dtype == torch.float16

    def autocast(self, device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def __str__(self):
        name = "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        return f"{name}{' + GradScaler' if self.scaled else ''} ({self.why})"


FP32 = Precision(None, "full precision")


def choose_precision(device, requested="auto", native=None):
    """The `Precision` for `device`: the `requested` one, or with 'auto' bf16 where it is native (recent GPUs,
    CPUs with AVX512-BF16/AMX), fp16 + GradScaler on GPUs without it, fp32 elsewhere (MPS, older CPUs).
    `native` (whether the device has native bf16) is asked of the hardware unless given."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return Precision(None if requested == "float32" else getattr(torch, requested), "as the recipe asks")
    native = native_bf16(device) if native is None else native
    if device.type == "cuda":
        return (Precision(torch.bfloat16, "native bf16 on this GPU") if native
                else Precision(torch.float16, "no native bf16 on this GPU"))
    if device.type == "cpu":
        return (Precision(torch.bfloat16, "native bf16 on this CPU") if native
                else Precision(None, "no native bf16 on this CPU: it would be emulated, and slow"))
    return Precision(None, f"mixed precision gains little on {device.type}")


def generator_device(device):
    """Where a loader's random generator lives: on the device itself, except on MPS, whose generators
    randperm and rand do not accept (pytorch#110820); there the numbers are drawn on the CPU and moved."""
    return torch.device("cpu") if device.type == "mps" else device


def memory_format(device):
    """channels_last makes convolutions faster on CPUs and CUDA; on MPS its conv backward was ~30x slower
    until mid-2026 (pytorch#193349), so there the usual layout."""
    return torch.contiguous_format if device.type == "mps" else torch.channels_last


def device_name(device):
    """The device as a person knows it: 'cuda (NVIDIA H200)', 'cpu (2 threads)', 'mps'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


# ----------------------------------------------------------------------------- data


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


# ----------------------------------------------------------------------------- your own digits


class ImageError(ValueError):
    """A file that cannot be turned into a digit: missing, empty, not an image, or blank."""


def edges(x):
    """The pixels on the four edges of a 2-D image: mostly paper, in a picture of one digit."""
    return torch.cat([x[0], x[-1], x[:, 0], x[:, -1]])


def grey_of(image):
    """A PIL image, any mode, as a grey (H, W) tensor in [0, 1]; transparent parts are paper (white)."""
    rgba = image.convert("RGBA")
    grey = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")
    return transforms.functional.pil_to_tensor(grey)[0].float() / 255


def load_digit(path):
    """A photo or drawing of one digit as MNIST-like input: a (1, 1, 28, 28) normalised tensor.

    Any size, colour or grey, with or without transparency; `to_mnist` does the rest.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty")
    try:
        with warnings.catch_warnings():  # past MAX_IMAGE_PIXELS PIL only warns; no picture of a digit is that big
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                grey = grey_of(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path} is too large to be one digit (over {Image.MAX_IMAGE_PIXELS:,} pixels): "
                         "scale it down, to 1000 x 1000 pixels say") from None
    except Exception as e:  # PIL fails in many ways on a damaged or unusual file; all mean the same here
        raise ImageError(f"{path} is not an image that can be read (PNG, JPG, ...): {e}") from None
    try:
        return to_mnist(grey)
    except ImageError:  # the one thing to_mnist refuses: name the file
        raise ImageError(f"{path} has no digit in it: the image is blank") from None


def to_mnist(grey):
    """A grey (H, W) image of one digit, values in [0, 1], as MNIST-like input: a (1, 1, 28, 28) normalised tensor.

    Done as MNIST was made: ink bright on black (dark-on-light images are inverted), cropped to the
    ink's bounding box, scaled so that its longer side is 20 px, and centred by centre of mass in 28x28.
    Any size, either polarity; the one preprocessing for image files (`load_digit`) and drawings (draw.py).
    """
    x = grey.detach().float().cpu()
    if edges(x).mean() > 0.5:  # light paper: make the ink the bright part, as in MNIST
        x = 1 - x
    x = (x - edges(x).median()).clamp(min=0)  # paper -> black
    ink = x > 0.2 * x.max() if x.max() > 0.1 else None
    if ink is None or not ink.any():
        raise ImageError("no digit in it: the image is blank")
    rows, cols = ink.any(dim=1).nonzero(), ink.any(dim=0).nonzero()
    x = x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # bounding box of the ink
    h, w = x.shape
    size = (max(1, round(20 * h / max(h, w))), max(1, round(20 * w / max(h, w))))
    x = transforms.functional.resize(x[None], list(size), antialias=True)[0].clamp(0, 1)  # longer side 20 px
    x = x / x.max()
    ys, xs = torch.arange(size[0], dtype=torch.float32), torch.arange(size[1], dtype=torch.float32)
    cy, cx = (x.sum(1) * ys).sum() / x.sum(), (x.sum(0) * xs).sum() / x.sum()  # centre of mass
    top = min(max(round(14 - cy.item() - 0.5), 0), 28 - size[0])
    left = min(max(round(14 - cx.item() - 0.5), 0), 28 - size[1])
    digit = torch.zeros(28, 28)
    digit[top : top + size[0], left : left + size[1]] = x
    return ((digit - MEAN) / STD)[None, None]


# ----------------------------------------------------------------------------- recipes


SCHEDULES = ("step", "onecycle", "plateau", "none")
RECIPE_CHOICES = {"pipeline": tuple(PIPELINES), "precision": PRECISIONS, "schedule": SCHEDULES}  # fixed values


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run but the model, the data and the seed.

    Each field's comment is its help text on the command line (`python main.py train --help`).
    """

    pipeline: str = "fast"  # 'fast': tensors on the device, batched augmentation; 'classic': DataLoader + PIL
    precision: str = "auto"  # 'auto': bf16 where native, fp16 on older GPUs, else fp32; or float32/bfloat16/float16
    epochs: int = 20  # passes over the training set
    batch_size: int = 512  # images per step
    lr: float = 0.01  # SGD learning rate (the peak one for 'onecycle')
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 0.0  # L2 penalty
    schedule: str = "step"  # learning-rate schedule: step, onecycle, plateau or none
    step_size: int = 15  # 'step': epochs between drops; 'plateau': epochs without progress before one
    gamma: float = 0.1  # 'step'/'plateau': factor applied to the learning rate at each drop
    label_smoothing: float = 0.0  # share of the target spread over the other classes
    degrees: float = 15.0  # augmentation: rotation uniform in +-degrees
    zoom_p: float = 0.1  # augmentation: probability of the original S5 zoom (crop 22 -> 28)
    ema: float = 0.0  # decay of a moving average of the weights, evaluated and saved in their place (0: none)

    def __post_init__(self):
        for name, allowed in RECIPE_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        rules = {"> 0": ("epochs", "batch_size", "step_size", "lr", "gamma"),
                 ">= 0": ("momentum", "weight_decay", "degrees"), "in [0, 1]": ("zoom_p", "label_smoothing"),
                 "in [0, 1)": ("ema",)}
        holds = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "in [0, 1]": lambda v: 0 <= v <= 1,
                 "in [0, 1)": lambda v: 0 <= v < 1}
        for rule, names in rules.items():
            for name in names:
                if not holds[rule](getattr(self, name)):  # also false for nan
                    raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")


RECIPES = {
    "classic": Recipe(pipeline="classic", precision="float32"),  # the original S5 pipeline and recipe, exactly
    # >= 99.4% in 2 epochs on a CPU: one-cycle to a high peak rate, mild augmentation, label smoothing; the budget
    # and the peak rate chosen on a validation split (docs/experiments.md)
    "fast": Recipe(pipeline="fast", epochs=2, batch_size=128, lr=0.2, nesterov=True, schedule="onecycle",
                   label_smoothing=0.1, degrees=5.0, zoom_p=0.1),
    # S7Final, under 8,000 parameters: BatchNorm allows the high peak rate; mild rotations only; the weight
    # average steadies the last epochs. Peak rate, average and weight decay chosen on a validation split
    # (docs/experiments.md)
    "s7": Recipe(pipeline="fast", epochs=15, batch_size=128, lr=0.2, nesterov=True, weight_decay=1e-4,
                 schedule="onecycle", degrees=7.0, zoom_p=0.0, ema=0.999),
}


def recipe_help():
    """{field name: its comment in `Recipe`}: the one place each hyperparameter is explained."""
    found = re.findall(r"^\s+(\w+): [\w| ]+ = [^#\n]+#\s*(.+)$", inspect.getsource(Recipe), re.MULTILINE)
    return dict(found)


def make_recipe(name="fast", **changes):
    """RECIPES[name] with `changes`; then any field set in the environment under its upper-case name wins
    (`EPOCHS=1 make train`). Bad values raise ValueError saying which."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    base = RECIPES[name]
    unknown = set(changes) - {f.name for f in fields(Recipe)}
    if unknown:
        raise ValueError(f"unknown recipe field(s) {', '.join(sorted(unknown))}: use {', '.join(recipe_help())}")
    from_env = {f.name: env(f.name.upper(), getattr(base, f.name)) for f in fields(Recipe)
                if os.environ.get(f.name.upper())}
    return replace(base, **{**changes, **from_env})


def describe_recipe(recipe, base=None):
    """The recipe as lines of `name = value`, marking the values that differ from `base` (a Recipe)."""
    lines = []
    for f in fields(Recipe):
        value = getattr(recipe, f.name)
        was = getattr(base, f.name) if base is not None else value
        lines.append(f"  {f.name:<16}= {value!r}" + (f"   (recipe: {was!r})" if was != value else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- output paths


def why_unwritable(path, folder=False):
    """Why `path` cannot be written as a folder (`folder`) or as a file, or None if it can. Nothing is created:
    a path not there yet needs a writable folder as its nearest existing parent. (As root, os.access says that
    all can be written; a file in the way stops root too.)"""
    path = Path(path)
    if path.exists():
        if path.is_dir() != folder:
            return "is a folder, not a file" if path.is_dir() else "is a file, not a folder"
        return None if os.access(path, os.W_OK) else "is not writable"
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir():
        return f"cannot be created ({parent} is a file)"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot be created ({parent} is not writable)"


def one_line(error):
    """What went wrong, in a few words: an OSError's reason ('No space left on device'), else the first line of the
    message (torch.save's RuntimeError for a failed write has several)."""
    return (getattr(error, "strerror", None) or str(error) or type(error).__name__).splitlines()[0]


# ----------------------------------------------------------------------------- training


def get_optimizer(model, recipe):
    return optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                     weight_decay=recipe.weight_decay)


def get_scheduler(optimizer, recipe, steps_per_epoch=1):
    """The learning-rate schedule: 'step' (StepLR, the original S5 one), 'onecycle' (OneCycleLR to the recipe's lr
    and down, stepped per batch), 'plateau' (ReduceLROnPlateau on the test loss) or 'none'."""
    if recipe.schedule == "step":
        return optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.schedule == "onecycle":
        return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, epochs=recipe.epochs,
                                             steps_per_epoch=steps_per_epoch, pct_start=0.3,
                                             anneal_strategy="linear")
    if recipe.schedule == "plateau":
        return optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=recipe.gamma, patience=recipe.step_size)
    return None


def get_loss(label_smoothing=0.0):
    """NLL on the models' log-probabilities; with label smoothing, cross-entropy (log_softmax of
    log-probabilities changes nothing, so it applies to them as they are)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing) if label_smoothing else nn.NLLLoss()


def new_history():
    """Per-epoch record of a run: what `fit` returns and `plot_stats` draws."""
    return {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": [], "lr": [], "seconds": []}


@dataclass
class Trainer:
    """One training run, ready to go: what `prepare` builds, `fit` trains and a checkpoint saves."""

    model_name: str  # a name in model.MODELS
    recipe: Recipe
    data: Data
    seed: int
    device: torch.device
    precision: Precision
    model: nn.Module
    train_loader: object
    test_loader: object
    optimizer: optim.Optimizer
    scheduler: object  # an lr scheduler, or None
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None = None  # the moving average of the model's weights, if the recipe keeps one
    history: dict = field(default_factory=new_history)
    run_file: Path | None = None  # this run's record in runs/ (see runs.py), made by `fit`

    @property
    def evaluated_model(self):
        """The model that is tested, saved for predictions and shown: the weight average if kept, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def config(self):
        """What a checkpoint needs to rebuild this trainer: model, seed, recipe and data, as plain values."""
        return {"model": self.model_name, "seed": self.seed, "recipe": asdict(self.recipe), "data": asdict(self.data),
                "run_file": str(self.run_file) if self.run_file else None}


def prepare(model_name, recipe, data=Data(), device=torch.device("cpu"), seed=1):
    """A `Trainer` for a fresh model `model_name`, seeded with `seed`: same seed, same run (on CPU)."""
    seed_everything(seed)
    model = get_model(model_name).to(device, memory_format=memory_format(device))
    train_loader, test_loader = make_loaders(recipe, data, seed, device)
    optimizer = get_optimizer(model, recipe)
    precision = choose_precision(device, recipe.precision)
    return Trainer(model_name, recipe, data, seed, device, precision, model, train_loader, test_loader, optimizer,
                   get_scheduler(optimizer, recipe, len(train_loader)), get_loss(recipe.label_smoothing),
                   torch.amp.GradScaler(device.type, enabled=precision.scaled), get_ema(model, recipe.ema))


def get_ema(model, decay):
    """An exponential moving average of `model`'s weights and BatchNorm statistics, updated after every step
    (`update_parameters`); None for decay 0. It smooths the step-to-step noise out of the evaluated weights."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)


def ema_with_warmup(decay):
    """torch's EMA update with the decay held to at most (1 + n) / (10 + n) after n updates (as TensorFlow's
    ExponentialMovingAverage with num_updates): the early averages forget the random start within a few hundred
    steps instead of thousands, so the first epochs' accuracy is that of the model learning, not of its start."""
    def update(averaged, current, n_averaged):
        n = n_averaged.item()
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, n_averaged)

    return update


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are lost, the last checkpoint and the history are not."""


PER_BATCH_SCHEDULERS = (optim.lr_scheduler.OneCycleLR, optim.lr_scheduler.CyclicLR)


def train(t, desc="train", log_interval=None):
    """One epoch of training of the trainer `t`; returns (mean loss, accuracy %) over the epoch.

    A per-batch scheduler (OneCycleLR) is stepped after every batch. With `log_interval`, a plain line
    every that many batches replaces the progress bar; headless, one line for the epoch does.
    """
    t.model.train()
    per_batch = isinstance(t.scheduler, PER_BATCH_SCHEDULERS)
    total_loss, correct, seen = 0.0, 0, 0
    pbar = tqdm(t.train_loader, desc=desc, disable=log_interval is not None or headless())
    for batch, (x, y) in enumerate(pbar, start=1):
        x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
        t.optimizer.zero_grad(set_to_none=True)
        with t.precision.autocast(t.device):
            output = t.model(x)
            loss = t.criterion(output, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss.item()} (batch {batch})")
        t.scaler.scale(loss).backward()  # with fp16, scaled so that small gradients survive; else as it is
        t.scaler.step(t.optimizer)
        t.scaler.update()
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        if per_batch:
            t.scheduler.step()
        total_loss += loss.item() * len(y)
        correct += (output.argmax(dim=1) == y).sum().item()
        seen += len(y)
        pbar.set_postfix_str(f"loss={loss.item():.4f} acc={100 * correct / seen:.2f}%")
        if log_interval and batch % log_interval == 0:  # not pbar.n: a disabled bar does not count
            print(f"{desc} [{seen}/{len(t.train_loader.dataset)}] loss {loss.item():.4f} "
                  f"acc {100 * correct / seen:.2f}%")
    if pbar.disable:
        print(f"{desc}: training loss {total_loss / seen:.4f}, accuracy {100 * correct / seen:.2f}%")
    return total_loss / seen, 100 * correct / seen


@torch.no_grad()
def test(t, loader=None):
    """Evaluate the trainer's model (its weight average if it keeps one) on `loader` (default: its test set);
    prints and returns (mean loss, accuracy %)."""
    model = t.evaluated_model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in t.test_loader if loader is None else loader:
        x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
        with t.precision.autocast(t.device):
            output = model(x)
        total_loss += t.criterion(output.float(), y).item() * len(y)
        correct += (output.argmax(dim=1) == y).sum().item()
        seen += len(y)
    print(f"{t.data.evaluates_on.capitalize()} set: average loss {total_loss / seen:.4f}, "
          f"accuracy {correct}/{seen} ({100 * correct / seen:.2f}%)")
    return total_loss / seen, 100 * correct / seen


def end_epoch(t, train_result, test_result, lr, seconds, checkpoint=None):
    """What follows each epoch: the per-epoch scheduler step, the history, the checkpoint, the run's record."""
    if isinstance(t.scheduler, optim.lr_scheduler.ReduceLROnPlateau):
        t.scheduler.step(test_result[0])  # on the evaluation loss: the validation one when images are held out
    elif t.scheduler is not None and not isinstance(t.scheduler, PER_BATCH_SCHEDULERS):
        t.scheduler.step()
    (train_loss, train_acc), (test_loss, test_acc) = train_result, test_result
    row = dict(train_loss=train_loss, train_acc=train_acc, test_loss=test_loss, test_acc=test_acc, lr=lr,
               seconds=seconds)
    for key, value in row.items():
        t.history[key].append(value)
    keep_run(t)  # first: the record has the epoch even if the checkpoint cannot be written
    if checkpoint:
        save_checkpoint(checkpoint, t)


def fit(t, checkpoint=None, log_interval=None):
    """Train the trainer `t` to the end of its recipe's epochs, testing after each; returns the history.

    Goes on from where `t.history` stops (a resumed checkpoint). The run is kept in runs/ (`runs.py`), its
    record rewritten after every epoch; with `checkpoint` (a path), everything needed to resume is saved there
    too. Ctrl-C stops training and returns the history
    so far; a diverging loss raises TrainingDiverged, a checkpoint that cannot be written (a full disk, say)
    CheckpointError; both carry the history.
    """
    t.run_file = t.run_file or start_run(t)
    with stopping_cleanly(t, checkpoint):
        for epoch in range(len(t.history["test_acc"]) + 1, t.recipe.epochs + 1):
            lr, start = t.optimizer.param_groups[0]["lr"], time.perf_counter()
            train_result = train(t, f"Epoch {epoch}/{t.recipe.epochs} lr={lr:.3g}", log_interval)
            end_epoch(t, train_result, test(t), lr, time.perf_counter() - start, checkpoint)
    return t.history


def start_run(t):
    """Open the record of the trainer's run in runs/, named after what differs from the closest named recipe;
    returns its path, or None (with a warning) where the runs folder cannot be written."""
    name, base = min(RECIPES.items(), key=lambda item: sum(a != b for a, b in zip(asdict(item[1]).values(),
                                                                                  asdict(t.recipe).values())))
    meta = {"recipe": asdict(t.recipe), "recipe_name": name, "model": t.model_name, "seed": t.seed,
            "params": sum(p.numel() for p in t.model.parameters()), "device": device_name(t.device),
            "precision": str(t.precision), "data": asdict(t.data)}
    try:
        return runs.start_run(meta, asdict(base))
    except OSError as e:  # a record costs a warning, never the run
        folder = runs.get_runs_dir()
        problem = why_unwritable(folder, folder=True) or f"cannot be written ({e.strerror or e})"
        print(f"warning: this run is not kept: the runs folder {folder} {problem}; "
              "set RUNS_DIR to a folder that can be written to keep the next ones", file=sys.stderr)
        return None


def keep_run(t):
    """Rewrite the run's record with the history so far; a record that cannot be written costs a warning, not
    the run."""
    if t.run_file is None:  # the runs folder could not be written: start_run said so
        return
    try:
        runs.write_run(t.run_file, t.history, finished=len(t.history["test_acc"]) >= t.recipe.epochs)
    except (OSError, runs.RunFileError) as e:
        print(f"warning: the run's record was not updated ({e})", file=sys.stderr)


@contextmanager
def stopping_cleanly(t, checkpoint):
    """Ctrl-C ends training quietly, keeping the history and the checkpoint; a diverging loss, or a checkpoint
    that cannot be written, is re-raised with the history, saying what to do or what the checkpoint holds."""
    before = len(t.history["test_acc"])  # epochs done when this run started (or resumed)
    try:
        yield
    except KeyboardInterrupt:
        done = len(t.history["test_acc"])
        saved = f"; the checkpoint of epoch {done} is {checkpoint}" if checkpoint and done else ""
        print(f"Interrupted: kept the history of {done} finished epoch(s){saved}.")
    except TrainingDiverged as e:
        saved = f" The checkpoint of epoch {len(t.history['test_acc'])} is {checkpoint}." if checkpoint else ""
        error = TrainingDiverged(f"{e} in epoch {len(t.history['test_acc']) + 1}: lower the learning rate "
                                 f"(it was {t.optimizer.param_groups[0]['lr']:.3g}).{saved}")
        error.history = t.history
        raise error from None
    except CheckpointError as e:  # written atomically: a failed write leaves the last checkpoint as it was
        done = len(t.history["test_acc"])
        kept = (f"no checkpoint is left at {checkpoint}" if not Path(checkpoint).is_file()
                else f"{checkpoint} still holds epoch {done - 1}" if done - 1 > before
                else f"{checkpoint} is as it was when the run started")
        error = CheckpointError(f"{e}; {kept}")
        error.history = t.history
        raise error from None


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (unreadable, or for another model) or written (a full disk)."""


def save_checkpoint(path, t):
    """Write all that the trainer `t` needs to go on exactly where it stopped (atomically: a crash, or a write
    that fails with CheckpointError, leaves the old file), and what it was: model, seed, recipe, data."""
    state = {
        "model_name": type(t.model).__name__,
        "model": t.model.state_dict(),
        "ema": t.ema.state_dict() if t.ema is not None else None,  # the weight average, evaluated in its place
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
        "scaler": t.scaler.state_dict(),
        "epoch": len(t.history["test_acc"]),
        "history": t.history,
        "rng": {"torch": torch.get_rng_state(), "loader": t.train_loader.generator.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "config": t.config,
    }
    path, tmp = Path(path), Path(path).with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (a full disk) as a RuntimeError
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = why_unwritable(path) or (one_line(e) if isinstance(e, OSError) else f"is the disk full? {one_line(e)}")
        raise CheckpointError(f"could not write the checkpoint of epoch {state['epoch']} to {path}: {reason}") from None


def read_checkpoint(path):
    """The checkpoint dict at `path` (tensors on the CPU), or CheckpointError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a damaged file; all mean the same here
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo (no model state in it)")
    return state


def load_weights(path, model, state=None):
    """Put the evaluated weights of the checkpoint at `path` (the weight average if the run kept one) into
    `model`, for predictions; returns the checkpoint dict."""
    state = state or read_checkpoint(path)
    averaged = {name.removeprefix("module."): value for name, value in (state.get("ema") or {}).items()
                if name.startswith("module.")}  # AveragedModel's state: the model's under module., and n_averaged
    put_weights(path, model, averaged or state["model"], state["model_name"])
    return state


def put_weights(path, model, weights, model_name):
    """model.load_state_dict(weights), with a CheckpointError saying which checkpoint does not fit."""
    if model_name != type(model).__name__:
        raise CheckpointError(f"{path} holds a {model_name} model, not a {type(model).__name__}: "
                              "choose the model it was trained with, or another checkpoint")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {str(e).splitlines()[0]}") from None


def load_checkpoint(path, t):
    """Restore a `save_checkpoint` file into the trainer `t` (built with the checkpoint's settings), so that
    `fit(t)` goes on where it stopped; returns the history. The RNG states come back too: on CPU a resumed
    run ends exactly as an uninterrupted one."""
    state = read_checkpoint(path)
    put_weights(path, t.model, state["model"], state["model_name"])
    if t.ema is not None:
        t.ema.load_state_dict(state["ema"])
    saved_steps = (state["scheduler"] or {}).get("total_steps")
    if saved_steps is not None and saved_steps != getattr(t.scheduler, "total_steps", saved_steps):
        planned = state["config"]["recipe"]["epochs"]
        raise CheckpointError(f"{path} was trained with a one-cycle schedule planned for {planned} epochs "
                              f"({saved_steps} batches), which cannot be stretched to {t.recipe.epochs} epochs "
                              f"({t.scheduler.total_steps} batches): resume it with its {planned} epochs, or start a "
                              "new run (a 'step', 'plateau' or 'none' schedule can be extended)")
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None and state["scheduler"] is not None:
        t.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        t.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    t.train_loader.generator.set_state(state["rng"]["loader"])
    t.history = state["history"]
    run_file = state["config"].get("run_file")
    t.run_file = Path(run_file) if run_file and Path(run_file).is_file() else None  # go on in the same record
    return t.history


def saved_settings(path):
    """(model name, seed, Recipe, Data) that the checkpoint at `path` was trained with."""
    config = read_checkpoint(path)["config"]
    if "recipe" not in config:
        raise CheckpointError(f"{path} was written before checkpoints kept their recipe: it can be used for "
                              "predictions, not resumed; start a new run")
    data = {k: v for k, v in config.get("data", {}).items() if k in {f.name for f in fields(Data)}}
    return config.get("model", "net"), config.get("seed", 1), Recipe(**config["recipe"]), Data(**data)


# ----------------------------------------------------------------------------- results


@torch.no_grad()
def predictions(model, device, loader):
    """All of `loader` through the model: (images, targets, predicted labels), on the CPU."""
    model.eval()
    images, targets, preds = [], [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(dim=1).cpu())
        images.append(x.cpu())
        targets.append(y.cpu())
    return torch.cat(images), torch.cat(targets), torch.cat(preds)


def results_row(name, model, history, target=99.4, last=3):
    """One row of a progression table: parameters, best/final accuracies, and whether the last `last` epochs
    all reach `target`% on the test set."""
    return {
        "model": name, "params": sum(p.numel() for p in model.parameters()), "epochs": len(history["test_acc"]),
        "best_train": max(history["train_acc"]), "final_train": history["train_acc"][-1],
        "best_test": max(history["test_acc"]), "final_test": history["test_acc"][-1],
        f"last_{last}_at_target": all(acc >= target for acc in history["test_acc"][-last:]),
        "minutes": sum(history["seconds"]) / 60,
    }
