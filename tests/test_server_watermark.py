"""The server marks every swapped face with its model's watermark (faces/watermark.py); `verify` reads it."""
from __future__ import annotations

import os

import cv2
import grpc
import numpy as np
import pytest

from swapstream.faces import watermark as wm
from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import manifest_sha256
from swapstream.server import cli as serve_cli
from swapstream.server.service import run_server
from swapstream.server.watermarking import KEY_ENV, read_watermark_key, watermark_markers
from swapstream.v1 import swap_pb2, swap_pb2_grpc
from tests.server_fixtures import face_frames, write_aligned_negative_model, write_negative_model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("models")
    write_aligned_negative_model(str(root / "aligned"), size=32)
    write_negative_model(str(root / "old"), size=32)
    return str(root)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return face_frames(4, size=384)  # faces of about 190 px


def _msgs(images, model, encoding=swap_pb2.PNG):
    for i, image in enumerate(images):
        data = cv2.imencode(".png" if encoding == swap_pb2.PNG else ".jpg", image)[1].tobytes()
        yield swap_pb2.Frame(index=i, encoding=encoding, data=data, model=model if i == 0 else "")


def _decode(reply) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(reply.data, np.uint8), cv2.IMREAD_COLOR)


def test_streamed_frames_carry_their_models_id(models_dir, frames):
    key, _ = read_watermark_key(None)
    with run_server(models_dir, 0, device="cpu", markers=watermark_markers(key)) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        replies = {m: list(stub.StreamSwap(_msgs(frames, m), timeout=60)) for m in ("aligned", "old")}
        jpeg = list(stub.StreamSwap(_msgs(frames[:2], "aligned", swap_pb2.JPEG), timeout=60))
        single = stub.SwapImage(next(_msgs(frames[:1], "aligned")), timeout=20)
        channel.close()
    for name, got in replies.items():
        want = wm.model_id(name, manifest_sha256(os.path.join(models_dir, name)))
        for reply in got:
            assert reply.faces and not reply.HasField("error")
            found, payload, score = wm.detect(_decode(reply), key)
            assert found and payload == want, (name, reply.index, score)
    want = wm.model_id("aligned", manifest_sha256(os.path.join(models_dir, "aligned")))
    assert all(wm.detect(_decode(r), key)[1] == want for r in jpeg)  # through the JPEG reply (q90)
    assert wm.detect(_decode(single), key)[1] == want
    # the unmarked input frames carry no mark
    assert not any(wm.detect(f, key)[0] for f in frames)


def test_no_markers_no_mark_and_a_secret_key_is_not_the_public_one(models_dir, frames):
    with run_server(models_dir, 0, device="cpu") as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        reply = swap_pb2_grpc.FaceSwapStub(channel).SwapImage(next(_msgs(frames[:1], "aligned")), timeout=20)
        channel.close()
    assert reply.faces and not wm.detect(_decode(reply), wm.PUBLIC_KEY)[0]
    with run_server(models_dir, 0, device="cpu", markers=watermark_markers("operator-secret")) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        reply = swap_pb2_grpc.FaceSwapStub(channel).SwapImage(next(_msgs(frames[:1], "aligned")), timeout=20)
        channel.close()
    image = _decode(reply)
    assert wm.detect(image, "operator-secret")[0] and not wm.detect(image, wm.PUBLIC_KEY)[0]


def test_watermark_key_sources_and_flags(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert read_watermark_key(None) == (wm.PUBLIC_KEY, "public key")
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert read_watermark_key(None) == ("from-env", KEY_ENV)
    path = tmp_path / "key"
    path.write_text("from-file\nignored\n")
    assert read_watermark_key(str(path)) == ("from-file", "key file")
    path.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_watermark_key(str(path))
    with pytest.raises(InputError, match="cannot read"):
        read_watermark_key(str(tmp_path / "missing"))
    parser = serve_cli.build_parser()
    assert parser.parse_args(["--models", "m", "--no-watermark"]).no_watermark
    with pytest.raises(InputError):
        parser.parse_args(["--models", "m", "--no-watermark", "--watermark-key-file", str(path)])
    assert serve_cli.main(["--models", str(tmp_path), "--watermark-key-file", str(tmp_path / "missing")]) == 2


def test_a_streamed_video_verifies(models_dir, tmp_path):
    """`swapstream stream` through a marking server, H.264 out: `swapstream verify --models` names the model."""
    from swapstream.clients import stream, verify
    from swapstream.faces.video import VideoWriter

    src = str(tmp_path / "in.mp4")
    with VideoWriter(src, 25, (384, 384)) as w:
        for image in face_frames(6, size=384, seed=8):
            w.write(image)
    out = str(tmp_path / "out.mp4")
    with run_server(models_dir, 0, device="cpu", markers=watermark_markers(wm.PUBLIC_KEY)) as port:
        assert stream.main([src, "-o", out, "--model", "aligned", "--server", f"127.0.0.1:{port}",
                            "--no-progress"]) == 0
    assert verify.main([out, "--models", models_dir, "--quiet"]) == 0
    report = verify.verify(out, wm.PUBLIC_KEY, verify.known_models(models_dir))
    assert report["found"] and report["model"] == "aligned"
    assert verify.main([src, "--quiet"]) == 1  # the unswapped input is not marked


def test_a_region_reply_holds_the_whole_mark_of_a_small_face(models_dir):
    # A face under watermark.MIN_MARK_SIDE is marked over a larger square about it; a region
    # reply cut to the face alone would drop the mark's outer ring.
    small = face_frames(3, size=192)  # faces of about 95 px

    def msgs():
        for i, frame in enumerate(_msgs(small, "aligned")):
            if i == 0:
                frame.options.reply_region = True
            yield frame

    key, _ = read_watermark_key(None)
    with run_server(models_dir, 0, device="cpu", markers=watermark_markers(key)) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        replies = list(swap_pb2_grpc.FaceSwapStub(channel).StreamSwap(msgs(), timeout=60))
        channel.close()
    for reply in replies:
        assert reply.faces and reply.HasField("region"), reply.index
        r = reply.region
        for f in reply.faces:
            assert f.width < wm.MIN_MARK_SIDE
            x, y, w, h = wm.mark_box((f.x, f.y, f.width, f.height))
            x0, y0 = max(0, x), max(0, y)
            x1, y1 = min(reply.width, x + w), min(reply.height, y + h)
            assert r.x <= x0 and r.y <= y0 and r.x + r.width >= x1 and r.y + r.height >= y1, (reply.index, (x, y, w, h))
