"""Frames and streams that must not stall or exhaust the server (issue 20), against a real server
on 127.0.0.1 with a real (tiny) ONNX model: header and decompression bombs, replies over the send
cap, a frame size change, unknown enums, huge names, silent streams, the retry pushback hint."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from swapstream.faces.errors import InputError
from swapstream.faces.wire import MODEL_METADATA_KEY, RETRY_PUSHBACK_KEY
from swapstream.server import memory
from swapstream.server.cli import build_parser, main, read_token
from swapstream.server.pipeline import PipelineConfig, PixelBudget
from swapstream.server.registry import ModelRegistry
from swapstream.server.service import SwapServer, run_server, warm_up
from swapstream.v1 import swap_pb2, swap_pb2_grpc
from tests.server_fixtures import (
    face_frames,
    jpeg,
    jpeg_header_bomb,
    negative_models,
    png_bomb,
    png_header_bomb,
    serving_stub,
    write_aligned_negative_model,
    write_negative_model,
)

MAX_MESSAGE = 1 << 20
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
TIMEOUTS = PipelineConfig(first_frame_timeout=0.5, idle_timeout=0.5)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    return negative_models(tmp_path_factory)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return face_frames(4, size=256)


@pytest.fixture(scope="module")
def stub(models_dir):
    with serving_stub(models_dir, max_streams=4, max_message_bytes=MAX_MESSAGE) as (served, _):
        yield served


def _frame(index: int, data: bytes, encoding=swap_pb2.JPEG, **kw) -> swap_pb2.Frame:
    return swap_pb2.Frame(index=index, encoding=encoding, data=data, **kw)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_bombs_fail_their_frame_fast_and_the_stream_goes_on(stub, frames):
    good = jpeg(frames[0])
    bombs = [png_header_bomb(), png_bomb(), jpeg_header_bomb()]
    peak = _peak_rss_mb()
    start = time.monotonic()
    msgs = [_frame(0, good, model="neg")]
    msgs += [_frame(1 + i, b, swap_pb2.PNG if b.startswith(b"\x89PNG") else swap_pb2.JPEG) for i, b in enumerate(bombs)]
    msgs.append(_frame(9, good))
    replies = list(stub.StreamSwap(iter(msgs), timeout=30))
    assert [r.index for r in replies] == [0, 1, 2, 3, 9]
    for r in replies[1:4]:
        assert r.error.code == INVALID and "too large" in r.error.message, r.error
    assert not replies[0].HasField("error") and not replies[-1].HasField("error") and replies[-1].faces
    # SwapImage: the same frames are INVALID_ARGUMENT (not UNKNOWN with OpenCV's assertion text).
    for bomb in bombs:
        with pytest.raises(grpc.RpcError) as err:
            stub.SwapImage(_frame(0, bomb, swap_pb2.PNG, model="neg"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "too large" in err.value.details()
    assert time.monotonic() - start < 10
    # Decoding the 20000 x 20000 bomb would have taken 1.2 GB (it used to be decoded, then refused).
    assert _peak_rss_mb() - peak < 300


def test_png_chunk_claiming_gigabytes_is_refused_before_opencv(stub, frames):
    """Found by the fuzz run: OpenCV allocates what a PNG chunk's length claims before reading it
    (an IDAT claiming 2.7 GB in a 26 KB file took 2.5 GB and 2 s to fail)."""
    import cv2

    png = bytearray(cv2.imencode(".png", frames[0])[1].tobytes())
    png[33:37] = (2_667_585_536).to_bytes(4, "big")  # the first chunk after IHDR
    peak = _peak_rss_mb()
    replies = list(stub.StreamSwap(iter([_frame(0, bytes(png), swap_pb2.PNG, model="neg"),
                                         _frame(1, jpeg(frames[0]))]), timeout=30))
    assert replies[0].error.code == INVALID and "claims 2667585536 bytes" in replies[0].error.message
    assert not replies[1].HasField("error")
    assert _peak_rss_mb() - peak < 300


def test_undecodable_frames_are_invalid_argument(stub, frames):
    good = jpeg(frames[0])
    cut = good[: len(good) // 3]
    bmp = np.zeros((8, 8, 3), np.uint8)
    import cv2

    ok, other_format = cv2.imencode(".bmp", bmp)  # OpenCV would decode it if it got the bytes
    msgs = [_frame(0, good, model="neg"), _frame(1, cut), _frame(2, other_format.tobytes(), swap_pb2.PNG),
            _frame(3, b"\x89PNG\r\n\x1a\n" + b"\0" * 40, swap_pb2.PNG), _frame(4, b"", swap_pb2.RAW_BGR),
            _frame(5, good, encoding=7), _frame(6, good)]
    replies = list(stub.StreamSwap(iter(msgs), timeout=30))
    assert [r.index for r in replies] == list(range(7))
    assert [r.error.code for r in replies[1:6]] == [INVALID] * 5, [r.error for r in replies]
    assert "neither a PNG nor a JPEG" in replies[2].error.message and "encoding 7" in replies[5].error.message
    assert not replies[6].HasField("error")


def test_reply_over_the_send_cap_fails_that_frame_only(stub):
    big = face_frames(1, size=640)[0]  # 640 x 640 x 3 = 1.2 MB raw: over the 1 MiB cap
    raw = swap_pb2.SwapOptions(reply_encoding=swap_pb2.RAW_BGR)
    msgs = [_frame(0, jpeg(big), model="neg", options=raw), _frame(1, jpeg(big[:200, :200]))]
    start = time.monotonic()
    replies = list(stub.StreamSwap(iter(msgs), timeout=30))
    assert [r.index for r in replies] == [0, 1]
    assert replies[0].error.code == INVALID and "message cap" in replies[0].error.message
    assert replies[0].timings.total_ms < 500  # refused from the header, before detection and inference
    assert not replies[1].HasField("error") and replies[1].encoding == swap_pb2.RAW_BGR
    assert len(replies[1].data) == 200 * 200 * 3
    with pytest.raises(grpc.RpcError) as err:
        stub.SwapImage(_frame(0, jpeg(big), model="neg", options=raw), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "message cap" in err.value.details()
    assert time.monotonic() - start < 10


def test_frame_size_change_mid_stream_keeps_swapping(stub):
    large, small = face_frames(3, size=512), face_frames(3, size=256, seed=5)
    sequence = large[:2] + small + large[2:]  # 512 -> 256 -> 512
    msgs = [_frame(i, jpeg(f), model="neg" if i == 0 else "") for i, f in enumerate(sequence)]
    replies = list(stub.StreamSwap(iter(msgs), timeout=60))
    assert [r.error.message for r in replies if r.HasField("error")] == []
    assert [r.width for r in replies] == [512, 512, 256, 256, 256, 512]
    assert sum(len(r.faces) == 1 for r in replies) >= 5
    for r in replies:
        for f in r.faces:
            assert 0 <= f.x and f.x + f.width <= r.width and 0 <= f.y and f.y + f.height <= r.height


@pytest.mark.parametrize("options, what", [
    (swap_pb2.SwapOptions(reply_encoding=9), "reply_encoding 9"),
    (swap_pb2.SwapOptions(blend=5), "blend mode 5"),
    (swap_pb2.SwapOptions(jpeg_quality=101), "jpeg_quality"),
])
def test_unknown_options_are_invalid_argument(stub, frames, options, what):
    msg = _frame(0, jpeg(frames[0]), model="neg", options=options)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamSwap(iter([msg]), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and what in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.SwapImage(msg, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and what in err.value.details()


def test_huge_names_are_truncated_in_messages(stub, frames):
    name = "x" * 65536
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamSwap(iter([_frame(0, jpeg(frames[0]), model=name)]), timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # not RESOURCE_EXHAUSTED from an oversized header
    assert "65536 characters" in err.value.details() and len(err.value.details()) < 300
    msgs = [_frame(0, jpeg(frames[0]), model="neg"), _frame(1, jpeg(frames[1]), model=name)]
    replies = list(stub.StreamSwap(iter(msgs), timeout=10))
    assert replies[1].error.code == INVALID and len(replies[1].error.message) < 300


def test_silent_streams_time_out_and_free_their_slot(models_dir, frames):
    with run_server(models_dir, 0, max_streams=1, device="cpu", config=TIMEOUTS) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        hold = threading.Event()

        def nothing():
            hold.wait(20)
            yield from ()

        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamSwap(nothing(), timeout=20))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no frame within" in err.value.details()
        assert time.monotonic() - start < 5

        def one_then_silence():
            yield _frame(0, jpeg(frames[0]), model="neg")
            hold.wait(20)

        got = []
        with pytest.raises(grpc.RpcError) as err:
            for reply in stub.StreamSwap(one_then_silence(), timeout=20):
                got.append(reply.index)
        assert got == [0]  # its frame was answered before the stream timed out
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "idle timeout" in err.value.details()
        hold.set()
        # The single slot is free again.
        assert len(list(stub.StreamSwap(iter([_frame(0, jpeg(frames[0]), model="neg")]), timeout=20))) == 1
        channel.close()


def test_full_server_sends_a_retry_pushback_hint(models_dir, frames):
    with run_server(models_dir, 0, max_streams=1, device="cpu", pushback_ms=400) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        release = threading.Event()

        def held():
            yield _frame(0, jpeg(frames[0]))
            release.wait(20)

        first = stub.StreamSwap(held(), metadata=((MODEL_METADATA_KEY, "neg"),), timeout=30)
        assert next(first).index == 0
        hints = []
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.StreamSwap(iter([_frame(0, jpeg(frames[0]), model="neg")]), timeout=10))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            hints.append(int(dict(err.value.trailing_metadata())[RETRY_PUSHBACK_KEY]))
        release.set()
        first.cancel()
        assert all(200 <= h <= 600 for h in hints), hints  # 0.5-1.5 x 400 ms
        assert len(set(hints)) > 1  # jittered, so refused clients do not come back in step
        channel.close()


def test_pixel_budget_is_fair_and_bounded():
    budget = PixelBudget(100)
    assert budget.acquire(60, timeout=1)
    assert not budget.acquire(60, timeout=0.05)  # does not fit: times out
    got = []
    big = threading.Thread(target=lambda: got.append(("big", budget.acquire(90, timeout=5))))
    big.start()
    time.sleep(0.1)
    # A small frame that would fit now waits behind the big one that came first.
    small = threading.Thread(target=lambda: got.append(("small", budget.acquire(10, timeout=5))))
    small.start()
    time.sleep(0.1)
    assert got == [] and budget.used == 60
    budget.release(60)
    big.join(5)
    assert got[0] == ("big", True)
    budget.release(90)
    small.join(5)
    assert got[1] == ("small", True) and budget.used == 10


def test_token_file(tmp_path):
    good = tmp_path / "token"
    good.write_text("s3cret\n")
    args = build_parser().parse_args(["--models", "m", "--token-file", str(good)])
    assert read_token(args) == "s3cret"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(InputError, match="is empty"):
        read_token(build_parser().parse_args(["--models", "m", "--token-file", str(empty)]))
    with pytest.raises(InputError, match="cannot read"):
        read_token(build_parser().parse_args(["--models", "m", "--token-file", str(tmp_path / "none")]))
    assert read_token(argparse.Namespace(token_file=None, token=None)) == os.environ.get("SWAPSTREAM_TOKEN")
    # Through the CLI: exit 2 with a one-line reason, nothing served.
    assert main(["--models", str(tmp_path), "--token-file", str(empty)]) == 2
    assert main(["--models", str(tmp_path), "--token", "a", "--token-file", str(good)]) == 2


def test_token_file_guards_the_server(models_dir, frames, tmp_path):
    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    token = read_token(build_parser().parse_args(["--models", models_dir, "--token-file", str(path)]))
    with run_server(models_dir, 0, device="cpu", token=token) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListModels(swap_pb2.ListModelsRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.ListModels(swap_pb2.ListModelsRequest(), metadata=(("authorization", "Bearer from-a-file"),),
                             timeout=10)
        assert [m.name for m in ok.models] == ["neg"]
        channel.close()


def test_marker_sees_the_final_faces_before_encoding(models_dir, frames):
    """The pipeline's one hook after blending (where the provenance watermark goes): it gets the
    swapped frame and its face boxes, and what it returns is what the client receives."""
    seen = []

    def marker_for(model):
        def mark(frame, boxes):
            seen.append((model.name, [b.as_tuple() for b in boxes]))
            out = frame.copy()
            for b in boxes:
                out[b.y:b.y + b.h, b.x:b.x + b.w] = 0
            return out
        return mark

    with run_server(models_dir, 0, device="cpu", markers=marker_for) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        warmed = len(seen)  # the start-up warm-up's frames went through the marker too
        reply = stub.SwapImage(_frame(0, jpeg(frames[0]), model="neg",
                                      options=swap_pb2.SwapOptions(reply_encoding=swap_pb2.PNG)), timeout=20)
        channel.close()
    assert warmed >= 6
    assert len(reply.faces) == 1 and seen[warmed:] == [("neg", [(f.x, f.y, f.width, f.height) for f in reply.faces])]
    import cv2

    image = cv2.imdecode(np.frombuffer(reply.data, np.uint8), cv2.IMREAD_COLOR)
    f = reply.faces[0]
    assert image[f.y:f.y + f.height, f.x:f.x + f.width].max() == 0 and image.max() > 0


@pytest.mark.parametrize("aligned", [False, True])
def test_warm_up_runs_every_stage_before_serving(tmp_path, aligned):
    if aligned:
        pytest.importorskip("dlib")
        write_aligned_negative_model(str(tmp_path / "neg"), size=32)
    else:
        write_negative_model(str(tmp_path / "neg"), size=32)
    registry = ModelRegistry.load(str(tmp_path), device="cpu", max_batch=4)
    server = SwapServer(registry, warm=False, trim_interval=0)
    try:
        done = warm_up(server.servicer.pipelines["neg"])
        # Six stream frames (JPEG, PNG, RAW_BGR) and one SwapImage-style call, each with its face swapped.
        assert done["failed"] == [] and done["frames"] == 7 and done["faces"] >= 6, done
        server.warm_up()  # and every gRPC worker thread is started, none added under load
        workers = len(server._executor._threads)
        assert workers == server._workers, workers
    finally:
        server.shutdown(0)


def test_malloc_settings_and_trimmer(monkeypatch):
    if memory._libc() is None:
        pytest.skip("not glibc")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the operator's own setting wins
    assert memory.tune_malloc() == {"MALLOC_MMAP_THRESHOLD_": memory.MMAP_THRESHOLD,
                                    "MALLOC_TRIM_THRESHOLD_": memory.TRIM_THRESHOLD}
    trimmer = memory.Trimmer(0.05)
    trimmer.start()
    try:
        time.sleep(0.2)
        assert trimmer.trims == 0  # nothing served: no trim
        trimmer.note()
        deadline = time.monotonic() + 5
        while trimmer.trims == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert trimmer.trims == 1
    finally:
        trimmer.close()
    off = memory.Trimmer(0)
    off.start()
    assert off._thread is None


def test_no_huge_pages_opts_the_process_out():
    # In a child: the opt-out is for the process's life.
    code = ("from swapstream.server import memory\n"
            "done = memory.no_huge_pages()\n"
            "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
            "print(done, status.get('THP_enabled', '?').strip())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    done, enabled = out.stdout.split()
    if memory._libc() is None or enabled == "?" or done == "False":
        pytest.skip("no glibc prctl, prctl refused (a sandbox), or no THP_enabled in /proc (kernel < 5.0)")
    assert enabled == "0", out.stdout
