import pytest
import torch

from utils import env, get_device


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
