"""The per-frame swap pipeline and its streaming form.

Stages of one frame:
    prepare (read the size from the header -> decode within the pixel budget -> track/detect ->
             aligned models: five landmarks in each tracked box, smoothed over the track's frames
             (One-Euro), a similarity warp to the manifest's template at the model's input size;
             older models: the Haar square with the model's margin -> submit to the batcher)
    infer   (the model's InferenceBatcher: all faces of the frame, and of other frames and
             streams waiting at that moment, in one onnxruntime call)
    finish  (colour transfer inside the face region -> mask -> blend/paste back (aligned: through
             the inverse warp at the output's side, with the template's eroded, feathered face
             mask; optionally the source's mouth kept) -> mark -> encode)

A stream runs the three stages concurrently: a reader thread takes messages off the transport,
a preparer thread prepares frame n+1 while the batcher infers frame n and the caller's thread
finishes frame n-1. Frames pass through bounded FIFOs, so replies keep the input order and a
fast client cannot make the server buffer more than 2 x `queue_depth` frames per stream (it is
slowed down by gRPC flow control instead).

The pipeline speaks the wire messages (swap_pb2.Frame in, swap_pb2.SwappedFrame out) but knows
nothing of gRPC: a failure is a SwapError whose `failure` says whose mistake it was, and the
service (server/service.py) maps that to a status code.
"""
from __future__ import annotations

import enum
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from swapstream.faces.align import (
    Aligner,
    Alignment,
    AlignTemplate,
    eye_distance,
    footprint,
    mask_support,
    paste_aligned,
    plausible,
    rescale,
    warp_face,
    warp_to_frame,
)
from swapstream.faces.color import reinhard_transfer
from swapstream.faces.crop import CropTransform, crop_face, paste_back
from swapstream.faces.detect import Box
from swapstream.faces.mask import ellipse_mask
from swapstream.faces.regions import BLEND_ERODE, BLEND_FEATHER, blend_mask, face_mask, mouth_mask
from swapstream.faces.watermark import mark_box
from swapstream.faces.wire import (
    ENCODINGS,
    MAX_PIXELS,
    RAW_BGR,
    FrameDecodeError,
    decode_frame,
    encode_frame,
    encoding_name,
    frame_size,
)
from swapstream.server.detector_pool import DetectorPool, DetectorSet
from swapstream.server.registry import LoadedModel
from swapstream.server.tracking import FaceTracker, OneEuroPoints
from swapstream.v1 import swap_pb2

log = logging.getLogger(__name__)

# Room for everything in a reply but its image (index, boxes, timings, model name, framing).
REPLY_OVERHEAD = 4096
NAME_LIMIT = 64  # characters of a client-given name quoted back in a message


class Failure(enum.Enum):
    """Why a frame or a stream failed, by whose mistake it was."""

    BAD_INPUT = "bad input"  # the client's: undecodable or oversized frame, unknown option, wrong model
    BUSY = "busy"            # nobody's: no room right now (pixel budget, inference queue); retry later
    TIMEOUT = "timeout"      # the client's: a stream that sends nothing for too long
    INTERNAL = "internal"    # ours: a broken model or a bug


class SwapError(Exception):
    """A frame or stream the pipeline could not serve; `failure` says why, the message what."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure

    @property
    def message(self) -> str:
        return str(self)


def shorten(text: str, limit: int = NAME_LIMIT) -> str:
    """`text` quoted for a message, cut to `limit` characters (a client may send megabytes)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


