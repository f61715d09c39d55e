"""Colour transfer: match a swapped face's colour statistics to the face it replaces."""
from __future__ import annotations

import cv2
import numpy as np


def reinhard_transfer(src: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Recolour `src` (uint8 BGR) so its LAB mean and standard deviation match `target`'s.

    Reinhard et al. 2001. Statistics are taken where `mask` > 0.5 (the face, not the background)
    when a mask is given. Returns uint8 BGR of src's shape.
    """
    if src.shape != target.shape:
        raise ValueError(f"colour transfer needs equal shapes, got {src.shape} and {target.shape}")
    s = cv2.cvtColor(src, cv2.COLOR_BGR2LAB).astype(np.float32)
    t = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    sel = (mask > 0.5) if mask is not None else np.ones(src.shape[:2], bool)
    if sel.sum() < 16:
        sel = np.ones(src.shape[:2], bool)
    s_mu, s_sd = s[sel].mean(0), s[sel].std(0)
    t_mu, t_sd = t[sel].mean(0), t[sel].std(0)
    out = (s - s_mu) * (t_sd / np.maximum(s_sd, 1e-3)) + t_mu
    return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
