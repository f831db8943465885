"""Training: `prepare` builds a run (`Trainer`) from a model name, a `Recipe`, a `Data` and a device; `fit` trains it
epoch by epoch (`train`, `test`), keeping its history, its checkpoint and its record in runs/. `train_step` is the
one training step: the training loop, the lr range test and the benchmark all take it."""

import copy
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim as optim
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

import runs
from checkpoints import CheckpointError, save_checkpoint
from devices import Precision, choose_precision, device_name, memory_format, seed_everything
from environment import headless
from files import why_unwritable
from mnist import Data, make_loaders
from model import get_model
from recipes import RECIPES, Recipe


def get_optimizer(model, recipe):
    return optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                     weight_decay=recipe.weight_decay)


def get_scheduler(optimizer, recipe, steps_per_epoch=1):
    """The learning-rate schedule: 'step' (StepLR, the original S5 one), 'onecycle' (OneCycleLR to the recipe's lr
    and down, stepped per batch), 'plateau' (ReduceLROnPlateau on the test loss) or 'none'."""
    if recipe.schedule == "step":
        return optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.schedule == "onecycle":
        return one_cycle(optimizer, recipe.lr, recipe.epochs, steps_per_epoch)
    if recipe.schedule == "plateau":
        return optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=recipe.gamma, patience=recipe.step_size)
    return None


def one_cycle(optimizer, max_lr, epochs, steps_per_epoch):
    """The recipes' one-cycle schedule: up to `max_lr` (one rate, or one per param group) over the first 30% of
    the steps, then linearly down; stepped per batch."""
    return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                         pct_start=0.3, anneal_strategy="linear")


def get_loss(label_smoothing=0.0):
    """NLL on the models' log-probabilities; with label smoothing, cross-entropy (log_softmax of
    log-probabilities changes nothing, so it applies to them as they are)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing) if label_smoothing else nn.NLLLoss()


def new_history():
    """Per-epoch record of a run: what `fit` returns and `plot_stats` draws."""
    return {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": [], "lr": [], "seconds": []}


@dataclass
class Trainer:
    """One training run, ready to go: what `prepare` builds, `fit` trains and a checkpoint saves."""

    model_name: str  # a name in model.MODELS
    recipe: Recipe
    data: Data
    seed: int
    device: torch.device
    precision: Precision
    model: nn.Module
    train_loader: object
    test_loader: object
    optimizer: optim.Optimizer
    scheduler: object  # an lr scheduler, or None
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None = None  # the moving average of the model's weights, if the recipe keeps one
    history: dict = field(default_factory=new_history)
    run_file: Path | None = None  # this run's record in runs/ (see runs.py), made by `fit`

    @property
    def evaluated_model(self):
        """The model that is tested, saved for predictions and shown: the weight average if kept, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def config(self):
        """What a checkpoint needs to rebuild this trainer: model, seed, recipe and data, as plain values."""
        return {"model": self.model_name, "seed": self.seed, "recipe": asdict(self.recipe), "data": asdict(self.data),
                "run_file": str(self.run_file) if self.run_file else None}


def prepare(model_name, recipe, data=Data(), device=torch.device("cpu"), seed=1):
    """A `Trainer` for a fresh model `model_name`, seeded with `seed`: same seed, same run (on CPU)."""
    seed_everything(seed)
    model = get_model(model_name).to(device, memory_format=memory_format(device))
    train_loader, test_loader = make_loaders(recipe, data, seed, device)
    optimizer = get_optimizer(model, recipe)
    precision = choose_precision(device, recipe.precision)
    return Trainer(model_name, recipe, data, seed, device, precision, model, train_loader, test_loader, optimizer,
                   get_scheduler(optimizer, recipe, len(train_loader)), get_loss(recipe.label_smoothing),
                   torch.amp.GradScaler(device.type, enabled=precision.scaled), get_ema(model, recipe.ema))


