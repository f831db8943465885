"""The device and what depends on it: the pick, the precision, the memory layout, where generators live, the CPU
probe (its name, its instructions, within the cap set on oneDNN), and the random generators' state. Knows no data
and no model."""

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import torch

CPUINFO = "/proc/cpuinfo"  # Linux's description of the CPU; other systems have none


def get_device(name=None):
    """The device to train on: `name` ('cuda', 'mps', 'cpu') if given, else the best there is."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = str(name).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here (no NVIDIA GPU, or a CPU-only torch): "
                         "use 'cpu' or 'auto'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is only on Apple-silicon Macs (macOS 12.3+): use 'cpu' or 'auto'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}: use 'cuda', 'mps', 'cpu' or 'auto'")
    return torch.device(name)


def seed_everything(seed):
    """Seed Python's and torch's generators (all devices): same seed, same run on CPU."""
    random.seed(seed)
    torch.manual_seed(seed)


# oneDNN's instruction-set levels as its dnnl_cpu_isa_t bit masks: a level includes each level whose bits it has
ONEDNN_ISAS = {"SSE41": 0x1, "AVX": 0x3, "AVX2": 0x7, "AVX2_VNNI": 0xF, "AVX2_VNNI_2": 0x1F, "AVX512_CORE": 0x27,
               "AVX512_CORE_VNNI": 0x67, "AVX512_CORE_BF16": 0xE7, "AVX10_1_512": 0x1EF, "AVX512_CORE_FP16": 0x1EF,
               "AVX10_1_512_AMX": 0xFEF, "AVX512_CORE_AMX": 0xFEF, "AVX10_1_512_AMX_FP16": 0x1FEF,
               "AVX512_CORE_AMX_FP16": 0x1FEF}
# (Linux's flag, the name people know, the oneDNN level that uses it), widest first
CPU_ISAS = [("amx_bf16", "AMX", "AVX512_CORE_AMX"), ("avx512_bf16", "AVX512-BF16", "AVX512_CORE_BF16"),
            ("avx512f", "AVX-512", "AVX512_CORE"), ("avx2", "AVX2", "AVX2"), ("avx", "AVX", "AVX"),
            ("sse4_1", "SSE4.1", "SSE41")]


def isa_cap():
    """The cap set on oneDNN's instruction set (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA), which
    no torch API reports; None if there is none, or one oneDNN ignores (ALL, DEFAULT, a typo)."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").upper()
        if value:
            return value if value in ONEDNN_ISAS else None
    return None


def read_cpuinfo(cpuinfo=CPUINFO):
    """The text of Linux's CPU description, or '' where there is none (macOS, Windows): the one place it is read."""
    try:
        return Path(cpuinfo).read_text()
    except OSError:
        return ""


def cpu_name(cpuinfo=CPUINFO):
    """The CPU as its maker names it ('AMD EPYC 9B14 96-Core Processor'); what Python knows where Linux does not say."""
    names = [line.split(":", 1)[1].strip() for line in read_cpuinfo(cpuinfo).splitlines()
             if line.startswith("model name") and ":" in line]
    return names[0] if names else platform.processor()


def cpu_isa(cpuinfo=CPUINFO, capped=True):
    """The widest instructions training here can use, by the name people know ('AVX512-BF16', 'AVX2', ...): the
    CPU's widest, within oneDNN's cap if one is set (and `capped`); the machine's kind ('arm64', ...) where Linux
    lists no flags."""
    flags = set(read_cpuinfo(cpuinfo).split())
    cap = ONEDNN_ISAS.get(isa_cap(), -1) if capped else -1  # -1: every bit allowed
    for flag, name, level in CPU_ISAS:
        if flag in flags and ONEDNN_ISAS[level] & ~cap == 0:
            return name
    return platform.machine()


def cpu_has_fast_bf16(cpuinfo=CPUINFO):
    """True on CPUs with native bf16 dot products (AVX512-BF16 or AMX) that oneDNN may use; elsewhere, and under a
    cap below them (an AVX2 laptop's, say), bf16 is emulated, and slow."""
    return cpu_isa(cpuinfo) in ("AMX", "AVX512-BF16")


def native_bf16(device):
    """Whether `device` computes in bf16 natively. On CUDA, not through emulation: a T4 (Colab's free GPU)
    reports bf16 support by default only because torch can emulate it, slowly."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast to `dtype` (None: plain fp32), and why that was chosen."""

    dtype: torch.dtype | None
    why: str

    @property
    def scaled(self):
        """fp16's narrow range needs loss scaling (a GradScaler); bf16 keeps fp32's range."""
        return self.dtype == torch.float16

    def autocast(self, device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def __str__(self):
        name = "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        return f"{name}{' + GradScaler' if self.scaled else ''} ({self.why})"


FP32 = Precision(None, "full precision")


def choose_precision(device, requested="auto", native=None):
    """The `Precision` for `device`: the `requested` one, or with 'auto' bf16 where it is native (recent GPUs,
    CPUs with AVX512-BF16/AMX), fp16 + GradScaler on GPUs without it, fp32 elsewhere (MPS, older CPUs).
    `native` (whether the device has native bf16) is asked of the hardware unless given."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return Precision(None if requested == "float32" else getattr(torch, requested), "as the recipe asks")
    native = native_bf16(device) if native is None else native
    if device.type == "cuda":
        return (Precision(torch.bfloat16, "native bf16 on this GPU") if native
                else Precision(torch.float16, "no native bf16 on this GPU"))
    if device.type == "cpu":
        return (Precision(torch.bfloat16, "native bf16 on this CPU") if native
                else Precision(None, "no native bf16 on this CPU: it would be emulated, and slow"))
    return Precision(None, f"mixed precision gains little on {device.type}")


def generator_device(device):
    """Where a loader's random generator lives: on the device itself, except on MPS, whose generators
    randperm and rand do not accept (pytorch#110820); there the numbers are drawn on the CPU and moved."""
    return torch.device("cpu") if device.type == "mps" else device


def memory_format(device):
    """channels_last makes convolutions faster on CPUs and CUDA; on MPS its conv backward was ~30x slower
    until mid-2026 (pytorch#193349), so there the usual layout."""
    return torch.contiguous_format if device.type == "mps" else torch.channels_last


def device_name(device):
    """The device as a person knows it: 'cuda (NVIDIA H200)', 'cpu (2 threads)', 'mps'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def capture_rng(generator=None):
    """The state of torch's generators (the CPU's, every GPU's) and of `generator` (a loader's), for `restore_rng`:
    what is drawn after restoring is what would have been drawn without whatever ran in between."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loader": generator.get_state() if generator is not None else None}


def restore_rng(state, generator=None):
    """Put back the generators' state that `capture_rng` took (a loader's into `generator`, if both have one)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state["loader"] is not None:
        generator.set_state(state["loader"])
