"""`swapstream stream`: send a video file (or a webcam) through the swap server, write the result.

Programmatic use (e.g. the demo):

    from swapstream.clients.stream import stream_video
    summary = stream_video("a.mp4", "out/swapped.mp4", model="ae", target=f"127.0.0.1:{port}",
                           side_by_side="out/side_by_side.mp4")
    print(summary.describe())

or frame by frame:

    with SwapClient(f"127.0.0.1:{port}") as client:
        for result in client.stream(frames, model="ae"):
            result.image, result.reply.faces, result.latency_ms

A stream loses no finished work: when the server drains (UNAVAILABLE) or the connection
breaks, the client opens a new call on the same target (which may resolve to another replica)
and resends exactly the frames that were not answered; when every stream slot is taken
(RESOURCE_EXHAUSTED) it backs off with jitter, or waits as long as the server's
`grpc-retry-pushback-ms` hint says. If it still fails, the frames already swapped are kept in a
playable OUT.partial.EXT and `--resume` finishes the job from there.
"""
from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np

# First: faces.wire sets OpenCV's pixel limit, which OpenCV reads once, when faces.video loads it.
from swapstream.faces.wire import (
    MODEL_METADATA_KEY,
    RETRY_PUSHBACK_KEY,
    STAGES,
    WORK_STAGES,
    decode_frame,
    encode_frame,
)

# isort: split
from swapstream.faces.cliutil import ArgumentParser, read_secret_file, run_cli
from swapstream.faces.errors import InputError, VideoError
from swapstream.faces.video import VideoReader, VideoWriter, is_webcam
from swapstream.v1 import swap_pb2, swap_pb2_grpc

PROG = "swapstream stream"
DEFAULT_TARGET = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVICE = "swapstream.v1.FaceSwap"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# Status codes that mean the user asked for something wrong (exit 2), not a failure (exit 1).
USER_ERRORS = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
               grpc.StatusCode.PERMISSION_DENIED}
# A stream is retried on these: the server drains or went away (UNAVAILABLE; CANCELLED when it
# cancelled the call, as a hard stop does), or it has no free slot (RESOURCE_EXHAUSTED).
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}
# A frame answered with this per-frame code was not looked at (server busy): it is sent again.
BUSY_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
# The unary calls go through gRPC's own retry policy (which honours the pushback hint itself);
# a stream cannot (gRPC replays a stream only before its first reply), so `stream` retries it.
SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": SERVICE, "method": "SwapImage"}, {"service": SERVICE, "method": "ListModels"}],
    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.2s", "maxBackoff": "5s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]},
}]})


@dataclass
class StreamResult:
    """One answered frame: what was sent, what came back, and how long it took end to end."""

    index: int
    source: np.ndarray | None       # the frame as sent (None when the caller did not keep it)
    image: np.ndarray | None        # the swapped frame, None if the server reported an error
    reply: swap_pb2.SwappedFrame
    latency_ms: float               # last send -> reply received, as the client saw it


def encode_image(image: np.ndarray, encoding: int = swap_pb2.JPEG, jpeg_quality: int = 90) -> bytes:
    """BGR uint8 image -> frame bytes in `encoding` (the wire codec the server decodes)."""
    try:
        return encode_frame(image, encoding, jpeg_quality)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"could not encode a frame: {exc}") from exc


def decode_reply(reply: swap_pb2.SwappedFrame) -> np.ndarray:
    """The swapped frame of a reply that holds a whole frame, as a BGR uint8 image."""
    try:
        return decode_frame(reply.encoding, reply.data, reply.width, reply.height)
    except ValueError as exc:
        raise RuntimeError(f"reply {reply.index} holds undecodable image data: {exc}") from exc


def reply_image(reply: swap_pb2.SwappedFrame, source: np.ndarray | None) -> np.ndarray:
    """The swapped frame of a reply as a BGR uint8 image: the whole frame it holds, or, for a region
    reply (SwappedFrame.region set), `source` (the frame as sent) with the reply's rectangle pasted
    into a copy of it."""
    if not reply.HasField("region"):
        return decode_reply(reply)
    r = reply.region
    if source is None:
        raise RuntimeError(f"reply {reply.index} holds a region, but the frame it belongs to was not kept")
    h, w = source.shape[:2]
    if ((reply.width, reply.height) != (w, h) or min(r.x, r.y, r.width, r.height) < 0
            or r.x + r.width > w or r.y + r.height > h):
        raise RuntimeError(f"reply {reply.index}: region {r.width}x{r.height} at ({r.x}, {r.y}) does not fit "
                           f"the {w}x{h} frame that was sent")
    image = source.copy()
    if r.width and r.height:
        try:
            patch = decode_frame(reply.encoding, reply.data, r.width, r.height)
        except ValueError as exc:
            raise RuntimeError(f"reply {reply.index} holds undecodable image data: {exc}") from exc
        if patch.shape[:2] != (r.height, r.width):
            raise RuntimeError(f"reply {reply.index}: a {patch.shape[1]}x{patch.shape[0]} image for a "
                               f"{r.width}x{r.height} region")
        image[r.y:r.y + r.height, r.x:r.x + r.width] = patch
    return image


