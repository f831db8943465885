import ast
import json
import os
from pathlib import Path

import pytest
import torch

import utils
from devices import get_device
from environment import env
from files import why_unwritable

ROOT = Path(__file__).resolve().parents[1]


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


def names_the_notebooks_take_from_utils(notebook):
    """Every name a notebook's code cells import from utils (`from utils import ...`) or use as `utils.X`."""
    cells = json.loads((ROOT / notebook).read_text())["cells"]
    code = "\n".join("".join(line for line in cell["source"] if not line.startswith("%"))
                     for cell in cells if cell["cell_type"] == "code")
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module == "utils":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "utils":
            names.add(node.attr)
    return names


@pytest.mark.parametrize("notebook", ["S5.ipynb", "S7.ipynb"])
def test_utils_has_every_name_the_notebooks_take_from_it(notebook):
    names = names_the_notebooks_take_from_utils(notebook)
    assert "prepare" in names and "fit" in names  # the notebook was read
    assert [name for name in sorted(names) if not hasattr(utils, name)] == []


def imports_of(path):
    """The modules of this repo that the file at `path` imports, by name."""
    ours = {p.stem for p in ROOT.glob("*.py")} | {f"bench.{p.stem}" for p in ROOT.glob("bench/*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & ours


# Each module imports only modules of the layers above its own: nothing imports utils but the front doors, and no
# import goes in a circle.
LAYERS = [
    {"environment", "files", "devices", "model"},  # know no data
    {"mnist"},  # knows no model, no training
    {"digits", "recipes", "plots"},
    {"checkpoints", "runs", "search_space"},
    {"training"},
    {"lr_finder", "draw", "sweep"},
    {"utils", "bench.measure", "bench.levers"},  # utils: the notebooks' front desk
    {"main", "bench.report"},
    {"bench.run"},
]


def test_imports_run_one_way_down_the_layers():
    layer_of = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    files = {p.stem: p for p in ROOT.glob("*.py")} | {f"bench.{p.stem}": p for p in ROOT.glob("bench/*.py")}
    files.pop("bench.__init__")
    assert set(files) == set(layer_of)  # a new module gets a layer here
    upward = [(module, imported) for module, path in files.items() for imported in imports_of(path)
              if layer_of[imported] >= layer_of[module]]
    assert upward == []
