"""The shared face library: crops and their inverse, masks, colour transfer, blending, video I/O."""
import os

import cv2
import numpy as np
import pytest

from swapstream.faces.blend import alpha_blend, seamless_blend
from swapstream.faces.color import reinhard_transfer
from swapstream.faces.crop import crop_face, paste_back, square_box
from swapstream.faces.detect import Box, HaarDetector, cascade_path
from swapstream.faces.errors import VideoError
from swapstream.faces.mask import ellipse_mask
from swapstream.faces.video import VideoReader, VideoWriter


@pytest.fixture
def frame():
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def test_square_box_keeps_centre_and_grows_by_margin():
    sq = square_box(Box(40, 30, 20, 30), 0.25)
    assert sq.w == sq.h == 45
    assert abs((sq.x + sq.w / 2) - 50) <= 0.5 and abs((sq.y + sq.h / 2) - 45) <= 0.5


def test_crop_then_paste_back_is_exact_without_resize(frame):
    box = Box(50, 30, 40, 40)
    side = square_box(box, 0.25).w
    crop, t = crop_face(frame, box, side, 0.25)
    assert crop.shape == (side, side, 3)
    np.testing.assert_array_equal(crop, frame[t.box.y:t.box.y + side, t.box.x:t.box.x + side])
    np.testing.assert_array_equal(paste_back(frame, crop, t), frame)


def test_paste_back_touches_only_the_crop_square(frame):
    box = Box(60, 40, 30, 30)
    crop, t = crop_face(frame, box, 64, 0.2)
    out = paste_back(frame, np.zeros_like(crop), t)
    inside = np.zeros(frame.shape[:2], bool)
    inside[t.box.y:t.box.y + t.box.h, t.box.x:t.box.x + t.box.w] = True
    assert (out[inside] == 0).all()
    np.testing.assert_array_equal(out[~inside], frame[~inside])


def test_crop_past_the_edge_pads_and_pastes_back_inside_only(frame):
    box = Box(-10, -5, 40, 40)
    crop, t = crop_face(frame, box, 32, 0.3)
    assert crop.shape == (32, 32, 3)
    out = paste_back(frame, crop, t, ellipse_mask(32))
    assert out.shape == frame.shape
    far = out[80:, 100:]
    np.testing.assert_array_equal(far, frame[80:, 100:])


def test_mask_is_feathered_ellipse():
    m = ellipse_mask(64)
    assert m.dtype == np.float32 and m.shape == (64, 64)
    assert m[33, 32] > 0.99 and m[0, 0] < 0.01
    assert ((m > 0.05) & (m < 0.95)).sum() > 100  # a soft edge, not a hard one


def test_alpha_blend_extremes(frame):
    other = 255 - frame
    np.testing.assert_array_equal(alpha_blend(frame, other, np.zeros(frame.shape[:2], np.float32)), frame)
    np.testing.assert_array_equal(alpha_blend(frame, other, np.ones(frame.shape[:2], np.float32)), other)


def test_seamless_blend_changes_only_near_the_patch(frame):
    patch = np.full((40, 40, 3), 200, np.uint8)
    out = seamless_blend(frame, patch, ellipse_mask(40), (60, 40))
    assert out.shape == frame.shape
    np.testing.assert_array_equal(out[:30], frame[:30])
    assert not np.array_equal(out[50:70, 70:90], frame[50:70, 70:90])


def test_reinhard_transfer_matches_target_statistics():
    rng = np.random.default_rng(1)
    src = rng.integers(60, 120, (48, 48, 3), dtype=np.uint8)
    tgt = rng.integers(140, 230, (48, 48, 3), dtype=np.uint8)
    out = reinhard_transfer(src, tgt)
    lab_out = cv2.cvtColor(out, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)
    lab_tgt = cv2.cvtColor(tgt, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)
    np.testing.assert_allclose(lab_out.mean(0), lab_tgt.mean(0), atol=3.0)


def test_video_round_trip_keeps_count_rate_and_size(tmp_path):
    path = str(tmp_path / "clip.mp4")
    frames = [np.full((48, 64, 3), i * 10, np.uint8) for i in range(12)]
    with VideoWriter(path, 12.5, (64, 48)) as w:
        for f in frames:
            w.write(f)
    with VideoReader(path) as r:
        back = list(r)
        assert (r.width, r.height) == (64, 48) and abs(r.fps - 12.5) < 1e-3 and r.frame_count == 12
    assert len(back) == 12
    assert abs(float(back[5].mean()) - 50) < 6  # mp4v is lossy


def test_video_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(VideoError):
        with VideoWriter(str(path), 25, (32, 32)) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            w.write(np.zeros((16, 16, 3), np.uint8))  # wrong size
    assert os.listdir(tmp_path) == []


def test_video_reader_errors(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        VideoReader(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError):
        VideoReader(str(junk))


def test_detector_loads_cascade_and_finds_nothing_in_noise(frame):
    assert os.path.isfile(cascade_path())
    assert HaarDetector().detect(np.zeros((100, 100, 3), np.uint8)) == []


def test_mask_is_zero_on_the_border_whatever_the_feather():
    for feather in (0.05, 0.15, 0.3):
        m = ellipse_mask(48, feather=feather, ry=0.48)
        for edge in (m[0], m[-1], m[:, 0], m[:, -1]):
            assert edge.max() == 0
