"""main.py end to end on tiny synthetic MNIST: training, outputs, resume, predict, and every bad input."""

import json
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, PngImagePlugin

import checkpoints
import main
import mnist
import recipes
import runs
import training
from digits import load_digit


@pytest.fixture
def run(capsys):
    """Call main.main(args); returns (exit code, stdout, stderr)."""

    def call(*args):
        try:
            code = main.main([str(a) for a in args])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture(autouse=True)
def on_the_cpu(monkeypatch):
    """main.py's tests run on the CPU, whatever the machine has ('auto' picks it): exact resume is promised there.
    tests/test_device.py runs main.py on each device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def train_args(mnist_dir, data_root, tmp_path):
    """Flags for a quick run on the synthetic files (96 training images, 3 batches), outputs in tmp_path."""
    return ["train", "--data-dir", mnist_dir, "--data-root", data_root, "--out", tmp_path / "out",
            "--checkpoint", tmp_path / "ck.pt", "--batch-size", 32, "--test-batch-size", 16]


def one_error_line(err):
    """The one `error:` line, last on stderr (progress bars may come before it), with no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def test_train_writes_plots_history_checkpoint_and_a_final_line(run, train_args, tmp_path):
    code, out, err = run(*train_args, "--epochs", 2, "--save-model")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("Final test accuracy")
    for name in ("history.json", "stats.png", "missed.png", "correct.png", "confusion.png", "net_weights.pt"):
        assert (tmp_path / "out" / name).exists(), name
    assert len(json.loads((tmp_path / "out" / "history.json").read_text())["test_acc"]) == 2
    state = checkpoints.read_checkpoint(tmp_path / "ck.pt")
    assert state["epoch"] == 2 and state["config"]["model"] == "net" and state["config"]["recipe"]["epochs"] == 2


def test_train_is_the_default_command(run, train_args):
    code, out, _ = run(*train_args[1:], "--epochs", 1, "--model", "final", "--log-interval", 1)
    assert code == 0 and "[32/96]" in out  # --log-interval: plain progress lines


def test_dry_run(run, train_args):
    code, out, _ = run(*train_args, "--dry-run")
    assert code == 0 and "after 1 epochs" in out


def test_help_lists_the_flags(run):
    code, out, _ = run("train", "--help")
    assert code == 0
    for flag in ("--batch-size", "--test-batch-size", "--epochs", "--lr", "--gamma", "--seed", "--no-accel",
                 "--dry-run", "--log-interval", "--save-model", "--model", "--data-dir", "--device", "--out",
                 "--resume", "--recipe", "--schedule", "--label-smoothing", "--precision", "--zoom-p", "--no-nesterov"):
        assert flag in out, flag
    assert "SGD learning rate (the peak one for 'onecycle')" in out  # help text from the Recipe's comments
    flat = " ".join(out.split())  # argparse wraps the help
    assert "(the peak one for 'onecycle') (fast: 0.2, classic: 0.01, s7: 0.2)" in flat  # each recipe's value
    assert "Nesterov momentum (fast: True, classic: False, s7: True)" in flat


def test_train_and_lr_find_write_into_outputs_not_images(run, train_args, tmp_path, runs_dir, monkeypatch):
    """By default each run's figures and history go to outputs/ in a folder named as its record in runs/, and the
    range test's plot to outputs/: the committed figures of images/ are the notebooks'."""
    monkeypatch.setattr(main, "OUTPUTS_DIR", tmp_path / "outputs")
    args = [a for a in train_args if a not in ("--out", tmp_path / "out")]
    assert run(*args, "--epochs", 1)[0] == 0
    (record,) = runs_dir.glob("*.json")
    assert (tmp_path / "outputs" / record.stem / "history.json").exists()
    assert run("lr-find", *args[1:5], "--num", 5)[0] == 0
    assert (tmp_path / "outputs" / "lr_find.png").exists() and not (tmp_path / "out").exists()


