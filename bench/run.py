"""`make bench`: the classic pipeline against the fast one, and the S7 model, on this machine.

Writes BENCHMARKS.md (tables) and bench/results.json (every figure). Each section carries its own
machine, date and command, so that re-running one section (say `--only gpu` on a GPU machine) leaves
the others labelled with where they were measured. Each timed training run is a child process of this
one, so that its peak memory is its own.

    python -m bench.run                      # everything (about 20 min on 2 CPU cores)
    python -m bench.run --only throughput    # one section: throughput, fp32, profile, classic, fast, s7, gpu
    make bench-avx2                          # as an AVX2 laptop computes: oneDNN's and ATen's kernels capped

A cap (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, set before Python starts: torch reads them as it
loads) keeps its sections apart, as `fast@avx2` beside `fast`, each labelled with the cap.
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
from types import SimpleNamespace
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from devices import FP32, choose_precision, cpu_has_fast_bf16, cpu_isa, cpu_name, get_device, isa_cap
from mnist import Data, classic_loaders, fast_loaders
from model import Net
from recipes import RECIPES, Recipe
from training import fit, get_loss, get_optimizer, prepare, train_step

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
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")  # read once, as torch loads


# ----------------------------------------------------------------------------- measurements


def machine():
    """What a section's figures were measured on."""
    return {"cpu": cpu_name(), "cores": torch.get_num_threads(), "cpu_isa": cpu_isa(capped=False), "isa": cpu_isa(),
            "isa_cap": isa_cap(), "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": cpu_has_fast_bf16(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform()}


def matmul_gflops(dtype, seconds=1.0):
    """This CPU's speed at multiplying matrices in `dtype`, GFLOP/s: the ceiling of convolutions, which oneDNN
    runs as matrix multiplies. Smaller matrices where bf16 is emulated (~1000x slower): a bound, not a wait."""
    n = 1024 if dtype == torch.float32 or cpu_has_fast_bf16() else 256
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
        get_loss()(model(x), y).backward()
    return counter.get_total_flops() / batch


def bare_trainer(model, device, precision):
    """What `train_step` takes, around `model` alone: the default recipe's SGD, the plain loss, a grad scaler
    (on for fp16 only, as in training). No data, no schedule, no weight average: the step and nothing else."""
    return SimpleNamespace(model=model, device=device, precision=precision, optimizer=get_optimizer(model, Recipe()),
                           criterion=get_loss(), scaler=torch.amp.GradScaler(device.type, enabled=precision.scaled))


def train_steps_per_second(loader, model, device, precision, batches):
    """Images per second of training steps (`train_step`, as training takes them) on `batches` batches drawn from
    `loader` after WARMUP_BATCHES untimed ones, data loading included."""
    t = bare_trainer(model, device, precision)
    model.train()
    it = iter(loader)
    for i in range(WARMUP_BATCHES + batches):
        if i == WARMUP_BATCHES:
            sync(device)
            start, images = time.perf_counter(), 0
        x, y = next(it)
        train_step(t, x.to(device, non_blocking=True), y.to(device, non_blocking=True))
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
    precision = choose_precision(CPU)
    torch.manual_seed(0)
    classic, _ = classic_loaders(replace(RECIPES["classic"], batch_size=512), data, 0, CPU)
    classic_ips = train_steps_per_second(classic, Net(), CPU, FP32, THROUGHPUT_BATCHES)
    print(f"classic pipeline: {classic_ips:.0f} img/s", flush=True)
    torch.manual_seed(0)
    fast, _ = fast_loaders(Recipe(batch_size=512), data, 0, CPU)
    fast_ips = train_steps_per_second(fast, channels_last_net(), CPU, precision, THROUGHPUT_BATCHES)
    print(f"fast pipeline: {fast_ips:.0f} img/s ({fast_ips / classic_ips:.2f}x)", flush=True)

    batch_size = RECIPES["fast"].batch_size
    batches = THROUGHPUT_BATCHES * 512 // batch_size
    recipe_loader, _ = fast_loaders(Recipe(batch_size=batch_size), data, 0, CPU)
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
        loader, _ = fast_loaders(Recipe(batch_size=batch_size), data, 0, CPU)
        for layout, memory_format in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
            model = Net().to(memory_format=memory_format)
            ips = train_steps_per_second(loader, model, CPU, FP32, images // batch_size)
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
    recipe, precision = RECIPES["fast"], choose_precision(CPU)
    torch.manual_seed(0)
    loader, _ = fast_loaders(recipe, data, 0, CPU)
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
    device = get_device(spec["device"])
    t = prepare(spec["model"], Recipe(**spec["recipe"]), Data(**spec["data"]), device, spec["seed"])
    sync(device)
    loaded = time.perf_counter()
    history = fit(t)
    sync(device)
    end = time.perf_counter()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    Path(out).write_text(json.dumps({
        **spec, "test_acc": history["test_acc"], "final_acc": history["test_acc"][-1],
        "epoch_seconds": history["seconds"], "load_seconds": loaded - start, "fit_seconds": end - loaded,
        "wall_seconds": end - start, "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu, "precision": str(t.precision)}))


def classic_epoch(data):
    """One epoch (train + test) of the classic pipeline and recipe; 20 epochs = 20 x this."""
    return [timed_run("net", RECIPES["classic"], 1, "cpu", data, epochs=1)]


# ----------------------------------------------------------------------------- report


def runs_of(section):
    return section["runs"]


# (section, target, measured text, met) for each target; a row appears when its section was run
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


def section_key(name, cap):
    """Where a section's figures are kept: under its name, or `name@cap` when measured with oneDNN's instructions
    capped (`fast@avx2`), so that capped figures never overwrite the CPU's own."""
    return f"{name}@{cap.lower()}" if cap else name


def keys_of(results, name):
    """The keys of section `name` in `results`: the CPU's own figures first, then each capped variant."""
    return sorted((key for key in results if key.partition("@")[0] == name), key=lambda key: ("@" in key, key))


def capped(section):
    """' (AVX2 kernels, capped)' for a section measured under a cap, else ''."""
    cap = section["measured"]["machine"].get("isa_cap")
    return f" ({cap} kernels, capped)" if cap else ""


def targets(results):
    """(target, measured, met) rows for the targets whose sections were run, capped ones apart."""
    return [(label + capped(results[key]), measured(results[key]), met(results[key]))
            for name, label, measured, met in TARGETS for key in keys_of(results, name)]


def table(header, rows, align):
    """A Markdown table; `align` has one character per column: 'l' left, 'r' right, 'c' centre."""
    rule = {"l": "---", "r": "---:", "c": ":-:"}
    return ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|",
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def measured_on(section):
    """Where and when a section was measured, in one sentence: the CPU's own instructions, and the cap if any."""
    m, machine_ = section["measured"], section["measured"]["machine"]
    gpu = f", GPU {machine_['gpu']}" if machine_.get("gpu") else ""
    isa = machine_.get("cpu_isa", machine_.get("isa", "?"))
    cap = (f" computing as an {machine_['isa']} CPU (ONEDNN_MAX_CPU_ISA={machine_['isa_cap']}, ATen's "
           f"{machine_.get('aten_capability', '?')} kernels; MKL's matrix multiplies not capped)"
           if machine_.get("isa_cap") else "")
    return (f"Measured by `{m['command']}` on {m['date']}: {machine_['cpu']} ({isa}){cap}, "
            f"{machine_['cores']} cores{gpu}, torch {machine_['torch']}.")


def share_of_peak(t):
    """How close the fast pipeline comes to what this CPU can do: its FLOP rate against the matmul peak. Not under
    a cap: the peak is MKL's, which the cap does not reach, so the share would compare a capped step with an
    uncapped peak."""
    if t["measured"]["machine"].get("isa_cap"):
        return ["No share of the matmul peak under a cap: the peak is MKL's, which the cap does not reach."]
    dtype = "bfloat16" if t["fast_precision"].startswith("bfloat16") else "float32"
    achieved = t["recipe_img_s"] * t["flops_per_image"] / 1e9
    peaks = ", ".join(f"{name} {gflops:.0f}" for name, gflops in t["peak_gflops"].items())
    return [f"A training step of the S5 `Net` costs {t['flops_per_image'] / 1e6:.0f} MFLOP per image (torch's "
            f"FlopCounterMode), so {t['recipe_img_s']:.0f} img/s is {achieved:.0f} GFLOP/s: **"
            f"{100 * achieved / t['peak_gflops'][dtype]:.0f}% of this CPU's {dtype} matmul peak** (measured: {peaks}"
            " GFLOP/s)."]


def mean(xs):
    return sum(xs) / len(xs)


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def precision_name(precision):
    """'float32 (...)' as recorded now, from 'torch.float32' as older records have it."""
    return precision.removeprefix("torch.")


def throughput_lines(t):
    lines = [f"{t['batches']} batches of {t['batch_size']} after {WARMUP_BATCHES} warm-up batches, data loading and "
             "augmentation included.", "",
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
    return lines + (["", *share_of_peak(t)] if "peak_gflops" in t else [])


def fp32_lines(f):
    best = max(f["rows"], key=lambda r: r["img_s"])
    return [f"{f['images']:,} training images per row after {WARMUP_BATCHES} warm-up batches, S5 `Net`, float32 "
            f"forced; fastest: batch {best['batch_size']}, {best['layout']}.", "",
            *table(["batch", "layout", "images/s"],
                   [(r["batch_size"], r["layout"], f"{r['img_s']:.0f}") for r in f["rows"]], "rlr")]


def profile_lines(p):
    return [f"torch.profiler over {p['batches']} batches of {p['batch_size']} of the S5 `Net` ({p['img_s']:.0f} "
            f"images/s without the profiler; the first {WARMUP_BATCHES} are warm-up).", "",
            *table(["operator", "calls", "self ms", "share"],
                   [(f"`{o['op']}`", o["calls"], f"{o['self_ms']:.0f}", f"{100 * o['share']:.1f}%")
                    for o in p["ops"]], "lrrr")]


def runs_lines(section):
    runs, r0 = runs_of(section), runs_of(section)[0]
    lines = [f"`{r0['model']}`, {plural(r0['recipe']['epochs'], 'epoch')}, {r0['recipe']['pipeline']} pipeline, "
             f"{precision_name(r0['precision'])}.", "",
             *table(["seed", "final test acc", "per-epoch test acc", "data load s", "train+eval s", "wall s",
                     "peak RSS MiB"],
                    [(r["seed"], f"{r['final_acc']:.2f}%", " ".join(f"{a:.2f}" for a in r["test_acc"]),
                      f"{r['load_seconds']:.1f}", f"{r['fit_seconds']:.1f}", f"{r['wall_seconds']:.1f}",
                      f"{r['peak_rss_mib']:.0f}") for r in runs], "rrlrrrr")]
    if r0["recipe"]["pipeline"] == "classic" and r0["recipe"]["epochs"] == 1:
        per_epoch = r0["epoch_seconds"][0]
        lines += ["", f"Classic recipe, 20 epochs: {per_epoch:.0f} s/epoch measured x 20 = "
                      f"**{20 * per_epoch / 60:.0f} min** (stated, not run here)."]
    return lines


# section name: (title, what its figures are drawn into)
SECTION_REPORTS = {
    "throughput": ("Training throughput, S5 `Net`", throughput_lines),
    "fp32": ("The fast pipeline in float32 (CPUs without native bf16)", fp32_lines),
    "profile": ("Where a fast-pipeline training step spends its time", profile_lines),
    "classic": ("classic recipe (the original S5 recipe), 1 epoch measured", runs_lines),
    "fast": ("fast recipe", runs_lines),
    "s7": ("S7Final", runs_lines),
    "gpu": ("fast recipe on GPU", runs_lines),
}
RUN_SECTIONS = ("classic", "fast", "s7", "gpu")


def report(results):
    lines = ["# Benchmarks", "", "Written by `make bench` (`python -m bench.run`); every figure below comes from the "
             "run named above its table, and `bench/results.json` has them all. Sections marked *capped* were "
             "measured with oneDNN's and ATen's kernels held to fewer instructions (`make bench-avx2`: those of an "
             "AVX2 laptop) on the CPU named."]
    rows = targets(results)
    if rows:
        lines += ["", "## Targets", "", *table(["target", "measured", "met"],
                                              [(t, m, "yes" if ok else "**no**") for t, m, ok in rows], "llc")]
    timed = []
    for name, (title, lines_of) in SECTION_REPORTS.items():
        for key in keys_of(results, name):
            section = results[key]
            lines += ["", f"## {title}{capped(section)}", "", measured_on(section), "", *lines_of(section)]
            if name in RUN_SECTIONS:
                timed.append((title + capped(section), runs_of(section)))
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
    "fast": lambda data: {"runs": [timed_run("net", RECIPES["fast"], s, "cpu", data) for s in SEEDS]},
    "s7": lambda data: {"runs": [timed_run("final", RECIPES["s7"], s, "cpu", data) for s in SEEDS]},
    "gpu": lambda data: {"runs": [timed_run("net", RECIPES["fast"], s, "cuda", data) for s in SEEDS]},
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
    caps = " ".join(f"{name}={os.environ[name]}" for name in CAP_VARIABLES if os.environ.get(name))
    command = "make bench" if everything and not caps else " ".join([caps, "python -m bench.run", *sys.argv[1:]])
    data = Data(mnist_dir=args.data_dir)
    for name in args.only.split(","):
        if name == "gpu" and not torch.cuda.is_available():
            print("gpu: no CUDA GPU here, section skipped")
            continue
        measured = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command.strip(),
                    "machine": machine()}
        results[section_key(name, isa_cap())] = {"measured": measured, **SECTIONS[name](data)}
        RESULTS.write_text(json.dumps(results, indent=1))  # after each section: a crash keeps what was measured
    report(results)
    print(f"wrote {REPORT.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
