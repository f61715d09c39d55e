"""Hostile requests for the server fuzz test (tests/test_fuzz_server.py) and its long run
(`python -m bench.fuzz_server`): hypothesis strategies for frames, options and streams, and the
calls that send them and check what came back.

What a server must do with any of them: answer within a deadline, with a status code from the
documented set (docs/serving.md, "Status codes"), one reply per frame in order, and go on serving
after a bad frame.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import cv2
import grpc
import numpy as np
from hypothesis import strategies as st

from swapstream.faces.wire import MODEL_METADATA_KEY, STAGES, FrameDecodeError, encoding_name, frame_size
from swapstream.v1 import swap_pb2
from tests.server_fixtures import face_frames, jpeg, jpeg_header_bomb, png_bomb, png_header_bomb

MODEL = "target"
# Status codes a call may end with, and per-frame error codes (the documented sets).
CALL_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.DEADLINE_EXCEEDED}
FRAME_CODES = {grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
ENCODINGS = [swap_pb2.ENCODING_UNSPECIFIED, swap_pb2.JPEG, swap_pb2.PNG, swap_pb2.RAW_BGR, 4, 2**31 - 1]


@functools.cache
def _faces() -> tuple[np.ndarray, ...]:
    return tuple(face_frames(4, size=160))


@functools.cache
def _real_bomb() -> bytes:
    return png_bomb(20000, 20000)


def _image(seed: int, width: int, height: int, face: bool) -> np.ndarray:
    if face:
        return cv2.resize(_faces()[seed % 4], (width, height), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: np.ndarray, encoding: int) -> bytes:
    if encoding == swap_pb2.PNG:
        return cv2.imencode(".png", image)[1].tobytes()
    return jpeg(image, 90)


# Kinds of frame data, repeated to weigh them: mostly small, cheap frames, some expensive ones.
KINDS = (["face"] * 4 + ["noise"] * 2 + ["raw", "raw_wrong", "tiny", "truncated", "truncated", "mutated", "mutated",
         "random", "empty", "png_header_bomb", "jpeg_header_bomb", "real_bomb", "large"])


@st.composite
def frame_data(draw) -> tuple[int, bytes, int, int]:
    """(encoding, data, width, height) of one frame, valid or not."""
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**16))
    compressed = draw(st.sampled_from([swap_pb2.JPEG, swap_pb2.PNG]))
    if kind in ("face", "noise", "truncated", "mutated"):
        w, h = draw(st.integers(16, 320)), draw(st.integers(16, 320))
        data = _encode(_image(seed, w, h, kind != "noise"), compressed)
        if kind == "truncated":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif kind == "mutated":
            buf = bytearray(data)
            for pos, byte in draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)),
                                           min_size=1, max_size=8)):
                buf[pos] = byte
            data = bytes(buf)
        return compressed, data, w, h
    if kind == "tiny":
        return compressed, _encode(_image(seed, 1, 1, False), compressed), 1, 1
    if kind == "large":  # legal but costly: a flat frame up to the side cap
        w, h = draw(st.integers(1000, 8192)), draw(st.integers(1, 1200))
        return compressed, _encode(np.full((h, w, 3), seed % 256, np.uint8), compressed), w, h
    if kind in ("raw", "raw_wrong"):
        w, h = draw(st.integers(1, 200)), draw(st.integers(1, 200))
        data = _image(seed, w, h, True).tobytes()
        if kind == "raw_wrong":
            w, h = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
        return swap_pb2.RAW_BGR, data, w, h
    if kind == "png_header_bomb":
        w, h = draw(st.integers(1, 2**32 - 1)), draw(st.integers(1, 2**32 - 1))
        return swap_pb2.PNG, png_header_bomb(w, h), 0, 0
    if kind == "jpeg_header_bomb":
        w, h = draw(st.integers(1, 65535)), draw(st.integers(0, 65535))
        return swap_pb2.JPEG, jpeg_header_bomb(w, h), 0, 0
    if kind == "real_bomb":
        return swap_pb2.PNG, _real_bomb(), 20000, 20000
    if kind == "random":
        return draw(st.sampled_from(ENCODINGS)), draw(st.binary(max_size=2048)), 0, 0
    return draw(st.sampled_from(ENCODINGS)), b"", 0, 0  # empty


# Mostly the served model, so most calls reach the decoder; the rest must be refused by name.
NAMES = st.sampled_from([MODEL, MODEL, MODEL, "", "x" * 70000, "../" + MODEL]) | st.text(max_size=40)


@st.composite
def options(draw) -> swap_pb2.SwapOptions | None:
    """Stream options, including values this server does not know."""
    if draw(st.booleans()):
        return None
    return swap_pb2.SwapOptions(
        blend=draw(st.sampled_from([0, 1, 2, 5])),
        skip_colour_transfer=draw(st.booleans()),
        redetect_every=draw(st.sampled_from([0, 1, 3, 2**32 - 1])),
        max_faces=draw(st.sampled_from([0, 1, 2, 1000])),
        reply_encoding=draw(st.sampled_from([0, 1, 2, 3, 9])),
        jpeg_quality=draw(st.sampled_from([0, 1, 75, 100, 101])),
    )


def options_valid(o: swap_pb2.SwapOptions | None) -> bool:
    return o is None or (o.blend in (0, 1, 2) and o.reply_encoding in (0, 1, 2, 3) and o.jpeg_quality <= 100)


@st.composite
def frames(draw, with_model: bool = False) -> swap_pb2.Frame:
    encoding, data, w, h = draw(frame_data())
    return swap_pb2.Frame(index=draw(st.integers(0, 2**64 - 1)), encoding=encoding, data=data, width=w, height=h,
                          model=draw(NAMES) if with_model else draw(st.sampled_from(["", "", "", MODEL, "other"])))


@dataclass
class StreamCase:
    """How a stream names its model, its options, and its frames (a known-good frame is sent last)."""

    naming: str            # metadata | first-frame | unknown | none
    options: swap_pb2.SwapOptions | None
    frames: list[swap_pb2.Frame] = field(default_factory=list)


@st.composite
def stream_cases(draw, max_frames: int = 5) -> StreamCase:
    naming = draw(st.sampled_from(["metadata", "metadata", "first-frame", "first-frame", "first-frame", "unknown",
                                   "none"]))
    return StreamCase(naming, draw(options()), draw(st.lists(frames(), min_size=0, max_size=max_frames)))


def good_frame(index: int = 0) -> swap_pb2.Frame:
    return swap_pb2.Frame(index=index, encoding=swap_pb2.JPEG, data=jpeg(_faces()[0]))


def describe_frame(frame: swap_pb2.Frame) -> str:
    """What a frame is, in a few words: encoding, bytes, the size its header claims (or why it has none)."""
    try:
        w, h = frame_size(frame.encoding, frame.data, frame.width, frame.height)
        size = f"{w}x{h}"
    except FrameDecodeError as exc:
        size = f"refused: {str(exc)[:80]}"
    name = f" model={frame.model[:20]!r}{'...' if len(frame.model) > 20 else ''}" if frame.model else ""
    return f"{encoding_name(frame.encoding)} {len(frame.data)} B {size}{name}"


def describe_case(case: StreamCase) -> str:
    """A stream case in one line: how it names its model, its options, each frame."""
    opts = "" if case.options is None else " options={" + str(case.options).replace("\n", " ").strip() + "}"
    return f"stream naming={case.naming}{opts} frames=[" + "; ".join(map(describe_frame, case.frames)) + "] + good"


@dataclass
class Outcome:
    """What one call got: its status code name, seconds taken, and what is wrong with it (empty = fine).

    `server_ms`: the server's stage times of the reply with the longest total (empty if none came back)."""

    code: str
    seconds: float
    frames: int = 0
    frame_codes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    server_ms: dict = field(default_factory=dict)


