"""`serve --metrics-port`: /metrics scraped over HTTP on 127.0.0.1 during and after real streams;
every counter must move by exactly what the calls did."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from swapstream.server.metrics import STAGES
from swapstream.server.registry import ModelRegistry
from swapstream.server.service import SwapServer
from swapstream.v1 import swap_pb2, swap_pb2_grpc
from tests.server_fixtures import face_frames, jpeg, write_negative_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTH = (("authorization", "Bearer t0ken"),)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_negative_model(str(root / "neg"), size=32)
    shutil.copytree(root / "neg", root / "tampered")
    with open(root / "tampered" / "model.onnx", "ab") as fh:
        fh.write(b"\0")  # hash mismatch: refused at start
    registry = ModelRegistry.load(str(root), device="cpu")
    server = SwapServer(registry, port=0, max_streams=1, token="t0ken", metrics_port=0)
    server.start()
    channel = grpc.insecure_channel(server.address)
    yield server, swap_pb2_grpc.FaceSwapStub(channel)
    channel.close()
    server.shutdown(2)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_by_what_the_calls_did(server):
    srv, stub = server
    frames = face_frames(6, size=256)
    before = scrape(srv.metrics_port)
    assert value(before, "swapstream_models_loaded") == 1 and value(before, "swapstream_models_refused") == 1
    assert value(before, "swapstream_active_streams") == 0
    calls_before = srv.registry.get("neg").batcher.calls

    # One stream: five good frames and one undecodable; held open until scraped mid-stream.
    hold = threading.Event()

    def requests():
        for i, f in enumerate(frames[:5]):
            yield swap_pb2.Frame(index=i, encoding=swap_pb2.JPEG, data=jpeg(f), model="neg" if i == 0 else "")
        yield swap_pb2.Frame(index=5, encoding=swap_pb2.JPEG, data=b"\xff\xd8\xff junk")
        hold.wait(30)

    call = stub.StreamSwap(requests(), metadata=AUTH, timeout=60)
    replies = [next(call) for _ in range(6)]
    during = scrape(srv.metrics_port)
    assert value(during, "swapstream_active_streams") == 1
    # A second stream while the only slot is taken: refused.
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamSwap(iter([swap_pb2.Frame(data=jpeg(frames[0]), encoding=swap_pb2.JPEG, model="neg")]),
                             metadata=AUTH, timeout=10))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    hold.set()
    assert list(call) == []
    # An unknown model, a call without the token, and one good image.
    with pytest.raises(grpc.RpcError):
        stub.SwapImage(swap_pb2.Frame(data=jpeg(frames[0]), encoding=swap_pb2.JPEG, model="nope"), metadata=AUTH,
                       timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.ListModels(swap_pb2.ListModelsRequest(), timeout=10)
    image = stub.SwapImage(swap_pb2.Frame(data=jpeg(frames[0]), encoding=swap_pb2.JPEG, model="neg"), metadata=AUTH,
                           timeout=10)

    after = scrape(srv.metrics_port)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = [r for r in replies if not r.HasField("error")] + [image]
    faces = sum(len(r.faces) for r in ok)
    assert len(ok) == 6 and faces >= 5
    assert moved("swapstream_frames_total", model="neg", result="ok") == 6
    assert moved("swapstream_frames_total", model="neg", result="INVALID_ARGUMENT") == 1
    assert moved("swapstream_faces_swapped_total", model="neg") == faces
    for stage in STAGES:
        assert moved("swapstream_stage_seconds_count", model="neg", stage=stage) == 6, stage
    total_s = sum(r.timings.total_ms for r in ok) / 1000
    assert moved("swapstream_stage_seconds_sum", model="neg", stage="total") == pytest.approx(total_s, rel=1e-3)
    calls = srv.registry.get("neg").batcher.calls - calls_before
    assert moved("swapstream_inference_batch_faces_count", model="neg") == calls
    assert moved("swapstream_inference_batch_faces_sum", model="neg") == faces
    assert moved("swapstream_rejected_calls_total", method="StreamSwap", code="RESOURCE_EXHAUSTED") == 1
    assert moved("swapstream_rejected_calls_total", method="SwapImage", code="NOT_FOUND") == 1
    assert moved("swapstream_rejected_calls_total", method="ListModels", code="UNAUTHENTICATED") == 1
    assert value(after, "swapstream_active_streams") == 0


def test_metrics_are_off_by_default_and_on_loopback(tmp_path):
    write_negative_model(str(tmp_path / "neg"), size=32)
    registry = ModelRegistry.load(str(tmp_path), device="cpu")
    plain = SwapServer(registry, port=0)
    assert plain.metrics_port is None
    plain.start()
    plain.shutdown(1)
    registry = ModelRegistry.load(str(tmp_path), device="cpu")
    served = SwapServer(registry, port=0, metrics_port=0)
    assert served.metrics_address == f"127.0.0.1:{served.metrics_port}"
    served.start()
    served.shutdown(1)
    with pytest.raises(OSError):  # the endpoint is gone after shutdown
        urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=2)


def test_serve_metrics_port_flag(tmp_path):
    """`swapstream serve --metrics-port 0` prints the endpoint it bound and serves it until SIGTERM."""
    write_negative_model(str(tmp_path / "neg"), size=32)
    proc = subprocess.Popen([sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", str(tmp_path),
                             "--port", "0", "--device", "cpu", "--metrics-port", "0", "--log-level", "WARNING"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("listening on ")
        line = proc.stdout.readline().strip()
        assert line.startswith("metrics on http://127.0.0.1:") and line.endswith("/metrics"), line
        samples = scrape(int(line.rsplit(":", 1)[1].split("/")[0]))
        assert value(samples, "swapstream_models_loaded") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
