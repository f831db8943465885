"""What `make bench` measures, and how: training steps per second (`train_step`, as training takes them), the
FLOPs of a step and the CPU's matmul peak, where a step spends its time, and timed training runs, each in a child
process so that its peak memory is its own."""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
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
THROUGHPUT_BATCHES = 30  # timed batches of 512 per pipeline, after WARMUP_BATCHES
WARMUP_BATCHES = 3
FP32_IMAGES = 7680  # timed images per float32 configuration (60 batches of 128)
PROFILE_BATCHES = 10  # profiled fast-path batches of the fast recipe's size
SEEDS = (1, 2, 3)
CPU = torch.device("cpu")


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
                   cwd=ROOT, check=True, env={**os.environ, "HEADLESS": "1"})  # a line per epoch, not a progress bar
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
