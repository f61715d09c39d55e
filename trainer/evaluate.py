"""Swap-quality measures for `swapstream compare`.

What is measured, and why (docs/compare.md has the long form):
- `ssim`, `psnr`: swap against the synthetic ground truth (B rendered with A's exact pose).
- `IdentityClassifier`: a small CNN trained to tell A from B on held-out-split face crops,
  giving P(target identity) for swapped faces. Inputs are masked to the face ellipse so it
  judges the face, not the background or the clothes.
- `PoseRegressor` (synthetic sets): a small CNN trained on renders of several identities with
  the training split's poses, predicting the render's expression/pose parameters; a swap
  preserves the source's expression/pose when the regressor reads the source's parameters
  from it. Identity-independent by construction.
- `structure_rsa` (real sets, no ground truth): landmark-free proxy. HOG descriptors of
  the face, eye and mouth regions; the pairwise distances between source faces should be
  mirrored by the pairwise distances between their swaps (representational similarity).
  A swap that ignores the source (a constant face) scores about 0, one that follows every
  change of pose and mouth scores near 1, whatever the identity it draws.
- `inference_ms`, `read_summary`: latency per face and the trainer's own figures.

TensorFlow is imported lazily: SSIM (`trainer.losses.ssim`) and the judges need it, the other measures do not.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.faces.align import Alignment, warp_face
from swapstream.faces.crop import crop_face
from swapstream.faces.detect import Box
from swapstream.faces.errors import InputError
from swapstream.faces.faceset import FaceSet, resize_faces
from swapstream.faces.mask import ellipse_mask
from swapstream.faces.video import VideoReader

PSNR_CAP_DB = 100.0  # PSNR of identical images is infinite; capped so it stays a JSON number


# ---------------------------------------------------------------- conversions

def as_float(faces: np.ndarray) -> np.ndarray:
    """uint8 0..255 or float 0..1 faces (N,S,S,3) or (S,S,3) -> float32 0..1, batch shape."""
    arr = np.asarray(faces)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"faces must be (N,S,S,3) or (S,S,3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def as_uint8(faces: np.ndarray) -> np.ndarray:
    """Faces in either convention -> uint8 (N,S,S,3), rounded."""
    arr = np.asarray(faces)
    if arr.dtype == np.uint8:
        return arr if arr.ndim == 4 else arr[None]
    return np.round(as_float(arr) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------- SSIM / PSNR

def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = as_float(a).astype(np.float64), as_float(b).astype(np.float64)
    if fa.shape != fb.shape:
        raise ValueError(f"face batches differ in shape: {fa.shape} vs {fb.shape}")
    return fa, fb


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Structural similarity of each pair of faces, shape (N,); take `.mean()` for the set.

    `trainer.losses.ssim` (the definition of `tf.image.ssim(a, b, max_val=1.0)`, 11 px window)
    on 0..1 images (uint8 input is scaled to 0..1 first, so max_val is always 1). With `mask`
    (S x S, 0..1) the SSIM map is averaged with those weights instead (e.g. the face ellipse,
    the part of the crop a swap is pasted back with).
    """
    from swapstream.trainer.losses import ssim as tf_ssim

    fa, fb = _pair(a, b)
    if fa.shape[1] < 11 or fa.shape[2] < 11:
        raise ValueError(f"SSIM needs faces of at least 11x11 pixels, got {fa.shape[1:3]}")
    weights = None if mask is None else np.asarray(mask, np.float32)[:, :, None]
    return np.asarray(tf_ssim(fa.astype(np.float32), fb.astype(np.float32), weights, window=11), np.float64)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Peak signal-to-noise ratio (dB, peak 1.0 on the 0..1 scale) of each pair, shape (N,).

    Identical faces give PSNR_CAP_DB (100 dB) instead of infinity. With `mask` (S x S, 0..1)
    the squared error is averaged with those weights.
    """
    fa, fb = _pair(a, b)
    sq = (fa - fb) ** 2
    if mask is None:
        mse = sq.reshape(len(fa), -1).mean(axis=1)
    else:
        w = np.asarray(mask, np.float64)[None, :, :, None]
        mse = (sq * w).sum(axis=(1, 2, 3)) / (w.sum() * fa.shape[3])
    with np.errstate(divide="ignore"):
        val = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-30))
    return np.minimum(val, PSNR_CAP_DB)


def l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0..1 scale) of each pair, shape (N,)."""
    fa, fb = _pair(a, b)
    return np.abs(fa - fb).reshape(len(fa), -1).mean(axis=1)


