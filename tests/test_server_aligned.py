"""Aligned models in the server: manifest fields, landmark smoothing, the inverse-warp paste with the
template's blend mask, 2x outputs, keep-the-mouth, the post-blend hook; old models keep the Haar path."""
from __future__ import annotations

import json
import os
import shutil

import cv2
import grpc
import numpy as np
import pytest

from swapstream.faces.align import AlignTemplate, eye_distance, paste_aligned, rescale
from swapstream.faces.model_folder import ManifestError, load_manifest
from swapstream.faces.regions import mouth_mask
from swapstream.faces.synth import pose_sequence, render_face
from swapstream.server.pipeline import PipelineConfig, StreamSettings, SwapPipeline
from swapstream.server.registry import ModelRegistry
from swapstream.server.service import run_server
from swapstream.server.tracking import OneEuroPoints
from swapstream.v1 import swap_pb2, swap_pb2_grpc
from tests.server_fixtures import face_frames, jpeg, write_aligned_negative_model, write_negative_model

SIZE = 32  # model input side; output 64


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("models")
    write_aligned_negative_model(str(root / "aligned"), size=SIZE, upscale=2)
    write_negative_model(str(root / "old"), size=SIZE, margin=0.2)
    return str(root)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return face_frames(6, size=256)


@pytest.fixture(scope="module")
def registry(models_dir):
    reg = ModelRegistry.load(models_dir, device="cpu")
    yield reg
    reg.close()


def _msgs(images, model, options=None):
    for i, image in enumerate(images):
        yield swap_pb2.Frame(index=i, encoding=swap_pb2.PNG, data=cv2.imencode(".png", image)[1].tobytes(),
                             model=model if i == 0 else "", options=options if i == 0 else None)


def _png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_manifest_records_the_template_and_the_output_side(models_dir, tmp_path):
    m = load_manifest(os.path.join(models_dir, "aligned"))
    assert m.aligned and m.align_template == AlignTemplate() and (m.input_size, m.output_size) == (32, 64)
    assert m.out_size == 64 and m.output_shape == (None, 64, 64, 3) and m.input_shape == (None, 32, 32, 3)
    old = load_manifest(os.path.join(models_dir, "old"))
    assert not old.aligned and old.out_size == 32 and old.input_size is None
    with open(os.path.join(models_dir, "old", "manifest.json")) as fh:
        assert not {"align_template", "input_size", "output_size"} & set(json.load(fh))  # old layout kept
    for change, message in (({"output_size": None}, "input_size and output_size go together"),
                            ({"align_template": {"size": 160, "eye_distance": 3.0, "eye_line": 0.4}}, "eye_distance"),
                            ({"align_template": [160, 0.3, 0.4]}, "align_template must be"),
                            ({"output_size": 48, "output_shape": [None, 48, 48, 3]}, "graph output shape")):
        bad = str(tmp_path / "bad")
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(os.path.join(models_dir, "aligned"), bad)
        path = os.path.join(bad, "manifest.json")
        with open(path) as fh:
            data = json.load(fh)
        data.update(change)
        data = {k: v for k, v in data.items() if v is not None}
        with open(path, "w") as fh:
            json.dump(data, fh)
        with pytest.raises(ManifestError, match=message):
            load_manifest(bad)


def test_one_euro_filter_smooths_a_still_face_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    base = rng.uniform(100, 200, (5, 2))
    f = OneEuroPoints()
    still = [f(base + rng.normal(0, 1.0, base.shape), 50.0) for _ in range(60)]
    raw_jitter = 1.0 * np.sqrt(2)  # frame-to-frame difference of independent noise, per coordinate
    smooth_jitter = np.std(np.diff(np.array(still[20:]), axis=0))
    assert smooth_jitter < 0.5 * raw_jitter
    f.reset()
    moving = [f(base + [4.0 * t, 0.0], 50.0) for t in range(30)]  # 4 px a frame = 2.4 eye distances a second
    assert abs(moving[-1][0, 0] - (base[0, 0] + 4.0 * 29)) < 4.0 * 3  # lags by under three frames' motion