@dataclass(frozen=True)
class PipelineConfig:
    """Server-side defaults; a stream's SwapOptions may override some of them."""

    # Full-frame detection every K frames. Between them a face is followed by its landmarks (aligned
    # models) or found by Haar near its last box; the whole-frame search only notices faces coming
    # and going and confirms the tracks, and on a 720p frame it costs about 20 ms of CPU: at K = 10 a
    # new face is picked up within a third of a second at 30 FPS, for 2 ms per frame on average.
    redetect_every: int = 10
    detect_max_side: int = 320    # whole-frame Haar runs on a grey image downscaled to this side
    min_face_frac: float = 0.1    # smallest face found in a whole frame, share of its shorter side
    rescan_scale_factor: float = 1.2  # Haar scale step of the scheduled whole-frame search while tracking
    roi_max_side: int = 128       # tracking Haar runs on the region around the faces, this size
    max_faces: int = 4
    blend: str = "alpha"          # alpha | seamless
    colour_transfer: bool = True
    mask_feather: float = 0.15
    # Ellipse of the blend mask, as shares of the crop side (faces.mask.ellipse_mask). With the
    # usual 0.2 crop margin this covers about the Haar box: the inner face is replaced and the
    # target's hair and outline stay, which hides the blurry borders of a young model's output.
    mask_rx: float = 0.30
    mask_ry: float = 0.36
    mask_cy: float = 0.55
    smoothing: float = 0.5        # weight of the previous box in the moving average
    # Aligned models: the blend mask is faces/regions.py's face region shrunk by `blend_erode` and
    # feathered over `blend_feather` (fractions of the crop side), and the landmarks are smoothed
    # by a One-Euro filter (Hz at rest; growth of the cut-off with speed in eye distances per s).
    blend_erode: float = BLEND_ERODE
    blend_feather: float = BLEND_FEATHER
    landmark_min_cutoff: float = 1.5
    landmark_beta: float = 0.8
    queue_depth: int = 4          # frames prepared ahead of the one being finished, per stream
    jpeg_quality: int = 90
    max_reply_bytes: int = 16 * 1024 * 1024  # the transport's send cap: larger replies fail per frame
    first_frame_timeout: float = 10.0  # seconds a new stream may take to send its first frame
    idle_timeout: float = 60.0         # seconds a stream with nothing in flight may stay silent
    decode_pixels: int = 2 * MAX_PIXELS  # pixels being decoded at once, over all streams and calls
    decode_wait: float = 10.0          # seconds a frame waits for that budget before it fails (busy)


@dataclass
class StreamSettings:
    """The resolved settings of one stream (config + the first frame's SwapOptions)."""

    blend: str
    colour_transfer: bool
    redetect_every: int
    max_faces: int
    reply_encoding: int  # ENCODING_UNSPECIFIED = same as each input frame
    jpeg_quality: int
    keep_mouth: bool = False  # aligned models: the source's mouth stays over the swap
    reply_region: bool = False  # reply with the changed rectangle only (SwappedFrame.region)

    @classmethod
    def resolve(cls, config: PipelineConfig, options: swap_pb2.SwapOptions | None) -> "StreamSettings":
        """Settings from `options` over `config`; SwapError(BAD_INPUT) for a value this server does not know."""
        o = options or swap_pb2.SwapOptions()
        blends = {swap_pb2.BLEND_DEFAULT: config.blend, swap_pb2.BLEND_ALPHA: "alpha",
                  swap_pb2.BLEND_SEAMLESS: "seamless"}
        if o.blend not in blends:
            raise SwapError(Failure.BAD_INPUT, f"unknown blend mode {o.blend}; use BLEND_ALPHA or BLEND_SEAMLESS")
        if o.reply_encoding not in (swap_pb2.ENCODING_UNSPECIFIED, *ENCODINGS):
            raise SwapError(Failure.BAD_INPUT,
                            f"unknown reply_encoding {o.reply_encoding}; use JPEG, PNG, RAW_BGR or leave it unset")
        if o.jpeg_quality > 100:
            raise SwapError(Failure.BAD_INPUT, f"jpeg_quality must be 1..100 (0 = default), got {o.jpeg_quality}")
        return cls(
            blend=blends[o.blend],
            colour_transfer=config.colour_transfer and not o.skip_colour_transfer,
            redetect_every=int(o.redetect_every or config.redetect_every),
            max_faces=int(min(o.max_faces or config.max_faces, 16)),
            reply_encoding=int(o.reply_encoding),
            jpeg_quality=int(o.jpeg_quality or config.jpeg_quality),
            keep_mouth=bool(o.keep_mouth),
            reply_region=bool(o.reply_region),
        )


