"""A sweep's search space: recipe fields and their ranges, as Optuna is asked for them.

    {"lr": ("log", 0.02, 0.5), "batch_size": [64, 128, 256], "label_smoothing": (0.0, 0.2)}

a range on a log scale, a range, a list of choices; on the command line and in a space file the same as text:
"log:0.02:0.5", "0:0.2", "64,128,256". Each entry is stored in one plain form ({"low", "high", "log"} or
{"choices"}), which is also what a study keeps and gives back."""

import json
from dataclasses import fields
from pathlib import Path

from recipes import Recipe

DEFAULT_SPACE = {"lr": ("log", 0.02, 0.5), "batch_size": [64, 128, 256], "label_smoothing": (0.0, 0.2)}
FIELD_TYPES = {f.name: f.type for f in fields(Recipe)}


class SweepError(ValueError):
    """A sweep that cannot run as asked: the message says what to give instead."""


def parse_range(name, spec):
    """One entry of a space as stored: {"low", "high", "log"} (a range) or {"choices": [...]}. Takes a tuple
    ("log", low, high) or (low, high), a list of choices, their text form ("log:0.02:0.5", "0:0.2", "64,128,256",
    as on the command line) or the stored form itself."""
    kind = FIELD_TYPES.get(name)
    if kind is None:
        raise SweepError(f"unknown recipe field {name!r} in the space: use one of {', '.join(FIELD_TYPES)}")
    if isinstance(spec, str):
        spec = [part for part in spec.split(",")] if "," in spec or ":" not in spec else tuple(spec.split(":"))
    if isinstance(spec, dict):
        spec = spec["choices"] if "choices" in spec else ("log", spec["low"], spec["high"]) if spec.get("log") \
            else (spec["low"], spec["high"])
    try:
        if isinstance(spec, list):
            if not spec:
                raise SweepError(f"{name}: no choices: give one or more")
            return {"choices": [cast(kind, value) for value in spec]}
        if isinstance(spec, tuple) and kind in (int, float) and len(spec) in (2, 3):
            log = len(spec) == 3
            if log and spec[0] != "log":
                raise SweepError(f"{name}: a range is (low, high) or ('log', low, high), got {spec}")
            low, high = (cast(kind, value) for value in spec[-2:])
            if not low < high:
                raise SweepError(f"{name}: the range {low}..{high} is empty: give low < high")
            if log and low <= 0:
                raise SweepError(f"{name}: a log range starts above 0, got {low}")
            return {"low": low, "high": high, "log": log}
    except ValueError as e:
        raise SweepError(str(e)) from None
    wanted = "a list of choices" if kind not in (int, float) else "('log', low, high), (low, high) or a list"
    raise SweepError(f"{name}: give {wanted}, got {spec!r}")


def cast(kind, value):
    """`value` (or its text) as the field's type; a bool from true/false, an int only if it is whole."""
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise SweepError(f"expected true or false, got {value!r}")
        return value.lower() == "true"
    if kind is int and float(value) != int(float(value)):
        raise SweepError(f"expected a whole number, got {value!r}")
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        raise SweepError(f"expected a {kind.__name__}, got {value!r}") from None


def suggest(trial, space):
    """The recipe fields the trial tries: Optuna's suggestion for each entry of the space."""
    values = {}
    for name, r in space.items():
        if "choices" in r:
            values[name] = trial.suggest_categorical(name, r["choices"])
        elif FIELD_TYPES[name] is int:
            values[name] = trial.suggest_int(name, r["low"], r["high"], log=r["log"])
        else:
            values[name] = trial.suggest_float(name, r["low"], r["high"], log=r["log"])
    return values


def in_space(values, space):
    return all(values[name] in r["choices"] if "choices" in r else r["low"] <= values[name] <= r["high"]
               for name, r in space.items())


def as_text(spec):
    """A space entry as the command line writes it: log:0.02:0.5, 0:0.2 or 64,128,256."""
    return ",".join(map(str, spec)) if isinstance(spec, list) else ":".join(map(str, spec))


def space_from_flags(items):
    """The space of --space FIELD=RANGE flags (--space lr=log:0.02:0.5 --space batch_size=64,128)."""
    space = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not text:
            raise SweepError(f"--space {item}: give FIELD=RANGE, e.g. lr=log:0.02:0.5 or batch_size=64,128")
        space[name.strip().replace("-", "_")] = text.strip()
    return space


def read_space_file(path):
    """The space of a JSON file: {"lr": "log:0.02:0.5", "batch_size": [64, 128, 256]}."""
    try:
        space = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"--space-file {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise SweepError(f"--space-file {path}: not JSON ({e})") from None
    if not isinstance(space, dict):
        raise SweepError(f"--space-file {path}: give a JSON object of recipe fields and their ranges")
    return space
