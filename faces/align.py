"""Landmark alignment: dlib's 5-point shape predictor on the Haar box, a similarity transform to a template.

After the Haar cascade finds a face (the thesis' detector), dlib's 5-point shape predictor
places the two corners of each eye and the base of the nose. A similarity transform (rotation,
uniform scale, shift; least squares, Umeyama's closed form) maps those five points onto a fixed
template, so roll, scale and position are the same in every crop. The 5-point model (from the
`face-recognition-models` package) is free for any use, unlike the 68-point one, which only
the judge uses.

    aligner = Aligner(AlignTemplate(size=160))
    al = aligner.align(frame, haar_box)       # Alignment: 2x3 matrix frame -> crop, 5 landmarks
    face = warp_face(frame, al)              # size x size aligned crop
    frame = paste_aligned(frame, face, al, mask)   # back through the inverse warp

No TensorFlow, no gRPC.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.faces.detect import Box

# dlib's 5-point order: the subject's left eye (image right) outer and inner corner, the right
# eye's outer and inner corner, the base of the nose.
POINT_NAMES = ("left_eye_outer", "left_eye_inner", "right_eye_outer", "right_eye_inner", "nose_base")

# The mean 5-point shape of real frontal faces (dlib's detector boxes, 80 frames of the eleven
# people in shared/data/real), in units of the distance between the eye centres, origin at
# their midpoint, eyes level; made left-right symmetric.
MEAN_SHAPE = np.array([
    [0.697, -0.013], [0.303, 0.013],
    [-0.697, -0.013], [-0.303, 0.013],
    [0.0, 0.773],
], dtype=np.float64)

# The 5-point model was trained on dlib's own detector boxes; a Haar box is larger and sits
# higher. Measured on the same real frames: dlib's box is 0.86 of the Haar box's side and its
# centre lies 0.08 side lower (horizontal offset ~0).
HAAR_BOX_SCALE, HAAR_BOX_DROP = 0.86, 0.08


@dataclass(frozen=True)
class AlignTemplate:
    """Where the five points go in a `size` x `size` crop.

    `eye_distance` is the distance between the eye centres as a share of the crop side and
    `eye_line` the height of their midpoint (0 top, 1 bottom); the face is centred across.
    The defaults are the tightest framing that keeps faces/regions.py's whole face region (brows
    to chin, cheek to cheek) inside the crop: on a real close-up the no-network ceiling of a 128 px
    output keeps 0.30 of the source's detail, against 0.24 at the 0.27 / 0.42 framing that
    matches the old 0.2-margin Haar crop and 0.19 for that Haar crop itself at 128 px
    (bench/align_framing.py; docs/judge.md).
    """

    size: int = 160
    eye_distance: float = 0.32
    eye_line: float = 0.39

    def __post_init__(self) -> None:
        if int(self.size) < 8:
            raise ValueError(f"template size must be >= 8, got {self.size}")
        if not 0.05 <= self.eye_distance <= 0.9:
            raise ValueError(f"eye_distance must be within 0.05..0.9 of the crop, got {self.eye_distance}")
        if not 0.1 <= self.eye_line <= 0.9:
            raise ValueError(f"eye_line must be within 0.1..0.9, got {self.eye_line}")

    def points(self) -> np.ndarray:
        """The five template points in crop pixels (continuous coordinates, pixel centres at .5)."""
        s = float(self.size)
        return MEAN_SHAPE * (self.eye_distance * s) + np.array([0.5 * s, self.eye_line * s])


@dataclass(frozen=True)
class Alignment:
    """One face's alignment: `matrix` (2x3) maps frame pixels to crop pixels (pixel indices, as
    cv2.warpAffine counts them), `landmarks` (5, 2) are the five points in the frame, `size` is
    the crop side."""

    matrix: np.ndarray
    landmarks: np.ndarray
    size: int

    def inverse(self) -> np.ndarray:
        """The 2x3 matrix from crop pixels back to frame pixels."""
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def roll(self) -> float:
        """The face's roll in the frame, degrees (positive: clockwise in the image)."""
        return float(-math.degrees(math.atan2(self.matrix[1, 0], self.matrix[0, 0])))

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame points (N, 2) in crop pixels."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p @ self.matrix[:, :2].T + self.matrix[:, 2]


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity transform (2x3) taking points `src` (N, 2) onto `dst` (N, 2).

    Umeyama (1991), without reflection; needs at least two distinct points.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"umeyama needs two (N>=2, 2) point sets of one shape, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = float((s * s).sum() / len(src))
    if var_s < 1e-12:
        raise ValueError("umeyama: the source points coincide")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1.0
    rot = u @ e @ vt
    scale = float((sig * np.diag(e)).sum() / var_s)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def landmark_box(box: Box) -> tuple[int, int, int, int]:
    """The Haar box moved to where dlib's detector would put it: (left, top, right, bottom)."""
    side = max(box.w, box.h) * HAAR_BOX_SCALE
    cx = box.x + box.w / 2.0
    cy = box.y + box.h / 2.0 + HAAR_BOX_DROP * max(box.w, box.h)
    half = side / 2.0
    return (int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))