def during_epoch(monkeypatch, epoch, action):
    """Call `action()` during the given epoch (as it is being tested)."""
    real_test, calls = training.test, []

    def test(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            action()
        return real_test(*args, **kwargs)

    monkeypatch.setattr(training, "test", test)


def interrupt_in_epoch(monkeypatch, epoch):
    """Make Ctrl-C arrive during the given epoch (as it is being tested)."""

    def interrupt():
        raise KeyboardInterrupt

    during_epoch(monkeypatch, epoch, interrupt)


@pytest.mark.parametrize("pipeline", ["fast", "classic"])
def test_interrupted_and_resumed_run_ends_exactly_as_an_uninterrupted_one(run, train_args, tmp_path, monkeypatch,
                                                                          pipeline):
    common = [*train_args[:-6], "--batch-size", 32, "--test-batch-size", 16, "--epochs", 3, "--pipeline", pipeline,
              "--schedule", "onecycle", "--out", tmp_path / "out"]
    assert run(*common, "--checkpoint", tmp_path / "whole.pt")[0] == 0

    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, 2)
        code, out, err = run(*common, "--checkpoint", tmp_path / "part.pt")
    assert code == 130 and "kept the history of 1 finished epoch" in out and "--resume" in err
    assert json.loads((tmp_path / "out" / "history.json").read_text())["test_acc"]  # nothing lost
    code, out, _ = run("train", "--resume", tmp_path / "part.pt", "--data-root", train_args[4],
                       "--data-dir", train_args[2], "--out", tmp_path / "out", "--test-batch-size", 16)
    assert code == 0 and "after epoch 1" in out

    whole, part = checkpoints.read_checkpoint(tmp_path / "whole.pt"), checkpoints.read_checkpoint(tmp_path / "part.pt")
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert whole["history"][key] == part["history"][key], key
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, part["model"][name]), name


def test_a_notebook_checkpoint_resumes_under_its_own_recipe(run, mnist_dir, data_root, tmp_path):
    """What S5.ipynb saves (prepare + fit) goes on with `main.py train --resume` under the recipe it was trained
    with, whichever recipe that was."""
    for name in ("classic", "fast"):
        recipe = replace(recipes.RECIPES[name], epochs=2, batch_size=32)
        t = training.prepare("net", recipe, mnist.Data(mnist_dir, data_root), torch.device("cpu"))
        with pytest.MonkeyPatch.context() as patch:
            interrupt_in_epoch(patch, 2)
            training.fit(t, checkpoint=tmp_path / f"{name}.pt")
        code, out, err = run("train", "--resume", tmp_path / f"{name}.pt", "--data-dir", mnist_dir, "--data-root",
                             data_root, "--out", tmp_path / "out")
        assert code == 0, err
        assert f"pipeline='{recipe.pipeline}'" in out and f"lr={recipe.lr}" in out
        state = checkpoints.read_checkpoint(tmp_path / f"{name}.pt")
        assert state["epoch"] == 2 and state["config"]["recipe"] == {**asdict(recipe), "epochs": 2}


# ----------------------------------------------------------------------------- bad input


def test_resuming_a_one_cycle_run_with_more_epochs(run, train_args, tmp_path):
    assert run(*train_args, "--epochs", 2)[0] == 0
    code, _, err = run(*train_args, "--resume", tmp_path / "ck.pt", "--epochs", 3)
    line = one_error_line(err)
    assert code == 1 and "one-cycle schedule planned for 2 epochs" in line and "resume it with its 2 epochs" in line


def test_no_internet_and_no_data(run, data_root, offline, tmp_path):
    code, _, err = run("train", "--data-root", data_root, "--out", tmp_path / "out")
    assert code == 1 and "MNIST_DIR" in one_error_line(err)


