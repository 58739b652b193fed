"""The CPU's own peak floating-point rate, from what /proc/cpuinfo says the CPU is.

    peak FLOP/s = cores × float32 FMA lanes per cycle per core × 2 (an FMA is a multiply and an add) × clock

float32 FMA lanes per core and cycle = FMA pipes × vector width in bits / 32, from the table in
``datapath`` (AMD's Software Optimization Guides for families 17h, 19h and 1Ah; Intel's Optimization
Reference Manual and its Xeon Scalable product briefs). bfloat16: AVX512-BF16's VDPBF16PS multiplies two
bfloat16 pairs per float32 lane, twice the float32 rate per vector; AMX's TDPBF16PS does 1,024 bfloat16
FLOP per cycle per core (Intel's figure for Sapphire Rapids). Without either, bfloat16 products run
converted to float32: the float32 peak applies.

Cores are physical cores (SMT siblings share their FMA pipes) among the CPUs this process may run on;
the clock is cpufreq's ``cpuinfo_max_freq`` where the kernel exposes it, else the highest ``cpu MHz``
(in a VM usually the nominal clock: a boost clock above it makes the real peak higher). No AVX
frequency drop is assumed, so on CPUs that have one the peak is optimistic and the floor generous.

    python bench/cpu_peak.py    # prints this host's peaks and the assumptions behind them
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
# Intel client cores with AVX-512 and a single 512-bit FMA pipe (ports 0 and 1 fused):
# Cannon Lake, Ice Lake client, Tiger Lake, Rocket Lake
INTEL_CLIENT_AVX512 = {0x66, 0x7D, 0x7E, 0x8C, 0x8D, 0xA7}
# Xeon Scalable with one 512-bit FMA pipe: Bronze, Silver and Gold 5100/5200 (bar the Gold 5122)
INTEL_ONE_FMA = re.compile(r"Bronze|Silver|Gold 5(?!122)[12]\d\d")
AMX_BF16_FLOP_PER_CYCLE = 1024


@dataclass(frozen=True)
class Datapath:
    """FMA pipes per core and their width, with the CPU generation the table took them from."""

    pipes: int
    bits: int
    source: str

    @property
    def float32_lanes(self) -> int:
        return self.pipes * self.bits // 32


@dataclass(frozen=True)
class Peak:
    flops: float  # FLOP/s
    how: str  # the formula with this host's numbers


def datapath(vendor: str, family: int, model: int, flags: set[str], name: str = "") -> Datapath:
    """The float32 FMA datapath of one core; an unknown CPU gets two pipes of its widest vector (said so)."""
    if vendor == "AuthenticAMD":
        if family == 23:  # 17h
            if model < 0x30:
                return Datapath(2, 128, "Zen/Zen+ (family 23, model < 0x30): 2×128-bit FMA pipes, AVX2 in two halves")
            return Datapath(2, 256, "Zen 2 (family 23, model ≥ 0x30): 2×256-bit FMA pipes")
        if family == 25:  # 19h
            if "avx512f" in flags:
                return Datapath(2, 256, "Zen 4 (family 25 with AVX-512): 2×256-bit FMA pipes, AVX-512 in two halves")
            return Datapath(2, 256, "Zen 3 (family 25): 2×256-bit FMA pipes")
        if family == 26:  # 1Ah
            if model < 0x20 or 0x40 <= model < 0x50:
                return Datapath(2, 512, "Zen 5 server/desktop (family 26, model < 0x20 or 0x40–0x4f): 2×512-bit FMA pipes")
            return Datapath(2, 256, "Zen 5, other models (family 26; mobile parts): 2×256-bit FMA pipes, AVX-512 in two halves")
    if vendor == "GenuineIntel" and "fma" in flags:
        if "avx512f" in flags:
            if model in INTEL_CLIENT_AVX512:
                return Datapath(1, 512, "Intel client core with AVX-512 (Ice/Tiger/Rocket Lake): 1×512-bit FMA pipe")
            if INTEL_ONE_FMA.search(name):
                return Datapath(1, 512, "Xeon Bronze/Silver/Gold 5100–5200: 1×512-bit FMA pipe")
            return Datapath(2, 512, "Intel with AVX-512 (Xeon Scalable Gold 6xxx/Platinum and later): 2×512-bit FMA pipes")
        return Datapath(2, 256, "Intel with AVX2 and FMA (Haswell and later): 2×256-bit FMA pipes")
    bits = 512 if "avx512f" in flags else 256 if {"avx2", "fma"} & flags else 128
    return Datapath(2, bits, f"not in the table ({vendor or '?'} family {family} model {model}): assumed 2×{bits}-bit FMA pipes")


def read_cpuinfo(text: str) -> list[dict[str, str]]:
    """One dict per processor block of /proc/cpuinfo."""
    blocks = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def physical_cores(processors: list[dict[str, str]], cpus: set[int]) -> int:
    """Distinct (package, core) pairs among the CPUs given; their count where the kernel names no cores."""
    ours = [p for p in processors if int(p.get("processor", -1)) in cpus]
    if ours and all("core id" in p for p in ours):
        return len({(p.get("physical id"), p["core id"]) for p in ours})
    return len(cpus)


def peaks(cpuinfo: str | None = None, max_freq_khz: int | None = None, cpus: set[int] | None = None) -> tuple[dict[str, Peak], Datapath] | None:
    """{"float32": Peak, "bfloat16": Peak} and the datapath assumed, for this host (or the text given); None off x86 Linux."""
    host = cpuinfo is None
    try:
        cpuinfo = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    processors = read_cpuinfo(cpuinfo)
    if not processors or "vendor_id" not in processors[0]:
        return None
    first = processors[0]
    flags = set(first.get("flags", "").split())
    path = datapath(first["vendor_id"], int(first.get("cpu family", 0)), int(first.get("model", 0)), flags, first.get("model name", ""))
    cpus = cpus if cpus is not None else os.sched_getaffinity(0)
    cores = physical_cores(processors, cpus)
    clock_from = "given"
    if max_freq_khz is None and host and MAX_FREQ.exists():
        max_freq_khz, clock_from = int(MAX_FREQ.read_text()), "cpuinfo_max_freq"
    if max_freq_khz:
        ghz = max_freq_khz / 1e6
    else:
        ghz, clock_from = max(float(p.get("cpu MHz", 0)) for p in processors) / 1e3, "cpu MHz"
    float32 = cores * path.float32_lanes * 2 * ghz * 1e9
    base = f"{cores} cores × {path.float32_lanes} float32 FMA lanes × 2 × {ghz:.2f} GHz ({clock_from})"
    result = {"float32": Peak(float32, base)}
    if "amx_bf16" in flags:
        result["bfloat16"] = Peak(cores * AMX_BF16_FLOP_PER_CYCLE * ghz * 1e9, f"{cores} cores × {AMX_BF16_FLOP_PER_CYCLE} bfloat16 FLOP per cycle (AMX) × {ghz:.2f} GHz")
    elif "avx512_bf16" in flags:
        result["bfloat16"] = Peak(2 * float32, "2 × the float32 peak (AVX512-BF16: two bfloat16 products per float32 lane)")
    else:
        result["bfloat16"] = Peak(float32, "the float32 peak (no AVX512-BF16 or AMX: bfloat16 runs converted to float32)")
    return result, path


if __name__ == "__main__":
    found = peaks()
    if found is None:
        print("no x86 /proc/cpuinfo here: peak unknown")
    else:
        rates, path = found
        print(f"FMA datapath assumed: {path.source}")
        for precision, peak in rates.items():
            print(f"{precision}: {peak.flops / 1e9:,.0f} GFLOP/s = {peak.how}")
