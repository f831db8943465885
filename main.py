"""MNIST from the command line: the notebook's pipeline, with checkpoints, resume and prediction.

    python main.py --epochs 1                       # train (the default command) with the fast recipe
    python main.py train --recipe classic           # the original S5 pipeline and recipe (20 epochs)
    python main.py train --resume checkpoints/net.pt
    python main.py predict my_digit.png --checkpoint checkpoints/net.pt --show
    python main.py lr-find                          # which peak learning rate to try
    python main.py runs                             # every run kept, newest first; runs --plot A B: overlaid
    python main.py sweep --space lr=log:0.02:0.5 --space batch_size=64,128,256 --trials 12   # find a recipe
    python main.py sweep --confirm net-fast-1a2b3c4d   # its best trial beside the base recipe, 3 seeds, test set

Every problem with the input ends in one line on stderr saying what to do, and a non-zero exit.
"""

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import lr_finder
import runs
import search_space
import sweep
from checkpoints import CheckpointError, load_checkpoint, load_weights, read_checkpoint, saved_settings, temporary_path
from devices import device_name, get_device
from digits import ImageError, load_digit
from files import one_line, why_unwritable
from mnist import DATA_DIR, Data, MNISTDataError
from model import MODELS, get_model
from plots import plot_confusion, plot_correct, plot_digits, plot_missed, plot_stats
from recipes import RECIPE_CHOICES, RECIPES, Recipe, recipe_help
from training import TrainingDiverged, fit, predictions, prepare

ROOT = Path(__file__).resolve().parent
OUTPUTS_DIR = ROOT / "outputs"  # a folder per run for its figures and history (the notebooks write images/)
DEFAULT_RECIPE = "fast"


# ----------------------------------------------------------------------------- arguments


def positive_int(text):
    """An argparse type: an int > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_recipe_flags(group):
    """One flag per `Recipe` field (batch_size -> --batch-size), its help the field's comment in `Recipe` and its
    value in each named recipe. The default, None, means 'the recipe's value'; the `Recipe` itself checks them."""
    helps = recipe_help()
    for f in fields(Recipe):
        flag, kind = "--" + f.name.replace("_", "-"), {"help": f"{helps[f.name]} {recipe_values(f.name)}"}
        if f.type is bool:
            kind["action"] = argparse.BooleanOptionalAction
        else:
            kind.update(type=f.type, choices=RECIPE_CHOICES.get(f.name))
        group.add_argument(flag, **kind)


def recipe_values(name):
    """"(fast: 0.2, classic: 0.01, s7: 0.2)": the field `name` in each named recipe, the default one first."""
    order = [DEFAULT_RECIPE, *(recipe for recipe in RECIPES if recipe != DEFAULT_RECIPE)]
    return "(" + ", ".join(f"{recipe}: {getattr(RECIPES[recipe], name)!r}" for recipe in order) + ")"


def add_run_flags(parser):
    """The flags that say what to train: model, recipe and its hyperparameters, seed, device, data."""
    run = parser.add_argument_group("run")
    run.add_argument("--model", choices=sorted(MODELS), help="architecture (default: net, the S5 Net)")
    run.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                     help=f"starting values of the hyperparameters below (default: {DEFAULT_RECIPE}; classic: the "
                          "original S5 one)")
    run.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    run.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: auto)")
    run.add_argument("--no-accel", action="store_true", help="train on the CPU even if a GPU is there")
    add_data_flags(run)
    add_recipe_flags(parser.add_argument_group("hyperparameters (default: the recipe's)"))
    return run


