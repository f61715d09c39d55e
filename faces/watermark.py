"""An invisible, keyed watermark that says a frame region was made by a face-swap model.

Scheme (additive spread spectrum on the luma with a shift-searching correlation detector; our
own, numpy + OpenCV only; docs/provenance.md says why and what it costs):

- From the secret key come 33 pseudo-random, band-limited noise patterns on a 64x64 pixel tile
  that repeats (periodic by construction): one *pilot* and one per payload bit. The mark is
  `strength * (a * pilot + b * sum_i bit_i * pattern_i)` with bit_i = +-1, added to the luma of
  the face region (the same delta on B, G and R, which leaves the chroma alone). Every bit is
  spread over every pixel of the region, the tile repeats over the face: a repetition code that
  JPEG and H.264 quantisation noise averages away.
- The tile is anchored to the frame's origin by default. In inter frames a codec moves the
  mark along with the face it predicts from (motion compensation), so the mark drifts; the
  detector therefore searches every anchor shift in each window. (Anchoring the tile to the
  tracked face box was tried: the box jitters by a few pixels, the codec cannot predict the
  jumps, and H.264 kept less of the mark.)
- Detection is blind (the key; no box, no anchor). The luma is band-pass filtered (what is left
  of the face there is the noise) and weighted by its local inverse variance. Each 64 px tile of
  the frame is folded onto the pattern's tile; windows of 2x2 up to 6x6 tiles (and the whole
  frame) sum their tiles' spectra, and one FFT per window correlates it with the pilot at all
  4096 anchor shifts. Each correlation is divided by its standard deviation under "no mark"
  (exact for a random pattern of this band, whatever the image: the band's mean power in the
  window, less the power the 33 patterns explain at the best shift), so the `score` is in
  standard deviations; the detector takes the best shift of the best window, so the threshold
  sits well above the null maximum (bench/watermark_bench.py measures the false-positive rate).
  At that shift each bit's correlation is its soft value z_i; its sign is the bit.

Pure functions; the per-key tables are memoised. No TensorFlow, no gRPC: the server's pipeline
and the `verify` client both import it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

TILE = 64  # px: the period of the pattern; the detector searches all TILE x TILE anchor shifts
N_BITS = 32
# Radial frequency band of the patterns in cycles per pixel (periods of about 5.5 to 17 px):
# above most of the face's own energy, and low enough for H.264 crf 23 to keep (its sub-pixel
# motion compensation blurs finer patterns away within a few inter frames; 0.10-0.28 was tried).
BAND = (0.06, 0.18)
# Detector pre-filter: a difference of Gaussians (sigmas in px) matched to BAND, and the box
# (px) over which the local variance that weights it is taken.
PREFILTER = (0.7, 2.5, 9)
PILOT_SHARE = 0.25  # share of the mark's power spent on the pilot (finding it), the rest on the bits
DEFAULT_STRENGTH = 2.2  # RMS of the mark in luma levels (0..255) where the region's weight is 1
# Score threshold in standard deviations; the best of ~4096 shifts x up to hundreds of windows
# is taken, so a single window's null tail is not the per-frame false-positive rate:
# bench/watermark_bench.py measures that on real unmarked frames.
DEFAULT_THRESHOLD = 7.0
WINDOW_TILES = (2, 3, 4, 6)
PUBLIC_KEY = "swapstream-public-watermark-v1"
_LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights of ITU-R BT.601 luma


@dataclass(frozen=True)
class Detection:
    """What `analyze` found in the best window: verdict, payload, score and soft bits."""

    found: bool
    payload: int | None  # the 32 payload bits (bit i = sign of soft_bits[i]), None when not found
    score: float  # the pilot's correlation at the best window and shift, in null standard deviations
    soft_bits: np.ndarray  # z_i per bit (sign gives the bit; |z| its reliability)
    box: tuple[int, int, int, int] | None  # x, y, w, h in pixels of the best window
    shift: tuple[int, int] | None  # the anchor's position (x, y) modulo TILE that the pilot found


def model_id(model_name: str, manifest_sha256: str) -> int:
    """The 32-bit payload for a model: the first 4 bytes of sha256(name NUL manifest-sha)."""
    digest = hashlib.sha256(f"{model_name}\0{manifest_sha256}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def manifest_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 (hex) of a model folder's manifest.json: with the folder's name, the model's identity."""
    from swapstream.faces.model_folder import MANIFEST_FILE, file_sha256

    return file_sha256(os.path.join(model_dir, MANIFEST_FILE))


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes) or not key:
        raise ValueError("the watermark key must be a non-empty string or bytes")
    return key


