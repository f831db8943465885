import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import training
from conftest import make_digits
from devices import FP32
from lr_finder import LRFinderResult, lr_find, lr_schedule, plot_lr_find, steep, suggest, valley
from mnist import MEAN, STD, TensorLoader
from recipes import Recipe
from training import get_loss, get_optimizer, get_scheduler

CPU = torch.device("cpu")


def trainer(model, loader, optimizer, criterion, scheduler=None):
    """What `lr_find` and `training.train` use of a `training.Trainer`, around any model and loader."""
    return SimpleNamespace(model=model, train_loader=loader, optimizer=optimizer, criterion=criterion,
                           scheduler=scheduler, device=CPU, precision=FP32,
                           scaler=torch.amp.GradScaler("cpu", enabled=False), ema=None)


class Scripted(nn.Module):
    """A 'model' whose loss is read off a list: to test the loop on a known sequence of losses."""

    def __init__(self, losses):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.losses = iter(losses)

    def forward(self, x):
        return self.w * 0 + next(self.losses)


def scripted_find(losses, **kwargs):
    model = Scripted(losses)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.zeros(1), torch.zeros(1))] * 3  # shorter than the test: it must be cycled
    return lr_find(trainer(model, loader, optimizer, lambda out, y: out), **kwargs)


def tiny_model():
    """Small but with what can go wrong: BatchNorm buffers and dropout (which draws from torch's RNG)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, 10), nn.LogSoftmax(dim=1))


def digits(n=96, seed=0):
    images, labels = make_digits(n, seed)
    return (images.float().unsqueeze(1) / 255 - MEAN) / STD, labels.long()


def tensor_loader():
    """Shuffled and augmented from its own generator, as the fast pipeline's training loader."""
    return TensorLoader(*digits(), batch_size=32, shuffle=True, seed=0, degrees=5.0, zoom_p=0.1)


def data_loader():
    return DataLoader(TensorDataset(*digits()), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))


def test_the_schedule_is_exponential_from_start_to_end_exactly():
    lrs = lr_schedule(1e-5, 10.0, 7)
    assert lrs[0] == 1e-5 and lrs[-1] == 10.0 and len(lrs) == 7
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([10.0] * 6)
    with pytest.raises(ValueError):
        lr_schedule(1.0, 0.1, 10)


def test_every_param_group_gets_the_schedule_and_the_loader_is_cycled():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=0.1)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append([g["lr"] for g in opt.param_groups]))
    loader = [(torch.zeros(4, 2), torch.zeros(4, 1))] * 3
    result = lr_find(trainer(model, loader, optimizer, nn.MSELoss()), start=1e-3, end=1.0, num=10)
    assert list(result.lrs) == lr_schedule(1e-3, 1.0, 10)
    assert seen == [[lr, lr] for lr in result.lrs]
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]


def test_losses_are_smoothed_by_an_ema_with_bias_correction():
    result = scripted_find([1.0, 2.0, 3.0], beta=0.5, num=3)
    assert result.raw_losses == (1.0, 2.0, 3.0)
    # avg: 0.5, 1.25, 2.125; divided by 1 - 0.5**step: 0.5, 0.75, 0.875
    assert result.losses == pytest.approx((1.0, 1.25 / 0.75, 2.125 / 0.875))


def test_stops_when_the_smoothed_loss_exceeds_diverge_times_its_best():
    result = scripted_find([2.0, 1.0, 1.5, 3.75, 4.25, 1.0, 1.0, 1.0], beta=0.0, num=8)  # beta 0: no smoothing
    assert result.raw_losses == (2.0, 1.0, 1.5, 3.75, 4.25)  # 4.25 > 4 x 1.0: recorded, then stop
    assert len(result.lrs) == 5


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_stops_at_a_non_finite_loss_without_recording_it(bad):
    result = scripted_find([2.0, 1.0, bad, 1.0], beta=0.0, num=4)
    assert result.raw_losses == (2.0, 1.0)
    assert all(math.isfinite(loss) for loss in result.losses)


