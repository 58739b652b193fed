"""Where and in which precision an encoder runs: the device, native bfloat16, ``--precision auto``."""

from __future__ import annotations

import os
from pathlib import Path

from negmine.errors import BadInputError

# The encoder's weights and activations while encoding (``--precision``); embeddings are normalised
# in float32 whatever the precision. bfloat16 is faster on a CPU that multiplies it in hardware
# (AVX512-BF16 or AMX, :func:`native_bfloat16`) and slower where torch emulates it; its embeddings differ
# from float32's only by rounding. bench/encode_efficiency.py --precision bfloat16 measures the speed and the
# embeddings' difference, bench/precision_quality.py the retrieval quality; float16 is for GPUs.
# "auto" (the CLI's default) is :func:`resolve_precision`'s choice for the device.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


_CPUINFO = Path("/proc/cpuinfo")


# Device files of a GPU torch could use (NVIDIA's driver, ROCm, WSL): where none exists, "auto" decides
# for the CPU without importing torch, so a cached rerun stays as light as with an explicit precision.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX): without those
    instructions torch emulates bfloat16 and it is slower than float32. Linux: the kernel's CPU flags
    (no torch import); elsewhere torch's own probes."""
    try:
        flags = set(_CPUINFO.read_text(encoding="ascii", errors="replace").split())
    except OSError:
        import torch

        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(probe()) for probe in probes if probe is not None)
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_threads() -> int:
    """The threads torch computes with by default, found without importing it: ``OMP_NUM_THREADS``, else
    ``MKL_NUM_THREADS``, else one per physical core (torch's rule), counting only the CPUs this process may run on."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology: count each CPU as a core
    return max(1, len(cores))


def auto_device() -> str:
    """The device "auto" decides for: the CPU on a Linux machine with no GPU device file, else torch's answer."""
    if _CPUINFO.exists() and not any(Path(f).exists() for f in GPU_DEVICE_FILES):
        return "cpu"
    return default_device()


def resolve_precision(precision: str, device: str | None = None) -> str:
    """The precision an encoder runs in: ``precision`` itself, or for "auto" bfloat16 where the
    hardware computes it natively (a CPU with AVX512-BF16 or AMX; a GPU that supports it, else
    float16) and float32 elsewhere. Checked as :func:`check_precision` checks."""
    precision = check_precision(precision, device)
    if precision != "auto":
        return precision
    device = str(device or auto_device())
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "cpu" and native_bfloat16():
        return "bfloat16"
    return "float32"


def check_precision(precision: str, device: str | None = None) -> str:
    if precision not in PRECISIONS:
        raise BadInputError("--precision", f"unknown value {precision!r}; choose from {sorted(PRECISIONS)}")
    if precision == "float16" and (device or default_device()) == "cpu":
        raise BadInputError("--precision", "float16 needs a GPU (CPU kernels for it are slow or missing); on CPU use bfloat16")
    return precision


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
