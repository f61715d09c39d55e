"""Haar cascades kept for reuse between streams, made and sized before the first client.

A cascade takes about 10 ms to load, and its first detection sizes buffers (the integral images
of every scale) that it keeps: 3-6 MB at the server's detection side. A stream that made its own
three and freed them at its end churned ~8 MB of multi-megabyte blocks through malloc per
stream, which fragmented the heaps: under `bench/fuzz_server.py` the server's RSS kept growing.
The pool keeps `keep` sets, made at warm-up and sized on the largest image they will see, so the
memory is there from the start and stays flat. A stream (or a single-image call) takes a set and
gives it back; when every set is out, one is made for the caller and freed when given back.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from swapstream.faces.detect import HaarDetector

if TYPE_CHECKING:
    from swapstream.server.pipeline import PipelineConfig


@dataclass
class DetectorSet:
    """One caller's detectors (a cascade is not shared between threads)."""

    full: HaarDetector    # whole-frame search when nothing is tracked
    roi: HaarDetector     # around the tracked faces
    rescan: HaarDetector  # the scheduled whole-frame search while tracking: the full one's cascade, coarser steps


class DetectorPool:
    """At most `keep` DetectorSets kept between callers; `fill()` makes and sizes them up front."""

    def __init__(self, detect_max_side: int, min_face_frac: float, rescan_scale_factor: float, roi_max_side: int,
                 keep: int) -> None:
        self.detect_max_side, self.roi_max_side = detect_max_side, roi_max_side
        self.min_face_frac, self.rescan_scale_factor = min_face_frac, rescan_scale_factor
        self.keep = max(1, int(keep))
        self._sets: queue.Queue[DetectorSet] = queue.Queue(maxsize=self.keep)
        self._lock = threading.Lock()
        self.made = 0  # sets made so far (kept or not)

    @classmethod
    def for_config(cls, config: PipelineConfig, keep: int) -> DetectorPool:
        """A pool whose detectors follow a pipeline's settings."""
        return cls(config.detect_max_side, config.min_face_frac, config.rescan_scale_factor, config.roi_max_side,
                   keep)

    def make(self) -> DetectorSet:
        """A new set, its buffers not yet sized."""
        full = HaarDetector(max_side=self.detect_max_side, min_size_frac=self.min_face_frac)
        # Around a tracked face the face spans about 1/(1 + 2 * roi_grow) of the region: a
        # larger minimum size and coarser scale steps find it at a third of the cost.
        roi = HaarDetector(scale_factor=1.2, min_neighbors=4, max_side=self.roi_max_side, min_size_frac=0.3)
        # The scheduled search only has to notice faces coming and going: coarser steps halve its cost.
        rescan = HaarDetector(scale_factor=self.rescan_scale_factor, max_side=self.detect_max_side,
                              min_size_frac=self.min_face_frac, share=full)
        with self._lock:
            self.made += 1
        return DetectorSet(full, roi, rescan)

    def size(self, s: DetectorSet) -> None:
        """Grow the set's buffers to the largest image it will be given (a square of each max side)."""
        s.full.detect(np.zeros((self.detect_max_side, self.detect_max_side), np.uint8))  # rescan shares it
        s.roi.detect(np.zeros((self.roi_max_side, self.roi_max_side), np.uint8))

    def fill(self) -> int:
        """Make and size sets until `keep` are kept; returns how many are kept."""
        while self.kept < self.keep:
            s = self.make()
            self.size(s)
            self.give(s)
        return self.kept

    @property
    def kept(self) -> int:
        return self._sets.qsize()

    def take(self) -> DetectorSet:
        """A kept set, or a new one when every kept set is out."""
        try:
            return self._sets.get_nowait()
        except queue.Empty:
            return self.make()

    def give(self, s: DetectorSet) -> None:
        """Back into the pool; freed instead if `keep` sets are there already."""
        try:
            self._sets.put_nowait(s)
        except queue.Full:
            pass
