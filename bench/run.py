"""`make bench`: the seed pipeline against the fast path, and the S7 model, on this machine.

Writes BENCHMARKS.md (tables) and bench/results.json (every figure, the machine, the date, the command).
Each timed training run is a child process of this one, so that its peak memory is its own.

    python -m bench.run                      # everything (about 20 min on 2 CPU cores)
    python -m bench.run --only throughput    # one section: throughput, profile, classic, fast, s7, gpu
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import torch

import utils
from model import Net, get_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
REPORT = ROOT / "BENCHMARKS.md"

THROUGHPUT_BATCHES = 30  # timed batches of 512 per pipeline, after WARMUP_BATCHES
WARMUP_BATCHES = 3
PROFILE_BATCHES = 10  # profiled fast-path batches of the fast recipe's size
SEEDS = (1, 2, 3)
TARGET_ACC = 99.4  # % test accuracy, both models
TARGET_RATIO = 3.5  # fast path vs seed pipeline, images/s
TARGET_SECONDS = 180  # fast recipe, wall time per run on the CPU
TARGET_GPU_SECONDS = 2  # fast recipe, training + evaluation on one H100


# ----------------------------------------------------------------------------- measurements


def machine():
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": torch.get_num_threads(), "bf16_native": utils.cpu_has_fast_bf16(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform()}


def train_steps_per_second(loader, model, device, amp_dtype, batches):
    """Images per second of plain training steps drawn from `loader` (data loading included)."""
    optimizer, criterion = utils.get_optimizer(model), utils.get_loss()
    model.train()
    it = iter(loader)
    for i in range(WARMUP_BATCHES + batches):
        if i == WARMUP_BATCHES:
            sync(device)
            start, images = time.perf_counter(), 0
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        if i >= WARMUP_BATCHES:
            images += len(y)
    sync(device)
    return images / (time.perf_counter() - start)


def peak_rss_mib():
    """This process's peak resident memory. On Linux VmHWM, not ru_maxrss: a child started by fork + exec
    inherits its parent's ru_maxrss, so that would report the parent's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def channels_last_net():
    """A fresh S5 `Net` laid out as the fast path trains it."""
    return Net().to(memory_format=torch.channels_last)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(mnist_dir):
    """Seed pipeline vs fast path, back to back, over the same number of batches of 512; then the fast path
    at the fast recipe's batch size, eager and with torch.compile (compile time apart), over as many images."""
    device = torch.device("cpu")
    amp_dtype = utils.autocast_dtype(device)
    torch.manual_seed(0)
    classic, _ = utils.classic_loaders(512, seed=0, mnist_dir=mnist_dir)
    seed_ips = train_steps_per_second(classic, Net(), device, None, THROUGHPUT_BATCHES)
    print(f"seed pipeline: {seed_ips:.0f} img/s", flush=True)
    torch.manual_seed(0)
    fast, _ = utils.fast_loaders(512, seed=0, mnist_dir=mnist_dir, device=device)
    fast_ips = train_steps_per_second(fast, channels_last_net(), device, amp_dtype, THROUGHPUT_BATCHES)
    print(f"fast path: {fast_ips:.0f} img/s ({fast_ips / seed_ips:.2f}x)", flush=True)

    batch_size = utils.RECIPES["fast"].batch_size
    batches = THROUGHPUT_BATCHES * 512 // batch_size
    recipe_loader, _ = utils.fast_loaders(batch_size, seed=0, mnist_dir=mnist_dir, device=device)
    recipe_ips = train_steps_per_second(recipe_loader, channels_last_net(), device, amp_dtype, batches)
    print(f"fast path, batch {batch_size}: {recipe_ips:.0f} img/s", flush=True)
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache):
        # an empty compile cache: a cold compile, as on a user's first run
        start = time.perf_counter()
        compiled = torch.compile(channels_last_net())
        compiled_ips = train_steps_per_second(recipe_loader, compiled, device, amp_dtype, batches)
        warmup_s = time.perf_counter() - start - batches * batch_size / compiled_ips  # compiling + warm-up
    print(f"fast path, batch {batch_size}, torch.compile: {compiled_ips:.0f} img/s after {warmup_s:.0f} s", flush=True)
    return {"batch_size": 512, "batches": THROUGHPUT_BATCHES, "seed_img_s": seed_ips, "fast_img_s": fast_ips,
            "ratio": fast_ips / seed_ips, "fast_precision": str(amp_dtype or torch.float32),
            "recipe_batch_size": batch_size, "recipe_batches": batches, "recipe_img_s": recipe_ips,
            "compiled_img_s": compiled_ips, "compile_warmup_s": warmup_s}