def add_data_flags(group, valid_size=0):
    """Where MNIST is, and how much of it a run uses (a `Data`: `data_from`)."""
    group.add_argument("--data-dir", default=None,
                       help="folder with the four MNIST files, .gz or not (default: $MNIST_DIR, else download)")
    group.add_argument("--data-root", default=str(DATA_DIR), help="where MNIST is downloaded or staged")
    group.add_argument("--train-size", type=positive_int, default=0, help="use only the first N training images")
    group.add_argument("--test-size", type=positive_int, default=0,
                       help="use only the first N test images (of the validation ones where they are held out)")
    group.add_argument("--test-batch-size", type=positive_int, default=1000, help="test batch size (default: 1000)")
    group.add_argument("--valid-size", type=positive_int, default=valid_size,
                       help="hold out the last N training images and evaluate on them instead of the test set "
                            f"(to choose a recipe without looking at the test set; default: {valid_size})")


def data_from(args):
    return Data(mnist_dir=args.data_dir, root=args.data_root, train_size=args.train_size, test_size=args.test_size,
                test_batch_size=args.test_batch_size, valid_size=args.valid_size)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")

    train = commands.add_parser("train", help="train a model (the default command)",
                                description="Train a model; the recipe's values are the defaults of its flags.")
    run = add_run_flags(train)
    run.add_argument("--out", help="folder for the plots and history.json (default: outputs/RUN, RUN the name of "
                                   "the run's record in runs/)")
    run.add_argument("--checkpoint", default=None,
                     help="checkpoint written after every epoch (default: checkpoints/MODEL.pt)")
    run.add_argument("--resume", metavar="PATH", help="go on from this checkpoint, with its settings")
    run.add_argument("--save-model", action="store_true", help="also save the bare weights to OUT/MODEL_weights.pt")
    run.add_argument("--dry-run", action="store_true", help="one epoch on two batches, to check that all works")
    run.add_argument("--log-interval", type=positive_int, default=None,
                     help="print a line every N batches instead of a progress bar (for log files)")

    finder = commands.add_parser("lr-find", help="the learning-rate range test: which peak rate to try",
                                 description="Train for NUM batches while the learning rate grows from START to "
                                             "END; print the suggested rates and plot the loss against the rate.")
    add_run_flags(finder)
    rates = finder.add_argument_group("learning rates")
    rates.add_argument("--start", type=float, default=lr_finder.START,
                       help=f"first learning rate (default: {lr_finder.START:g})")
    rates.add_argument("--end", type=float, default=lr_finder.END,
                       help=f"last learning rate (default: {lr_finder.END:g})")
    rates.add_argument("--num", type=positive_int, default=100, help="batches (default: 100)")
    rates.add_argument("--out", default=str(OUTPUTS_DIR), help="folder for lr_find.png (default: outputs)")

    kept = commands.add_parser("runs", help="list the kept runs, or overlay some of them",
                               description="Every training run is kept as a JSON file in runs/ (or $RUNS_DIR). "
                                           "Without --plot: a table of them, newest first.")
    kept.add_argument("--plot", nargs="+", metavar="RUN", help="run names, files or glob patterns to overlay")
    kept.add_argument("--out", default="runs.png", help="the overlay's PNG (default: runs.png)")

    predict = commands.add_parser("predict", help="classify your own digit images",
                                  description="Classify images of single digits (PNG, JPG, ...; any size, "
                                              "dark-on-light or light-on-dark) with a trained checkpoint.")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--checkpoint", required=True, help="a checkpoint written by `main.py train`")
    predict.add_argument("--show", action="store_true", help="save the 28x28 view the model sees to OUT")
    predict.add_argument("--out", default="predictions", help="folder for --show (default: predictions)")
    predict.add_argument("--device", default="cpu", help="cuda, mps, cpu or auto (default: cpu)")

    search = commands.add_parser("sweep", help="search recipes with Optuna on the validation split",
                                 description="Search a space of recipe fields over a named recipe with Optuna: each "
                                             "trial trains on the training images but the held-out ones, and is "
                                             "judged on those (never on the test set). The same command again goes "
                                             "on with the same study. --confirm NAME: the study's best recipe "
                                             "beside the base recipe, 3 seeds each, on the test set.")
    search.add_argument("--space", action="append", metavar="FIELD=RANGE",
                        help="a recipe field and its range: log:LOW:HIGH, LOW:HIGH or CHOICE,CHOICE,... (repeat it; "
                             "default: " + " ".join(f"{k}={search_space.as_text(v)}"
                                                   for k, v in search_space.DEFAULT_SPACE.items()) + ")")
    search.add_argument("--space-file", metavar="FILE", help='a JSON file {"lr": "log:0.02:0.5", "batch_size": '
                                                             '[64, 128, 256]} in place of --space')
    search.add_argument("--model", choices=sorted(MODELS), default="net", help="architecture (default: net)")
    search.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                        help=f"the recipe the space is laid over, tried first (default: {DEFAULT_RECIPE})")
    search.add_argument("--epochs", type=positive_int, default=0, help="each trial's budget (default: the recipe's)")
    search.add_argument("--trials", type=positive_int, default=12,
                        help="finished trials the study should hold (default: 12); more than it holds goes on")
    search.add_argument("--workers", type=positive_int, default=1,
                        help="processes on this machine, sharing its cores (default: 1)")
    search.add_argument("--storage", help="a journal file (default: runs/sweeps.journal) or a database URL, "
                                          "postgresql+psycopg://USER:PASSWORD@HOST/DB, for workers on several machines")
    search.add_argument("--study", help="a name of your own for the study (default: derived from what it searches)")
    search.add_argument("--heartbeat", type=positive_int, default=sweep.HEARTBEAT,
                        help="database storage: seconds between a worker's signs of life; a trial silent for twice "
                             f"that is failed and tried again (default: {sweep.HEARTBEAT})")
    search.add_argument("--confirm", metavar="STUDY", help="train the study's best recipe and its base recipe on 3 "
                                                          "seeds each and print their test accuracies")
    search.add_argument("--seed", type=int, default=1, help="the seed of every trial (default: 1)")
    search.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: auto)")
    add_data_flags(search, valid_size=sweep.VALID_SIZE)
    return parser


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "train")  # `python main.py --epochs 1` means train
    return build_parser().parse_args(argv)