def test_truncated_idx_file(run, train_args, mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:3000])
    code, _, err = run(*train_args)
    assert code == 1 and "train-images-idx3-ubyte is not a valid MNIST idx file" in one_error_line(err)


def test_wrong_magic_idx_file(run, train_args, mnist_dir):
    path = mnist_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x09\x09" + path.read_bytes()[4:])
    code, _, err = run(*train_args)
    assert code == 1 and "t10k-labels-idx1-ubyte is not a valid" in one_error_line(err)


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", 0, "epochs must be > 0"), ("--lr", -0.1, "lr must be > 0"), ("--lr", "nan", "lr must be > 0"),
    ("--batch-size", 0, "batch_size must be > 0"), ("--zoom-p", 2, r"zoom_p must be in \[0, 1\]"),
])
def test_out_of_range_hyperparameters(run, train_args, flag, value, message):
    code, _, err = run(*train_args, flag, value)
    assert code == 1 and re.search(message, one_error_line(err))


@pytest.mark.parametrize("flag, value", [("--epochs", "two"), ("--lr", "fast"), ("--train-size", 0)])
def test_numbers_that_do_not_parse(run, train_args, flag, value):
    code, _, err = run(*train_args, flag, value)
    assert code == 2 and flag in err.strip().splitlines()[-1] and "Traceback" not in err


def test_unknown_model(run, train_args):
    code, _, err = run(*train_args, "--model", "resnet")
    assert code == 2 and "invalid choice: 'resnet'" in err


def test_unknown_device(run, train_args):
    code, _, err = run(*train_args, "--device", "tpu")
    assert code == 1 and "unknown device 'tpu'" in one_error_line(err)


@pytest.mark.parametrize("device, message", [("cuda", "CUDA is not available here"),
                                             ("mps", "MPS is only on Apple-silicon Macs")])
def test_a_device_that_is_not_there(run, train_args, device, message):
    code, _, err = run(*train_args, "--device", device)
    assert code == 1 and message in one_error_line(err)


def test_diverging_loss_stops_and_keeps_history_and_checkpoint(run, train_args, tmp_path, monkeypatch):
    real_get_loss = training.get_loss

    def nan_after_four_batches(label_smoothing=0.0):
        criterion, calls = real_get_loss(label_smoothing), []

        def loss(output, target):
            calls.append(1)
            return criterion(output, target) * (float("nan") if len(calls) > 4 else 1.0)

        return loss

    monkeypatch.setattr(training, "get_loss", nan_after_four_batches)
    code, _, err = run(*train_args, "--epochs", 3)
    line = one_error_line(err)
    assert code == 1 and "became nan" in line and "lower the learning rate" in line and "epoch 1" in line
    assert len(json.loads((tmp_path / "out" / "history.json").read_text())["test_acc"]) == 1
    assert checkpoints.read_checkpoint(tmp_path / "ck.pt")["epoch"] == 1


def printed_history(out):
    """The history that main.py printed on stdout, one line of JSON, where it could not write it to --out."""
    (line,) = [line for line in out.splitlines() if line.startswith('{"train_loss"')]
    return json.loads(line)