def get_ema(model, decay):
    """An exponential moving average of `model`'s weights and BatchNorm statistics, updated after every step
    (`update_parameters`); None for decay 0. It smooths the step-to-step noise out of the evaluated weights."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)


def ema_with_warmup(decay):
    """torch's EMA update with the decay held to at most (1 + n) / (10 + n) after n updates (as TensorFlow's
    ExponentialMovingAverage with num_updates): the early averages forget the random start within a few hundred
    steps instead of thousands, so the first epochs' accuracy is that of the model learning, not of its start."""
    def update(averaged, current, n_averaged):
        n = n_averaged.item()
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, n_averaged)

    return update


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are lost, the last checkpoint and the history are not."""


PER_BATCH_SCHEDULERS = (optim.lr_scheduler.OneCycleLR, optim.lr_scheduler.CyclicLR)


def train_step(t, x, y):
    """One step of SGD of the trainer `t` on the batch (x, y), already on its device: the forward pass in its
    precision, the loss, the backward pass (the loss scaled for fp16), the optimizer's step. Returns (output, loss).
    A NaN or infinite loss raises TrainingDiverged before it touches the weights. `t` may be anything with a
    trainer's model, optimizer, criterion, scaler, precision and device (the benchmark's bare step)."""
    t.optimizer.zero_grad(set_to_none=True)
    with t.precision.autocast(t.device):
        output = t.model(x)
        loss = t.criterion(output, y)
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"the training loss became {loss.item()}")
    t.scaler.scale(loss).backward()  # with fp16, scaled so that small gradients survive; else as it is
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return output, loss


def train(t, desc="train", log_interval=None, on_step=None):
    """One epoch of training of the trainer `t`; returns (mean loss, accuracy %) over the epoch.

    A per-batch scheduler (OneCycleLR) is stepped after every batch, then `on_step(t, images)` is called if given,
    with the step's number of images (a sweep reports to its pruner there). With `log_interval`, a plain line every
    that many batches replaces the progress bar; headless, one line for the epoch does.
    """
    t.model.train()
    per_batch = isinstance(t.scheduler, PER_BATCH_SCHEDULERS)
    total_loss, correct, seen = 0.0, 0, 0
    pbar = tqdm(t.train_loader, desc=desc, disable=log_interval is not None or headless())
    for batch, (x, y) in enumerate(pbar, start=1):
        x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
        try:
            output, loss = train_step(t, x, y)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e} (batch {batch})") from None
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        if per_batch:
            t.scheduler.step()
        if on_step is not None:
            on_step(t, len(y))
        total_loss += loss.item() * len(y)
        correct += (output.argmax(dim=1) == y).sum().item()
        seen += len(y)
        pbar.set_postfix_str(f"loss={loss.item():.4f} acc={100 * correct / seen:.2f}%")
        if log_interval and batch % log_interval == 0:  # not pbar.n: a disabled bar does not count
            print(f"{desc} [{seen}/{len(t.train_loader.dataset)}] loss {loss.item():.4f} "
                  f"acc {100 * correct / seen:.2f}%")
    if pbar.disable:
        print(f"{desc}: training loss {total_loss / seen:.4f}, accuracy {100 * correct / seen:.2f}%")
    return total_loss / seen, 100 * correct / seen


def test(t, loader=None):
    """Evaluate the trainer's model (its weight average if it keeps one) on `loader` (default: its test set);
    prints and returns (mean loss, accuracy %)."""
    loss, correct, seen = evaluate(t, t.test_loader if loader is None else loader)
    print(f"{t.data.evaluates_on.capitalize()} set: average loss {loss:.4f}, "
          f"accuracy {correct}/{seen} ({100 * correct / seen:.2f}%)")
    return loss, 100 * correct / seen


@torch.no_grad()
def evaluate(t, batches):
    """(mean loss, images right, images seen) of the trainer's evaluated model on `batches`, in eval mode."""
    model = t.evaluated_model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
        with t.precision.autocast(t.device):
            output = model(x)
        total_loss += t.criterion(output.float(), y).item() * len(y)
        correct += (output.argmax(dim=1) == y).sum().item()
        seen += len(y)
    return total_loss / seen, correct, seen


