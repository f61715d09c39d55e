"""Which dtype policy a CPU run trains with.

Keras' `mixed_bfloat16` computes convolutions and dense layers in bfloat16 and keeps the
weights in float32. On a CPU that has bfloat16 instructions (AVX512-BF16 or AMX) oneDNN runs
those layers faster than in float32 (`python -m swapstream.trainer.measure --precision
float32,mixed_bfloat16` shows by how much). Without such instructions bfloat16 is emulated and
slower, so a CPU run only uses it where the processor says it has them.
"""
from __future__ import annotations

from swapstream.faces.errors import InputError

POLICIES = ("float32", "mixed_bfloat16")
CHOICES = ("auto", *POLICIES)
# /proc/cpuinfo flags of native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the processor lists a native bfloat16 instruction set (Linux; else False)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_FLAGS)
    except OSError:
        pass
    return False


def resolve_precision(choice: str, preset_policy: str) -> str:
    """The dtype policy for `--precision choice`: an explicit policy as given; "auto" keeps a
    preset's mixed policy (the `gpu` preset) and turns a float32 one into mixed_bfloat16 when
    the CPU computes bfloat16 natively."""
    if choice not in CHOICES:
        raise InputError(f"--precision must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice
    if preset_policy == "float32" and cpu_has_bf16():
        return "mixed_bfloat16"
    return preset_policy
