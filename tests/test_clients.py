"""`swapstream stream` and `swapstream bench` against a real server on 127.0.0.1 (port 0)."""
from __future__ import annotations

import json
import os

import pytest

from swapstream.clients import bench, stream
from swapstream.faces.video import VideoReader, VideoWriter
from swapstream.server.service import run_server
from tests.server_fixtures import face_frames, negative_models

FPS = 12.5
W, H = 256, 192


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    return negative_models(tmp_path_factory)


@pytest.fixture(scope="module")
def server(models_dir):
    with run_server(models_dir, 0, device="cpu") as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("video") / "a.mp4")
    frames = face_frames(10, size=256)
    with VideoWriter(path, FPS, (W, H)) as writer:
        for f in frames:
            writer.write(f[32:32 + H])  # 256 x 192: a non-square frame
    return path


def test_stream_writes_video_with_input_rate_size_and_count(server, video, tmp_path, capsys):
    out = str(tmp_path / "swapped.mp4")
    code = stream.main([video, "-o", out, "--model", "neg", "--server", server, "--side-by-side", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "frames 10," in printed and "FPS" in printed and "p95" in printed
    with VideoReader(out) as r:
        frames = list(r)
        assert (len(frames), r.width, r.height) == (10, W, H)
        assert r.fps == pytest.approx(FPS, abs=0.01)
    with VideoReader(stream.side_by_side_path(out)) as r:
        assert (len(list(r)), r.width, r.height) == (10, 2 * W, H)
    with VideoReader(video) as r:
        source = list(r)
    # The faces changed: the swapped video differs from its source clearly (the model is a negative).
    diff = sum(float(abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(source, frames)) / 10
    assert diff > 5


def test_stream_api_summary(server, video, tmp_path):
    out = str(tmp_path / "api.avi")
    summary = stream.stream_video(video, out, "neg", server, progress=False, window=2)
    assert summary.frames == 10 and summary.errors == 0
    assert summary.frames_with_faces >= 8 and summary.faces_swapped >= summary.frames_with_faces
    d = summary.to_dict()
    assert d["latency_ms"]["p50"] > 0 and d["fps"] > 0 and d["outputs"] == [out]
    assert os.path.isfile(out)


def test_stream_bad_input_exits_2_and_writes_nothing(server, video, tmp_path, capsys):
    out = str(tmp_path / "x.mp4")
    assert stream.main([video, "-o", out, "--model", "nope", "--server", server, "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not os.path.exists(out) and not [p for p in os.listdir(tmp_path) if p.startswith(".video-")]
    assert stream.main([str(tmp_path / "missing.mp4"), "-o", out, "--model", "neg", "--server", server]) == 2
    assert stream.main([video, "-o", str(tmp_path / "no" / "dir.mp4"), "--model", "neg", "--server", server]) == 2


def test_stream_without_server_exits_1(video, tmp_path, capsys):
    code = stream.main([video, "-o", str(tmp_path / "x.mp4"), "--model", "neg", "--server", "127.0.0.1:1",
                        "--connect-timeout", "0.5", "--no-progress"])
    assert code == 1
    assert "no server answers" in capsys.readouterr().err


def test_bench_over_grpc_and_in_process(server, models_dir, tmp_path, capsys):
    common = ["--model", "neg", "--frames", "6", "--warmup", "1", "--size", "192", "--streams", "2", "--window", "2"]
    for where in (["--server", server], ["--in-process", models_dir, "--device", "cpu"]):
        js, md = tmp_path / "b.json", tmp_path / "b.md"
        assert bench.main(common + where + ["--json", str(js), "--markdown", str(md)]) == 0
        report = json.loads(js.read_text())
        assert report["transport"] == ("gRPC" if where[0] == "--server" else "in-process")
        assert [r["streams"] for r in report["runs"]] == [1, 1, 2]
        for run in report["runs"]:
            assert run["errors"] == 0 and run["frames_measured"] == 5 * run["streams"]
            assert run["fps"] > 0 and run["latency_ms"]["p50"] > 0
            assert run["latency_ms"]["p50"] <= run["latency_ms"]["p95"] <= run["latency_ms"]["p99"]
            assert run["stages_ms"]["detect"]["p50"] > 0 and run["stages_ms"]["infer"]["p50"] > 0
            assert run["faces_per_frame"] > 0.5
        assert "| single stream, 1 in flight |" in md.read_text()
    assert "latency p50" in capsys.readouterr().out
    assert bench.main(["--model", "nope", "--server", server, "--frames", "3", "--warmup", "0"]) == 2
    assert bench.main(["--model", "neg", "--frames", "3", "--warmup", "3"]) == 2


def test_region_replies_match_whole_replies_and_bad_regions_are_refused(server):
    """`stream` asks for the changed rectangle only (reply_region) by default: the frames it rebuilds
    equal the whole-frame replies up to JPEG's rounding at the rectangle's edge; a region that does not
    fit the frame sent is an error, not a silent misplacement."""
    import numpy as np

    from swapstream.v1 import swap_pb2

    frames = [f[32:32 + H] for f in face_frames(4, size=256)]
    with stream.SwapClient(server) as client:
        whole = list(client.stream(frames, "neg"))
        parts = list(client.stream(frames, "neg", options=swap_pb2.SwapOptions(reply_region=True), keep_source=False))
    assert all(r.reply.HasField("region") for r in parts) and not any(r.reply.HasField("region") for r in whole)
    assert all(p.source is None and p.image.shape == frames[0].shape for p in parts)
    assert all(np.array_equal(f, g[32:32 + H]) for f, g in zip(frames, face_frames(4, size=256)))  # left as given
    swapped = 0
    for f, w, p in zip(frames, whole, parts):
        r = p.reply.region
        swapped += r.width > 0
        assert len(p.reply.data) <= len(w.reply.data)
        assert np.abs(p.image.astype(int) - w.image).mean() < 1.5
    assert swapped >= 3
    bad = swap_pb2.SwappedFrame(index=7, encoding=swap_pb2.JPEG, width=W, height=H,
                                region=swap_pb2.FaceBox(x=W - 8, y=0, width=16, height=16))
    with pytest.raises(RuntimeError, match="does not fit"):
        stream.reply_image(bad, np.zeros((H, W, 3), np.uint8))
    with pytest.raises(RuntimeError, match="not kept"):
        stream.reply_image(bad, None)
