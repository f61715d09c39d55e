"""Per-stream face tracking: Haar detection near the last faces, full re-detection every K frames,
temporal box smoothing, a short hold so a single missed detection does not flicker the swap, and
landmark smoothing over time (a One-Euro filter per track) so an aligned paste does not shake."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from swapstream.faces.detect import Box, HaarDetector


@dataclass
class _Track:
    box: np.ndarray  # float x, y, w, h
    missed: int = 0
    id: int = 0
    points: "OneEuroPoints | None" = None  # the track's landmark filter, made on first use
    # Landmark following: where to look next frame (set by follow_landmarks, valid for one frame),
    # whether this frame's box came from such a hint, and the box's place relative to the eyes as
    # measured on the last frame whose box came from Haar (centre x, y, width, height in eye distances).
    hint: np.ndarray | None = None
    hinted: bool = False
    hits: int = 1  # Haar detections matched to this track (it is followed only once confirmed: 2)
    relation: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class TrackedFace:
    """A face of the current frame: its smoothed box and the id of its track (stable while the
    tracker follows the same face; a new face, or the same one after it was lost, gets a new id)."""

    box: Box
    track_id: int


@dataclass
class OneEuroPoints:
    """The One-Euro filter (Casiez et al., CHI 2012) on a face's landmarks (N x 2 frame pixels).

    A low-pass whose cut-off rises with the speed of the face: a still face is smoothed hard (no
    jitter from frame to frame), a moving one follows with little lag. Speeds are measured in
    eye distances per second, so one setting serves small and large faces alike; all points share
    one cut-off, so the face's shape is filtered as a whole.

    min_cutoff: Hz at rest (lower = smoother, more lag). beta: how fast the cut-off grows with
    speed. d_cutoff: Hz of the filter on the speed estimate. rate: frames per second assumed.
    """

    min_cutoff: float = 1.5
    beta: float = 0.8
    d_cutoff: float = 1.0
    rate: float = 30.0
    _x: np.ndarray | None = field(default=None, repr=False)
    _speed: float = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._x, self._speed = None, 0.0

    def __call__(self, points: np.ndarray, scale: float) -> np.ndarray:
        """The filtered points for this frame's `points`; `scale` = the face's size in pixels
        (e.g. its eye distance), the unit of speed."""
        x = np.asarray(points, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._speed = x.copy(), 0.0
            return x
        dt = 1.0 / self.rate
        speed = float(np.abs(x - self._x).max()) / max(scale, 1e-6) / dt
        self._speed += self._alpha(self.d_cutoff, dt) * (speed - self._speed)
        a = self._alpha(self.min_cutoff + self.beta * self._speed, dt)
        self._x = self._x + a * (x - self._x)
        return self._x.copy()


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
    landmark_filter: makes a track's landmark filter (`smooth_landmarks`); None = no smoothing.
    rescan_detector: for the scheduled whole-frame search while faces are tracked (which only has
        to notice faces coming and going, so it may be coarser and cheaper); default `detector`,
        which also searches whenever nothing is tracked or the tracked faces were lost.
    """

    def __init__(self, detector: HaarDetector, roi_detector: HaarDetector | None = None,
                 redetect_every: int = 5, smoothing: float = 0.5, hold: int = 2, max_faces: int = 4,
                 roi_grow: float = 0.6, landmark_filter=OneEuroPoints,
                 rescan_detector: HaarDetector | None = None) -> None:
        if redetect_every < 1:
            raise ValueError("redetect_every must be >= 1")
        self.detector = detector
        self.roi_detector = roi_detector or detector
        self.rescan_detector = rescan_detector or detector
        self.redetect_every = redetect_every
        self.smoothing = smoothing
        self.hold = hold
        self.max_faces = max_faces
        self.roi_grow = roi_grow
        self._tracks: list[_Track] = []
        self._frames = 0
        self._shape: tuple[int, int] | None = None
        self.full_detections = 0
        self.roi_detections = 0
        self.followed = 0  # frames whose boxes all came from the faces' landmarks (no Haar search)
        self.landmark_filter = landmark_filter
        self._ids = itertools.count(1)

    def reset(self) -> None:
        """Forget every track (and its landmark filter): the next frame is searched whole."""
        self._tracks = []
        self._frames = 0

    def update(self, frame: np.ndarray) -> list[Box]:
        """Detect/track the faces of the next frame; return smoothed boxes, largest first.

        A frame of another size than the last one starts afresh: boxes tracked in the old
        frame's pixels mean nothing in the new one (and may lie outside it).
        """
        return [f.box for f in self.update_faces(frame)]

    def smooth_landmarks(self, track_id: int, points: np.ndarray, scale: float) -> np.ndarray:
        """`points` of the face on track `track_id` this frame, filtered over the track's past
        frames (the points themselves on a track's first frame, or without a filter)."""
        if self.landmark_filter is None:
            return np.asarray(points, np.float64)
        for track in self._tracks:
            if track.id == track_id:
                if track.points is None:
                    track.points = self.landmark_filter()
                return track.points(points, scale)
        return np.asarray(points, np.float64)

    def follow_landmarks(self, track_id: int, points: np.ndarray) -> None:
        """Tell the tracker where the face on `track_id` is this frame (its five landmarks, dlib's
        order): the next frame looks for it in a box placed on these points as the last Haar box
        sat on that frame's points. A frame between full detections whose every track was followed
        skips the Haar search around the faces (the landmark model, run in that box, finds the face;
        a face it loses is not followed, and the next frame searches again)."""
        track = next((t for t in self._tracks if t.id == track_id), None)
        if track is None:
            return
        p = np.asarray(points, np.float64).reshape(-1, 2)
        if len(p) != 5 or not np.all(np.isfinite(p)):
            return
        eyes = (p[0:2].mean(0) + p[2:4].mean(0)) / 2.0
        ed = float(np.linalg.norm(p[0:2].mean(0) - p[2:4].mean(0)))
        if ed < 1.0:
            return
        if not track.hinted or track.relation is None:
            x, y, w, h = track.box
            track.relation = ((x + w / 2 - eyes[0]) / ed, (y + h / 2 - eyes[1]) / ed, w / ed, h / ed)
        rx, ry, rw, rh = track.relation
        w, h = rw * ed, rh * ed
        track.hint = np.array([eyes[0] + rx * ed - w / 2, eyes[1] + ry * ed - h / 2, w, h])

    def update_faces(self, frame: np.ndarray) -> list[TrackedFace]:
        """As `update`, with each box's track id (for per-track state such as landmark smoothing)."""
        if frame.shape[:2] != self._shape:
            self.reset()
            self._shape = frame.shape[:2]
        full = not self._tracks or self._frames % self.redetect_every == 0
        self._frames += 1
        hints = [t.hint for t in self._tracks]
        for t in self._tracks:
            t.hint, t.hinted = None, False
        found: list[Box] = []
        # Only confirmed tracks are followed: a one-off false detection (hair, a shoulder) on which
        # the landmark model still places five points must meet the Haar search again and end.
        if not full and all(h is not None and t.hits >= 2 for t, h in zip(self._tracks, hints)):
            for t, h in zip(self._tracks, hints):
                # `missed` is left as it was: a track the Haar search does not confirm at two full
                # detections in a row ends, followed or not (no false detection lives on forever).
                t.box = self.smoothing * t.box + (1.0 - self.smoothing) * h
                t.hinted = True
            self.followed += 1
        else:
            if not full:
                found = self.roi_detector.detect(frame, roi=self._roi(frame.shape))
                self.roi_detections += 1
            if not found:
                # Whole-frame search: scheduled (coarser while faces are tracked), nothing tracked,
                # or the faces left the region.
                detector = self.rescan_detector if full and self._tracks else self.detector
                found = detector.detect(frame)
                self.full_detections += 1
            self._match(found[: self.max_faces])
        faces = [TrackedFace(Box(*(int(round(v)) for v in t.box)), t.id) for t in self._tracks]
        return sorted(faces, key=lambda f: f.box.area, reverse=True)[: self.max_faces]

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
                fresh.append(_Track(new, id=next(self._ids)))
                continue
            unmatched.remove(best)
            track = self._tracks[best]
            track.box = self.smoothing * track.box + (1.0 - self.smoothing) * new
            track.missed = 0
            track.hits += 1
            fresh.append(track)
        for i in unmatched:
            track = self._tracks[i]
            track.missed += 1
            if track.missed <= self.hold:
                fresh.append(track)
        self._tracks = fresh