@dataclass(frozen=True)
class _KeyTables:
    patterns: np.ndarray  # (1 + N_BITS, TILE, TILE) unit-RMS band-limited noise; [0] is the pilot
    spectra: np.ndarray  # conj(rfft2(patterns)), for the detector's correlations
    band: np.ndarray  # rfft2-shaped weights of the in-band frequencies (for the null variance)
    band_size: float  # how many frequencies of the full TILE x TILE spectrum lie in the band
    band_index: tuple[np.ndarray, np.ndarray]  # (rows, cols) of the band's rfft2 bins


@lru_cache(maxsize=16)
def _tables(key: bytes) -> _KeyTables:
    seed = int.from_bytes(hashlib.sha256(b"swapstream-watermark-v1\0" + key).digest(), "big")
    rng = np.random.Generator(np.random.PCG64(seed))
    noise = rng.standard_normal((1 + N_BITS, TILE, TILE))
    fy = np.fft.fftfreq(TILE)[:, None]
    fx = np.fft.rfftfreq(TILE)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    band = (radius >= BAND[0]) & (radius <= BAND[1])
    spec = np.fft.rfft2(noise) * band
    patterns = np.fft.irfft2(spec, s=(TILE, TILE)).reshape(1 + N_BITS, -1)
    # Orthonormal at zero shift (QR keeps them inside the band): at the anchor the bits and the
    # pilot do not leak into one another, whatever the payload.
    q, _ = np.linalg.qr(patterns.T)
    patterns = (q.T * np.sqrt(TILE * TILE)).reshape(1 + N_BITS, TILE, TILE).astype(np.float32)
    spectra = np.conj(np.fft.rfft2(patterns)).astype(np.complex64)
    patterns.setflags(write=False)
    spectra.setflags(write=False)
    # rfft2 keeps one half of the spectrum: the columns other than 0 and TILE/2 stand for two.
    weights = np.where((fx == 0) | (fx == 0.5), 1.0, 2.0) * band
    band_size = float(weights.sum())
    weights = (weights / band_size).astype(np.float32)
    weights.setflags(write=False)
    return _KeyTables(patterns=patterns, spectra=spectra, band=weights, band_size=band_size,
                      band_index=np.nonzero(np.broadcast_to(band, weights.shape)))


def _payload_signs(payload: int) -> np.ndarray:
    if isinstance(payload, bool) or not isinstance(payload, (int, np.integer)) or not 0 <= int(payload) < 2**N_BITS:
        raise ValueError(f"the watermark payload must be an integer in [0, 2^{N_BITS})")
    bits = (int(payload) >> np.arange(N_BITS)) & 1
    return (bits * 2 - 1).astype(np.float32)


@lru_cache(maxsize=64)
def _tile(key: bytes, payload: int) -> np.ndarray:
    """The TILE x TILE mark for one key and payload, unit RMS."""
    p = _tables(key).patterns
    tile = np.sqrt(PILOT_SHARE) * p[0] + np.sqrt((1.0 - PILOT_SHARE) / N_BITS) * np.tensordot(
        _payload_signs(payload), p[1:], axes=1)
    tile = (tile / tile.std()).astype(np.float32)
    tile.setflags(write=False)
    return tile


