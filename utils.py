"""Everything around the model: parameters, device, data, training, plots.

The notebooks, `main.py`, `bench/` and the tests all call these functions; none of them
re-implements a step.
"""

import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
from torchvision.datasets.utils import check_integrity
from tqdm.auto import tqdm

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


# ----------------------------------------------------------------------------- device


def get_device(name=None):
    """The device to train on: `name` ('cuda', 'mps', 'cpu') if given, else the best there is."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    kind = str(name).split(":")[0]
    if kind not in available:
        raise ValueError(f"unknown device {name!r}: use 'cuda', 'mps', 'cpu' or 'auto'")
    if not available[kind]:
        raise ValueError(f"device {name!r} is not available on this machine: use 'cpu' or 'auto'")
    return torch.device(name)


def seed_everything(seed):
    """Seed Python's and torch's generators (all devices): same seed, same run on CPU."""
    random.seed(seed)
    torch.manual_seed(seed)


def cpu_has_fast_bf16(cpuinfo="/proc/cpuinfo"):
    """True on CPUs with native bf16 dot products (AVX512-BF16 or AMX); elsewhere bf16 is emulated, and slow."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:  # not Linux: no way to ask, so stay in fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device):
    """The dtype to autocast to on `device`, or None for plain fp32.

    bf16 on CUDA GPUs that have it and on CPUs with native bf16; fp32 elsewhere (MPS, older CPUs/GPUs).
    bf16 keeps fp32's range, so no loss scaling is needed.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


# ----------------------------------------------------------------------------- data


class MNISTDataError(RuntimeError):
    """MNIST could not be found or read; the message says what to do."""


MNIST_FILES = [name.removesuffix(".gz") for name, _ in datasets.MNIST.resources]
MISSING_DATA_HELP = (
    "MNIST is not here and could not be downloaded (no internet?). Put the four original files "
    f"({', '.join(f + '.gz' for f in MNIST_FILES)}; .gz or uncompressed) in a folder and set "
    "MNIST_DIR=/path/to/that/folder, or pass that folder as the data directory."
)


def train_transforms(degrees=15.0, zoom_p=0.1):
    """The seeds' augmentation: a rare zoom (crop 22 -> 28), then a rotation of up to 15 degrees."""
    return transforms.Compose([
        transforms.RandomApply([transforms.CenterCrop(22)], p=zoom_p),
        transforms.Resize((28, 28)),
        transforms.RandomRotation((-degrees, degrees), fill=0),
        transforms.ToTensor(),
        transforms.Normalize((MEAN,), (STD,)),
    ])


def test_transforms():
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])


def mnist_dataset(train=True, transform=None, root=DATA_DIR, mnist_dir=None):
    """The MNIST train or test split as a torchvision dataset.

    With `mnist_dir` (or the MNIST_DIR environment variable) the four original files are taken
    from that folder; otherwise torchvision downloads them into `root` (once).
    """
    raw = Path(root) / "MNIST" / "raw"
    mnist_dir = mnist_dir or os.environ.get("MNIST_DIR")
    if mnist_dir:
        stage_mnist_files(mnist_dir, raw)
    try:
        return datasets.MNIST(root, train=train, transform=transform, download=True)
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


def classic_loaders(batch_size=512, seed=1, train_size=None, test_size=None, root=DATA_DIR, mnist_dir=None,
                    device=torch.device("cpu"), degrees=15.0, zoom_p=0.1, test_batch_size=None, num_workers=None):
    """The seeds' pipeline: PIL transforms per image in `DataLoader` workers.

    Returns (train_loader, test_loader); the training set is shuffled by a generator seeded with
    `seed`. `train_size`/`test_size` keep only the first N images (for quick trials).
    """
    train_set = mnist_dataset(True, train_transforms(degrees, zoom_p), root, mnist_dir)
    test_set = mnist_dataset(False, test_transforms(), root, mnist_dir)
    if train_size:
        train_set = Subset(train_set, range(min(train_size, len(train_set))))
    if test_size:
        test_set = Subset(test_set, range(min(test_size, len(test_set))))
    workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
    # Workers start afresh each epoch, seeded from `generator`: so a resumed run draws the same augmentations.
    kwargs = dict(num_workers=workers, pin_memory=device.type == "cuda")
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size, shuffle=True, generator=generator, **kwargs)
    test_loader = DataLoader(test_set, test_batch_size or batch_size, shuffle=False, **kwargs)
    return train_loader, test_loader


