"""Every device: the per-device choices for each device kind (tested here on the CPU), plots fed device
tensors, and the pipeline end to end on each device that exists (cpu everywhere; cuda, mps where present)."""

import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

import checkpoints
import devices
import draw
import main
import mnist
import recipes
import training
from conftest import ACCELERATORS, DEVICES, on_device
from devices import choose_precision
from mnist import Data, TensorLoader
from plots import plot_confusion, plot_correct, plot_digits, plot_missed, plot_samples, plot_stats
from recipes import Recipe

ROOT = Path(__file__).resolve().parents[1]
CUDA, MPS, CPU = torch.device("cuda"), torch.device("mps"), torch.device("cpu")


# ----------------------------------------------------------------------------- per-device choices, every kind


@pytest.mark.parametrize("device, native, dtype, scaled", [
    (CPU, True, torch.bfloat16, False),  # AVX512-BF16 / AMX
    (CPU, False, None, False),  # AVX2 only: bf16 would be emulated
    (CUDA, True, torch.bfloat16, False),  # Ampere and newer
    (CUDA, False, torch.float16, True),  # T4, V100: fp16 with loss scaling
    (MPS, False, None, False),
])
def test_auto_precision_for_every_device_kind(device, native, dtype, scaled):
    precision = choose_precision(device, "auto", native=native)
    assert precision.dtype == dtype and precision.scaled == scaled


def test_the_precision_says_what_and_why():
    assert str(choose_precision(CUDA, native=False)) == "float16 + GradScaler (no native bf16 on this GPU)"
    assert str(choose_precision(CPU, native=True)) == "bfloat16 (native bf16 on this CPU)"
    assert str(choose_precision(MPS)).startswith("float32 (")


def test_a_recipe_can_force_a_precision():
    assert choose_precision(CPU, "float16", native=True).dtype == torch.float16
    assert choose_precision(CUDA, "float32", native=True).dtype is None
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        choose_precision(CPU, "half")


def test_native_bf16_on_cuda_does_not_count_emulation(monkeypatch):
    """A T4 reports bf16 'supported' by default because torch can emulate it; that must not pick bf16."""
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return including_emulation  # what a T4 answers

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert devices.native_bf16(CUDA) is False and asked == {"including_emulation": False}
    assert choose_precision(CUDA).dtype == torch.float16