def windowed_replies(messages: Iterable[swap_pb2.Frame],
                     call: Callable[[Iterator[swap_pb2.Frame]], Iterable[swap_pb2.SwappedFrame]],
                     window: int = 4) -> Iterator[tuple[swap_pb2.SwappedFrame, float]]:
    """Drive a stream with at most `window` frames awaiting replies; yield (reply, latency ms).

    `call` turns a request iterator into a reply iterator: a gRPC StreamSwap call, or the
    server's in-process pipeline (the benchmark uses both, so they are measured the same way).
    The window keeps latency meaningful: without it a client would queue the whole video.
    """
    slots = threading.Semaphore(max(1, window))
    sent_at: dict[int, float] = {}
    done = threading.Event()

    def requests() -> Iterator[swap_pb2.Frame]:
        for msg in messages:
            while not slots.acquire(timeout=0.1):
                if done.is_set():
                    return
            sent_at[msg.index] = time.perf_counter()
            yield msg

    try:
        for reply in call(requests()):
            now = time.perf_counter()
            latency = (now - sent_at.pop(reply.index, now)) * 1000.0
            slots.release()
            yield reply, latency
    finally:
        done.set()


@dataclass(frozen=True)
class RetryPolicy:
    """How a stream is retried: exponential backoff with full jitter (gRFC A6's formula).

    `attempts` counts consecutive failed calls that answered no frame; a call that answered
    any frame starts the count again. The server's pushback hint, when present, replaces the
    computed delay (a negative hint means: do not retry).
    """

    attempts: int = 8
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    multiplier: float = 2.0
    connect_timeout: float = 10.0   # per retry: how long to wait for the target to accept connections

    def delay(self, failures: int, pushback_ms: int | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number `failures` (1-based); None: give up."""
        if failures > self.attempts:
            return None
        if pushback_ms is not None:
            return None if pushback_ms < 0 else pushback_ms / 1000.0
        return rng.uniform(0.0, min(self.max_backoff, self.initial_backoff * self.multiplier ** (failures - 1)))


NO_RETRY = RetryPolicy(attempts=0)


class StreamFailed(Exception):
    """A stream gave up: `frames_done` frames were answered first (a prefix of the input)."""

    def __init__(self, frames_done: int, cause: BaseException, attempts: int) -> None:
        self.frames_done, self.cause, self.attempts = frames_done, cause, attempts
        super().__init__(f"{describe_error(cause)} (after {attempts} attempt(s))")

    @property
    def code(self) -> grpc.StatusCode | None:
        return self.cause.code() if isinstance(self.cause, grpc.RpcError) else None


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def pushback_ms(exc: grpc.RpcError) -> int | None:
    """The server's retry hint (gRFC A6 `grpc-retry-pushback-ms` trailing metadata), if any."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # not a call error (e.g. a channel that never connected)
        return None
    for key, value in trailers:
        if key == RETRY_PUSHBACK_KEY:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


class _Pending:
    __slots__ = ("message", "source", "sent_at", "busy", "not_before")

    def __init__(self, message: swap_pb2.Frame, source: np.ndarray | None) -> None:
        self.message, self.source, self.sent_at = message, source, 0.0
        self.busy, self.not_before = 0, 0.0   # per-frame "server busy" answers so far; resend not before


class _FrameFeed:
    """The frames of one logical stream: pulled from the source once, kept until answered.

    Each call (the first, and every retry) sends the unanswered frames in order, then pulls new
    ones. Only one call pulls at a time (`_pull_lock`), and the check for unanswered frames
    happens under that lock, so a frame pulled by a dying call is resent by the next one.
    """

    def __init__(self, images: Iterable[np.ndarray], encoding: int, jpeg_quality: int, keep_source: bool,
                 start_index: int) -> None:
        self._images = iter(images)
        self._encoding, self._quality, self._keep = encoding, jpeg_quality, keep_source
        self._lock = threading.Lock()        # pending and counters
        self._pull_lock = threading.Lock()   # the source iterator
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.next_index = start_index
        self.exhausted = False
        self.error: BaseException | None = None

    def next_after(self, last: int, stop: threading.Event) -> tuple[int, _Pending] | None:
        """The next frame after index `last` for a call: unanswered first, then a new one; None at the end."""
        with self._pull_lock:
            with self._lock:
                for index, item in self.pending.items():
                    if index > last:
                        return index, item
                if self.exhausted or stop.is_set():
                    return None
                index = self.next_index
            try:
                image = next(self._images)
                data = encode_image(image, self._encoding, self._quality)
            except StopIteration:
                self.exhausted = True
                return None
            except BaseException as exc:  # the source failed (e.g. a corrupt video): end, then report it
                self.error, self.exhausted = exc, True
                return None
            message = swap_pb2.Frame(index=index, encoding=self._encoding, data=data,
                                     width=image.shape[1], height=image.shape[0])
            item = _Pending(message, image if self._keep else None)
            with self._lock:
                self.pending[index] = item
                self.next_index = index + 1
            return index, item

    def answered(self, index: int) -> _Pending | None:
        with self._lock:
            return self.pending.pop(index, None)

    def get(self, index: int) -> _Pending | None:
        with self._lock:
            return self.pending.get(index)

    def first(self) -> int | None:
        """The lowest unanswered index: the next one to hand on, since results go out in order."""
        with self._lock:
            return next(iter(self.pending), None)

    @property
    def finished(self) -> bool:
        with self._lock:
            return self.exhausted and not self.pending


class SwapClient:
    """A connection to a swapstream server (plaintext or TLS, optional bearer token)."""

    def __init__(self, target: str = DEFAULT_TARGET, token: str | None = None, tls_ca: str | None = None) -> None:
        # round_robin: a target naming several replicas (e.g. "dns:///swap.internal:50051" or
        # "ipv4:10.0.0.1:50051,10.0.0.2:50051") spreads streams over them; each stream stays on
        # the replica it started on (the server keeps no state beyond a stream).
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.lb_policy_name", "round_robin"),
                   ("grpc.enable_retries", 1),
                   ("grpc.service_config", SERVICE_CONFIG),
                   # Reconnect to a replica that comes (back) up within a second or two, not
                   # after gRPC's default backoff, which grows to two minutes.
                   ("grpc.initial_reconnect_backoff_ms", 250),
                   ("grpc.min_reconnect_backoff_ms", 250),
                   ("grpc.max_reconnect_backoff_ms", 2000)]
        if tls_ca:
            try:
                with open(tls_ca, "rb") as fh:
                    creds = grpc.ssl_channel_credentials(root_certificates=fh.read())
            except OSError as exc:
                raise InputError(f"cannot read --tls-ca {tls_ca}: {exc.strerror}") from exc
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.target = target
        self.stub = swap_pb2_grpc.FaceSwapStub(self.channel)
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self.retries = 0          # calls of `stream` that were retried, over this client's life
        self.frame_retries = 0    # frames sent again after a per-frame "server busy" answer
        self.retry_log: list[str] = []
        # (status code name, the server's pushback hint in ms or None, seconds waited) per retry
        self.retry_waits: list[tuple[str, int | None, float]] = []

    def metadata(self, model: str | None = None) -> tuple[tuple[str, str], ...]:
        return self._auth + (((MODEL_METADATA_KEY, model),) if model else ())

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the target accepts a call (up to `timeout` s); raise grpc.FutureTimeoutError otherwise.

        A health check with wait_for_ready, rather than grpc.channel_ready_future: that one leaves a
        polling thread behind, which fails noisily when the channel is closed soon after.
        """
        check = self.channel.unary_unary(HEALTH_CHECK, request_serializer=bytes, response_deserializer=bytes)
        try:
            check(b"", timeout=timeout, wait_for_ready=True)  # an empty HealthCheckRequest: the whole server
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise grpc.FutureTimeoutError() from None
            # Any other answer (NOT_FOUND, UNIMPLEMENTED ...) came from a server: it is reachable.

    def list_models(self, timeout: float = 10.0) -> list[swap_pb2.ModelInfo]:
        reply = self.stub.ListModels(swap_pb2.ListModelsRequest(), metadata=self.metadata(), timeout=timeout)
        return list(reply.models)

    def swap_image(self, image: np.ndarray, model: str, encoding: int = swap_pb2.JPEG,
                   timeout: float = 30.0) -> tuple[np.ndarray, swap_pb2.SwappedFrame]:
        """Swap the faces of one image (unary call, full detection)."""
        msg = swap_pb2.Frame(encoding=encoding, data=encode_image(image, encoding), model=model,
                             width=image.shape[1], height=image.shape[0])
        reply = self.stub.SwapImage(msg, metadata=self.metadata(), timeout=timeout)
        return decode_reply(reply), reply

    def stream(self, images: Iterable[np.ndarray], model: str, encoding: int = swap_pb2.JPEG,
               window: int = 4, jpeg_quality: int = 90, options: swap_pb2.SwapOptions | None = None,
               keep_source: bool = True, retry: RetryPolicy = NO_RETRY, start_index: int = 0,
               rng: random.Random | None = None) -> Iterator[StreamResult]:
        """Stream BGR frames through `model`; yield StreamResults in frame order (indexes from `start_index`).

        With a `retry` policy, a drained server, a broken connection or a full server does not
        end the stream: see the module doc. When the policy gives up, StreamFailed says how many
        frames were answered. An error of the source iterator is raised once the frames it gave
        are answered. With `options.reply_region` the server sends back only the rectangle the
        swap changed, pasted here into the frame as sent (kept until answered in any case).
        """
        region = options is not None and options.reply_region
        feed = _FrameFeed(images, encoding, jpeg_quality, keep_source or region, start_index)
        rng = rng or random.Random()
        failures, attempts, done = 0, 0, 0
        while True:
            attempts += 1
            progressed = False
            try:
                for reply, item, latency in self._call(feed, model, options, window, retry, rng):
                    progressed = True
                    done += 1
                    # (never into the caller's own array: a region is pasted into a copy of the frame)
                    image = None if reply.HasField("error") else reply_image(reply, item.source)
                    yield StreamResult(reply.index, item.source if keep_source else None, image, reply, latency)
                if feed.error is not None:
                    raise feed.error
                if feed.finished:
                    return
                # The server closed the stream cleanly with frames unanswered: treat it like a drain.
                error: grpc.RpcError | None = None
            except grpc.RpcError as exc:
                if feed.error is not None:  # the source failed, and the call ended because of it
                    raise feed.error from None
                if exc.code() not in RETRYABLE or (exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                                                   and "larger than max" in (exc.details() or "")):
                    raise StreamFailed(done, exc, attempts) from exc
                error = exc
            failures = 1 if progressed else failures + 1
            hint = pushback_ms(error) if error is not None else None
            wait = retry.delay(failures, hint, rng)
            if wait is None:
                raise StreamFailed(done, error or RuntimeError("server ended the stream early"), attempts)
            self.retries += 1
            self.retry_waits.append((error.code().name if error else "OK", hint, wait))
            self.retry_log.append(f"{describe_error(error) if error else 'stream ended early'}: "
                                  f"{len(feed.pending)} frame(s) to resend, retry in {wait:.2f} s")
            time.sleep(wait)
            try:
                self.wait_ready(retry.connect_timeout)
            except grpc.FutureTimeoutError:
                pass  # the next call fails fast and counts as one more failure

    def _call(self, feed: _FrameFeed, model: str, options: swap_pb2.SwapOptions | None, window: int,
              retry: RetryPolicy, rng: random.Random) -> Iterator[tuple[swap_pb2.SwappedFrame, _Pending, float]]:
        """One StreamSwap call over the feed: resend the unanswered frames, then new ones; yield in order.

        A frame answered with the per-frame code RESOURCE_EXHAUSTED (the server was too busy to
        look at it) is sent again in the same call after a backoff, up to `retry.attempts` times;
        the frames answered meanwhile wait so that results still come out in order.
        """
        slots = threading.Semaphore(max(1, window))
        stop = threading.Event()
        resend: deque[int] = deque()  # busy frames of this call to send again

        def requests() -> Iterator[swap_pb2.Frame]:
            last, first = -1, True
            while True:
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                item = None
                while resend and item is None:
                    item = feed.get(resend.popleft())
                if item is not None:
                    time.sleep(max(0.0, item.not_before - time.monotonic()))
                else:
                    got = feed.next_after(last, stop)
                    if got is None:
                        return
                    last, item = got
                message = item.message
                if first:  # every call names its model and options on its first frame
                    message = swap_pb2.Frame()
                    message.CopyFrom(item.message)
                    message.model = model
                    if options is not None:
                        message.options.CopyFrom(options)
                    first = False
                item.sent_at = time.perf_counter()
                yield message

        arrived: dict[int, tuple[swap_pb2.SwappedFrame, float]] = {}
        call = self.stub.StreamSwap(requests(), metadata=self.metadata(model))
        try:
            for reply in call:
                item = feed.get(reply.index)
                if item is None or reply.index in arrived:  # answered before (resent after a lost reply)
                    continue
                slots.release()
                if reply.HasField("error") and reply.error.code == BUSY_CODE and item.busy < retry.attempts:
                    item.busy += 1
                    item.not_before = time.monotonic() + (retry.delay(item.busy, None, rng) or 0.0)
                    self.frame_retries += 1
                    resend.append(reply.index)
                    continue
                arrived[reply.index] = reply, time.perf_counter()
                while (index := feed.first()) is not None and index in arrived:
                    reply, at = arrived.pop(index)
                    done = feed.answered(index)
                    yield reply, done, (at - done.sent_at) * 1000.0
        finally:
            stop.set()
            call.cancel()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SwapClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100) of values; 0.0 for none."""
    return float(np.percentile(values, q)) if values else 0.0


