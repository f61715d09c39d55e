"""The per-frame swap pipeline and its streaming form.

Stages of one frame:
    prepare (decode -> track/detect -> crop with the model's margin -> submit to the batcher)
    infer   (the model's InferenceBatcher: all faces of the frame, and of other frames and
             streams waiting at that moment, in one onnxruntime call)
    finish  (colour transfer -> feathered mask -> blend/paste back -> encode)

A stream runs the three stages concurrently: a thread prepares frame n+1 while the batcher
infers frame n and the caller's thread finishes frame n-1. Frames pass through bounded FIFOs,
so replies keep the input order and a fast client cannot make the server buffer more than
2 x `queue_depth` frames per stream (it is slowed down by gRPC flow control instead).

The pipeline speaks the wire messages (swap_pb2.Frame in, swap_pb2.SwappedFrame out), so
`swapstream bench --in-process` runs exactly what the gRPC service runs, minus the transport.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc
import numpy as np

from swapstream.faces.color import reinhard_transfer
from swapstream.faces.crop import CropTransform, crop_face, paste_back
from swapstream.faces.detect import HaarDetector
from swapstream.faces.mask import ellipse_mask
from swapstream.server.codec import FrameDecodeError, decode_frame, encode_frame
from swapstream.server.registry import LoadedModel
from swapstream.server.tracking import FaceTracker
from swapstream.v1 import swap_pb2


@dataclass(frozen=True)
class PipelineConfig:
    """Server-side defaults; a stream's SwapOptions may override some of them."""

    redetect_every: int = 5       # full-frame detection every K frames
    detect_max_side: int = 320    # whole-frame Haar runs on a grey image downscaled to this side
    min_face_frac: float = 0.1    # smallest face found in a whole frame, share of its shorter side
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
    queue_depth: int = 4          # frames prepared ahead of the one being finished, per stream
    jpeg_quality: int = 90


@dataclass
class StreamSettings:
    """The resolved settings of one stream (config + the first frame's SwapOptions)."""

    blend: str
    colour_transfer: bool
    redetect_every: int
    max_faces: int
    reply_encoding: int  # ENCODING_UNSPECIFIED = same as each input frame
    jpeg_quality: int

    @classmethod
    def resolve(cls, config: PipelineConfig, options: swap_pb2.SwapOptions | None) -> "StreamSettings":
        o = options or swap_pb2.SwapOptions()
        blend = {swap_pb2.BLEND_ALPHA: "alpha", swap_pb2.BLEND_SEAMLESS: "seamless"}.get(o.blend, config.blend)
        return cls(
            blend=blend,
            colour_transfer=config.colour_transfer and not o.skip_colour_transfer,
            redetect_every=int(o.redetect_every or config.redetect_every),
            max_faces=int(min(o.max_faces or config.max_faces, 16)),
            reply_encoding=int(o.reply_encoding),
            jpeg_quality=int(o.jpeg_quality or config.jpeg_quality),
        )


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
    future: Future | None = None
    decode_ms: float = 0.0
    detect_ms: float = 0.0
    error: tuple[int, str] | None = None  # (grpc status code number, message)


