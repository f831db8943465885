"""The benchmark's own logic (the timed runs themselves are `make bench`, not a test)."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import bench.measure as measure
import bench.report as report
import devices
from bench.run import RESULTS
from mnist import TensorLoader
from model import Net


def test_throughput_counts_only_the_timed_batches(monkeypatch):
    """A clock that moves 1 s per batch drawn: 5 timed batches of 8 images after the warm-up take 5 s, so 8 img/s;
    counting a warm-up batch, or timing one, would give another figure."""
    now, drawn = [0.0], []

    def batches():  # 8 images each, as many as asked for
        while True:
            drawn.append(1)
            now[0] += 1.0
            yield torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    ips = measure.train_steps_per_second(batches(), Net(), torch.device("cpu"), devices.FP32, 5)
    assert len(drawn) == measure.WARMUP_BATCHES + 5 and ips == 8.0


def test_the_timed_step_is_the_training_step(monkeypatch):
    """The benchmark times `training.train_step`, with the grad scaler that fp16 training uses."""
    taken = []
    monkeypatch.setattr(measure, "train_step", lambda t, x, y: taken.append((t.scaler.is_enabled(), len(y))))
    loader = TensorLoader(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)), 8)
    fp16 = devices.choose_precision(torch.device("cpu"), "float16")
    measure.train_steps_per_second(loader, Net(), torch.device("cpu"), fp16, 2)
    assert taken == [(True, 8)] * (measure.WARMUP_BATCHES + 2)


MEASURED = {"date": "2026-11-23 10:00 UTC", "command": "make bench",
            "machine": {"cpu": "AMD EPYC", "cores": 2, "isa": "AVX512-BF16", "gpu": None, "torch": "2.14.1"}}
RUN = {"model": "net", "recipe": {"epochs": 3, "pipeline": "fast", "batch_size": 128}, "precision": "bfloat16 (..)",
       "seed": 1, "final_acc": 99.5, "test_acc": [99.0, 99.3, 99.5], "load_seconds": 1.0, "fit_seconds": 150.0,
       "wall_seconds": 151.0, "peak_rss_mib": 900.0, "epoch_seconds": [50.0, 50.0, 50.0]}


def test_report_writes_every_section(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "REPORT", tmp_path / "BENCHMARKS.md")
    gpu_machine = {**MEASURED, "date": "2026-11-27 09:00 UTC", "command": "python -m bench.run --only gpu",
                   "machine": {**MEASURED["machine"], "cpu": "Intel Xeon", "cores": 16, "gpu": "NVIDIA H200"}}
    results = {"throughput": {"measured": MEASURED, "batches": 30, "batch_size": 512, "classic_img_s": 400.0,
                              "fast_img_s": 1200.0, "ratio": 3.0, "fast_precision": "bfloat16",
                              "recipe_batch_size": 128, "recipe_batches": 120, "recipe_img_s": 1400.0,
                              "compiled_img_s": 900.0, "compile_warmup_s": 24.0, "flops_per_image": 224e6,
                              "peak_gflops": {"float32": 146.0, "bfloat16": 410.0}},
               "fp32": {"measured": MEASURED, "images": 7680,
                        "rows": [{"batch_size": 128, "layout": "channels_last", "img_s": 500.0},
                                 {"batch_size": 128, "layout": "contiguous", "img_s": 560.0}]},
               "profile": {"measured": MEASURED, "batches": 10, "batch_size": 128, "img_s": 1000.0,
                           "ops": [{"op": "aten::convolution_backward", "calls": 40, "self_ms": 500.0, "share": 0.5}]},
               "classic": {"measured": MEASURED,
                           "runs": [{**RUN, "recipe": {"epochs": 1, "pipeline": "classic", "batch_size": 512}}]},
               "fast": {"measured": MEASURED, "runs": [RUN, {**RUN, "seed": 2}]},
               "gpu": {"measured": gpu_machine, "runs": [{**RUN, "fit_seconds": 5.0}]}}
    report.report(json.loads(json.dumps(results)))
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "**3.00x**" in text and "| 2 | 99.50% |" in text and "50 s/epoch measured x 20 = **17 min**" in text
    assert "| `aten::convolution_backward` | 40 | 500 | 50.0% |" in text
    assert "| eager (what the recipe uses) | 1400 | 3.50x |" in text and "after 24 s of compiling" in text
    assert "| fast recipe on AVX512-BF16 | `net` | 128 | 50.0 | 150 |" in text
    assert "1400 img/s is 314 GFLOP/s: **76% of this CPU's bfloat16 matmul peak**" in text
    # the targets: the ratio misses 3.5x, both fast runs reach 99.4% within 180 s, the GPU run is too slow
    assert "| 3.00x | **no** |" in text and "| 99.50% / 99.50% | yes |" in text and "| 151 s / 151 s | yes |" in text
    assert "| 99.50% in 5.0 s | **no** |" in text
    # each section under its own machine: the GPU run does not relabel the CPU figures
    cpu_line = "Measured by `make bench` on 2026-11-23 10:00 UTC: AMD EPYC (AVX512-BF16), 2 cores, torch 2.14.1."
    assert text.count(cpu_line) == 5
    assert "fastest: batch 128, contiguous." in text and "| 128 | contiguous | 560 |" in text
    gpu_section = text[text.index("## fast recipe on GPU"):]
    assert "Intel Xeon (AVX512-BF16), 16 cores, GPU NVIDIA H200" in gpu_section and "AMD EPYC" not in gpu_section


def test_sections_are_kept_per_kind_of_cpu_and_capped_ones_apart(tmp_path, monkeypatch):
    """`make bench-avx2` on an AVX512-BF16 CPU, and a real AVX2 CPU: each one's figures sit beside the others,
    never over them, and each heading says which kind of CPU they hold on."""
    monkeypatch.setattr(report, "REPORT", tmp_path / "BENCHMARKS.md")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(measure, "cpu_isa", lambda capped=True: "AVX2" if capped else "AVX512-BF16")
    capped = {**MEASURED, "machine": measure.machine()}
    assert capped["machine"]["isa_cap"] == "AVX2" and capped["machine"]["cpu_isa"] == "AVX512-BF16"
    laptop = {**MEASURED, "machine": {**MEASURED["machine"], "isa": "AVX2", "cpu_isa": "AVX2", "isa_cap": None}}
    assert [report.section_key("fast", m["machine"]) for m in (MEASURED, capped, laptop)] == [
        "fast@avx512-bf16", "fast@avx2-capped", "fast@avx2"]
    throughput = {"batches": 30, "batch_size": 512, "classic_img_s": 400.0, "fast_img_s": 1200.0, "ratio": 3.0,
                  "fast_precision": "float32", "recipe_batch_size": 128, "recipe_batches": 120, "recipe_img_s": 700.0,
                  "compiled_img_s": 900.0, "compile_warmup_s": 24.0, "flops_per_image": 224e6,
                  "peak_gflops": {"float32": 146.0, "bfloat16": 410.0}}
    classic_run = {**RUN, "recipe": {"epochs": 1, "pipeline": "classic", "batch_size": 512},
                   "precision": "torch.float32"}  # as older records have it
    report.report(json.loads(json.dumps({
        "fast@avx2-capped": {"measured": capped, "runs": [{**RUN, "wall_seconds": 300.0}]},
        "fast@avx512-bf16": {"measured": MEASURED, "runs": [RUN]},
        "fast@avx2": {"measured": laptop, "runs": [{**RUN, "wall_seconds": 200.0}]},
        "throughput@avx2-capped": {"measured": capped, **throughput},
        "throughput@avx512-bf16": {"measured": MEASURED, **throughput},
        "classic@avx512-bf16": {"measured": MEASURED, "runs": [classic_run]}})))
    text = (tmp_path / "BENCHMARKS.md").read_text()
    headings = ["## fast recipe on AVX2\n", "## fast recipe on AVX2 kernels (capped), AVX512-BF16 CPU\n",
                "## fast recipe on AVX512-BF16\n"]
    assert [text.index(h) for h in headings] == sorted(text.index(h) for h in headings)
    assert "(load + train + eval) on AVX512-BF16 | 151 s | yes |" in text
    assert "(load + train + eval) on AVX2 | 200 s | **no** |" in text
    assert "(load + train + eval) on AVX2 kernels (capped), AVX512-BF16 CPU | 300 s | **no** |" in text
    assert "AMD EPYC (AVX512-BF16) computing as an AVX2 CPU (ONEDNN_MAX_CPU_ISA=AVX2" in text
    start = text.index("## Training throughput, S5 `Net` on AVX2 kernels (capped)")
    capped_throughput = text[start : text.index("\n## ", start + 1)]
    assert "matmul peak**" not in capped_throughput and "No share of the matmul peak under a cap" in capped_throughput
    assert text.count("of this CPU's float32 matmul peak**") == 1  # the uncapped section's
    assert "`net`, 1 epoch, classic pipeline, float32." in text


def test_report_reads_the_committed_results(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "REPORT", tmp_path / "BENCHMARKS.md")
    results = json.loads(RESULTS.read_text())
    assert all("measured" in section for section in results.values())
    report.report(results)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Targets" in text and text.count("Measured by") == len(results)
    assert "matmul peak" in text or "peak_gflops" not in results["throughput"]


def test_targets_fail_when_one_seed_misses():
    run = {"test_acc": [99.0] * 7 + [99.45, 99.5, 99.41] + [99.5, 99.39, 99.6], "final_acc": 99.6}
    rows = report.targets({"s7": {"measured": MEASURED, "runs": [run, {**run, "test_acc": [99.5] * 15}]}})
    assert [met for _, _, met in rows] == [False, True]  # 99.39 in the last 3; epochs 8-10 all >= 99.4


def test_flops_per_training_image_and_the_matmul_peak():
    assert 200e6 < measure.train_flops_per_image(Net()) < 250e6  # ~3x the forward pass's ~75 MFLOP
    assert measure.matmul_gflops(torch.float32, seconds=0.05) > 0


def test_markdown_table():
    assert report.table(["a", "b"], [(1, "x")], "lr") == ["| a | b |", "|---|---:|", "| 1 | x |"]


def test_profile_names_the_costliest_operators():
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    ops = measure.profile_ops(TensorLoader(images, labels, 16), torch.device("cpu"), devices.FP32, batches=2, top=5)
    assert 0 < len(ops) <= 5 and all(0 < o["share"] <= 1 for o in ops)
    assert any("conv" in o["op"] for o in ops)


def test_peak_memory_is_this_process_not_its_parent():
    big = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB in the parent
    big += 1
    code = "import bench.measure as b; print(b.peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=Path(measure.__file__).parents[1]).stdout)
    assert 0 < child < measure.peak_rss_mib()


def test_fp32_layouts_measures_each_batch_size_in_both_layouts(monkeypatch):
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    monkeypatch.setattr(measure, "fast_loaders", lambda recipe, *args: (TensorLoader(images, labels, recipe.batch_size,
                                                                                   shuffle=True, seed=0), None))
    seen = []
    monkeypatch.setattr(measure, "train_steps_per_second", lambda loader, model, device, precision, batches:
                        seen.append((loader.batch_size, model.conv2.weight.is_contiguous(
                            memory_format=torch.channels_last), precision, batches)) or 100.0)
    result = measure.fp32_layouts(None, batch_sizes=(8, 16), images=64)
    assert seen == [(8, True, devices.FP32, 8), (8, False, devices.FP32, 8), (16, True, devices.FP32, 4),
                    (16, False, devices.FP32, 4)]
    assert [(r["batch_size"], r["layout"]) for r in result["rows"]] == [(8, "channels_last"), (8, "contiguous"),
                                                                        (16, "channels_last"), (16, "contiguous")]
