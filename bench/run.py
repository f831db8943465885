"""`make bench`: the classic pipeline against the fast one, and the S7 model, on this machine.

Writes BENCHMARKS.md (tables) and bench/results.json (every figure). Each section carries its own
machine, date and command, so that re-running one section (say `--only gpu` on a GPU machine) leaves
the others labelled with where they were measured. Each timed training run is a child process of this
one, so that its peak memory is its own.

    python -m bench.run                      # everything (about 20 min on 2 CPU cores)
    python -m bench.run --only throughput    # one section: throughput, fp32, profile, classic, fast, s7, gpu
    make bench-avx2                          # as an AVX2 laptop computes: oneDNN's and ATen's kernels capped

Sections are kept per kind of CPU (`fast@avx512-bf16`, `fast@avx2`), and a cap (ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2, set before Python starts: torch reads them as it loads) keeps its own
(`fast@avx2-capped`), so that figures of one kind never overwrite another's.
"""


import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.measure import SEEDS, child, classic_epoch, fp32_layouts, machine, profile, throughput, timed_run
from bench.report import REPORT, report, section_key
from mnist import Data
from recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")  # read once, as torch loads


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
        results[section_key(name, measured["machine"])] = {"measured": measured, **SECTIONS[name](data)}
        RESULTS.write_text(json.dumps(results, indent=1))  # after each section: a crash keeps what was measured
    report(results)
    print(f"wrote {REPORT.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
