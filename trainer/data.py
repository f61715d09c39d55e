"""Training batches from two face sets: tf.data with random warp, flips and colour jitter.

Each element is a dict of float32 BGR images in 0..1, shape (batch, S, S, 3):
    warped_a, target_a, warped_b, target_b
`target_*` is the face after a random similarity transform (rotation, zoom, shift), flip and
colour jitter; `warped_*` is the same image additionally bent by a smooth random displacement
field (the classic deepfakes "random warp": a coarse grid of control points moved at random and
interpolated). The autoencoders learn to undo the warp, so they cannot just copy pixels.
All randomness is stateless and derived from (seed, batch number): a run is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from faces.errors import InputError
from faces.faceset import FaceSet, load_faceset


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (0 switches a term off)."""

    rotation_deg: float = 10.0
    zoom: float = 0.05
    shift: float = 0.05  # fraction of the image side
    warp: float = 0.025  # std of the control-point displacement, fraction of the side
    warp_grid: int = 5
    flip: bool = True
    color_jitter: float = 0.03


@dataclass(frozen=True)
class FacePair:
    """The two identities' faces resized to the training size, plus where they came from."""

    faces_a: np.ndarray  # uint8 (Na, S, S, 3) BGR
    faces_b: np.ndarray
    margin: float
    source_size_a: int
    source_size_b: int


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 crops to size x size (area filter down, cubic up)."""
    if faces.shape[1] == size:
        return faces
    interp = cv2.INTER_AREA if faces.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in faces])


def load_face_pair(path_a: str, path_b: str, size: int, min_faces: int = 1) -> FacePair:
    """Load both face sets, check they can be trained together, resize to `size`.

    Raises InputError for a missing/empty/malformed set, the same set given twice, or sets cut
    with different crop margins (the swap would paste a differently framed face).
    """
    fs_a = load_faceset(path_a, min_faces=min_faces)
    fs_b = load_faceset(path_b, min_faces=min_faces)
    check_pair(fs_a, fs_b, path_a, path_b)
    return FacePair(resize_faces(fs_a.faces, size), resize_faces(fs_b.faces, size),
                    fs_a.margin, fs_a.size, fs_b.size)


def check_pair(fs_a: FaceSet, fs_b: FaceSet, path_a: str, path_b: str) -> None:
    """InputError unless the two face sets are distinct and framed alike."""
    if abs(fs_a.margin - fs_b.margin) > 1e-6:
        raise InputError(f"face sets were cut with different margins ({path_a}: {fs_a.margin}, "
                         f"{path_b}: {fs_b.margin}); extract both with the same --margin")
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


def _bilinear_sample(images, xs, ys):
    """Sample images (B,S,S,C) at float pixel coords xs, ys (B,S,S), borders replicated."""
    s = tf.shape(images)[1]
    b = tf.shape(images)[0]
    smax = tf.cast(s - 1, tf.float32)
    xs = tf.clip_by_value(xs, 0.0, smax)
    ys = tf.clip_by_value(ys, 0.0, smax)
    x0, y0 = tf.floor(xs), tf.floor(ys)
    wx, wy = (xs - x0)[..., None], (ys - y0)[..., None]
    x0i, y0i = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1i, y1i = tf.minimum(x0i + 1, s - 1), tf.minimum(y0i + 1, s - 1)
    flat = tf.reshape(images, [-1, tf.shape(images)[3]])
    base = (tf.range(b) * s * s)[:, None, None]

    def gather(yi, xi):
        return tf.gather(flat, base + yi * s + xi)

    top = gather(y0i, x0i) * (1 - wx) + gather(y0i, x1i) * wx
    bottom = gather(y1i, x0i) * (1 - wx) + gather(y1i, x1i) * wx
    return top * (1 - wy) + bottom * wy


def augment_batch(images, seed, cfg: AugmentConfig):
    """(warped, target) float32 0..1 from a uint8 batch (B,S,S,3), randomness from `seed` (2,)."""
    images = tf.cast(images, tf.float32) / 255.0
    b = tf.shape(images)[0]
    size = images.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 8)

    def uniform(i, shape, lo, hi):
        return tf.random.stateless_uniform(shape, seeds[i], lo, hi)

    # Similarity transform + flip, as a map from output pixel to source pixel.
    c = (size - 1) / 2.0
    angle = uniform(0, [b], -1.0, 1.0) * (cfg.rotation_deg * math.pi / 180.0)
    scale = 1.0 + uniform(1, [b], -1.0, 1.0) * cfg.zoom
    tx = uniform(2, [b], -1.0, 1.0) * cfg.shift * size
    ty = uniform(3, [b], -1.0, 1.0) * cfg.shift * size
    flip = uniform(4, [b], 0.0, 1.0) < (0.5 if cfg.flip else 0.0)
    grid = tf.range(size, dtype=tf.float32) - c
    gx, gy = tf.meshgrid(grid, grid)  # (S, S), gx varies along columns
    gx = tf.where(flip[:, None, None], -gx[None], gx[None])
    gy = tf.broadcast_to(gy[None], tf.shape(gx))
    cos, sin = (tf.cos(angle) / scale)[:, None, None], (tf.sin(angle) / scale)[:, None, None]
    src_x = cos * gx - sin * gy + c + tx[:, None, None]
    src_y = sin * gx + cos * gy + c + ty[:, None, None]
    target = _bilinear_sample(images, src_x, src_y)

    # Smooth random displacement: noise on a coarse grid, upsampled to a dense flow field.
    if cfg.warp > 0:
        n = cfg.warp_grid
        coarse = tf.random.stateless_normal([b, n, n, 2], seeds[5]) * (cfg.warp * size)
        flow = tf.image.resize(coarse, [size, size], method="bicubic")
        warped = _bilinear_sample(images, src_x + flow[..., 0], src_y + flow[..., 1])
    else:
        warped = target

    # Colour jitter: the same per-image brightness, contrast and per-channel gain on both.
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        bright = uniform(6, [b, 1, 1, 1], -j, j)
        gain = 1.0 + tf.random.stateless_uniform([b, 1, 1, 3], seeds[7], -j, j)
        contrast = 1.0 + tf.random.stateless_uniform([b, 1, 1, 1], seeds[6][::-1], -2 * j, 2 * j)

        def jitter(x):
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            return tf.clip_by_value(((x - mean) * contrast + mean) * gain + bright, 0.0, 1.0)

        target, warped = jitter(target), jitter(warped)
    return warped, target


def make_dataset(faces_a: np.ndarray, faces_b: np.ndarray, batch_size: int,
                 augment: AugmentConfig, seed: int = 0) -> tf.data.Dataset:
    """Endless dataset of augmented batches from both identities (see module docstring).

    `batch_size` faces of each identity per element. `seed` fixes the shuffle and augmentation
    (the trainer passes the run seed plus the start step, so a resumed run does not replay the
    batches it has already seen).
    """
    if len(faces_a) == 0 or len(faces_b) == 0:
        raise InputError("both face sets need at least one face")
    if faces_a.shape[1:] != faces_b.shape[1:]:
        raise InputError(f"face crops differ in shape: {faces_a.shape[1:]} vs {faces_b.shape[1:]}")

    def stream(faces, offset):
        ds = tf.data.Dataset.from_tensor_slices(faces)
        ds = ds.shuffle(min(len(faces), 10_000), seed=seed * 2 + offset, reshuffle_each_iteration=True)
        return ds.repeat().batch(batch_size, drop_remainder=True)

    def to_batch(pair, counter):
        (a, b) = pair
        warped_a, target_a = augment_batch(a, tf.stack([seed, counter * 2]), augment)
        warped_b, target_b = augment_batch(b, tf.stack([seed, counter * 2 + 1]), augment)
        return {"warped_a": warped_a, "target_a": target_a, "warped_b": warped_b, "target_b": target_b}

    counter = tf.data.Dataset.counter(dtype=tf.int64).map(lambda i: tf.cast(i, tf.int32))
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
