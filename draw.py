"""Draw a digit and see what the model makes of it: a drawing pad widget, and its static fallback.

    draw_digit(model, history)                                   # in Jupyter: the live pad
    draw_digit(model, history, static=True, example=mnist_to_canvas(image))  # headless: a picture

The pad is an anywidget: the browser only draws (mouse, pen or finger) and, at the end of each stroke,
sends the canvas once as a PNG. Python turns it into the model's input with `digits.to_mnist`, the
preprocessing `load_digit` uses for image files, runs the model, and sends back the prediction, the
28x28 image the model saw and a saliency map, which the browser draws. No server but the kernel.
"""

import base64
import io

import matplotlib.pyplot as plt
import torch
import traitlets
from PIL import Image, ImageDraw, ImageFilter
from torchvision.transforms import functional as TF

from digits import ImageError, grey_of, to_mnist
from mnist import MEAN, STD
from plots import finish

try:
    from anywidget import AnyWidget
except ImportError:  # optional: without it draw_digit shows a static picture
    AnyWidget = None

CANVAS = 280  # the pad's side in pixels: 10x MNIST's 28
PEN = 20  # pen width on the pad: about MNIST's stroke once the digit is scaled to 20 px
BLANK = "draw a digit"
INSTALL_HINT = "To draw your own digit here: pip install anywidget, then restart the kernel."
SEVEN = [[(70, 60), (210, 60), (120, 230)]]  # a digit drawn as strokes, the example when none is given


class UntrainedModelError(ValueError):
    """The model has not finished an epoch of training: its answers would mean nothing."""


def check_trained(history):
    """Refuse a model with no finished epoch. `history`: fit's per-epoch dict, or True/False."""
    finished = len(history.get("test_acc", ())) if isinstance(history, dict) else int(bool(history))
    if not finished:
        raise UntrainedModelError("the model has not finished an epoch of training: train it first, then draw")


# ----------------------------------------------------------------------------- the pad's images


def png_to_grey(png):
    """The pad's image (a PNG data URL) as a grey (H, W) tensor in [0, 1], read as load_digit reads a file."""
    data = base64.b64decode(png.split(",", 1)[-1], validate=True)
    with Image.open(io.BytesIO(data)) as image:
        return grey_of(image)


def mnist_to_canvas(image):
    """An MNIST image as if drawn on the pad: (280, 280), dark ink on white, in [0, 1].

    `image`: 28x28 light ink on black, as uint8, in [0, 1], or normalised (as the loaders give it).
    """
    x = torch.as_tensor(image).detach().cpu().float().reshape(1, 28, 28)
    if x.min() < 0:  # normalised: the background is -MEAN/STD
        x = x * STD + MEAN
    elif x.max() > 1:  # uint8
        x = x / 255
    return 1 - TF.resize(x, [CANVAS, CANVAS], antialias=True)[0].clamp(0, 1)


def strokes_to_canvas(strokes, width=PEN, blur=0.0):
    """Strokes (lists of (x, y) points on the pad) drawn as the pad draws them: black, round ends, on white.

    Returns a (280, 280) tensor in [0, 1]; `blur` (a Gaussian radius in pixels) softens the ink.
    """
    image = Image.new("L", (CANVAS, CANVAS), 255)
    pen = ImageDraw.Draw(image)
    for points in strokes:
        points = [(float(x), float(y)) for x, y in points]
        if len(points) > 1:
            pen.line(points, fill=0, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round ends, as the pad's lineCap
            pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=0)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return TF.pil_to_tensor(image)[0].float() / 255


# ----------------------------------------------------------------------------- the model's answer


