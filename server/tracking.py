"""Per-stream face tracking: Haar detection near the last faces, full re-detection every K frames,
temporal box smoothing, and a short hold so a single missed detection does not flicker the swap."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from swapstream.faces.detect import Box, HaarDetector


@dataclass
class _Track:
    box: np.ndarray  # float x, y, w, h
    missed: int = 0


class FaceTracker:
    """Turns a stream of frames into stable face boxes. One instance per stream (not thread-safe).

    detector: for whole frames. roi_detector: for the region around the tracked faces, where the
        face fills a known share of the image, so it can run on a smaller image, with a larger
        minimum face size and coarser scale steps (about 3x cheaper than whole-frame detection).
    redetect_every: run detection on the whole frame every K frames (and whenever the region
        around the last faces yields nothing); between those, only a region around the tracked
        faces is searched, which is several times cheaper on large frames.
    smoothing: weight of the previous box in the exponential moving average (0 = no smoothing).
    hold: frames a track survives without a matching detection.
    """

    def __init__(self, detector: HaarDetector, roi_detector: HaarDetector | None = None,
                 redetect_every: int = 5, smoothing: float = 0.5, hold: int = 2, max_faces: int = 4,
                 roi_grow: float = 0.6) -> None:
        if redetect_every < 1:
            raise ValueError("redetect_every must be >= 1")
        self.detector = detector
        self.roi_detector = roi_detector or detector
        self.redetect_every = redetect_every
        self.smoothing = smoothing
        self.hold = hold
        self.max_faces = max_faces
        self.roi_grow = roi_grow
        self._tracks: list[_Track] = []
        self._frames = 0
        self._shape: tuple[int, int] | None = None
        self.full_detections = 0

    def reset(self) -> None:
        """Forget every track: the next frame is searched whole."""
        self._tracks = []
        self._frames = 0

    def update(self, frame: np.ndarray) -> list[Box]:
        """Detect/track the faces of the next frame; return smoothed boxes, largest first.

        A frame of another size than the last one starts afresh: boxes tracked in the old
        frame's pixels mean nothing in the new one (and may lie outside it).
        """
        if frame.shape[:2] != self._shape:
            self.reset()
            self._shape = frame.shape[:2]
        full = not self._tracks or self._frames % self.redetect_every == 0
        self._frames += 1
        found: list[Box] = []
        if not full:
            found = self.roi_detector.detect(frame, roi=self._roi(frame.shape))
        if not found:
            # Whole-frame search: scheduled, nothing tracked, or the faces left the region.
            found = self.detector.detect(frame)
            self.full_detections += 1
        self._match(found[: self.max_faces])
        boxes = [Box(*(int(round(v)) for v in t.box)) for t in self._tracks]
        return sorted(boxes, key=lambda b: b.area, reverse=True)[: self.max_faces]

    def _roi(self, shape: tuple[int, ...]) -> Box:
        """Union of the tracked boxes, grown by roi_grow x side on every side, inside the frame."""
        boxes = np.array([t.box for t in self._tracks])
        grow = boxes[:, 2:].max(axis=1) * self.roi_grow
        x0 = max(0, int((boxes[:, 0] - grow).min()))
        y0 = max(0, int((boxes[:, 1] - grow).min()))
        x1 = min(shape[1], int((boxes[:, 0] + boxes[:, 2] + grow).max()))
        y1 = min(shape[0], int((boxes[:, 1] + boxes[:, 3] + grow).max()))
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def _match(self, found: list[Box]) -> None:
        """Greedy nearest-centre matching of detections to tracks, then smoothing."""
        unmatched = list(range(len(self._tracks)))
        fresh: list[_Track] = []
        for box in found:
            new = np.array(box.as_tuple(), np.float64)
            centre = new[:2] + new[2:] / 2
            best, best_d = None, None
            for i in unmatched:
                old = self._tracks[i].box
                d = float(np.linalg.norm(old[:2] + old[2:] / 2 - centre))
                if d < 0.5 * max(old[2], new[2]) and (best_d is None or d < best_d):
                    best, best_d = i, d
            if best is None:
                fresh.append(_Track(new))
                continue
            unmatched.remove(best)
            track = self._tracks[best]
            track.box = self.smoothing * track.box + (1.0 - self.smoothing) * new
            track.missed = 0
            fresh.append(track)
        for i in unmatched:
            track = self._tracks[i]
            track.missed += 1
            if track.missed <= self.hold:
                fresh.append(track)
        self._tracks = fresh
