"""The lever screens' own parts (bench/levers.py): the screens themselves are runs, reported in docs/experiments.md."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import training
from bench.levers import BASE, SHIFTS, GrowingBatches, MuonWithSGD, accuracies, shifted, with_optimizer
from mnist import BLACK, TensorLoader


def test_growing_batches_cover_each_image_once_small_then_large():
    loader = TensorLoader(torch.randn(1000, 1, 28, 28), torch.arange(1000), 32, shuffle=True, seed=1, degrees=5)
    batches = GrowingBatches(loader, 32, 128)
    sizes = [len(y) for _, y in batches]
    assert sizes == batches.sizes and len(batches) == len(sizes)
    assert sizes[:8] == [32] * 7 + [26]  # the first quarter, 250 images
    assert sizes[8:] == [128] * 5 + [110]  # the other 750
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(1000))
    assert not torch.equal(labels, torch.arange(1000))  # shuffled


def test_shifted_moves_the_image_and_fills_black():
    image = torch.full((1, 1, 28, 28), BLACK)
    image[0, 0, 10, 12] = 1.0
    right = shifted(image, 1, 0)
    assert right.shape == image.shape
    assert right[0, 0, 10, 13] == 1.0 and right[0, 0, 10, 12] == BLACK
    down = shifted(image, 0, 1)
    assert down[0, 0, 11, 12] == 1.0
    assert (shifted(torch.ones(1, 1, 28, 28), -1, 0)[0, 0, :, -1] == BLACK).all()


def test_tta_counts_the_averaged_prediction_apart():
    """A model that is right on the plain image only: plain accuracy 100%, TTA (five views averaged) 0%."""
    class PlainOnly(nn.Module):
        def forward(self, x):  # the plain (all-zero) images say 0; a shifted one, with a black edge, says 1
            plain = (x == 0).flatten(1).all(1).float()
            return torch.stack([-10 * (1 - plain), -10 * plain], 1).log_softmax(1)

    images, labels = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    plain, tta = accuracies(PlainOnly(), [(images, labels)], torch.device("cpu"))
    assert plain == 100.0 and tta == 0.0 and len(SHIFTS) == 5


def test_muon_takes_conv_weights_and_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    optimizer = MuonWithSGD(model, lr=0.05, muon_lr=0.02)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2]  # conv + linear weights; their biases
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert optimizer.state[model[0].weight]["momentum_buffer"].shape == (4, 9)  # kept flattened


def test_a_new_schedule_keeps_each_groups_peak_rate():
    """Re-scheduling an optimizer that a one-cycle schedule has already set to peak / 25 still peaks at the peak."""
    sgd = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=BASE.lr, momentum=0.9)
    recipe = replace(BASE, epochs=1)
    training.get_scheduler(sgd, recipe, 10)
    t = with_optimizer(SimpleNamespace(recipe=recipe, train_loader=[None] * 40), sgd)
    lrs = []
    for _ in range(39):
        sgd.step()
        t.scheduler.step()
        lrs.append(sgd.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(BASE.lr, rel=0.01)
