"""What the environment says about a run: a notebook parameter's value (`env`), and whether a person watches
(`headless`). The lowest layer: the recipes read their fields from it, training its way of showing progress."""

import os


def env(name, default):
    """`default`, unless the environment variable `name` is set: then its value, cast to
    the type of `default` (so `EPOCHS=1 make train` works for any notebook parameter)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={value!r}: expected true/false")
    if default is None:
        return value
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a {type(default).__name__}") from None


def headless():
    """True when a notebook runs without a person watching (`make train`, nbmake: HEADLESS=1): plain-text
    progress instead of widgets, so that no widget state lands in the committed notebook."""
    return env("HEADLESS", False)