def test_pipeline_smooths_landmarks_per_track(registry):
    """A still synthetic face under sensor noise: the smoothed alignment shakes less than the raw one."""
    pose = pose_sequence(1, seed=5)[0]
    clean = render_face(7, pose, (256, 256)).astype(np.int16)
    rng = np.random.default_rng(1)
    noisy = [np.clip(clean + rng.normal(0, 6, clean.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    pipeline = SwapPipeline(registry.get("aligned"), PipelineConfig())
    settings = StreamSettings.resolve(pipeline.config, None)

    def eye_centres(tracker):
        out = []
        for i, image in enumerate(noisy):
            msg = swap_pb2.Frame(index=i, encoding=swap_pb2.PNG, data=cv2.imencode(".png", image)[1].tobytes())
            job = pipeline.prepare(msg, tracker, 0.0, settings)
            assert job.error is None and len(job.alignments) == 1 and job.align_ms > 0
            job.future.result()
            al = job.alignments[0]
            out.append(al.landmarks[:4].mean(0) / eye_distance(al.landmarks))
        return np.array(out)

    smooth = eye_centres(pipeline.new_tracker(settings))
    raw_tracker = pipeline.new_tracker(settings)
    raw_tracker.landmark_filter = None
    raw = eye_centres(raw_tracker)
    assert np.abs(np.diff(smooth[4:], axis=0)).mean() < 0.6 * np.abs(np.diff(raw[4:], axis=0)).mean()


def test_aligned_stream_changes_the_face_only_and_reports_align_time(models_dir, frames):
    with run_server(models_dir, 0, device="cpu") as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        listed = {m.name: m for m in stub.ListModels(swap_pb2.ListModelsRequest(), timeout=10).models}
        replies = list(stub.StreamSwap(_msgs(frames, "aligned"), timeout=60))
        old = list(stub.StreamSwap(_msgs(frames[:2], "old"), timeout=60))
        channel.close()
    assert listed["aligned"].aligned and (listed["aligned"].input_size, listed["aligned"].output_size) == (32, 64)
    assert not listed["old"].aligned and listed["old"].output_size == 32
    assert [r.index for r in replies] == list(range(len(frames))) and not any(r.HasField("error") for r in replies)
    assert all(len(r.faces) == 1 for r in old)  # an old model folder keeps being served (Haar squares)
    swapped = [r for r in replies if r.faces]
    assert len(swapped) >= len(frames) - 1
    assert all(r.timings.align_ms > 0 and r.timings.detect_ms > 0 for r in swapped)
    aligner_template = AlignTemplate()
    from swapstream.faces.align import Aligner

    aligner = Aligner(aligner_template)
    for image, reply in zip(frames, replies):
        if not reply.faces:
            continue
        diff = np.abs(_png(reply.data).astype(int) - image).max(2)
        f = reply.faces[0]
        al = aligner.align(image, _box(f))
        # Under the template's inner face (the eyes' and nose's surroundings) the negative shows...
        core = np.zeros((128, 128), np.float32)
        cv2.circle(core, (64, int(128 * aligner_template.eye_line) + 10), 18, 1.0, -1)
        inner = paste_aligned(np.zeros(image.shape[:2], np.uint8), np.full((128, 128), 255, np.uint8),
                              rescale(al, 128), core) > 128
        assert diff[inner].mean() > 40, diff[inner].mean()
        # ...and outside the crop square's footprint (grown a little for the smoothing) nothing changed.
        square = paste_aligned(np.zeros(image.shape[:2], np.uint8), np.full((128, 128), 255, np.uint8),
                               rescale(al, 128)) > 0
        square = cv2.dilate(square.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert diff[~square].max() == 0


@pytest.mark.parametrize("model,blend", [("aligned", swap_pb2.BLEND_ALPHA), ("aligned", swap_pb2.BLEND_SEAMLESS),
                                         ("old", swap_pb2.BLEND_ALPHA)])
def test_region_replies_rebuild_the_whole_reply_exactly(models_dir, frames, model, blend):
    """A reply_region stream sends only the rectangle the swap (and the mark) changed; pasted into the
    frame sent it gives the whole-frame reply bit for bit (PNG: lossless), and a frame without a face
    comes back as an empty region."""
    from swapstream.clients.stream import reply_image

    images = [*frames[:4], np.full_like(frames[0], 128)]  # the last: no face
    marks = []

    def marker_for(_):
        def mark(frame, boxes):  # as the watermark: it changes every pixel of each face box
            for b in boxes:
                frame[max(b.y, 0):b.y + b.h, max(b.x, 0):b.x + b.w] ^= 1
            marks.append(len(boxes))
            return frame
        return mark

    with run_server(models_dir, 0, device="cpu", markers=marker_for) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        whole = list(stub.StreamSwap(_msgs(images, model, swap_pb2.SwapOptions(blend=blend)), timeout=60))
        parts = list(stub.StreamSwap(_msgs(images, model, swap_pb2.SwapOptions(blend=blend, reply_region=True)),
                                     timeout=60))
        channel.close()
    assert not any(r.HasField("error") for r in whole + parts) and all(r.HasField("region") for r in parts)
    assert not any(r.HasField("region") for r in whole)
    for image, w, p in zip(images, whole, parts):
        full = _png(w.data)
        assert np.array_equal(reply_image(p, image), full)
        r = p.region
        if not w.faces:
            assert (r.width, r.height, len(p.data)) == (0, 0, 0) and np.array_equal(full, image)
            continue
        assert r.x % 16 == 0 and r.y % 16 == 0 and 0 < r.width * r.height < image.shape[0] * image.shape[1]
        assert len(p.data) < len(w.data)
        changed = np.nonzero(np.abs(full.astype(int) - image).max(2))
        assert len(changed[0]) and changed[0].min() >= r.y and changed[0].max() < r.y + r.height
        assert changed[1].min() >= r.x and changed[1].max() < r.x + r.width
    assert sum(1 for w in whole if w.faces) >= 3


def _box(f):
    from swapstream.faces.detect import Box

    return Box(f.x, f.y, f.width, f.height)


def test_keep_mouth_keeps_the_source_mouth(registry, frames):
    pipeline = SwapPipeline(registry.get("aligned"), PipelineConfig())
    out = {}
    for keep in (False, True):
        settings = StreamSettings.resolve(pipeline.config, swap_pb2.SwapOptions(keep_mouth=keep))
        tracker = pipeline.new_tracker(settings)
        msg = swap_pb2.Frame(index=0, encoding=swap_pb2.PNG, data=cv2.imencode(".png", frames[0])[1].tobytes())
        job = pipeline.prepare(msg, tracker, 0.0, settings)
        result = pipeline.finish(job, settings)
        assert result.error is None
        out[keep] = (_png(result.reply.data), job.alignments[0])
    al = rescale(out[True][1], 64)
    mouth = mouth_mask(AlignTemplate(), 64)
    core = paste_aligned(np.zeros(frames[0].shape[:2], np.float32), np.ones((64, 64), np.float32), al,
                         (mouth > 0.99).astype(np.float32)) > 0.99
    assert core.sum() > 50
    kept = np.abs(out[True][0].astype(int) - frames[0]).max(2)
    swapped = np.abs(out[False][0].astype(int) - frames[0]).max(2)
    assert kept[core].mean() < 3 and swapped[core].mean() > 40
    # elsewhere in the face the two agree: only the mouth differs
    eyes = paste_aligned(np.zeros(frames[0].shape[:2], np.float32), np.ones((64, 64), np.float32), al,
                         np.pad(np.ones((8, 20), np.float32), ((20, 36), (22, 22)))) > 0.99
    assert np.abs(out[True][0].astype(int) - out[False][0])[eyes].max() <= 1


def test_marker_and_seamless_on_the_aligned_path(models_dir, frames):
    seen = []

    def marker_for(model):
        def mark(frame, boxes):
            seen.append(len(boxes))
            return frame
        return mark

    with run_server(models_dir, 0, device="cpu", markers=marker_for) as port:
        seen.clear()  # the server may have marked its own warm-up frame while starting
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = swap_pb2_grpc.FaceSwapStub(channel)
        opts = swap_pb2.SwapOptions(blend=swap_pb2.BLEND_SEAMLESS, reply_encoding=swap_pb2.PNG)
        reply = stub.SwapImage(swap_pb2.Frame(index=0, encoding=swap_pb2.JPEG, data=jpeg(frames[1]), model="aligned",
                                              options=opts), timeout=20)
        channel.close()
    assert not reply.HasField("error") and len(reply.faces) == 1 and seen == [1]
    assert np.abs(_png(reply.data).astype(int) - frames[1]).max(2).mean() > 1


def test_stream_cli_keep_mouth_flag(models_dir, frames, tmp_path):
    """`swapstream stream --keep-mouth` sends the option: the written video keeps the source's mouth."""
    from swapstream.clients import stream
    from swapstream.faces.align import Aligner
    from swapstream.faces.video import VideoReader, VideoWriter

    src = str(tmp_path / "in.mp4")
    with VideoWriter(src, 25, (256, 256)) as w:
        for image in frames[:3]:
            w.write(image)
    with VideoReader(src) as r:
        decoded = list(r)
    outs = {}
    with run_server(models_dir, 0, device="cpu") as port:
        for flag in ([], ["--keep-mouth"]):
            out = str(tmp_path / f"out{len(flag)}.mp4")
            rc = stream.main([src, "-o", out, "--model", "aligned", "--server", f"127.0.0.1:{port}",
                              "--no-progress", "--encoding", "png", "--crf", "12", *flag])
            assert rc == 0
            with VideoReader(out) as r:
                outs[bool(flag)] = list(r)
    aligner = Aligner(AlignTemplate())
    from swapstream.faces.detect import HaarDetector

    box = HaarDetector().detect(decoded[1])[0]
    al = rescale(aligner.align(decoded[1], box), 64)
    mouth = paste_aligned(np.zeros((256, 256), np.float32), np.ones((64, 64), np.float32), al,
                          (mouth_mask(AlignTemplate(), 64) > 0.99).astype(np.float32)) > 0.99
    kept = np.abs(outs[True][1].astype(int) - decoded[1]).max(2)[mouth].mean()
    swapped = np.abs(outs[False][1].astype(int) - decoded[1]).max(2)[mouth].mean()
    assert kept < 12 and swapped > 40, (kept, swapped)


def test_colour_match_equals_reinhard_inside_the_face_region():
    """The server's masked-statistics colour transfer gives what faces/color.py gives on the same
    region, with the output face at twice the input crop's side."""
    from swapstream.faces.color import reinhard_transfer
    from swapstream.faces.regions import face_mask
    from swapstream.server.pipeline import ColourMatch

    t = AlignTemplate()
    rng = np.random.default_rng(3)
    source = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 2)
    face = np.clip(cv2.resize(source, (128, 128)).astype(int) * 0.6 + [40, 10, -20], 0, 255).astype(np.uint8)
    got = ColourMatch(t, 64, 128)(face, source).astype(int)
    want = reinhard_transfer(face, cv2.resize(source, (128, 128)), face_mask(t, 128)).astype(int)
    assert np.abs(got - want).mean() < 1.5
    region = face_mask(t, 128) > 0.5
    src_mean = source[face_mask(t, 64) > 0.5].mean(0)
    assert np.abs(got[region].mean(0) - src_mean).max() < 2.0  # the face region's colour is the source's
    assert np.abs(face[region].mean(0) - src_mean).max() > 10


def test_tracker_follows_confirmed_faces_by_their_landmarks(registry):
    """Between full detections an aligned stream looks for each confirmed face where its landmarks
    were (no Haar search); the boxes stay on the face as it moves."""
    from swapstream.faces.detect import HaarDetector

    images = face_frames(20, size=256, seed=4)
    pipeline = SwapPipeline(registry.get("aligned"), PipelineConfig(redetect_every=5))
    settings = StreamSettings.resolve(pipeline.config, None)
    tracker = pipeline.new_tracker(settings)
    haar = HaarDetector()
    errors = []
    for i, image in enumerate(images):
        msg = swap_pb2.Frame(index=i, encoding=swap_pb2.PNG, data=cv2.imencode(".png", image)[1].tobytes())
        job = pipeline.prepare(msg, tracker, 0.0, settings)
        job.future.result()
        assert len(job.boxes) == 1, i
        truth = haar.detect(image)[0]
        b = job.boxes[0]
        errors.append(np.hypot(b.x + b.w / 2 - truth.x - truth.w / 2, b.y + b.h / 2 - truth.y - truth.h / 2) / truth.w)
    assert tracker.full_detections == 4 and tracker.followed >= 12  # frames 0, 5, 10, 15 searched whole
    assert max(errors) < 0.1, max(errors)


def test_an_unconfirmed_track_is_not_followed():
    from swapstream.faces.detect import Box
    from swapstream.server.tracking import FaceTracker

    class Scripted:
        """Detector stand-in returning a fixed list of boxes per call (a real HaarDetector's interface)."""

        def __init__(self, script):
            self.script = list(script)

        def detect(self, image, roi=None):
            return self.script.pop(0) if self.script else []

    face, ghost = Box(100, 100, 80, 80), Box(10, 10, 60, 60)
    full = Scripted([[face, ghost], [face]])
    roi = Scripted([[face], [face], [face], [face]])
    tracker = FaceTracker(full, roi, redetect_every=5, smoothing=0.0, hold=0)
    image = np.zeros((300, 300, 3), np.uint8)
    pts = np.array([[150, 130], [130, 130], [110, 130], [90, 130], [120, 160]], np.float64)  # ~eyes of `face`
    for frame in range(3):
        faces = tracker.update_faces(image)
        for f in faces:
            tracker.follow_landmarks(f.track_id, pts if f.box == face else pts - 100)
    # frame 0: full detection (face + ghost, both new); frame 1: the ghost is unconfirmed, so the
    # region is searched (ghost not found, dropped: hold 0); frame 2: the face is confirmed: followed.
    assert tracker.full_detections == 1 and tracker.roi_detections == 1 and tracker.followed == 1
    assert [f.box for f in faces] == [face]


def test_frame_size_change_restarts_tracks_and_their_filters(registry):
    """A stream whose frames change size drops its tracks (and their landmark filters): the faces of
    the new size are aligned from their own landmarks, not smoothed towards the old frame's."""
    pipeline = SwapPipeline(registry.get("aligned"), PipelineConfig())
    settings = StreamSettings.resolve(pipeline.config, None)
    tracker = pipeline.new_tracker(settings)
    small, large = face_frames(3, size=256, seed=6), face_frames(3, size=320, seed=6)
    for i, image in enumerate(small + large):
        msg = swap_pb2.Frame(index=i, encoding=swap_pb2.PNG, data=cv2.imencode(".png", image)[1].tobytes())
        job = pipeline.prepare(msg, tracker, 0.0, settings)
        assert job.error is None and len(job.alignments) == 1, i
        job.future.result()
        if i == 3:  # first frame of the new size: a fresh track, unsmoothed points
            raw = pipeline._aligner.landmarks(image, job.boxes[0])
            np.testing.assert_allclose(job.alignments[0].landmarks, raw, atol=1e-3)
