"""Fuzzing StreamSwap and SwapImage with hypothesis against a real server on 127.0.0.1: every
request is answered within a deadline with a documented status code, a stream goes on after a
bad frame, and the server's threads, file descriptors and memory stay bounded.

A few hundred cases here (derandomized, so CI is repeatable); `python -m bench.fuzz_server` is
the long run against a `swapstream serve` process."""
from __future__ import annotations

import os
import threading
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from swapstream.server.pipeline import PipelineConfig
from swapstream.server.service import run_server
from swapstream.v1 import swap_pb2_grpc
from tests import fuzz_cases
from tests.server_fixtures import write_negative_model

DEADLINE = 20.0  # seconds for one call on a loaded 2-core CI machine; the long run uses 2 s
FUZZ = settings(max_examples=int(os.environ.get("SWAPSTREAM_FUZZ_EXAMPLES", "150")), deadline=None,
                derandomize=True, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


def _resources() -> dict:
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    return {"threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")), "rss_mb": rss}


def _settled(before: dict, timeout: float = 10.0) -> dict:
    """Resources once the streams' helper threads have wound down (they exit within ~0.1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        now = _resources()
        if now["threads"] <= before["threads"] + 2 or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_negative_model(str(root / fuzz_cases.MODEL), size=32)
    config = PipelineConfig(first_frame_timeout=2.0, idle_timeout=2.0)
    with run_server(str(root), 0, max_streams=4, max_message_bytes=1 << 20, device="cpu", config=config) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 1 << 22),
                                                                      ("grpc.max_send_message_length", 1 << 22)])
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        # Warm: first-call allocations (cascades, onnxruntime arenas) are not a leak.
        fuzz_cases.stream(stub, fuzz_cases.StreamCase("first-frame", None, [fuzz_cases.good_frame()]), DEADLINE)
        fuzz_cases.swap_image(stub, fuzz_cases.good_frame(), DEADLINE, (("swapstream-model", fuzz_cases.MODEL),))
        yield stub
        channel.close()


def test_fuzz_swap_image(stub):
    before = _resources()
    seen = set()

    @FUZZ
    @given(frame=fuzz_cases.frames(with_model=True))
    def check(frame):
        out = fuzz_cases.swap_image(stub, frame, DEADLINE)
        seen.add(out.code)
        assert not out.problems, out.problems
        assert out.seconds < DEADLINE

    check()
    after = _settled(before)
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND"} <= seen, seen  # the cases reached the interesting paths
    assert after["threads"] <= before["threads"] + 2 and after["fds"] <= before["fds"] + 10, (before, after)
    assert after["rss_mb"] < before["rss_mb"] + 300, (before, after)


def test_fuzz_stream_swap(stub):
    before = _resources()
    codes = set()

    @FUZZ
    @given(case=fuzz_cases.stream_cases())
    def check(case):
        out = fuzz_cases.stream(stub, case, DEADLINE)
        codes.add(out.code)
        codes.update(out.frame_codes)
        assert not out.problems, out.problems
        assert out.seconds < DEADLINE

    check()
    after = _settled(before)
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", grpc.StatusCode.INVALID_ARGUMENT.value[0]} <= codes, codes
    assert after["threads"] <= before["threads"] + 2 and after["fds"] <= before["fds"] + 10, (before, after)
    assert after["rss_mb"] < before["rss_mb"] + 300, (before, after)