def sharpness(faces: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each grey face (0..255 scale), shape (N,): low means blurry."""
    return np.array([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
                     for f in as_uint8(faces)])


# ---------------------------------------------------------------- held-out split

def holdout_split(n: int, fraction: float = 0.2, blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split n faces (in video order) into (train, held-out) indices, deterministically.

    Neighbouring video frames are near-duplicates, so a random split would leak: the faces
    are cut into `blocks` runs of consecutive frames (default max(20, n // 3), runs of about
    three faces) and every k-th run (k = 1/fraction) is held out, spreading the held-out faces
    over the whole clip in many short runs (structure_rsa needs many runs).
    """
    if n < 4:
        raise InputError(f"need at least 4 faces per set to hold some out, got {n}")
    blocks = max(20, n // 3) if blocks is None else blocks
    every = max(2, int(round(1.0 / fraction)))
    block_of = (np.arange(n) * min(blocks, n)) // n
    held = (block_of % every) == (every // 2)
    if not held.any() or held.all():
        held = np.zeros(n, bool)
        held[n // 2] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


# ---------------------------------------------------------------- identity classifier

def face_mask(size: int) -> np.ndarray:
    """The face ellipse the judges and the masked SSIM/PSNR look at (float32 S x S, 0..1)."""
    return ellipse_mask(size, feather=0.1, rx=0.36, ry=0.44)


def _face_only(faces: np.ndarray, size: int) -> np.ndarray:
    """float32 faces at `size`, outside the face ellipse replaced by mid grey."""
    f = as_float(resize_faces(as_uint8(faces), size))
    m = face_mask(size)[None, :, :, None]
    return f * m + 0.5 * (1.0 - m)


def _augment(faces: np.ndarray, rng: np.random.Generator, copies: int, max_blur: float,
             max_shift: int) -> np.ndarray:
    """Flips, small shifts, brightness/contrast jitter and random blur (float32 0..1).

    Blur matters: swapped faces come out softer than camera crops, and a judge that learned
    "sharp means A" would score blur instead of identity.
    """
    out = []
    s = faces.shape[1]
    for _ in range(copies):
        for f in faces:
            g = f[:, ::-1] if rng.random() < 0.5 else f
            dx, dy = rng.integers(-max_shift, max_shift + 1, size=2)
            mat = np.float32([[1, 0, dx], [0, 1, dy]])
            g = cv2.warpAffine(np.ascontiguousarray(g), mat, (s, s), borderMode=cv2.BORDER_REPLICATE)
            sigma = rng.uniform(0.0, max_blur)
            if sigma > 0.3:
                g = cv2.GaussianBlur(g, (0, 0), sigma)
            g = (g - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.06, 0.06)
            out.append(np.clip(g, 0.0, 1.0))
    return np.stack(out).astype(np.float32)


def _classifier_net(size: int, seed: int):
    import keras
    from keras import layers

    init = keras.initializers.HeNormal(seed=seed)
    inp = keras.Input((size, size, 3), name="face")
    x = inp
    for width in (16, 32, 64):
        x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3, seed=seed)(x)
    out = layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    return keras.Model(inp, out, name="identity_classifier")


@dataclass
class IdentityClassifier:
    """A trained A-versus-B judge. `p_b(faces)` is P(identity B) per face."""

    model: object
    size: int
    accuracy: float            # balanced accuracy on held-out faces of A and B
    n_train: tuple[int, int]
    n_test: tuple[int, int]
    seconds: float

    def p_b(self, faces: np.ndarray) -> np.ndarray:
        """P(face shows identity B), shape (N,)."""
        x = _face_only(faces, self.size)
        return np.asarray(self.model.predict(x, batch_size=64, verbose=0)).reshape(-1)

    def p_target(self, faces: np.ndarray, target: str) -> np.ndarray:
        """P(face shows `target`, "a" or "b"), shape (N,)."""
        p = self.p_b(faces)
        return p if target == "b" else 1.0 - p


def train_identity_classifier(train_a: np.ndarray, train_b: np.ndarray, test_a: np.ndarray,
                              test_b: np.ndarray, size: int = 64, min_steps: int = 600,
                              seed: int = 0) -> IdentityClassifier:
    """Train the A-versus-B judge on the training split, score it on the held-out split.

    Seeded (keras.utils.set_random_seed), classes balanced by sample weights, 3 augmented
    copies per face, batch 32, at least 8 epochs and at least `min_steps` optimizer steps: on a
    small set, 8 epochs are too few steps to lift a judge of two similar people off chance.
    """
    import keras

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    copies = 3
    xa = _augment(_face_only(train_a, size), rng, copies, 1.5 * size / 64, max(1, size // 16))
    xb = _augment(_face_only(train_b, size), rng, copies, 1.5 * size / 64, max(1, size // 16))
    x = np.concatenate([xa, xb])
    y = np.concatenate([np.zeros(len(xa), np.float32), np.ones(len(xb), np.float32)])
    w = np.concatenate([np.full(len(xa), 0.5 * len(x) / len(xa)), np.full(len(xb), 0.5 * len(x) / len(xb))])
    order = rng.permutation(len(x))
    model = _classifier_net(size, seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    batch = 32
    epochs = max(8, -(-min_steps * batch // len(x)))
    model.fit(x[order], y[order], sample_weight=w[order].astype(np.float32), batch_size=batch,
              epochs=epochs, verbose=0, shuffle=True)
    clf = IdentityClassifier(model, size, 0.0, (len(train_a), len(train_b)), (len(test_a), len(test_b)), 0.0)
    acc_a = float((clf.p_b(test_a) < 0.5).mean())
    acc_b = float((clf.p_b(test_b) >= 0.5).mean())
    clf.accuracy = 0.5 * (acc_a + acc_b)
    clf.seconds = time.perf_counter() - start
    return clf


# ---------------------------------------------------------------- real-set proxy: structure RSA

# Regions of a face crop (fractions of the side: x0, y0, x1, y1), for crops with the usual
# 0.2 margin: the whole face, the eye band and the mouth.
REGIONS = {"face": (0.2, 0.15, 0.8, 0.9), "eyes": (0.2, 0.3, 0.8, 0.52), "mouth": (0.28, 0.6, 0.72, 0.85)}


def _hog(grey: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    s = grey.shape[0]
    x0, y0, x1, y1 = (int(round(v * s)) for v in region)
    patch = cv2.resize(grey[y0:y1, x0:x1], (48, 32) if (x1 - x0) > 1.5 * (y1 - y0) else (48, 48),
                       interpolation=cv2.INTER_AREA)
    h, w = patch.shape
    hog = cv2.HOGDescriptor((w, h), (16, 16), (8, 8), (8, 8), 9)
    return hog.compute(patch).reshape(-1)


def _region_features(faces: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in as_uint8(faces)]
    return np.stack([_hog(g, region) for g in greys])


def runs_of(indices: np.ndarray) -> np.ndarray:
    """Group id of each index: consecutive indices (one held-out run of frames) share a group."""
    idx = np.asarray(indices)
    return np.cumsum(np.diff(idx, prepend=idx[:1]) > 1) if len(idx) else idx


def structure_rsa(sources: np.ndarray, swaps: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """Expression/pose preservation proxy for faces without ground truth.

    For each region (face, eyes, mouth): HOG descriptors of the sources and of their swaps,
    the matrix of pairwise Euclidean distances within each, and the Pearson correlation of
    their upper triangles. The swap draws a different identity, so its pixels cannot be
    compared with the source's; but when the source opens its mouth or turns its head, a
    swap that keeps expression and pose changes in the same places. Returns the three
    correlations and their mean ("score"). Needs at least 4 faces.

    `groups` (one id per face, e.g. `runs_of(held-out indices)`) leaves out pairs within a group:
    neighbouring frames are close to each other in any clip, so near pairs would correlate even
    between two unrelated clips and lift the score of a swap that ignores its source.
    """
    if len(sources) != len(swaps) or len(sources) < 4:
        raise ValueError("structure_rsa needs >= 4 source/swap pairs of equal count")
    iu = np.triu_indices(len(sources), 1)
    if groups is not None:
        g = np.asarray(groups)
        keep = g[iu[0]] != g[iu[1]]
        if keep.sum() >= 3:
            iu = (iu[0][keep], iu[1][keep])
    result = {}
    for name, region in REGIONS.items():
        fs, fw = _region_features(sources, region), _region_features(swaps, region)
        ds = np.linalg.norm(fs[:, None] - fs[None], axis=-1)[iu]
        dw = np.linalg.norm(fw[:, None] - fw[None], axis=-1)[iu]
        if ds.std() < 1e-9 or dw.std() < 1e-9:
            result[name] = 0.0  # a constant swap follows nothing
        else:
            result[name] = float(np.corrcoef(ds, dw)[0, 1])
    result["score"] = float(np.mean([result[k] for k in REGIONS]))
    return result


# ---------------------------------------------------------------- synthetic ground truth

def is_synthetic(face_set: FaceSet) -> bool:
    """True when the face set carries the render parameters of every face (from `synth`)."""
    return all(k in face_set.extra for k in ("identity", "pose", "pose_names"))


def identity_of(face_set: FaceSet) -> int:
    """The synthetic identity seed of a face set (all faces must share it)."""
    if not is_synthetic(face_set):
        raise InputError("face set has no render parameters (it does not come from `swapstream synth`)")
    ids = np.unique(face_set.extra["identity"])
    if len(ids) != 1:
        raise InputError(f"face set mixes synthetic identities {ids.tolist()}; need one per set")
    return int(ids[0])


def _frame_size(video: str) -> tuple[int, int]:
    """(width, height) of a synth video: from its sidecar if it records it, else the video header."""
    from swapstream.faces.synth import sidecar_path

    sidecar = sidecar_path(video)
    if os.path.isfile(sidecar):
        with np.load(sidecar, allow_pickle=False) as data:
            if "size" in data.files:  # (width, height)
                w, h = (int(v) for v in data["size"])
                return w, h
    if not os.path.isfile(video):
        raise InputError(f"cannot re-render the ground truth: source video {video} is gone "
                         "(its frame size is needed); pass frame_size or run from the folder "
                         "the face set was extracted in")
    with VideoReader(video) as reader:
        return reader.width, reader.height


def ground_truth_faces(face_set: FaceSet, target_identity: int,
                       frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """The perfect swap of every face in a synthetic face set: uint8 (N,S,S,3) BGR.

    Each face's frame is re-rendered with `target_identity` and the face's stored pose at the
    source video's frame size (`frame_size`, else the set's stored `frame_size`, else the synth
    sidecar, else the video header), and
    cut exactly as extract cut the source face: through the face's stored alignment matrix for
    an aligned set, with its stored crop box (already square and grown by the margin) otherwise,
    at the set's size.
    """
    from swapstream.faces.synth import identity_from_seed, pose_from_vector, render_face

    if not is_synthetic(face_set):
        raise InputError("face set has no render parameters (it does not come from `swapstream synth`)")
    ident = identity_from_seed(int(target_identity))
    names = face_set.extra["pose_names"]
    if frame_size is None and "frame_size" in face_set.extra:  # stored by extract since 2026-11
        frame_size = tuple(int(v) for v in face_set.extra["frame_size"])
    sizes: dict[str, tuple[int, int]] = {}
    out = np.empty_like(face_set.faces)
    for i in range(len(face_set)):
        src = str(face_set.source[i])
        if frame_size is not None:
            size = frame_size
        else:
            if src not in sizes:
                sizes[src] = _frame_size(src)
            size = sizes[src]
        frame = render_face(ident, pose_from_vector(face_set.extra["pose"][i], names), size)
        if face_set.template is not None:
            out[i] = warp_face(frame, Alignment(face_set.matrix[i], face_set.landmarks[i], face_set.size))
        else:
            out[i], _ = crop_face(frame, Box(*(int(v) for v in face_set.box[i])), face_set.size, 0.0)
    return out


# ---------------------------------------------------------------- synthetic pose regressor

# The render parameters that are expression or head pose (what a swap must keep). Placement
# (scale, tx, ty) is undone by the crop, light and background are not the face's doing, and
# gaze moves the iris by about one pixel at 64 px: no judge (and no swap) can read it there.
EXPRESSION_POSE = ("mouth_open", "smile", "blink", "brow_raise", "yaw", "pitch", "roll")
EXTRA_JUDGE_IDENTITIES = (9001, 9002, 9003, 9004)  # strangers: keep the regressor identity-blind


def _regressor_net(size: int, outputs: int, seed: int):
    import keras
    from keras import layers

    init = keras.initializers.HeNormal(seed=seed)
    inp = keras.Input((size, size, 3), name="face")
    x = inp
    for width in (24, 48, 64, 96):
        x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x)
    x = layers.Flatten()(x)  # keep where things are: pose lives in positions
    x = layers.Dense(128, activation="relu", kernel_initializer=init)(x)
    out = layers.Dense(outputs, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    return keras.Model(inp, out, name="pose_regressor")


@dataclass
class PoseRegressor:
    """Reads expression/pose parameters from a synthetic face crop (identity-blind)."""

    model: object
    size: int
    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    n_train: int
    seconds: float

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Parameters (N, len(names)) in render units."""
        x = as_float(resize_faces(as_uint8(faces), self.size))
        z = np.asarray(self.model.predict(x, batch_size=64, verbose=0))
        return z * self.std + self.mean

    def errors(self, faces: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Per face and parameter |predicted - true| in units of the parameter's spread (N, P)."""
        return np.abs(self.predict(faces) - true) / self.std

    def preservation(self, faces: np.ndarray, true: np.ndarray) -> float:
        """1 - error / error of always guessing the mean pose: 1 reads the source's exact
        expression and pose from the swap, 0 no better than ignoring the source."""
        guess = np.abs(true - self.mean) / self.std
        return float(1.0 - self.errors(faces, true).mean() / max(guess.mean(), 1e-9))


def pose_columns(face_set: FaceSet, names: tuple[str, ...]) -> np.ndarray:
    """The named pose parameters of every face of a synthetic set, (N, len(names))."""
    stored = [str(n) for n in face_set.extra["pose_names"]]
    missing = [n for n in names if n not in stored]
    if missing:
        raise InputError(f"face set lacks pose parameter(s) {', '.join(missing)}")
    return face_set.extra["pose"][:, [stored.index(n) for n in names]].astype(np.float64)


def train_pose_regressor(train_sets: list[FaceSet], identities: list[int], size: int = 64,
                         epochs: int = 14, seed: int = 0) -> PoseRegressor:
    """Train the pose judge on renders of `identities` wearing every pose of `train_sets`.

    The training faces are rendered and cut exactly like ground truths (same poses, same crop
    boxes), one per identity and pose, plus the sets' own (video-compressed) crops, and a blurred
    copy of each (swaps are soft). Only training-split poses are used, so the held-out faces'
    poses are new to it.
    """
    import keras

    start = time.perf_counter()
    names = tuple(n for n in EXPRESSION_POSE if all(n in [str(x) for x in fs.extra["pose_names"]]
                                                      for fs in train_sets))
    faces, targets = [], []
    for fs in train_sets:
        cols = pose_columns(fs, names)
        for ident in identities:
            # Rendered and cut at the set's crop size, then shrunk to the judge's size.
            faces.append(resize_faces(ground_truth_faces(fs, ident), size))
            targets.append(cols)
        # The video crops themselves too: they carry the codec's artefacts, which renders lack
        # and which otherwise throw the judge off on real set faces.
        faces.append(resize_faces(fs.faces, size))
        targets.append(cols)
    x = as_float(np.concatenate(faces))
    y = np.concatenate(targets)
    rng = np.random.default_rng(seed)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), rng.uniform(0.6, 1.6) * size / 64) for f in x])
    x = np.concatenate([x, blurred])
    y = np.concatenate([y, y])
    mean, std = y.mean(axis=0), y.std(axis=0) + 1e-6
    keras.utils.set_random_seed(seed)
    model = _regressor_net(size, len(names), seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    order = rng.permutation(len(x))
    model.fit(x[order], ((y - mean) / std)[order].astype(np.float32), batch_size=32, epochs=epochs,
              verbose=0, shuffle=True)
    return PoseRegressor(model, size, names, mean, std, len(x), time.perf_counter() - start)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float = 10.0):
    """Ridge regression x -> y fitted on centred data, returned as a function of new x."""
    xm, ym = x.mean(0), y.mean()
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - ym))
    return lambda z: (z - xm) @ w + ym


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors; 0 where either is constant."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def code_alignment(codes_a: np.ndarray, pose_a: np.ndarray, codes_b: np.ndarray, pose_b: np.ndarray,
                   names: list[str]) -> dict[str, dict[str, float]]:
    """Whether a shared encoder codes each pose parameter the same way for both identities.

    Per parameter: `transfer_r`, the correlation with A's true values of a linear probe fitted
    on B's codes and applied to A's (+1: decoder B reads A's code as it reads B's own; -1: the
    code runs the opposite way for A); `within_a_r`, the same probe fitted on one half of A and
    tested on the other (how well the code holds the parameter at all).
    """
    half = len(codes_a) // 2
    out = {}
    for i, name in enumerate(names):
        transfer = correlation(_ridge(codes_b, pose_b[:, i])(codes_a), pose_a[:, i])
        within = correlation(_ridge(codes_a[:half], pose_a[:half, i])(codes_a[half:]), pose_a[half:, i])
        out[name] = {"transfer_r": round(transfer, 3), "within_a_r": round(within, 3)}
    return out


# ---------------------------------------------------------------- timing and run figures

def inference_ms(model, faces: np.ndarray, repeats: int = 20, batch: int = 32) -> dict[str, float]:
    """Milliseconds per face of a Keras inference model: batch 1 (latency, median of `repeats`
    calls after a warm-up) and batch `batch` (throughput, per face)."""
    x = as_float(faces)
    one = x[:1]
    model.predict_on_batch(one)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_on_batch(one)
        times.append(time.perf_counter() - t0)
    many = np.resize(x, (batch,) + x.shape[1:]).astype(np.float32)
    model.predict_on_batch(many)
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        model.predict_on_batch(many)
    per_face_batched = (time.perf_counter() - t0) / (reps * batch)
    return {"batch1_ms": 1000.0 * float(np.median(times)), f"batch{batch}_ms_per_face": 1000.0 * per_face_batched}


def read_summary(run_dir: str) -> dict:
    """The trainer's RUN/summary.json (steps, images/s, final losses, parameters), or {}."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
