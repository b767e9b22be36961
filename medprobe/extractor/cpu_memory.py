"""Keep freed tensor memory in the process on CPU, so each batch reuses pages instead of faulting in new ones.

glibc serves large allocations (activations of a batch) with ``mmap`` and returns them to the kernel on free; its
threshold only adapts after the first frees, so the first few hundred batches of a process page-fault every
activation in again. Measured on 2 cores: EfficientNet-Lite0 extraction ran at 50 images/s in the first 300 images
of a process and at 72 afterwards; with these settings, at 68-75 from the start. Fixing the thresholds makes
allocations below 128 MiB come from the heap and keeps up to 256 MiB of freed memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    return mmap_set and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
