"""BENCHMARKS.md from bench/results.json: each section's tables under the machine, date and command it was
measured with, and the targets, met or not."""

from pathlib import Path

from bench.measure import WARMUP_BATCHES

REPORT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
TARGET_ACC = 99.4  # % test accuracy, both models
TARGET_RATIO = 3.5  # fast pipeline vs classic pipeline, images/s
TARGET_SECONDS = 180  # fast recipe, wall time per run on the CPU
TARGET_GPU_SECONDS = 2  # fast recipe, training + evaluation on one H100


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


def cpu_class(machine_):
    """The kind of CPU a section's figures hold on: 'avx512-bf16', 'avx2', or 'avx2-capped' for AVX2 kernels on a
    wider CPU (a cap leaves MKL's matrix multiplies as they were, so it is close to an AVX2 CPU, not one)."""
    return machine_.get("isa", "?").lower() + ("-capped" if machine_.get("isa_cap") else "")


def section_key(name, machine_):
    """Where a section's figures are kept: by name and kind of CPU (`fast@avx2`), so that a run on another kind
    of CPU, or under a cap, never overwrites them; a later run on the same kind does."""
    return f"{name}@{cpu_class(machine_)}"


def keys_of(results, name):
    """The keys of section `name` in `results`, one per kind of CPU it was measured on."""
    return sorted(key for key in results if key.partition("@")[0] == name)


def on_cpu(section):
    """' on AVX2', or ' on AVX2 kernels (capped), AVX512-BF16 CPU': which kind of CPU, for headings."""
    machine_ = section["measured"]["machine"]
    if machine_.get("isa_cap"):
        return f" on {machine_['isa']} kernels (capped), {machine_.get('cpu_isa', '?')} CPU"
    return f" on {machine_.get('isa', '?')}"


def targets(results):
    """(target, measured, met) rows for the targets whose sections were run, one per kind of CPU."""
    return [(label + on_cpu(results[key]), measured(results[key]), met(results[key]))
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
             "run named above its table, and `bench/results.json` has them all. Each section is kept per kind of "
             "CPU (AVX512-BF16: native bf16; AVX2: most laptops, fp32); *capped* ones ran with oneDNN's and ATen's "
             "kernels held to AVX2 (`make bench-avx2`) on a wider CPU."]
    rows = targets(results)
    if rows:
        lines += ["", "## Targets", "", *table(["target", "measured", "met"],
                                              [(t, m, "yes" if ok else "**no**") for t, m, ok in rows], "llc")]
    timed = []
    for name, (title, lines_of) in SECTION_REPORTS.items():
        for key in keys_of(results, name):
            section = results[key]
            lines += ["", f"## {title}{on_cpu(section)}", "", measured_on(section), "", *lines_of(section)]
            if name in RUN_SECTIONS:
                timed.append((title + on_cpu(section), runs_of(section)))
    if timed:
        lines += ["", "## Time per epoch (train + test)", "",
                  *table(["run", "model", "batch", "s/epoch", "s/run"],
                         [(title, f"`{rs[0]['model']}`", rs[0]["recipe"]["batch_size"],
                           f"{mean([mean(r['epoch_seconds']) for r in rs]):.1f}",
                           f"{mean([sum(r['epoch_seconds']) for r in rs]):.0f}") for title, rs in timed], "llrrr")]
    REPORT.write_text("\n".join(lines) + "\n")