class ColourMatch:
    """Reinhard colour transfer (LAB mean and standard deviation, as faces/color.py) between an
    aligned model's output face and its input crop, each measured inside the template's face
    region at its own side (the output may be 2x the input): OpenCV's masked statistics and one
    per-channel affine map, about 5x cheaper than faces.color.reinhard_transfer on a 128 px face."""

    def __init__(self, template: AlignTemplate, in_size: int, out_size: int) -> None:
        self._in = (face_mask(template, in_size) > 0.5).astype(np.uint8)
        self._out = (face_mask(template, out_size) > 0.5).astype(np.uint8)

    def __call__(self, face: np.ndarray, source: np.ndarray) -> np.ndarray:
        """`face` (uint8 BGR, output side) recoloured so its face region's LAB statistics match
        those of `source` (uint8 BGR, the input crop)."""
        lab = cv2.cvtColor(face, cv2.COLOR_BGR2LAB)
        f_mu, f_sd = cv2.meanStdDev(lab, mask=self._out)
        s_mu, s_sd = cv2.meanStdDev(cv2.cvtColor(source, cv2.COLOR_BGR2LAB), mask=self._in)
        gain = s_sd[:, 0] / np.maximum(f_sd[:, 0], 1e-3)
        m = np.zeros((3, 4), np.float64)
        m[:, :3] = np.diag(gain)
        m[:, 3] = s_mu[:, 0] - gain * f_mu[:, 0]
        return cv2.cvtColor(cv2.transform(lab, m), cv2.COLOR_LAB2BGR)


