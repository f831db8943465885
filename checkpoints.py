"""Checkpoints: all that a run needs to go on exactly where it stopped (weights, weight average, optimizer,
schedule, grad scaler, history, random generators, recipe and data), written atomically; and the weights alone,
for predictions. Errors say which checkpoint does not fit, or what the file on disk still holds."""

from contextlib import suppress
from dataclasses import fields
from pathlib import Path

import torch

from devices import capture_rng, restore_rng
from files import one_line, why_unwritable
from mnist import Data
from recipes import Recipe


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (unreadable, or for another model) or written (a full disk)."""


def temporary_path(path):
    """Where `save_checkpoint` writes first, then renames to `path`: a crash mid-write leaves the old checkpoint."""
    return Path(path).with_suffix(".tmp")


def save_checkpoint(path, t):
    """Write all that the trainer `t` needs to go on exactly where it stopped (atomically: a crash, or a write
    that fails with CheckpointError, leaves the old file), and what it was: model, seed, recipe, data."""
    state = {
        "model_name": type(t.model).__name__,
        "model": t.model.state_dict(),
        "ema": t.ema.state_dict() if t.ema is not None else None,  # the weight average, evaluated in its place
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
        "scaler": t.scaler.state_dict(),
        "epoch": len(t.history["test_acc"]),
        "history": t.history,
        "rng": capture_rng(t.train_loader.generator),
        "config": t.config,
    }
    path, tmp = Path(path), temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (a full disk) as a RuntimeError
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = why_unwritable(path) or (one_line(e) if isinstance(e, OSError) else f"is the disk full? {one_line(e)}")
        raise CheckpointError(f"could not write the checkpoint of epoch {state['epoch']} to {path}: {reason}") from None


def read_checkpoint(path):
    """The checkpoint dict at `path` (tensors on the CPU), or CheckpointError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a damaged file; all mean the same here
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo (no model state in it)")
    return state


def load_weights(path, model, state=None):
    """Put the evaluated weights of the checkpoint at `path` (the weight average if the run kept one) into
    `model`, for predictions; returns the checkpoint dict."""
    state = state or read_checkpoint(path)
    averaged = {name.removeprefix("module."): value for name, value in (state.get("ema") or {}).items()
                if name.startswith("module.")}  # AveragedModel's state: the model's under module., and n_averaged
    put_weights(path, model, averaged or state["model"], state["model_name"])
    return state


def put_weights(path, model, weights, model_name):
    """model.load_state_dict(weights), with a CheckpointError saying which checkpoint does not fit."""
    if model_name != type(model).__name__:
        raise CheckpointError(f"{path} holds a {model_name} model, not a {type(model).__name__}: "
                              "choose the model it was trained with, or another checkpoint")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {str(e).splitlines()[0]}") from None


def load_checkpoint(path, t):
    """Restore a `save_checkpoint` file into the trainer `t` (built with the checkpoint's settings), so that
    `fit(t)` goes on where it stopped; returns the history. The RNG states come back too: on CPU a resumed
    run ends exactly as an uninterrupted one."""
    state = read_checkpoint(path)
    put_weights(path, t.model, state["model"], state["model_name"])
    if t.ema is not None:
        t.ema.load_state_dict(state["ema"])
    saved_steps = (state["scheduler"] or {}).get("total_steps")
    if saved_steps is not None and saved_steps != getattr(t.scheduler, "total_steps", saved_steps):
        planned = state["config"]["recipe"]["epochs"]
        raise CheckpointError(f"{path} was trained with a one-cycle schedule planned for {planned} epochs "
                              f"({saved_steps} batches), which cannot be stretched to {t.recipe.epochs} epochs "
                              f"({t.scheduler.total_steps} batches): resume it with its {planned} epochs, or start a "
                              "new run (a 'step', 'plateau' or 'none' schedule can be extended)")
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None and state["scheduler"] is not None:
        t.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        t.scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"], t.train_loader.generator)
    t.history = state["history"]
    run_file = state["config"].get("run_file")
    t.run_file = Path(run_file) if run_file and Path(run_file).is_file() else None  # go on in the same record
    return t.history


def saved_settings(path):
    """(model name, seed, Recipe, Data) that the checkpoint at `path` was trained with."""
    config = read_checkpoint(path)["config"]
    if "recipe" not in config:
        raise CheckpointError(f"{path} was written before checkpoints kept their recipe: it can be used for "
                              "predictions, not resumed; start a new run")
    data = {k: v for k, v in config.get("data", {}).items() if k in {f.name for f in fields(Data)}}
    return config.get("model", "net"), config.get("seed", 1), Recipe(**config["recipe"]), Data(**data)
