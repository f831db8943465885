"""The learning-rate range test (Smith 2015; fastai's `lr_find`, the torch-lr-finder package).

Train for up to `num` batches while the learning rate grows exponentially from tiny to huge, and watch the
smoothed loss: it stays flat while the rate is too small to matter, falls once the rate is useful, and blows
up once it is too large. The steepest part of the fall and fastai's 'valley' are suggestions for the peak rate.
Everything the test changes is put back afterwards, so that training after it is exactly as without it.
"""

import copy
import math
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt

from devices import capture_rng, restore_rng
from plots import finish
from training import TrainingDiverged, train_step

START, END = 1e-3, 1.0  # the default sweep (S5.ipynb, main.py lr-find): the loss barely moves at its start
#                         and blows up before its end
SKIP_START, SKIP_END = 0.1, 5  # suggestions ignore the first 10% (EMA still settling) and the last 5 points (blow-up)


@dataclass(frozen=True)
class LRFinderResult:
    """What `lr_find` saw: one learning rate and loss per batch, and the suggested rates (None if too few batches)."""

    lrs: tuple
    losses: tuple  # smoothed: EMA with bias correction
    raw_losses: tuple
    steep: float | None
    valley: float | None
    seconds: float

    def __str__(self):
        def fmt(lr):
            return "n/a" if lr is None else f"{lr:.1e}"

        return (f"lr_find: steep {fmt(self.steep)}, valley {fmt(self.valley)} "
                f"({len(self.lrs)} batches, {self.seconds:.1f} s)")


def lr_schedule(start, end, num):
    """`num` learning rates growing exponentially from `start` to `end` (both exact)."""
    if num < 2 or not 0 < start < end:
        raise ValueError(f"need 0 < start < end and num >= 2, got start={start}, end={end}, num={num}")
    return [start * (end / start) ** (i / (num - 1)) for i in range(num - 1)] + [end]


def lr_find(t, start=START, end=END, num=100, beta=0.98, diverge=4.0):
    """Run the range test on the trainer `t` (see `training.prepare`); returns an `LRFinderResult`.

    The rate of every param group goes from `start` to `end` over `num` batches of the training loader (cycled if
    it is shorter), with the trainer's precision and loss. The loss is smoothed by an EMA (`beta`) with bias
    correction; the test stops early once the smoothed loss exceeds `diverge` times its best, or at a NaN/inf loss
    (not recorded). Afterwards the model's weights and train/eval modes, the optimizer's state and param groups,
    the grad scaler, torch's RNGs and the loader's generator are put back (a scheduler attached to the optimizer
    is left alone, and so keeps working); gradients are cleared.
    """
    saved = snapshot(t)
    lrs, losses, raw_losses = [], [], []
    avg, best = 0.0, math.inf
    began = time.perf_counter()
    t.model.train()
    batches = cycle(t.train_loader)
    try:
        for step, lr in enumerate(lr_schedule(start, end, num), start=1):
            x, y = next(batches)
            x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
            for group in t.optimizer.param_groups:
                group["lr"] = lr
            try:
                _, loss = train_step(t, x, y)  # the step that training takes
            except TrainingDiverged:  # a NaN or infinite loss: not recorded
                break
            raw = loss.item()
            avg = beta * avg + (1 - beta) * raw
            smoothed = avg / (1 - beta**step)  # bias correction: the EMA starts at 0, not at the first loss
            lrs.append(lr)
            losses.append(smoothed)
            raw_losses.append(raw)
            best = min(best, smoothed)
            if smoothed > diverge * best:
                break
    finally:
        restore(t, saved)
    steep, valley = suggest(lrs, losses)
    return LRFinderResult(tuple(lrs), tuple(losses), tuple(raw_losses), steep, valley, time.perf_counter() - began)


def cycle(loader):
    """The loader's batches, again and again (a new pass, reshuffled, when one ends)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader has no batches")


def snapshot(t):
    """Copies (not views: training writes into the originals) of all that `lr_find` changes."""
    generator = getattr(t.train_loader, "generator", None)  # TensorLoader and DataLoader have one (or None)
    return {
        "model": copy.deepcopy(t.model.state_dict()),
        "optimizer": copy.deepcopy(t.optimizer.state_dict()),
        "scaler": copy.deepcopy(t.scaler.state_dict()),
        "modes": [(module, module.training) for module in t.model.modules()],
        "rng": capture_rng(generator),
    }


def restore(t, saved):
    t.model.load_state_dict(saved["model"])  # copies into the same tensors: the optimizer still holds them
    t.optimizer.load_state_dict(saved["optimizer"])
    t.optimizer.zero_grad(set_to_none=True)
    if saved["scaler"]:
        t.scaler.load_state_dict(saved["scaler"])
    for module, training in saved["modes"]:
        module.train(training)
    restore_rng(saved["rng"], getattr(t.train_loader, "generator", None))


# ----------------------------------------------------------------------------- suggestions


def suggest(lrs, losses):
    """(steep, valley) for a smoothed curve, ignoring its noisy start and its blow-up; (None, None) if too short."""
    first, last = int(SKIP_START * len(lrs)), len(lrs) - SKIP_END
    lrs, losses = lrs[first:last], losses[first:last]
    if len(lrs) < 3:
        return None, None
    return steep(lrs, losses), valley(lrs, losses)


def steep(lrs, losses):
    """The rate where the loss falls fastest against log(lr) (the left end of the steepest segment)."""
    slopes = [(losses[i + 1] - losses[i]) / math.log(lrs[i + 1] / lrs[i]) for i in range(len(lrs) - 1)]
    return lrs[min(range(len(slopes)), key=slopes.__getitem__)]


def valley(lrs, losses):
    """fastai's 'valley' (fastai.callback.schedule.valley): about half-way along the longest decreasing run.

    The run is the longest strictly decreasing subsequence (not necessarily contiguous, so that a small bump in
    the fall does not cut it in two), found by the O(n^2) dynamic programme; of the longest, the first to end. As
    fastai's code does, with L the run's length and `end` its last point, the run is taken to start at end - L
    (its first point if it has no gaps, less one) and the rate is read at start + int(L/3) + int(L/6): about half
    of the way, past the flat start and short of the minimum. Indices are in batches (= in log(lr)).
    """
    length = [1] * len(losses)  # of the longest run ending at i
    for i in range(len(losses)):
        for j in range(i):
            if losses[j] > losses[i]:
                length[i] = max(length[i], length[j] + 1)
    end = max(range(len(losses)), key=length.__getitem__)  # the first of the longest, as fastai's `<` keeps it
    start, sections = end - length[end], length[end] / 3
    index = start + int(sections) + int(sections / 2)
    return lrs[max(index, 0)]  # a short run at the very start: its first rate (fastai's -1 would be the last one)


# ----------------------------------------------------------------------------- plot


def plot_lr_find(result, save=None):
    """Loss against learning rate (log axis), per batch and smoothed, with the steep and valley suggestions."""
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(result.lrs, result.raw_losses, color="C0", alpha=0.25, linewidth=1, label="loss per batch")
    ax.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    for name, lr, color in (("steep", result.steep, "C1"), ("valley", result.valley, "C2")):
        if lr is not None:
            ax.plot(lr, result.losses[result.lrs.index(lr)], "o", color=color, markersize=9, label=f"{name} {lr:.1e}")
    shown = result.losses[: len(result.losses) - SKIP_END] or result.losses  # the blow-up would flatten the rest
    if shown:
        low, high = min(shown), max(shown)
        ax.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.2 * (high - low + 1e-3))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(str(result))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return finish(fig, save)

