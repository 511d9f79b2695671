"""Keep freed memory for reuse in the frame loop (glibc only).

Every frame allocates and frees the same few large images (a 1080p frame is 6 MB; crops, masks and the
heatmap wash are 0.3-1 MB). glibc serves such blocks with mmap and returns them to the kernel on free,
so the next frame's identical allocation page-faults all its pages in again: measured here, that put
0.8 ms on the runtime's p95 per-frame overhead at 1080p. Serving them from the heap and not trimming it
lets the loop reuse the same memory frame after frame. Elsewhere (musl, macOS, Windows) this is a no-op.
RATING_EDGE_MALLOC_TUNE=0 turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its adaptive threshold; frames stay below it
TRIM_THRESHOLD = 64 << 20  # freed heap kept for reuse, up to this much (about ten 1080p frames)

_done = None


def keep_freed_memory() -> bool:
    """Apply the allocator settings once per process; True when they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("RATING_EDGE_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
