"""The figures: digits, training curves, predictions, the confusion matrix, a sweep's study. Each returns its
figure (and saves it as a PNG when asked); every tensor goes through .cpu() before it meets numpy or matplotlib,
since the plots get CUDA and MPS tensors too. `utils` re-exports what the notebooks use, so that they import from
one place."""

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from devices import capture_rng, restore_rng


def finish(fig, save):
    """Save `fig` as a PNG if asked (creating the folder), and return it."""
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=100, bbox_inches="tight")
    return fig


def confusion_matrix(targets, preds, num_classes=10):
    """(num_classes, num_classes) counts: row = true digit, column = predicted digit."""
    return torch.bincount(targets * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def plot_digits(images, titles, ncols=10, save=None, suptitle=None):
    """A grid of (N, 1, 28, 28) digit images with a title under each."""
    nrows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.squeeze(0).float().cpu().numpy(), cmap="gray")
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return finish(fig, save)


def plot_samples(loader, n=20, save=None):
    """The first `n` images of one batch of `loader`, each with its label.

    The random generators (torch's, the loader's) are put back as they were, so that looking at samples leaves
    the training run (shuffling, augmentation) exactly as it would be without them.
    """
    generator = getattr(loader, "generator", None)
    state = capture_rng(generator)
    images, labels = next(iter(loader))
    restore_rng(state, generator)
    return plot_digits(images[:n], [str(int(label)) for label in labels[:n]], save=save,
                       suptitle="Training samples (after augmentation)")


def plot_stats(history, save=None):
    """The 2x2 grid of training/test loss/accuracy per epoch."""
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [("train_loss", "Training loss"), ("train_acc", "Training accuracy (%)"),
              ("test_loss", "Test loss"), ("test_acc", "Test accuracy (%)")]
    for ax, (key, title) in zip(axes.flat, panels):
        ax.plot(epochs, history[key], marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return finish(fig, save)


def _plot_predictions(images, targets, preds, mask, n, save, suptitle):
    idx = mask.nonzero().flatten()[:n].cpu()
    images, targets, preds = images.cpu(), targets.cpu(), preds.cpu()
    titles = [f"pred {int(preds[i])}\ntrue {int(targets[i])}" for i in idx]
    return plot_digits(images[idx], titles, save=save, suptitle=suptitle)


def plot_missed(images, targets, preds, n=20, save=None):
    """The first `n` misclassified test digits, predicted vs true label."""
    missed = preds != targets
    return _plot_predictions(images, targets, preds, missed, n, save,
                             f"Misclassified: {int(missed.sum())} of {len(targets)}")


def plot_correct(images, targets, preds, n=20, save=None):
    """The first `n` correctly classified test digits."""
    right = preds == targets
    return _plot_predictions(images, targets, preds, right, n, save,
                             f"Correctly classified: {int(right.sum())} of {len(targets)}")


def plot_confusion(targets, preds, save=None):
    """The confusion matrix (counts), with each digit's accuracy on its row label."""
    cm = confusion_matrix(targets, preds).cpu()
    per_class = 100 * cm.diag() / cm.sum(dim=1).clamp(min=1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm.float().log1p().cpu().numpy(), cmap="Blues")  # log scale so that the few errors show
    for (i, j), count in zip(torch.cartesian_prod(torch.arange(10), torch.arange(10)).tolist(), cm.flatten().tolist()):
        if count:
            ax.text(j, i, count, ha="center", va="center", fontsize=8, color="white" if i == j else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10), [f"{d}  ({acc:.1f}%)" for d, acc in enumerate(per_class.tolist())])
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit  (per-class accuracy)")
    ax.set_title(f"Confusion matrix: {100 * cm.diag().sum() / cm.sum():.2f}% of {int(cm.sum())} correct")
    fig.tight_layout()
    return finish(fig, save)


STUDY_VIEWS = {"history": "plot_optimization_history", "importances": "plot_param_importances",
               "slices": "plot_slice", "intermediate": "plot_intermediate_values"}


def plot_study(study, view, save=None):
    """One of Optuna's matplotlib views of a sweep's study (`view`: history, importances, slices, intermediate: the
    pruner's reports, pruned trials included); the figure, or None, saying why, where the study has too few trials."""
    from optuna.exceptions import ExperimentalWarning  # only where a sweep was run
    from optuna.visualization import matplotlib as optuna_plots

    try:
        with warnings.catch_warnings():  # "experimental since v2.2.0": said at every call, and nothing to act on
            warnings.simplefilter("ignore", ExperimentalWarning)
            axes = getattr(optuna_plots, STUDY_VIEWS[view])(study)
    except (ValueError, RuntimeError) as e:  # e.g. importances of a study with one finished trial
        print(f"no {view} plot: {e}")
        return None
    fig = np.atleast_1d(axes).flat[0].figure
    fig.set_size_inches(max(6, 3.2 * np.atleast_1d(axes).size), 4)
    return finish(fig, save)