def predict(model, digit):
    """(probs, saliency) for one (1, 1, 28, 28) input, on the CPU.

    probs: the 10 probabilities. saliency: (28, 28) |d log p(predicted digit) / d input|, scaled to
    [0, 1]: the pixels that sway the answer most. The model runs in eval mode and is put back as it was.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # BatchNorm and dropout as at test time
    try:
        x = digit.detach().to(device).requires_grad_()
        with torch.enable_grad():
            log_probs = model(x)[0]
            (grad,) = torch.autograd.grad(log_probs.max(), x)  # the input's gradient only: no weight .grad touched
    finally:
        model.train(was_training)
    saliency = grad[0, 0].abs().cpu()
    return log_probs.detach().exp().cpu(), saliency / saliency.max().clamp(min=1e-12)


def read_drawing(model, grey):
    """(digit, probs, saliency) for a drawing, a grey (H, W) tensor; ImageError if it is blank."""
    digit = to_mnist(grey)
    return (digit, *predict(model, digit))


def plot_prediction(digit, probs, saliency, save=None, title=None):
    """The static picture of one prediction: the 28x28 view | the saliency over it | the 10 probabilities."""
    view = (digit.detach().reshape(28, 28) * STD + MEAN).clamp(0, 1)
    best = int(probs.argmax())
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    axes[0].imshow(view.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("what the model sees (28x28)", fontsize=10)
    axes[1].imshow(view.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(saliency.detach().cpu().numpy(), cmap="hot", alpha=0.6, vmin=0, vmax=1)
    axes[1].set_title("saliency: pixels that sway it", fontsize=10)
    for ax in axes[:2]:
        ax.axis("off")
    colours = ["tab:orange" if d == best else "tab:blue" for d in range(10)]
    axes[2].bar(range(10), probs.detach().cpu().numpy(), color=colours)
    axes[2].set(xticks=range(10), ylim=(0, 1), xlabel="digit", ylabel="probability")
    axes[2].set_title(f"predicted {best} ({100 * float(probs[best]):.1f}%)", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, save)


def draw_digit(model, history, static=False, example=None):
    """What to display at the end of a notebook: the live pad, or a picture of one prediction.

    The picture, for `example` (a drawing as the pad makes it, e.g. mnist_to_canvas(a test image)), comes
    with `static` (headless runs: no widget state in the saved notebook) or when anywidget is missing.
    A model with no finished epoch (`history` = fit's history, or True/False) is refused.
    """
    check_trained(history)
    if not static and AnyWidget is not None:
        return DigitPad(model, history)
    if not static:
        print(INSTALL_HINT)
    grey = strokes_to_canvas(SEVEN) if example is None else example
    title = "A drawing and the model's answer (a picture: in Jupyter, draw your own)"
    fig = plot_prediction(*read_drawing(model, grey), title=title)
    plt.close(fig)  # shown once, as the returned value, not again by the inline backend
    return fig


# ----------------------------------------------------------------------------- the widget

ESM = """
const SIZE = 280, PEN = 20;  // the pad's pixels, the pen's width (as CANVAS and PEN in draw.py)

function render({ model, el }) {
  el.classList.add("digitpad");
  el.innerHTML = `
    <div class="digitpad-left">
      <canvas class="digitpad-canvas" width="${SIZE}" height="${SIZE}"></canvas>
      <button class="digitpad-clear" type="button">Clear</button>
    </div>
    <div class="digitpad-right">
      <div class="digitpad-label"></div>
      <div class="digitpad-message"></div>
      <div class="digitpad-bars"></div>
      <div class="digitpad-caption">what the model sees</div>
      <canvas class="digitpad-view" width="28" height="28" title="the model's 28x28 input"></canvas>
      <label><input class="digitpad-toggle" type="checkbox"> saliency</label>
    </div>`;
  const $ = (selector) => el.querySelector(selector);
  const canvas = $(".digitpad-canvas"), pen = canvas.getContext("2d");
  const viewPen = $(".digitpad-view").getContext("2d"), toggle = $(".digitpad-toggle");
  const bars = Array.from({ length: 10 }, (_, digit) => {
    const bar = document.createElement("div");
    bar.className = "digitpad-bar";
    bar.innerHTML = `<div class="digitpad-track"><div class="digitpad-fill"></div></div>${digit}`;
    $(".digitpad-bars").append(bar);
    return bar;
  });

  // Drawing: all in the browser; Python hears of it once per stroke.
  function clearPad() {
    pen.fillStyle = "white";
    pen.fillRect(0, 0, SIZE, SIZE);
  }
  function line([x0, y0], [x1, y1]) {
    pen.strokeStyle = "black";
    pen.lineWidth = PEN;
    pen.lineCap = pen.lineJoin = "round";
    pen.beginPath();
    pen.moveTo(x0, y0);
    pen.lineTo(x1, y1);
    pen.stroke();
  }
  function at(event) {  // pad pixels, whatever size CSS gives the canvas
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * SIZE / box.width, (event.clientY - box.top) * SIZE / box.height];
  }
  function send(png) {  // a new drawing: Python answers with answered = stroke
    model.set("png", png);
    model.set("stroke", model.get("stroke") + 1);
    model.save_changes();
    el.classList.add("digitpad-busy");
  }
  let last = null;  // the pen's position while a stroke is on
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);  // the stroke goes on, and ends, off the canvas too
    last = at(event);
    line(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const events = event.getCoalescedEvents?.() ?? [];  // every point the pointer passed, not one per frame
    for (const e of events.length ? events : [event]) {
      const point = at(e);
      line(last, point);
      last = point;
    }
  });
  const endStroke = () => {
    if (!last) return;
    last = null;
    send(canvas.toDataURL("image/png"));
  };
  for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) canvas.addEventListener(name, endStroke);
  $(".digitpad-clear").addEventListener("click", () => {
    clearPad();
    send("");
  });

  // The answer: label, bars, and the 28x28 view with the saliency in red over it.
  function paintView() {
    const view = model.get("view"), heat = model.get("saliency");
    const strength = model.get("show_saliency") ? 0.8 : 0;
    const image = viewPen.createImageData(28, 28);
    for (let i = 0; i < 28 * 28; i++) {
      const v = 255 * (view[i] ?? 0), a = strength * (heat[i] ?? 0);
      image.data.set([(1 - a) * v + a * 255, (1 - a) * v + a * 40, (1 - a) * v, 255], 4 * i);
    }
    viewPen.putImageData(image, 0, 0);
    toggle.checked = model.get("show_saliency");
  }
  function show() {
    const label = model.get("label"), probs = model.get("probs");
    $(".digitpad-label").textContent = label ?? "";
    $(".digitpad-label").dataset.stroke = model.get("answered");  // which drawing this answers (for tests)
    $(".digitpad-message").textContent = model.get("message");
    bars.forEach((bar, digit) => {
      bar.querySelector(".digitpad-fill").style.height = `${100 * (probs[digit] ?? 0)}%`;
      bar.classList.toggle("digitpad-best", digit === label);
    });
    el.classList.toggle("digitpad-busy", model.get("answered") !== model.get("stroke"));
    paintView();
  }
  toggle.addEventListener("change", () => {
    model.set("show_saliency", toggle.checked);
    model.save_changes();
  });

  clearPad();
  const png = model.get("png");
  if (png) {  // a view of a pad already drawn on: show its drawing again
    const image = new Image();
    image.onload = () => pen.drawImage(image, 0, 0);
    image.src = png;
  }
  show();
  model.on("change:answered", show);
  model.on("change:show_saliency", paintView);
  return () => {
    model.off("change:answered", show);
    model.off("change:show_saliency", paintView);
  };
}

