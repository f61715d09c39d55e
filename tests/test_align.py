"""Landmark alignment (dlib 5-point on the Haar box, similarity to a template) on synthetic faces."""
import math

import cv2
import numpy as np
import pytest

from swapstream.faces import synth
from swapstream.faces.align import (
    MEAN_SHAPE,
    Aligner,
    Alignment,
    AlignTemplate,
    eye_distance,
    pass_through,
    paste_aligned,
    plausible,
    rescale,
    resize_crop,
    resize_interpolation,
    umeyama,
    warp_face,
    warp_to_frame,
)
from swapstream.faces.detect import Box, HaarDetector
from swapstream.faces.synth import identity_from_seed, pose_sequence, render_face

SIZE = (256, 256)


def truth_points(identity: int, pose, size=SIZE) -> np.ndarray:
    """Where the renderer put the five points, in dlib's order (the subject's left eye's outer and
    inner corner, the right eye's, the nose base): the ends of the lid curves and the point
    between the nostrils, through the same head model render_face uses."""
    ident = identity_from_seed(identity)
    head = synth._Head(ident, pose, size[0], size[1])
    pts = []
    for side, ends in ((1, (-1, 0)), (-1, (0, -1))):  # side +1 is image right, the subject's left
        upper, _, _ = synth._eye_curves(ident, pose, side)
        pts += [head.project(upper[k][None], -0.05)[0] for k in ends]
    nose = np.array([[0.0, ident.eye_y + ident.nose_length + 0.025]])
    pts.append(head.project(nose, 0.12)[0])
    return np.array(pts)


def _eye_distance(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[0:2].mean(0) - p[2:4].mean(0)))


@pytest.fixture(scope="module")
def aligner():
    return Aligner(AlignTemplate(size=128))


