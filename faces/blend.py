"""Blending a swapped face into a frame: alpha (feathered mask) or Poisson (seamlessClone)."""
from __future__ import annotations

import cv2
import numpy as np


def alpha_blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return dst*(1-mask) + src*mask as uint8; `mask` is float HxW in 0..1, dst/src HxWx3 uint8."""
    if dst.shape != src.shape or mask.shape != dst.shape[:2]:
        raise ValueError(f"alpha_blend shapes differ: dst {dst.shape}, src {src.shape}, mask {mask.shape}")
    a = mask.astype(np.float32)[..., None]
    out = src.astype(np.float32) * a + dst.astype(np.float32) * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fits_for_seamless(frame_shape: tuple[int, ...], top_left: tuple[int, int], side: int) -> bool:
    """seamlessClone needs the patch strictly inside the frame (one-pixel border)."""
    x, y = top_left
    return x >= 1 and y >= 1 and x + side <= frame_shape[1] - 1 and y + side <= frame_shape[0] - 1


def seamless_blend(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray, top_left: tuple[int, int]) -> np.ndarray:
    """Poisson-blend `patch` (HxWx3) into a copy of `frame` with its top-left corner at `top_left`.

    `mask` is float HxW in 0..1, thresholded at 0.5. The patch must fit (see fits_for_seamless).
    """
    if not fits_for_seamless(frame.shape, top_left, patch.shape[0]):
        raise ValueError("seamless_blend: patch does not lie inside the frame")
    m8 = (mask > 0.5).astype(np.uint8) * 255
    if not m8.any():
        return frame.copy()
    ys, xs = np.nonzero(m8)
    # seamlessClone puts the centre of the mask's bounding box at `center`.
    cx = top_left[0] + (int(xs.min()) + int(xs.max()) + 1) // 2
    cy = top_left[1] + (int(ys.min()) + int(ys.max()) + 1) // 2
    return cv2.seamlessClone(patch, frame, m8, (cx, cy), cv2.NORMAL_CLONE)
