"""Haar-cascade face detection (the thesis' detector), with optional downscaling for speed."""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.faces.errors import DetectorError

CASCADE_NAME = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in pixel coordinates of the full frame."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def cascade_path() -> str:
    """Path of the frontal-face cascade shipped with opencv-python(-headless) < 5."""
    data = getattr(cv2, "data", None)
    base = getattr(data, "haarcascades", None)
    if base is None or not hasattr(cv2, "CascadeClassifier"):
        raise DetectorError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them to contrib); "
            "install opencv-python-headless>=4.10,<5"
        )
    path = os.path.join(base, CASCADE_NAME)
    if not os.path.isfile(path):
        raise DetectorError(f"Haar cascade not found at {path}; reinstall opencv-python-headless<5")
    return path


class HaarDetector:
    """Detect frontal faces with OpenCV's Haar cascade.

    `max_side` downscales large frames before detection (boxes are mapped back to full
    resolution); detection cost grows with pixel count and faces in video are rarely small.
    `share` reuses another detector's loaded cascade with these settings. A cascade keeps the
    buffers of its largest image (integral images of every scale, a few MB); it is not safe to
    use from two threads at once.
    """

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_frac: float = 0.08,
        max_side: int | None = 480,
        share: "HaarDetector | None" = None,
    ) -> None:
        if share is not None:
            # Other settings on the same loaded cascade (and its buffers): only for use in one thread.
            self._cascade = share._cascade
        else:
            path = cascade_path()
            self._cascade = cv2.CascadeClassifier(path)
            if self._cascade.empty():
                raise DetectorError(f"could not load Haar cascade from {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_frac = min_size_frac
        self.max_side = max_side

    def detect(self, image: np.ndarray, roi: Box | None = None) -> list[Box]:
        """Return face boxes (largest first) in a BGR or grey image, optionally only inside `roi`."""
        if image is None or image.ndim not in (2, 3) or image.size == 0:
            raise ValueError("detect() needs a non-empty HxW or HxWx3 image")
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        ox = oy = 0
        if roi is not None:
            x0, y0 = max(roi.x, 0), max(roi.y, 0)
            x1, y1 = min(roi.x + roi.w, grey.shape[1]), min(roi.y + roi.h, grey.shape[0])
            if x1 - x0 < 16 or y1 - y0 < 16:
                return []
            grey, ox, oy = grey[y0:y1, x0:x1], x0, y0
        h, w = grey.shape
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        min_side = max(20, int(min(grey.shape) * self.min_size_frac))
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        boxes = [
            Box(int(round(x / scale)) + ox, int(round(y / scale)) + oy,
                int(round(bw / scale)), int(round(bh / scale)))
            for (x, y, bw, bh) in (found if len(found) else [])
        ]
        return sorted(boxes, key=lambda b: b.area, reverse=True)