@dataclass
class StreamSummary:
    """What a stream did: counts, throughput, client latency and server stage times."""

    frames: int = 0
    frames_with_faces: int = 0
    faces_swapped: int = 0
    errors: int = 0
    seconds: float = 0.0
    resumed_from: int = 0           # frames taken from an earlier partial output (--resume)
    retries: int = 0
    frame_retries: int = 0          # frames sent again after a per-frame "server busy" answer
    latency_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    error_messages: list[str] = field(default_factory=list)
    retry_messages: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def add(self, result: StreamResult) -> None:
        self.frames += 1
        self.latency_ms.append(result.latency_ms)
        reply = result.reply
        if reply.HasField("error"):
            self.errors += 1
            if len(self.error_messages) < 5:
                self.error_messages.append(f"frame {reply.index}: {reply.error.message}")
            return
        self.faces_swapped += len(reply.faces)
        self.frames_with_faces += bool(reply.faces)
        for stage in STAGES:
            self.stage_ms[stage].append(getattr(reply.timings, f"{stage}_ms"))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "frames": self.frames, "frames_with_faces": self.frames_with_faces,
            "faces_swapped": self.faces_swapped, "errors": self.errors,
            "resumed_from": self.resumed_from, "retries": self.retries, "frame_retries": self.frame_retries,
            "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "latency_ms": {f"p{q}": round(percentile(self.latency_ms, q), 2) for q in (50, 95, 99)},
            "server_stage_ms_p50": {s: round(percentile(v, 50), 2) for s, v in self.stage_ms.items()},
            "outputs": self.outputs,
        }

    def describe(self) -> str:
        stages = ", ".join(f"{s} {percentile(self.stage_ms[s], 50):.1f}" for s in WORK_STAGES)
        lines = [
            f"frames {self.frames}, faces swapped {self.faces_swapped} (in {self.frames_with_faces} frames), "
            f"errors {self.errors}" + (f", resumed after {self.resumed_from} frames" if self.resumed_from else ""),
            f"{self.fps:.1f} FPS; latency p50 {percentile(self.latency_ms, 50):.0f} ms, "
            f"p95 {percentile(self.latency_ms, 95):.0f} ms",
            f"server p50 per stage (ms): {stages}",
        ]
        if self.retries:
            lines.append(f"retried {self.retries} time(s): " + "; ".join(self.retry_messages[-3:]))
        if self.frame_retries:
            lines.append(f"{self.frame_retries} frame(s) sent again after the server was too busy to take them")
        lines += [f"error: {m}" for m in self.error_messages]
        lines += [f"wrote {p}" for p in self.outputs]
        return "\n".join(lines)


