import os

import pytest
import torch

from utils import env, get_device, why_unwritable


def test_env_casts_to_the_type_of_the_default(monkeypatch):
    monkeypatch.setenv("EPOCHS", "3")
    monkeypatch.setenv("LR", "0.05")
    monkeypatch.setenv("FLAG", "yes")
    monkeypatch.setenv("NAME", "somewhere")
    assert env("EPOCHS", 20) == 3 and env("LR", 0.01) == 0.05
    assert env("FLAG", False) is True and env("NAME", None) == "somewhere"
    assert env("UNSET_PARAMETER", 7) == 7


def test_env_rejects_a_value_of_the_wrong_type(monkeypatch):
    monkeypatch.setenv("EPOCHS", "three")
    with pytest.raises(ValueError, match="EPOCHS='three': expected a int"):
        env("EPOCHS", 20)


def test_device_pick():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device().type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")


def test_why_unwritable_finds_what_is_in_the_way_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "folder").mkdir()
    assert why_unwritable(tmp_path / "file") is None and why_unwritable(tmp_path / "folder", folder=True) is None
    assert why_unwritable(tmp_path / "new" / "deeper" / "x.pt") is None  # its folders can be created
    assert why_unwritable(tmp_path / "new", folder=True) is None and not (tmp_path / "new").exists()
    assert why_unwritable(tmp_path / "folder") == "is a folder, not a file"
    assert why_unwritable(tmp_path / "file", folder=True) == "is a file, not a folder"
    assert why_unwritable(tmp_path / "file" / "sub" / "x.pt") == f"cannot be created ({tmp_path / 'file'} is a file)"
    assert why_unwritable("relative.png") is None


def test_why_unwritable_asks_the_system_for_permission(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("mine")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without the right (root has them all)
    assert why_unwritable(tmp_path / "file") == "is not writable"
    assert why_unwritable(tmp_path / "new" / "x.pt") == f"cannot be created ({tmp_path} is not writable)"
