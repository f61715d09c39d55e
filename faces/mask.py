"""Feathered face masks for blending a swapped crop back into its frame."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=16)
def _ellipse(size: int, feather: float, rx: float, ry: float, cy: float) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    centre = (size / 2.0, size * cy)
    axes = (size * rx, size * ry)
    cv2.ellipse(mask, ((centre[0], centre[1]), (2 * axes[0], 2 * axes[1]), 0.0), 1.0, -1, cv2.LINE_AA)
    sigma = max(feather * size / 2.0, 0.5)
    k = int(sigma * 3) * 2 + 1
    mask = cv2.GaussianBlur(mask, (k, k), sigma)
    # The feathered ellipse can stay above zero at the square's border, which shows as a hard
    # line where a pasted crop ends; taper it to exactly 0 there, whatever the radii and feather.
    mask *= edge_taper(size)
    mask.setflags(write=False)  # cached: callers must not modify it
    return mask


def edge_taper(size: int, width: float = 0.1) -> np.ndarray:
    """float32 size x size: 0 at the border rising smoothly (smoothstep) to 1 at `width` x size inside."""
    d = np.minimum(np.arange(size), size - 1 - np.arange(size)) / max(width * size, 1.0)
    ramp = np.clip(d, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    return (ramp[:, None] * ramp[None, :]).astype(np.float32)


def ellipse_mask(size: int, feather: float = 0.12, rx: float = 0.34, ry: float = 0.40,
                 cy: float = 0.52) -> np.ndarray:
    """A float32 size x size mask in 0..1: an ellipse (radii rx, ry of the side, centre at cy)
    with a Gaussian-feathered edge (`feather` as a fraction of the side), falling to 0 at the
    square's border. Read-only, cached."""
    if size <= 0:
        raise ValueError("mask size must be positive")
    return _ellipse(int(size), float(feather), float(rx), float(ry), float(cy))
