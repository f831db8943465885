"""`make bench`: the classic pipeline against the fast one, and the S7 model, on this machine.

Writes BENCHMARKS.md (tables) and bench/results.json (every figure). Each section carries its own
machine, date and command, so that re-running one section (say `--only gpu` on a GPU machine) leaves
the others labelled with where they were measured. Each timed training run is a child process of this
one, so that its peak memory is its own.

    python -m bench.run                      # everything (about 20 min on 2 CPU cores)
    python -m bench.run --only throughput    # one section: throughput, fp32, profile, classic, fast, s7, gpu
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
from torch.utils.flop_counter import FlopCounterMode

import utils
from model import Net

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
REPORT = ROOT / "BENCHMARKS.md"

THROUGHPUT_BATCHES = 30  # timed batches of 512 per pipeline, after WARMUP_BATCHES
WARMUP_BATCHES = 3
FP32_IMAGES = 7680  # timed images per float32 configuration (60 batches of 128)
PROFILE_BATCHES = 10  # profiled fast-path batches of the fast recipe's size
SEEDS = (1, 2, 3)
TARGET_ACC = 99.4  # % test accuracy, both models
TARGET_RATIO = 3.5  # fast pipeline vs classic pipeline, images/s
TARGET_SECONDS = 180  # fast recipe, wall time per run on the CPU
TARGET_GPU_SECONDS = 2  # fast recipe, training + evaluation on one H100
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- measurements


def cpu_isa(cpuinfo="/proc/cpuinfo"):
    """The widest vector/matrix instructions of this CPU that matter to training: AMX, AVX512-BF16, AVX-512, AVX2."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return platform.machine()
    names = [("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")]
    return next((name for flag, name in names if flag in flags), platform.machine())


def machine():
    """What a section's figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    return {"cpu": cpu, "cores": torch.get_num_threads(), "isa": cpu_isa(), "bf16_native": utils.cpu_has_fast_bf16(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform()}


def matmul_gflops(dtype, seconds=1.0):
    """This CPU's speed at multiplying matrices in `dtype`, GFLOP/s: the ceiling of convolutions, which oneDNN
    runs as matrix multiplies. Smaller matrices where bf16 is emulated (~1000x slower): a bound, not a wait."""
    n = 1024 if dtype == torch.float32 or utils.cpu_has_fast_bf16() else 256
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def train_flops_per_image(model, batch=32):
    """FLOPs of one training step (forward and backward) per image, as torch's FlopCounterMode counts them."""
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        utils.get_loss()(model(x), y).backward()
    return counter.get_total_flops() / batch


def train_steps_per_second(loader, model, device, precision, batches):
    """Images per second of plain training steps drawn from `loader` (data loading included)."""
    optimizer, criterion = utils.get_optimizer(model, utils.Recipe()), utils.get_loss()
    model.train()
    it = iter(loader)
    for i in range(WARMUP_BATCHES + batches):
        if i == WARMUP_BATCHES:
            sync(device)
            start, images = time.perf_counter(), 0
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
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


def throughput(data):
    """Classic vs fast pipeline, back to back, over the same number of batches of 512; then the fast pipeline
    at the fast recipe's batch size, eager and with torch.compile (compile time apart), over as many images."""
    precision = utils.choose_precision(CPU)
    torch.manual_seed(0)
    classic, _ = utils.classic_loaders(replace(utils.RECIPES["classic"], batch_size=512), data, 0, CPU)
    classic_ips = train_steps_per_second(classic, Net(), CPU, utils.FP32, THROUGHPUT_BATCHES)
    print(f"classic pipeline: {classic_ips:.0f} img/s", flush=True)
    torch.manual_seed(0)
    fast, _ = utils.fast_loaders(utils.Recipe(batch_size=512), data, 0, CPU)
    fast_ips = train_steps_per_second(fast, channels_last_net(), CPU, precision, THROUGHPUT_BATCHES)
    print(f"fast pipeline: {fast_ips:.0f} img/s ({fast_ips / classic_ips:.2f}x)", flush=True)

    batch_size = utils.RECIPES["fast"].batch_size
    batches = THROUGHPUT_BATCHES * 512 // batch_size
    recipe_loader, _ = utils.fast_loaders(utils.Recipe(batch_size=batch_size), data, 0, CPU)
    recipe_ips = train_steps_per_second(recipe_loader, channels_last_net(), CPU, precision, batches)
    print(f"fast pipeline, batch {batch_size}: {recipe_ips:.0f} img/s", flush=True)
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache):
        # an empty compile cache: a cold compile, as on a user's first run
        start = time.perf_counter()
        compiled = torch.compile(channels_last_net())
        compiled_ips = train_steps_per_second(recipe_loader, compiled, CPU, precision, batches)
        warmup_s = time.perf_counter() - start - batches * batch_size / compiled_ips  # compiling + warm-up
    print(f"fast pipeline, batch {batch_size}, torch.compile: {compiled_ips:.0f} img/s after {warmup_s:.0f} s")
    peaks = {str(dtype).removeprefix("torch."): matmul_gflops(dtype) for dtype in (torch.float32, torch.bfloat16)}
    print(f"matmul peak, GFLOP/s: {peaks}", flush=True)
    return {"flops_per_image": train_flops_per_image(Net()), "peak_gflops": peaks,
            "batch_size": 512, "batches": THROUGHPUT_BATCHES, "classic_img_s": classic_ips, "fast_img_s": fast_ips,
            "ratio": fast_ips / classic_ips, "fast_precision": str(precision), "recipe_batch_size": batch_size,
            "recipe_batches": batches, "recipe_img_s": recipe_ips, "compiled_img_s": compiled_ips,
            "compile_warmup_s": warmup_s}


