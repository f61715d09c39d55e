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
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import grpc
import numpy as np

from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.video import VideoReader, VideoWriter
from swapstream.v1 import swap_pb2, swap_pb2_grpc

PROG = "swapstream stream"
MODEL_METADATA_KEY = "swapstream-model"
DEFAULT_TARGET = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
STAGES = ("decode", "detect", "infer", "blend", "encode", "queue", "total")
# Status codes that mean the user asked for something wrong (exit 2), not a failure (exit 1).
USER_ERRORS = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
               grpc.StatusCode.PERMISSION_DENIED}


@dataclass
class StreamResult:
    """One answered frame: what was sent, what came back, and how long it took end to end."""

    index: int
    source: np.ndarray | None       # the frame as sent (None when the caller did not keep it)
    image: np.ndarray | None        # the swapped frame, None if the server reported an error
    reply: swap_pb2.SwappedFrame
    latency_ms: float               # send -> reply received, as the client saw it


def encode_image(image: np.ndarray, encoding: int = swap_pb2.JPEG, jpeg_quality: int = 90) -> bytes:
    """BGR uint8 image -> frame bytes in `encoding`."""
    if encoding == swap_pb2.RAW_BGR:
        return np.ascontiguousarray(image, np.uint8).tobytes()
    ext, params = (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]) if encoding == swap_pb2.PNG else \
        (".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise InputError("could not encode a frame")
    return buf.tobytes()


def decode_reply(reply: swap_pb2.SwappedFrame) -> np.ndarray:
    """The swapped frame of a reply as a BGR uint8 image."""
    if reply.encoding == swap_pb2.RAW_BGR:
        return np.frombuffer(reply.data, np.uint8).reshape(reply.height, reply.width, 3)
    image = cv2.imdecode(np.frombuffer(reply.data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"reply {reply.index} holds undecodable image data")
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


class SwapClient:
    """A connection to a swapstream server (plaintext or TLS, optional bearer token)."""

    def __init__(self, target: str = DEFAULT_TARGET, token: str | None = None, tls_ca: str | None = None) -> None:
        # round_robin: a target naming several replicas (e.g. "dns:///swap.internal:50051" or
        # "ipv4:10.0.0.1:50051,10.0.0.2:50051") spreads streams over them; each stream stays on
        # the replica it started on (the server keeps no state beyond a stream).
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.lb_policy_name", "round_robin")]
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

    def metadata(self, model: str | None = None) -> tuple[tuple[str, str], ...]:
        return self._auth + (((MODEL_METADATA_KEY, model),) if model else ())

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects; raise grpc.FutureTimeoutError otherwise."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def list_models(self, timeout: float = 10.0) -> list[swap_pb2.ModelInfo]:
        return list(self.stub.ListModels(swap_pb2.ListModelsRequest(), metadata=self.metadata(), timeout=timeout).models)

    def swap_image(self, image: np.ndarray, model: str, encoding: int = swap_pb2.JPEG,
                   timeout: float = 30.0) -> tuple[np.ndarray, swap_pb2.SwappedFrame]:
        """Swap the faces of one image (unary call, full detection)."""
        msg = swap_pb2.Frame(encoding=encoding, data=encode_image(image, encoding), model=model,
                             width=image.shape[1], height=image.shape[0])
        reply = self.stub.SwapImage(msg, metadata=self.metadata(), timeout=timeout)
        return decode_reply(reply), reply

    def stream(self, images: Iterable[np.ndarray], model: str, encoding: int = swap_pb2.JPEG,
               window: int = 4, jpeg_quality: int = 90, options: swap_pb2.SwapOptions | None = None,
               keep_source: bool = True) -> Iterator[StreamResult]:
        """Stream BGR frames through `model`; yield StreamResults in frame order."""
        sources: dict[int, np.ndarray] = {}

        def messages() -> Iterator[swap_pb2.Frame]:
            for i, image in enumerate(images):
                if keep_source:
                    sources[i] = image
                yield swap_pb2.Frame(index=i, encoding=encoding, data=encode_image(image, encoding, jpeg_quality),
                                     width=image.shape[1], height=image.shape[0],
                                     model=model if i == 0 else "", options=options if i == 0 else None)

        def call(requests):
            return self.stub.StreamSwap(requests, metadata=self.metadata(model))

        for reply, latency in windowed_replies(messages(), call, window):
            image = None if reply.HasField("error") else decode_reply(reply)
            yield StreamResult(reply.index, sources.pop(reply.index, None), image, reply, latency)

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
    latency_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    error_messages: list[str] = field(default_factory=list)
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
            "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "latency_ms": {f"p{q}": round(percentile(self.latency_ms, q), 2) for q in (50, 95, 99)},
            "server_stage_ms_p50": {s: round(percentile(v, 50), 2) for s, v in self.stage_ms.items()},
            "outputs": self.outputs,
        }

    def describe(self) -> str:
        stages = ", ".join(f"{s} {percentile(self.stage_ms[s], 50):.1f}" for s in STAGES[:5])
        lines = [
            f"frames {self.frames}, faces swapped {self.faces_swapped} (in {self.frames_with_faces} frames), "
            f"errors {self.errors}",
            f"{self.fps:.1f} FPS; latency p50 {percentile(self.latency_ms, 50):.0f} ms, "
            f"p95 {percentile(self.latency_ms, 95):.0f} ms",
            f"server p50 per stage (ms): {stages}",
        ]
        lines += [f"error: {m}" for m in self.error_messages]
        lines += [f"wrote {p}" for p in self.outputs]
        return "\n".join(lines)


def side_by_side_path(out_path: str) -> str:
    """OUT.mp4 -> OUT_side_by_side.mp4"""
    stem, ext = os.path.splitext(out_path)
    return f"{stem}_side_by_side{ext}"


def stream_video(source: str | int, out_path: str, model: str, target: str = DEFAULT_TARGET, *,
                 token: str | None = None, tls_ca: str | None = None, side_by_side: str | None = None,
                 window: int = 4, encoding: int = swap_pb2.JPEG, max_frames: int | None = None,
                 progress: bool = True, options: swap_pb2.SwapOptions | None = None) -> StreamSummary:
    """Stream a video file (or webcam index) through the server into `out_path`.

    The output keeps the input's frame rate and size; a frame the server could not swap is
    written unchanged (and counted as an error). With `side_by_side`, a second video holds
    source and result next to each other. `options` (blend mode, colour transfer, ...) go with
    the first frame and hold for the stream. Files appear only when the whole stream succeeded.
    Raises InputError for bad input (missing video, unknown model, bad token), grpc.RpcError
    for other server failures.
    """
    from tqdm import tqdm

    summary = StreamSummary()
    with VideoReader(source) as reader, SwapClient(target, token, tls_ca) as client:
        size = (reader.width, reader.height)
        frames: Iterable[np.ndarray] = iter(reader)
        if max_frames:
            frames = (f for i, f in zip(range(max_frames), frames))
        total = min(reader.frame_count or 0, max_frames or 10**9) or None
        writer = VideoWriter(out_path, reader.fps, size)
        pair = VideoWriter(side_by_side, reader.fps, (2 * size[0], size[1])) if side_by_side else None
        bar = tqdm(total=total, unit="frame", desc="swapping", disable=not progress, file=sys.stderr)
        ok = False
        start = time.perf_counter()
        try:
            for result in client.stream(frames, model, encoding=encoding, window=window, options=options):
                summary.add(result)
                out = result.image if result.image is not None else result.source
                if out.shape[:2] != (size[1], size[0]):
                    out = cv2.resize(out, size)
                writer.write(out)
                if pair is not None:
                    pair.write(np.hstack([result.source, out]))
                bar.update(1)
                bar.set_postfix(faces=summary.faces_swapped, refresh=False)
            ok = True
        except grpc.RpcError as exc:
            if exc.code() in USER_ERRORS:
                raise InputError(f"server {target}: {exc.details()}") from exc
            raise
        except KeyboardInterrupt:  # webcam: Ctrl-C ends the recording, keep what we have
            ok = summary.frames > 0
        finally:
            summary.seconds = time.perf_counter() - start
            bar.close()
            writer.close(keep=ok)
            if pair is not None:
                pair.close(keep=ok)
    summary.outputs = [out_path] + ([side_by_side] if side_by_side else [])
    return summary


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Stream a video (or a webcam) through a swapstream server.")
    p.add_argument("input", metavar="IN_VIDEO", help="video file, or a webcam index such as 0")
    p.add_argument("-o", "--out", required=True, metavar="OUT_VIDEO", help="output video (.mp4 or .avi)")
    p.add_argument("--model", required=True, help="model name (see the server's ListModels)")
    p.add_argument("--server", default=os.environ.get("SWAPSTREAM_SERVER", DEFAULT_TARGET),
                   help="HOST:PORT, or any gRPC target such as dns:///swap.example:50051")
    p.add_argument("--token", default=os.environ.get("SWAPSTREAM_TOKEN"), help="bearer token (also $SWAPSTREAM_TOKEN)")
    p.add_argument("--tls-ca", help="PEM CA certificate: connect with TLS and trust this CA")
    p.add_argument("--side-by-side", nargs="?", const="", default=None, metavar="PATH",
                   help="also write source | result next to each other (default OUT_side_by_side.EXT)")
    p.add_argument("--window", type=int, default=4, help="frames in flight (pipelining depth)")
    p.add_argument("--encoding", choices=("jpeg", "png", "raw"), default="jpeg", help="frame encoding on the wire")
    p.add_argument("--blend", choices=("alpha", "seamless"), help="blend mode (default: the server's)")
    p.add_argument("--no-colour-transfer", action="store_true",
                   help="keep the swapped face's own colours instead of matching the original face's")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all; useful for a webcam)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the server")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """`swapstream stream`; 0 ok, 2 bad input (missing video, unknown model, bad token), 1 other."""
    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.window < 1:
            raise InputError("--window must be >= 1")
        source = int(args.input) if args.input.isdigit() else args.input
        if not isinstance(source, int) and not os.path.isfile(source):
            raise InputError(f"input video {source} does not exist")
        sbs = None if args.side_by_side is None else (args.side_by_side or side_by_side_path(args.out))
        for path in [args.out] + ([sbs] if sbs else []):
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise InputError(f"output folder {folder} does not exist")
        with SwapClient(args.server, args.token, args.tls_ca) as probe:
            try:
                probe.wait_ready(args.connect_timeout)
            except grpc.FutureTimeoutError:
                print(f"{PROG}: error: no server answers at {args.server} "
                      f"(start one with `swapstream serve --models DIR`)", file=sys.stderr)
                return 1
        encoding = {"jpeg": swap_pb2.JPEG, "png": swap_pb2.PNG, "raw": swap_pb2.RAW_BGR}[args.encoding]
        try:
            summary = stream_video(source, args.out, args.model, args.server, token=args.token,
                                   tls_ca=args.tls_ca, side_by_side=sbs, window=args.window,
                                   encoding=encoding, max_frames=args.max_frames or None,
                                   progress=not args.no_progress, options=swap_pb2.SwapOptions(
                                       blend={None: swap_pb2.BLEND_DEFAULT, "alpha": swap_pb2.BLEND_ALPHA,
                                              "seamless": swap_pb2.BLEND_SEAMLESS}[args.blend],
                                       skip_colour_transfer=args.no_colour_transfer))
        except grpc.RpcError as exc:
            print(f"{PROG}: error: server {args.server}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        print(summary.describe())
        return 0

    return run_cli(body, PROG)