def test_native_bf16_on_cpus_follows_their_flags(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert devices.native_bf16(CPU) and choose_precision(CPU).dtype == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    assert not devices.native_bf16(CPU) and choose_precision(CPU).dtype is None
    assert not devices.native_bf16(MPS)


def test_generators_live_on_the_device_but_not_on_mps():
    assert devices.generator_device(MPS) == CPU  # randperm/rand refuse an MPS generator (pytorch#110820)
    assert devices.generator_device(CUDA) == CUDA and devices.generator_device(CPU) == CPU


def test_memory_format_per_device():
    assert devices.memory_format(CPU) == devices.memory_format(CUDA) == torch.channels_last
    assert devices.memory_format(MPS) == torch.contiguous_format


def test_the_loader_asks_where_its_generator_lives(monkeypatch):
    asked = []
    monkeypatch.setattr(mnist, "generator_device", lambda device: asked.append(device) or CPU)
    TensorLoader(torch.zeros(4, 1, 28, 28), torch.zeros(4), 2, shuffle=True)
    assert asked == [CPU]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_asking_for_cuda_without_it_is_one_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available here .*: use 'cpu' or 'auto'"):
        devices.get_device("cuda")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_asking_for_mps_off_a_mac_is_one_clear_error():
    with pytest.raises(ValueError, match="MPS is only on Apple-silicon Macs"):
        devices.get_device("mps")


# ----------------------------------------------------------------------------- fp16 + GradScaler (runs on CPU too)


def test_fp16_with_a_grad_scaler_trains_and_its_state_is_checkpointed(mnist_dir, data_root, tmp_path):
    recipe = Recipe(precision="float16", schedule="none", epochs=1, batch_size=32, lr=0.05, degrees=0, zoom_p=0)
    t = training.prepare("final", recipe, Data(mnist_dir, data_root), CPU, seed=0)  # small: fp16 is slow on CPUs
    assert t.scaler.is_enabled() and t.precision.scaled
    before, _ = training.test(t, t.train_loader)
    for _ in range(10):
        training.train(t)
    after, _ = training.test(t, t.train_loader)
    assert after < 0.7 * before
    checkpoints.save_checkpoint(tmp_path / "c.pt", t)
    resumed = training.prepare("final", recipe, Data(mnist_dir, data_root), CPU, seed=0)
    checkpoints.load_checkpoint(tmp_path / "c.pt", resumed)
    assert resumed.scaler.state_dict() == t.scaler.state_dict()


def test_no_scaler_without_fp16(mnist_dir, data_root):
    t = training.prepare("net", Recipe(precision="float32", epochs=1), Data(mnist_dir, data_root), CPU)
    assert not t.scaler.is_enabled()


# ----------------------------------------------------------------------------- plots fed device tensors


@pytest.fixture
def digits():
    g = torch.Generator().manual_seed(0)
    images, targets = torch.randn(30, 1, 28, 28, generator=g), torch.randint(0, 10, (30,), generator=g)
    preds = targets.clone()
    preds[:7] = (preds[:7] + 1) % 10
    return images, targets, preds


def test_the_stand_in_device_tensor_refuses_numpy_like_a_real_one(digits):
    with pytest.raises(TypeError, match="cpu"):
        plt.imshow(on_device(digits[0])[0, 0])
    plt.close("all")


PLOTS = {
    "digits": lambda images, targets, preds: plot_digits(images[:5], ["a"] * 5),
    "samples": lambda images, targets, preds: plot_samples(TensorLoader(images, targets, 8, shuffle=True,
                                                                              degrees=10.0, zoom_p=0.5)),
    "missed": plot_missed,
    "correct": plot_correct,
    "confusion": lambda images, targets, preds: plot_confusion(targets, preds),
    "prediction": lambda images, targets, preds: draw.plot_prediction(images[:1], images[0, 0, 0, :10].softmax(0),
                                                                       images[0, 0].abs()),
}


@pytest.mark.parametrize("plot", PLOTS)
def test_every_plot_takes_device_tensors(digits, plot):
    """Each plot helper moves what it draws to the CPU: a dropped .cpu() fails here, on any machine."""
    PLOTS[plot](*on_device(*digits))
    plt.close("all")


# ----------------------------------------------------------------------------- on each device that exists


@pytest.mark.parametrize("device", DEVICES)
def test_fast_loaders_on_the_device(device, mnist_dir, data_root):
    recipe = Recipe(batch_size=32, degrees=15.0, zoom_p=0.5)
    train_loader, test_loader = mnist.fast_loaders(recipe, Data(mnist_dir, data_root), 0, torch.device(device))
    x, y = next(iter(train_loader))
    assert x.device.type == y.device.type == device and x.shape == (32, 1, 28, 28)
    assert not torch.equal(x.cpu(), train_loader.images[:32].cpu())  # augmented, on the device
    assert sum(len(y) for _, y in test_loader) == 48


@pytest.mark.parametrize("device", DEVICES)
def test_plots_of_a_run_on_the_device(device, mnist_dir, data_root, tmp_path):
    recipe = Recipe(schedule="none", epochs=1, batch_size=32, lr=0.05)
    t = training.prepare("net", recipe, Data(mnist_dir, data_root), torch.device(device))
    training.fit(t)
    plot_samples(t.train_loader, save=tmp_path / "samples.png")
    images, targets = next(iter(t.test_loader))
    with torch.no_grad():
        preds = t.model(images).argmax(dim=1)  # straight from the device, no .cpu() on the way
    plot_missed(images, targets, preds, save=tmp_path / "missed.png")
    plot_correct(images, targets, preds, save=tmp_path / "correct.png")
    plot_confusion(targets, preds, save=tmp_path / "confusion.png")
    plot_stats(t.history, save=tmp_path / "stats.png")
    plt.close("all")
    assert len(list(tmp_path.glob("*.png"))) == 5


@pytest.mark.parametrize("device", DEVICES)
def test_main_trains_resumes_and_predicts_on_the_device(device, mnist_dir, data_root, tmp_path, capsys):
    from test_main import draw_seven

    common = ["train", "--device", device, "--data-dir", mnist_dir, "--data-root", data_root, "--out",
              tmp_path / "out", "--checkpoint", tmp_path / "ck.pt", "--batch-size", 32, "--schedule", "step",
              "--ema", 0.9]  # the weight average too: updated, checkpointed and predicted with on the device
    assert main.main([str(a) for a in [*common, "--epochs", 1]]) == 0
    assert main.main([str(a) for a in [*common, "--epochs", 2, "--resume", tmp_path / "ck.pt"]]) == 0
    assert checkpoints.read_checkpoint(tmp_path / "ck.pt")["epoch"] == 2
    assert main.main(["predict", str(draw_seven(tmp_path / "7.png")), "--checkpoint", str(tmp_path / "ck.pt"),
                      "--device", device, "--show", "--out", str(tmp_path / "views")]) == 0
    out = capsys.readouterr().out
    assert f"on {device}" in out and "7.png: " in out and (tmp_path / "views" / "7_28x28.png").exists()


@pytest.mark.parametrize("device", DEVICES)
def test_lr_find_on_the_device_puts_everything_back(device, mnist_dir, data_root):
    from lr_finder import lr_find

    t = training.prepare("net", Recipe(batch_size=32, epochs=1), Data(mnist_dir, data_root), torch.device(device))
    weights = {k: v.clone() for k, v in t.model.state_dict().items()}
    result = lr_find(t, start=1e-3, end=1.0, num=8)
    assert len(result.lrs) > 1 and all(torch.equal(v, weights[k]) for k, v in t.model.state_dict().items())


@pytest.mark.parametrize("device", ACCELERATORS)
@pytest.mark.parametrize("notebook", ["S5.ipynb", "S7.ipynb"])
def test_the_notebooks_run_on_the_accelerator(device, notebook, monkeypatch, tmp_path):
    """Both notebooks, top to bottom, on a small slice of MNIST (on the CPU, nbmake runs them in `make test`)."""
    import nbformat
    from nbclient import NotebookClient

    for name, value in {"DEVICE": device, "EPOCHS": "1", "TRAIN_SIZE": "1024", "TEST_SIZE": "1000",
                        "IMAGES_DIR": str(tmp_path / "images"), "CHECKPOINT": str(tmp_path / "s5.pt"),
                        "RUNS_DIR": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(ROOT / notebook, as_version=4)
    NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(ROOT)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"device: {device}" in printed


# ----------------------------------------------------------------------------- Colab


def colab_cell():
    """The source of S5.ipynb's first code cell: what Colab runs before anything else."""
    nb = json.loads((ROOT / "S5.ipynb").read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("notebook", ["S5.ipynb", "S7.ipynb"])
def test_both_notebooks_start_with_the_same_colab_cell(notebook):
    nb = json.loads((ROOT / notebook).read_text())
    assert "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"]) == colab_cell()


def run_colab_cell(monkeypatch, tmp_path, in_colab, have_torchinfo, repo_here):
    installs = []
    monkeypatch.setattr("subprocess.run", lambda cmd, **kwargs: installs.append(cmd))
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "torchinfo" and not have_torchinfo else object())
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(ROOT if repo_here else tmp_path)
    exec(colab_cell(), {})
    return installs


