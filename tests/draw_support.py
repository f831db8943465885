"""What test_draw.py and test_browser.py share: real MNIST test digits and a small real model, made once."""

import base64
import contextlib
import functools
import io
import os
import tempfile
from unittest import mock

import pytest
import torch
from torchvision.transforms import functional as TF

from conftest import SHARED_MNIST
from mnist import Data, mnist_dataset
from model import S7Final
from recipes import Recipe
from training import fit, prepare

# Digits drawn as strokes on the 280x280 pad, as a person would: (label, strokes).
STROKES = {
    0: [[(140 + 65 * torch.tensor(a).sin().item(), 140 - 95 * torch.tensor(a).cos().item())
         for a in torch.linspace(0, 6.4, 40).tolist()]],
    1: [[(145, 40), (140, 240)]],
    4: [[(120, 40), (85, 160), (200, 160)], [(165, 90), (160, 250)]],
    7: [[(70, 60), (210, 60), (120, 230)]],
}


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: for this small work, as fast as two, and far faster when other jobs share the CPU
    (two threads then wait on each other: 4 s against 20 s to train, 0.03 s against 10 s to read 20 digits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.cache
def mnist_and_model(train_size=20_000):
    """(test images (N, 28, 28) uint8, test labels, state_dict of an S7Final trained for one epoch on real MNIST).

    One epoch on 20,000 images: about 5 s on one CPU core, 97% test accuracy: enough to read a clear digit.
    """
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the original MNIST files are not in {SHARED_MNIST}")
    with tempfile.TemporaryDirectory() as root, one_thread(), mock.patch.dict(os.environ, RUNS_DIR=f"{root}/runs"):
        # its run's record in the scratch folder too: module-scoped fixtures call this before the tests' RUNS_DIR
        data = Data(mnist_dir=str(SHARED_MNIST), root=root, train_size=train_size, test_size=2000)
        test = mnist_dataset(False, data)
        images, labels = test.data.clone(), test.targets.clone()
        recipe = Recipe(epochs=1, batch_size=64, lr=0.1, nesterov=True, schedule="onecycle", degrees=10.0, zoom_p=0.0)
        t = prepare("final", recipe, data, torch.device("cpu"), seed=0)
        fit(t, log_interval=10_000)
    return images, labels, t.model.state_dict()


def trained_model():
    """A fresh S7Final with the shared trained weights, in eval mode."""
    model = S7Final()
    model.load_state_dict(mnist_and_model()[2])
    return model.eval()


def grey_to_png(grey):
    """A grey (H, W) tensor in [0, 1] as a PNG data URL: what the pad sends."""
    buffer = io.BytesIO()
    TF.to_pil_image(grey.detach().cpu().float().clamp(0, 1)[None]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
