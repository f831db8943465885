"""Your own digits: a photo, a scan or a drawing of one digit made MNIST-like, as MNIST was made. The one
preprocessing for image files (`main.py predict`) and the drawing pad (draw.py)."""

import warnings
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from mnist import MEAN, STD


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
