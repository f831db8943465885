"""Recipes: everything that defines a training run but the model, the data and the seed (`Recipe`), the named
ones (`RECIPES`), and a recipe as a notebook asks for it (`make_recipe`: changes, then the environment)."""

import inspect
import os
import re
from dataclasses import dataclass, fields, replace

from devices import PRECISIONS
from environment import env
from mnist import PIPELINES

SCHEDULES = ("step", "onecycle", "plateau", "none")
RECIPE_CHOICES = {"pipeline": tuple(PIPELINES), "precision": PRECISIONS, "schedule": SCHEDULES}  # fixed values


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run but the model, the data and the seed.

    Each field's comment is its help text on the command line (`python main.py train --help`).
    """

    pipeline: str = "fast"  # 'fast': tensors on the device, batched augmentation; 'classic': DataLoader + PIL
    precision: str = "auto"  # 'auto': bf16 where native, fp16 on older GPUs, else fp32; or float32/bfloat16/float16
    epochs: int = 20  # passes over the training set
    batch_size: int = 512  # images per step
    lr: float = 0.01  # SGD learning rate (the peak one for 'onecycle')
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 0.0  # L2 penalty
    schedule: str = "step"  # learning-rate schedule: step, onecycle, plateau or none
    step_size: int = 15  # 'step': epochs between drops; 'plateau': epochs without progress before one
    gamma: float = 0.1  # 'step'/'plateau': factor applied to the learning rate at each drop
    label_smoothing: float = 0.0  # share of the target spread over the other classes
    degrees: float = 15.0  # augmentation: rotation uniform in +-degrees
    zoom_p: float = 0.1  # augmentation: probability of the original S5 zoom (crop 22 -> 28)
    ema: float = 0.0  # decay of a moving average of the weights, evaluated and saved in their place (0: none)

    def __post_init__(self):
        for name, allowed in RECIPE_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        rules = {"> 0": ("epochs", "batch_size", "step_size", "lr", "gamma"),
                 ">= 0": ("momentum", "weight_decay", "degrees"), "in [0, 1]": ("zoom_p", "label_smoothing"),
                 "in [0, 1)": ("ema",)}
        holds = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "in [0, 1]": lambda v: 0 <= v <= 1,
                 "in [0, 1)": lambda v: 0 <= v < 1}
        for rule, names in rules.items():
            for name in names:
                if not holds[rule](getattr(self, name)):  # also false for nan
                    raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")


RECIPES = {
    "classic": Recipe(pipeline="classic", precision="float32"),  # the original S5 pipeline and recipe, exactly
    # >= 99.4% in 2 epochs on a CPU: one-cycle to a high peak rate, mild augmentation, label smoothing; the budget
    # and the peak rate chosen on a validation split (docs/experiments.md)
    "fast": Recipe(pipeline="fast", epochs=2, batch_size=128, lr=0.2, nesterov=True, schedule="onecycle",
                   label_smoothing=0.1, degrees=5.0, zoom_p=0.1),
    # S7Final, under 8,000 parameters: BatchNorm allows the high peak rate; mild rotations only; the weight
    # average steadies the last epochs. Peak rate, average and weight decay chosen on a validation split
    # (docs/experiments.md)
    "s7": Recipe(pipeline="fast", epochs=15, batch_size=128, lr=0.2, nesterov=True, weight_decay=1e-4,
                 schedule="onecycle", degrees=7.0, zoom_p=0.0, ema=0.999),
}


def recipe_help():
    """{field name: its comment in `Recipe`}: the one place each hyperparameter is explained."""
    found = re.findall(r"^\s+(\w+): [\w| ]+ = [^#\n]+#\s*(.+)$", inspect.getsource(Recipe), re.MULTILINE)
    return dict(found)


def make_recipe(name="fast", **changes):
    """RECIPES[name] with `changes`; then any field set in the environment under its upper-case name wins
    (`EPOCHS=1 make train`). Bad values raise ValueError saying which."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    base = RECIPES[name]
    unknown = set(changes) - {f.name for f in fields(Recipe)}
    if unknown:
        raise ValueError(f"unknown recipe field(s) {', '.join(sorted(unknown))}: use {', '.join(recipe_help())}")
    from_env = {f.name: env(f.name.upper(), getattr(base, f.name)) for f in fields(Recipe)
                if os.environ.get(f.name.upper())}
    return replace(base, **{**changes, **from_env})


def describe_recipe(recipe, base=None):
    """The recipe as lines of `name = value`, marking the values that differ from `base` (a Recipe)."""
    lines = []
    for f in fields(Recipe):
        value = getattr(recipe, f.name)
        was = getattr(base, f.name) if base is not None else value
        lines.append(f"  {f.name:<16}= {value!r}" + (f"   (recipe: {was!r})" if was != value else ""))
    return "\n".join(lines)
