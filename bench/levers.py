"""Screens for a faster `fast`: one lever at a time on the validation split, each run judged the same way.

    python -m bench.levers base --seed 1                 # 1 epoch, batch 32, peak lr 0.1 on validation
    python -m bench.levers adamw --lr 0.002              # one lever; --epochs, --batch-size, --lr override
    python -m bench.levers base --test                   # the same run on all 60,000, judged on the test set

Every run trains the S5 `Net` with `training.prepare` and `fit` on `Data(valid_size=10_000)` and reports, at the
end only, the validation accuracy of the trained weights, of weight averages kept alongside (they never touch
the training), and of each with test-time augmentation (a few shifted copies of every image, their
log-probabilities averaged; reported as TTA, apart). Levers that change training:

    base       the recipe as it is
    adamw      AdamW instead of SGD (beta1 = the recipe's momentum)
    muon       Muon (Newton-Schulz orthogonalised momentum) for conv and linear weights, SGD for the biases
    plainend   the last quarter of the steps on plain images (no rotation, no zoom)
    growbatch  batches of --batch-size for the first quarter of the images, then 4x larger

One JSON line per run is appended to bench/levers.jsonl (the figures of docs/experiments.md).
"""

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim import Optimizer

import training
from devices import cpu_isa, cpu_name, get_device
from mnist import BLACK, Data
from recipes import RECIPES

RESULTS = Path(__file__).resolve().parent / "levers.jsonl"
BASE = replace(RECIPES["fast"], epochs=1, batch_size=32, lr=0.1)  # the best 1-epoch screen so far
AVERAGES = (0.99, 0.995, 0.998)  # weight averages kept beside the run, warmed up as Recipe.ema (the decay is at
# most (1 + n) / (10 + n) after n steps: within one epoch of batch 32, 0.995 and 0.998 are the same average)
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # test-time augmentation: the image and 4 one-pixel shifts


