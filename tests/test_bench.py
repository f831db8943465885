"""The benchmark's own logic (the timed runs themselves are `make bench`, not a test)."""

import json
import subprocess
import sys
from pathlib import Path

import torch

import bench.run as bench
from model import Net
from utils import TensorLoader


def test_throughput_counts_only_the_timed_batches():
    images, labels = torch.randn(20 * 8, 1, 28, 28), torch.randint(0, 10, (20 * 8,))
    ips = bench.train_steps_per_second(TensorLoader(images, labels, 8), Net(), torch.device("cpu"), None, 5)
    assert 0 < ips < 1e6


def test_report_writes_every_section(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "REPORT", tmp_path / "BENCHMARKS.md")
    run = {"model": "net", "recipe": {"epochs": 3, "pipeline": "fast", "batch_size": 128},
           "precision": "torch.bfloat16", "seed": 1,
           "final_acc": 99.5, "test_acc": [99.0, 99.3, 99.5], "load_seconds": 1.0, "fit_seconds": 150.0,
           "wall_seconds": 151.0, "peak_rss_mib": 900.0, "epoch_seconds": [50.0, 50.0, 50.0]}
    results = {"command": "make bench", "date": "2026-11-23", "machine": bench.machine(),
               "throughput": {"batches": 30, "batch_size": 512, "seed_img_s": 400.0, "fast_img_s": 1200.0,
                              "ratio": 3.0, "fast_precision": "torch.bfloat16", "recipe_batch_size": 128,
                              "recipe_batches": 120, "recipe_img_s": 1400.0, "compiled_img_s": 900.0,
                              "compile_warmup_s": 24.0},
               "profile": {"batches": 10, "batch_size": 128, "img_s": 1000.0,
                           "ops": [{"op": "aten::convolution_backward", "calls": 40, "self_ms": 500.0, "share": 0.5}]},
               "classic": {**run, "recipe": {"epochs": 1, "pipeline": "classic", "batch_size": 512}},
               "fast": [run, {**run, "seed": 2}]}
    bench.report(json.loads(json.dumps(results)))
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "**3.00x**" in text and "| 2 | 99.50% |" in text and "50 s/epoch measured x 20 = **17 min**" in text
    assert "| `aten::convolution_backward` | 40 | 500 | 50.0% |" in text
    assert "| eager (what the recipe uses) | 1400 | 3.50x |" in text and "after 24 s of compiling" in text
    assert "| fast recipe | `net` | 128 | 50.0 | 150 |" in text
    # the targets: the ratio misses 3.5x, both fast runs reach 99.4% within 180 s
    assert "| 3.00x | **no** |" in text and "| 99.50% / 99.50% | yes |" in text and "| 151 s / 151 s | yes |" in text


def test_targets_fail_when_one_seed_misses():
    run = {"test_acc": [99.0] * 7 + [99.45, 99.5, 99.41] + [99.5, 99.39, 99.6], "final_acc": 99.6}
    rows = bench.targets({"s7": [run, {**run, "test_acc": [99.5] * 15}]})
    assert [met for _, _, met in rows] == [False, True]  # 99.39 in the last 3; epochs 8-10 all >= 99.4


def test_profile_names_the_costliest_operators():
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    ops = bench.profile_ops(TensorLoader(images, labels, 16), torch.device("cpu"), None, batches=2, top=5)
    assert 0 < len(ops) <= 5 and all(0 < o["share"] <= 1 for o in ops)
    assert any("conv" in o["op"] for o in ops)


def test_peak_memory_is_this_process_not_its_parent():
    big = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB in the parent
    big += 1
    code = "import bench.run as b; print(b.peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=Path(bench.__file__).parents[1]).stdout)
    assert 0 < child < bench.peak_rss_mib()