# ----------------------------------------------------------------------------- output paths


def require_writable(flag, path, folder=False):
    """Checked before any work: a ValueError naming `flag` and what to do, unless `path` can be written as a folder
    (`folder`) or as a file."""
    problem = why_unwritable(path, folder)
    if problem:
        wanted = "a folder that can be written (created if missing)" if folder else "a file in a writable folder"
        raise ValueError(f"{flag} {path} {problem}: give {wanted}")


def require_data_root(args):
    """--data-root is written only to download or stage MNIST: a folder that is there may be read-only."""
    if not Path(args.data_root).is_dir():
        require_writable("--data-root", args.data_root, folder=True)


# ----------------------------------------------------------------------------- train


def settings(args):
    """(model name, seed, recipe, data) of the run: the checkpoint's when resuming, else the named recipe's;
    hyperparameter flags given on the command line win either way."""
    given = {f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name) is not None}
    where = {"mnist_dir": args.data_dir, "root": args.data_root, "test_batch_size": args.test_batch_size}
    if getattr(args, "resume", None):  # how much data stays as it was; where it is may change
        model_name, seed, recipe, data = saved_settings(args.resume)
        return args.model or model_name, seed, replace(recipe, **given), replace(data, **where)
    return args.model or "net", args.seed, replace(RECIPES[args.recipe], **given), data_from(args)


def run_device(args):
    """The device to train on: --device (default auto), or the CPU with --no-accel."""
    return get_device("cpu" if args.no_accel else args.device)