def _model_path() -> str:
    from swapstream.faces.judge import model_paths  # shares the model lookup, loads no model

    return model_paths()["landmarks5"]


class Aligner:
    """dlib's 5-point shape predictor on Haar boxes, and the similarity transform to `template`."""

    def __init__(self, template: AlignTemplate | None = None, calibrate_box: bool = True) -> None:
        try:
            import dlib
        except ImportError as exc:
            from swapstream.faces.judge import JudgeUnavailable

            raise JudgeUnavailable(
                "alignment needs dlib: pip install 'swapstream[landmarks]' (the dlib-bin wheel)") from exc
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(_model_path())
        self.template = template or AlignTemplate()
        self.calibrate_box = calibrate_box
        self._dst = self.template.points()

    def landmarks(self, frame: np.ndarray, box: Box) -> np.ndarray:
        """The five points (5, 2) float32 in frame pixels, placed inside the Haar `box`."""
        if frame is None or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError("landmarks() needs a uint8 HxW or HxWx3 BGR frame")
        left, top, right, bottom = landmark_box(box) if self.calibrate_box else (
            box.x, box.y, box.x + box.w, box.y + box.h)
        # dlib copies whatever array it is given into its own image: hand it only the face's
        # surroundings (the predictor reads pixels near the box), converted to RGB.
        pad = (right - left) // 2
        h, w = frame.shape[:2]
        x0, y0 = max(left - pad, 0), max(top - pad, 0)
        x1, y1 = min(right + pad, w), min(bottom + pad, h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            raise ValueError(f"face box {box} lies outside the {w}x{h} frame")
        region = frame[y0:y1, x0:x1]
        region = cv2.cvtColor(region, cv2.COLOR_GRAY2RGB if region.ndim == 2 else cv2.COLOR_BGR2RGB)
        shape = self._predictor(region, self._dlib.rectangle(left - x0, top - y0, right - x0, bottom - y0))
        return np.array([(p.x + x0, p.y + y0) for p in shape.parts()], dtype=np.float32)

    def from_landmarks(self, points: np.ndarray) -> Alignment:
        """The alignment of five given frame points (e.g. smoothed over time) to the template."""
        pts = np.asarray(points, dtype=np.float64).reshape(5, 2)
        # dlib's points are pixel indices, the convention warpAffine uses; the template is in
        # continuous coordinates (pixel centres at .5), so shift it onto indices.
        return Alignment(umeyama(pts, self._dst - 0.5), pts.astype(np.float32), self.template.size)

    def align(self, frame: np.ndarray, box: Box) -> Alignment:
        """Landmarks inside the Haar `box`, then the similarity transform to the template."""
        return self.from_landmarks(self.landmarks(frame, box))


def warp_face(frame: np.ndarray, alignment: Alignment) -> np.ndarray:
    """The aligned `size` x `size` crop of `frame` (borders replicated past the frame's edge).

    Where the crop shrinks the face, it is warped at twice the side and then halved by area
    averaging: a bilinear warp at about the final scale blurs like a 2-tap average at every
    fractional offset and costs the crop a third of its fine detail (the judge's detail measure
    on real close-ups: 0.11 against 0.19 for an axis-aligned area resize of the same framing;
    warped at 2x and halved, 0.19). Where the face shrinks by 2x or more on the way, its region
    is first area-averaged by that integer factor as well, so fine detail does not alias.
    """
    if alignment.scale >= 1.0:
        return _warp(frame, alignment)
    big = _warp(frame, rescale(alignment, 2 * alignment.size))
    return cv2.resize(big, (alignment.size, alignment.size), interpolation=cv2.INTER_AREA)


def _warp(frame: np.ndarray, alignment: Alignment) -> np.ndarray:
    """One bilinear warp to the crop, after an integer area prefilter when it shrinks 2x or more."""
    size = alignment.size
    m = np.asarray(alignment.matrix, np.float64)
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = frame.shape[:2]
    x0 = int(max(math.floor(corners[:, 0].min()) - 2, 0))
    y0 = int(max(math.floor(corners[:, 1].min()) - 2, 0))
    x1 = int(min(math.ceil(corners[:, 0].max()) + 2, w))
    y1 = int(min(math.ceil(corners[:, 1].max()) + 2, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        # The crop lies wholly outside the frame: warp the full frame so the border rule applies.
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    region = frame[y0:y1, x0:x1]
    # Crop pixel <- frame pixel (x0 + x_region): fold the region's offset into the matrix.
    mr = m.copy()
    mr[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    factor = int(1.0 / alignment.scale) if alignment.scale < 0.5 else 1
    if factor >= 2:
        rh, rw = region.shape[:2]
        small = cv2.resize(region, (max(1, rw // factor), max(1, rh // factor)), interpolation=cv2.INTER_AREA)
        fx, fy = rw / small.shape[1], rh / small.shape[0]
        # Small pixel index x_s sits at region index fx * x_s + (fx - 1) / 2 (centres of the
        # averaged blocks); compose that with region -> crop.
        mr = mr @ np.array([[fx, 0, (fx - 1) / 2], [0, fy, (fy - 1) / 2], [0, 0, 1]], np.float64)
        region = small
    return cv2.warpAffine(region, mr, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def mask_support(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the smallest rectangle of crop pixels holding every nonzero of `mask`."""
    ys, xs = np.nonzero(np.asarray(mask) > 0)
    if not len(xs):
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def footprint(alignment: Alignment, frame_shape: tuple[int, ...],
              support: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the frame pixels a paste through `alignment` can change (the crop square's, or
    `support`'s, image in the frame, inside the frame), or None when that lies outside the frame."""
    size = alignment.size
    sx0, sy0, sx1, sy1 = (0, 0, size, size) if support is None else support
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    inv = alignment.inverse()
    corners = np.array([[sx0, sy0], [sx1, sy0], [sx0, sy1], [sx1, sy1]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = frame_shape[:2]
    x0, y0 = int(max(math.floor(corners[:, 0].min()), 0)), int(max(math.floor(corners[:, 1].min()), 0))
    x1, y1 = int(min(math.ceil(corners[:, 0].max()) + 1, w)), int(min(math.ceil(corners[:, 1].max()) + 1, h))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def warp_to_frame(face: np.ndarray, alignment: Alignment, frame_shape: tuple[int, ...],
                  mask: np.ndarray | None = None, support: tuple[int, int, int, int] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """The aligned `face` (and its `mask`, size x size float 0..1; None = the whole square) warped
    back into frame pixels over the footprint of the crop square, or of `support` (x0, y0, x1, y1
    in crop pixels: where the mask is nonzero, `mask_support`): (patch, alpha, x0, y0) with the
    footprint's top-left corner at (x0, y0), or None when the footprint lies outside the frame."""
    size = alignment.size
    if face.shape[:2] != (size, size):
        raise ValueError(f"face is {face.shape[:2]}, the alignment expects {size}x{size}")
    rect = footprint(alignment, frame_shape, support)
    if rect is None:
        return None
    x0, y0, x1, y1 = rect
    inv = alignment.inverse()
    inv_r = inv.copy()
    inv_r[:, 2] -= np.array([x0, y0], np.float64)  # crop -> footprint region
    dsize = (x1 - x0, y1 - y0)
    patch = cv2.warpAffine(face, inv_r, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    weight = np.ones((size, size), np.float32) if mask is None else np.asarray(mask, np.float32)
    if weight.shape != (size, size):
        raise ValueError(f"mask is {weight.shape}, the alignment expects {size}x{size}")
    alpha = cv2.warpAffine(weight, inv_r, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)
    return patch, alpha, x0, y0


def paste_aligned(frame: np.ndarray, face: np.ndarray, alignment: Alignment,
                  mask: np.ndarray | None = None, inplace: bool = False,
                  support: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Put the aligned `face` back into a copy of `frame` (or `frame` itself, `inplace`) through
    the inverse warp.

    `mask` (size x size float 0..1, in crop space) alpha-blends; without one the whole crop
    square replaces the frame's pixels under it. Only the footprint of the square (or of
    `support`, the mask's nonzero rectangle: `mask_support`) is warped.
    """
    out = frame if inplace else frame.copy()
    warped = warp_to_frame(face, alignment, frame.shape, mask, support)
    if warped is None:
        return out
    patch, alpha, x0, y0 = warped
    roi = out[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]]
    if roi.ndim == 2 and patch.ndim == 3:
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    # blendLinear computes (w1 a + w2 b) / (w1 + w2) in one C++ pass: ~25x faster than the
    # same sum in numpy float32 on a 720p face's footprint.
    roi[...] = cv2.blendLinear(patch, roi, alpha, 1.0 - alpha)
    return out


def eye_distance(points: np.ndarray) -> float:
    """Distance between the eye centres of five points in dlib's order (POINT_NAMES)."""
    p = np.asarray(points, np.float64).reshape(5, 2)
    return float(np.linalg.norm(p[0:2].mean(0) - p[2:4].mean(0)))


# A plausible face: the eye centres 0.2..0.55 of the Haar box's side apart (real faces: 0.30-0.36)
# and the face rolled at most 45 degrees. Outside that the five points did not land on a face
# (a false Haar detection, or a face the 5-point model cannot read).
EYE_SPAN = (0.2, 0.55)
MAX_ROLL = 45.0


def plausible(landmarks: np.ndarray, box: Box, roll: float) -> bool:
    """True when five points found inside `box` look like a face (EYE_SPAN, MAX_ROLL)."""
    p = np.asarray(landmarks, np.float64)
    if not np.all(np.isfinite(p)):
        return False
    eyes = eye_distance(p) / max(box.w, box.h, 1)
    return EYE_SPAN[0] <= eyes <= EYE_SPAN[1] and abs(roll) <= MAX_ROLL


def rescale(alignment: Alignment, size: int) -> Alignment:
    """The same alignment for a crop of side `size` (the template's proportions kept): e.g. a
    160 px face set's alignment for the model's 64 px input or 128 px output."""
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    k = size / alignment.size
    m = np.asarray(alignment.matrix, np.float64) * k
    # Pixel centres sit at index + 0.5 in both crops: x_new + 0.5 = k (x_old + 0.5).
    m[:, 2] += 0.5 * (k - 1.0)
    return Alignment(m, alignment.landmarks, int(size))


def pass_through(frame: np.ndarray, alignment: Alignment, out_size: int | None = None,
                 mask: np.ndarray | None = None) -> np.ndarray:
    """The frame as a perfect network would give it back: the aligned crop (side alignment.size),
    resized to `out_size` (the model's output side), pasted back through the inverse warp with
    `mask` (out_size x out_size; None = the whole square). The no-network ceiling of a framing."""
    crop = warp_face(frame, alignment)
    out = rescale(alignment, out_size) if out_size and out_size != alignment.size else alignment
    return paste_aligned(frame, resize_crop(crop, out.size), out, mask)


def resize_interpolation(src_side: int, dst_side: int) -> int:
    """The cv2 interpolation for resizing a square crop from `src_side` to `dst_side`.

    Area averaging where it shrinks 2x or more; Lanczos between 1x and 2x, where a box of
    non-integer width blurs (160 -> 128 px: RMS 1.07 grey levels from a 4x-supersampled sampling
    of the same framing on real faces, Lanczos 0.80, cubic 0.85); cubic when enlarging.
    """
    if dst_side >= src_side:
        return cv2.INTER_CUBIC
    return cv2.INTER_AREA if src_side >= 2 * dst_side else cv2.INTER_LANCZOS4


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A square crop at `size` x `size` (`resize_interpolation`); the crop itself if it already is."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    return cv2.resize(crop, (size, size), interpolation=resize_interpolation(crop.shape[0], size))
