"""The notebooks' front desk: all that S5.ipynb, S7.ipynb and Sweep.ipynb import, from one place.

Each name lives in a module named by what it holds; this module only re-exports them, and holds nothing of its own.
`main.py` and `bench/` import those modules themselves, and nothing else imports this one.

    environment  env, headless: the notebooks' parameters from the environment
    devices      the device, its precision, its layout, the CPU probe, the random generators' state
    mnist        Data, MNIST (downloaded or a local folder), transforms, the classic and fast loaders
    digits       your own digit images made MNIST-like
    recipes      Recipe, RECIPES, make_recipe
    training     prepare -> Trainer, train_step, train, test, fit, predictions, results_row
    checkpoints  save, resume, load weights for predictions
    plots, runs, lr_finder   the figures, the kept runs, the learning-rate range test
    sweep        sweep, best_recipe, confirm: find a recipe with Optuna (imported when a sweep runs)
"""

from devices import choose_precision, device_name, get_device  # noqa: F401  (re-exported, as all below)
from environment import env, headless  # noqa: F401
from lr_finder import lr_find, plot_lr_find  # noqa: F401
from mnist import Data, make_loaders  # noqa: F401
from model import get_model  # noqa: F401
from plots import plot_confusion, plot_correct, plot_missed, plot_samples, plot_stats, plot_study  # noqa: F401
from recipes import RECIPES, Recipe, describe_recipe, make_recipe  # noqa: F401
from runs import list_runs, plot_runs  # noqa: F401
from sweep import best_recipe, confirm, describe_trial, sweep, trials_table  # noqa: F401
from training import fit, predictions, prepare, results_row  # noqa: F401