def end_epoch(t, train_result, test_result, lr, seconds, checkpoint=None):
    """What follows each epoch: the per-epoch scheduler step, the history, the checkpoint, the run's record."""
    if isinstance(t.scheduler, optim.lr_scheduler.ReduceLROnPlateau):
        t.scheduler.step(test_result[0])  # on the evaluation loss: the validation one when images are held out
    elif t.scheduler is not None and not isinstance(t.scheduler, PER_BATCH_SCHEDULERS):
        t.scheduler.step()
    (train_loss, train_acc), (test_loss, test_acc) = train_result, test_result
    row = dict(train_loss=train_loss, train_acc=train_acc, test_loss=test_loss, test_acc=test_acc, lr=lr,
               seconds=seconds)
    for key, value in row.items():
        t.history[key].append(value)
    keep_run(t)  # first: the record has the epoch even if the checkpoint cannot be written
    if checkpoint:
        save_checkpoint(checkpoint, t)


def fit(t, checkpoint=None, log_interval=None, on_step=None):
    """Train the trainer `t` to the end of its recipe's epochs, testing after each; returns the history.

    Goes on from where `t.history` stops (a resumed checkpoint). The run is kept in runs/ (`runs.py`), its
    record rewritten after every epoch; with `checkpoint` (a path), everything needed to resume is saved there
    too. Ctrl-C stops training and returns the history
    so far; a diverging loss raises TrainingDiverged, a checkpoint that cannot be written (a full disk, say)
    CheckpointError; both carry the history. `on_step(t, images)`, if given, is called after every training
    step.
    """
    t.run_file = t.run_file or start_run(t)
    with stopping_cleanly(t, checkpoint):
        for epoch in range(len(t.history["test_acc"]) + 1, t.recipe.epochs + 1):
            lr, start = t.optimizer.param_groups[0]["lr"], time.perf_counter()
            desc = f"Epoch {epoch}/{t.recipe.epochs} lr {lr_range(epoch_lrs(t))}"
            train_result = train(t, desc, log_interval, on_step)
            end_epoch(t, train_result, test(t), lr, time.perf_counter() - start, checkpoint)
    return t.history


def epoch_lrs(t):
    """The learning rates the trainer's next epoch trains at, one per batch. A per-batch schedule (one-cycle) is
    stepped through the epoch on a copy, driving a copy of the optimizer with copies of its settings, so that the
    run is left as it was; any other schedule keeps the rate for the epoch."""
    lr = t.optimizer.param_groups[0]["lr"]
    if not isinstance(t.scheduler, PER_BATCH_SCHEDULERS):
        return [lr]
    stand_in = copy.copy(t.optimizer)  # the same parameters and state, never stepped
    stand_in.param_groups = [dict(group) for group in t.optimizer.param_groups]  # what the copy's steps write
    schedule, lrs = copy.deepcopy(t.scheduler, {id(t.optimizer): stand_in}), [lr]
    with warnings.catch_warnings():  # on the order of optimizer and schedule steps: about the run, not this copy
        warnings.simplefilter("ignore")
        for _ in range(len(t.train_loader) - 1):
            schedule.step()
            lrs.append(stand_in.param_groups[0]["lr"])
    return lrs


def lr_range(lrs):
    """'0.008 to 0.196': the lowest and highest of the rates `lrs`, or one rate ('0.01') when they print alike."""
    low, high = f"{min(lrs):.3g}", f"{max(lrs):.3g}"
    return low if low == high else f"{low} to {high}"


