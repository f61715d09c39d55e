"""faces/regions.py: face, eyes-and-mouth and blend masks in aligned template space."""
import numpy as np
import pytest

from swapstream.faces import regions
from swapstream.faces.align import AlignTemplate


def _at(mask, template, points):
    """Mask values at template points (continuous coordinates) scaled to the mask's side."""
    scale = mask.shape[0] / template.size
    return [float(mask[int(y * scale), int(x * scale)]) for x, y in points]


def test_masks_sit_on_the_template_features():
    t = AlignTemplate(size=160)
    pts = t.points()
    eyes = [(pts[0] + pts[1]) / 2, (pts[2] + pts[3]) / 2]
    nose = pts[4]
    d = t.eye_distance * t.size
    mouth = nose + np.array([0.0, 0.45 * d])
    for size in (64, 128, 160):
        face = regions.face_mask(t, size)
        expr = regions.expression_mask(t, size)
        assert face.shape == expr.shape == (size, size) and face.dtype == np.float32
        assert 0.0 <= face.min() and face.max() <= 1.0
        assert min(_at(face, t, [*eyes, nose, mouth])) == 1.0
        assert min(_at(expr, t, [*eyes, mouth])) == 1.0
        bridge = (eyes[0] + eyes[1]) / 2 + np.array([0.0, 0.4 * d])  # the nose between the eyes and the mouth
        cheeks = [nose + np.array([0.8 * d, 0.0]), nose - np.array([0.8 * d, 0.0])]
        assert max(_at(expr, t, [bridge, *cheeks])) < 0.05  # no extra weight there
        assert min(_at(face, t, [bridge, *cheeks])) == 1.0
        # Corners are background; the face covers a plausible share of the crop.
        assert face[0, 0] == face[-1, -1] == 0.0
        assert 0.25 < face.mean() < 0.6
        assert expr.mean() < 0.5 * face.mean()
        assert np.all(expr <= face + 1e-6)  # eyes and mouth lie inside the face region


def test_layout_scales_with_the_mask_side():
    t = AlignTemplate(size=160)
    big = regions.face_mask(t, 128)
    small = regions.face_mask(t, 64)
    down = big.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(down - small).mean() < 0.01
    # A tighter template moves the features: the face fills more of the crop.
    loose = AlignTemplate(size=160, eye_distance=0.25, eye_line=0.42)
    tight = AlignTemplate(size=160, eye_distance=0.33, eye_line=0.40)
    assert regions.face_mask(tight, 64).mean() > regions.face_mask(loose, 64).mean() + 0.2


def test_blend_mask_stays_inside_the_face_and_fades_to_zero_at_the_border():
    t = AlignTemplate(size=160)
    face = regions.face_mask(t, 128)
    blend = regions.blend_mask(t, 128, erode=0.02, feather=0.06)
    assert blend.shape == (128, 128) and blend.dtype == np.float32
    assert blend[0].max() == blend[-1].max() == blend[:, 0].max() == blend[:, -1].max() == 0.0
    # Wherever the paste shows at least a little, the face region is there.
    assert np.all(face[blend > 0.02] > 0.5)
    assert blend.max() > 0.99 and blend.sum() < face.sum()
    more = regions.blend_mask(t, 128, erode=0.06, feather=0.06)
    assert more.sum() < blend.sum()
    hard = regions.blend_mask(t, 128, erode=0.02, feather=0.0)
    assert ((hard > 0.02) & (hard < 0.98)).mean() < ((blend > 0.02) & (blend < 0.98)).mean()


def test_loss_weights():
    t = AlignTemplate(size=160)
    w = regions.loss_weights(t, 64, expression_weight=3.0)
    assert w.shape == (64, 64, 1)
    assert w[0, 0, 0] == 0.0 and w.max() == pytest.approx(3.0)
    floor = regions.loss_weights(t, 64, expression_weight=1.0, background_weight=0.1)
    assert floor[0, 0, 0] == pytest.approx(0.1) and floor.max() == pytest.approx(1.0)


def test_masks_are_cached_read_only_and_inputs_checked():
    t = AlignTemplate(size=160)
    m = regions.face_mask(t, 64)
    assert regions.face_mask(t, 64) is m
    with pytest.raises(ValueError):
        m[0, 0] = 1.0
    with pytest.raises(ValueError):
        regions.face_mask(t, 2)
    with pytest.raises(ValueError):
        regions.blend_mask(t, 64, erode=0.6)
    with pytest.raises(TypeError):
        regions.face_mask((160, 0.27, 0.42), 64)
