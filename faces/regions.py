"""Face regions in aligned template space: the face, the eyes and the mouth as soft masks.

After alignment (faces/align.py) every face has its eyes level at the template's eye line and
its eye centres `eye_distance` apart, so the face region, the eyes and the mouth sit at known
places. Their shapes here are ellipses laid out in units of the eye distance `d` from the
midpoint of the eyes (x across, y down), from mean proportions of frontal faces:

    face:   forehead ~1.15 d above the eye line, chin ~1.8 d below, cheeks ~1.05 d to each side
    eyes:   centred at (+-0.5 d, 0), brows included (the ellipse reaches ~0.4 d up)
    mouth:  centred ~1.1 d below the eye line (real mouths sit at 1.1-1.2 d, synthetic ones at
            ~0.9 d), ~0.5 d to each side and ~0.36 d up and down (room for an open mouth)

    face_mask(template, 128)              # float32 128x128 in 0..1: training loss region
    expression_mask(template, 128)        # eyes + mouth, soft-edged: extra loss weight
    blend_mask(template, 128, erode=0.02, feather=0.06)   # the server's paste mask

`size` is the side of the mask; it may differ from the template's own side (a 160 px template
gives the same layout at 64 or 128 px, since the template's proportions are fractions of the
side). All masks are cached and read-only. No TensorFlow.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from swapstream.faces.align import AlignTemplate

# (centre x, centre y, semi-axis x, semi-axis y) in eye distances from the eyes' midpoint.
FACE_ELLIPSE = (0.0, 0.33, 1.05, 1.48)
EYE_ELLIPSES = ((0.5, -0.06, 0.33, 0.30), (-0.5, -0.06, 0.33, 0.30))
MOUTH_ELLIPSE = (0.0, 1.12, 0.5, 0.36)
# Width of a mask's soft edge, in eye distances (the loss masks' own edge; blend_mask's feather
# comes on top of it).
EDGE = 0.12


def _check(template: AlignTemplate, size: int) -> int:
    if not isinstance(template, AlignTemplate):
        raise TypeError(f"expected an AlignTemplate, got {type(template).__name__}")
    if int(size) < 4:
        raise ValueError(f"mask size must be >= 4, got {size}")
    return int(size)


def _ellipses(template: AlignTemplate, size: int, ellipses, edge: float) -> np.ndarray:
    """Union (max) of soft ellipses given in eye distances; 1 inside, a smoothstep edge `edge` wide."""
    d = template.eye_distance * size
    cx0, cy0 = 0.5 * size, template.eye_line * size
    # Pixel centres in continuous coordinates (.5), the template's convention.
    u = (np.arange(size, dtype=np.float64) + 0.5 - cx0) / d
    v = (np.arange(size, dtype=np.float64) + 0.5 - cy0) / d
    uu, vv = np.meshgrid(u, v)
    out = np.zeros((size, size), np.float64)
    for ex, ey, ax, ay in ellipses:
        # Distance past the ellipse, approximately in eye distances: the normalised radius minus 1,
        # scaled by the mean semi-axis, so the soft edge has about the same width on every ellipse.
        r = np.sqrt(((uu - ex) / ax) ** 2 + ((vv - ey) / ay) ** 2)
        outside = (r - 1.0) * (ax + ay) / 2.0
        t = np.clip(0.5 - outside / edge, 0.0, 1.0)
        out = np.maximum(out, t * t * (3.0 - 2.0 * t))
    return out.astype(np.float32)


def _frozen(mask: np.ndarray) -> np.ndarray:
    mask.setflags(write=False)  # cached: callers must not modify it
    return mask


@lru_cache(maxsize=32)
def _face(template: AlignTemplate, size: int) -> np.ndarray:
    return _frozen(_ellipses(template, size, (FACE_ELLIPSE,), EDGE))


@lru_cache(maxsize=32)
def _expression(template: AlignTemplate, size: int) -> np.ndarray:
    return _frozen(_ellipses(template, size, (*EYE_ELLIPSES, MOUTH_ELLIPSE), EDGE))


@lru_cache(maxsize=32)
def _mouth(template: AlignTemplate, size: int) -> np.ndarray:
    return _frozen(_ellipses(template, size, (MOUTH_ELLIPSE,), EDGE))


@lru_cache(maxsize=32)
def _blend(template: AlignTemplate, size: int, erode: float, feather: float) -> np.ndarray:
    # The face ellipse shrunk on every side (an exact offset of the hard region), then a Gaussian
    # of sigma feather/4: the ramp runs over about +-2 sigma around the shrunk edge, so shrinking
    # by erode + feather/2 puts the ramp's outer end (below 0.03) `erode` inside the face region.
    d = template.eye_distance * size
    shrink = (erode + feather / 2.0) * size / d
    ex, ey, ax, ay = FACE_ELLIPSE
    hard = _ellipses(template, size, ((ex, ey, max(ax - shrink, 0.05), max(ay - shrink, 0.05)),), 1e-6 + 1.0 / d)
    sigma = feather * size / 4.0
    if sigma >= 0.3:
        k = int(sigma * 3) * 2 + 1
        hard = cv2.GaussianBlur(hard, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    from swapstream.faces.mask import edge_taper  # no hard line where the pasted square ends

    return _frozen((hard * edge_taper(size, 0.04)).astype(np.float32))


def face_mask(template: AlignTemplate, size: int) -> np.ndarray:
    """float32 `size` x `size` in 0..1: the face region (forehead, cheeks, chin) in aligned space,
    1 inside with a soft edge. Read-only, cached."""
    return _face(template, _check(template, size))


def expression_mask(template: AlignTemplate, size: int) -> np.ndarray:
    """float32 `size` x `size` in 0..1: both eyes (brows included) and the mouth. Read-only, cached."""
    return _expression(template, _check(template, size))


def mouth_mask(template: AlignTemplate, size: int) -> np.ndarray:
    """float32 `size` x `size` in 0..1: the mouth alone (e.g. to keep the source's mouth). Read-only."""
    return _mouth(template, _check(template, size))


# The server's blend mask for aligned models (PipelineConfig, the judge's ceiling): shares of the side.
BLEND_ERODE, BLEND_FEATHER = 0.02, 0.06


def blend_mask(template: AlignTemplate, size: int, erode: float = BLEND_ERODE,
               feather: float = BLEND_FEATHER) -> np.ndarray:
    """float32 `size` x `size` in 0..1 for pasting a swapped face back: 1 deep inside the face region,
    a smooth ramp `feather` wide (fraction of the side) that ends `erode` (fraction of the side)
    inside the face region's edge, 0 beyond and at the square's border, so nothing the network
    draws outside the face reaches the frame. Read-only, cached."""
    size = _check(template, size)
    if not 0.0 <= erode < 0.5 or not 0.0 <= feather < 0.5:
        raise ValueError(f"erode and feather must be within 0..0.5 of the side, got {erode} and {feather}")
    return _blend(template, size, float(erode), float(feather))


def loss_weights(template: AlignTemplate, size: int, expression_weight: float = 1.0,
                 background_weight: float = 0.0) -> np.ndarray:
    """Per-pixel loss weights (size, size, 1) float32: `background_weight` outside the face, 1 on the
    face region, `expression_weight` on the eyes and the mouth (at their template positions)."""
    if expression_weight < 0 or background_weight < 0:
        raise ValueError("loss weights must be >= 0")
    face = face_mask(template, size)
    expr = expression_mask(template, size)
    w = background_weight + (1.0 - background_weight) * face
    w = w * (1.0 + (expression_weight - 1.0) * expr)
    return w[:, :, None].astype(np.float32)
