"""Every training run kept as one small JSON file, and runs compared in one table or one plot.

`start_run` creates the file when training starts; `write_run` rewrites it at each epoch end, atomically, so
that a run that crashed or was interrupted still shows up, marked unfinished. The files live in `get_runs_dir()`.
"""

import glob
import json
import os
import re
import sys
from collections import Counter
from datetime import datetime
from itertools import count
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from plots import finish

DEFAULT_RUNS_DIR = Path(__file__).resolve().parent / "runs"
FORMAT = "mnist-run/1"  # tells our files from other JSON, and which layout they have
REQUIRED = {"name": str, "created": str, "recipe": dict, "history": dict, "finished": bool}
MAX_NAME = 100  # characters: a name stays readable (and a file name) however many settings changed


class RunFileError(ValueError):
    """A file that is not a readable run: empty, half-written, or not written by this module."""


def get_runs_dir(runs_dir=None):
    """Where runs are kept: `runs_dir` if given, else the RUNS_DIR environment variable, else <repo>/runs."""
    return Path(runs_dir or os.environ.get("RUNS_DIR") or DEFAULT_RUNS_DIR)


def run_name(recipe, base, when, base_name=""):
    """A readable, file-safe name: the start time and the settings of `recipe` that differ from `base`, the recipe
    it came from (`2026-12-01_1412_epochs=2_lr=0.05`); the time and `base_name` when none do (`..._1412_fast`)."""
    changes = [f"{key}={fmt(value)}" for key, value in recipe.items() if key not in base or base[key] != value]
    name = "_".join(part for part in [when.strftime("%Y-%m-%d_%H%M"), *(changes or [base_name])] if part)
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", name)[:MAX_NAME]