def mnist_tensors(train, device, size=None, root=DATA_DIR, mnist_dir=None):
    """A whole split as two tensors on `device`: images (N, 1, 28, 28), normalised once, and labels (N,)."""
    dataset = mnist_dataset(train, None, root, mnist_dir)
    images = dataset.data[: size or None].to(device)  # (N, 28, 28) uint8: moved while still small
    images = (images.unsqueeze(1).float() / 255 - MEAN) / STD  # (N, 1, 28, 28) float32
    return images, dataset.targets[: size or None].to(device)


def augment(images, generator, degrees=15.0, zoom_p=0.1):
    """The seeds' augmentation for a whole batch at once, drawn per image, on the batch's device.

    Each image is rotated by an angle uniform in +-`degrees` and, with probability `zoom_p`, zoomed
    like CenterCrop(22) + Resize(28). One affine_grid + grid_sample does both, nearest-neighbour as the
    seeds' RandomRotation; outside the image is black, as with the seeds' fill=0.
    """
    n = images.shape[0]
    u = torch.rand(2, n, device=images.device, generator=generator)
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
        self.generator = torch.Generator(images.device).manual_seed(seed)
        self.dataset = TensorDataset(images, labels)  # len(loader.dataset), as for a DataLoader

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, device=self.images.device, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = slice(start, start + self.batch_size) if order is None else order[start : start + self.batch_size]
            images, labels = self.images[idx], self.labels[idx]
            if self.degrees or self.zoom_p:
                images = augment(images, self.generator, self.degrees, self.zoom_p)
            yield images, labels


def fast_loaders(batch_size=512, seed=1, train_size=None, test_size=None, root=DATA_DIR, mnist_dir=None,
                 device=torch.device("cpu"), degrees=15.0, zoom_p=0.1, test_batch_size=None):
    """The fast pipeline: MNIST as tensors on `device`, batched by `TensorLoader`s.

    Returns (train_loader, test_loader), as `classic_loaders` does; the training batches are augmented.
    """
    train_images, train_labels = mnist_tensors(True, device, train_size, root, mnist_dir)
    test_images, test_labels = mnist_tensors(False, device, test_size, root, mnist_dir)
    train_loader = TensorLoader(train_images, train_labels, batch_size, shuffle=True, seed=seed,
                                degrees=degrees, zoom_p=zoom_p)
    return train_loader, TensorLoader(test_images, test_labels, test_batch_size or 1000)


def make_loaders(pipeline, batch_size, seed, device, train_size=None, test_size=None, degrees=15.0, zoom_p=0.1,
                 root=DATA_DIR, mnist_dir=None, test_batch_size=None):
    """(train_loader, test_loader) of the 'fast' or the 'classic' pipeline."""
    if pipeline not in ("fast", "classic"):
        raise ValueError(f"unknown pipeline {pipeline!r}: use 'fast' or 'classic'")
    loaders = fast_loaders if pipeline == "fast" else classic_loaders
    return loaders(batch_size, seed, train_size, test_size, root=root, mnist_dir=mnist_dir, device=device,
                   degrees=degrees, zoom_p=zoom_p, test_batch_size=test_batch_size)


class ImageError(ValueError):
    """A file that cannot be turned into a digit: missing, empty, not an image, or blank."""


def edges(x):
    """The pixels on the four edges of a 2-D image: mostly paper, in a picture of one digit."""
    return torch.cat([x[0], x[-1], x[:, 0], x[:, -1]])


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
        with Image.open(path) as image:
            rgba = image.convert("RGBA")
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"{path} is not an image that can be read (PNG, JPG, ...): {e}") from None
    grey = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")  # transparent = paper
    try:
        return to_mnist(transforms.functional.pil_to_tensor(grey)[0].float() / 255)
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


# ----------------------------------------------------------------------------- training