class SwapPipeline:
    """Runs frames of one model through the stages. Thread-safe: no per-stream state here."""

    def __init__(self, model: LoadedModel, config: PipelineConfig) -> None:
        self.model = model
        self.config = config
        size = model.manifest.crop_size
        self._mask = ellipse_mask(size, config.mask_feather, rx=config.mask_rx, ry=config.mask_ry,
                                  cy=config.mask_cy)
        # Whole-frame detectors reused by single-image calls (loading a cascade takes ~10 ms).
        self._spare_detectors: queue.SimpleQueue = queue.SimpleQueue()

    def _full_detector(self) -> HaarDetector:
        return HaarDetector(max_side=self.config.detect_max_side, min_size_frac=self.config.min_face_frac)

    def new_tracker(self, settings: StreamSettings) -> FaceTracker:
        """A tracker with its own Haar cascades (cascades are not shared between threads)."""
        c = self.config
        detector = self._full_detector()
        # Around a tracked face the face spans about 1/(1 + 2 * roi_grow) of the region: a
        # larger minimum size and coarser scale steps find it at a third of the cost.
        roi_detector = HaarDetector(scale_factor=1.2, min_neighbors=4, max_side=c.roi_max_side,
                                    min_size_frac=0.3)
        return FaceTracker(detector, roi_detector, redetect_every=settings.redetect_every,
                           smoothing=self.config.smoothing, max_faces=settings.max_faces)

    def prepare(self, msg: swap_pb2.Frame, tracker: FaceTracker, received: float) -> FrameJob:
        """Decode, detect and crop one frame and hand its faces to the batcher (never raises)."""
        job = FrameJob(index=msg.index, encoding=msg.encoding, received=received)
        if msg.model and msg.model != self.model.name:
            job.error = (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                         f"frame names model {msg.model!r} but this stream uses {self.model.name!r}")
            return job
        t0 = time.perf_counter()
        try:
            job.image = decode_frame(msg.encoding, msg.data, msg.width, msg.height)
        except FrameDecodeError as exc:
            job.error = (grpc.StatusCode.INVALID_ARGUMENT.value[0], str(exc))
            return job
        t1 = time.perf_counter()
        job.decode_ms = (t1 - t0) * 1000.0
        m = self.model.manifest
        try:
            job.boxes = tracker.update(job.image)
            crops = []
            for box in job.boxes:
                crop, transform = crop_face(job.image, box, m.crop_size, m.crop_margin)
                crops.append(crop)
                job.transforms.append(transform)
            job.detect_ms = (time.perf_counter() - t1) * 1000.0
            if crops:
                job.crops = np.stack(crops)
                job.future = self.model.batcher.submit(job.crops)
        except Exception as exc:  # keep serving: this frame reports the failure
            job.error = (grpc.StatusCode.INTERNAL.value[0], f"detection failed: {type(exc).__name__}: {exc}")
        return job

    def finish(self, job: FrameJob, settings: StreamSettings) -> swap_pb2.SwappedFrame:
        """Wait for the faces, blend them into the frame, encode; errors become a per-frame error."""
        reply = swap_pb2.SwappedFrame(index=job.index, model=self.model.name)
        if job.error is not None:
            reply.error.code, reply.error.message = job.error
            reply.timings.total_ms = (time.perf_counter() - job.received) * 1000.0
            return reply
        try:
            frame = job.image
            infer_ms, batch_faces = 0.0, 0
            blend_ms = 0.0
            if job.future is not None:
                result = job.future.result()
                infer_ms, batch_faces = result.infer_ms, result.batch_faces
                t0 = time.perf_counter()
                frame = self._blend(frame, job, result, settings)
                blend_ms = (time.perf_counter() - t0) * 1000.0
            t0 = time.perf_counter()
            encoding = settings.reply_encoding or job.encoding
            reply.data = encode_frame(frame, encoding, settings.jpeg_quality)
            encode_ms = (time.perf_counter() - t0) * 1000.0
        except Exception as exc:
            reply.error.code = grpc.StatusCode.INTERNAL.value[0]
            reply.error.message = f"swap failed: {type(exc).__name__}: {exc}"
            reply.timings.total_ms = (time.perf_counter() - job.received) * 1000.0
            return reply
        reply.encoding = encoding
        reply.height, reply.width = frame.shape[:2]
        for b in job.boxes:
            reply.faces.add(x=b.x, y=b.y, width=b.w, height=b.h)
        t = reply.timings
        t.decode_ms, t.detect_ms, t.infer_ms = job.decode_ms, job.detect_ms, infer_ms
        t.blend_ms, t.encode_ms, t.batch_faces = blend_ms, encode_ms, batch_faces
        t.total_ms = (time.perf_counter() - job.received) * 1000.0
        t.queue_ms = max(0.0, t.total_ms - (job.decode_ms + job.detect_ms + infer_ms + blend_ms + encode_ms))
        return reply

    def _blend(self, frame: np.ndarray, job: FrameJob, result, settings: StreamSettings) -> np.ndarray:
        for i, transform in enumerate(job.transforms):
            face = result.faces[i]
            mask = self._mask if result.masks is None else result.masks[i] * self._mask
            if settings.colour_transfer:
                face = reinhard_transfer(face, job.crops[i], self._mask)
            frame = paste_back(frame, face, transform, mask=mask, mode=settings.blend)
        return frame

    def swap_one(self, msg: swap_pb2.Frame, settings: StreamSettings) -> swap_pb2.SwappedFrame:
        """One image, full detection (no tracking); used by the unary SwapImage."""
        received = time.perf_counter()
        try:
            detector = self._spare_detectors.get_nowait()
        except queue.Empty:
            detector = self._full_detector()
        try:
            tracker = FaceTracker(detector, redetect_every=1, smoothing=0.0, hold=0, max_faces=settings.max_faces)
            job = self.prepare(msg, tracker, received)
        finally:
            self._spare_detectors.put(detector)
        return self.finish(job, settings)

    def run_stream(self, frames: Iterable[swap_pb2.Frame], settings: StreamSettings,
                   stop: "StreamControl") -> Iterator[swap_pb2.SwappedFrame]:
        """Replies for `frames`, in order, with the stages overlapped (see module doc).

        Three threads per stream: a reader pulls messages off the transport as soon as they
        arrive (into a bounded queue), a preparer decodes/detects/crops and submits faces to the
        batcher, and the caller's thread finishes and yields replies in order.

        `stop` lets the server cancel the stream (client gone) or drain it (shutdown): when
        draining, the reader stops taking new messages and the stream ends as soon as every
        message it took has been answered; stop.drained then says so.
        """
        tracker = self.new_tracker(settings)
        depth = max(1, self.config.queue_depth)
        incoming: queue.Queue = queue.Queue(maxsize=depth)  # (message, arrival time)
        jobs: queue.Queue = queue.Queue(maxsize=depth)      # FrameJob, in order
        end = object()
        lock = threading.Lock()
        state = {"closed": False, "exhausted": False, "error": None}

        def put(q: queue.Queue, item) -> bool:
            """Blocking put that gives up when the stream is cancelled."""
            while not stop.cancelled.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                for msg in frames:
                    received = time.perf_counter()
                    with lock:
                        if state["closed"]:  # arrived after the drain decided to end the stream
                            return
                        stop.taken += 1
                    if not put(incoming, (msg, received)):
                        return
                    if stop.draining.is_set() or stop.cancelled.is_set():
                        break
                else:
                    state["exhausted"] = True  # the client finished sending
            except Exception as exc:  # the request stream failed (client cancelled, transport error)
                state["error"] = exc
            put(incoming, end)

        def preparer() -> None:
            while True:
                try:
                    item = incoming.get(timeout=0.1)
                except queue.Empty:
                    if stop.cancelled.is_set():
                        return
                    continue
                if item is end:
                    put(jobs, end)
                    return
                msg, received = item
                if not put(jobs, self.prepare(msg, tracker, received)):
                    return

        threads = [threading.Thread(target=reader, name="stream-reader", daemon=True),
                   threading.Thread(target=preparer, name="stream-prepare", daemon=True)]
        for t in threads:
            t.start()
        try:
            while True:
                try:
                    item = jobs.get(timeout=0.05)
                except queue.Empty:
                    if stop.cancelled.is_set():
                        return
                    if stop.draining.is_set():
                        with lock:
                            # Every message taken off the transport has been answered; the
                            # reader is waiting for the client, so the stream can end now.
                            if stop.taken == stop.answered:
                                state["closed"] = True
                                stop.drained = True
                                return
                    continue
                if item is end:
                    stop.drained = not state["exhausted"] and state["error"] is None
                    stop.failed = state["error"]
                    return
                reply = self.finish(item, settings)
                with lock:
                    stop.answered += 1
                yield reply
        finally:
            # However the consumer ends (done, drained, cancelled, generator closed), the
            # helper threads must not wait on queues nobody reads any more.
            stop.cancelled.set()


@dataclass(eq=False)  # identity semantics: kept in a set of live streams
class StreamControl:
    """Signals from the server to one running stream."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    draining: threading.Event = field(default_factory=threading.Event)
    taken: int = 0                       # messages taken off the transport
    answered: int = 0                    # replies produced
    drained: bool = False                # ended early because the server is shutting down
    failed: Exception | None = None      # the request stream raised (client gone, transport error)