def profile_ops(loader, device, amp_dtype, batches=PROFILE_BATCHES, top=12):
    """The `top` operators of S5 `Net` training steps drawn from `loader`, by self CPU time."""
    model = channels_last_net()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_steps_per_second(loader, model, device, amp_dtype, batches)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in ops[:top]]


def profile(mnist_dir):
    """Where a fast-path training step of the S5 Net spends its time, with the fast recipe's batches."""
    device, recipe = torch.device("cpu"), utils.RECIPES["fast"]
    torch.manual_seed(0)
    loader, _ = utils.fast_loaders(recipe.batch_size, seed=0, mnist_dir=mnist_dir, device=device,
                                   degrees=recipe.degrees, zoom_p=recipe.zoom_p)
    amp_dtype = utils.autocast_dtype(device)
    ips = train_steps_per_second(loader, channels_last_net(), device, amp_dtype, PROFILE_BATCHES)  # unprofiled
    return {"batch_size": recipe.batch_size, "batches": PROFILE_BATCHES, "img_s": ips,
            "ops": profile_ops(loader, device, amp_dtype)}


def timed_run(model_name, recipe, seed, device_name, mnist_dir, epochs=None):
    """One training run in a child process: accuracy per epoch, seconds, peak memory."""
    spec = {"model": model_name, "recipe": asdict(replace(recipe, epochs=epochs or recipe.epochs)), "seed": seed,
            "device": device_name, "mnist_dir": mnist_dir}
    out = ROOT / "bench" / f".child-{model_name}-{seed}.json"
    subprocess.run([sys.executable, "-m", "bench.run", "--child", json.dumps(spec), "--child-out", str(out)],
                   cwd=ROOT, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def child(spec, out):
    """The body of `timed_run`, in the child process: data load + training + evaluation, timed."""
    start = time.perf_counter()
    device = utils.get_device(spec["device"])
    recipe = utils.Recipe(**spec["recipe"])
    utils.seed_everything(spec["seed"])
    model = get_model(spec["model"])
    train_loader, test_loader, optimizer, scheduler, criterion, amp_dtype = utils.prepare(
        recipe, model, spec["seed"], device, mnist_dir=spec["mnist_dir"])
    sync(device)
    loaded = time.perf_counter()
    history = utils.fit(model, device, train_loader, test_loader, optimizer, scheduler, criterion, recipe.epochs,
                        amp_dtype=amp_dtype)
    sync(device)
    end = time.perf_counter()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    Path(out).write_text(json.dumps({
        **spec, "test_acc": history["test_acc"], "final_acc": history["test_acc"][-1],
        "epoch_seconds": history["seconds"], "load_seconds": loaded - start, "fit_seconds": end - loaded,
        "wall_seconds": end - start, "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu, "precision": str(amp_dtype or torch.float32)}))


def classic_epoch(mnist_dir):
    """One epoch (train + test) of the seeds' pipeline and recipe; 20 epochs = 20 x this."""
    return timed_run("net", utils.RECIPES["classic"], 1, "cpu", mnist_dir, epochs=1)


# ----------------------------------------------------------------------------- report


def targets(results):
    """(target, measured, met) rows for the issue's targets, from whichever sections were run."""
    rows = []
    if "throughput" in results:
        t = results["throughput"]
        rows.append((f"fast path >= {TARGET_RATIO}x the seed pipeline's images/s", f"{t['ratio']:.2f}x",
                     t["ratio"] >= TARGET_RATIO))
    if "fast" in results:
        runs = results["fast"]
        rows.append((f"S5 Net, fast recipe: >= {TARGET_ACC}% on every seed",
                     " / ".join(f"{r['final_acc']:.2f}%" for r in runs),
                     all(r["final_acc"] >= TARGET_ACC for r in runs)))
        rows.append((f"S5 Net, fast recipe: <= {TARGET_SECONDS} s per run (load + train + eval)",
                     " / ".join(f"{r['wall_seconds']:.0f} s" for r in runs),
                     all(r["wall_seconds"] <= TARGET_SECONDS for r in runs)))
    if "s7" in results:
        runs = results["s7"]
        last3 = [r["test_acc"][-3:] for r in runs]
        rows.append((f"S7Final: < 8,000 params, >= {TARGET_ACC}% in each of the last 3 of <= 15 epochs, every seed",
                     " / ".join(f"min {min(a):.2f}%" for a in last3),
                     all(min(a) >= TARGET_ACC for a in last3) and all(len(r["test_acc"]) <= 15 for r in runs)))
        rows.append((f"S7Final: the same by epoch 10 (epochs 8-10 >= {TARGET_ACC}%)",
                     " / ".join(f"min {min(r['test_acc'][7:10]):.2f}%" for r in runs),
                     all(min(r["test_acc"][7:10]) >= TARGET_ACC for r in runs)))
    if "gpu" in results:
        runs = results["gpu"]
        rows.append((f"GPU: >= {TARGET_ACC}% in < {TARGET_GPU_SECONDS} s of training + evaluation",
                     " / ".join(f"{r['final_acc']:.2f}% in {r['fit_seconds']:.1f} s" for r in runs),
                     all(r["final_acc"] >= TARGET_ACC and r["fit_seconds"] < TARGET_GPU_SECONDS for r in runs)))
    return rows


def mean(xs):
    return sum(xs) / len(xs)


def report(results):
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{results['command']}` on {results['date']}: {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores, bf16 native: {results['machine']['bf16_native']}, "
        f"GPU: {results['machine']['gpu'] or 'none'}, torch {results['machine']['torch']}. "
        "Every figure below comes from that run; `bench/results.json` has them all.",
    ]
    rows = targets(results)
    if rows:
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|:-:|"]
        lines += [f"| {target} | {measured} | {'yes' if met else '**no**'} |" for target, measured, met in rows]
    if "throughput" in results:
        t = results["throughput"]
        lines += ["", "## Training throughput, S5 `Net`",
                  "", f"{t['batches']} batches of {t['batch_size']} after {WARMUP_BATCHES} warm-up batches, "
                  "data loading and augmentation included.", "",
                  "| pipeline | images/s |", "|---|---:|",
                  f"| seed: DataLoader, PIL transforms, 2 workers, fp32 | {t['seed_img_s']:.0f} |",
                  f"| fast: tensors in memory, batched augmentation, {t['fast_precision']}, channels_last | "
                  f"{t['fast_img_s']:.0f} |",
                  f"| ratio | **{t['ratio']:.2f}x** |"]
        if "recipe_img_s" in t:
            lines += ["", f"The fast path at the fast recipe's batch size, {t['recipe_batches']} batches of "
                          f"{t['recipe_batch_size']}:", "",
                      "| fast path | images/s | vs seed pipeline |", "|---|---:|---:|",
                      f"| eager (what the recipe uses) | {t['recipe_img_s']:.0f} | "
                      f"{t['recipe_img_s'] / t['seed_img_s']:.2f}x |",
                      f"| `torch.compile` (after {t['compile_warmup_s']:.0f} s of compiling and warm-up) | "
                      f"{t['compiled_img_s']:.0f} | {t['compiled_img_s'] / t['seed_img_s']:.2f}x |"]
    if "profile" in results:
        p = results["profile"]
        lines += ["", "## Where a fast-path training step spends its time",
                  "", f"torch.profiler over {p['batches']} batches of {p['batch_size']} of the S5 `Net` "
                  f"({p['img_s']:.0f} images/s without the profiler; the first {WARMUP_BATCHES} are warm-up).", "",
                  "| operator | calls | self ms | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.0f} | {100 * o['share']:.1f}% |" for o in p["ops"]]
    runs = [("classic", "seed recipe, 1 epoch measured"), ("fast", "fast recipe"), ("s7", "S7Final"),
            ("gpu", "fast recipe on GPU")]
    for key, title in runs:
        if key not in results:
            continue
        rows = results[key] if isinstance(results[key], list) else [results[key]]
        r0 = rows[0]
        lines += ["", f"## {title}: `{r0['model']}`, {r0['recipe']['epochs']} epochs, {r0['recipe']['pipeline']} "
                      f"pipeline, {r0['precision']}", "",
                  "| seed | final test acc | per-epoch test acc | data load s | train+eval s | wall s | peak RSS MiB |",
                  "|---:|---:|---|---:|---:|---:|---:|"]
        for r in rows:
            accs = " ".join(f"{a:.2f}" for a in r["test_acc"])
            lines.append(f"| {r['seed']} | {r['final_acc']:.2f}% | {accs} | {r['load_seconds']:.1f} | "
                         f"{r['fit_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['peak_rss_mib']:.0f} |")
        if key == "classic":
            per_epoch = r0["epoch_seconds"][0]
            lines += ["", f"Seed recipe, 20 epochs: {per_epoch:.0f} s/epoch measured x 20 = "
                          f"**{20 * per_epoch / 60:.0f} min** (stated, not run here)."]
    epoch_rows = [(title, results[key] if isinstance(results[key], list) else [results[key]])
                  for key, title in runs if key in results]
    if epoch_rows:
        lines += ["", "## Time per epoch (train + test)", "", "| run | model | batch | s/epoch | s/run |",
                  "|---|---|---:|---:|---:|"]
        for title, rs in epoch_rows:
            lines.append(f"| {title} | `{rs[0]['model']}` | {rs[0]['recipe']['batch_size']} | "
                         f"{mean([mean(r['epoch_seconds']) for r in rs]):.1f} | "
                         f"{mean([sum(r['epoch_seconds']) for r in rs]):.0f} |")
    REPORT.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="throughput,profile,classic,fast,s7,gpu", help="comma-separated sections")
    parser.add_argument("--data-dir", default=None, help="MNIST files (default: $MNIST_DIR, else download)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child), args.child_out)

    sections = args.only.split(",")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # sections not re-run stay
    results.update(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
                   command="make bench" if args.only == parser.get_default("only") else " ".join(sys.argv))
    if "throughput" in sections:
        results["throughput"] = throughput(args.data_dir)
    if "profile" in sections:
        results["profile"] = profile(args.data_dir)
    if "classic" in sections:
        results["classic"] = classic_epoch(args.data_dir)
    if "fast" in sections:
        results["fast"] = [timed_run("net", utils.RECIPES["fast"], s, "cpu", args.data_dir) for s in SEEDS]
    if "s7" in sections and "s7" in utils.RECIPES:
        results["s7"] = [timed_run("final", utils.RECIPES["s7"], s, "cpu", args.data_dir) for s in SEEDS]
    if "gpu" in sections and torch.cuda.is_available():
        results["gpu"] = [timed_run("net", utils.RECIPES["fast"], s, "cuda", args.data_dir) for s in SEEDS]
    RESULTS.write_text(json.dumps(results, indent=1))
    report(results)
    print(f"wrote {REPORT.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