def start_run(t):
    """Open the record of the trainer's run in runs/, named after what differs from the closest named recipe;
    returns its path, or None (with a warning) where the runs folder cannot be written."""
    name, base = min(RECIPES.items(), key=lambda item: sum(a != b for a, b in zip(asdict(item[1]).values(),
                                                                                  asdict(t.recipe).values())))
    meta = {"recipe": asdict(t.recipe), "recipe_name": name, "model": t.model_name, "seed": t.seed,
            "params": sum(p.numel() for p in t.model.parameters()), "device": device_name(t.device),
            "precision": str(t.precision), "data": asdict(t.data)}
    try:
        return runs.start_run(meta, asdict(base))
    except OSError as e:  # a record costs a warning, never the run
        folder = runs.get_runs_dir()
        problem = why_unwritable(folder, folder=True) or f"cannot be written ({e.strerror or e})"
        print(f"warning: this run is not kept: the runs folder {folder} {problem}; "
              "set RUNS_DIR to a folder that can be written to keep the next ones", file=sys.stderr)
        return None


def keep_run(t):
    """Rewrite the run's record with the history so far; a record that cannot be written costs a warning, not
    the run."""
    if t.run_file is None:  # the runs folder could not be written: start_run said so
        return
    try:
        runs.write_run(t.run_file, t.history, finished=len(t.history["test_acc"]) >= t.recipe.epochs)
    except (OSError, runs.RunFileError) as e:
        print(f"warning: the run's record was not updated ({e})", file=sys.stderr)


@contextmanager
def stopping_cleanly(t, checkpoint):
    """Ctrl-C ends training quietly, keeping the history and the checkpoint; a diverging loss, or a checkpoint
    that cannot be written, is re-raised with the history, saying what to do or what the checkpoint holds."""
    before = len(t.history["test_acc"])  # epochs done when this run started (or resumed)
    try:
        yield
    except KeyboardInterrupt:
        done = len(t.history["test_acc"])
        saved = f"; the checkpoint of epoch {done} is {checkpoint}" if checkpoint and done else ""
        print(f"Interrupted: kept the history of {done} finished epoch(s){saved}.")
    except TrainingDiverged as e:
        saved = f" The checkpoint of epoch {len(t.history['test_acc'])} is {checkpoint}." if checkpoint else ""
        error = TrainingDiverged(f"{e} in epoch {len(t.history['test_acc']) + 1}: lower the learning rate "
                                 f"(it was {t.optimizer.param_groups[0]['lr']:.3g}).{saved}")
        error.history = t.history
        raise error from None
    except CheckpointError as e:  # written atomically: a failed write leaves the last checkpoint as it was
        done = len(t.history["test_acc"])
        kept = (f"no checkpoint is left at {checkpoint}" if not Path(checkpoint).is_file()
                else f"{checkpoint} still holds epoch {done - 1}" if done - 1 > before
                else f"{checkpoint} is as it was when the run started")
        error = CheckpointError(f"{e}; {kept}")
        error.history = t.history
        raise error from None


# ----------------------------------------------------------------------------- results


@torch.no_grad()
def predictions(model, device, loader):
    """All of `loader` through the model: (images, targets, predicted labels), on the CPU."""
    model.eval()
    images, targets, preds = [], [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(dim=1).cpu())
        images.append(x.cpu())
        targets.append(y.cpu())
    return torch.cat(images), torch.cat(targets), torch.cat(preds)


def results_row(name, model, history, target=99.4, last=3):
    """One row of a progression table: parameters, best/final accuracies, and whether the last `last` epochs
    all reach `target`% on the test set."""
    return {
        "model": name, "params": sum(p.numel() for p in model.parameters()), "epochs": len(history["test_acc"]),
        "best_train": max(history["train_acc"]), "final_train": history["train_acc"][-1],
        "best_test": max(history["test_acc"]), "final_test": history["test_acc"][-1],
        f"last_{last}_at_target": all(acc >= target for acc in history["test_acc"][-last:]),
        "minutes": sum(history["seconds"]) / 60,
    }