def test_the_colab_cell_does_nothing_outside_colab(monkeypatch, tmp_path, capsys):
    assert run_colab_cell(monkeypatch, tmp_path, in_colab=False, have_torchinfo=False, repo_here=False) == []
    assert capsys.readouterr().out == ""


def test_in_colab_it_installs_only_what_is_missing_and_never_torch(monkeypatch, tmp_path, capsys):
    installs = run_colab_cell(monkeypatch, tmp_path, in_colab=True, have_torchinfo=False, repo_here=True)
    assert len(installs) == 1 and "torchinfo" in installs[0] and not any("torch" == a for a in installs[0])
    assert run_colab_cell(monkeypatch, tmp_path, in_colab=True, have_torchinfo=True, repo_here=True) == []
    assert capsys.readouterr().out == ""


def test_in_colab_without_the_repo_it_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    run_colab_cell(monkeypatch, tmp_path, in_colab=True, have_torchinfo=True, repo_here=False)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "model.py" in out[0] and "upload" in out[0]


# ----------------------------------------------------------------------------- device line


def test_prepare_lays_the_model_out_for_the_device_and_picks_its_precision(mnist_dir, data_root, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    t = training.prepare("net", replace(recipes.RECIPES["fast"], epochs=1), Data(mnist_dir, data_root), CPU)
    assert t.model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert t.precision.dtype is None and "no native bf16 on this CPU" in str(t.precision)
    assert devices.device_name(CPU).startswith("cpu (")

