"""MNIST from the command line: the notebook's pipeline, with checkpoints, resume and prediction.

    python main.py --epochs 1                       # train (the default command) with the fast recipe
    python main.py train --recipe classic           # the seeds' pipeline and recipe (~50 min on 2 CPU cores)
    python main.py train --resume checkpoints/net.pt
    python main.py predict my_digit.png --checkpoint checkpoints/net.pt --show

Every problem with the input ends in one line on stderr saying what to do, and a non-zero exit.
"""

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import utils
from model import MODELS, get_model
from utils import RECIPES, SCHEDULES, Recipe

ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- arguments


def positive(kind):
    """An argparse type: a number of `kind` that must be > 0."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:  # also rejects nan
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")

    train = commands.add_parser("train", help="train a model (the default command)",
                                description="Train a model; the recipe's values are the defaults of its flags.")
    run = train.add_argument_group("run")
    run.add_argument("--model", choices=sorted(MODELS), help="architecture (default: net, the S5 Net)")
    run.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                     help="starting values of the hyperparameters below (default: fast; classic = the seeds')")
    run.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    run.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: auto)")
    run.add_argument("--no-accel", action="store_true", help="train on the CPU even if a GPU is there")
    run.add_argument("--data-dir", default=None,
                     help="folder with the four MNIST files, .gz or not (default: $MNIST_DIR, else download)")
    run.add_argument("--data-root", default=str(utils.DATA_DIR), help="where MNIST is downloaded or staged")
    run.add_argument("--out", default=str(utils.IMAGES_DIR), help="folder for the plots and history.json")
    run.add_argument("--checkpoint", default=None,
                     help="checkpoint written after every epoch (default: checkpoints/MODEL.pt)")
    run.add_argument("--resume", metavar="PATH", help="go on from this checkpoint, with its settings")
    run.add_argument("--save-model", action="store_true", help="also save the bare weights to OUT/MODEL_weights.pt")
    run.add_argument("--dry-run", action="store_true", help="one epoch on two batches, to check that all works")
    run.add_argument("--log-interval", type=positive(int), default=None,
                     help="print a line every N batches instead of a progress bar (for log files)")
    run.add_argument("--train-size", type=positive(int), default=None, help="use only the first N training images")
    run.add_argument("--test-size", type=positive(int), default=None, help="use only the first N test images")
    run.add_argument("--test-batch-size", type=positive(int), default=1000, help="test batch size (default: 1000)")

    hyper = train.add_argument_group("hyperparameters (default: the recipe's)")
    hyper.add_argument("--pipeline", choices=("fast", "classic"))
    hyper.add_argument("--epochs", type=positive(int))
    hyper.add_argument("--batch-size", type=positive(int))
    hyper.add_argument("--lr", type=positive(float), help="learning rate (the peak one for onecycle)")
    hyper.add_argument("--momentum", type=non_negative)
    hyper.add_argument("--nesterov", action=argparse.BooleanOptionalAction)
    hyper.add_argument("--weight-decay", type=non_negative)
    hyper.add_argument("--schedule", choices=SCHEDULES)
    hyper.add_argument("--step-size", type=positive(int), help="step: epochs between lr drops")
    hyper.add_argument("--gamma", type=positive(float), help="step/plateau: lr factor at each drop")
    hyper.add_argument("--label-smoothing", type=non_negative)
    hyper.add_argument("--degrees", type=non_negative, help="augmentation: rotation range, +- degrees")
    hyper.add_argument("--zoom-p", type=non_negative, help="augmentation: probability of the zoom")

    predict = commands.add_parser("predict", help="classify your own digit images",
                                  description="Classify images of single digits (PNG, JPG, ...; any size, "
                                              "dark-on-light or light-on-dark) with a trained checkpoint.")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--checkpoint", required=True, help="a checkpoint written by `main.py train`")
    predict.add_argument("--show", action="store_true", help="save the 28x28 view the model sees to OUT")
    predict.add_argument("--out", default="predictions", help="folder for --show (default: predictions)")
    predict.add_argument("--device", default="cpu", help="cuda, mps, cpu or auto (default: cpu)")
    return parser


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "predict", "-h", "--help"):
        argv.insert(0, "train")  # `python main.py --epochs 1` means train
    return build_parser().parse_args(argv)


# ----------------------------------------------------------------------------- train


def recipe_from(args, saved=None):
    """The recipe: the saved one when resuming, else the named one; flags given on the command line win."""
    recipe = Recipe(**saved) if saved else RECIPES[args.recipe]
    given = {f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name) is not None}
    return replace(recipe, **given)


def train(args):
    start = time.perf_counter()
    device = utils.get_device("cpu" if args.no_accel else args.device)
    saved = utils.read_checkpoint(args.resume)["config"] if args.resume else {}
    recipe = recipe_from(args, saved.get("recipe"))
    model_name = args.model or saved.get("model", "net")
    seed, train_size, test_size = (saved.get(k, getattr(args, k)) for k in ("seed", "train_size", "test_size"))
    if args.dry_run:
        recipe, train_size, test_size = replace(recipe, epochs=1), 2 * recipe.batch_size, args.test_batch_size
    checkpoint = Path(args.checkpoint or args.resume or ROOT / "checkpoints" / f"{model_name}.pt")
    config = {"model": model_name, "seed": seed, "train_size": train_size, "test_size": test_size,
              "recipe": asdict(recipe)}

    utils.seed_everything(seed)
    model = get_model(model_name)
    train_loader, test_loader, optimizer, scheduler, criterion, amp_dtype = utils.prepare(
        recipe, model, seed, device, train_size, test_size, args.data_root, args.data_dir, args.test_batch_size)
    history = None
    if args.resume:
        history, _ = utils.load_checkpoint(args.resume, model, optimizer, scheduler, train_loader)
        print(f"Resuming {model_name} from {args.resume} after epoch {len(history['train_loss'])}")
    print(f"{model_name} on {device} ({amp_dtype or torch.float32}), {recipe}")

    try:
        history = utils.fit(model, device, train_loader, test_loader, optimizer, scheduler, criterion,
                            recipe.epochs, history, amp_dtype,
                            checkpoint=checkpoint, config=config, log_interval=args.log_interval)
    except utils.TrainingDiverged as e:
        save_outputs(args.out, e.history, model_name, None, device, test_loader)
        raise

    save_outputs(args.out, history, model_name, model, device, test_loader)
    if args.save_model:
        torch.save(model.state_dict(), Path(args.out) / f"{model_name}_weights.pt")
    done = len(history["test_acc"])
    if done < recipe.epochs:
        print(f"Stopped after {done} of {recipe.epochs} epochs: go on with --resume {checkpoint}", file=sys.stderr)
        return 130
    print(f"Final test accuracy {history['test_acc'][-1]:.2f}% after {done} epochs, "
          f"wall time {time.perf_counter() - start:.1f} s; checkpoint {checkpoint}")
    return 0


def save_outputs(out, history, model_name, model, device, test_loader):
    """history.json and the figures: the stats always, the digit grids if there is a model to ask."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    if not history["train_loss"]:
        return
    utils.plot_stats(history, save=out / "stats.png")
    if model is not None:
        images, targets, preds = utils.predictions(model, device, test_loader)
        utils.plot_missed(images, targets, preds, save=out / "missed.png")
        utils.plot_correct(images, targets, preds, save=out / "correct.png")
        utils.plot_confusion(targets, preds, save=out / "confusion.png")
    plt.close("all")
    print(f"Wrote history.json and the plots to {out}")


# ----------------------------------------------------------------------------- predict


def predict(args):
    device = utils.get_device(args.device)
    state = utils.read_checkpoint(args.checkpoint)
    model = get_model(state["config"].get("model", "net")).to(device)
    utils.load_checkpoint(args.checkpoint, model)
    model.eval()
    digits = [utils.load_digit(path) for path in args.images]  # all readable before any output
    for path, digit in zip(args.images, digits):
        with torch.no_grad():
            probs = model(digit.to(device)).exp()[0].cpu()
        best = int(probs.argmax())
        print(f"{path}: {best} ({100 * probs[best]:.1f}%)   "
              + "  ".join(f"{d}:{100 * p:.1f}%" for d, p in enumerate(probs.tolist())))
        if args.show:
            view = Path(args.out) / f"{Path(path).stem}_28x28.png"
            plt.close(utils.plot_digits(digit, [f"predicted {best}"], ncols=1, save=view))
            print(f"  the model's view: {view}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return predict(args) if args.command == "predict" else train(args)
    except (utils.MNISTDataError, utils.CheckpointError, utils.TrainingDiverged, utils.ImageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