class MuonWithSGD(Optimizer):
    """Muon for the conv and linear weights (conv kernels flattened to (out, in * kh * kw), as the CIFAR-10 speed
    runs do; torch.optim.Muon takes 2-D parameters only), SGD with Nesterov momentum for the biases. One
    optimizer, so that one schedule drives both groups' rates."""

    def __init__(self, model, lr, muon_lr, momentum=0.9):
        weights = [p for p in model.parameters() if p.ndim >= 2]
        others = [p for p in model.parameters() if p.ndim < 2]
        super().__init__([dict(params=weights, lr=muon_lr, muon=True), dict(params=others, lr=lr, muon=False)],
                         dict(momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                grad = p.grad.reshape(p.shape[0], -1) if group["muon"] else p.grad  # conv kernels: (out, in*kh*kw)
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(grad))
                if group["muon"]:  # torch.optim.Muon's update, nesterov, with its default momentum and lr scale
                    buf.lerp_(grad, 1 - 0.95)
                    update = orthogonalised(grad.lerp(buf, 0.95))
                    p.add_(update.view(p.shape), alpha=-group["lr"] * max(1, grad.shape[0] / grad.shape[1]) ** 0.5)
                else:  # SGD with Nesterov momentum
                    buf.mul_(group["momentum"]).add_(grad)
                    p.add_(grad.add(buf, alpha=group["momentum"]), alpha=-group["lr"])


def orthogonalised(g, steps=5, a=3.4445, b=-4.7750, c=2.0315):
    """torch.optim.Muon's Newton-Schulz iteration (its coefficients and steps), in fp32: torch's casts to bf16,
    which a CPU without native bf16 emulates, and the screens compute in fp32."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


class GrowingBatches:
    """The training loader's images, shuffled as it does, in batches of `small` for the first `share` of each
    epoch's images and of `large` after: many updates early, where they help most, then the throughput of large
    batches (`TensorLoader` keeps one batch size)."""

    def __init__(self, loader, small, large, share=0.25):
        n = len(loader.labels)
        switch = round(share * n)
        self.sizes = ([min(small, switch - i) for i in range(0, switch, small)]
                      + [min(large, n - i) for i in range(switch, n, large)])
        self.loader, self.dataset = loader, loader.dataset

    def __len__(self):
        return len(self.sizes)

    def __iter__(self):
        self.loader.batch_size = len(self.loader.labels)  # one shuffled, augmented pass, cut below
        images, labels = next(iter(self.loader))
        yield from zip(images.split(self.sizes), labels.split(self.sizes))


def with_optimizer(t, optimizer):
    """The trainer `t` with `optimizer`, under the recipe's one-cycle schedule to each group's own peak rate (a
    group that had a one-cycle schedule keeps its peak, `max_lr`, not the rate it was left at)."""
    t.optimizer = optimizer
    peaks = [group.get("max_lr", group["lr"]) for group in optimizer.param_groups]
    t.scheduler = training.one_cycle(optimizer, peaks, t.recipe.epochs, len(t.train_loader))
    return t


def shifted(images, dx, dy):
    """`images` moved by (dx, dy) pixels, black coming in at the edges."""
    return F.pad(images, (1, 1, 1, 1), value=BLACK)[..., 1 - dy : 29 - dy, 1 - dx : 29 - dx]


@torch.no_grad()
def accuracies(model, loader, device):
    """(plain accuracy %, TTA accuracy %) of `model` on `loader`."""
    model.eval()
    right, right_tta, seen = 0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logps = [model(shifted(x, dx, dy)) for dx, dy in SHIFTS]
        right += (logps[0].argmax(1) == y).sum().item()
        right_tta += (torch.stack(logps).mean(0).argmax(1) == y).sum().item()
        seen += len(y)
    return 100 * right / seen, 100 * right_tta / seen


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lever", choices=("base", "adamw", "muon", "plainend", "growbatch"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=BASE.epochs)
    parser.add_argument("--batch-size", type=int, default=BASE.batch_size)
    parser.add_argument("--lr", type=float, default=BASE.lr)
    parser.add_argument("--muon-lr", type=float, default=0.02)
    parser.add_argument("--test", action="store_true", help="train on all 60,000, judge on the test set")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-size", type=int, default=0,
                        help="train on the first N images only (a fractional budget; 0: all)")
    args = parser.parse_args()

    start = time.perf_counter()
    device = get_device("cpu")
    recipe = replace(BASE, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    data = Data(mnist_dir=args.data_dir, train_size=args.train_size, valid_size=0 if args.test else 10_000)
    t = training.prepare("net", recipe, data, device, args.seed)
    if args.lever == "adamw":
        with_optimizer(t, torch.optim.AdamW(t.model.parameters(), lr=recipe.lr, betas=(recipe.momentum, 0.999)))
    if args.lever == "muon":
        with_optimizer(t, MuonWithSGD(t.model, recipe.lr, args.muon_lr, recipe.momentum))
    if args.lever == "growbatch":
        t.train_loader = GrowingBatches(t.train_loader, recipe.batch_size, 4 * recipe.batch_size)
        with_optimizer(t, t.optimizer)  # the schedule over the new number of steps
    averages = {d: training.get_ema(t.model, d) for d in AVERAGES}
    steps, plain_from = 0, math.ceil(0.75 * len(t.train_loader) * recipe.epochs)

    def on_step(t, images):
        nonlocal steps
        steps += 1
        for average in averages.values():
            average.update_parameters(t.model)
        if args.lever == "plainend" and steps == plain_from:
            t.train_loader.degrees = t.train_loader.zoom_p = 0.0

    loaded = time.perf_counter()
    training.fit(t, on_step=on_step)
    trained = time.perf_counter()
    result = {"lever": args.lever, "seed": args.seed, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
              "lr": recipe.lr, "muon_lr": args.muon_lr if args.lever == "muon" else None,
              "train_images": len(t.train_loader.dataset), "on": data.evaluates_on}
    result["accuracy"], result["tta"] = accuracies(t.model, t.test_loader, device)
    for decay, average in averages.items():
        result[f"ema{decay}"], result[f"ema{decay}_tta"] = accuracies(average.module, t.test_loader, device)
    result.update(load_s=round(loaded - start, 1), train_and_eval_s=round(trained - loaded, 1),
                  wall_s=round(trained - start, 1), cpu=f"{cpu_name()} ({cpu_isa()})", precision=str(t.precision),
                  torch=torch.__version__, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  recipe=asdict(recipe))
    print(json.dumps({k: v for k, v in result.items() if k != "recipe"}))
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
