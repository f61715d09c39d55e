"""glibc malloc settings for a long-running server, so the memory of past frames goes back to the OS.

Three things make a glibc process that decodes frames of every size keep memory it no longer uses:

* the dynamic mmap threshold: glibc raises it whenever a large mmapped block is freed (up to
  32 MB), so after one big frame, frame-sized buffers come from the heap and stay there;
* per-thread arenas: every thread that allocates may get its own heap (up to 8 per core), and
  each keeps its freed chunks; a server with a thread pool and per-stream threads ends up with
  many half-empty heaps;
* fragmentation: a heap gives memory back only from its top, so one live chunk pins the free
  space below it.

A fourth is the kernel's: numpy asks for transparent huge pages (madvise) on every array of 4 MB
or more, and the heap range a freed frame leaves keeps that advice. Any later touch of it then
faults in a whole 2 MB page, and khugepaged collapses ranges with up to 511 of their 512 small
pages unused (its default max_ptes_none), so a few live chunks hold megabytes that `malloc_trim`
cannot give back: under bench/fuzz_server.py the server held 2-16 MB of huge pages from one
check to the next.

`tune_malloc` fixes the thresholds and caps the arenas (each skipped when the operator set
glibc's own environment variable), `no_huge_pages` opts the process out of transparent huge
pages, and `Trimmer` calls `malloc_trim(0)`, which also returns the free pages inside every arena,
a moment after frames were served. Off glibc (or off Linux) all of it does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
PR_SET_THP_DISABLE = 41  # linux/prctl.h
# Frame buffers up to 1080p (6.2 MB of BGR) come from the heap and are reused from frame to frame
# (from mmap, every frame paid its page faults again: ~5 ms of server CPU per 720p frame); larger
# ones are mmapped and go back when freed. The Trimmer returns the heap's free pages.
MMAP_THRESHOLD = 16 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # free memory at a heap's top kept for the next frames (glibc's own ratio)
# One heap for all threads (glibc's default: 8 per core). Every extra arena kept its own free and
# half-used pages of past frames: under bench/fuzz_server.py the RSS grew twice as much with two as
# with one, and a 720p stream ran at the same FPS with one (docs/experiments/2026-12-02-server-memory.md).
ARENA_MAX = 1


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, arena_max: int = ARENA_MAX,
                trim_threshold: int = TRIM_THRESHOLD) -> dict[str, int]:
    """Fix glibc's mmap and trim thresholds and cap its arenas; returns what was set (empty off glibc).

    Call it early, before the threads that do the work exist (arenas already made stay). A
    setting whose glibc variable (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
    MALLOC_ARENA_MAX) is in the environment is left to glibc; 0 skips one.
    """
    libc = _libc()
    done: dict[str, int] = {}
    if libc is None:
        return done
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, mmap_threshold),
                              ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, trim_threshold),
                              ("MALLOC_ARENA_MAX", M_ARENA_MAX, arena_max)):
        if value and env not in os.environ and libc.mallopt(param, int(value)) == 1:
            done[env] = int(value)
    return done


def no_huge_pages() -> bool:
    """Opt this process (and the children it starts) out of transparent huge pages; True if done.

    prctl(PR_SET_THP_DISABLE) applies to the whole address space, mappings made before included;
    the kernel then ignores numpy's madvise. Off glibc (musl included), on a kernel before 3.15,
    or where a sandbox refuses the call, nothing happens and it returns False.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


def trim() -> bool:
    """Give the free memory of every malloc arena back to the OS now; True if any was returned."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


class Trimmer:
    """Calls malloc_trim at most every `interval` seconds, and only after `note()` said frames were
    served since the last time (an idle server costs nothing). Runs in one daemon thread from `start()`."""

    def __init__(self, interval: float) -> None:
        self.interval = float(interval)
        self.trims = 0
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (nothing when the interval is 0 or off glibc)."""
        if self._thread is None and self.interval > 0 and _libc() is not None:
            self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
            self._thread.start()

    def note(self) -> None:
        """Frames were served: trim at the next tick."""
        self._pending.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._pending.is_set():
                self._pending.clear()
                trim()
                self.trims += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
