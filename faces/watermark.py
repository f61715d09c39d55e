"""An invisible, keyed watermark that says a frame region was made by a face-swap model.

Scheme (additive spread spectrum on the luma with a shift-searching correlation detector; our
own, numpy + OpenCV only; docs/provenance.md says why and what it costs):

- From the secret key come 33 pseudo-random, band-limited noise patterns on a 64x64 pixel tile
  that repeats (periodic by construction): one *pilot* and one per payload bit. The mark is
  `strength * (a * pilot + b * sum_i bit_i * pattern_i)` with bit_i = +-1, added to the luma of
  the face region (the same delta on B, G and R, which leaves the chroma alone). By default the
  strength follows the skin's texture (less on flat skin, where a mark shows) and grows on
  small faces (`texture_weight`, `size_gain`), whose box is marked over a square of at least
  MIN_MARK_SIDE px (`mark_box`). Every bit is
  spread over every pixel of the region, the tile repeats over the face: a repetition code that
  JPEG and H.264 quantisation noise averages away.
- The tile is anchored to the frame's origin by default. In inter frames a codec moves the
  mark along with the face it predicts from (motion compensation), so the mark drifts; the
  detector therefore searches every anchor shift in each window. (Anchoring the tile to the
  tracked face box was tried: the box jitters by a few pixels, the codec cannot predict the
  jumps, and H.264 kept less of the mark.)
- Detection is blind (the key; no box, no anchor). The luma is band-pass filtered (what is left
  of the face there is the noise) and weighted by its local inverse variance. The frame is cut
  into half-tile blocks; each block's spectrum on the tile's period (zero-padded, with the phase
  of the quadrant it lands on) makes any window of blocks, at any half-tile offset, sum to the
  fold of its pixels onto the pattern's tile. Windows of 96 to 384 px (and the whole frame) sum
  their blocks' spectra, and one FFT per window correlates it with the pilot at all 4096 anchor
  shifts. Each correlation is divided by its standard deviation under "no mark"
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

from swapstream.faces.cliutil import read_secret_file

TILE = 64  # px: the period of the pattern; the detector searches all TILE x TILE anchor shifts
N_BITS = 32
# Radial frequency band of the patterns in cycles per pixel (periods of about 5.5 to 17 px):
# above most of the face's own energy, and low enough for H.264 crf 23 to keep (its sub-pixel
# motion compensation blurs finer patterns away within a few inter frames; 0.10-0.28 was tried).
BAND = (0.06, 0.18)
# Detector pre-filter: a difference of Gaussians (sigmas in px) matched to BAND, and the box
# (px) over which the local variance that weights it is taken.
PREFILTER = (0.7, 2.5, 9)
# Share of the mark's power spent on the pilot (finding it), the rest on the bits. The detector
# does not depend on it (marks of any share are read); half makes small faces findable.
PILOT_SHARE = 0.5
DEFAULT_STRENGTH = 2.2  # RMS of the mark in luma levels (0..255) where the region's weight is 1
# Adaptive strength (embed's `adaptive`): faces under FULL_STRENGTH_SIDE px get up to
# MAX_SIZE_GAIN times the strength; the local band RMS over TEXTURE_REF (luma levels, about
# typical real skin), clipped to [TEXTURE_FLOOR, TEXTURE_CAP] and taken over TEXTURE_BOX px,
# scales it per pixel.
FULL_STRENGTH_SIDE = 150.0
MAX_SIZE_GAIN = 2.0
# A face box whose side is under MIN_MARK_SIDE px is marked (and its motion tracked) over the
# square of that side about its centre: on a ~100 px face the detector's best window otherwise
# holds the mark only in part, and the ring around the face (hair, outline, the blend's soft edge)
# carries the mark at less cost to the face itself than a higher gain would.
MIN_MARK_SIDE = 144
TEXTURE_REF = 1.7
TEXTURE_FLOOR = 0.6
TEXTURE_CAP = 1.0
TEXTURE_BOX = 9
# Score threshold in standard deviations; the best of ~4096 shifts x thousands of windows
# is taken, so a single window's null tail is not the per-frame false-positive rate:
# bench/watermark_bench.py measures that on real unmarked frames.
DEFAULT_THRESHOLD = 7.0
BLOCK = TILE // 2  # px: windows start and end on this half-tile grid
SUBPIXEL = 16  # embed places the tile to 1/SUBPIXEL px
WINDOW_CHUNK = 1024  # windows correlated at once: bounds the detector's memory on large frames
# Window sides in blocks and the step between windows of that side (blocks).
WINDOW_BLOCKS = ((3, 1), (4, 1), (6, 2), (8, 2), (12, 4))
PUBLIC_KEY = "swapstream-public-watermark-v1"
KEY_ENV = "SWAPSTREAM_WATERMARK_KEY"  # the key's environment variable, read by `serve` and `verify`
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


def resolve_key(key_file: str | None = None, key: str | None = None,
                file_flag: str = "--key-file") -> tuple[str, str]:
    """(key, where it came from): the first line of `key_file`, else `key`, else $SWAPSTREAM_WATERMARK_KEY,
    else the public key (`serve` and `verify` read it alike). InputError naming `file_flag` for
    an unreadable or empty key file."""
    if key_file is not None:
        return read_secret_file(key_file, file_flag), "key file"
    if key:
        return key, "--key"
    if os.environ.get(KEY_ENV, "").strip():
        return os.environ[KEY_ENV].strip(), KEY_ENV
    return PUBLIC_KEY, "public key"


def model_id(model_name: str, manifest_sha256: str) -> int:
    """The 32-bit payload for a model: the first 4 bytes of sha256(name NUL manifest-sha)."""
    digest = hashlib.sha256(f"{model_name}\0{manifest_sha256}".encode()).digest()
    return int.from_bytes(digest[:4], "big")



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


def mark_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The box (x, y, w, h) `embed` (adaptive) marks and `AnchorTracker` follows for a face box:
    the box itself from MIN_MARK_SIDE px up, else the box scaled about its centre to that side."""
    x, y, w, h = box
    side = np.sqrt(float(w) * h)
    if side <= 0 or side >= MIN_MARK_SIDE:
        return box
    g = MIN_MARK_SIDE / side
    gw, gh = int(round(w * g)), int(round(h * g))
    return (x - (gw - w) // 2, y - (gh - h) // 2, gw, gh)


def _box(region) -> tuple[int, int, int, int] | None:
    """A box (x, y, w, h) or a Box as integers; None for a mask."""
    if isinstance(region, np.ndarray) and region.ndim in (2, 3):
        return None
    try:
        values = region.as_tuple() if hasattr(region, "as_tuple") else tuple(region)
        bx, by, bw, bh = (int(round(float(v))) for v in values)
    except (TypeError, ValueError):
        raise ValueError("the region must be a box (x, y, w, h) or an HxW mask") from None
    return bx, by, bw, bh


def _region(shape: tuple[int, int], region, grow: bool = False
            ) -> tuple[tuple[int, int, int, int], np.ndarray | None]:
    """A box (x, y, w, h), a Box, or an HxW mask -> the rectangle inside the frame and its weights.

    grow: a small box is first grown by `mark_box` (a mask is taken as it is)."""
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
    bx, by, bw, bh = _box(region)
    if grow:
        bx, by, bw, bh = mark_box((bx, by, bw, bh))
    x0, y0, x1, y1 = max(bx, 0), max(by, 0), min(bx + bw, w), min(by + bh, h)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0), None
    weight = _ramp(y0 - by, y1 - by, bh)[:, None] * _ramp(x0 - bx, x1 - bx, bw)[None, :]
    return (x0, y0, x1 - x0, y1 - y0), weight


