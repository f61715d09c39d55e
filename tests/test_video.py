"""Video I/O on PyAV: H.264 out, the source's audio kept in sync, timestamps and rotation kept.

The clips stream through a real server on 127.0.0.1 (the negative model of server_fixtures),
as `swapstream stream` would send them.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction

import numpy as np
import pytest

from swapstream.clients import stream
from swapstream.faces import video as video_mod
from swapstream.faces.errors import VideoError
from swapstream.faces.video import VideoReader, VideoWriter
from swapstream.server.service import run_server
from tests.server_fixtures import face_frames, write_negative_model
from tests.video_fixtures import make_clip, peak_hz, probe, read_audio, stored_sideways

FPS = 25.0
TONE = 440.0
W, H = 256, 192


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_negative_model(str(root / "neg"), size=32)
    with run_server(str(root), 0, device="cpu") as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return [f[32:32 + H] for f in face_frames(20, size=256)]  # 256 x 192: not square


@pytest.fixture(scope="module")
def toned(tmp_path_factory, faces) -> str:
    path = str(tmp_path_factory.mktemp("clips") / "toned.mp4")
    make_clip(path, faces, FPS, time_base=Fraction(1, 90000), tone_hz=TONE)  # 1/90000: as H.264 .mp4 files have
    return path


def _run(args: list[str]) -> int:
    return stream.main(args + ["--no-progress"])


def test_stream_writes_h264_with_the_source_audio_in_sync(server, toned, tmp_path):
    out = str(tmp_path / "out.mp4")
    assert _run([toned, "-o", out, "--model", "neg", "--server", server]) == 0
    got, src = probe(out), probe(toned)
    assert got["codec"] == "h264" and got["pix_fmt"] == "yuv420p" and got["size"] == (W, H)
    assert len(got["times"]) == len(src["times"]) == 20
    assert got["times"] == pytest.approx(src["times"], abs=1e-3)
    # Same audio duration and start to within one frame, and the same tone.
    assert abs(got["audio_seconds"] - src["audio_seconds"]) < 1 / FPS
    assert abs(got["audio_start"] - src["audio_start"]) < 1 / FPS
    samples, rate, _ = read_audio(out)
    assert abs(peak_hz(samples, rate) - TONE) < 5
    # +faststart: the index (moov) comes before the media data, so a browser can start playing at once.
    head = open(out, "rb").read(4096)
    assert 0 <= head.find(b"moov") < 4096 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    # The faces were swapped (the model is a photographic negative).
    assert np.abs(got["first"].astype(int) - src["first"].astype(int)).mean() > 3


def test_max_frames_cuts_the_audio_with_the_video(server, toned, tmp_path):
    out = str(tmp_path / "cut.mp4")
    assert _run([toned, "-o", out, "--model", "neg", "--server", server, "--max-frames", "10"]) == 0
    got = probe(out)
    assert len(got["times"]) == 10
    assert abs(got["audio_seconds"] - 10 / FPS) < 1 / FPS


def test_rotated_input_reaches_the_server_upright_and_plays_upright(server, faces, tmp_path):
    clip = str(tmp_path / "portrait.mp4")
    make_clip(clip, [stored_sideways(f) for f in faces[:12]], FPS, rotation=90)
    with VideoReader(clip) as r:
        assert (r.rotation, r.width, r.height) == (90, W, H)
        first = next(iter(r))
    assert np.abs(first.astype(int) - faces[0].astype(int)).mean() < 4  # upright again, as rendered
    out = str(tmp_path / "upright.mp4")
    summary = stream.stream_video(clip, out, "neg", server, progress=False)
    # Haar finds only upright faces: sideways frames would have come back unswapped.
    assert summary.frames == 12 and summary.frames_with_faces >= 10
    got = probe(out)
    assert got["size"] == (W, H) and got["rotation"] == 0  # upright pixels, no tag left to apply


def test_variable_frame_rate_keeps_every_presentation_time(server, faces, tmp_path):
    times_ms = [0, 40, 80, 200, 240, 400, 410, 420, 600, 640, 1000, 1040]
    clip = str(tmp_path / "vfr.mp4")
    make_clip(clip, faces[:12], FPS, pts=times_ms, time_base=Fraction(1, 1000), tone_hz=TONE)
    out = str(tmp_path / "vfr_out.mp4")
    assert _run([clip, "-o", out, "--model", "neg", "--server", server]) == 0
    got = probe(out)
    assert got["times"] == pytest.approx([t / 1000 for t in times_ms], abs=1e-3)
    assert abs(got["audio_seconds"] - probe(clip)["audio_seconds"]) < 1 / FPS


@pytest.mark.parametrize("ext,args,codec", [(".mp4", ["--codec", "mpeg4"], "mpeg4"), (".webm", [], "vp9"),
                                            (".mkv", [], "h264")])
def test_codec_and_container_choices(server, toned, tmp_path, ext, args, codec):
    out = str(tmp_path / f"out{ext}")
    assert _run([toned, "-o", out, "--model", "neg", "--server", server] + args) == 0
    got = probe(out)
    assert got["codec"] == codec and len(got["times"]) == 20
    assert got["audio_seconds"] == pytest.approx(probe(toned)["audio_seconds"], abs=1 / FPS)
    if ext == ".webm":  # WebM takes no AAC: the audio was re-encoded as Opus, the tone kept
        samples, rate, _ = read_audio(out)
        assert abs(peak_hz(samples, rate) - TONE) < 5


def test_unknown_codec_and_corrupt_or_truncated_input_exit_2(server, toned, tmp_path, capsys):
    out = str(tmp_path / "x.mp4")
    assert _run([toned, "-o", out, "--model", "neg", "--server", server, "--codec", "nonesuch"]) == 2
    assert "nonesuch" in capsys.readouterr().err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 300)
    # Cut off with its index (at the end, as make_clip writes it): nothing can be read.
    data = open(toned, "rb").read()
    no_index = tmp_path / "no_index.mp4"
    no_index.write_bytes(data[: len(data) * 2 // 3])
    for bad in (junk, no_index):
        assert _run([str(bad), "-o", out, "--model", "neg", "--server", server]) == 2
        assert "cannot open" in capsys.readouterr().err
    # Cut off midway with the index at the front (+faststart): it lists every frame, the data stops.
    faststart = str(tmp_path / "faststart.mp4")
    with VideoReader(toned) as r, VideoWriter(faststart, FPS, (W, H), time_base=r.time_base, audio=toned) as w:
        for image, pts in r.frames_with_pts():
            w.write(image, pts)
    data = open(faststart, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert _run([str(cut), "-o", out, "--model", "neg", "--server", server]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and err.count("\n") == 1
    assert not os.path.exists(out)
    # The frames it could swap are kept, so nothing done is lost, and it is said where.
    partial = stream.partial_path(out)
    assert partial in err and "--resume" not in err
    with VideoReader(partial) as r:
        assert 0 < len(list(r)) < 20
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".video-")]


def test_writer_round_trip_times_audio_and_odd_sizes(tmp_path, toned):
    with VideoReader(toned) as r:
        frames = list(r.frames_with_pts())
        tb = r.time_base
    out = str(tmp_path / "copy.mp4")
    with VideoWriter(out, FPS, (W, H), time_base=tb, audio=toned) as w:
        for image, pts in frames:
            w.write(image, pts)
        with pytest.raises(VideoError, match="increase"):
            w.write(frames[0][0], frames[0][1])
    got = probe(out)
    assert len(got["times"]) == 20 and got["audio_seconds"] == pytest.approx(probe(toned)["audio_seconds"], abs=0.04)
    odd = str(tmp_path / "odd.mp4")
    with VideoWriter(odd, 10, (33, 21)) as w:
        for i in range(3):
            w.write(np.full((21, 33, 3), 40 * i, np.uint8))
    got = probe(odd)
    assert got["size"] == (33, 21) and got["codec"] == "h264" and len(got["times"]) == 3


def test_opencv_fallback_without_pyav_logs_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(video_mod, "av", None)
    monkeypatch.setattr(video_mod, "_fallback_logged", False)
    path = str(tmp_path / "cv.mp4")
    with caplog.at_level(logging.WARNING, logger=video_mod.__name__):
        with VideoWriter(path, 12.5, (64, 48)) as w:
            for i in range(5):
                w.write(np.full((48, 64, 3), 50, np.uint8))
        with VideoReader(path) as r:
            assert len(list(r)) == 5 and r.fps == pytest.approx(12.5, abs=0.01)
    assert sum("PyAV" in rec.message for rec in caplog.records) == 1
    monkeypatch.undo()
    assert probe(path)["codec"] == "mpeg4"  # OpenCV's mp4v


CLOSE_RACE = """
import sys, threading, time
from swapstream.faces.video import VideoReader
for trial in range(int(sys.argv[2])):
    reader = VideoReader(sys.argv[1])
    frames = reader.frames_with_pts()
    seen, errors = [], []

    def pull():
        try:
            seen.extend(frames)
        except Exception as exc:  # closing must end the iteration, not fail it
            errors.append(exc)

    thread = threading.Thread(target=pull)
    thread.start()
    time.sleep(0.0005 * (trial % 20))
    reader.close()
    thread.join()
    assert not errors, errors
    assert len(seen) <= 60
print("survived")
"""


def test_closing_a_reader_while_another_thread_decodes_ends_the_iteration(tmp_path):
    # The client closes its reader when a stream ends while gRPC's request thread may still be
    # decoding the next frame; FFmpeg freed under a running decode crashed the whole process.
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    path = str(tmp_path / "noise.mp4")
    make_clip(path, [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(60)], FPS)
    run = subprocess.run([sys.executable, "-c", CLOSE_RACE, path, "80"], capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0 and "survived" in run.stdout, (run.returncode, run.stderr[-2000:])
