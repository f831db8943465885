"""The fast path: tensors on the device, batched augmentation, precision choice."""

import math
import platform

import pytest
import torch
from PIL import Image

import devices
import mnist
import training
from conftest import make_digits
from mnist import BLACK, MEAN, STD, Data, TensorLoader, augment, fast_loaders, mnist_tensors
from recipes import Recipe

CPU = torch.device("cpu")


def bar_image():
    """A horizontal bar, 20 x 2 pixels, centred: its orientation and length are easy to measure."""
    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[13:15, 4:24] = 255
    return image


def orientation_and_length(images):
    """Per image (in [0, 1]): the angle of the principal axis (degrees) and the spread along it."""
    n = images.shape[0]
    w = images.reshape(n, -1).clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    mass = w.sum(1)
    my, mx = (w * ys).sum(1) / mass, (w * xs).sum(1) / mass
    dy, dx = ys - my[:, None], xs - mx[:, None]
    mu20, mu02, mu11 = (w * dx * dx).sum(1) / mass, (w * dy * dy).sum(1) / mass, (w * dx * dy).sum(1) / mass
    angle = 0.5 * torch.atan2(2 * mu11, mu20 - mu02)
    major = 0.5 * (mu20 + mu02) + torch.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    return torch.rad2deg(angle), major.sqrt()


def seed_path(image, n):
    """n draws of the original S5 PIL transforms of `image`, back in [0, 1]."""
    pil = Image.fromarray(image.numpy())
    tf = mnist.train_transforms(Recipe())
    return torch.stack([tf(pil) for _ in range(n)]) * STD + MEAN


def fast_path(image, n, seed=0):
    x = ((image.float() / 255 - MEAN) / STD).expand(n, 1, 28, 28).contiguous()
    return augment(x, torch.Generator().manual_seed(seed)) * STD + MEAN


def test_each_image_gets_its_own_angle():
    out = fast_path(bar_image(), 64)  # 64 copies of one image in a batch
    assert len(torch.unique(out.flatten(1), dim=0)) > 32  # a per-batch transform would give one image
    angles, _ = orientation_and_length(out)
    assert angles.std() > 5 and angles.abs().max() <= 16


def test_augmentation_matches_the_seed_transforms_statistics():
    torch.manual_seed(0)
    n = 600
    seed_out, fast_out = seed_path(bar_image(), n), fast_path(bar_image(), n)
    (seed_angle, seed_len), (fast_angle, fast_len) = orientation_and_length(seed_out), orientation_and_length(fast_out)
    uniform_std = 15 / math.sqrt(3)  # angle uniform in +-15 degrees
    for angle in (seed_angle, fast_angle):
        assert abs(angle.mean()) < 1.2 and abs(angle.std() - uniform_std) < 0.8
    # the zoom (p = 0.1) makes the bar 28/22 times longer
    long_cut = seed_len.median() * (1 + 28 / 22) / 2
    seed_zoomed, fast_zoomed = (seed_len > long_cut).float().mean(), (fast_len > long_cut).float().mean()
    assert 0.06 < seed_zoomed < 0.14 and 0.06 < fast_zoomed < 0.14
    # same ink and contrast on average
    assert abs(seed_out.mean() - fast_out.mean()) < 0.03 * seed_out.mean()
    assert abs(seed_out.std() - fast_out.std()) < 0.05 * seed_out.std()


def test_outside_the_image_is_filled_black():
    x = torch.full((8, 1, 28, 28), BLACK)
    out = augment(x, torch.Generator().manual_seed(0), degrees=15, zoom_p=0.5)
    torch.testing.assert_close(out, x)


def test_mnist_tensors_are_normalised_once(mnist_dir, data_root):
    images, labels = mnist_tensors(True, CPU, Data(mnist_dir, data_root))
    raw, raw_labels = make_digits(96, 0)
    assert images.shape == (96, 1, 28, 28) and images.dtype == torch.float32
    torch.testing.assert_close(images[:, 0], (raw.float() / 255 - MEAN) / STD)
    assert torch.equal(labels, raw_labels.long())
    assert mnist_tensors(False, CPU, Data(root=data_root, test_size=10))[0].shape[0] == 10