def _region(shape: tuple[int, int], region) -> tuple[tuple[int, int, int, int], np.ndarray | None]:
    """A box (x, y, w, h), a Box, or an HxW mask -> the rectangle inside the frame and its weights."""
    h, w = shape
    if isinstance(region, np.ndarray) and region.ndim in (2, 3):
        mask = region if region.ndim == 2 else region[..., 0]
        if mask.shape != (h, w):
            raise ValueError(f"the region mask is {mask.shape[1]}x{mask.shape[0]}, the frame {w}x{h}")
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return (0, 0, 0, 0), None
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        sub = mask[y0:y1, x0:x1]
        if sub.dtype == np.bool_:
            weight = sub.astype(np.float32)
        elif np.issubdtype(sub.dtype, np.integer):
            weight = sub.astype(np.float32) / (255.0 if mask.max() > 1 else 1.0)
        else:
            weight = np.clip(sub.astype(np.float32), 0.0, 1.0)
        return (x0, y0, x1 - x0, y1 - y0), weight
    try:
        values = region.as_tuple() if hasattr(region, "as_tuple") else tuple(region)
        bx, by, bw, bh = (int(round(float(v))) for v in values)
    except (TypeError, ValueError):
        raise ValueError("the region must be a box (x, y, w, h) or an HxW mask") from None
    x0, y0, x1, y1 = max(bx, 0), max(by, 0), min(bx + bw, w), min(by + bh, h)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0), None
    # A soft edge (raised cosine over 1/8 of the side) so the mark ends without a visible seam.
    def ramp(lo: int, hi: int, start: int, length: int) -> np.ndarray:
        n = max(length // 8, 1)
        pos = np.arange(lo, hi) - start
        t = np.clip(np.minimum(pos + 0.5, length - pos - 0.5) / n, 0.0, 1.0)
        return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
    weight = ramp(y0, y1, by, bh)[:, None] * ramp(x0, x1, bx, bw)[None, :]
    return (x0, y0, x1 - x0, y1 - y0), weight


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("the frame must be an HxWx3 uint8 BGR image")


def embed(frame_bgr: np.ndarray, region, payload: int, key: str | bytes = PUBLIC_KEY,
          strength: float = DEFAULT_STRENGTH, anchor: tuple[int, int] | None = None) -> np.ndarray:
    """Return a copy of `frame_bgr` with the 32-bit `payload` marked inside `region`.

    region: a box (x, y, w, h) or a Box (its edges are feathered), or an HxW mask (bool, uint8
        0..255 or float 0..1; its values scale the mark).
    anchor: the frame position (x, y) where the pattern's tile starts, in pixels (fractions
        allowed); by default the frame's origin. The detector searches every anchor. In a video,
        pass `AnchorTracker.update`'s anchor so the mark moves with the face: H.264 keeps it.
    The input frame is not modified.
    """
    _check_frame(frame_bgr)
    if not strength > 0:
        raise ValueError("the watermark strength must be positive")
    (x, y, w, h), weight = _region(frame_bgr.shape[:2], region)
    out = frame_bgr.copy()
    if w == 0 or h == 0:
        return out
    ax, ay = (0.0, 0.0) if anchor is None else (float(anchor[0]), float(anchor[1]))
    tile = _tile(_key_bytes(key), int(payload))
    iy, ix = int(np.floor(ay)), int(np.floor(ax))
    if ay != iy or ax != ix:
        tile = _subpixel_shift(tile, ax - ix, ay - iy)
    # The tile, rolled so that its origin falls on the anchor, repeated over the region.
    rolled = np.roll(tile, ((iy - y) % TILE, (ix - x) % TILE), axis=(0, 1))
    delta = np.tile(rolled, (-(-h // TILE), -(-w // TILE)))[:h, :w] * np.float32(strength)
    if weight is not None:
        delta *= weight
    patch = out[y:y + h, x:x + w].astype(np.float32)
    patch += delta[:, :, None]
    np.clip(patch + 0.5, 0, 255, out=patch)
    out[y:y + h, x:x + w] = patch.astype(np.uint8)
    return out


def _subpixel_shift(tile: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The periodic tile moved by a fraction of a pixel (Fourier shift: exact for a band-limited tile)."""
    ky = np.fft.fftfreq(TILE)[:, None]
    kx = np.fft.rfftfreq(TILE)[None, :]
    phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return np.fft.irfft2(np.fft.rfft2(tile) * phase, s=(TILE, TILE)).astype(np.float32)


class AnchorTracker:
    """Moves the mark's anchor with the face, so a video codec can predict the mark for free.

    In inter frames H.264 predicts each block from the previous frame along the face's motion
    and drops the small corrections a noise-like mark would need (they fall in its quantiser's
    dead zone). A mark fixed to the frame's grid under a moving face is lost within a few frames;
    one that moves with the face is carried along. Tracker boxes jitter by pixels, so the motion
    comes from phase correlation of the face region between consecutive frames (sub-pixel).
    One instance per stream and face; not thread-safe. Use: `anchor = t.update(frame, box)`,
    then `embed(frame, box, payload, key, anchor=anchor)`.
    """

    def __init__(self, max_step: float = 0.25, min_response: float = 0.15) -> None:
        self.max_step = max_step  # a jump over this share of the box side restarts the anchor
        self.min_response = min_response  # a phase-correlation peak under this: unrelated frames (a cut)
        self._prev: np.ndarray | None = None
        self.anchor: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the last frame: the next anchor starts at its box."""
        self._prev, self.anchor = None, None

    def update(self, frame_bgr: np.ndarray, region) -> tuple[float, float]:
        """The anchor (x, y) for this frame's mark of the face in `region` (a box or a mask)."""
        _check_frame(frame_bgr)
        (x, y, w, h), _ = _region(frame_bgr.shape[:2], region)
        grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        prev, self._prev = self._prev, grey
        if w < 16 or h < 16:
            self.reset()
            return (float(x), float(y))
        if prev is None or prev.shape != grey.shape or self.anchor is None:
            self.anchor = (float(x), float(y))
            return self.anchor
        a = prev[y:y + h, x:x + w].astype(np.float32)
        b = grey[y:y + h, x:x + w].astype(np.float32)
        (dx, dy), response = cv2.phaseCorrelate(a, b, cv2.createHanningWindow((w, h), cv2.CV_32F))
        if response < self.min_response or max(abs(dx) / w, abs(dy) / h) > self.max_step:
            self.anchor = (float(x), float(y))  # a cut or a lost face: start again
        else:
            self.anchor = (self.anchor[0] + dx, self.anchor[1] + dy)
        return self.anchor


def _whitened(frame_bgr: np.ndarray) -> np.ndarray:
    """Band-pass luma weighted by its local inverse variance: the face is the noise here."""
    luma = cv2.transform(frame_bgr, _LUMA[None, :]).astype(np.float32)
    band = cv2.GaussianBlur(luma, (0, 0), PREFILTER[0]) - cv2.GaussianBlur(luma, (0, 0), PREFILTER[1])
    var = cv2.blur(band * band, (PREFILTER[2], PREFILTER[2]))
    return band / (var + 1.0)


def _windows(ht: int, wt: int) -> np.ndarray:
    """Candidate windows (y0, x0, y1, x1) in tiles: squares of WINDOW_TILES sides and the whole frame."""
    rects = {(0, 0, ht, wt)}
    for side in WINDOW_TILES:
        sy, sx = min(side, ht), min(side, wt)
        step = 1 if side <= 3 else 2
        for y0 in range(0, ht - sy + 1, step):
            for x0 in range(0, wt - sx + 1, step):
                rects.add((y0, x0, y0 + sy, x0 + sx))
    return np.array(sorted(rects), dtype=np.int64)


def analyze(frame_bgr: np.ndarray, key: str | bytes = PUBLIC_KEY,
            threshold: float = DEFAULT_THRESHOLD) -> Detection:
    """Look for the mark of `key` anywhere in a BGR frame; return the best window's `Detection`."""
    _check_frame(frame_bgr)
    t = _tables(_key_bytes(key))
    ht, wt = frame_bgr.shape[0] // TILE, frame_bgr.shape[1] // TILE
    if ht < 1 or wt < 1:
        return Detection(False, None, 0.0, np.zeros(N_BITS, np.float32), None, None)
    f = _whitened(frame_bgr)[:ht * TILE, :wt * TILE]
    tiles = f.reshape(ht, TILE, wt, TILE).transpose(0, 2, 1, 3)  # (ht, wt, TILE, TILE)
    # Only the band's frequencies carry the mark: fold and sum those alone (a tenth of the spectrum).
    rows, cols = t.band_index
    acc = np.zeros((ht + 1, wt + 1, rows.size), np.complex64)
    acc[1:, 1:] = np.fft.rfft2(tiles)[:, :, rows, cols].cumsum(0).cumsum(1)
    r = _windows(ht, wt)
    y0, x0, y1, x1 = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
    # A window's spectrum is the spectrum of its tiles folded onto one (the pattern is periodic).
    spec = acc[y1, x1] - acc[y0, x1] - acc[y1, x0] + acc[y0, x0]
    # Null variance of a correlation with a random pattern of this band: the band's mean power.
    var = (np.abs(spec) ** 2 * t.band[rows, cols]).sum(1)
    # Circular cross-correlation with the pilot at every shift s: sum_x fold(x) * pilot(x - s).
    full = np.zeros((len(r), TILE, TILE // 2 + 1), np.complex64)
    full[:, rows, cols] = spec * t.spectra[0][rows, cols]
    maps = np.fft.irfft2(full, s=(TILE, TILE)).reshape(len(r), -1)
    idx = maps.argmax(1)
    z = maps[np.arange(len(r)), idx] / np.sqrt(np.maximum(var, 1e-12))
    best = int(np.argmax(z))
    wy0, wx0, wy1, wx1 = (int(v) for v in r[best])
    box = (wx0 * TILE, wy0 * TILE, (wx1 - wx0) * TILE, (wy1 - wy0) * TILE)
    sy, sx = divmod(int(idx[best]), TILE)
    # At the best window and shift: every pattern's correlation with the fold, and the null
    # variance again without the power those 33 patterns explain (the mark itself would
    # otherwise cap every z near sqrt(share * band size) however strong it is).
    window = np.zeros((TILE, TILE // 2 + 1), np.complex64)
    window[rows, cols] = spec[best]
    fold = np.roll(np.fft.irfft2(window, s=(TILE, TILE)), (-sy, -sx), axis=(0, 1))
    corr = t.patterns.reshape(1 + N_BITS, -1) @ fold.reshape(-1)
    resid = var[best] - float((corr * corr).sum()) / t.band_size
    sd = np.sqrt(max(resid, var[best] * 1e-6, 1e-12))
    score = float(corr[0] / sd)
    soft = (corr[1:] / sd).astype(np.float32)
    found = score >= threshold
    payload = int(((soft > 0).astype(np.int64) << np.arange(N_BITS)).sum()) if found else None
    return Detection(found, payload, score, soft, box, (sx, sy))


def detect(frame_bgr: np.ndarray, key: str | bytes = PUBLIC_KEY,
           threshold: float = DEFAULT_THRESHOLD) -> tuple[bool, int | None, float]:
    """Return (found, payload or None, score) for the mark of `key` in a BGR frame."""
    d = analyze(frame_bgr, key, threshold)
    return d.found, d.payload, d.score
