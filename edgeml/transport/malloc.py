"""glibc malloc tuning for processes that move multi-MB tensors through gRPC.

By default glibc serves allocations above a dynamic threshold (128 KiB growing to at most
32 MiB) with ``mmap`` and returns them to the OS on ``free``; it also trims the heap top
once more than 128 KiB is free. gRPC's Python receive path allocates several buffers the
size of the message for every message, so each multi-MB message is written into fresh
pages that the kernel must fault in and zero (``clear_page``), again and again. Raising
the mmap threshold and the trim threshold keeps freed buffers in the process, and the
next message reuses the already-mapped pages: on loopback this made an 8 MB gRPC round
trip about 4x faster (``bench/transport.py``, variants ``flow`` -> ``malloc``).

The cost: up to :data:`TRIM_THRESHOLD` bytes of freed memory per malloc arena may stay
in the process's resident set instead of going back to the OS. ``edgeml serve`` and
``edgeml edge`` apply it at start-up; ``--no-malloc-tuning`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger(__name__)

MiB = 1 << 20
MMAP_THRESHOLD = 32 * MiB  # allocations up to this size come from the heap, not mmap
TRIM_THRESHOLD = 256 * MiB  # free heap kept before glibc gives memory back to the OS

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet in this process


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (``gnu_get_libc_version`` exists)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - attribute lookup is the glibc test
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(
    enabled: bool = True,
    mmap_threshold: int = MMAP_THRESHOLD,
    trim_threshold: int = TRIM_THRESHOLD,
) -> bool:
    """Keep freed multi-MB buffers mapped (glibc ``mallopt``); return whether it applied.

    Process-wide and idempotent: the first call that applies it logs one INFO line; later
    calls return True without touching malloc again. ``enabled=False`` changes nothing and
    returns False (the ``--no-malloc-tuning`` path). On a C library other than glibc
    (musl, macOS) it is a no-op with a DEBUG line and returns False.
    """
    global _applied
    if not enabled:
        log.debug("malloc tuning off (--no-malloc-tuning)")
        return False
    with _lock:
        if _applied:
            return True
        libc = _glibc()
        if libc is None:
            if _applied is None:
                log.debug("malloc tuning skipped: the C library is not glibc")
            _applied = False
            return False
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
        if ok:
            log.info(
                "malloc tuning: mmap threshold %d MiB, trim threshold %d MiB "
                "(freed tensor buffers stay mapped; --no-malloc-tuning turns this off)",
                mmap_threshold // MiB,
                trim_threshold // MiB,
            )
        else:
            log.warning("malloc tuning: glibc mallopt refused the thresholds")
        _applied = ok
        return ok