def fmt(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- writing


def start_run(meta, base, runs_dir=None, when=None):
    """Create the file of a run that starts now, with no epoch yet; returns its path, for `write_run`.

    `meta`: recipe (a dict), recipe_name, model, params, seed, device, precision; `base`: the named recipe (a dict)
    that `meta["recipe"]` came from, for the name. The name gets -2, -3, ... if a run of that name exists.
    """
    when = when or datetime.now()
    folder = get_runs_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = run_name(meta["recipe"], base, when, meta.get("recipe_name", ""))
    for n in count(1):
        path = folder / (f"{name}.json" if n == 1 else f"{name}-{n}.json")
        try:
            path.open("x").close()  # claims the name, even against a run started at the same moment
            break
        except FileExistsError:
            continue
    record = {"format": FORMAT, "name": path.stem, "created": when.isoformat(timespec="seconds"), **meta,
              "torch": torch.__version__, **summary({}), "finished": False, "history": {}}
    write_json(path, record)
    return path


def write_run(path, history, finished):
    """Put `history` (per-epoch lists, as `training.new_history()`) and its final figures into the run at `path`.

    Call it at each epoch end, with `finished=True` after the last epoch.
    """
    record = read_run(path)
    record.update(summary(history), finished=finished, history=history)
    write_json(path, record)


def mark_run(path, **marks):
    """Add `marks` to the run at `path` (a sweep's trial names its run, a pruned run says so)."""
    record = read_run(path)
    record.update(marks)
    write_json(path, record)


def summary(history):
    """The figures a table shows: epochs, final and best test accuracy (None before the first epoch), minutes."""
    acc = history.get("test_acc", [])
    return {"epochs": len(acc), "final_test_acc": acc[-1] if acc else None, "best_test_acc": max(acc, default=None),
            "minutes": sum(history.get("seconds", [])) / 60}


def write_json(path, record):
    """Write all, then rename over the old file: a reader (or a crash) sees the old version or the new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # a dot file in the same folder: not listed, and renamed in place
    try:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading


def read_run(path):
    """The run kept at `path` (a dict), or RunFileError with a one-line message saying what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not text.strip():
        raise RunFileError(f"{path}: is empty (the run was killed as it started?)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunFileError(f"{path}: is not valid JSON, half-written? ({e.msg} at line {e.lineno})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RunFileError(f'{path}: is not a run file (no "format": "{FORMAT}")')
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind):
            raise RunFileError(f"{path}: is a damaged run file ({key!r} is missing or not a {kind.__name__})")
    return record


def list_runs(runs_dir=None):
    """The runs kept in `runs_dir` (default `get_runs_dir()`), newest first.

    A file that is not a readable run is skipped with one line on stderr naming it and what is wrong, so that
    one bad file neither hides the others nor stops the listing.
    """
    return read_runs(sorted(get_runs_dir(runs_dir).glob("*.json")))


def read_runs(paths):
    runs = []
    for path in paths:
        try:
            runs.append(read_run(path))
        except RunFileError as e:
            print(f"skipped {e}", file=sys.stderr)
    return sorted(runs, key=newest, reverse=True)


def newest(run):
    return run.get("created", ""), run["name"]


def as_runs(runs):
    """Runs from what is at hand: a glob pattern (or one path), or a list of run dicts and paths, or plain
    histories: one, a list of them, or a dict name -> history."""
    if isinstance(runs, (str, Path)):
        paths = sorted(glob.glob(str(runs)))
        if not paths:
            raise FileNotFoundError(f"no run files match {runs}")
        return read_runs(paths)
    if isinstance(runs, dict):
        is_one = "history" in runs or all(isinstance(values, list) for values in runs.values())
        runs = [runs] if is_one else [as_run(run, name) for name, run in runs.items()]
    return [as_run(run, f"run {i}") for i, run in enumerate(runs, start=1)]


def as_run(run, name):
    if isinstance(run, (str, Path)):
        return read_run(run)
    return run if "history" in run else {"name": name, "history": run}


# ----------------------------------------------------------------------------- comparing


def runs_table(runs):
    """A text table of runs, newest first: name, model, epochs, final and best test accuracy, minutes, finished
    (or pruned, for a sweep's trial stopped early)."""
    header = ("run", "model", "epochs", "final test %", "best test %", "minutes", "finished")
    rows = [header]
    for run in sorted(as_runs(runs), key=newest, reverse=True):
        s = summary(run["history"])
        rows.append((run["name"], str(run.get("model", "")), str(s["epochs"]), pct(s["final_test_acc"]),
                     pct(s["best_test_acc"]), f"{s['minutes']:.1f}", run_state(run)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]  # text to the left, numbers to the right
    return "\n".join(line.rstrip() for line in lines)


def run_state(run):
    return "yes" if run.get("finished") else "pruned" if run.get("pruned") else "no"


def pct(acc):
    return "-" if acc is None else f"{acc:.2f}"


def legend_labels(runs):
    """One label per run: the recipe settings (and model, seed) whose values differ between `runs`, as 'lr=0.05';
    a run's name when none differ (or it has none). A label two runs share gets their names added. A setting
    that older runs lack (added to the recipe since) is compared among the runs that have it."""
    settings = [{**run.get("recipe", {}), "model": run.get("model"), "seed": run.get("seed")} for run in runs]
    keys = [key for key in dict.fromkeys(key for s in settings for key in s)
            if len({json.dumps(s[key], sort_keys=True) for s in settings if key in s}) > 1]
    labels = [", ".join(f"{key}={fmt(s[key])}" for key in keys if s.get(key) is not None) or run["name"]
              for s, run in zip(settings, runs)]
    shared = Counter(labels)
    return [f"{label} ({run['name']})" if shared[label] > 1 else label for label, run in zip(labels, runs)]


def plot_runs(runs, target=99.4, save=None):
    """Test accuracy and test loss per epoch of several runs, overlaid (training curves dashed, same colour).

    `runs`: anything `as_runs` takes. The accuracy panel has a line at `target`% (None: no line), so that which
    run got there, and when, shows; it is zoomed on the top 2 points if all runs got there.
    """
    runs = as_runs(runs)
    if not runs:
        raise ValueError("no runs to plot")
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (run, label) in enumerate(zip(runs, legend_labels(runs))):
        history, color = run["history"], f"C{i % 10}"
        label += (" (pruned)" if run.get("pruned") else  # a sweep's trial, stopped early
                  " (unfinished)" if run.get("finished") is False else "")  # crashed, interrupted, or still running
        for ax, kind in ((acc_ax, "acc"), (loss_ax, "loss")):
            test, train = history.get(f"test_{kind}", []), history.get(f"train_{kind}", [])
            ax.plot(range(1, len(test) + 1), test, color=color, marker="o", markersize=4, label=label)
            ax.plot(range(1, len(train) + 1), train, color=color, linewidth=1, linestyle="--", alpha=0.7)
    if target is not None:
        acc_ax.axhline(target, color="black", linewidth=1, linestyle=":", label=f"target {target:g}%")
    bests = [max(run["history"]["test_acc"]) for run in runs if run["history"].get("test_acc")]
    if bests:  # zoomed on the top 2 points, where good runs differ, yet low enough to show each run's best
        trains = [acc for run in runs for acc in run["history"].get("train_acc", [])]
        low = min(min(bests), max(bests) - 2)
        high = min(100, max(bests + trains + ([target] if target is not None else [])))
        acc_ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    acc_ax.plot([], [], color="grey", linewidth=1, linestyle="--", label="training (dashed)")
    for ax, title in ((acc_ax, "Test accuracy (%)"), (loss_ax, "Test loss")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    acc_ax.legend(loc="best")
    fig.tight_layout()
    return finish(fig, save)

