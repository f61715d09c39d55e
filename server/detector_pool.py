"""Haar cascades shared by the server's streams, made and sized before the first client.

A cascade takes about 10 ms to load, and its detections size buffers (the integral images of
every scale) that it keeps and only ever grows: their width follows the widest image it saw at
full scale and their height the tallest stack of scales. A set at the defaults (a 320 px
whole-frame search, a 128 px region search) holds 5.4 MB once it has seen square frames and
7.3 MB once frames of every shape have come by. Made per stream and freed at its end, sets
churned multi-megabyte blocks through malloc; kept per stream, every kept set grew towards the
worst shape: under `bench/fuzz_server.py` the server's RSS kept growing either way.

So the pool keeps a few sets, one per core (a search already runs on every core through
OpenCV's threads, so more at once would only wait for CPU), sized at warm-up over a grid of
frame shapes up to each max side. A stream's tracker holds a lent set (`lend()`) whose
detectors borrow a kept set for each search: the buffers are there from the start, their size
does not depend on what clients send, and no stream holds one between frames.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from swapstream.faces.detect import Box, HaarDetector

if TYPE_CHECKING:
    from swapstream.server.pipeline import PipelineConfig

# A kept set is sized on frame shapes about this many steps apart per side: at the defaults it
# reaches what an 8 px grid of shapes does (7.3 MB), in about 0.5 s per set.
SIZING_STEPS = 20


class Detector(Protocol):
    """What a tracker calls: a HaarDetector, or a lent one (`DetectorPool.lend`)."""

    def detect(self, image: np.ndarray, roi: Box | None = None) -> list[Box]: ...


@dataclass
class DetectorSet:
    """The detectors one search uses (a cascade is not shared between threads)."""

    full: Detector    # whole-frame search when nothing is tracked
    roi: Detector     # around the tracked faces
    rescan: Detector  # the scheduled whole-frame search while tracking: the full one's cascade, coarser steps


class _Lent:
    """A detector of one role that borrows a kept set from its pool for each search."""

    def __init__(self, pool: DetectorPool, role: str) -> None:
        self._pool, self._role = pool, role

    def detect(self, image: np.ndarray, roi: Box | None = None) -> list[Box]:
        """HaarDetector.detect on a borrowed set's detector of this role."""
        with self._pool.borrow() as s:
            return getattr(s, self._role).detect(image, roi)


def default_sets(max_streams: int) -> int:
    """Kept sets for a server of `max_streams`: one per core this process may run on, at most one per stream."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(int(max_streams), cores))


class DetectorPool:
    """`sets` DetectorSets, each lent to one search at a time; `fill()` makes and sizes them up front."""

    def __init__(self, config: PipelineConfig, sets: int) -> None:
        self.config = config  # its detector settings (detect_max_side, min_face_frac, ...)
        self.sets = max(1, int(sets))
        self._kept: queue.Queue[DetectorSet] = queue.Queue()
        self._lock = threading.Lock()
        self.made = 0  # sets made so far (never more than `sets`)
        # Stateless: every stream and image is lent the same one.
        self._lent = DetectorSet(_Lent(self, "full"), _Lent(self, "roi"), _Lent(self, "rescan"))

    def make(self) -> DetectorSet:
        """A new set of HaarDetectors, its buffers not yet sized (does not count it: see `_new`)."""
        c = self.config
        full = HaarDetector(max_side=c.detect_max_side, min_size_frac=c.min_face_frac)
        # Around a tracked face the face spans about 1/(1 + 2 * roi_grow) of the region: a
        # larger minimum size and coarser scale steps find it at a third of the cost.
        roi = HaarDetector(scale_factor=1.2, min_neighbors=4, max_side=c.roi_max_side, min_size_frac=0.3)
        # The scheduled search only has to notice faces coming and going: coarser steps halve its cost.
        rescan = HaarDetector(scale_factor=c.rescan_scale_factor, max_side=c.detect_max_side,
                              min_size_frac=c.min_face_frac, share=full)
        return DetectorSet(full, roi, rescan)

    def size(self, s: DetectorSet) -> None:
        """Grow the set's buffers to what any frame can need: blank images of every shape on a grid
        of about SIZING_STEPS sides up to each detector's max side (the rescan shares the full search's)."""
        for detector, side in ((s.full, self.config.detect_max_side), (s.roi, self.config.roi_max_side)):
            sides = sorted({*range(24, side, max(8, side // SIZING_STEPS)), side})
            for h in sides:
                for w in sides:
                    detector.detect(np.zeros((h, w), np.uint8))

    def fill(self) -> int:
        """Make and size every set not made yet; returns how many are kept."""
        while (s := self._new(sized=True)) is not None:
            self._kept.put(s)
        return self.kept

    def _new(self, sized: bool) -> DetectorSet | None:
        """A new set if fewer than `sets` were made, else None. A set that fails to load or size is
        not counted (else a search would wait for ever for a set that never comes)."""
        with self._lock:
            if self.made >= self.sets:
                return None
            self.made += 1
        try:
            s = self.make()
            if sized:
                self.size(s)
            return s
        except BaseException:
            with self._lock:
                self.made -= 1
            raise

    @property
    def kept(self) -> int:
        """Sets in the pool now (not lent to a search)."""
        return self._kept.qsize()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[DetectorSet]:
        """A kept set for one search: made (unsized) while fewer than `sets` exist, else the next one given back."""
        try:
            s = self._kept.get_nowait()
        except queue.Empty:
            s = self._new(sized=False) or self._kept.get()
        try:
            yield s
        finally:
            self._kept.put(s)

    def lend(self) -> DetectorSet:
        """Detectors for a stream or an image: each search borrows a kept set (nothing to give back)."""
        return self._lent