def _timings(reply: swap_pb2.SwappedFrame) -> dict:
    t = reply.timings
    return {k: round(getattr(t, f"{k}_ms"), 1) for k in STAGES}


def swap_image(stub, frame: swap_pb2.Frame, timeout: float, metadata=()) -> Outcome:
    """One SwapImage call with `frame`; problems name anything outside the documented behaviour."""
    start = time.monotonic()
    reply = None
    try:
        reply = stub.SwapImage(frame, metadata=metadata, timeout=timeout)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    out = Outcome(code.name, time.monotonic() - start, frames=1, server_ms=_timings(reply) if reply else {})
    if code != grpc.StatusCode.OK and code not in CALL_CODES - {grpc.StatusCode.DEADLINE_EXCEEDED}:
        out.problems.append(f"SwapImage ended with {code.name}")
    return out


def stream(stub, case: StreamCase, timeout: float) -> Outcome:
    """One StreamSwap call; checks one reply per frame in order, documented codes, and that the
    known-good frame sent last is swapped whatever came before it."""
    msgs = [swap_pb2.Frame() for _ in case.frames] + [good_frame(7)]
    for msg, src in zip(msgs, case.frames):
        msg.CopyFrom(src)
    metadata = ()
    if case.naming == "metadata":
        metadata = ((MODEL_METADATA_KEY, MODEL),)
    msgs[0].model = {"metadata": msgs[0].model, "first-frame": MODEL, "unknown": "nope", "none": ""}[case.naming]
    if case.options is not None:
        msgs[0].options.CopyFrom(case.options)
    start = time.monotonic()
    replies = []
    try:
        for reply in stub.StreamSwap(iter(msgs), metadata=metadata, timeout=timeout):
            replies.append(reply)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    out = Outcome(code.name, time.monotonic() - start, frames=len(msgs),
                  frame_codes=[r.error.code for r in replies if r.HasField("error")],
                  server_ms=_timings(max(replies, key=lambda r: r.timings.total_ms)) if replies else {})
    refused = {"unknown": grpc.StatusCode.NOT_FOUND, "none": grpc.StatusCode.INVALID_ARGUMENT}.get(case.naming)
    if refused is None and not options_valid(case.options):
        refused = grpc.StatusCode.INVALID_ARGUMENT
    if refused is not None:
        if code != refused or replies:
            out.problems.append(f"expected {refused.name} and no replies, got {code.name} after {len(replies)}")
        return out
    if code != grpc.StatusCode.OK:
        out.problems.append(f"stream ended with {code.name} after {len(replies)} of {len(msgs)} replies")
    if [r.index for r in replies] != [m.index for m in msgs][: len(replies)] or len(replies) != len(msgs):
        out.problems.append("replies missing or out of order")
    bad = [c for c in out.frame_codes if c not in FRAME_CODES]
    if bad:
        out.problems.append(f"per-frame codes outside the documented set: {sorted(set(bad))}")
    if replies and len(replies) == len(msgs):
        last = replies[-1]
        if last.HasField("error") and not (last.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
                                           and "message cap" in last.error.message):
            out.problems.append(f"the good frame after the others failed: {last.error.message}")
    return out
