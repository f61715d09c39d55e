"""Square face crops with a margin, and their exact inverse (paste back into the frame)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.faces.blend import alpha_blend, fits_for_seamless, seamless_blend
from swapstream.faces.detect import Box


@dataclass(frozen=True)
class CropTransform:
    """Where a crop came from: a square `box` of the frame, resized to `size` x `size`."""

    box: Box
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return self.size / self.box.w


def square_box(box: Box, margin: float, frame_shape: tuple[int, ...] | None = None) -> Box:
    """The square around `box`, grown by `margin` x side on every side.

    The square keeps the box centre and may extend past the frame (crops pad by replicating
    the border), so faces near the edge keep the same framing as in training.
    `frame_shape` is accepted for symmetry with the callers and unused.
    """
    side = max(box.w, box.h)
    grown = int(round(side * (1.0 + 2.0 * margin)))
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    return Box(int(round(cx - grown / 2.0)), int(round(cy - grown / 2.0)), grown, grown)


def _region(frame: np.ndarray, sq: Box) -> np.ndarray:
    """The frame's pixels under `sq`, padding with replicated borders outside the frame."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = sq.x, sq.y, sq.x + sq.w, sq.y + sq.h
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x1 - w), max(0, y1 - h)
    inner = frame[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if pad_l or pad_t or pad_r or pad_b:
        if inner.size == 0:
            raise ValueError(f"crop box {sq} lies outside the {w}x{h} frame")
        inner = cv2.copyMakeBorder(inner, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    return inner


def crop_face(frame: np.ndarray, box: Box, size: int, margin: float) -> tuple[np.ndarray, CropTransform]:
    """Cut the square around `box` (grown by `margin`) and resize it to `size` x `size`."""
    sq = square_box(box, margin)
    region = _region(frame, sq)
    if sq.w == size:
        crop = np.ascontiguousarray(region).copy()
    else:
        interp = cv2.INTER_AREA if sq.w > size else cv2.INTER_LINEAR
        crop = cv2.resize(region, (size, size), interpolation=interp)
    return crop, CropTransform(sq, size)


def paste_back(frame: np.ndarray, face: np.ndarray, transform: CropTransform,
               mask: np.ndarray | None = None, mode: str = "alpha") -> np.ndarray:
    """Inverse of crop_face: put `face` (size x size) back where it came from in a copy of `frame`.

    With no mask the square is replaced; with a float mask (size x size, 0..1) the face is
    alpha-blended, or Poisson-blended with mode="seamless" when the square lies inside the
    frame (alpha otherwise). Without resizing (crop side == size) and without a mask, pasting the
    unchanged crop gives back the frame bit for bit.
    """
    out = frame.copy()
    sq = transform.box
    side = sq.w
    if face.shape[:2] != (transform.size, transform.size):
        raise ValueError(f"face is {face.shape[:2]}, transform expects {transform.size}x{transform.size}")
    patch = face if side == transform.size else cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR)
    h, w = frame.shape[:2]
    fx0, fy0 = max(sq.x, 0), max(sq.y, 0)
    fx1, fy1 = min(sq.x + side, w), min(sq.y + side, h)
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    px0, py0 = fx0 - sq.x, fy0 - sq.y
    src = patch[py0:py0 + (fy1 - fy0), px0:px0 + (fx1 - fx0)]
    if mask is None:
        out[fy0:fy1, fx0:fx1] = src
        return out
    m = mask if side == transform.size else cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)
    if mode == "seamless" and fits_for_seamless(frame.shape, (sq.x, sq.y), side):
        return seamless_blend(frame, patch, m, (sq.x, sq.y))
    if mode not in ("alpha", "seamless"):
        raise ValueError(f"unknown blend mode {mode!r}; valid: alpha, seamless")
    m = m[py0:py0 + (fy1 - fy0), px0:px0 + (fx1 - fx0)]
    out[fy0:fy1, fx0:fx1] = alpha_blend(out[fy0:fy1, fx0:fx1], src, m)
    return out