def train(args):
    start = time.perf_counter()
    device = run_device(args)
    model_name, seed, recipe, data = settings(args)
    if args.dry_run:
        recipe = replace(recipe, epochs=1)
        data = replace(data, train_size=2 * recipe.batch_size, test_size=data.test_batch_size)
    checkpoint = Path(args.checkpoint or args.resume or ROOT / "checkpoints" / f"{model_name}.pt")
    require_writable("--checkpoint", checkpoint)
    if temporary_path(checkpoint).is_dir():
        raise ValueError(f"--checkpoint {checkpoint}: its temporary file {temporary_path(checkpoint)} is a "
                         "folder: give another file name")
    require_writable("--out", args.out or OUTPUTS_DIR, folder=True)
    if args.save_model and args.out:  # the default folder is the run's own: only this run writes there
        require_writable("--out", Path(args.out) / f"{model_name}_weights.pt")
    require_data_root(args)

    t = prepare(model_name, recipe, data, device, seed)
    if args.resume:
        load_checkpoint(args.resume, t)
        print(f"Resuming {model_name} from {args.resume} after epoch {len(t.history['test_acc'])}")
    print(f"{model_name} on {device_name(device)}, {t.precision}, {recipe}")
    try:
        history = fit(t, checkpoint, args.log_interval)
    except (TrainingDiverged, CheckpointError) as e:
        unsaved = save_outputs(run_outputs(args, t), t, with_predictions=False)
        history_at = unsaved or f"the history is in {run_outputs(args, t) / 'history.json'}"
        raise type(e)(f"{str(e).rstrip('.')}; {history_at}") from None

    weights = f"{model_name}_weights.pt" if args.save_model else None
    unsaved = save_outputs(run_outputs(args, t), t, weights=weights)
    done = len(history["test_acc"])
    if unsaved:
        raise OutputError(f"{unsaved}; the checkpoint of epoch {done} is {checkpoint}" if done else unsaved)
    if done < recipe.epochs:
        print(f"Stopped after {done} of {recipe.epochs} epochs: go on with --resume {checkpoint}", file=sys.stderr)
        return 130
    print(f"Final test accuracy {history['test_acc'][-1]:.2f}% after {done} epochs, "
          f"wall time {time.perf_counter() - start:.1f} s; checkpoint {checkpoint}")
    return 0


def run_outputs(args, t):
    """The folder for the plots and history of the trainer `t`'s run: --out, else its own in outputs/, named as its
    record in runs/ (a resumed run goes on in the same one), or after the model where the run has no record."""
    return Path(args.out) if args.out else OUTPUTS_DIR / (t.run_file.stem if t.run_file else t.model_name)


class OutputError(RuntimeError):
    """The outputs of a run that trained could not be written; the message says where its results are."""


def save_outputs(out, t, with_predictions=True, weights=None):
    """history.json and the figures: the stats always, the digit grids if the model is worth asking; the bare
    weights too, as the file `weights`, if given. Returns None, or, where `out` cannot be written (a full disk,
    say), what went wrong: the history is then printed on stdout, so that it is not lost."""
    out, epochs = Path(out), len(t.history["test_acc"])
    predicted = predictions(t.evaluated_model, t.device, t.test_loader) if with_predictions and epochs else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.json").write_text(json.dumps(t.history, indent=1))
        if epochs:
            plot_stats(t.history, save=out / "stats.png")
        if predicted is not None:
            images, targets, preds = predicted
            plot_missed(images, targets, preds, save=out / "missed.png")
            plot_correct(images, targets, preds, save=out / "correct.png")
            plot_confusion(targets, preds, save=out / "confusion.png")
        if weights:
            torch.save(t.evaluated_model.state_dict(), out / weights)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        print(json.dumps(t.history))
        reason = why_unwritable(out, folder=True) or one_line(e)
        return f"could not write to {out} ({reason}): the history is printed above"
    finally:
        plt.close("all")
    if epochs:
        print(f"Wrote history.json and the plots to {out}")
    return None


# ----------------------------------------------------------------------------- predict


