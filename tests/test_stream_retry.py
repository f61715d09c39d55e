"""A client that loses no finished work: drains, lost connections and full servers, with real servers.

Servers run on 127.0.0.1 (port 0): in this process (SwapServer, to drain one at a chosen frame),
and as a `swapstream serve` child process stopped with a real SIGTERM.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from swapstream.clients import bench, stream
from swapstream.clients.stream import RetryPolicy, StreamIncomplete, SwapClient
from swapstream.faces.video import VideoReader
from swapstream.server.registry import ModelRegistry
from swapstream.server.service import SwapServer
from tests.server_fixtures import face_frames, negative_models
from tests.video_fixtures import make_clip, probe

N = 60
FPS = 25.0
FAST = RetryPolicy(attempts=6, initial_backoff=0.05, max_backoff=0.5, connect_timeout=5.0)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    return negative_models(tmp_path_factory)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [f[32:224] for f in face_frames(N, size=256)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, frames) -> str:
    path = str(tmp_path_factory.mktemp("clip") / "talk.mp4")
    make_clip(path, frames, FPS, tone_hz=440.0)
    return path


def start_server(models_dir: str, **kwargs) -> SwapServer:
    server = SwapServer(ModelRegistry.load(models_dir, device="cpu"), port=0, **kwargs)
    server.start()
    return server


def serving(servers: list[SwapServer]) -> SwapServer:
    return next(s for s in servers if s.servicer.active_streams)


def test_retry_policy_backs_off_with_full_jitter_and_honours_pushback():
    policy = RetryPolicy(attempts=3, initial_backoff=0.2, max_backoff=0.5, multiplier=2.0)
    rng = random.Random(1)
    for failures, cap in ((1, 0.2), (2, 0.4), (3, 0.5)):
        delays = [policy.delay(failures, None, rng) for _ in range(300)]
        assert 0 <= min(delays) < 0.1 * cap and 0.9 * cap < max(delays) <= cap
    assert policy.delay(4, None, rng) is None  # out of attempts
    assert policy.delay(1, 1500, rng) == 1.5  # the server's hint replaces the computed delay
    assert policy.delay(1, -1, rng) is None   # a negative hint: do not retry


def test_drain_hands_the_stream_to_another_replica_and_loses_no_frame(models_dir, clip, tmp_path):
    servers = [start_server(models_dir), start_server(models_dir)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)  # round_robin over both
    seen: list[int] = []
    drains: list[threading.Thread] = []

    def on_result(result):
        seen.append(result.index)
        if len(seen) == 15:  # mid-stream: drain the replica holding the stream (as SIGTERM does)
            drains.append(threading.Thread(target=serving(servers).shutdown, args=(5.0,)))
            drains[0].start()

    out = str(tmp_path / "out.mp4")
    try:
        summary = stream.stream_video(clip, out, "neg", target, progress=False, retry=FAST, on_result=on_result)
    finally:
        for t in drains:
            t.join(10)
        for s in servers:
            s.shutdown(1.0)
    assert seen == list(range(N))  # every frame answered once, in order
    assert summary.retries >= 1 and summary.errors == 0
    assert summary.frames_with_faces >= N - 5  # swapped by the second replica too, not passed through
    got, src = probe(out), probe(clip)
    assert got["times"] == pytest.approx(src["times"], abs=1e-3)
    assert abs(got["audio_seconds"] - src["audio_seconds"]) < 1 / FPS


def test_server_full_backs_off_with_pushback_then_streams(models_dir, frames):
    server = start_server(models_dir, max_streams=1, pushback_ms=300)
    release = threading.Event()

    def hold_slot(client):
        def slow():
            for f in frames:
                if release.is_set():
                    return
                time.sleep(0.05)
                yield f
        for _ in client.stream(slow(), "neg"):
            pass

    target = f"127.0.0.1:{server.port}"
    try:
        with SwapClient(target) as holder, SwapClient(target) as client:
            holding = threading.Thread(target=hold_slot, args=(holder,))
            holding.start()
            while not server.servicer.active_streams:
                time.sleep(0.01)
            threading.Timer(0.8, release.set).start()
            results = list(client.stream(frames[:10], "neg", retry=FAST))
            holding.join(10)
    finally:
        server.shutdown(1.0)
    assert [r.index for r in results] == list(range(10))
    full = [w for w in client.retry_waits if w[0] == "RESOURCE_EXHAUSTED"]
    assert full, client.retry_waits
    for _, hint, waited in full:  # each wait is what the server asked for (300 ms with its +-50% jitter)
        assert hint is not None and 150 <= hint <= 450 and waited == pytest.approx(hint / 1000)


def test_frames_the_server_was_too_busy_to_take_are_sent_again(models_dir, frames):
    """A per-frame RESOURCE_EXHAUSTED (the decode budget was full) is resent; results stay in order."""
    from swapstream.server.pipeline import PipelineConfig

    server = start_server(models_dir, config=PipelineConfig(decode_wait=0.05))
    budget = server.servicer.pipelines["neg"].budget  # the server's own decode budget, shared by all calls
    budget.acquire(budget.capacity, 1.0)  # as if other streams were decoding huge frames
    threading.Timer(0.5, budget.release, args=(budget.capacity,)).start()
    try:
        with SwapClient(f"127.0.0.1:{server.port}") as client:
            results = list(client.stream(frames[:12], "neg", retry=FAST))
            with SwapClient(f"127.0.0.1:{server.port}") as plain:  # no retry policy: the error is the answer
                budget.acquire(budget.capacity, 1.0)
                try:
                    first = next(iter(plain.stream(frames[:1], "neg")))
                finally:
                    budget.release(budget.capacity)
    finally:
        server.shutdown(1.0)
    assert [r.index for r in results] == list(range(12))
    assert all(not r.reply.HasField("error") for r in results)
    assert client.frame_retries >= 1 and client.retries == 0  # resent within the same call
    assert first.reply.error.code == 8 and first.image is None


def test_gives_up_keeps_a_playable_partial_and_resume_finishes(models_dir, clip, tmp_path, capsys):
    out = str(tmp_path / "out.mp4")
    server = start_server(models_dir)
    done: list[int] = []

    def on_result(result):
        done.append(result.index)
        if len(done) == 20:  # the only replica goes away for good
            threading.Thread(target=server.shutdown, args=(5.0,)).start()

    policy = RetryPolicy(attempts=2, initial_backoff=0.05, connect_timeout=0.3)
    with pytest.raises(StreamIncomplete) as info:
        stream.stream_video(clip, out, "neg", f"127.0.0.1:{server.port}", progress=False, retry=policy,
                            side_by_side=str(tmp_path / "pair.mp4"), on_result=on_result)
    failure = info.value
    assert failure.done == len(done) >= 20 and not failure.bad_input
    assert "--resume" in str(failure) and f"after {failure.done} of {N} frames" in str(failure)
    partial = stream.partial_path(out)
    assert failure.partials == [partial, stream.partial_path(str(tmp_path / "pair.mp4"))]
    assert not os.path.exists(out)
    with VideoReader(partial) as r:
        kept = list(r)
    assert len(kept) == failure.done

    # Another server, same command with --resume: the output is whole, the partials are gone.
    second = start_server(models_dir)
    try:
        code = stream.main([clip, "-o", out, "--model", "neg", "--server", f"127.0.0.1:{second.port}",
                            "--side-by-side", str(tmp_path / "pair.mp4"), "--resume", "--no-progress"])
    finally:
        second.shutdown(1.0)
    assert code == 0
    assert f"resumed after {failure.done} frames" in capsys.readouterr().out
    got, src = probe(out), probe(clip)
    assert got["times"] == pytest.approx(src["times"], abs=1e-3)
    assert abs(got["audio_seconds"] - src["audio_seconds"]) < 1 / FPS
    with VideoReader(out) as r:
        whole = list(r)
    assert len(whole) == N and len(list(VideoReader(str(tmp_path / "pair.mp4")))) == N
    # The resumed frames are the partial's (one more encode: close, not equal).
    assert max(float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(kept, whole)) < 3
    assert not os.path.exists(partial) and not os.path.exists(stream.partial_path(str(tmp_path / "pair.mp4")))
    # Nothing left to resume: a clear error, before any server is asked.
    assert stream.main([clip, "-o", out, "--model", "neg", "--server", "127.0.0.1:1", "--resume",
                        "--connect-timeout", "0.2", "--no-progress"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_cli_failure_says_how_many_frames_were_done(models_dir, clip, tmp_path, capsys):
    server = start_server(models_dir, max_streams=1, pushback_ms=50)
    holder = SwapClient(f"127.0.0.1:{server.port}")
    stop = threading.Event()

    def forever():
        while not stop.is_set():
            time.sleep(0.05)
            yield np.zeros((64, 64, 3), np.uint8)

    t = threading.Thread(target=lambda: [None for _ in holder.stream(forever(), "neg")])
    t.start()
    try:
        while not server.servicer.active_streams:
            time.sleep(0.01)
        out = str(tmp_path / "x.mp4")
        code = stream.main([clip, "-o", out, "--model", "neg", "--server", f"127.0.0.1:{server.port}",
                            "--retries", "2", "--no-progress"])
    finally:
        stop.set()
        t.join(10)
        holder.close()
        server.shutdown(1.0)
    err = capsys.readouterr().err
    assert code == 1 and "RESOURCE_EXHAUSTED" in err and "after 0 of 60 frames" in err and "nothing written" in err
    assert err.count("\n") == 1 and not os.path.exists(out)


def test_token_file_on_stream_and_bench(models_dir, clip, tmp_path, capsys):
    server = start_server(models_dir, token="s3cret")
    target = f"127.0.0.1:{server.port}"
    good, bad = tmp_path / "token", tmp_path / "wrong"
    good.write_text("s3cret\n")
    bad.write_text("guess\n")
    out = str(tmp_path / "t.mp4")
    common = ["--model", "neg", "--server", target]
    try:
        assert stream.main([clip, "-o", out, *common, "--token-file", str(good), "--max-frames", "5",
                            "--no-progress"]) == 0
        assert stream.main([clip, "-o", out, *common, "--token-file", str(bad), "--no-progress"]) == 2
        assert "wrong token" in capsys.readouterr().err
        assert stream.main([clip, "-o", out, *common, "--token-file", str(tmp_path / "none")]) == 2
        assert stream.main([clip, "-o", out, *common, "--token", "s3cret", "--token-file", str(good)]) == 2
        bench_args = [*common, "--frames", "4", "--warmup", "1", "--size", "128", "--streams", "1"]
        assert bench.main(bench_args + ["--token-file", str(good)]) == 0
        assert bench.main(bench_args + ["--token-file", str(bad)]) == 2
    finally:
        server.shutdown(1.0)
    assert len(probe(out)["times"]) == 5


@pytest.mark.slow
def test_sigterm_on_a_real_server_mid_stream_loses_no_frame(models_dir, clip, tmp_path):
    """`swapstream serve` stopped with SIGTERM mid-stream; a second replica, listed in the same target, takes over."""
    proc = subprocess.Popen([sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", models_dir,
                             "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    address = None
    for line in proc.stdout:
        if line.startswith("listening on "):
            address = line.split("listening on ", 1)[1].strip()
            break
    assert address, "the server did not start"
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    # The second replica's port is listed from the start but only starts serving mid-stream,
    # so the stream begins on the child process.
    second = start_server(models_dir)
    port = second.port
    second.shutdown(0)
    replicas: list[SwapServer] = []
    seen: list[int] = []

    def on_result(result):
        seen.append(result.index)
        if len(seen) == 5:
            registry = ModelRegistry.load(models_dir, device="cpu")
            replicas.append(SwapServer(registry, port=port))
            replicas[0].start()
        if len(seen) == 12:
            proc.send_signal(signal.SIGTERM)

    out = str(tmp_path / "out.mp4")
    try:
        summary = stream.stream_video(clip, out, "neg", f"ipv4:{address},127.0.0.1:{port}", progress=False,
                                      retry=FAST, window=4, on_result=on_result)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for r in replicas:
            r.shutdown(1.0)
    assert seen == list(range(N)) and summary.retries >= 1 and summary.errors == 0
    assert len(probe(out)["times"]) == N
