import re
from datetime import datetime

import matplotlib.pyplot as plt
import pytest

import runs
from runs import (
    RunFileError,
    legend_labels,
    list_runs,
    plot_runs,
    read_run,
    run_name,
    runs_table,
    start_run,
    write_run,
)

WHEN = datetime(2026, 12, 1, 14, 12, 30)
FAST = {"pipeline": "fast", "epochs": 3, "batch_size": 128, "lr": 0.15, "nesterov": True}


def meta(**changes):
    return {"recipe": {**FAST, **changes}, "recipe_name": "fast", "model": "Net", "params": 593200, "seed": 1,
            "device": "cpu", "precision": "bf16"}


def history(accs, seconds=30.0):
    """A history as `training.new_history()` has it, one entry per test accuracy in `accs`."""
    n = len(accs)
    return {"train_loss": [0.5] * n, "train_acc": [a - 1 for a in accs], "test_loss": [1 - a / 100 for a in accs],
            "test_acc": list(accs), "lr": [0.1] * n, "seconds": [seconds] * n}


def kept_run(folder, accs, when=WHEN, finished=True, **changes):
    path = start_run(meta(**changes), FAST, folder, when)
    write_run(path, history(accs), finished)
    return path


def test_name_is_the_time_and_what_differs_from_the_recipe():
    assert run_name({**FAST, "lr": 0.05}, FAST, WHEN, "fast") == "2026-12-01_1412_lr=0.05"
    assert run_name({**FAST, "lr": 0.05, "epochs": 2}, FAST, WHEN, "fast") == "2026-12-01_1412_epochs=2_lr=0.05"
    assert run_name(FAST, FAST, WHEN, "fast") == "2026-12-01_1412_fast"


def test_name_is_a_safe_file_name():
    name = run_name({**FAST, "pipeline": "../x y/z:*", "extra": "é" * 300}, FAST, WHEN)
    assert re.fullmatch(r"[A-Za-z0-9._=+-]+", name) and len(name) <= runs.MAX_NAME


def test_names_are_unique_in_the_folder(tmp_path):
    paths = [start_run(meta(), FAST, tmp_path, WHEN) for _ in range(3)]
    assert [p.name for p in paths] == ["2026-12-01_1412_fast.json", "2026-12-01_1412_fast-2.json",
                                       "2026-12-01_1412_fast-3.json"]
    assert [read_run(p)["name"] for p in paths] == [p.stem for p in paths]


def test_a_run_is_written_and_read_back(tmp_path):
    path = kept_run(tmp_path, [98.0, 99.5, 99.42], lr=0.05)
    run = read_run(path)
    assert run["recipe"] == {**FAST, "lr": 0.05} and run["recipe_name"] == "fast"
    assert (run["model"], run["params"], run["seed"], run["device"], run["precision"]) == ("Net", 593200, 1, "cpu",
                                                                                           "bf16")
    assert run["created"] == "2026-12-01T14:12:30" and run["torch"]
    assert run["history"] == history([98.0, 99.5, 99.42])
    assert (run["epochs"], run["final_test_acc"], run["best_test_acc"]) == (3, 99.42, 99.5)
    assert run["minutes"] == pytest.approx(1.5) and run["finished"] is True


def test_writes_are_atomic_and_a_crash_between_epochs_leaves_an_unfinished_run(tmp_path):
    path = start_run(meta(), FAST, tmp_path, WHEN)
    assert read_run(path)["history"] == {} and read_run(path)["finished"] is False  # seen from the start
    write_run(path, history([98.0]), finished=False)
    write_run(path, history([98.0, 99.0]), finished=False)  # ... and then the process dies
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    (run,) = list_runs(tmp_path)
    assert run["finished"] is False and run["epochs"] == 2


def test_a_failed_write_leaves_the_previous_version(tmp_path, monkeypatch):
    path = kept_run(tmp_path, [98.0], finished=False)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError):
        write_run(path, history([98.0, 99.0]), finished=True)
    assert read_run(path)["epochs"] == 1 and list(tmp_path.iterdir()) == [path]


def test_the_runs_dir_environment_variable_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "DEFAULT_RUNS_DIR", tmp_path / "default")  # even a failing test keeps out of runs/
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "elsewhere"))
    path = kept_run(None, [99.0])
    assert path.parent == tmp_path / "elsewhere"
    assert [run["name"] for run in list_runs()] == [path.stem]
    monkeypatch.delenv("RUNS_DIR")
    assert runs.get_runs_dir() == tmp_path / "default"


BROKEN = {
    "empty.json": ("", "is empty"),
    "half.json": ('{"format": "mnist-run/1", "name": "x", "hist', "is not valid JSON"),
    "foreign.json": ('{"compilerOptions": {}}', "is not a run file"),
    "list.json": ("[1, 2]", "is not a run file"),
    "damaged.json": ('{"format": "mnist-run/1", "name": "x", "created": "2026"}', "is a damaged run file"),
}


