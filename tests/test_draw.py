"""draw.py without a browser: the pad's state set as the front end sets it, on real and drawn digits."""

import base64
import importlib.util
import io
import sys

import matplotlib.pyplot as plt
import pytest
import torch
from comm import DummyComm
from draw_support import STROKES, grey_to_png, mnist_and_model, one_thread, trained_model
from PIL import Image

import draw
import mnist
import training
from digits import load_digit, to_mnist
from draw import (
    BLANK,
    DigitPad,
    UntrainedModelError,
    draw_digit,
    mnist_to_canvas,
    plot_prediction,
    png_to_grey,
    predict,
    read_drawing,
    strokes_to_canvas,
)
from model import S7Final


class FrontEnd(DummyComm):
    """A comm standing in for the browser: sends what the pad's JavaScript sends, records what comes back."""

    def __init__(self, state):
        super().__init__(target_name="jupyter.widget", primary=False)
        self.state = state  # the browser's copy of the widget's state
        self.received = []

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        self.received.append(data)
        if data and data.get("method") == "update":
            self.state.update(data["state"])

    def draw(self, png, stroke):
        """What the JavaScript does at the end of a stroke (and on Clear, with png = "")."""
        state = {"png": png, "stroke": stroke}
        self.state.update(state)
        self.handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})


@pytest.fixture(autouse=True)
def small_work_on_one_thread():
    with one_thread():
        yield


@pytest.fixture
def model():
    return trained_model()


@pytest.fixture
def pad(model):
    pytest.importorskip("anywidget")
    pad = DigitPad(model, history={"test_acc": [96.0]})
    pad.comm = FrontEnd(pad.get_state())
    return pad


def draw_on(pad, grey):
    """Send a drawing as the browser does; returns the browser's state once the pad has answered."""
    pad.comm.received.clear()
    pad.comm.draw(grey if isinstance(grey, str) else grey_to_png(grey), pad.comm.state["stroke"] + 1)
    assert [m["method"] for m in pad.comm.received] == ["update"]  # the whole answer in one message
    assert pad.comm.state["answered"] == pad.comm.state["stroke"] == pad.stroke
    return pad.comm.state


def transparent_png(strokes):
    """A drawing in black ink on a transparent canvas (a pad whose paper was never painted), as a data URL."""
    ink = 1 - strokes_to_canvas(strokes)
    image = Image.new("RGBA", ink.shape[::-1], (0, 0, 0, 0))
    image.putalpha(Image.fromarray((255 * ink).byte().numpy()))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_to_mnist_is_load_digits_preprocessing(tmp_path, pad):
    images, _, _ = mnist_and_model()
    drawings = [grey_to_png(mnist_to_canvas(images[0])), grey_to_png(strokes_to_canvas(STROKES[4], width=30, blur=5)),
                grey_to_png(1 - strokes_to_canvas(STROKES[7])[:200]),  # light on dark, not square
                transparent_png(STROKES[1])]
    for i, png in enumerate(drawings):
        path = tmp_path / f"{i}.png"
        path.write_bytes(base64.b64decode(png.split(",", 1)[1]))  # the very PNG the pad sends, as a file
        expected = load_digit(path)
        assert torch.equal(to_mnist(png_to_grey(png)), expected)
        state = draw_on(pad, png)
        assert torch.allclose(torch.tensor(state["view"]), (expected * mnist.STD + mnist.MEAN).flatten(), atol=1e-6)
    assert state["label"] == 1


def test_pad_reads_real_mnist_test_digits(pad, model):
    images, labels, _ = mnist_and_model()
    right = 0
    for image, label in zip(images[:50], labels[:50].tolist()):
        canvas = mnist_to_canvas(image)
        state = draw_on(pad, canvas)
        _, probs, _ = read_drawing(model, png_to_grey(grey_to_png(canvas)))  # the Python path, same pixels
        assert state["label"] == pad.label == int(probs.argmax())
        assert torch.allclose(torch.tensor(state["probs"]), probs) and abs(sum(state["probs"]) - 1) < 1e-4
        right += state["label"] == label
    assert right >= 46, f"{right}/50 real test digits read right"  # the model: 97% on MNIST's own


@pytest.mark.parametrize("width, blur", [(20, 0), (30, 4), (40, 8)])
def test_pad_reads_thick_blurry_strokes(pad, width, blur):
    for label, strokes in STROKES.items():
        state = draw_on(pad, strokes_to_canvas(strokes, width, blur))
        assert (state["label"], state["message"].endswith("% sure")) == (label, True)


