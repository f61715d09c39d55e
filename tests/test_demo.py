"""The demo's quality figures: the OpenCV SSIM is TensorFlow's, and the synthetic score ranks a
perfect swap above the unswapped source on real synth renders."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from swapstream.clients import demo
from swapstream.faces.synth import pose_sequence, render_face
from swapstream.faces.video import VideoWriter

ID_A, ID_B = 1, 4  # the demo's own pair
SIZE = (256, 256)


def test_face_ssim_is_tensorflows_ssim_under_the_same_weights():
    tf = pytest.importorskip("tensorflow")
    from swapstream.trainer.losses import ssim

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    y = np.clip(x.astype(np.int16) + rng.integers(-30, 31, x.shape), 0, 255).astype(np.uint8)
    w = rng.random((64, 64)).astype(np.float32)
    want = float(ssim(tf.constant(x[None] / 255.0, tf.float32), tf.constant(y[None] / 255.0, tf.float32),
                      w[:, :, None], window=11)[0])
    assert demo.face_ssim(x, y, w) == pytest.approx(want, abs=1e-4)
    assert demo.face_ssim(x, x, w) == pytest.approx(1.0, abs=1e-6)


def _write(path, frames):
    with VideoWriter(str(path), 25.0, SIZE) as writer:
        for f in frames:
            writer.write(f)
    return str(path)


def test_synthetic_quality_scores_the_ground_truth_above_the_source_copy(tmp_path):
    pytest.importorskip("dlib")
    poses = [dataclasses.replace(p, yaw=0.0, roll=0.0) for p in pose_sequence(4, seed=3)]
    source = _write(tmp_path / "a.mp4", [render_face(ID_A, p, SIZE) for p in poses])
    truth = _write(tmp_path / "t.mp4", [render_face(ID_B, p, SIZE) for p in poses])
    perfect = demo.synthetic_quality(source, truth, truth)
    copy = demo.synthetic_quality(source, source, truth)
    assert perfect["faces"] == perfect["frames"] == 4
    assert perfect["ssim_swap_vs_truth"] == pytest.approx(1.0, abs=1e-6)
    assert copy["ssim_swap_vs_truth"] == pytest.approx(perfect["ssim_source_copy_vs_truth"], abs=1e-6)
    assert perfect["ssim_source_copy_vs_truth"] < 0.97
    assert perfect["ssim_gain_over_copy"] > 0.03


def test_quality_lines_say_what_was_not_run():
    lines = demo.quality_lines({"judge": {"unavailable": "alignment needs dlib"}})
    assert lines == ["judge: not run (alignment needs dlib)"]
    lines = demo.quality_lines({"synthetic": {"ssim_swap_vs_truth": 0.9, "ssim_source_copy_vs_truth": 0.7,
                                              "ssim_gain_over_copy": 0.2, "faces": 10},
                                "judge": {"line": "judge: face found 100%"}})
    assert lines[0].startswith("synthetic: SSIM of the swapped face to the ground truth 0.900 (source copy 0.700")
    assert lines[1] == "judge: face found 100%"


def test_quality_lines_give_the_unmarked_swap_beside_the_marked_one():
    syn = {"ssim_swap_vs_truth": 0.81, "ssim_source_copy_vs_truth": 0.7, "ssim_gain_over_copy": 0.11, "faces": 10}
    lines = demo.quality_lines({"synthetic": syn, "synthetic_unmarked": dict(syn, ssim_swap_vs_truth=0.83),
                                "judge": {"line": "judge: ...; detail 0.49, unmarked 0.35 (ceiling 0.42)"}})
    assert "ground truth 0.810, unmarked 0.830 (source copy 0.700" in lines[0]
    assert lines[1].endswith("unmarked 0.35 (ceiling 0.42)")