def test_a_full_disk_stops_the_run_with_the_last_checkpoint_and_the_history(run, train_args, tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def full_at_epoch_2(obj, path, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            Path(path).write_bytes(b"the first bytes of a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # /dev/full's
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_epoch_2)
    code, out, err = run(*train_args, "--epochs", 3)
    line = one_error_line(err)
    assert code == 1 and "could not write the checkpoint of epoch 2" in line and "still holds epoch 1" in line
    assert f"the history is in {tmp_path / 'out' / 'history.json'}" in line and "Epoch 3/3" not in out
    assert len(json.loads((tmp_path / "out" / "history.json").read_text())["test_acc"]) == 2
    assert checkpoints.read_checkpoint(tmp_path / "ck.pt")["epoch"] == 1 and not (tmp_path / "ck.tmp").exists()


def test_folders_replaced_by_files_during_a_run_the_history_is_printed(run, train_args, tmp_path, monkeypatch):
    def block(*names):
        for name in names:
            shutil.rmtree(tmp_path / name)
            (tmp_path / name).write_text("in the way")

    for name in ("checkpoints", "out"):
        (tmp_path / name).mkdir()
    checkpoint = tmp_path / "checkpoints" / "ck.pt"
    with monkeypatch.context() as patch:  # the checkpoint and the history cannot be written: stopped, history printed
        during_epoch(patch, 2, lambda: block("checkpoints", "out"))
        code, out, err = run(*train_args, "--checkpoint", checkpoint, "--epochs", 3)
    line = one_error_line(err)
    assert code == 1 and "could not write the checkpoint of epoch 2" in line and "no checkpoint is left" in line
    assert "the history is printed above" in line and len(printed_history(out)["test_acc"]) == 2

    (tmp_path / "out").unlink()
    (tmp_path / "out").mkdir()
    with monkeypatch.context() as patch:  # trained to the end, but the plots cannot be written: the history printed
        during_epoch(patch, 2, lambda: block("out"))
        code, out, err = run(*train_args, "--epochs", 2)
    line = one_error_line(err)
    assert code == 1 and f"could not write to {tmp_path / 'out'}" in line and "the history is printed above" in line
    assert f"the checkpoint of epoch 2 is {tmp_path / 'ck.pt'}" in line and len(printed_history(out)["test_acc"]) == 2
    assert checkpoints.read_checkpoint(tmp_path / "ck.pt")["epoch"] == 2


def test_checkpoint_of_another_model(run, train_args, tmp_path):
    assert run(*train_args, "--epochs", 1)[0] == 0
    code, _, err = run(*train_args, "--resume", tmp_path / "ck.pt", "--model", "final")
    assert code == 1 and "holds a Net model, not a S7Final" in one_error_line(err)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "half"])
def test_corrupt_checkpoint(run, train_args, tmp_path, content):
    assert run(*train_args, "--epochs", 1)[0] == 0
    path = tmp_path / "ck.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "half" else content)
    code, _, err = run(*train_args, "--resume", path)
    assert code == 1 and "is not a readable checkpoint" in one_error_line(err)
    code, _, err = run("predict", tmp_path / "x.png", "--checkpoint", path)
    assert code == 1


@pytest.mark.parametrize("case, flag, problem", [
    ("checkpoint is a folder", "--checkpoint", "is a folder, not a file"),
    ("checkpoint under a file", "--checkpoint", "cannot be created"),
    ("checkpoint.tmp a folder", "--checkpoint", "its temporary file"),
    ("out is a file", "--out", "is a file, not a folder"), ("out under a file", "--out", "cannot be created"),
    ("weights file a folder", "--out", "is a folder, not a file"),
    ("data root a file", "--data-root", "is a file, not a folder"),
    ("lr-find out", "--out", "is a file, not a folder"), ("predict out", "--out", "is a file, not a folder"),
    ("runs out", "--out", "is a folder, not a file"),
])
def test_an_output_path_that_cannot_be_written_stops_before_any_work(run, train_args, tmp_path, request, case, flag,
                                                                     problem):
    notes, folder = tmp_path / "notes", tmp_path / "folder"
    notes.write_text("mine")
    (folder / "net_weights.pt").mkdir(parents=True)
    args = {"checkpoint is a folder": [*train_args, "--checkpoint", folder],
            "checkpoint under a file": [*train_args, "--checkpoint", notes / "ck.pt"],
            "checkpoint.tmp a folder": train_args,  # tmp_path / "ck.pt" is written as ck.tmp, then renamed
            "out is a file": [*train_args, "--out", notes],
            "out under a file": [*train_args, "--out", notes / "plots"],
            "weights file a folder": [*train_args, "--out", folder, "--save-model"],
            "data root a file": [*train_args, "--data-root", notes],
            "lr-find out": ["lr-find", *train_args[1:5], "--num", 5, "--out", notes],
            "predict out": ["predict", "digit.png", "--checkpoint", tmp_path / "ck.pt", "--show", "--out", notes],
            "runs out": ["runs", "--plot", "run.json", "--out", folder]}[case]
    if case == "checkpoint.tmp a folder":
        (tmp_path / "ck.tmp").mkdir()
    if case == "predict out":
        request.getfixturevalue("checkpoint")
        draw_seven(tmp_path / "digit.png")
        args[1] = tmp_path / "digit.png"
    if case == "runs out":
        args[2] = runs.start_run({"recipe": {}}, {}, tmp_path / "kept")
    code, out, err = run(*args)
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"error: {flag} ") and problem in line and ": give" in line
    assert "Epoch" not in out and "lr_find:" not in out and "digit.png:" not in out  # no work was started
    assert notes.read_text() == "mine" and not (tmp_path / "folder.tmp").exists()