class StreamIncomplete(Exception):
    """A stream stopped early; the frames done are kept in partial outputs that `--resume` continues.

    `bad_input` says whether the input itself was at fault (a corrupt or truncated video: exit 2).
    """

    def __init__(self, done: int, total: int | None, reason: str, partials: list[str], bad_input: bool) -> None:
        self.done, self.total, self.partials, self.bad_input = done, total, partials, bad_input
        of = f" of {total}" if total else ""
        if partials:
            kept = f"the {done} swapped frame(s) are kept in {' and '.join(partials)} (playable)"
            if not bad_input:  # a broken input would break again: resuming is for server trouble
                kept += "; run the same command with --resume to finish"
        else:
            kept = "no frame was swapped, nothing written"
        super().__init__(f"stream stopped after {done}{of} frames: {reason}; {kept}")


def side_by_side_path(out_path: str) -> str:
    """OUT.mp4 -> OUT_side_by_side.mp4"""
    stem, ext = os.path.splitext(out_path)
    return f"{stem}_side_by_side{ext}"


def partial_path(out_path: str) -> str:
    """OUT.mp4 -> OUT.partial.mp4: where a stopped stream keeps the frames it finished."""
    stem, ext = os.path.splitext(out_path)
    return f"{stem}.partial{ext}"