@lru_cache(maxsize=256)
def _ramp(lo: int, hi: int, length: int) -> np.ndarray:
    """A box edge's soft profile at positions lo..hi-1 of a side of `length` px: a raised cosine
    over 1/8 of the side, so the mark ends without a visible seam (memoised: boxes keep their size)."""
    n = max(length // 8, 1)
    pos = np.arange(lo, hi)
    t = np.clip(np.minimum(pos + 0.5, length - pos - 0.5) / n, 0.0, 1.0)
    r = (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
    r.setflags(write=False)
    return r


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("the frame must be an HxWx3 uint8 BGR image")


def embed(frame_bgr: np.ndarray, region, payload: int, key: str | bytes = PUBLIC_KEY,
          strength: float = DEFAULT_STRENGTH, anchor: tuple[float, float] | None = None,
          adaptive: bool = True) -> np.ndarray:
    """Return a copy of `frame_bgr` with the 32-bit `payload` marked inside `region`.

    region: a box (x, y, w, h) or a Box (its edges are feathered), or an HxW mask (bool, uint8
        0..255 or float 0..1; its values scale the mark).
    strength: RMS of the mark in luma levels on a face of FULL_STRENGTH_SIDE px or more with
        skin of typical texture (TEXTURE_REF).
    anchor: the frame position (x, y) where the pattern's tile starts, in pixels (fractions
        allowed); by default the frame's origin. The detector searches every anchor. In a video,
        pass `AnchorTracker.update`'s anchor so the mark moves with the face: H.264 keeps it.
    adaptive: the strength follows the local texture (`texture_weight`: less on flat skin,
        where a mark shows, more in texture, which hides it) and grows on small faces
        (`size_gain`), whose detection score would otherwise fall with their side; a face box
        under MIN_MARK_SIDE px is marked over the square of that side about it (`mark_box`).
    The input frame is not modified (`embed_inplace` marks the caller's own frame).
    """
    _check_frame(frame_bgr)
    return embed_inplace(frame_bgr.copy(), region, payload, key, strength, anchor, adaptive)


def size_gain(side: float) -> float:
    """The strength factor for a face of `side` px (sqrt of its box's area): 1 from
    FULL_STRENGTH_SIDE up, (FULL_STRENGTH_SIDE / side)^3 below, at most MAX_SIZE_GAIN. At a fixed
    strength the detector's score falls with the side, and faster than the side on small faces,
    whose features move into the mark's band and add to the noise the detector sees."""
    return float(np.clip((FULL_STRENGTH_SIDE / max(float(side), 1.0)) ** 3, 1.0, MAX_SIZE_GAIN))


def texture_weight(luma: np.ndarray) -> np.ndarray:
    """Per-pixel strength factor from a luma patch's local texture in the mark's band.

    The local RMS of the band-pass luma over TEXTURE_REF: flat skin, where additive noise shows
    as grain, gets TEXTURE_FLOOR (it still carries some mark), skin of typical texture and
    detail (brows, hair, edges) that masks the mark TEXTURE_CAP. Smooth in space, so the weight
    adds no structure of its own; taken at half resolution (the band lies below a quarter cycle
    per pixel, and the weight varies slowly), which makes it cheap.
    """
    h, w = luma.shape
    small = cv2.resize(luma.astype(np.float32, copy=False), ((w + 1) // 2, (h + 1) // 2),
                       interpolation=cv2.INTER_AREA)
    # Area halving already drops what lies above the band: the low cut alone is left to do.
    band = small - cv2.GaussianBlur(small, (0, 0), PREFILTER[1] / 2)
    side = TEXTURE_BOX // 2 + 1
    rms = np.sqrt(cv2.blur(band * band, (side, side)))
    rms = cv2.blur(rms, (side, side))
    weight = cv2.resize(rms, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(1.0 / TEXTURE_REF)
    return np.clip(weight, TEXTURE_FLOOR, TEXTURE_CAP, out=weight)


def embed_inplace(frame_bgr: np.ndarray, region, payload: int, key: str | bytes = PUBLIC_KEY,
                  strength: float = DEFAULT_STRENGTH, anchor: tuple[float, float] | None = None,
                  adaptive: bool = True, *, tiles: np.ndarray | None = None) -> np.ndarray:
    """`embed` into `frame_bgr` itself (only the region's pixels are touched) and return it.

    For a caller that owns its frame (the server's pipeline): no copy of the whole frame. The
    frame must be writeable with contiguous BGR pixels (rows may be padded); `embed` takes any.
    tiles: `shifted_tiles(key, payload)`, for a caller that keeps them (a server of many models);
    default: from a cache of the last 8 keys and payloads.
    """
    _check_frame(frame_bgr)
    if not frame_bgr.flags.writeable or frame_bgr.strides[1:] != (3, 1) or frame_bgr.strides[0] <= 0:
        raise ValueError("embed_inplace needs a writeable frame of contiguous BGR pixels; use embed")
    if not strength > 0:
        raise ValueError("the watermark strength must be positive")
    (x, y, w, h), weight = _region(frame_bgr.shape[:2], region)
    if w == 0 or h == 0:
        return frame_bgr
    if adaptive:
        # The gain follows the face's own side (inside the frame); a small face's box is then
        # grown to the marked square (`mark_box`).
        strength = strength * size_gain(np.sqrt(float(w) * h))
        box = _box(region)
        if box is not None and mark_box(box) != box:
            (x, y, w, h), weight = _region(frame_bgr.shape[:2], region, grow=True)
    ax, ay = (0.0, 0.0) if anchor is None else (float(anchor[0]), float(anchor[1]))
    kb = _key_bytes(key)
    tile = _tile(kb, int(payload))
    # The anchor's fraction in 1/SUBPIXEL px steps (a 1/32 px error at most, below what a codec's
    # quarter-pixel motion resolves): the shifted tiles of a stream are then memoised.
    qx, qy = round(ax * SUBPIXEL), round(ay * SUBPIXEL)
    ix, iy = qx // SUBPIXEL, qy // SUBPIXEL
    if qx % SUBPIXEL or qy % SUBPIXEL:
        tile = (_shift_table(kb, int(payload)) if tiles is None else tiles)[qy % SUBPIXEL, qx % SUBPIXEL]
    # The tile, rolled so that its origin falls on the anchor, repeated over the region.
    rolled = np.roll(tile, ((iy - y) % TILE, (ix - x) % TILE), axis=(0, 1))
    view = frame_bgr[y:y + h, x:x + w]
    delta = np.tile(rolled, (-(-h // TILE), -(-w // TILE)))[:h, :w] * np.float32(strength)
    if weight is not None:
        delta *= weight
    if adaptive:
        delta *= texture_weight(cv2.cvtColor(view, cv2.COLOR_BGR2GRAY))
    # The same delta on B, G and R, added with rounding and saturation straight into the frame.
    cv2.add(view, cv2.cvtColor(delta, cv2.COLOR_GRAY2BGR), dst=view, dtype=cv2.CV_8U)
    return frame_bgr


def shifted_tiles(key: str | bytes, payload: int) -> np.ndarray:
    """(SUBPIXEL, SUBPIXEL, TILE, TILE): the mark's tile moved by (qy, qx) / SUBPIXEL px (read-only).

    All of a payload's sub-pixel shifts at once (4 MB), made on first use and kept (for the last 8
    keys and payloads). A server's `Watermarker` makes and keeps its model's when it loads it, so
    its memory does not grow as its streams' anchors reach new fractions of a pixel.
    """
    return _shift_table(_key_bytes(key), int(payload))


@lru_cache(maxsize=8)
def _shift_table(key: bytes, payload: int) -> np.ndarray:
    # Fourier shift: exact for the band-limited tile; one inverse transform for all the shifts.
    spectrum = np.fft.rfft2(_tile(key, payload))
    ky = np.fft.fftfreq(TILE)[:, None]
    kx = np.fft.rfftfreq(TILE)[None, :]
    q = np.arange(SUBPIXEL) / SUBPIXEL
    phase = np.exp(-2j * np.pi * (q[:, None, None, None] * ky + q[None, :, None, None] * kx))
    tiles = np.fft.irfft2(spectrum * phase, s=(TILE, TILE)).astype(np.float32)
    tiles.setflags(write=False)
    return tiles


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

    def __init__(self, max_step: float = 0.4, min_response: float = 0.15, margin: float = 0.25) -> None:
        # A jump over max_step of the box side restarts the anchor. A restart costs the codec the
        # whole mark in that frame, so it is generous: a 97 px face moving 25 px in one frame (a
        # quarter of its side) is a real motion, and phase correlation still measures it.
        self.max_step = max_step
        self.min_response = min_response  # a phase-correlation peak under this: unrelated frames (a cut)
        self.margin = margin  # share of the box side greyed around it for the next frame's correlation
        self._prev: tuple[np.ndarray, int, int, tuple[int, int]] | None = None  # grey crop, its x, y, frame size
        self.anchor: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the last frame: the next anchor starts at its box."""
        self._prev, self.anchor = None, None

    def update(self, frame_bgr: np.ndarray, region) -> tuple[float, float]:
        """The anchor (x, y) for this frame's mark of the face in `region` (a box or a mask)."""
        _check_frame(frame_bgr)
        fh, fw = frame_bgr.shape[:2]
        # A small face is followed over its marked square: the ring around it (hair, outline)
        # makes the correlation of a ~100 px face more reliable, and it is what carries the mark.
        (x, y, w, h), _ = _region((fh, fw), region, grow=True)
        if w < 16 or h < 16:
            self.reset()
            return (float(x), float(y))
        # Grey only around the face: the box plus the motion the next frame's box may still fully
        # overlap (`margin` of its side; a larger motion correlates over the part that overlaps).
        m = int(self.margin * max(w, h)) + 2
        cx0, cy0 = max(x - m, 0), max(y - m, 0)
        grey = cv2.cvtColor(frame_bgr[cy0:min(y + h + m, fh), cx0:min(x + w + m, fw)], cv2.COLOR_BGR2GRAY)
        prev, self._prev = self._prev, (grey, cx0, cy0, (fh, fw))
        if prev is None or prev[3] != (fh, fw) or self.anchor is None:
            self.anchor = (float(x), float(y))
            return self.anchor
        pgrey, px0, py0, _ = prev
        # Correlate the box where the previous crop holds it too, trimmed (centred) to a multiple
        # of 8 px per side (the sizes the watermark figures were measured with).
        ix0, iy0 = max(x, px0), max(y, py0)
        ix1, iy1 = min(x + w, px0 + pgrey.shape[1]), min(y + h, py0 + pgrey.shape[0])
        cw, ch = (ix1 - ix0) // 8 * 8, (iy1 - iy0) // 8 * 8
        if cw < 16 or ch < 16:
            self.anchor = (float(x), float(y))
            return self.anchor
        ix0, iy0 = ix0 + (ix1 - ix0 - cw) // 2, iy0 + (iy1 - iy0 - ch) // 2
        a = pgrey[iy0 - py0:iy0 - py0 + ch, ix0 - px0:ix0 - px0 + cw].astype(np.float32)
        b = grey[iy0 - cy0:iy0 - cy0 + ch, ix0 - cx0:ix0 - cx0 + cw].astype(np.float32)
        # A fresh window each frame (0.01-0.1 ms): a cache per size would fill with every face size seen.
        (dx, dy), response = cv2.phaseCorrelate(a, b, cv2.createHanningWindow((cw, ch), cv2.CV_32F))
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


@lru_cache(maxsize=8)
def _windows(hb: int, wb: int) -> np.ndarray:
    """Candidate windows (y0, x0, y1, x1) in blocks: squares of WINDOW_BLOCKS sides and the whole frame
    (memoised per frame size: a video's frames share one list; read-only)."""
    rects = {(0, 0, hb, wb)}
    for side, step in WINDOW_BLOCKS:
        sy, sx = min(side, hb), min(side, wb)
        for y0 in sorted(set(range(0, hb - sy + 1, step)) | {hb - sy}):
            for x0 in sorted(set(range(0, wb - sx + 1, step)) | {wb - sx}):
                rects.add((y0, x0, y0 + sy, x0 + sx))
    windows = np.array(sorted(rects), dtype=np.int64)
    windows.setflags(write=False)
    return windows


@lru_cache(maxsize=16)
def _parity_phase(key: bytes) -> np.ndarray:
    """(2, 2, band bins): the phase that places a BLOCK-sided block at quadrant (py, px) of the tile."""
    rows, cols = _tables(key).band_index
    q = np.array([[(-1.0) ** (rows * py + cols * px) for px in (0, 1)] for py in (0, 1)], np.float32)
    q.setflags(write=False)
    return q


def analyze(frame_bgr: np.ndarray, key: str | bytes = PUBLIC_KEY,
            threshold: float = DEFAULT_THRESHOLD) -> Detection:
    """Look for the mark of `key` anywhere in a BGR frame; return the best window's `Detection`."""
    _check_frame(frame_bgr)
    kb = _key_bytes(key)
    t = _tables(kb)
    hb, wb = frame_bgr.shape[0] // BLOCK, frame_bgr.shape[1] // BLOCK
    if hb < 2 or wb < 2:
        return Detection(False, None, 0.0, np.zeros(N_BITS, np.float32), None, None)
    f = _whitened(frame_bgr)[:hb * BLOCK, :wb * BLOCK]
    blocks = f.reshape(hb, BLOCK, wb, BLOCK).transpose(0, 2, 1, 3)  # (hb, wb, BLOCK, BLOCK)
    # Fold on the half-tile grid: each block's spectrum on the TILE-periodic grid is its zero-
    # padded transform times the phase of the quadrant it lands in, so any window of blocks (at
    # any half-tile offset) sums to the fold of its pixels modulo TILE in frame coordinates.
    # Only the band's frequencies carry the mark: fold and sum those alone (a tenth of the spectrum).
    rows, cols = t.band_index
    # rfft2(blocks, s=(TILE, TILE)) in two passes, the second over the band's columns alone.
    spectra = np.fft.rfft(blocks, n=TILE, axis=-1)[..., :int(cols.max()) + 1]
    spectra = np.fft.fft(spectra, n=TILE, axis=-2)[:, :, rows, cols].astype(np.complex64)
    phase = _parity_phase(kb)
    spectra *= phase[np.arange(hb)[:, None] % 2, np.arange(wb)[None, :] % 2]
    acc = np.zeros((hb + 1, wb + 1, rows.size), np.complex64)
    acc[1:, 1:] = spectra.cumsum(0).cumsum(1)
    r = _windows(hb, wb)
    y0, x0, y1, x1 = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
    spec = acc[y1, x1] - acc[y0, x1] - acc[y1, x0] + acc[y0, x0]
    # Null variance of a correlation with a random pattern of this band: the band's mean power.
    var = (np.abs(spec) ** 2 * t.band[rows, cols]).sum(1)
    # Circular cross-correlation with the pilot at every shift s: sum_x fold(x) * pilot(x - s),
    # WINDOW_CHUNK windows at a time (a 4K frame has about 19,000).
    idx = np.zeros(len(r), np.int64)
    peak = np.zeros(len(r), np.float32)
    pilot = t.spectra[0][rows, cols]
    for c in range(0, len(r), WINDOW_CHUNK):
        part = spec[c:c + WINDOW_CHUNK]
        full = np.zeros((len(part), TILE, TILE // 2 + 1), np.complex64)
        full[:, rows, cols] = part * pilot
        maps = np.fft.irfft2(full, s=(TILE, TILE)).reshape(len(part), -1)
        idx[c:c + len(part)] = maps.argmax(1)
        peak[c:c + len(part)] = maps[np.arange(len(part)), idx[c:c + len(part)]]
    z = peak / np.sqrt(np.maximum(var, 1e-12))
    best = int(np.argmax(z))
    wy0, wx0, wy1, wx1 = (int(v) for v in r[best])
    box = (wx0 * BLOCK, wy0 * BLOCK, (wx1 - wx0) * BLOCK, (wy1 - wy0) * BLOCK)
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