# ----------------------------------------------------------------------------- predict


def draw_seven(path, size=(180, 240), ink="black", paper="white", mode="RGB"):
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).line([(30, 40), (150, 40), (70, 210)], fill=ink, width=16)
    image.save(path)
    return path


@pytest.fixture
def checkpoint(run, train_args, tmp_path):
    assert run(*train_args, "--epochs", 1)[0] == 0
    return tmp_path / "ck.pt"


def test_predict_prints_digit_and_probabilities_and_shows_the_view(run, checkpoint, tmp_path):
    images = [draw_seven(tmp_path / "a.png"), draw_seven(tmp_path / "b.jpg", ink=(250, 250, 250), paper=(0, 0, 40))]
    code, out, _ = run("predict", *images, "--checkpoint", checkpoint, "--show", "--out", tmp_path / "views")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith(str(tmp_path / "a.png"))]
    assert len(lines) == 1 and "9:" in lines[0] and "%" in lines[0]
    assert (tmp_path / "views" / "a_28x28.png").exists() and (tmp_path / "views" / "b_28x28.png").exists()


@pytest.mark.parametrize("problem", ["missing", "empty", "not an image", "blank", "text bomb", "bomb",
                                     "over the limit"])
def test_predict_bad_files(run, checkpoint, tmp_path, monkeypatch, problem):
    path = tmp_path / "digit.png"
    if problem == "empty":
        path.write_bytes(b"")
    elif problem == "not an image":
        path.write_text("hello")
    elif problem == "blank":
        Image.new("L", (50, 50), 255).save(path)
    elif problem == "text bomb":  # 2 KB of PNG whose comment inflates to 2 MB: PIL refuses it with a ValueError
        info = PngImagePlugin.PngInfo()
        info.add_text("comment", "x" * 2_000_000, zip=True)
        Image.new("L", (50, 50), 255).save(path, pnginfo=info)
    elif problem in ("bomb", "over the limit"):  # PIL refuses past 2 x MAX_IMAGE_PIXELS, and warns past it
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 180 * 240 // 3 if problem == "bomb" else 180 * 240 * 2 // 3)
        draw_seven(path, mode="1")  # as a 15000 x 15000 1-bit PNG (a few KB) is with the real limit
    code, _, err = run("predict", path, "--checkpoint", checkpoint)
    expected = {"missing": "no such file", "empty": "is empty", "not an image": "is not an image",
                "blank": "no digit in it", "text bomb": "is not an image", "bomb": "is too large to be one digit",
                "over the limit": "is too large to be one digit"}[problem]
    assert code == 1 and expected in one_error_line(err) and str(path) in one_error_line(err)


