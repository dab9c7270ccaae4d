"""Process-level memory settings for the command line."""

from __future__ import annotations

import sys

__all__ = ["keep_freed_memory"]


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (this process only); False where there is no glibc.

    By default glibc hands each freed block of over ~32 MB back to the system, and the next tensor of that
    size page-faults it in again; a batch of 300-token prompts' attention tensors is that size. Measured on
    SmolLM2 and 2 CPU cores: a batch of 8 AG News prompts, 4.7 s -> 3.8 s. The process's resident memory
    then stays near its peak.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(  # mallopt returns 1 when it accepts a setting
        libc.mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),  # blocks up to 32 MB (attention tensors) come from the heap
            (m_trim_threshold, 1 << 30),
            (m_top_pad, 256 << 20),
        )
    )
