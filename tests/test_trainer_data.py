"""Trainer input pipeline: random warp / flip / jitter batches, face-set pairing checks."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from swapstream.faces.align import AlignTemplate  # noqa: E402
from swapstream.faces.errors import InputError  # noqa: E402
from swapstream.trainer.data import (  # noqa: E402
    AugmentConfig,
    load_face_pair,
    load_face_sets,
    make_dataset,
    preview_faces,
)
from tests.trainer_fixtures import make_pair, synthetic_faces, write_face_set  # noqa: E402

KEYS = ("warped_a", "target_a", "warped_b", "target_b")


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(3, 12, 32, seed=1), synthetic_faces(11, 12, 32, seed=2)


def _first(ds):
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_batches_are_float_faces_with_warped_inputs(faces):
    batch = _first(make_dataset(*faces, batch_size=4, augment=AugmentConfig(), seed=3))
    for key in KEYS:
        assert batch[key].shape == (4, 32, 32, 3) and batch[key].dtype == np.float32
        assert 0.0 <= batch[key].min() and batch[key].max() <= 1.0
    # The input is warped, the target is not: they differ, but only moderately.
    diff = np.abs(batch["warped_a"] - batch["target_a"]).mean()
    assert 0.005 < diff < 0.15
    # Targets are the identity's faces, not the other one's.
    assert np.abs(batch["target_a"].mean(axis=(0, 1, 2)) - faces[0].mean(axis=(0, 1, 2)) / 255).max() < 0.08


def test_augmentation_is_deterministic_per_seed(faces):
    one = _first(make_dataset(*faces, batch_size=4, augment=AugmentConfig(), seed=5))
    two = _first(make_dataset(*faces, batch_size=4, augment=AugmentConfig(), seed=5))
    other = _first(make_dataset(*faces, batch_size=4, augment=AugmentConfig(), seed=6))
    for key in KEYS:
        np.testing.assert_array_equal(one[key], two[key])
    assert not np.array_equal(one["warped_a"], other["warped_a"])


def test_no_augmentation_gives_the_faces_themselves(faces):
    off = AugmentConfig(rotation_deg=0, zoom=0, shift=0, warp=0, flip=False, color_jitter=0)
    batch = _first(make_dataset(faces[0][:1].repeat(4, 0), faces[1], batch_size=4, augment=off))
    expected = faces[0][0].astype(np.float32) / 255
    for i in range(4):
        np.testing.assert_allclose(batch["target_a"][i], expected, atol=1e-5)
        np.testing.assert_allclose(batch["warped_a"][i], expected, atol=1e-5)


def test_flip_mirrors_both_input_and_target(faces):
    flip_only = AugmentConfig(rotation_deg=0, zoom=0, shift=0, warp=0, flip=True, color_jitter=0)
    single = faces[0][:1].repeat(16, 0)
    batch = _first(make_dataset(single, faces[1], batch_size=16, augment=flip_only, seed=1))
    plain = single[0].astype(np.float32) / 255
    flipped = [np.allclose(t, plain[:, ::-1], atol=1e-5) for t in batch["target_a"]]
    same = [np.allclose(t, plain, atol=1e-5) for t in batch["target_a"]]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_inputs_are_the_targets_augmented_once_then_shrunk(faces):
    """A 2x network reads the face at half the side of the one it must paint: the SAME warped,
    flipped and jittered face, augmented at the target's side and then area-averaged."""
    big = tuple(np.stack([np.repeat(np.repeat(f, 2, 0), 2, 1) for f in side]) for side in faces)  # 64 px
    aug = AugmentConfig(warp=0.0)
    batch = _first(make_dataset(*big, batch_size=4, augment=aug, seed=2, input_size=32))
    assert batch["warped_a"].shape == (4, 32, 32, 3) and batch["target_a"].shape == (4, 64, 64, 3)
    shrunk = batch["target_a"].reshape(4, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(batch["warped_a"], shrunk, atol=1e-5)
    # With the random warp the input is bent, the target is not; they still show the same face.
    warped = _first(make_dataset(*big, batch_size=4, augment=AugmentConfig(), seed=2, input_size=32))
    diff = np.abs(warped["warped_a"] - warped["target_a"].reshape(4, 32, 2, 32, 2, 3).mean(axis=(2, 4))).mean()
    assert 0.003 < diff < 0.15
    with pytest.raises(InputError, match="input size"):
        make_dataset(*big, batch_size=4, augment=aug, input_size=128)


def test_face_pair_is_resized_and_checked(tmp_path):
    a, b = make_pair(tmp_path, count=6, size=40)
    pair = load_face_pair(a, b, 32)
    assert pair.faces_a.shape == (6, 32, 32, 3) and pair.margin == 0.0
    assert pair.template == AlignTemplate(size=40)
    assert pair.source_size_a == 40
    assert preview_faces(pair.faces_a, 4).shape == (4, 32, 32, 3)

    with pytest.raises(InputError, match="same faces"):
        load_face_pair(a, a, 32)
    tighter = write_face_set(tmp_path / "t.npz", synthetic_faces(5, 4, 40),
                             template=AlignTemplate(size=40, eye_distance=0.33))
    with pytest.raises(InputError, match="different templates"):
        load_face_pair(a, tighter, 32)
    unaligned = write_face_set(tmp_path / "u.npz", synthetic_faces(5, 4, 40), margin=0.3, aligned=False)
    with pytest.raises(InputError, match="landmark template"):
        load_face_pair(a, unaligned, 32)
    other_margin = write_face_set(tmp_path / "m.npz", synthetic_faces(6, 4, 40), margin=0.5, aligned=False)
    with pytest.raises(InputError, match="margin"):
        load_face_pair(unaligned, other_margin, 32)
    assert load_face_pair(unaligned, write_face_set(tmp_path / "u2.npz", synthetic_faces(6, 4, 40),
                                                    margin=0.3, aligned=False), 32).template is None
    sets, template = load_face_sets([a, b, tighter.replace("t.npz", "a.npz")], 16)
    assert [s.shape for s in sets] == [(6, 16, 16, 3)] * 3 and template == pair.template
    with pytest.raises(InputError, match="different templates"):
        load_face_sets([a, tighter], 16)
    empty = write_face_set(tmp_path / "empty.npz", np.zeros((0, 40, 40, 3), np.uint8))
    with pytest.raises(InputError, match="0 faces"):
        load_face_pair(a, empty, 32)
    with pytest.raises(InputError, match="does not exist"):
        load_face_pair(a, str(tmp_path / "missing.npz"), 32)
