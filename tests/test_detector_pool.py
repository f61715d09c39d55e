"""Haar cascades kept between streams (server/detector_pool.py): made once, reused, bounded."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from swapstream.server.detector_pool import DetectorPool, default_sets
from swapstream.server.pipeline import PipelineConfig, StreamControl, StreamSettings, SwapPipeline
from swapstream.server.registry import ModelRegistry
from swapstream.v1 import swap_pb2
from tests.server_fixtures import face_frames, write_negative_model


def _pool(sets: int) -> DetectorPool:
    return DetectorPool(PipelineConfig(), sets=sets)


def test_the_pool_makes_at_most_sets_and_lends_them_per_search():
    pool = _pool(sets=2)
    frame = face_frames(1, size=192)[0]
    lent = [pool.lend() for _ in range(3)]  # three streams: no set is made for lending alone
    assert pool.made == 0
    assert all(s.full.detect(frame) for s in lent)  # one after the other: one set serves them all
    assert pool.made == 1 and pool.kept == 1
    # Two searches at once get two sets; a third waits for one of them instead of making a third.
    with pool.borrow() as a, pool.borrow() as b:
        assert a is not b and pool.made == 2 and pool.kept == 0
        waiter = threading.Thread(target=lambda: lent[2].roi.detect(frame))
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive() and pool.made == 2
    waiter.join(5)
    assert not waiter.is_alive() and pool.made == 2 and pool.kept == 2
    with pool.borrow() as s:
        # The scheduled whole-frame search runs on the full search's cascade, with its own step.
        assert s.rescan._cascade is s.full._cascade and s.rescan.scale_factor != s.full.scale_factor
        assert s.roi._cascade is not s.full._cascade


def test_default_sets_is_one_per_core_at_most_one_per_stream():
    cores = len(os.sched_getaffinity(0))
    assert default_sets(1) == 1 and default_sets(64) == min(64, cores) and default_sets(0) == 1


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_negative_model(str(root / "neg"), size=32)
    registry = ModelRegistry.load(str(root), device="cpu")
    yield SwapPipeline(registry.get("neg"), PipelineConfig(), detectors=_pool(sets=1))
    registry.close()


def test_streams_and_single_images_reuse_the_kept_cascades(pipeline):
    frames = [swap_pb2.Frame(index=i, encoding=swap_pb2.PNG, data=cv2.imencode(".png", f)[1].tobytes())
              for i, f in enumerate(face_frames(3, size=192))]
    settings = StreamSettings.resolve(pipeline.config, None)
    for _ in range(3):
        results = list(pipeline.stream_results(iter(frames), settings, StreamControl()))
        assert len(results) == 3 and all(r.error is None and r.reply.faces for r in results)
        assert pipeline.swap_one(frames[0], settings).reply.faces
    assert pipeline.detectors.made == 1 and pipeline.detectors.kept == 1


_GROWTH = """
import ctypes, sys
import numpy as np
from swapstream.server.detector_pool import DetectorPool
from swapstream.server.pipeline import PipelineConfig


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2


def live_mb():
    m = libc.mallinfo2()
    return (m.uordblks + m.hblkhd) / 2**20


config = PipelineConfig()
pool = DetectorPool(config, sets=1)
sized = sys.argv[1] == "sized"
if sized:
    pool.fill()
rng = np.random.default_rng(0)
shapes = [(int(rng.integers(16, 481)), int(rng.integers(16, 481))) for _ in range(60)] + [(24, 480), (480, 24)]
with pool.borrow() as s:
    s.full.detect(np.zeros((config.detect_max_side,) * 2, np.uint8))  # what sizing on a square gives
    s.roi.detect(np.zeros((config.roi_max_side,) * 2, np.uint8))
    before = live_mb()
    for h, w in shapes:
        s.full.detect(np.zeros((h, w), np.uint8))
        s.roi.detect(np.zeros((h, w), np.uint8))
    print(live_mb() - before)
"""


def test_a_sized_set_does_not_grow_whatever_shape_the_frames_have():
    # In a child: nothing else in the process allocates while its heap is measured.
    grown = {}
    for mode in ("sized", "square"):
        out = subprocess.run([sys.executable, "-c", _GROWTH, mode], capture_output=True, text=True, timeout=120)
        if out.returncode != 0 and "mallinfo2" in out.stderr:
            pytest.skip("needs glibc's mallinfo2")
        assert out.returncode == 0, out.stderr[-2000:]
        grown[mode] = float(out.stdout.split()[-1])
    # Sized at warm-up: frames of any shape fit; sized on squares only, the set grew by megabytes.
    assert grown["sized"] < 0.2 and grown["square"] > 1.0, grown


def test_a_set_that_fails_to_load_is_not_counted(monkeypatch):
    pool = _pool(sets=1)
    real_make = pool.make
    monkeypatch.setattr(pool, "make", lambda: (_ for _ in ()).throw(RuntimeError("cascade file gone")))
    with pytest.raises(RuntimeError, match="cascade file gone"):
        pool.lend().full.detect(np.zeros((64, 64), np.uint8))
    assert pool.made == 0  # so the next search makes one instead of waiting for ever
    monkeypatch.setattr(pool, "make", real_make)
    assert pool.lend().full.detect(np.zeros((64, 64), np.uint8)) == [] and pool.made == 1
