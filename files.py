"""What stands in the way of writing a file, in a few words: checked before any work (`main.py`), and said when
a write fails (a checkpoint, the runs folder)."""

import os
from pathlib import Path


def why_unwritable(path, folder=False):
    """Why `path` cannot be written as a folder (`folder`) or as a file, or None if it can. Nothing is created:
    a path not there yet needs a writable folder as its nearest existing parent. (As root, os.access says that
    all can be written; a file in the way stops root too.)"""
    path = Path(path)
    if path.exists():
        if path.is_dir() != folder:
            return "is a folder, not a file" if path.is_dir() else "is a file, not a folder"
        return None if os.access(path, os.W_OK) else "is not writable"
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir():
        return f"cannot be created ({parent} is a file)"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot be created ({parent} is not writable)"


def one_line(error):
    """What went wrong, in a few words: an OSError's reason ('No space left on device'), else the first line of the
    message (torch.save's RuntimeError for a failed write has several)."""
    return (getattr(error, "strerror", None) or str(error) or type(error).__name__).splitlines()[0]
