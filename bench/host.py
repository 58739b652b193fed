"""One line naming the CPU a benchmark ran on: which encoder precisions are fast depends on it."""

from __future__ import annotations

import os


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
