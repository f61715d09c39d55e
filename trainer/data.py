"""Training batches from two face sets: tf.data with random warp, flips and colour jitter.

Each element is a dict of float32 BGR images in 0..1:
    warped_a, warped_b   (batch, S_in, S_in, 3)    the networks' input
    target_a, target_b   (batch, S_out, S_out, 3)  the loss's target (S_out = S_in * upscale)
`target_*` is the face after a random similarity transform (rotation, zoom, shift), flip and
colour jitter; `warped_*` is the same image additionally bent by a smooth random displacement
field (the classic deepfakes "random warp": a coarse grid of control points moved at random and
interpolated). The autoencoders learn to undo the warp, so they cannot just copy pixels. Both
come from ONE augmentation at the target's side; the input is then shrunk to its own side, so a
2x network sees the same face it is asked to paint at twice the size.
All randomness is stateless and derived from (seed, batch number): a run is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from swapstream.faces.align import AlignTemplate
from swapstream.faces.errors import InputError
from swapstream.faces.faceset import FaceSet, load_faceset, resize_faces
from swapstream.trainer.config import template_dict
from swapstream.trainer.preset import AugmentConfig


@dataclass(frozen=True)
class FacePair:
    """The two identities' faces resized to the training target's side, plus where they came from."""

    faces_a: np.ndarray  # uint8 (Na, S, S, 3) BGR
    faces_b: np.ndarray
    margin: float
    source_size_a: int
    source_size_b: int
    template: AlignTemplate | None = None  # the sets' alignment template (None: Haar squares)


def faceset_template(fs: FaceSet) -> AlignTemplate | None:
    """The alignment template a face set was cut with, or None for a set without one."""
    return fs.template


def load_face_pair(path_a: str, path_b: str, size: int, min_faces: int = 1) -> FacePair:
    """Load both face sets, check they can be trained together, resize to `size` (the side of
    the training target: the networks' output side).

    Raises InputError for a missing/empty/malformed set, the same set given twice, or sets
    framed differently (other crop margins or alignment templates: the swap would paste a
    differently framed face).
    """
    fs_a = load_faceset(path_a, min_faces=min_faces)
    fs_b = load_faceset(path_b, min_faces=min_faces)
    check_pair(fs_a, fs_b, path_a, path_b)
    return FacePair(resize_faces(fs_a.faces, size), resize_faces(fs_b.faces, size),
                    fs_a.margin, fs_a.size, fs_b.size, faceset_template(fs_a))


def load_face_sets(paths: list[str] | tuple[str, ...], size: int,
                   min_faces: int = 1) -> tuple[list[np.ndarray], AlignTemplate | None]:
    """Several face sets framed alike (e.g. many identities for pretraining), each resized to
    `size`: (the faces of each set, their common template). InputError as `load_face_pair`."""
    if not paths:
        raise InputError("give at least one face set")
    sets = [load_faceset(p, min_faces=min_faces) for p in paths]
    for path, fs in zip(paths[1:], sets[1:]):
        check_framing(sets[0], fs, paths[0], path)
    return [resize_faces(fs.faces, size) for fs in sets], faceset_template(sets[0])


def check_framing(fs_a: FaceSet, fs_b: FaceSet, path_a: str, path_b: str) -> None:
    """InputError unless two face sets were cut alike (both aligned to one template, or both
    Haar squares with one margin)."""
    t_a, t_b = faceset_template(fs_a), faceset_template(fs_b)
    if (t_a is None) != (t_b is None):
        aligned, other = (path_a, path_b) if t_a is not None else (path_b, path_a)
        raise InputError(f"face set {aligned} is aligned to a landmark template and {other} is not; "
                         "re-extract both with the same version of `swapstream extract`")
    if t_a is not None and t_a != t_b:
        raise InputError(f"face sets were aligned to different templates ({path_a}: {template_dict(t_a)}, "
                         f"{path_b}: {template_dict(t_b)}); extract both with the same template")
    if t_a is None and abs(fs_a.margin - fs_b.margin) > 1e-6:
        raise InputError(f"face sets were cut with different margins ({path_a}: {fs_a.margin}, "
                         f"{path_b}: {fs_b.margin}); extract both with the same --margin")


def check_pair(fs_a: FaceSet, fs_b: FaceSet, path_a: str, path_b: str) -> None:
    """InputError unless the two face sets are distinct and framed alike."""
    check_framing(fs_a, fs_b, path_a, path_b)
    if fs_a.faces.shape == fs_b.faces.shape and np.array_equal(fs_a.faces, fs_b.faces):
        raise InputError(f"face sets {path_a} and {path_b} hold the same faces; "
                         "A and B must be two different people")


def preview_faces(faces: np.ndarray, count: int) -> np.ndarray:
    """`count` faces that differ most from each other (fixed for the whole run).

    Greedy farthest-point picks on 16x16 grey thumbnails: the preview then shows the widest
    range of pose and expression the set holds, which is what a swap has to carry over.
    """
    count = min(count, len(faces))
    thumbs = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (16, 16),
                                  interpolation=cv2.INTER_AREA) for f in faces]).astype(np.float32)
    thumbs = thumbs.reshape(len(faces), -1)
    chosen = [int(np.argmin(np.abs(thumbs - thumbs.mean(0)).sum(1)))]  # the most typical face
    dist = np.abs(thumbs - thumbs[chosen[0]]).sum(1)
    while len(chosen) < count:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.abs(thumbs - thumbs[nxt]).sum(1))
    return faces[np.sort(chosen)]


def augment_batch(images: np.ndarray, seed, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(warped, target) float32 0..1 from a uint8 batch (B,S,S,3); randomness from `seed` (ints).

    NumPy and OpenCV rather than TensorFlow ops: cv2.remap is cheap enough that the input
    pipeline stays a small fraction of a train step (`python -m swapstream.trainer.measure`
    reports that overhead).
    """
    rng = np.random.default_rng([int(s) for s in seed])
    images = np.asarray(images, dtype=np.float32) / 255.0
    b, size = images.shape[0], images.shape[1]
    c = (size - 1) / 2.0

    # Similarity transform + flip, as a map from output pixel to source pixel.
    angle = rng.uniform(-1.0, 1.0, b) * math.radians(cfg.rotation_deg)
    scale = 1.0 + rng.uniform(-1.0, 1.0, b) * cfg.zoom
    shift = rng.uniform(-1.0, 1.0, (b, 2)) * cfg.shift * size
    flip = rng.uniform(0.0, 1.0, b) < (0.5 if cfg.flip else 0.0)
    grid = np.arange(size, dtype=np.float32) - c
    gx, gy = np.meshgrid(grid, grid)  # (S, S), gx varies along columns
    gx = np.where(flip[:, None, None], -gx[None], gx[None])
    cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
    src_x = (cos * gx - sin * gy + c + shift[:, 0, None, None]).astype(np.float32)
    src_y = (sin * gx + cos * gy + c + shift[:, 1, None, None]).astype(np.float32)
    # Smooth random displacement: noise on a coarse grid, upsampled to a dense flow field.
    coarse = (rng.standard_normal((b, cfg.warp_grid, cfg.warp_grid, 2)) * cfg.warp * size).astype(np.float32)

    # Colour jitter: per-image brightness, contrast and per-channel gain, as one affine colour
    # map applied before resampling (it commutes with bilinear resampling), so target and
    # warped input get the same colours.
    colour = None
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        bright = rng.uniform(-j, j, b)
        gain = 1.0 + rng.uniform(-j, j, (b, 3))
        contrast = 1.0 + rng.uniform(-2 * j, 2 * j, b)
        mean = images.mean(axis=(1, 2, 3))
        # ((x - mean) * contrast + mean) * gain + bright = x * scale + offset, per channel
        multiplier = contrast[:, None] * gain
        offset = (mean * (1.0 - contrast))[:, None] * gain + bright[:, None]
        colour = np.concatenate([multiplier[:, :, None] * np.eye(3), offset[:, :, None]],
                                axis=2).astype(np.float32)

    target = np.empty_like(images)
    # Without warp the input is the target itself.
    warped = np.empty_like(images) if cfg.warp > 0 else target
    for i in range(b):
        face = images[i]
        if colour is not None:
            face = np.clip(cv2.transform(face, colour[i]), 0.0, 1.0)
        target[i] = cv2.remap(face, src_x[i], src_y[i], cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        if cfg.warp > 0:
            flow = cv2.resize(coarse[i], (size, size), interpolation=cv2.INTER_CUBIC)
            warped[i] = cv2.remap(face, src_x[i] + flow[..., 0], src_y[i] + flow[..., 1],
                                  cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, target


def shrink_batch(images: np.ndarray, size: int) -> np.ndarray:
    """A float32 batch (B, S, S, 3) area-averaged to (B, size, size, 3) (itself if S == size)."""
    if images.shape[1] == size:
        return images
    out = np.empty((images.shape[0], size, size, images.shape[3]), np.float32)
    for i, face in enumerate(images):
        out[i] = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    return out


def make_dataset(faces_a: np.ndarray, faces_b: np.ndarray, batch_size: int,
                 augment: AugmentConfig, seed: int = 0, input_size: int | None = None) -> tf.data.Dataset:
    """Endless dataset of augmented batches from both identities (see module docstring).

    `batch_size` faces of each identity per element. The faces' side is the targets' side;
    `input_size` (default: the same) is the side of the warped inputs. `seed` fixes the shuffle
    and augmentation (the trainer passes the run seed plus the start step, so a resumed run does
    not replay the batches it has already seen).
    """
    if len(faces_a) == 0 or len(faces_b) == 0:
        raise InputError("both face sets need at least one face")
    if faces_a.shape[1:] != faces_b.shape[1:]:
        raise InputError(f"face crops differ in shape: {faces_a.shape[1:]} vs {faces_b.shape[1:]}")
    target_size = int(faces_a.shape[1])
    input_size = target_size if input_size is None else int(input_size)
    if not 0 < input_size <= target_size:
        raise InputError(f"input size {input_size} must be within 1..{target_size} (the targets' side)")

    def stream(faces, offset):
        ds = tf.data.Dataset.from_tensor_slices(faces)
        ds = ds.shuffle(min(len(faces), 10_000), seed=seed * 2 + offset, reshuffle_each_iteration=True)
        return ds.repeat().batch(batch_size, drop_remainder=True)

    def augment_side(faces, counter, side):
        # Seeds (run seed, batch number, side): stateless, so a batch is the same on every run.
        warped, target = augment_batch(faces, (seed, counter, side), augment)
        return shrink_batch(warped, input_size), target

    def augment_pair(a, b, counter):
        return (*augment_side(a, counter, 0), *augment_side(b, counter, 1))

    def to_batch(pair, counter):
        (a, b) = pair
        out = tf.numpy_function(augment_pair, [a, b, counter], [tf.float32] * 4, stateful=False)
        sides = (input_size, target_size, input_size, target_size)
        for t, side in zip(out, sides):
            t.set_shape((batch_size, side, side, faces_a.shape[3]))
        return dict(zip(("warped_a", "target_a", "warped_b", "target_b"), out))

    counter = tf.data.Dataset.counter(dtype=tf.int64)
    ds = tf.data.Dataset.zip((tf.data.Dataset.zip((stream(faces_a, 0), stream(faces_b, 1))), counter))
    ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Each worker of a multi-worker run takes every n-th batch element (data sharding).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def constant_dataset(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """One real batch of `dataset` repeated forever: the no-input-cost baseline for timing."""
    batch = next(iter(dataset.take(1)))
    return tf.data.Dataset.from_tensors(batch).repeat()
