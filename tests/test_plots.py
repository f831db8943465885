import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, TensorDataset

import mnist
import training
from mnist import TensorLoader
from plots import plot_confusion, plot_correct, plot_missed, plot_samples, plot_stats

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def digits():
    g = torch.Generator().manual_seed(0)
    images, targets = torch.randn(30, 1, 28, 28, generator=g), torch.randint(0, 10, (30,), generator=g)
    preds = targets.clone()
    preds[:7] = (preds[:7] + 1) % 10  # 7 mistakes
    return images, targets, preds


def check(fig, path):
    assert isinstance(fig, Figure)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    fig.clf()


def test_plot_samples(tmp_path, digits):
    loader = DataLoader(TensorDataset(digits[0], digits[1]), batch_size=12)
    check(plot_samples(loader, save=tmp_path / "samples.png"), tmp_path / "samples.png")


def test_plot_samples_leaves_the_generators_as_they_were(digits):
    """Looking at samples changes nothing in the run after it: the loader's next batch, torch's next number."""
    def loader():
        return TensorLoader(digits[0], digits[1], 8, shuffle=True, seed=0, degrees=10.0, zoom_p=0.5)

    looked_at, untouched = loader(), loader()
    torch.manual_seed(0)
    plot_samples(looked_at)
    after = next(iter(looked_at)), torch.rand(1)
    torch.manual_seed(0)
    expected = next(iter(untouched)), torch.rand(1)
    assert torch.equal(after[0][0], expected[0][0]) and torch.equal(after[1], expected[1])
    plt.close("all")


def test_plot_stats(tmp_path):
    history = training.new_history()
    for epoch in range(3):
        for key in history:
            history[key].append(float(epoch))
    fig = plot_stats(history, save=tmp_path / "sub" / "stats.png")
    assert [ax.get_title() for ax in fig.axes][0] == "Training loss"
    check(fig, tmp_path / "sub" / "stats.png")


def test_plot_missed_shows_only_the_mistakes(tmp_path, digits):
    fig = plot_missed(*digits, save=tmp_path / "missed.png")
    assert sum(1 for ax in fig.axes if ax.images) == 7
    assert "7 of 30" in fig._suptitle.get_text()
    check(fig, tmp_path / "missed.png")


def test_plot_correct(tmp_path, digits):
    fig = plot_correct(*digits, n=10, save=tmp_path / "correct.png")
    assert sum(1 for ax in fig.axes if ax.images) == 10
    check(fig, tmp_path / "correct.png")


def test_plot_confusion(tmp_path, digits):
    fig = plot_confusion(digits[1], digits[2], save=tmp_path / "confusion.png")
    assert "76.67%" in fig.axes[0].get_title()  # 23 of 30 right
    check(fig, tmp_path / "confusion.png")


def test_plots_without_save_write_nothing(tmp_path, digits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(plot_missed(*digits), Figure)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make", [
    lambda x, y: mnist.TensorLoader(x, y, 8, shuffle=True, seed=3, degrees=15.0, zoom_p=0.5),
    lambda x, y: DataLoader(TensorDataset(x, y), 8, shuffle=True, generator=torch.Generator().manual_seed(3)),
], ids=["fast", "classic"])
def test_plot_samples_leaves_the_training_batches_as_they_were(tmp_path, digits, make):
    looked, untouched = make(*digits[:2]), make(*digits[:2])
    plot_samples(looked, save=tmp_path / "samples.png").clf()
    for (a, la), (b, lb) in zip(looked, untouched):
        assert torch.equal(a, b) and torch.equal(la, lb)