SCHEDULES = ("step", "onecycle", "plateau", "none")


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run but the model and the seed."""

    pipeline: str = "fast"  # 'fast': tensors on the device, bf16 where native; 'classic': DataLoader + PIL
    epochs: int = 20  # passes over the training set
    batch_size: int = 512  # images per step
    lr: float = 0.01  # SGD learning rate (the peak one for 'onecycle')
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 0.0  # L2 penalty
    schedule: str = "step"  # one of SCHEDULES
    step_size: int = 15  # 'step': epochs between drops; 'plateau': epochs without progress before one
    gamma: float = 0.1  # 'step'/'plateau': factor applied at each drop
    label_smoothing: float = 0.0  # share of the target spread over the other classes
    degrees: float = 15.0  # augmentation: rotation uniform in +-degrees
    zoom_p: float = 0.1  # augmentation: probability of the seeds' zoom (crop 22 -> 28)


RECIPES = {
    "classic": Recipe(pipeline="classic"),  # the seeds' pipeline and recipe, exactly
    # Chosen by measurement (README, BENCHMARKS.md): >= 99.4% in 3 epochs, about 2.5 minutes on 2 CPU cores
    "fast": Recipe(pipeline="fast", epochs=3, batch_size=128, lr=0.15, nesterov=True, schedule="onecycle",
                   label_smoothing=0.1, degrees=5.0, zoom_p=0.1),
    # S7Final, under 8,000 parameters: BatchNorm allows the high peak rate; mild rotations only
    "s7": Recipe(pipeline="fast", epochs=15, batch_size=128, lr=0.1, nesterov=True, schedule="onecycle",
                 degrees=7.0, zoom_p=0.0),
}


def get_optimizer(model, lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0):
    return optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def get_scheduler(optimizer, schedule="step", epochs=20, steps_per_epoch=1, step_size=15, gamma=0.1):
    """The learning-rate schedule: 'step' (StepLR, the seeds'), 'onecycle' (OneCycleLR to the optimizer's lr
    and down, stepped per batch), 'plateau' (ReduceLROnPlateau on the test loss) or 'none'."""
    if schedule == "step":
        return optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if schedule == "onecycle":
        return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"], epochs=epochs,
                                             steps_per_epoch=steps_per_epoch, pct_start=0.3,
                                             anneal_strategy="linear")
    if schedule == "plateau":
        return optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=gamma, patience=step_size)
    if schedule == "none":
        return None
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")


def get_loss(label_smoothing=0.0):
    """NLL on the models' log-probabilities; with label smoothing, cross-entropy (log_softmax of
    log-probabilities changes nothing, so it applies to them as they are)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing) if label_smoothing else nn.NLLLoss()


def train(model, device, loader, optimizer, criterion, scheduler=None, amp_dtype=None, desc="train",
          log_interval=None):
    """One epoch of training; returns (mean loss, accuracy %) over the epoch.

    `scheduler`, if given, is stepped after every batch (OneCycleLR and the like); `amp_dtype`
    (see `autocast_dtype`) runs the forward pass in mixed precision. With `log_interval`, a plain
    line every that many batches replaces the progress bar.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    pbar = tqdm(loader, desc=desc, disable=log_interval is not None)
    for batch, (x, y) in enumerate(pbar, start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(x)
            loss = criterion(output, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss.item()} (batch {seen // len(y) + 1})")
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(y)
        correct += (output.argmax(dim=1) == y).sum().item()
        seen += len(y)
        pbar.set_postfix_str(f"loss={loss.item():.4f} acc={100 * correct / seen:.2f}%")
        if log_interval and batch % log_interval == 0:  # not pbar.n: a disabled bar does not count
            print(f"{desc} [{seen}/{len(loader.dataset)}] loss {loss.item():.4f} acc {100 * correct / seen:.2f}%")
    return total_loss / seen, 100 * correct / seen


@torch.no_grad()
def test(model, device, loader, criterion, amp_dtype=None):
    """Evaluate on `loader`; prints and returns (mean loss, accuracy %)."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(x)
        total_loss += criterion(output.float(), y).item() * len(y)
        correct += (output.argmax(dim=1) == y).sum().item()
        seen += len(y)
    print(f"Test set: average loss {total_loss / seen:.4f}, accuracy {correct}/{seen} ({100 * correct / seen:.2f}%)")
    return total_loss / seen, 100 * correct / seen


