"""Model folders: manifest validation, the registry skipping broken models by name, sessions,
the batcher and the tracker (no gRPC here; test_server.py covers the service)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat

import numpy as np
import pytest

from swapstream.faces.detect import HaarDetector
from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import ManifestError, load_manifest, new_manifest, write_manifest
from swapstream.server.batcher import InferenceBatcher
from swapstream.server.registry import ModelRegistry
from swapstream.server.session import SessionError, make_session
from swapstream.server.tracking import FaceTracker
from tests.server_fixtures import face_frames, write_negative_model


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> str:
    return write_negative_model(str(tmp_path_factory.mktemp("m") / "neg"), size=32, margin=0.25)


def _copy(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def _edit(model_dir: str, **changes) -> None:
    path = os.path.join(model_dir, "manifest.json")
    with open(path) as fh:
        data = json.load(fh)
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    with open(path, "w") as fh:
        json.dump(data, fh)


_DROP = object()


def test_manifest_round_trip(good_model):
    m = load_manifest(good_model)
    assert (m.method, m.direction, m.crop_size, m.crop_margin) == ("ae", "a2b", 32, 0.25)
    assert m.input_shape == (None, 32, 32, 3) and m.dynamic_batch
    assert (m.dtype, m.value_range, m.colour_order, m.precision) == ("float32", (0.0, 1.0), "BGR", "fp32")
    assert m.producer.startswith("swapstream") and len(m.onnx_sha256) == 64 and m.created


@pytest.mark.parametrize("changes, message", [
    ({"output_name": "nope"}, "output 'nope' is not in the graph"),
    ({"input_name": "img"}, "input 'img' is not in the graph"),
    ({"crop_size": 64, "input_shape": [None, 64, 64, 3], "output_shape": [None, 64, 64, 3]}, "graph input shape"),
    ({"input_shape": [None, 32, 32, 4]}, "input_shape must be"),
    ({"direction": "sideways"}, "direction must be one of a2b, b2a"),
    ({"format_version": 9}, "format_version is 9"),
    ({"crop_margin": "wide"}, "crop_margin must be a number"),
    ({"method": _DROP}, "lacks field(s) method"),
    ({"colour": "BGR"}, "unknown field(s) colour"),
    ({"colour_order": "RGB"}, "colour_order must be 'BGR'"),
    ({"dtype": "uint8", "value_range": [0, 255]}, "graph input is tensor(float), manifest says uint8"),
    ({"onnx_sha256": "0" * 64}, "sha256 of model.onnx"),
])
def test_manifest_mismatches_are_refused_with_a_reason(good_model, tmp_path, changes, message):
    model = _copy(good_model, str(tmp_path / "bad"))
    _edit(model, **changes)
    with pytest.raises(ManifestError) as err:
        load_manifest(model)
    assert message in str(err.value) and "model bad" in str(err.value)


def test_manifest_detects_a_changed_or_truncated_model_file(good_model, tmp_path):
    model = _copy(good_model, str(tmp_path / "cut"))
    path = os.path.join(model, "model.onnx")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 10)
    with pytest.raises(ManifestError, match="changed or truncated"):
        load_manifest(model)
    os.remove(os.path.join(model, "manifest.json"))
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(model)
    with open(os.path.join(model, "manifest.json"), "w") as fh:
        fh.write("{ not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(model)


def test_write_manifest_refuses_inconsistent_fields(good_model, tmp_path):
    model = _copy(good_model, str(tmp_path / "w"))
    m = new_manifest(model, method="ae", direction="b2a", crop_size=32, crop_margin=0.1)
    from dataclasses import replace

    with pytest.raises(ManifestError, match="input_shape"):
        write_manifest(model, replace(m, crop_size=48))
    write_manifest(model, m)
    assert load_manifest(model).direction == "b2a"
    assert not [p for p in os.listdir(model) if p.startswith((".manifest-", ".tmp-"))]  # no temp file left
    # Readable by a server running as another user, whatever the umask.
    assert stat.S_IMODE(os.stat(os.path.join(model, "manifest.json")).st_mode) == 0o644


def test_registry_skips_broken_models_by_name(good_model, tmp_path, caplog):
    root = tmp_path / "models"
    _copy(good_model, str(root / "good"))
    _edit(_copy(good_model, str(root / "hashless")), onnx_sha256="f" * 64)
    os.makedirs(root / "empty")
    (root / "notes.txt").write_text("not a model")
    with caplog.at_level(logging.ERROR, logger="swapstream.server.registry"):
        registry = ModelRegistry.load(str(root), device="cpu")
    try:
        assert registry.names() == ["good"]
        assert sorted(registry.skipped) == ["empty", "hashless"]
        assert "sha256" in registry.skipped["hashless"] and "no manifest.json" in registry.skipped["empty"]
        assert "skipping model hashless" in caplog.text and "skipping model empty" in caplog.text
        assert registry.get("good").provider == "CPUExecutionProvider"
    finally:
        registry.close()
    with pytest.raises(InputError, match="no usable model"):
        ModelRegistry.load(str(root / "empty"))
    with pytest.raises(InputError, match="does not exist"):
        ModelRegistry.load(str(tmp_path / "nowhere"))


def test_session_providers(good_model, caplog):
    path = os.path.join(good_model, "model.onnx")
    session, provider = make_session(path, "cpu")
    assert provider == "CPUExecutionProvider" == session.get_providers()[0]
    # Ground truth from outside onnxruntime: without an NVIDIA device node no CUDA session can work,
    # so `auto` must come back on the CPU (saying why in one line) and `cuda` must refuse.
    gpu = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
    with caplog.at_level(logging.INFO, logger="swapstream.server.session"):
        session, provider = make_session(path, "auto")
    assert provider == session.get_providers()[0]
    if not gpu:
        assert session.get_providers() == ["CPUExecutionProvider"]
        fallback = [r.getMessage() for r in caplog.records if "CUDA not used" in r.getMessage()]
        assert len(fallback) == 1 and "running on CPU" in fallback[0]
        with pytest.raises(SessionError, match="cuda"):
            make_session(path, "cuda")
    elif provider == "CPUExecutionProvider":  # a GPU box without usable CUDA libraries says so
        assert any("CUDA not used" in r.getMessage() for r in caplog.records)
    with pytest.raises(InputError):
        make_session(path, "tpu")


def test_batcher_batches_and_keeps_order(good_model, tmp_path):
    fixed = write_negative_model(str(tmp_path / "fixed"), size=32, dynamic_batch=False)
    for model in (good_model, fixed):
        manifest = load_manifest(model)
        session, _ = make_session(os.path.join(model, "model.onnx"), "cpu")
        batcher = InferenceBatcher(session, manifest, max_batch=8)
        try:
            rng = np.random.default_rng(0)
            crops = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (1, 3, 2)]
            futures = [batcher.submit(c) for c in crops]
            for c, fut in zip(crops, futures):
                result = fut.result(timeout=30)
                assert result.faces.shape == c.shape and result.masks is None
                assert np.abs(result.faces.astype(int) - (255 - c.astype(int))).max() <= 1  # 1 - x
                assert result.batch_faces >= len(c)
        finally:
            batcher.close()
        assert manifest.dynamic_batch == (model == good_model)


class _ShapeRecorder:
    """A real onnxruntime session that also notes the batch size of every call."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, outputs, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)