def _copy_partial(partial: str, writer: VideoWriter, times: Iterable[int], size: tuple[int, int]) -> int:
    """Write the frames of a partial output into `writer` at the given source times; return the count."""
    count = 0
    times = iter(times)
    with VideoReader(partial) as done:
        if (done.width, done.height) != size:
            raise InputError(f"{partial} is {done.width}x{done.height}, not {size[0]}x{size[1]}: "
                             "it is not a partial output of this input")
        for image, _ in done.frames_with_pts():
            pts = next(times, None)
            if pts is None:
                raise InputError(f"{partial} holds more frames than the input: it is not a partial output of it")
            writer.write(image, pts)
            count += 1
    return count


def stream_video(source: str | int, out_path: str, model: str, target: str = DEFAULT_TARGET, *,
                 token: str | None = None, tls_ca: str | None = None, side_by_side: str | None = None,
                 window: int = 4, encoding: int = swap_pb2.JPEG, max_frames: int | None = None,
                 progress: bool = True, options: swap_pb2.SwapOptions | None = None,
                 codec: str | None = None, crf: int | None = None, preset: str | None = None,
                 retry: RetryPolicy = RetryPolicy(), resume: bool = False,
                 on_result: Callable[[StreamResult], None] | None = None,
                 reply_region: bool = True) -> StreamSummary:
    """Stream a video file (or webcam index) through the server into `out_path`.

    The output keeps the input's frame times, orientation (upright pixels), size and audio; a
    frame the server could not swap is written unchanged (and counted as an error). With
    `side_by_side`, a second video holds source and result next to each other. `options`
    (blend mode, colour transfer, ...) go with the first frame and hold for the stream.
    Outputs appear only when the whole stream succeeded; if it stops early (StreamIncomplete),
    the frames done are kept in OUT.partial.EXT, which `resume=True` continues from.
    `on_result` is called with each answered frame, in order, after it was written.
    `reply_region` (default) asks for the changed rectangle only, pasted here into the frame sent
    (a server that predates it sends whole frames, which are used as they come).
    Raises InputError for bad input (missing video, unknown model, bad token).
    """
    from tqdm import tqdm

    if reply_region:
        asked = swap_pb2.SwapOptions()
        if options is not None:
            asked.CopyFrom(options)
        asked.reply_region = True
        options = asked

    if resume and is_webcam(source):
        raise InputError("--resume needs a video file, not a webcam")
    outputs = [out_path] + ([side_by_side] if side_by_side else [])
    partials = [partial_path(p) for p in outputs]
    if resume:
        missing = [p for p in partials if not os.path.isfile(p)]
        if missing:
            raise InputError(f"nothing to resume: {', '.join(missing)} does not exist")
    summary = StreamSummary()
    with VideoReader(source) as reader, SwapClient(target, token, tls_ca) as client:
        size = (reader.width, reader.height)
        audio = reader.path if reader.has_audio else None
        frames = reader.frames_with_pts()
        writer = VideoWriter(out_path, reader.fps, size, codec=codec, crf=crf, preset=preset,
                             time_base=reader.time_base, audio=audio)
        pair = VideoWriter(side_by_side, reader.fps, (2 * size[0], size[1]), codec=codec, crf=crf, preset=preset,
                           time_base=reader.time_base, audio=audio) if side_by_side else None
        writers = [writer] + ([pair] if pair else [])
        outcome = "failed"
        bar = None
        try:
            if resume:
                # The source frames already swapped are read (not sent) to keep their times in step.
                done_times: list[int] = []

                def source_times() -> Iterator[int]:
                    for _, pts in frames:
                        done_times.append(pts)
                        yield pts

                summary.resumed_from = _copy_partial(partials[0], writer, source_times(), size)
                if pair is not None:
                    _copy_partial(partials[1], pair, done_times, (2 * size[0], size[1]))
                    if pair.frames != writer.frames:
                        raise InputError(f"{partials[1]} and {partials[0]} hold different numbers of frames")
            start_index = summary.resumed_from
            times: dict[int, int] = {}
            cut_short = []

            def images() -> Iterator[np.ndarray]:
                for i, (image, pts) in enumerate(frames, start_index):
                    if max_frames and i >= max_frames:
                        cut_short.append(True)
                        return
                    times[i] = pts
                    yield image

            total = min(reader.frame_count or 0, max_frames or 10**9) or None
            bar = tqdm(total=total, initial=start_index, unit="frame", desc="swapping", disable=not progress,
                       file=sys.stderr)
            start = time.perf_counter()
            try:
                for result in client.stream(images(), model, encoding=encoding, window=window, options=options,
                                            retry=retry, start_index=start_index):
                    summary.add(result)
                    out = result.image if result.image is not None else result.source
                    if out.shape[:2] != (size[1], size[0]):
                        import cv2

                        out = cv2.resize(out, size)
                    pts = times.pop(result.index)
                    writer.write(out, pts)
                    if pair is not None:
                        pair.write(np.hstack([result.source, out]), pts)
                    bar.update(1)
                    bar.set_postfix(faces=summary.faces_swapped, refresh=False)
                    if on_result is not None:
                        on_result(result)
                outcome = "cut" if cut_short else "complete"
            finally:
                summary.seconds = time.perf_counter() - start
                summary.retries = client.retries
                summary.frame_retries = client.frame_retries
                summary.retry_messages = client.retry_log
        except StreamFailed as exc:
            if exc.code in USER_ERRORS and summary.frames == 0:  # (a resumed partial stays as it was)
                raise InputError(f"server {target}: {exc.cause.details()}") from exc
            outcome = "partial"
            failure: BaseException = exc
        except VideoError as exc:  # the input turned out corrupt or truncated midway
            if summary.frames == 0:
                raise
            outcome = "partial"
            failure = exc
        except KeyboardInterrupt:  # webcam: Ctrl-C ends the recording and keeps it; a file keeps a partial
            outcome = "cut" if is_webcam(source) else "partial"
            failure = KeyboardInterrupt("interrupted")
        except InputError:
            raise
        except Exception as exc:  # anything else after frames were done: keep them all the same
            if summary.frames == 0:
                raise
            outcome = "partial"
            failure = exc
        finally:
            if bar is not None:
                bar.close()
            for w, final, part in zip(writers, outputs, partials):
                if outcome in ("cut", "partial"):
                    w.audio_end = w.duration  # a shortened video keeps the audio of its own length only
                if outcome == "complete" or (outcome == "cut" and w.frames > 0):
                    w.close(keep=True)
                elif outcome == "partial" and w.frames > 0:
                    w.close(keep=True, path=part)
                else:
                    w.close(keep=False)
        if outcome == "partial":
            kept = partials if writer.frames > 0 else []
            bad_input = isinstance(failure, VideoError)
            reason = describe_error(getattr(failure, "cause", failure))
            raise StreamIncomplete(writer.frames, reader.frame_count, reason, kept, bad_input) from failure
    if resume:
        for p in partials:  # finished: the partial outputs have served their purpose
            if os.path.exists(p):
                os.unlink(p)
    summary.outputs = outputs
    return summary


