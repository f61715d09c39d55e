"""Haar cascades kept between streams (server/detector_pool.py): made once, reused, bounded."""
from __future__ import annotations

import time

import cv2
import pytest

from swapstream.server.detector_pool import DetectorPool
from swapstream.server.pipeline import PipelineConfig, StreamControl, StreamSettings, SwapPipeline
from swapstream.server.registry import ModelRegistry
from swapstream.v1 import swap_pb2
from tests.server_fixtures import face_frames, write_negative_model


def _pool(keep: int) -> DetectorPool:
    return DetectorPool.for_config(PipelineConfig(), keep=keep)


def test_the_pool_keeps_at_most_keep_sets_and_reuses_them():
    pool = _pool(keep=2)
    assert pool.fill() == 2 and pool.made == 2
    taken = [pool.take() for _ in range(3)]  # one more than it keeps: made for the caller
    assert pool.made == 3 and pool.kept == 0
    for s in taken:
        pool.give(s)
    assert pool.kept == 2  # the third was freed
    again = pool.take()
    assert pool.made == 3 and again in taken
    # The scheduled whole-frame search runs on the full search's cascade, with its own step.
    assert again.rescan._cascade is again.full._cascade and again.rescan.scale_factor != again.full.scale_factor
    assert again.roi._cascade is not again.full._cascade


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_negative_model(str(root / "neg"), size=32)
    registry = ModelRegistry.load(str(root), device="cpu")
    yield SwapPipeline(registry.get("neg"), PipelineConfig(), detectors=_pool(keep=1))
    registry.close()


def test_streams_and_single_images_reuse_the_kept_cascades(pipeline):
    frames = [swap_pb2.Frame(index=i, encoding=swap_pb2.PNG, data=cv2.imencode(".png", f)[1].tobytes())
              for i, f in enumerate(face_frames(3, size=192))]
    settings = StreamSettings.resolve(pipeline.config, None)
    for _ in range(3):
        results = list(pipeline.stream_results(iter(frames), settings, StreamControl()))
        assert len(results) == 3 and all(r.error is None and r.reply.faces for r in results)
        deadline = time.monotonic() + 5  # the stream's preparer thread gives its set back as it ends
        while pipeline.detectors.kept < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipeline.swap_one(frames[0], settings).reply.faces
    assert pipeline.detectors.made == 1 and pipeline.detectors.kept == 1