def fp32_layouts(data, batch_sizes=(64, 128, 256, 512), images=FP32_IMAGES):
    """The fast pipeline in float32, what a CPU without native bf16 trains in: images/s for each batch size,
    with the channels_last layout the pipeline uses and with the contiguous one, over the same images."""
    rows = []
    for batch_size in batch_sizes:
        torch.manual_seed(0)
        loader, _ = utils.fast_loaders(utils.Recipe(batch_size=batch_size), data, 0, CPU)
        for layout, memory_format in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
            model = Net().to(memory_format=memory_format)
            ips = train_steps_per_second(loader, model, CPU, utils.FP32, images // batch_size)
            print(f"float32, batch {batch_size}, {layout}: {ips:.0f} img/s", flush=True)
            rows.append({"batch_size": batch_size, "layout": layout, "img_s": ips})
    return {"images": images, "rows": rows}


def profile_ops(loader, device, precision, batches=PROFILE_BATCHES, top=12):
    """The `top` operators of S5 `Net` training steps drawn from `loader`, by self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_steps_per_second(loader, channels_last_net(), device, precision, batches)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in ops[:top]]


def profile(data):
    """Where a fast-pipeline training step of the S5 Net spends its time, with the fast recipe's batches."""
    recipe, precision = utils.RECIPES["fast"], utils.choose_precision(CPU)
    torch.manual_seed(0)
    loader, _ = utils.fast_loaders(recipe, data, 0, CPU)
    ips = train_steps_per_second(loader, channels_last_net(), CPU, precision, PROFILE_BATCHES)  # unprofiled
    return {"batch_size": recipe.batch_size, "batches": PROFILE_BATCHES, "img_s": ips,
            "ops": profile_ops(loader, CPU, precision)}


def timed_run(model_name, recipe, seed, device_name, data, epochs=None):
    """One training run in a child process: accuracy per epoch, seconds, peak memory."""
    spec = {"model": model_name, "recipe": asdict(replace(recipe, epochs=epochs or recipe.epochs)), "seed": seed,
            "device": device_name, "data": asdict(data)}
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
    t = utils.prepare(spec["model"], utils.Recipe(**spec["recipe"]), utils.Data(**spec["data"]), device, spec["seed"])
    sync(device)
    loaded = time.perf_counter()
    history = utils.fit(t)
    sync(device)
    end = time.perf_counter()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    Path(out).write_text(json.dumps({
        **spec, "test_acc": history["test_acc"], "final_acc": history["test_acc"][-1],
        "epoch_seconds": history["seconds"], "load_seconds": loaded - start, "fit_seconds": end - loaded,
        "wall_seconds": end - start, "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu, "precision": str(t.precision)}))


def classic_epoch(data):
    """One epoch (train + test) of the seeds' pipeline and recipe; 20 epochs = 20 x this."""
    return [timed_run("net", utils.RECIPES["classic"], 1, "cpu", data, epochs=1)]


# ----------------------------------------------------------------------------- report


def runs_of(section):
    return section["runs"]


# (section, target, measured text, met) for each target of the issues; a row appears when its section was run
TARGETS = [
    ("throughput", f"fast pipeline >= {TARGET_RATIO}x the classic pipeline's images/s",
     lambda s: f"{s['ratio']:.2f}x", lambda s: s["ratio"] >= TARGET_RATIO),
    ("fast", f"S5 Net, fast recipe: >= {TARGET_ACC}% on every seed",
     lambda s: " / ".join(f"{r['final_acc']:.2f}%" for r in runs_of(s)),
     lambda s: all(r["final_acc"] >= TARGET_ACC for r in runs_of(s))),
    ("fast", f"S5 Net, fast recipe: <= {TARGET_SECONDS} s per run (load + train + eval)",
     lambda s: " / ".join(f"{r['wall_seconds']:.0f} s" for r in runs_of(s)),
     lambda s: all(r["wall_seconds"] <= TARGET_SECONDS for r in runs_of(s))),
    ("s7", f"S7Final: < 8,000 params, >= {TARGET_ACC}% in each of the last 3 of <= 15 epochs, every seed",
     lambda s: " / ".join(f"min {min(r['test_acc'][-3:]):.2f}%" for r in runs_of(s)),
     lambda s: all(min(r["test_acc"][-3:]) >= TARGET_ACC and len(r["test_acc"]) <= 15 for r in runs_of(s))),
    ("s7", f"S7Final: the same by epoch 10 (epochs 8-10 >= {TARGET_ACC}%)",
     lambda s: " / ".join(f"min {min(r['test_acc'][7:10]):.2f}%" for r in runs_of(s)),
     lambda s: all(min(r["test_acc"][7:10]) >= TARGET_ACC for r in runs_of(s))),
    ("gpu", f"GPU: >= {TARGET_ACC}% in < {TARGET_GPU_SECONDS} s of training + evaluation",
     lambda s: " / ".join(f"{r['final_acc']:.2f}% in {r['fit_seconds']:.1f} s" for r in runs_of(s)),
     lambda s: all(r["final_acc"] >= TARGET_ACC and r["fit_seconds"] < TARGET_GPU_SECONDS for r in runs_of(s))),
]


def targets(results):
    """(target, measured, met) rows for the targets whose sections were run."""
    return [(label, measured(results[key]), met(results[key])) for key, label, measured, met in TARGETS
            if key in results]


def table(header, rows, align):
    """A Markdown table; `align` has one character per column: 'l' left, 'r' right, 'c' centre."""
    rule = {"l": "---", "r": "---:", "c": ":-:"}
    return ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|",
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def measured_on(section):
    """Where and when a section was measured, in one sentence."""
    m, machine_ = section["measured"], section["measured"]["machine"]
    gpu = f", GPU {machine_['gpu']}" if machine_.get("gpu") else ""
    return (f"Measured by `{m['command']}` on {m['date']}: {machine_['cpu']} ({machine_.get('isa', '?')}), "
            f"{machine_['cores']} cores{gpu}, torch {machine_['torch']}.")


def share_of_peak(t):
    """How close the fast pipeline comes to what this CPU can do: its FLOP rate against the matmul peak."""
    dtype = "bfloat16" if t["fast_precision"].startswith("bfloat16") else "float32"
    achieved = t["recipe_img_s"] * t["flops_per_image"] / 1e9
    peaks = ", ".join(f"{name} {gflops:.0f}" for name, gflops in t["peak_gflops"].items())
    return [f"A training step of the S5 `Net` costs {t['flops_per_image'] / 1e6:.0f} MFLOP per image (torch's "
            f"FlopCounterMode), so {t['recipe_img_s']:.0f} img/s is {achieved:.0f} GFLOP/s: **"
            f"{100 * achieved / t['peak_gflops'][dtype]:.0f}% of this CPU's {dtype} matmul peak** (measured: {peaks}"
            " GFLOP/s)."]


def mean(xs):
    return sum(xs) / len(xs)


RUN_SECTIONS = {"classic": "classic recipe (the seeds'), 1 epoch measured", "fast": "fast recipe", "s7": "S7Final",
                "gpu": "fast recipe on GPU"}


def report(results):
    lines = ["# Benchmarks", "", "Written by `make bench` (`python -m bench.run`); every figure below comes from the "
             "run named above its table, and `bench/results.json` has them all."]
    rows = targets(results)
    if rows:
        lines += ["", "## Targets", "", *table(["target", "measured", "met"],
                                              [(t, m, "yes" if ok else "**no**") for t, m, ok in rows], "llc")]
    if "throughput" in results:
        t = results["throughput"]
        lines += ["", "## Training throughput, S5 `Net`", "", measured_on(t), "",
                  f"{t['batches']} batches of {t['batch_size']} after {WARMUP_BATCHES} warm-up batches, data loading "
                  "and augmentation included.", "",
                  *table(["pipeline", "images/s"], [
                      ("classic: DataLoader, PIL transforms, 2 workers, fp32", f"{t['classic_img_s']:.0f}"),
                      (f"fast: tensors in memory, batched augmentation, {t['fast_precision']}, channels_last",
                       f"{t['fast_img_s']:.0f}"),
                      ("ratio", f"**{t['ratio']:.2f}x**")], "lr"),
                  "", f"The fast pipeline at the fast recipe's batch size, {t['recipe_batches']} batches of "
                      f"{t['recipe_batch_size']}:", "",
                  *table(["fast pipeline", "images/s", "vs classic pipeline"], [
                      ("eager (what the recipe uses)", f"{t['recipe_img_s']:.0f}",
                       f"{t['recipe_img_s'] / t['classic_img_s']:.2f}x"),
                      (f"`torch.compile` (after {t['compile_warmup_s']:.0f} s of compiling and warm-up)",
                       f"{t['compiled_img_s']:.0f}", f"{t['compiled_img_s'] / t['classic_img_s']:.2f}x")], "lrr")]
        if "peak_gflops" in t:
            lines += ["", *share_of_peak(t)]
    if "fp32" in results:
        f = results["fp32"]
        best = max(f["rows"], key=lambda r: r["img_s"])
        lines += ["", "## The fast pipeline in float32 (CPUs without native bf16)", "", measured_on(f), "",
                  f"{f['images']:,} training images per row after {WARMUP_BATCHES} warm-up batches, S5 `Net`, "
                  f"float32 forced; fastest: batch {best['batch_size']}, {best['layout']}.", "",
                  *table(["batch", "layout", "images/s"],
                         [(r["batch_size"], r["layout"], f"{r['img_s']:.0f}") for r in f["rows"]], "rlr")]
    if "profile" in results:
        p = results["profile"]
        lines += ["", "## Where a fast-pipeline training step spends its time", "", measured_on(p), "",
                  f"torch.profiler over {p['batches']} batches of {p['batch_size']} of the S5 `Net` "
                  f"({p['img_s']:.0f} images/s without the profiler; the first {WARMUP_BATCHES} are warm-up).", "",
                  *table(["operator", "calls", "self ms", "share"],
                         [(f"`{o['op']}`", o["calls"], f"{o['self_ms']:.0f}", f"{100 * o['share']:.1f}%")
                          for o in p["ops"]], "lrrr")]
    for key, title in RUN_SECTIONS.items():
        if key not in results:
            continue
        runs = runs_of(results[key])
        r0 = runs[0]
        lines += ["", f"## {title}: `{r0['model']}`, {r0['recipe']['epochs']} epochs, {r0['recipe']['pipeline']} "
                      f"pipeline, {r0['precision']}", "", measured_on(results[key]), "",
                  *table(["seed", "final test acc", "per-epoch test acc", "data load s", "train+eval s", "wall s",
                          "peak RSS MiB"],
                         [(r["seed"], f"{r['final_acc']:.2f}%", " ".join(f"{a:.2f}" for a in r["test_acc"]),
                           f"{r['load_seconds']:.1f}", f"{r['fit_seconds']:.1f}", f"{r['wall_seconds']:.1f}",
                           f"{r['peak_rss_mib']:.0f}") for r in runs], "rrlrrrr")]
        if key == "classic":
            per_epoch = r0["epoch_seconds"][0]
            lines += ["", f"Classic recipe, 20 epochs: {per_epoch:.0f} s/epoch measured x 20 = "
                          f"**{20 * per_epoch / 60:.0f} min** (stated, not run here)."]
    timed = [(title, runs_of(results[key])) for key, title in RUN_SECTIONS.items() if key in results]
    if timed:
        lines += ["", "## Time per epoch (train + test)", "",
                  *table(["run", "model", "batch", "s/epoch", "s/run"],
                         [(title, f"`{rs[0]['model']}`", rs[0]["recipe"]["batch_size"],
                           f"{mean([mean(r['epoch_seconds']) for r in rs]):.1f}",
                           f"{mean([sum(r['epoch_seconds']) for r in rs]):.0f}") for title, rs in timed], "llrrr")]
    REPORT.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- main


SECTIONS = {
    "throughput": throughput,
    "fp32": fp32_layouts,
    "profile": profile,
    "classic": lambda data: {"runs": classic_epoch(data)},
    "fast": lambda data: {"runs": [timed_run("net", utils.RECIPES["fast"], s, "cpu", data) for s in SEEDS]},
    "s7": lambda data: {"runs": [timed_run("final", utils.RECIPES["s7"], s, "cpu", data) for s in SEEDS]},
    "gpu": lambda data: {"runs": [timed_run("net", utils.RECIPES["fast"], s, "cuda", data) for s in SEEDS]},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--data-dir", default=None, help="MNIST files (default: $MNIST_DIR, else download)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child), args.child_out)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # sections not re-run stay
    everything = args.only == parser.get_default("only")
    command = "make bench" if everything else " ".join(["python -m bench.run", *sys.argv[1:]])
    data = utils.Data(mnist_dir=args.data_dir)
    for name in args.only.split(","):
        if name == "gpu" and not torch.cuda.is_available():
            print("gpu: no CUDA GPU here, section skipped")
            continue
        measured = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
                    "machine": machine()}
        results[name] = {"measured": measured, **SECTIONS[name](data)}
        RESULTS.write_text(json.dumps(results, indent=1))  # after each section: a crash keeps what was measured
    report(results)
    print(f"wrote {REPORT.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
