"""A real gRPC server on 127.0.0.1 (port 0) with a real (tiny) ONNX model and synthetic faces."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swapstream.faces.crop import square_box
from swapstream.faces.detect import Box
from swapstream.server.service import run_server
from swapstream.v1 import swap_pb2, swap_pb2_grpc
from tests.server_fixtures import face_frames, jpeg, negative_models, serving_stub, unjpeg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARGIN = 0.2
MAX_MESSAGE = 1 << 20


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    return negative_models(tmp_path_factory, margin=MARGIN)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return face_frames(8, size=256)



@pytest.fixture(scope="module")
def server(models_dir):
    with serving_stub(models_dir, max_streams=4, max_message_bytes=MAX_MESSAGE) as served:
        yield served


def _frames_msgs(images, model="neg", start=0):
    for i, image in enumerate(images):
        yield swap_pb2.Frame(index=start + i, encoding=swap_pb2.JPEG, data=jpeg(image),
                             model=model if i == 0 else "")


def test_stream_round_trip_keeps_order_and_count(server, frames):
    stub, _ = server
    replies = list(stub.StreamSwap(_frames_msgs(frames), timeout=60))
    assert [r.index for r in replies] == list(range(len(frames)))
    assert all(not r.HasField("error") for r in replies)
    assert all((r.width, r.height, r.encoding) == (256, 256, swap_pb2.JPEG) for r in replies)
    with_face = [r for r in replies if len(r.faces) == 1]
    assert len(with_face) >= len(frames) - 1, [len(r.faces) for r in replies]
    t = with_face[-1].timings
    assert t.total_ms > 0 and t.detect_ms > 0 and t.infer_ms > 0 and t.blend_ms > 0 and t.batch_faces >= 1


def test_pixels_change_inside_face_and_stay_far_from_it(server, frames):
    stub, _ = server
    replies = list(stub.StreamSwap(_frames_msgs(frames[:3]), timeout=60))
    checked = 0
    for image, reply in zip(frames[:3], replies):
        if not reply.faces:
            continue
        before = unjpeg(jpeg(image)).astype(np.int16)  # what the server decoded
        after = unjpeg(reply.data).astype(np.int16)
        diff = np.abs(after - before).mean(axis=2)
        f = reply.faces[0]
        box = Box(f.x, f.y, f.width, f.height)
        inner = diff[box.y + box.h // 4: box.y + 3 * box.h // 4, box.x + box.w // 4: box.x + 3 * box.w // 4]
        assert inner.mean() > 25, inner.mean()
        sq = square_box(box, MARGIN)
        far = np.ones(diff.shape, bool)
        pad = 8  # JPEG works in 8x8 blocks
        far[max(0, sq.y - pad): sq.y + sq.h + pad, max(0, sq.x - pad): sq.x + sq.w + pad] = False
        assert far.sum() > 0.15 * far.size
        p99 = np.percentile(diff[far], 99)
        assert diff[far].mean() < 2.0 and p99 < 12, (diff[far].mean(), p99)
        checked += 1
    assert checked >= 2


def test_health_serving_and_reflection(server):
    _, channel = server
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "swapstream.v1.FaceSwap"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert "swapstream.v1.FaceSwap" in names and "grpc.health.v1.Health" in names


def test_list_models(server):
    stub, _ = server
    models = stub.ListModels(swap_pb2.ListModelsRequest(), timeout=10).models
    assert [(m.name, m.method, m.direction, m.input_size, m.provider) for m in models] == [
        ("neg", "ae", "a2b", 32, "CPUExecutionProvider")]
    assert models[0].crop_margin == pytest.approx(MARGIN)


def test_unknown_model_is_not_found(server, frames):
    stub, _ = server
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamSwap(_frames_msgs(frames[:1], model="nope"), timeout=30))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in err.value.details() and "neg" in err.value.details()
    # The model named by metadata instead of the first frame.
    with pytest.raises(grpc.RpcError) as err:
        stub.SwapImage(swap_pb2.Frame(encoding=swap_pb2.JPEG, data=jpeg(frames[0])),
                       metadata=(("swapstream-model", "nope"),), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_frame_gets_its_own_error_and_the_stream_goes_on(server, frames):
    stub, _ = server
    good = jpeg(frames[0])
    raw = frames[1]
    msgs = [
        swap_pb2.Frame(index=10, encoding=swap_pb2.JPEG, data=good, model="neg"),
        swap_pb2.Frame(index=11, encoding=swap_pb2.JPEG, data=b"\xff\xd8 not a jpeg at all"),
        swap_pb2.Frame(index=12, encoding=swap_pb2.RAW_BGR, data=raw.tobytes(), width=256, height=256),
        swap_pb2.Frame(index=13, encoding=swap_pb2.RAW_BGR, data=raw.tobytes()[:-5], width=256, height=256),
        swap_pb2.Frame(index=14, encoding=swap_pb2.PNG, data=good, model="other"),
        swap_pb2.Frame(index=15, encoding=swap_pb2.JPEG, data=good),
    ]
    replies = list(stub.StreamSwap(iter(msgs), timeout=60))
    assert [r.index for r in replies] == [10, 11, 12, 13, 14, 15]
    errors = {r.index: (r.error.code, r.error.message) for r in replies if r.HasField("error")}
    assert sorted(errors) == [11, 13, 14]
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for code, _ in errors.values())
    assert "decode" in errors[11][1] and "bytes" in errors[13][1] and "other" in errors[14][1]
    assert replies[2].encoding == swap_pb2.RAW_BGR and len(replies[2].data) == 256 * 256 * 3
    assert replies[5].data and not replies[1].data
    # Unary: the same bad bytes are an INVALID_ARGUMENT status.
    with pytest.raises(grpc.RpcError) as err:
        stub.SwapImage(msgs[1].__class__(encoding=swap_pb2.JPEG, data=b"junk", model="neg"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = stub.SwapImage(swap_pb2.Frame(encoding=swap_pb2.PNG, data=good, model="neg",
                                       options=swap_pb2.SwapOptions(reply_encoding=swap_pb2.PNG)), timeout=30)
    assert ok.encoding == swap_pb2.PNG and len(ok.faces) == 1


def test_oversized_message_is_resource_exhausted(server, frames):
    stub, _ = server
    big = swap_pb2.Frame(index=0, encoding=swap_pb2.JPEG, data=b"\0" * (MAX_MESSAGE + 1024), model="neg")
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamSwap(iter([big]), timeout=30))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:
        stub.SwapImage(big, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is still fine.
    assert len(list(stub.StreamSwap(_frames_msgs(frames[:1]), timeout=30))) == 1


def test_cancelled_client_frees_its_stream_slot(models_dir, frames):
    with run_server(models_dir, 0, max_streams=1, device="cpu") as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        release = threading.Event()

        def held():
            yield from _frames_msgs(frames[:1])
            release.wait(30)

        first = stub.StreamSwap(held(), timeout=60)
        assert next(first).index == 0  # the slot is taken
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamSwap(_frames_msgs(frames[:1]), timeout=30))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()
        release.set()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert len(list(stub.StreamSwap(_frames_msgs(frames[:1]), timeout=30))) == 1
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "the cancelled stream never gave its slot back"
                time.sleep(0.1)
        channel.close()


def test_sigterm_answers_frames_in_flight_and_exits_0(models_dir, frames, tmp_path):
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", models_dir, "--port", "0",
         "--device", "cpu", "--grace", "10"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = _read_line(proc, timeout=60)
        assert line.startswith("listening on "), line
        address = line.split()[-1]
        channel = grpc.insecure_channel(address)
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        hold = threading.Event()
        sent = 8  # they fit in the stream's queues and take >100 ms to process

        def requests():
            yield from _frames_msgs(frames[:sent])
            hold.wait(30)  # keep the stream open, as a live camera would

        call = stub.StreamSwap(requests(), timeout=60)
        got = [next(call).index]
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as err:
            for reply in call:
                got.append(reply.index)
        hold.set()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
        assert "shutting down" in err.value.details()
        assert proc.wait(timeout=30) == 0
        channel.close()
        log.seek(0)
        drain = re.search(r"draining: 1 stream\(s\), (\d+) frame\(s\) in flight", log.read())
        assert drain and int(drain.group(1)) >= 1  # frames were still being processed at SIGTERM
        # Every frame the server had taken was answered, in order: the ones in flight at SIGTERM and
        # those answered before it (a frame still on its way to the server is not taken once it drains).
        assert got == list(range(len(got))) and int(drain.group(1)) + 1 <= len(got) <= sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        print(log.read())


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        raise AssertionError(f"server printed nothing within {timeout} s (exit code {proc.poll()})")
    return box[0].strip()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:  # the `cryptography` package is not in the pinned set
        pytest.skip("needs the openssl command to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return str(cert), str(key)


def test_token_auth(models_dir, frames):
    with run_server(models_dir, 0, token="s3cret", device="cpu") as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListModels(swap_pb2.ListModelsRequest(), metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                list(stub.StreamSwap(_frames_msgs(frames[:1]), metadata=metadata, timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret"),)
        assert stub.ListModels(swap_pb2.ListModelsRequest(), metadata=good, timeout=10).models[0].name == "neg"
        assert len(list(stub.StreamSwap(_frames_msgs(frames[:1]), metadata=good, timeout=30))) == 1
        # Health probes need no token.
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        channel.close()


def test_tls_with_self_signed_certificate(models_dir, frames, tls_files):
    cert, key = tls_files
    with run_server(models_dir, 0, tls_cert=cert, tls_key=key, device="cpu") as port:
        with open(cert, "rb") as fh:
            creds = grpc.ssl_channel_credentials(root_certificates=fh.read())
        channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        replies = list(stub.StreamSwap(_frames_msgs(frames[:2]), timeout=30))
        assert [r.index for r in replies] == [0, 1] and replies[0].data
        channel.close()
        # A plaintext client cannot talk to the TLS port.
        plain = grpc.insecure_channel(f"127.0.0.1:{port}")
        with pytest.raises(grpc.RpcError) as err:
            swap_pb2_grpc.FaceSwapStub(plain).ListModels(swap_pb2.ListModelsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        plain.close()


def test_stream_options_blend_and_colour_transfer(server, frames):
    stub, _ = server
    image = frames[2]
    outputs = {}
    for name, options in {
        "default": swap_pb2.SwapOptions(),
        "seamless": swap_pb2.SwapOptions(blend=swap_pb2.BLEND_SEAMLESS),
        "raw colours": swap_pb2.SwapOptions(skip_colour_transfer=True, reply_encoding=swap_pb2.PNG),
    }.items():
        msg = swap_pb2.Frame(index=0, encoding=swap_pb2.JPEG, data=jpeg(image), model="neg", options=options)
        reply = list(stub.StreamSwap(iter([msg]), timeout=30))[0]
        assert not reply.HasField("error") and len(reply.faces) == 1, name
        outputs[name] = unjpeg(reply.data).astype(np.int16)
    assert reply.encoding == swap_pb2.PNG
    f = reply.faces[0]
    face = (slice(f.y + f.height // 4, f.y + 3 * f.height // 4), slice(f.x + f.width // 4, f.x + 3 * f.width // 4))
    base = outputs["default"][face]
    for name in ("seamless", "raw colours"):
        assert np.abs(outputs[name][face] - base).mean() > 3, name  # each option changes the result


def test_a_busy_port_is_an_error_not_a_shared_port(models_dir):
    from swapstream.faces.errors import InputError

    with run_server(models_dir, 0, device="cpu") as port:
        with pytest.raises(InputError, match="cannot listen"):
            with run_server(models_dir, port, device="cpu"):
                pass