def test_model_optimizer_and_modes_are_put_back_with_a_scheduler_attached():
    torch.manual_seed(0)
    model, loader, criterion = tiny_model(), tensor_loader(), get_loss(0.1)
    recipe = Recipe(lr=0.1, momentum=0.9, nesterov=True, schedule="onecycle", epochs=2)
    optimizer = get_optimizer(model, recipe)
    scheduler = get_scheduler(optimizer, recipe, steps_per_epoch=len(loader))
    t = trainer(model, loader, optimizer, criterion, scheduler)
    training.train(t)  # momentum buffers, BN stats, a scheduled lr
    model.eval()
    model[4].train()  # one module in another mode than the rest: each module's mode is put back
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    last_lr = scheduler.get_last_lr()
    result = lr_find(t, num=12)
    assert len(result.lrs) > 1
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m) for p, m in zip(model.parameters(), momenta))
    assert [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups] == groups
    assert scheduler.get_last_lr() == last_lr
    assert [m.training for m in model.modules()] == [False, False, False, False, False, True, False, False]
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("make_loader", [tensor_loader, data_loader])
def test_training_after_lr_find_is_bit_identical_to_training_without(make_loader):
    def run(find_first):
        torch.manual_seed(0)
        model, loader, criterion = tiny_model(), make_loader(), get_loss(0.1)
        recipe = Recipe(lr=0.1, momentum=0.9, nesterov=True, schedule="onecycle", epochs=2)
        optimizer = get_optimizer(model, recipe)
        t = trainer(model, loader, optimizer, criterion, get_scheduler(optimizer, recipe, len(loader)))
        if find_first:
            lr_find(t, num=8)  # > one pass: reshuffles, draws dropout
        losses = [training.train(t) for _ in range(2)]
        return losses, model.state_dict(), torch.get_rng_state()

    (losses, weights, rng), (losses_after, weights_after, rng_after) = run(False), run(True)
    assert losses_after == losses
    assert all(torch.equal(weights_after[k], v) for k, v in weights.items())
    assert torch.equal(rng_after, rng)


def test_steep_is_where_the_loss_falls_fastest_against_log_lr():
    lrs = lr_schedule(1e-5, 10.0, 100)
    losses = [2 - math.tanh(2 * (math.log10(lr) + 2)) for lr in lrs]  # falls fastest at lr = 1e-2
    assert math.log10(steep(lrs, losses)) == pytest.approx(-2, abs=0.07)  # within one step of the grid


def valley_curve():
    """Rises to index 20, falls (strictly) to its minimum at index 80, then rises again."""
    rise = [0.5 + 0.01 * i for i in range(20)]  # below most of the fall: no part of the longest run
    fall = [1.2 - 0.015 * i for i in range(61)]  # indices 20..80
    return rise + fall + [fall[-1] + 0.1 * i for i in range(1, 20)]


def test_valley_is_about_half_way_along_the_longest_decreasing_run_as_fastai_reads_it():
    lrs, losses = list(range(100)), valley_curve()
    # the run is 20..80, L = 61 points ending at 80: fastai's start 80 - 61 = 19, then + int(61/3) + int(61/6)
    assert valley(lrs, losses) == 19 + 20 + 10
    losses[50] += 0.1  # a bump in the fall is stepped over, not a cut: 60 points, 20..80 without 50
    assert valley(lrs, losses) == 20 + 20 + 10


def test_valley_of_a_short_run_at_the_start_stays_on_the_curve():
    assert valley([1, 2, 3, 4], [2.0, 1.0, 3.0, 4.0]) == 1  # L = 2 ending at 1: fastai's index -1, the last rate


def test_suggestions_skip_the_start_and_the_blow_up():
    lrs = lr_schedule(1e-5, 10.0, 100)
    losses = [10.0] + valley_curve()[1:]  # a noisy first point would otherwise start the longest run
    assert suggest(lrs, losses)[1] == lrs[49]  # the first 10 and the last 5 points skipped: the run 20..80
    assert valley(lrs, losses) == lrs[18 + 20 + 10]  # the run 0, 20..80: 62 points ending at 80
    assert suggest(lrs[:7], losses[:7]) == (None, None)


def test_result_says_its_suggestions_in_one_line():
    result = LRFinderResult((1e-3, 1e-2), (2.0, 1.0), (2.0, 1.0), 0.0316, 0.0112, 6.14)
    assert str(result) == "lr_find: steep 3.2e-02, valley 1.1e-02 (2 batches, 6.1 s)"
    assert "steep n/a" in str(LRFinderResult((), (), (), None, None, 0.1))


def test_plot_has_a_log_lr_axis_marks_the_suggestions_and_saves_a_png(tmp_path):
    lrs = lr_schedule(1e-5, 10.0, 100)
    losses = valley_curve()
    result = LRFinderResult(tuple(lrs), tuple(losses), tuple(losses), *suggest(lrs, losses), 1.0)
    fig = plot_lr_find(result, save=tmp_path / "sub" / "lr.png")
    ax = fig.axes[0]
    assert isinstance(fig, plt.Figure) and ax.get_xscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    assert f"steep {result.steep:.1e}" in labels and f"valley {result.valley:.1e}" in labels
    assert (tmp_path / "sub" / "lr.png").read_bytes()[:4] == b"\x89PNG"
    plt.close(fig)