def predict(args):
    if args.show:
        require_writable("--out", args.out, folder=True)
    device = get_device(args.device)
    state = read_checkpoint(args.checkpoint)
    model = get_model(state["config"].get("model", "net")).to(device)
    load_weights(args.checkpoint, model, state)
    model.eval()
    digits = [load_digit(path) for path in args.images]  # all readable before any output
    for path, digit in zip(args.images, digits):
        with torch.no_grad():
            probs = model(digit.to(device)).exp()[0].cpu()
        best = int(probs.argmax())
        print(f"{path}: {best} ({100 * probs[best]:.1f}%)   "
              + "  ".join(f"{d}:{100 * p:.1f}%" for d, p in enumerate(probs.tolist())))
        if args.show:
            view = Path(args.out) / f"{Path(path).stem}_28x28.png"
            plt.close(plot_digits(digit, [f"predicted {best}"], ncols=1, save=view))
            print(f"  the model's view: {view}")
    return 0


# ----------------------------------------------------------------------------- lr-find, runs


def lr_find(args):
    require_writable("--out", args.out, folder=True)
    require_data_root(args)
    model_name, seed, recipe, data = settings(args)
    t = prepare(model_name, recipe, data, run_device(args), seed)
    result = lr_finder.lr_find(t, args.start, args.end, args.num)
    print(result)
    if result.steep is not None:
        print(f"the recipe's peak rate is {recipe.lr:g}; to try another: --lr {result.steep:.2g}")
    plt.close(lr_finder.plot_lr_find(result, save=Path(args.out) / "lr_find.png"))
    print(f"wrote {Path(args.out) / 'lr_find.png'}")
    return 0


def show_runs(args):
    if not args.plot:
        kept = runs.list_runs()
        print(runs.runs_table(kept) if kept else f"no runs kept in {runs.get_runs_dir()} yet: train one")
        return 0
    require_writable("--out", args.out)
    folder, chosen = runs.get_runs_dir(), []
    for name in args.plot:  # a file, a run's name, or a glob pattern in the runs folder
        paths = [Path(name)] if Path(name).is_file() else sorted(folder.glob(name if "*" in name else f"{name}*"))
        if not paths:
            raise ValueError(f"no run matches {name!r} in {folder}: `python main.py runs` lists them")
        chosen += paths
    kept = runs.read_runs(chosen)  # a file that is not a run is skipped, in one line
    plt.close(runs.plot_runs(kept, save=args.out))
    print(f"wrote {args.out} ({len(kept)} runs)")
    return 0


# ----------------------------------------------------------------------------- sweep


def read_space(args):
    """The space of --space-file, or of the --space flags; None for the default one."""
    return search_space.read_space_file(args.space_file) if args.space_file else \
        search_space.space_from_flags(args.space) if args.space else None


def run_sweep(args):
    data = data_from(args)
    require_data_root(args)
    if args.confirm:
        sweep.confirm(args.confirm, args.storage, device=args.device, data=data)
        return 0
    try:
        study = sweep.sweep(read_space(args), args.trials, workers=args.workers, storage=args.storage,
                            study=args.study, device=args.device, heartbeat=args.heartbeat, recipe=args.recipe,
                            model=args.model, data=data, seed=args.seed, epochs=args.epochs)
    except KeyboardInterrupt:
        print("Interrupted: the study keeps its finished trials; the same command goes on with it", file=sys.stderr)
        return 130
    _, best = sweep.best_recipe(study)
    print(f"best: trial {best.number}, {best.value:.2f}% on validation: {sweep.values_text(best.params)}")
    print(f"on the test set, 3 seeds beside the {args.recipe} recipe: python main.py sweep --confirm "
          f"{study.study_name}" + (f" --storage '{sweep.shown(args.storage)}'" if args.storage else ""))
    return 0


COMMANDS = {"train": train, "lr-find": lr_find, "runs": show_runs, "predict": predict, "sweep": run_sweep}


def main(argv=None):
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (MNISTDataError, CheckpointError, TrainingDiverged, ImageError, OutputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