@pytest.fixture(scope="module")
def faces():
    """30 renders (10 identities, 3 poses each) with their Haar box and true points."""
    haar = HaarDetector()
    out = []
    for ident in range(1, 11):
        for pose in pose_sequence(60, seed=200 + ident)[::20]:
            frame = render_face(ident, pose, SIZE)
            boxes = haar.detect(frame)
            if boxes:
                out.append((ident, pose, frame, boxes[0], truth_points(ident, pose)))
    assert len(out) >= 27, f"Haar found only {len(out)} of 30 synthetic faces"
    return out


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = math.radians(20), 1.7, np.array([12.0, -30.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = umeyama(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-7)
    mirrored = src * np.array([-1.0, 1.0])
    assert np.linalg.det(umeyama(src, mirrored)[:, :2]) > 0  # never a reflection
    with pytest.raises(ValueError):
        umeyama(np.ones((5, 2)), src)
    with pytest.raises(ValueError):
        umeyama(src[:, :1], src[:, :1])


def test_template_places_the_eyes_as_asked():
    t = AlignTemplate(size=200, eye_distance=0.3, eye_line=0.4)
    p = t.points()
    assert _eye_distance(p) == pytest.approx(60.0, rel=1e-3)
    assert p[0:4, 1].mean() == pytest.approx(80.0, abs=0.01) and p[0:4, 0].mean() == pytest.approx(100.0)
    assert p[4, 1] > p[0:4, 1].max()  # the nose below the eyes
    assert MEAN_SHAPE[0, 0] > MEAN_SHAPE[1, 0] > 0 > MEAN_SHAPE[3, 0] > MEAN_SHAPE[2, 0]
    for bad in (dict(size=4), dict(eye_distance=0.0), dict(eye_line=1.0)):
        with pytest.raises(ValueError):
            AlignTemplate(**bad)


def test_landmarks_on_synthetic_faces(aligner, faces):
    signed, idents = [], []
    for ident, _, f, box, truth in faces:
        v = truth[0:2].mean(0) - truth[2:4].mean(0)
        c, s = v / np.linalg.norm(v)
        # Errors in the face's own frame (x along the eyes), in eye distances.
        signed.append((aligner.landmarks(f, box) - truth) @ np.array([[c, s], [-s, c]]).T / _eye_distance(truth))
        idents.append(ident)
    signed, idents = np.array(signed), np.array(idents)
    # dlib (trained on real faces) puts the outer eye corners ~6% of the eye distance inward of
    # where the cartoon's lid lines end and the nose base ~5% lower: a difference of definition,
    # which moves with each identity's eye shape but not from frame to frame. What shakes a crop
    # is the error from pose to pose of one face.
    assert np.linalg.norm(signed, axis=2).mean() < 0.07
    within = [np.linalg.norm(signed[idents == i] - signed[idents == i].mean(0), axis=2).mean()
              for i in np.unique(idents)]
    assert np.mean(within) < 0.02


def test_alignment_removes_roll_scale_and_shift(aligner, faces):
    rolls, eyes, dists = [], [], []
    for _, pose, f, box, truth in faces:
        al = aligner.align(f, box)
        assert isinstance(al, Alignment) and al.matrix.shape == (2, 3) and al.landmarks.shape == (5, 2)
        # dlib's own points land near the template (the fit's residual: face shape, not error).
        residual = np.abs(al.to_crop(al.landmarks) - (aligner.template.points() - 0.5)).max()
        assert residual < 0.15 * aligner.template.eye_distance * 128
        rolls.append(al.roll - pose.roll)
        crop_truth = al.to_crop(truth)
        eyes.append(crop_truth[:4].mean(0))
        dists.append(_eye_distance(crop_truth))
    assert np.abs(np.array(rolls)).mean() < 2.0  # degrees
    # Across identities, sizes, offsets and rolls (up to 10 degrees) the true eyes sit still in
    # the crop. The true eye distance is ~13% above the template's because the cartoon's eye
    # corners lie further out than dlib's (see above); what matters is that it is the same in
    # every crop.
    dists = np.array(dists)
    assert dists.std() / dists.mean() < 0.05
    assert np.array(eyes).std(0).max() < 0.03 * dists.mean()


def test_warp_face_area_averages_large_downscales():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = small.repeat(4, 0).repeat(4, 1)  # each pixel a constant 4x4 block
    # Crop pixel i looks at the centre of block i: frame index 4 i + 1.5.
    m = np.array([[0.25, 0, -0.375], [0, 0.25, -0.375]])
    crop = warp_face(big, Alignment(m, np.zeros((5, 2), np.float32), 32))
    assert np.abs(crop.astype(int) - small).max() <= 1


def test_paste_back_of_the_unchanged_crop_restores_the_frame(aligner, faces):
    _, _, frame, box, _ = faces[0]
    big = Aligner(AlignTemplate(size=224))  # about the face's own scale: the round trip loses little
    al = big.align(frame, box)
    crop = warp_face(frame, al)
    back = paste_aligned(frame, crop, al)
    inner = np.zeros((224, 224), np.float32)
    inner[20:-20, 20:-20] = 1.0
    diff = np.abs(back.astype(int) - frame).mean(2)
    foot = paste_aligned(np.zeros_like(frame), np.full((224, 224, 3), 255, np.uint8), al, inner)[..., 0] > 250
    assert diff[foot].mean() < 3.0
    masked = paste_aligned(frame, np.zeros_like(crop), al, np.zeros((224, 224), np.float32))
    assert np.array_equal(masked, frame)  # a zero mask changes nothing
    with pytest.raises(ValueError):
        paste_aligned(frame, crop[:10], al)


def test_landmarks_reject_a_box_outside_the_frame(aligner, faces):
    with pytest.raises(ValueError, match="outside"):
        aligner.landmarks(faces[0][2], Box(1000, 1000, 50, 50))


def test_warp_face_halves_a_2x_warp_by_area():
    """A shrinking warp is sampled at twice the side and area-halved: at a plain 2:1 scale that
    is exactly OpenCV's area resize (no bilinear blur on top)."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    m = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25]])  # crop index i <- frame centre of 2i, 2i+1
    crop = warp_face(frame, Alignment(m, np.zeros((5, 2), np.float32), 64))
    ref = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - ref)[2:-2, 2:-2].max() <= 1


def test_rescale_and_pass_through_keep_the_framing(aligner, faces):
    _, _, frame, box, _ = faces[0]
    al = aligner.align(frame, box)
    small = rescale(al, 64)
    # the same frame points land at the same place relative to the crop side
    pts = al.landmarks
    assert np.allclose((small.to_crop(pts) + 0.5) / 64, (al.to_crop(pts) + 0.5) / 128, atol=1e-9)
    assert small.size == 64 and rescale(small, 128).matrix == pytest.approx(al.matrix)
    # a perfect 2x network (64 px in, 128 px out) changes the frame only a little under the face,
    # and nothing outside the crop square's footprint
    out = pass_through(frame, small, 128)
    square = paste_aligned(np.zeros(frame.shape[:2], np.uint8), np.full((128, 128), 255, np.uint8), al) > 0
    diff = np.abs(out.astype(int) - frame).max(2)
    assert diff[~square].max() == 0 and diff[square].mean() < 8
    patch, alpha, x0, y0 = warp_to_frame(np.zeros((128, 128, 3), np.uint8), al, frame.shape)
    assert patch.shape[:2] == alpha.shape and alpha.max() == pytest.approx(1.0)
    far = Alignment(al.matrix - np.array([[0, 0, 5000.0], [0, 0, 0]]), al.landmarks, 128)  # crop far right
    assert warp_to_frame(np.zeros((128, 128, 3), np.uint8), far, frame.shape) is None


def test_plausible_landmarks(aligner, faces):
    _, _, frame, box, _ = faces[0]
    al = aligner.align(frame, box)
    assert plausible(al.landmarks, box, al.roll)
    assert not plausible(al.landmarks, Box(box.x, box.y, box.w * 4, box.h * 4), al.roll)  # eyes too close
    assert not plausible(al.landmarks, box, 60.0)
    assert eye_distance(al.landmarks) > 0


def test_resize_crop_interpolations():
    assert resize_interpolation(160, 128) == cv2.INTER_LANCZOS4
    assert resize_interpolation(160, 64) == cv2.INTER_AREA
    assert resize_interpolation(64, 128) == cv2.INTER_CUBIC
    img = np.zeros((16, 16, 3), np.uint8)
    assert resize_crop(img, 16) is img and resize_crop(img, 8).shape == (8, 8, 3)