def test_load_digit_makes_mnist_like_input(tmp_path):
    views = [load_digit(draw_seven(tmp_path / f"{i}.png", *args)) * mnist.STD + mnist.MEAN
             for i, args in enumerate([((180, 240),), ((600, 400), (40, 40, 40), (230, 220, 200)),
                                       ((90, 90), 255, 0, "L")])]
    for x in views:
        x = x[0, 0]
        assert x.shape == (28, 28) and x.max() > 0.9 and x[0].max() < 0.05  # bright ink, black margin
        rows, cols = (x > 0.2).any(1).nonzero(), (x > 0.2).any(0).nonzero()
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (19, 20, 21)  # longer side ~20 px
        ys = torch.arange(28.0)
        cy, cx = (x.sum(1) * ys).sum() / x.sum(), (x.sum(0) * ys).sum() / x.sum()
        assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1  # centred by centre of mass
    transparent = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).line([(50, 10), (50, 90)], fill=(0, 0, 0, 255), width=10)
    transparent.save(tmp_path / "t.png")
    assert load_digit(tmp_path / "t.png").max() > 2  # ink on transparent paper is found


# ----------------------------------------------------------------------------- runs, lr-find


def test_every_training_run_is_kept_and_a_resumed_one_goes_on_in_its_record(run, train_args, runs_dir, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, 2)
        assert run(*train_args, "--epochs", 2, "--schedule", "step")[0] == 130
    (path,) = runs_dir.glob("*.json")
    record = json.loads(path.read_text())
    assert record["finished"] is False and record["epochs"] == 1 and record["model"] == "net"
    assert record["recipe"]["schedule"] == "step" and "schedule=step" in record["name"]
    assert run(*train_args, "--resume", train_args[train_args.index("--checkpoint") + 1])[0] == 0
    assert list(runs_dir.glob("*.json")) == [path]  # the same record, now finished
    record = json.loads(path.read_text())
    assert record["finished"] is True and len(record["history"]["test_acc"]) == 2


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_runs_folder_that_cannot_be_written_costs_a_warning_not_the_run(run, train_args, tmp_path, monkeypatch,
                                                                          where):
    (tmp_path / "notes").write_text("mine")
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "notes" if where == "a file" else tmp_path / "notes" / "runs"))
    code, out, err = run(*train_args, "--epochs", 1)
    assert code == 0 and "Final test accuracy" in out and (tmp_path / "ck.pt").exists(), err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "this run is not kept" in warnings[0] and "RUNS_DIR" in warnings[0]
    assert "Traceback" not in err and (tmp_path / "notes").read_text() == "mine"


def test_runs_lists_the_kept_runs_and_overlays_them(run, train_args, runs_dir, tmp_path):
    assert run(*train_args, "--epochs", 1)[0] == 0
    assert run(*train_args, "--epochs", 1, "--lr", 0.05)[0] == 0
    (runs_dir / "notes.json").write_text('{"mine": true}')  # not a run: skipped, in one line
    code, out, err = run("runs")
    assert code == 0 and len(out.strip().splitlines()) == 3 and "lr=0.05" in out.splitlines()[1]  # newest first
    assert err.strip().startswith("skipped") and "notes.json" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run("runs", "--plot", "*.json", "--out", tmp_path / "overlay.png")
    assert code == 0 and (tmp_path / "overlay.png").exists() and "(2 runs)" in out
    code, _, err = run("runs", "--plot", "no-such-run")
    assert code == 1 and "no run matches 'no-such-run'" in one_error_line(err)


@pytest.mark.parametrize("pipeline", ["fast", "classic"])
def test_lr_find_prints_its_suggestions_and_plots_them(run, train_args, tmp_path, pipeline):
    args = [a for a in train_args[1:] if a not in ("--checkpoint", tmp_path / "ck.pt")]
    code, out, err = run("lr-find", *args, "--pipeline", pipeline, "--num", 12, "--out", tmp_path / "lr")
    assert code == 0, err
    assert out.startswith("lr_find: steep") and (tmp_path / "lr" / "lr_find.png").exists()