def new_history():
    """Per-epoch record of a run: what `fit` returns and `plot_stats` draws."""
    return {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": [], "lr": [], "seconds": []}


PER_BATCH_SCHEDULERS = (optim.lr_scheduler.OneCycleLR, optim.lr_scheduler.CyclicLR)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are lost, the last checkpoint and the history are not."""


def fit(model, device, train_loader, test_loader, optimizer, scheduler, criterion, epochs, history=None,
        amp_dtype=None, checkpoint=None, config=None, log_interval=None):
    """Train for `epochs` epochs, testing after each; returns the history.

    The scheduler is stepped after each batch if it is a per-batch one (OneCycleLR), with the test loss
    if it is ReduceLROnPlateau, else after each epoch. A `history` from an earlier call (or a checkpoint)
    is continued from its last epoch. With `checkpoint` (a path), everything needed to resume is saved
    there after every epoch. Ctrl-C stops training and returns the history so far; a diverging loss
    raises TrainingDiverged, which carries the history.
    """
    history = history if history is not None else new_history()
    per_batch = isinstance(scheduler, PER_BATCH_SCHEDULERS)
    try:
        for epoch in range(len(history["train_loss"]) + 1, epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            train_loss, train_acc = train(model, device, train_loader, optimizer, criterion,
                                          scheduler if per_batch else None, amp_dtype,
                                          f"Epoch {epoch}/{epochs} lr={lr:.3g}", log_interval)
            test_loss, test_acc = test(model, device, test_loader, criterion, amp_dtype)
            if isinstance(scheduler, optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(test_loss)
            elif scheduler is not None and not per_batch:
                scheduler.step()
            for key, value in zip(new_history(), (train_loss, train_acc, test_loss, test_acc, lr,
                                                  time.perf_counter() - start)):
                history[key].append(value)
            if checkpoint:
                save_checkpoint(checkpoint, model, optimizer, scheduler, history, train_loader, config)
    except KeyboardInterrupt:
        done = len(history["train_loss"])
        saved = f"; the checkpoint of epoch {done} is {checkpoint}" if checkpoint and done else ""
        print(f"Interrupted: kept the history of {done} finished epoch(s){saved}.")
    except TrainingDiverged as e:
        saved = f" The checkpoint of epoch {len(history['train_loss'])} is {checkpoint}." if checkpoint else ""
        error = TrainingDiverged(f"{e} in epoch {len(history['train_loss']) + 1}: lower the learning rate "
                                 f"(it was {optimizer.param_groups[0]['lr']:.3g}).{saved}")
        error.history = history
        raise error from None
    return history


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, or for another model."""


def save_checkpoint(path, model, optimizer, scheduler, history, train_loader, config=None):
    """Write all that a run needs to go on exactly where it stopped (atomically: a crash leaves the old one)."""
    state = {
        "model_name": type(model).__name__,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": len(history["train_loss"]),
        "history": history,
        "rng": {"torch": torch.get_rng_state(), "loader": train_loader.generator.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "config": config or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


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


def load_checkpoint(path, model, optimizer=None, scheduler=None, train_loader=None):
    """Restore a `save_checkpoint` file into the given objects; returns (history, config).

    Restores the RNG states too, so that a resumed CPU run ends exactly as an uninterrupted one.
    """
    state = read_checkpoint(path)
    if state["model_name"] != type(model).__name__:
        raise CheckpointError(f"{path} holds a {state['model_name']} model, not a {type(model).__name__}: "
                              "choose the model it was trained with, or another checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {str(e).splitlines()[0]}") from None
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    if train_loader is not None:
        train_loader.generator.set_state(state["rng"]["loader"])
    return state["history"], state["config"]


def prepare(recipe, model, seed, device, train_size=None, test_size=None, root=DATA_DIR, mnist_dir=None,
            test_batch_size=None):
    """Everything `fit` needs to train `model` with `recipe`, built in the notebook's order.

    Moves the model to `device` (channels_last); returns (train_loader, test_loader, optimizer,
    scheduler, criterion, amp_dtype). The fast pipeline trains in bf16 where the hardware has it.
    """
    train_loader, test_loader = make_loaders(recipe.pipeline, recipe.batch_size, seed, device, train_size,
                                             test_size, recipe.degrees, recipe.zoom_p, root, mnist_dir,
                                             test_batch_size)
    model.to(device, memory_format=torch.channels_last)
    optimizer = get_optimizer(model, recipe.lr, recipe.momentum, recipe.nesterov, recipe.weight_decay)
    scheduler = get_scheduler(optimizer, recipe.schedule, recipe.epochs, len(train_loader), recipe.step_size,
                              recipe.gamma)
    amp_dtype = autocast_dtype(device) if recipe.pipeline == "fast" else None
    return train_loader, test_loader, optimizer, scheduler, get_loss(recipe.label_smoothing), amp_dtype


def train_model(model, recipe, seed=1, device=torch.device("cpu"), train_size=None, test_size=None,
                mnist_dir=None):
    """Train `model` from scratch with `recipe` (seeded): `prepare` + `fit`; returns the history."""
    seed_everything(seed)
    parts = prepare(recipe, model, seed, device, train_size, test_size, mnist_dir=mnist_dir)
    train_loader, test_loader, optimizer, scheduler, criterion, amp_dtype = parts
    return fit(model, device, train_loader, test_loader, optimizer, scheduler, criterion, recipe.epochs,
               amp_dtype=amp_dtype)


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


def confusion_matrix(targets, preds, num_classes=10):
    """(num_classes, num_classes) counts: row = true digit, column = predicted digit."""
    return torch.bincount(targets * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


# ----------------------------------------------------------------------------- plots


def _finish(fig, save):
    """Save `fig` as a PNG if asked (creating the folder), and return it."""
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=100, bbox_inches="tight")
    return fig


def plot_digits(images, titles, ncols=10, save=None, suptitle=None):
    """A grid of (N, 1, 28, 28) digit images with a title under each."""
    nrows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.squeeze(0).float().numpy(), cmap="gray")
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return _finish(fig, save)


def plot_samples(loader, n=20, save=None):
    """The first `n` images of one batch of `loader`, each with its label.

    The loader's generator is put back as it was, so that looking at samples leaves the training run
    (shuffling, augmentation) exactly as it would be without them.
    """
    generator = getattr(loader, "generator", None)
    state = generator.get_state() if generator is not None else None
    images, labels = next(iter(loader))
    if state is not None:
        generator.set_state(state)
    return plot_digits(images[:n], [str(int(label)) for label in labels[:n]], save=save,
                       suptitle="Training samples (after augmentation)")


def plot_stats(history, save=None):
    """The 2x2 grid of training/test loss/accuracy per epoch."""
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [("train_loss", "Training loss"), ("train_acc", "Training accuracy (%)"),
              ("test_loss", "Test loss"), ("test_acc", "Test accuracy (%)")]
    for ax, (key, title) in zip(axes.flat, panels):
        ax.plot(epochs, history[key], marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _finish(fig, save)


def _plot_predictions(images, targets, preds, mask, n, save, suptitle):
    idx = mask.nonzero().flatten()[:n]
    titles = [f"pred {int(preds[i])}\ntrue {int(targets[i])}" for i in idx]
    return plot_digits(images[idx], titles, save=save, suptitle=suptitle)


def plot_missed(images, targets, preds, n=20, save=None):
    """The first `n` misclassified test digits, predicted vs true label."""
    missed = preds != targets
    return _plot_predictions(images, targets, preds, missed, n, save,
                             f"Misclassified: {int(missed.sum())} of {len(targets)}")


def plot_correct(images, targets, preds, n=20, save=None):
    """The first `n` correctly classified test digits."""
    right = preds == targets
    return _plot_predictions(images, targets, preds, right, n, save,
                             f"Correctly classified: {int(right.sum())} of {len(targets)}")


def plot_confusion(targets, preds, save=None):
    """The confusion matrix (counts), with each digit's accuracy on its row label."""
    cm = confusion_matrix(targets, preds)
    per_class = 100 * cm.diag() / cm.sum(dim=1).clamp(min=1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm.float().log1p().numpy(), cmap="Blues")  # log scale so that the few errors show
    for (i, j), count in zip(torch.cartesian_prod(torch.arange(10), torch.arange(10)).tolist(), cm.flatten().tolist()):
        if count:
            ax.text(j, i, count, ha="center", va="center", fontsize=8, color="white" if i == j else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10), [f"{d}  ({acc:.1f}%)" for d, acc in enumerate(per_class.tolist())])
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit  (per-class accuracy)")
    ax.set_title(f"Confusion matrix: {100 * cm.diag().sum() / cm.sum():.2f}% of {int(cm.sum())} correct")
    fig.tight_layout()
    return _finish(fig, save)
