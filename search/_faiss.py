"""faiss, imported with its BLAS set to the right kernels for this CPU.

The ``faiss-cpu`` wheels (1.15) bundle OpenBLAS 0.3.15, which does not know Intel CPUs newer than Cooper Lake
(Sapphire and Emerald Rapids, CPU models 143 and 207) and falls back to its SSE3 "Prescott" kernels: the
matrix products under every flat search then run about 3 times slower than they could (measured by
``bench/catalog_jobs.py``: 10k x 10k top-21 in 3.3 s against 1.1 s). OpenBLAS reads ``OPENBLAS_CORETYPE``
when it loads, so before the first import of faiss, when the variable is unset, it is set from the CPU's flags:
``SkylakeX`` (AVX-512 F/BW/VL/DQ/CD) or ``Haswell`` (AVX2 + FMA). Nothing changes when the variable is set,
off Linux, or when faiss was already imported. The same value is valid for any other OpenBLAS the process (or
its children) loads later: it names kernels the CPU runs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

_SKYLAKEX = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
_HASWELL = {"avx2", "fma"}


def openblas_coretype(cpuinfo: str) -> str | None:
    """The OpenBLAS core type for a CPU described by ``/proc/cpuinfo`` text, or None to let OpenBLAS choose."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            if flags >= _SKYLAKEX:
                return "SkylakeX"
            if flags >= _HASWELL:
                return "Haswell"
            return None
    return None


def _set_coretype() -> None:
    if "OPENBLAS_CORETYPE" in os.environ or "faiss" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        core = openblas_coretype(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return
    if core is not None:
        os.environ["OPENBLAS_CORETYPE"] = core
        logger.debug("OPENBLAS_CORETYPE=%s set for faiss's bundled OpenBLAS", core)


_set_coretype()

import faiss  # noqa: E402  (after the environment is set)

__all__ = ["faiss", "openblas_coretype"]