def test_fixed_batches_pad_to_one_shape_and_return_only_the_real_faces(good_model):
    manifest = load_manifest(good_model)
    session = _ShapeRecorder(make_session(os.path.join(good_model, "model.onnx"), "cpu")[0])
    batcher = InferenceBatcher(session, manifest, max_batch=8, fixed_batch=True)
    try:
        batcher.warm_up()
        assert session.batches == [8]
        rng = np.random.default_rng(1)
        for n in (3, 5, 8, 1, 11):
            crops = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            result = batcher.infer(crops)
            assert result.faces.shape == crops.shape
            assert np.abs(result.faces.astype(int) - (255 - crops.astype(int))).max() <= 1
        assert session.batches[1:] == [8, 8, 8, 8, 8, 8]  # 11 faces: two calls
    finally:
        batcher.close()


def test_tracker_follows_the_face_with_few_full_detections():
    frames = face_frames(12, size=320, seed=5)
    full = HaarDetector(max_side=320, min_size_frac=0.1)
    roi = HaarDetector(scale_factor=1.2, min_neighbors=4, max_side=128, min_size_frac=0.3)
    tracker = FaceTracker(full, roi, redetect_every=6)
    boxes = [tracker.update(f) for f in frames]
    assert all(len(b) == 1 for b in boxes)
    assert tracker.full_detections <= 4  # frames 0 and 6, plus at most two lost-face searches
    for frame, found in zip(frames, boxes):  # the tracked box stays on the detected face
        direct = full.detect(frame)[0]
        b = found[0]
        assert abs((b.x + b.w / 2) - (direct.x + direct.w / 2)) < 0.25 * direct.w
        assert 0.7 < b.w / direct.w < 1.4
    blank = np.full((320, 320, 3), 128, np.uint8)
    assert tracker.update(blank)  # held for a frame after losing the face...
    tracker.update(blank)
    assert tracker.update(blank) == []  # ...then dropped