class PixelBudget:
    """A fair counting semaphore over pixels being decoded, shared by every stream and call.

    A frame's size is known from its header before decoding; it waits (first come, first
    served) until its pixels fit, so the transient memory of decoding stays under
    `capacity` x 3 bytes plus the decoders' working buffers, however many frames arrive at once.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("pixel budget must be >= 1")
        self.capacity = int(capacity)
        self._used = 0
        self._cond = threading.Condition()
        self._waiting: deque = deque()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    def acquire(self, pixels: int, timeout: float) -> bool:
        """Take `pixels` (at most `capacity`); False if they did not fit within `timeout` seconds."""
        pixels = min(int(pixels), self.capacity)
        deadline = time.monotonic() + timeout
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or self._used + pixels > self.capacity:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self._used += pixels
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self, pixels: int) -> None:
        with self._cond:
            self._used -= min(int(pixels), self.capacity)
            self._cond.notify_all()


# frame, boxes of the swapped faces -> frame; see SwapPipeline._mark_faces. A marker that also has
# a `for_stream()` method gives each stream its own marker from it (e.g. a watermark whose anchor
# follows the faces from frame to frame).
FaceMarker = Callable[[np.ndarray, Sequence[Box]], np.ndarray]


@dataclass
class FrameJob:
    """One frame between its stages."""

    index: int
    encoding: int
    received: float
    image: np.ndarray | None = None
    boxes: list = field(default_factory=list)
    crops: np.ndarray | None = None
    transforms: list[CropTransform] = field(default_factory=list)
    alignments: list[Alignment] = field(default_factory=list)  # aligned models: at the template's side
    future: Future | None = None
    decode_ms: float = 0.0
    detect_ms: float = 0.0
    align_ms: float = 0.0
    error: SwapError | None = None


@dataclass
class FrameResult:
    """A frame's reply and, when it failed, why (the reply's `error` field is left to the service)."""

    reply: swap_pb2.SwappedFrame
    error: SwapError | None = None


class SwapPipeline:
    """Runs frames of one model through the stages. Thread-safe: no per-stream state here."""

    def __init__(self, model: LoadedModel, config: PipelineConfig, budget: PixelBudget | None = None,
                 mark: FaceMarker | None = None, detectors: DetectorPool | None = None,
                 preparers: ThreadPoolExecutor | None = None) -> None:
        self.model = model
        self.config = config
        self.budget = budget or PixelBudget(config.decode_pixels)
        self._mark = mark
        m = model.manifest
        size = m.crop_size
        self.aligned = m.aligned
        if self.aligned:
            t, out = m.align_template, m.out_size
            # One predictor for every stream: it is read-only, and dlib's calls hold the GIL.
            self._aligner = Aligner(t)
            self._mask = blend_mask(t, out, config.blend_erode, config.blend_feather)
            self._mouth_kept = np.ascontiguousarray(self._mask * (1.0 - mouth_mask(t, out)), np.float32)
            self._support = mask_support(self._mask)  # only this part of the square is pasted
            self._colour = ColourMatch(t, size, out)
        else:
            self._mask = ellipse_mask(size, config.mask_feather, rx=config.mask_rx, ry=config.mask_ry,
                                      cy=config.mask_cy)
        # Threads that run streams' preparers (server-wide when the servicer passes them; else
        # a thread per stream). OpenCV keeps ~1 KB for every thread that ever called it, so
        # a thread per stream is a slow leak in a long-running server.
        self.preparers = preparers
        # Haar cascades shared by its streams and images (server-wide when the servicer passes its pool).
        self.detectors = detectors or DetectorPool(config, sets=2)

    def new_tracker(self, settings: StreamSettings) -> FaceTracker:
        """A stream's tracker on the pool's cascades (each search on a kept set)."""
        return stream_tracker(self.config, settings, self.detectors.lend(),
                              self._landmark_filter() if self.aligned else None)

    def _landmark_filter(self):
        return functools.partial(OneEuroPoints, min_cutoff=self.config.landmark_min_cutoff,
                                 beta=self.config.landmark_beta)

    def prepare(self, msg: swap_pb2.Frame, tracker: FaceTracker, received: float,
                settings: StreamSettings) -> FrameJob:
        """Decode, detect and crop one frame and hand its faces to the batcher (never raises)."""
        job = FrameJob(index=msg.index, encoding=msg.encoding, received=received)
        t0 = time.perf_counter()
        try:
            if msg.model and msg.model != self.model.name:
                raise SwapError(Failure.BAD_INPUT, f"frame names model {shorten(msg.model)} "
                                                   f"but this stream uses {self.model.name!r}")
            job.image = self._decode(msg, settings.reply_encoding or msg.encoding)
        except FrameDecodeError as exc:
            job.error = SwapError(Failure.BAD_INPUT, str(exc))
            return job
        except SwapError as exc:
            # Without its traceback: that holds this frame, which holds the job and the message, a
            # cycle only the cyclic GC frees (often much later), so fuzzed frames' bytes piled up.
            job.error = exc.with_traceback(None)
            return job
        t1 = time.perf_counter()
        job.decode_ms = (t1 - t0) * 1000.0
        m = self.model.manifest
        try:
            crops = []
            if self.aligned:
                faces = tracker.update_faces(job.image)
                t2 = time.perf_counter()
                job.detect_ms = (t2 - t1) * 1000.0
                for face in faces:
                    crop = self._align(job, tracker, face.box, face.track_id)
                    if crop is not None:
                        crops.append(crop)
                job.align_ms = (time.perf_counter() - t2) * 1000.0
            else:
                job.boxes = tracker.update(job.image)
                for box in job.boxes:
                    crop, transform = crop_face(job.image, box, m.crop_size, m.crop_margin)
                    crops.append(crop)
                    job.transforms.append(transform)
                job.detect_ms = (time.perf_counter() - t1) * 1000.0
        except Exception as exc:  # keep serving: this frame reports the failure
            job.error = SwapError(Failure.INTERNAL, f"detection failed: {type(exc).__name__}: {exc}")
            return job
        if crops:
            job.crops = np.stack(crops)
            try:
                job.future = self.model.batcher.submit(job.crops)
            except queue.Full:
                job.error = SwapError(Failure.BUSY, "the inference queue is full; retry later")
        return job

    def _align(self, job: FrameJob, tracker: FaceTracker, box: Box, track_id: int) -> np.ndarray | None:
        """The face in `box` aligned to the template at the model's input side (its alignment and
        box recorded in `job`), or None when the five points do not land on a face."""
        try:
            points = self._aligner.landmarks(job.image, box)
        except ValueError:  # the box lies (mostly) outside the frame
            return None
        smoothed = tracker.smooth_landmarks(track_id, points, eye_distance(points))
        al = self._aligner.from_landmarks(smoothed)
        if not plausible(al.landmarks, box, al.roll):
            return None
        # The next frame looks for this face where its landmarks are (no Haar search in between
        # full detections); the raw points, so the smoothing does not feed back into the boxes.
        tracker.follow_landmarks(track_id, points)
        job.boxes.append(box)
        job.alignments.append(al)
        return warp_face(job.image, rescale(al, self.model.manifest.crop_size))

    def _decode(self, msg: swap_pb2.Frame, reply_encoding: int) -> np.ndarray:
        """The frame's image, its size checked from the header and its decoding within the budget."""
        width, height = frame_size(msg.encoding, msg.data, msg.width, msg.height)
        # A raw reply's size is known now: refuse it before any work rather than after all of it.
        if reply_encoding == RAW_BGR and width * height * 3 + REPLY_OVERHEAD > self.config.max_reply_bytes:
            raise SwapError(Failure.BAD_INPUT, self._too_large(RAW_BGR, width * height * 3))
        pixels = width * height
        if not self.budget.acquire(pixels, self.config.decode_wait):
            raise SwapError(Failure.BUSY, f"server busy decoding other frames (no room for {width}x{height} "
                                          f"within {self.config.decode_wait:g} s); retry later")
        try:
            return decode_frame(msg.encoding, msg.data, msg.width, msg.height)
        finally:
            self.budget.release(pixels)

    def _too_large(self, encoding: int, size: int) -> str:
        return (f"the {encoding_name(encoding)} reply would be {size} bytes, over the server's "
                f"{self.config.max_reply_bytes}-byte message cap; send smaller frames or ask for JPEG replies")

    def stream_marker(self) -> FaceMarker | None:
        """The marker for one new stream: the model's own, or a per-stream one made from it."""
        make = getattr(self._mark, "for_stream", None)
        return make() if callable(make) else self._mark

    def finish(self, job: FrameJob, settings: StreamSettings, mark: FaceMarker | None = None) -> FrameResult:
        """Wait for the faces, blend them into the frame, encode; a failure goes into the result."""
        reply = swap_pb2.SwappedFrame(index=job.index, model=self.model.name)
        if job.error is not None:
            return self._failed(reply, job, job.error)
        if job.future is not None and job.future.exception() is not None:
            # Not re-raised: the one exception of a failed batch would gather every frame's
            # traceback, each holding its job, in a cycle.
            exc = job.future.exception()
            return self._failed(reply, job, SwapError(Failure.INTERNAL, f"swap failed: {type(exc).__name__}: {exc}"))
        mark = mark or self._mark
        try:
            frame = job.image
            infer_ms, batch_faces = 0.0, 0
            blend_ms = 0.0
            if job.future is not None:
                result = job.future.result()
                infer_ms, batch_faces = result.infer_ms, result.batch_faces
                t0 = time.perf_counter()
                frame = self._mark_faces(self._blend(frame, job, result, settings), job.boxes, mark)
                blend_ms = (time.perf_counter() - t0) * 1000.0
            t0 = time.perf_counter()
            encoding = settings.reply_encoding or job.encoding
            region = None
            if settings.reply_region:
                # Only the pixels the swap (and the mark) changed travel back: the client has the rest.
                region = (self._changed_region(job, frame.shape, mark is not None) if job.future is not None
                          else (0, 0, 0, 0))
                x0, y0, x1, y1 = region
                data = encode_frame(frame[y0:y1, x0:x1], encoding, settings.jpeg_quality) if x1 > x0 else b""
            else:
                data = encode_frame(frame, encoding, settings.jpeg_quality)
            encode_ms = (time.perf_counter() - t0) * 1000.0
            if len(data) + REPLY_OVERHEAD > self.config.max_reply_bytes:
                raise SwapError(Failure.BAD_INPUT, self._too_large(encoding, len(data)))
        except SwapError as exc:
            return self._failed(reply, job, exc)
        except Exception as exc:
            return self._failed(reply, job, SwapError(Failure.INTERNAL, f"swap failed: {type(exc).__name__}: {exc}"))
        reply.data = data
        reply.encoding = encoding
        reply.height, reply.width = frame.shape[:2]
        if region is not None:
            x0, y0, x1, y1 = region
            reply.region.SetInParent()  # present even when empty: "nothing changed"
            reply.region.x, reply.region.y, reply.region.width, reply.region.height = x0, y0, x1 - x0, y1 - y0
        for b in job.boxes:
            reply.faces.add(x=b.x, y=b.y, width=b.w, height=b.h)
        t = reply.timings
        t.decode_ms, t.detect_ms, t.align_ms, t.infer_ms = job.decode_ms, job.detect_ms, job.align_ms, infer_ms
        t.blend_ms, t.encode_ms, t.batch_faces = blend_ms, encode_ms, batch_faces
        t.total_ms = (time.perf_counter() - job.received) * 1000.0
        t.queue_ms = max(0.0, t.total_ms - (job.decode_ms + job.detect_ms + job.align_ms + infer_ms + blend_ms
                                            + encode_ms))
        return FrameResult(reply)

    # The changed rectangle is grown to whole 16 px blocks (JPEG's 4:2:0 coding unit): a region reply
    # is then coded in the same blocks as the whole frame would be, and its edge lies on unchanged pixels.
    REGION_BLOCK = 16

    def _changed_region(self, job: FrameJob, shape: tuple[int, ...], marked: bool) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): every frame pixel the faces' paste and mark may have changed, in whole blocks."""
        # Where the marker works: a small face is marked over a larger square about it.
        boxes = [mark_box((b.x, b.y, b.w, b.h)) if marked else (b.x, b.y, b.w, b.h) for b in job.boxes]
        rects = [(x, y, x + w, y + h) for x, y, w, h in boxes]
        if self.aligned:
            out = self.model.manifest.out_size
            for al in job.alignments:
                r = footprint(rescale(al, out), shape, self._support)
                if r is not None:
                    rects.append(r)
        else:
            rects += [(t.box.x, t.box.y, t.box.x + t.box.w, t.box.y + t.box.h) for t in job.transforms]
        if not rects:
            return (0, 0, 0, 0)
        h, w = shape[:2]
        k = self.REGION_BLOCK
        x0 = max(0, min(r[0] for r in rects)) // k * k
        y0 = max(0, min(r[1] for r in rects)) // k * k
        x1 = min(w, -(-max(r[2] for r in rects) // k) * k)
        y1 = min(h, -(-max(r[3] for r in rects) // k) * k)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else (0, 0, 0, 0)

    @staticmethod
    def _failed(reply: swap_pb2.SwappedFrame, job: FrameJob, error: SwapError) -> FrameResult:
        reply.timings.total_ms = (time.perf_counter() - job.received) * 1000.0
        return FrameResult(reply, error)

    def _blend(self, frame: np.ndarray, job: FrameJob, result, settings: StreamSettings) -> np.ndarray:
        if self.aligned:
            return self._blend_aligned(frame, job, result, settings)
        for i, transform in enumerate(job.transforms):
            face = result.faces[i]
            mask = self._mask if result.masks is None else result.masks[i] * self._mask
            if settings.colour_transfer:
                face = reinhard_transfer(face, job.crops[i], self._mask)
            frame = paste_back(frame, face, transform, mask=mask, mode=settings.blend)
        return frame

    def _blend_aligned(self, frame: np.ndarray, job: FrameJob, result, settings: StreamSettings) -> np.ndarray:
        """Each output face (side O, possibly 2x the input's) colour-matched to the input crop inside
        the template's face region, pasted back through the inverse warp with the blend mask."""
        # Pasted in place: the decoded image is this frame's own (its crops are copies already).
        mask = self._mouth_kept if settings.keep_mouth else self._mask
        for i, al in enumerate(job.alignments):
            face = result.faces[i]
            out = rescale(al, face.shape[0])
            weight = mask if result.masks is None else mask * result.masks[i]
            if settings.colour_transfer:
                face = self._colour(face, job.crops[i])
            if settings.blend == "seamless" and self._paste_seamless(frame, face, out, weight):
                continue
            paste_aligned(frame, face, out, weight, inplace=True, support=self._support)
        return frame

    @staticmethod
    def _paste_seamless(frame: np.ndarray, face: np.ndarray, al: Alignment, weight: np.ndarray) -> bool:
        """Poisson-blend the face's warped footprint in place; False (nothing done) where the
        footprint touches the frame's edge, which cv2.seamlessClone cannot take."""
        warped = warp_to_frame(face, al, frame.shape, weight, mask_support(weight))
        if warped is None:
            return False
        patch, alpha, x0, y0 = warped
        h, w = patch.shape[:2]
        m8 = (alpha > 0.5).astype(np.uint8) * 255
        if x0 < 1 or y0 < 1 or x0 + w > frame.shape[1] - 1 or y0 + h > frame.shape[0] - 1 or not m8.any():
            return False
        ys, xs = np.nonzero(m8)
        centre = (x0 + (int(xs.min()) + int(xs.max()) + 1) // 2, y0 + (int(ys.min()) + int(ys.max()) + 1) // 2)
        frame[...] = cv2.seamlessClone(patch, frame, m8, centre, cv2.NORMAL_CLONE)
        return True

    def _mark_faces(self, frame: np.ndarray, boxes: Sequence[Box], mark: FaceMarker | None) -> np.ndarray:
        """The one place where the swapped face regions are final (colour-matched, blended and
        pasted back) and the frame is not yet encoded: the provenance watermark goes in here."""
        return frame if mark is None or not boxes else mark(frame, boxes)

    def swap_one(self, msg: swap_pb2.Frame, settings: StreamSettings) -> FrameResult:
        """One image, full detection (no tracking); used by the unary SwapImage."""
        received = time.perf_counter()
        tracker = FaceTracker(self.detectors.lend().full, redetect_every=1, smoothing=0.0, hold=0,
                              max_faces=settings.max_faces, landmark_filter=None)
        return self.finish(self.prepare(msg, tracker, received, settings), settings)

    def stream_results(self, frames: "Iterable[swap_pb2.Frame] | FrameReader", settings: StreamSettings,
                       stop: "StreamControl") -> Iterator[FrameResult]:
        """Results for `frames`, in order, with the stages overlapped (see module doc).

        Three threads per stream: a reader pulls messages off the transport as soon as they
        arrive (a FrameReader; pass one to have read the first frame already), a preparer
        (on one of `preparers` when given) decodes/detects/crops, each search on a cascade set
        borrowed from `detectors`, and submits faces to the batcher, and the caller's thread finishes
        and yields results in order.

        `stop` lets the server cancel the stream (client gone) or drain it (shutdown): when
        draining, the reader stops taking new messages and the stream ends as soon as every
        message it took has been answered; stop.drained then says so. A stream with nothing in
        flight that receives no frame for `idle_timeout` seconds raises SwapError(TIMEOUT).
        """
        depth = max(1, self.config.queue_depth)
        reader = frames if isinstance(frames, FrameReader) else FrameReader(frames, stop, depth)
        tracker = self.new_tracker(settings)
        marker = self.stream_marker()
        jobs: queue.Queue = queue.Queue(maxsize=depth)  # FrameJob, in order

        def prepare_all() -> None:
            while True:
                item = reader.get(timeout=0.1)
                if item is None:
                    if stop.cancelled.is_set():
                        return
                    continue
                if item is FrameReader.END:
                    _put(jobs, item, stop)
                    return
                msg, received = item
                if not _put(jobs, self.prepare(msg, tracker, received, settings), stop):
                    return

        if self.preparers is not None:
            self.preparers.submit(prepare_all).add_done_callback(_log_failure)
        else:
            threading.Thread(target=prepare_all, name="stream-prepare", daemon=True).start()
        idle = self.config.idle_timeout
        last_reply = time.monotonic()
        try:
            while True:
                try:
                    item = jobs.get(timeout=0.05)
                except queue.Empty:
                    if stop.cancelled.is_set():
                        return
                    with reader.lock:
                        settled = stop.taken == stop.answered
                        if settled and stop.draining.is_set():
                            # Every message taken off the transport has been answered; the
                            # reader is waiting for the client, so the stream can end now.
                            reader.closed = True
                            stop.drained = True
                            return
                        silent = time.monotonic() - max(reader.last_arrival, last_reply)
                    if settled and idle and silent > idle:
                        raise SwapError(Failure.TIMEOUT, f"no frame for {silent:.0f} s "
                                                         f"(the server's idle timeout is {idle:g} s)")
                    continue
                if item is FrameReader.END:
                    stop.drained = not reader.exhausted and reader.error is None
                    stop.failed = reader.error
                    return
                result = self.finish(item, settings, marker)
                with reader.lock:
                    stop.answered += 1
                last_reply = time.monotonic()
                yield result
        finally:
            # However the consumer ends (done, drained, cancelled, timed out, generator closed),
            # the helper threads must not wait on queues nobody reads any more.
            stop.cancelled.set()


class FrameReader:
    """Takes a stream's messages off the transport in its own thread, into a bounded queue.

    Counts them in `control.taken`; stops taking when the stream is draining or cancelled.
    `first()` waits for the first frame (the service needs it to pick the model) without
    consuming it.
    """

    END = object()

    def __init__(self, frames: Iterable[swap_pb2.Frame], control: "StreamControl", depth: int = 4) -> None:
        self._frames = frames
        self._control = control
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._pending = None
        self.lock = threading.Lock()
        self.closed = False        # set when a drain ended the stream: later messages are not taken
        self.exhausted = False     # the client finished sending
        self.error: Exception | None = None  # the request stream raised (client gone, transport error)
        self.last_arrival = time.monotonic()  # idle time counts from the stream's start
        self._thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        c = self._control
        try:
            for msg in self._frames:
                received = time.perf_counter()
                with self.lock:
                    if self.closed:  # arrived after the drain decided to end the stream
                        return
                    c.taken += 1
                    self.last_arrival = time.monotonic()
                if not _put(self._queue, (msg, received), c):
                    return
                if c.draining.is_set() or c.cancelled.is_set():
                    break
            else:
                self.exhausted = True
        except Exception as exc:
            self.error = exc.with_traceback(None)
        _put(self._queue, self.END, c)

    def get(self, timeout: float):
        """The next (message, arrival time), END, or None if nothing came within `timeout`."""
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def first(self, timeout: float) -> swap_pb2.Frame | None:
        """The stream's first frame (left for `get`), None if the client ended the stream without
        one or went away; SwapError(TIMEOUT) if it sent nothing within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._pending is None:
            if self._control.cancelled.is_set():
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise SwapError(Failure.TIMEOUT, f"no frame within {timeout:g} s of the stream's start")
            self._pending = self.get(min(left, 0.1))
        if self._pending is self.END:
            return None
        return self._pending[0]


def stream_tracker(config: PipelineConfig, settings: StreamSettings, detectors: DetectorSet,
                   landmark_filter=None) -> FaceTracker:
    """The tracker a stream of `settings` uses: the whole-frame, region and rescan detectors of
    `detectors`, the config's smoothing; `landmark_filter` for aligned models (None: no smoothing)."""
    return FaceTracker(detectors.full, detectors.roi, redetect_every=settings.redetect_every,
                       smoothing=config.smoothing, max_faces=settings.max_faces, landmark_filter=landmark_filter,
                       rescan_detector=detectors.rescan)


def _log_failure(future: Future) -> None:
    """A preparer run on a kept thread: its failure would otherwise stay unseen in its future."""
    exc = None if future.cancelled() else future.exception()
    if exc is not None:
        log.error("stream preparer failed: %s: %s", type(exc).__name__, exc)


def _put(q: queue.Queue, item, control: "StreamControl") -> bool:
    """Blocking put that gives up when the stream is cancelled."""
    while not control.cancelled.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass(eq=False)  # identity semantics: kept in a set of live streams
class StreamControl:
    """Signals from the server to one running stream."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    draining: threading.Event = field(default_factory=threading.Event)
    taken: int = 0                       # messages taken off the transport
    answered: int = 0                    # replies produced
    drained: bool = False                # ended early because the server is shutting down
    failed: Exception | None = None      # the request stream raised (client gone, transport error)