def test_tensor_loader_batches_shuffles_by_seed_and_covers_every_image():
    images, labels = torch.arange(50.0).view(50, 1, 1, 1).expand(50, 1, 28, 28), torch.arange(50)

    def epoch(seed):
        return [y for _, y in TensorLoader(images, labels, 16, shuffle=True, seed=seed)]

    batches = epoch(0)
    assert [len(b) for b in batches] == [16, 16, 16, 2] and len(TensorLoader(images, labels, 16)) == 4
    assert sorted(torch.cat(batches).tolist()) == list(range(50))
    assert torch.equal(torch.cat(epoch(0)), torch.cat(batches))
    assert not torch.equal(torch.cat(epoch(1)), torch.cat(batches))
    loader = TensorLoader(images, labels, 16, shuffle=True, seed=0)
    assert not torch.equal(torch.cat([y for _, y in loader]), torch.cat([y for _, y in loader]))  # new order each epoch
    x, y = next(iter(TensorLoader(images, labels, 16)))  # no shuffle: file order, images untouched
    assert torch.equal(y, torch.arange(16)) and torch.equal(x, images[:16])


def test_fast_loaders(mnist_dir, data_root):
    train_loader, test_loader = fast_loaders(Recipe(batch_size=32), Data(mnist_dir, data_root), 0, CPU)
    x, y = next(iter(train_loader))
    assert x.shape == (32, 1, 28, 28) and len(train_loader.dataset) == 96 and len(test_loader.dataset) == 48
    assert not torch.equal(x, train_loader.images[:32])  # augmented


BF16_CPU = "fpu sse4_1 avx avx2 avx512f avx512_bf16"  # an AVX512-BF16 server CPU's flags (the relevant ones)
AMX_CPU = BF16_CPU + " amx_bf16"
AVX2_CPU = "fpu sse4_1 avx avx2"  # most laptops and desktops


@pytest.mark.parametrize("flags, cap, isa, fast_bf16", [
    (AMX_CPU, None, "AMX", True), (BF16_CPU, None, "AVX512-BF16", True),
    (AVX2_CPU + " avx512f", None, "AVX-512", False), (AVX2_CPU, None, "AVX2", False),
    ("fpu sse4_1", None, "SSE4.1", False),
    (AMX_CPU, "AVX512_CORE_BF16", "AVX512-BF16", True), (AMX_CPU, "avx512_core_amx", "AMX", True),
    (BF16_CPU, "AVX512_CORE_VNNI", "AVX-512", False), (BF16_CPU, "AVX2_VNNI_2", "AVX2", False),
    (BF16_CPU, "AVX2", "AVX2", False), (BF16_CPU, "AVX", "AVX", False), (BF16_CPU, "SSE41", "SSE4.1", False),
    (BF16_CPU, "ALL", "AVX512-BF16", True),  # a value oneDNN does not know caps nothing
    (AVX2_CPU, "AVX512_CORE_AMX", "AVX2", False),  # a cap above the CPU changes nothing
])
def test_the_cpu_probe_follows_the_cap_on_onednn(flags, cap, isa, fast_bf16, tmp_path, monkeypatch):
    """A run capped to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2) computes bf16 by emulation, as a laptop would: it must
    choose fp32, and report the instructions it may use."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags : {flags}\n")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert (devices.cpu_isa(cpuinfo), devices.cpu_has_fast_bf16(cpuinfo)) == (isa, fast_bf16)


def test_the_cpu_probe_reads_the_older_name_of_the_cap_and_stays_in_fp32_off_linux(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags : {BF16_CPU}\n")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert devices.isa_cap() == "AVX2" and not devices.cpu_has_fast_bf16(cpuinfo)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # the current name wins, as in oneDNN
    assert devices.isa_cap() == "AVX512_CORE_BF16" and devices.cpu_has_fast_bf16(cpuinfo)
    assert not devices.cpu_has_fast_bf16(tmp_path / "missing")  # no /proc/cpuinfo (macOS, Windows): fp32
    assert devices.cpu_isa(tmp_path / "missing") == platform.machine()


def test_the_cpu_probe_names_the_cpu(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14 96-Core Processor\nflags\t\t: fpu avx2\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9B14 96-Core Processor\nflags\t\t: fpu avx2\n")
    assert devices.cpu_name(cpuinfo) == "AMD EPYC 9B14 96-Core Processor" and devices.cpu_isa(cpuinfo) == "AVX2"
    assert devices.cpu_name(tmp_path / "missing") == platform.processor()  # no /proc/cpuinfo: what Python knows


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])  # float16: tests/test_device.py
def test_training_steps_in_each_precision_and_channels_last(precision, mnist_dir, data_root):
    recipe = Recipe(precision=precision, schedule="none", batch_size=32, lr=0.05, degrees=0.0, zoom_p=0.0)
    t = training.prepare("net", recipe, Data(mnist_dir, data_root), CPU, seed=0)
    assert t.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    before, _ = training.test(t, t.train_loader)
    for _ in range(15):
        training.train(t)
    after, _ = training.test(t, t.train_loader)
    assert after < 0.5 * before