def test_list_runs_skips_a_bad_file_with_one_line_and_lists_the_others_newest_first(tmp_path, capsys):
    old = kept_run(tmp_path, [99.0], when=datetime(2026, 11, 30, 9, 0))
    new = kept_run(tmp_path, [99.5], lr=0.05)
    for name, (text, _) in BROKEN.items():
        (tmp_path / name).write_text(text)
    assert [run["name"] for run in list_runs(tmp_path)] == [new.stem, old.stem]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(BROKEN)
    for name, (_, problem) in BROKEN.items():
        assert sum(name in line and problem in line for line in lines) == 1


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_read_run_says_what_is_wrong_in_one_line(tmp_path, name):
    text, problem = BROKEN[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(RunFileError, match=problem) as error:
        read_run(tmp_path / name)
    assert isinstance(error.value, ValueError) and name in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(RunFileError, match="cannot be read"):
        read_run(tmp_path / "missing.json")


def test_legend_names_runs_by_the_settings_that_differ():
    a, b = {"name": "a", **meta(lr=0.05)}, {"name": "b", **meta(lr=0.15)}
    assert legend_labels([a, b]) == ["lr=0.05", "lr=0.15"]
    c = {"name": "c", **meta(lr=0.05, epochs=2)}
    assert legend_labels([a, b, c]) == ["epochs=3, lr=0.05", "epochs=3, lr=0.15", "epochs=2, lr=0.05"]
    assert legend_labels([a, {**a, "name": "a2"}]) == ["a", "a2"]  # nothing differs: the names
    assert legend_labels([a, {**a, "name": "a2"}, b]) == ["lr=0.05 (a)", "lr=0.05 (a2)", "lr=0.15"]


def test_a_setting_older_runs_lack_is_compared_among_the_runs_that_have_it():
    old = {"name": "old", **meta(lr=0.05)}
    old["recipe"] = {k: v for k, v in old["recipe"].items() if k != "ema"}  # written before `ema` existed
    new, averaged = {"name": "new", **meta(lr=0.15, ema=0.0)}, {"name": "avg", **meta(lr=0.15, ema=0.999)}
    assert legend_labels([old, new]) == ["lr=0.05", "lr=0.15"]  # not 'ema=0' for the new run
    assert legend_labels([old, new, averaged]) == ["lr=0.05", "lr=0.15, ema=0", "lr=0.15, ema=0.999"]


def acc_panel_lines(fig, label_start):
    return [line for line in fig.axes[0].lines if line.get_label().startswith(label_start)]


def test_plot_runs_from_paths_overlays_test_and_train_curves_with_a_target_line(tmp_path):
    paths = [kept_run(tmp_path, [98.0, 99.1, 99.45], lr=0.15), kept_run(tmp_path, [97.0, 98.8], lr=0.05)]
    fig = plot_runs(paths)
    acc_ax, loss_ax = fig.axes
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == ["lr=0.15", "lr=0.05", "target 99.4%",
                                                                       "training (dashed)"]
    (target,) = acc_panel_lines(fig, "target")
    assert list(target.get_ydata()) == [99.4, 99.4]
    test_15, train_15 = acc_ax.lines[:2]
    assert list(test_15.get_ydata()) == [98.0, 99.1, 99.45] and train_15.get_linestyle() == "--"
    assert train_15.get_color() == test_15.get_color() and train_15.get_linewidth() < test_15.get_linewidth()
    assert list(loss_ax.lines[2].get_ydata()) == pytest.approx([0.03, 1 - 0.988])
    assert not acc_panel_lines(plot_runs(paths, target=None), "target")
    plt.close("all")


def test_plot_runs_shows_each_runs_best_zooms_when_all_are_good_and_marks_unfinished_runs(tmp_path):
    good, bad = kept_run(tmp_path, [98.0, 99.5], lr=0.15), kept_run(tmp_path, [12.6], finished=False, lr=0.3)
    acc_ax = plot_runs([good, bad]).axes[0]
    assert acc_ax.get_ylim()[0] < 12.6 and acc_ax.get_ylim()[1] > 99.5
    assert "lr=0.3 (unfinished)" in [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert 97 < plot_runs([good]).axes[0].get_ylim()[0] < 98.0  # the top 2 points below the best
    plt.close("all")


def test_plot_runs_from_a_glob_skipping_a_bad_file(tmp_path, capsys):
    kept_run(tmp_path, [99.0], lr=0.05)
    kept_run(tmp_path, [99.2], lr=0.1)
    (tmp_path / "broken.json").write_text("{")
    fig = plot_runs(str(tmp_path / "*.json"), save=tmp_path / "plots" / "runs.png")
    assert len(acc_panel_lines(fig, "lr=")) == 2
    assert "broken.json" in capsys.readouterr().err
    assert (tmp_path / "plots" / "runs.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError):
        plot_runs(str(tmp_path / "nothing*.json"))
    plt.close("all")


def test_plot_runs_from_histories_in_memory():
    fig = plot_runs({"bs=128": history([98.0, 99.5]), "bs=512": history([97.0, 99.0])})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:2] == ["bs=128", "bs=512"]
    fig = plot_runs(history([98.0, 99.5]))  # one history
    assert list(fig.axes[0].lines[0].get_ydata()) == [98.0, 99.5]
    with pytest.raises(ValueError):
        plot_runs([])
    plt.close("all")


def test_table_lists_runs_newest_first_with_their_figures(tmp_path):
    kept_run(tmp_path, [98.0, 99.5, 99.42], when=datetime(2026, 11, 30, 9, 0))
    kept_run(tmp_path, [97.0], finished=False, lr=0.05)
    lines = runs_table(list_runs(tmp_path)).splitlines()
    assert lines[0].split() == ["run", "model", "epochs", "final", "test", "%", "best", "test", "%", "minutes",
                                "finished"]
    assert lines[1].split() == ["2026-12-01_1412_lr=0.05", "Net", "1", "97.00", "97.00", "0.5", "no"]
    assert lines[2].split() == ["2026-11-30_0900_fast", "Net", "3", "99.42", "99.50", "1.5", "yes"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
