"""What this machine's processor does fast: the choices `auto` settings make (training precision, the
bfloat16 LM head of greedy decoding) depend on it."""

from __future__ import annotations


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); read from /proc/cpuinfo.

    Without them oneDNN still runs bfloat16 (emulated with AVX-512), but slower than float32: on a
    2-core Xeon without AVX512-BF16 a bfloat16 matrix product reached 66 GFLOP/s against 313 in float32,
    and bfloat16 decoding ran at half float32's speed (benchmarks/README.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