export default { render };
"""

CSS = """
.digitpad { display: inline-flex; gap: 20px; align-items: flex-start; font-family: sans-serif; padding: 4px; }
.digitpad-canvas { display: block; width: 280px; height: 280px; border: 1px solid #888; border-radius: 4px;
                   touch-action: none; cursor: crosshair; }
.digitpad-clear { margin-top: 6px; padding: 2px 12px; }
.digitpad-label { font-size: 56px; font-weight: bold; line-height: 64px; min-height: 64px; }
.digitpad-busy .digitpad-label { opacity: 0.3; }
.digitpad-message { min-height: 1.4em; margin-bottom: 6px; }
.digitpad-bars { display: flex; gap: 3px; margin-bottom: 10px; }
.digitpad-bar { width: 16px; text-align: center; font-size: 11px; }
.digitpad-track { height: 70px; display: flex; align-items: flex-end; background: rgba(128, 128, 128, 0.1); }
.digitpad-fill { width: 100%; background: #7a9cc6; }
.digitpad-best .digitpad-fill { background: #e8743b; }
.digitpad-caption { font-size: 12px; opacity: 0.7; margin-bottom: 2px; }
.digitpad-view { display: block; width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #888; }
"""


class DigitPad(AnyWidget or traitlets.HasTraits):
    """The drawing pad: draw a digit, see the model's answer. Needs anywidget; display it in Jupyter.

    The browser sets `png` and bumps `stroke`; Python answers in the other traits, `answered` last.
    """

    _esm = ESM
    _css = CSS
    png = traitlets.Unicode("").tag(sync=True, echo_update=False)  # the drawing, a PNG data URL; "" once cleared
    stroke = traitlets.Int(0).tag(sync=True, echo_update=False)  # the browser counts what it sends ...
    answered = traitlets.Int(0).tag(sync=True)  # ... and Python says which of them the answer is for
    label = traitlets.Int(None, allow_none=True).tag(sync=True)  # the predicted digit; None: no answer
    probs = traitlets.List(traitlets.Float()).tag(sync=True)  # 10 probabilities
    view = traitlets.List(traitlets.Float()).tag(sync=True)  # the 28x28 input, row by row, in [0, 1]
    saliency = traitlets.List(traitlets.Float()).tag(sync=True)  # 28x28, row by row, in [0, 1]
    show_saliency = traitlets.Bool(True).tag(sync=True)
    message = traitlets.Unicode(BLANK).tag(sync=True)

    def __init__(self, model, history, **kwargs):
        if AnyWidget is None:
            raise ImportError(INSTALL_HINT)
        check_trained(history)
        super().__init__(**kwargs)
        self.classifier = model  # (the widget's JavaScript calls its synced state `model`)

    @traitlets.observe("stroke")
    def _answer(self, change):
        answer = self.read(self.png)
        with self.hold_sync():  # one message to the browser
            for name, value in answer.items():
                setattr(self, name, value)
            self.answered = self.stroke

    def read(self, png):
        """The answer for a drawing: label, probs, view, saliency and message (what the pad shows)."""
        nothing = {"label": None, "probs": [], "view": [], "saliency": []}
        if not png:
            return {**nothing, "message": BLANK}
        try:
            digit, probs, saliency = read_drawing(self.classifier, png_to_grey(png))
        except ImageError:  # nothing drawn (or all rubbed out)
            return {**nothing, "message": BLANK}
        except (ValueError, OSError) as e:  # not a PNG data URL: a front end out of step
            return {**nothing, "message": f"could not read the drawing: {e}"}
        best = int(probs.argmax())
        view = (digit.reshape(-1) * STD + MEAN).clamp(0, 1)
        return {"label": best, "probs": probs.tolist(), "view": view.tolist(),
                "saliency": saliency.reshape(-1).tolist(), "message": f"{100 * probs[best]:.0f}% sure"}