def test_stroke_off_the_edge_still_works(pad):
    seven = [[(60, 40), (220, 40), (150, 420)]]  # the pen left the pad at the bottom, and came up there
    one = [[(140, -60), (145, 400)]]  # from above the pad to below it
    assert draw_on(pad, strokes_to_canvas(seven))["label"] == 7
    assert draw_on(pad, strokes_to_canvas(one))["label"] == 1


def test_blank_canvas_says_draw_a_digit(pad):
    assert pad.message == BLANK and pad.label is None
    draw_on(pad, strokes_to_canvas(STROKES[7]))
    for blank in [torch.ones(280, 280), ""]:  # a white canvas, and Clear
        state = draw_on(pad, blank)
        assert (state["label"], state["message"], state["probs"], state["view"]) == (None, BLANK, [], [])
    assert draw_on(pad, "data:image/png;base64,bm90IGEgcG5n")["message"].startswith("could not read the drawing")


@pytest.mark.parametrize("history", [training.new_history(), {"test_acc": []}, False])
def test_model_with_no_finished_epoch_is_refused(history):
    for make in (lambda: DigitPad(S7Final(), history), lambda: draw_digit(S7Final(), history, static=True)):
        with pytest.raises(UntrainedModelError, match="not finished an epoch.*train it first"):
            make()
    assert issubclass(UntrainedModelError, ValueError)


def test_predict_gives_probabilities_and_a_normalised_saliency_and_leaves_the_model_as_it_was(model):
    digit = to_mnist(strokes_to_canvas(STROKES[1]))
    model.to(memory_format=torch.channels_last).train()  # as the notebook leaves it
    probs, saliency = predict(model, digit)
    assert probs.shape == (10,) and abs(probs.sum().item() - 1) < 1e-5 and int(probs.argmax()) == 1
    assert saliency.shape == (28, 28) and saliency.min() >= 0 and saliency.max() == 1
    assert model.training and all(p.grad is None for p in model.parameters())  # mode back, weights' grads untouched
    assert not digit.requires_grad
    model.eval()
    assert torch.equal(predict(model, digit)[0], probs) and not model.training
    # the saliency is where the ink is: more of it inside the stroke's box than outside
    view = digit[0, 0] * mnist.STD + mnist.MEAN
    assert saliency[view > 0.5].mean() > saliency[view < 0.01].mean()


class OnDevice(torch.Tensor):
    """A tensor that, like one on a GPU, cannot become a numpy array before .cpu()."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert a device tensor to numpy: use .cpu() first")

    def cpu(self, *args, **kwargs):
        return torch.Tensor.cpu(self.as_subclass(torch.Tensor), *args, **kwargs)


def test_static_picture_of_a_prediction(model, tmp_path):
    images, labels, _ = mnist_and_model()
    fig = draw_digit(model, {"test_acc": [96.0]}, static=True, example=mnist_to_canvas(images[0]))
    assert len(fig.axes) == 3 and fig.axes[2].get_title().startswith(f"predicted {int(labels[0])} (")
    assert not plt.fignum_exists(fig.number)  # closed: shown once, as the cell's value
    digit, probs, saliency = read_drawing(model, strokes_to_canvas(STROKES[7]))
    on_device = [t.as_subclass(OnDevice) for t in (digit, probs, saliency)]
    fig = plot_prediction(*on_device, save=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0 and fig.axes[2].get_title().startswith("predicted 7")
    plt.close(fig)


def test_without_anywidget_a_static_picture_and_how_to_install(model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "anywidget", None)  # as if not installed: importing it fails
    spec = importlib.util.spec_from_file_location("draw_without_anywidget", draw.__file__)
    without = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(without)
    assert without.AnyWidget is None
    fig = without.draw_digit(model, True)
    assert capsys.readouterr().out.strip() == without.INSTALL_HINT
    assert fig.axes[2].get_title().startswith("predicted 7")  # the default example: a drawn 7
    with pytest.raises(ImportError, match="pip install anywidget"):
        without.DigitPad(model, True)


def test_live_pad_when_anywidget_is_there(model):
    pytest.importorskip("anywidget")
    pad = draw_digit(model, {"test_acc": [96.0]})
    assert isinstance(pad, DigitPad) and pad.show_saliency and pad.message == BLANK
    assert "setPointerCapture" in pad._esm and "pointerup" in pad._esm  # strokes end off the pad too