def read_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token from --token or --token-file (whitespace around it stripped)."""
    if token_file is None:
        return token
    return read_secret_file(token_file, "--token-file")


def add_token_arguments(p: ArgumentParser) -> None:
    """--token, --token-file (a file keeps the token out of the process list)."""
    p.add_argument("--token", default=None, help="bearer token (also $SWAPSTREAM_TOKEN; visible in the process list: "
                                                  "prefer --token-file)")
    p.add_argument("--token-file", metavar="FILE", help="read the bearer token from FILE")


def resolve_token(args) -> str | None:
    """The token of parsed --token/--token-file arguments, else $SWAPSTREAM_TOKEN."""
    if args.token is not None and args.token_file is not None:
        raise InputError("give --token or --token-file, not both")
    return read_token(args.token, args.token_file) if args.token_file else (
        args.token if args.token is not None else os.environ.get("SWAPSTREAM_TOKEN"))


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Stream a video (or a webcam) through a swapstream server.")
    p.add_argument("input", metavar="IN_VIDEO", help="video file, or a webcam index such as 0")
    p.add_argument("-o", "--out", required=True, metavar="OUT_VIDEO",
                   help="output video (.mp4, .mov, .mkv, .webm or .avi)")
    p.add_argument("--model", required=True, help="model name (see the server's ListModels)")
    p.add_argument("--server", default=os.environ.get("SWAPSTREAM_SERVER", DEFAULT_TARGET),
                   help="HOST:PORT, or any gRPC target such as dns:///swap.example:50051")
    add_token_arguments(p)
    p.add_argument("--tls-ca", help="PEM CA certificate: connect with TLS and trust this CA")
    p.add_argument("--side-by-side", nargs="?", const="", default=None, metavar="PATH",
                   help="also write source | result next to each other (default OUT_side_by_side.EXT)")
    p.add_argument("--codec", help="video encoder: h264 (default for .mp4/.mov/.mkv), vp9 (default for .webm), "
                                   "mpeg4 (default for .avi), or any FFmpeg encoder name")
    p.add_argument("--crf", type=int, help="quality: constant rate factor (h264 default 23, vp9 32; lower = better)")
    p.add_argument("--preset", help="x264 speed preset (default: superfast with a 10-frame lookahead and "
                                    "veryfast's macroblock tree)")
    p.add_argument("--window", type=int, default=4, help="frames in flight (pipelining depth)")
    p.add_argument("--encoding", choices=("jpeg", "png", "raw"), default="jpeg", help="frame encoding on the wire")
    p.add_argument("--full-replies", action="store_true",
                   help="have the server send whole frames back (default: only the rectangle the swap changed, "
                        "pasted into the frame sent)")
    p.add_argument("--blend", choices=("alpha", "seamless"), help="blend mode (default: the server's)")
    p.add_argument("--no-colour-transfer", action="store_true",
                   help="keep the swapped face's own colours instead of matching the original face's")
    p.add_argument("--keep-mouth", action="store_true",
                   help="keep the source's own mouth over the swap, so speech stays exact (aligned models)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all; useful for a webcam)")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds to wait for the server (at the start and before each retry)")
    p.add_argument("--retries", type=int, default=RetryPolicy.attempts,
                   help="consecutive failed attempts (drain, lost connection, server full) before giving up "
                        f"(default {RetryPolicy.attempts}; 0 = never retry)")
    p.add_argument("--sign-cert", metavar="PEM",
                   help="sign the finished output with C2PA Content Credentials: the operator's certificate chain, "
                        "leaf first (needs the provenance extra; a self-signed leaf is refused)")
    p.add_argument("--sign-key", metavar="PEM", help="the private key of --sign-cert's leaf")
    p.add_argument("--resume", action="store_true",
                   help="continue a stream that stopped early from its OUT.partial.EXT output")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """`swapstream stream`; 0 ok, 2 bad input (missing or corrupt video, unknown model, bad token), 1 other."""
    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.window < 1:
            raise InputError("--window must be >= 1")
        if args.retries < 0 or args.max_frames < 0:
            raise InputError("--retries and --max-frames must be >= 0")
        token = resolve_token(args)
        source = int(args.input) if args.input.isdigit() else args.input
        if not isinstance(source, int) and not os.path.isfile(source):
            raise InputError(f"input video {source} does not exist")
        sbs = None if args.side_by_side is None else (args.side_by_side or side_by_side_path(args.out))
        for path in [args.out] + ([sbs] if sbs else []):
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise InputError(f"output folder {folder} does not exist")
            if args.resume and not os.path.isfile(partial_path(path)):
                raise InputError(f"nothing to resume: {partial_path(path)} does not exist")
        if (args.sign_cert is None) != (args.sign_key is None):
            raise InputError("--sign-cert and --sign-key go together")
        for pem in (args.sign_cert, args.sign_key):
            if pem is not None and not os.path.isfile(pem):
                raise InputError(f"{pem} does not exist")
        with SwapClient(args.server, token, args.tls_ca) as probe:
            try:
                probe.wait_ready(args.connect_timeout)
            except grpc.FutureTimeoutError:
                print(f"{PROG}: error: no server answers at {args.server} "
                      f"(start one with `swapstream serve --models DIR`)", file=sys.stderr)
                return 1
            model_info = None
            if args.sign_cert is not None:
                model_info = next((m for m in probe.list_models() if m.name == args.model), None)
                if model_info is None:
                    raise InputError(f"the server has no model {args.model[:64]!r} (see its ListModels)")
        encoding = {"jpeg": swap_pb2.JPEG, "png": swap_pb2.PNG, "raw": swap_pb2.RAW_BGR}[args.encoding]
        try:
            summary = stream_video(source, args.out, args.model, args.server, token=token,
                                   tls_ca=args.tls_ca, side_by_side=sbs, window=args.window,
                                   encoding=encoding, max_frames=args.max_frames or None,
                                   progress=not args.no_progress, codec=args.codec, crf=args.crf,
                                   preset=args.preset,
                                   retry=RetryPolicy(attempts=args.retries, connect_timeout=args.connect_timeout),
                                   resume=args.resume, reply_region=not args.full_replies,
                                   options=swap_pb2.SwapOptions(
                                       blend={None: swap_pb2.BLEND_DEFAULT, "alpha": swap_pb2.BLEND_ALPHA,
                                              "seamless": swap_pb2.BLEND_SEAMLESS}[args.blend],
                                       skip_colour_transfer=args.no_colour_transfer,
                                       keep_mouth=args.keep_mouth))
        except StreamIncomplete as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2 if exc.bad_input else 1
        if model_info is not None:
            from swapstream.clients.credentials import CredentialError, sign_file

            try:
                for path in [args.out] + ([sbs] if sbs else []):
                    sign_file(path, args.sign_cert, args.sign_key, args.model, model_info.manifest_sha256)
            except CredentialError as exc:
                print(f"{PROG}: error: the output is written but not signed: {exc}", file=sys.stderr)
                return 1
        print(summary.describe())
        return 0

    return run_cli(body, PROG)
