"""A face-swap judge that was not trained on the pair: dlib's detector, 68 landmarks and ResNet embedding.

It rates a swapped video against the source it was made from (frame by frame) and against
reference clips of the two identities A (the source's person) and B (the target):

* identity: the share of swapped faces nearer B's mean embedding than A's; an identity-transfer
  score on the margin d(face, A) - d(face, B), scaled so 0 is the source's margin and 1 is the
  margin of B's own held-out faces (faces not used for B's mean); the share under dlib's 0.6
  same-person distance to B's mean;
* expression: Pearson r with the source frame of mouth opening, eye openness and head turn (from
  the 68 landmarks), and the mean absolute error of each in units of the source's spread (r cannot
  see a swap that opens a mouth the source keeps shut);
* detail: both frames cut at the source's face and scaled so the face is 128 px wide, the
  Laplacian variance inside the source's landmark hull, swap over source;
* the share of frames where a face is found at all.

Every report carries sanity rows: the unswapped source (transfer 0, r 1, detail 1 by
construction), B's held-out faces (transfer 1), and the ceiling: the source sent through the
model's crop and pasted back with no network. For an aligned model (manifest `align_template`)
that is the aligned crop at the model's output side, pasted back through the inverse warp with
the server's blend mask (`aligned_ceiling`); for an unaligned one a Haar square of the model's
crop size (`crop_ceiling`). `ceiling_settings(model_dir)` reads which from a model folder.

Other swaps of the same source (e.g. the same model served without its watermark) can be judged
in the same pass (`variants`): they share the source's and the references' faces, so each costs
one more look per frame.

Faces are found with dlib's own frontal detector on the output frames, not the Haar cascade the
pipeline uses, so a swap cannot score well merely by being where Haar put the crop. The models
come from the `face-recognition-models` package (offline). Its 68-point predictor was trained on
data that bars commercial use: it is used here, in the judge, only. No TensorFlow, no gRPC.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from swapstream.faces.align import Aligner, AlignTemplate, pass_through, plausible
from swapstream.faces.crop import crop_face, paste_back
from swapstream.faces.detect import HaarDetector
from swapstream.faces.errors import InputError
from swapstream.faces.regions import BLEND_ERODE, BLEND_FEATHER, blend_mask
from swapstream.faces.video import VideoReader

RESULT_VERSION = 2
SAME_PERSON_DISTANCE = 0.6   # dlib's threshold for "same person" on its ResNet embedding
DETAIL_FACE_WIDTH = 128      # both frames are scaled so the source's face is this wide
DETECT_MIN_SIDE, DETECT_MAX_SIDE = 320, 640  # dlib's detector finds faces of ~80 px and up
REFERENCE_FRAMES = 120       # at most this many frames of each reference clip are embedded
EXPRESSION_NAMES = ("mouth", "eyes", "turn")

# iBUG 68-point layout (0-based).
_OUTLINE = slice(0, 17)
_OUTLINE_LEFT, _OUTLINE_RIGHT = 0, 16
_NOSE = slice(27, 36)
_EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


class JudgeUnavailable(RuntimeError):
    """dlib or the face-recognition models are not installed (the `eval` extra)."""


def model_paths() -> dict[str, str]:
    """Paths of the dlib model files shipped in the `face-recognition-models` package.

    The package is located without importing it: its __init__ needs pkg_resources, which
    current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise JudgeUnavailable("the judge needs the face-recognition-models package: pip install 'swapstream[eval]'")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "models")
    paths = {
        "landmarks68": os.path.join(folder, "shape_predictor_68_face_landmarks.dat"),
        "landmarks5": os.path.join(folder, "shape_predictor_5_face_landmarks.dat"),
        "embedding": os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat"),
    }
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise JudgeUnavailable(f"face-recognition-models is incomplete: {', '.join(missing)} missing; reinstall it")
    return paths


@dataclass(frozen=True)
class Observation:
    """One face as the judge sees it: 68 landmarks (x, y in frame pixels) and, if asked, its embedding."""

    landmarks: np.ndarray              # (68, 2) float32
    embedding: np.ndarray | None       # (128,) float64


class FaceJudge:
    """dlib's frontal detector, 68-point shape predictor and ResNet face embedding, loaded once.

    Frames are scaled for detection so their longer side lies in 320..640 px (the detector
    finds faces from about 80 px; larger frames only cost time); landmarks and embeddings are
    computed on the full-resolution frame. Of several faces the largest is taken.
    """

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise JudgeUnavailable("the judge needs dlib: pip install 'swapstream[eval]' (the dlib-bin wheel)") from exc
        paths = model_paths()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(paths["landmarks68"])
        self._embed = dlib.face_recognition_model_v1(paths["embedding"])
        self.observed = 0  # frames looked at, for the report's cost per frame

    def observe(self, frame: np.ndarray, embed: bool = True) -> Observation | None:
        """The largest face in a uint8 BGR frame, or None when dlib finds none."""
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("observe() needs a uint8 HxWx3 BGR frame")
        self.observed += 1
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        h, w = rgb.shape[:2]
        side = max(h, w)
        scale = 1.0
        if side > DETECT_MAX_SIDE:
            scale = DETECT_MAX_SIDE / side
        elif side < DETECT_MIN_SIDE:
            scale = 2.0 if side * 2 <= DETECT_MAX_SIDE else DETECT_MAX_SIDE / side
        small = rgb if scale == 1.0 else cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rects = self._detector(small, 0)
        if len(rects) == 0:
            return None
        r = max(rects, key=lambda q: q.width() * q.height())
        rect = self._dlib.rectangle(int(round(r.left() / scale)), int(round(r.top() / scale)),
                                    int(round(r.right() / scale)), int(round(r.bottom() / scale)))
        shape = self._shape(rgb, rect)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        embedding = np.array(self._embed.compute_face_descriptor(rgb, shape), dtype=np.float64) if embed else None
        return Observation(landmarks, embedding)


# ----------------------------------------------------------------------------------------------
# Measures on one face


def expression_features(landmarks: np.ndarray) -> np.ndarray:
    """Mouth opening, eye openness and head turn of one face from its 68 landmarks.

    mouth: mean gap of the inner lips over the distance between the eye centres; eyes: the
    eye aspect ratio (lid gap over eye width), both eyes averaged; turn: with the eye line
    levelled, how far the nose's nine points sit from the middle of the 17-point outline, over
    the outline's width (0 facing the camera). Averaging many points keeps the turn steady on
    blurred faces, where the single jaw ends wander. All three are free of the face's size and
    roll in the frame.
    """
    p = np.asarray(landmarks, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {p.shape}")

    def dist(i: int, j: int) -> float:
        return float(np.hypot(*(p[i] - p[j])))

    eye_centres = [p[list(eye)].mean(0) for eye in _EYES]
    interocular = max(float(np.hypot(*(eye_centres[0] - eye_centres[1]))), 1e-6)
    mouth = np.mean([dist(i, j) for i, j in _INNER_LIP_PAIRS]) / interocular
    ears = [(dist(e[1], e[5]) + dist(e[2], e[4])) / (2.0 * max(dist(e[0], e[3]), 1e-6)) for e in _EYES]
    across = (eye_centres[1] - eye_centres[0]) / interocular
    x = p @ across  # coordinates along the levelled eye line
    turn = (x[_NOSE].mean() - x[_OUTLINE].mean()) / max(x[_OUTLINE_RIGHT] - x[_OUTLINE_LEFT], 1e-6)
    return np.array([mouth, float(np.mean(ears)), turn], dtype=np.float64)


def face_detail(frame: np.ndarray, landmarks: np.ndarray, face_width: int = DETAIL_FACE_WIDTH) -> float:
    """Laplacian variance inside the landmark hull, with the frame cut at the face and scaled so
    the landmarks span `face_width` px across.

    Pass the *source's* landmarks for both the source frame and the swapped frame, so both are
    measured over the same pixels at the same scale.
    """
    p = np.asarray(landmarks, dtype=np.float64)
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    width = max(x1 - x0, 1.0)
    pad = 0.1 * width  # a border so the Laplacian at the hull's edge sees real neighbours
    h, w = frame.shape[:2]
    cx0, cy0 = max(int(math.floor(x0 - pad)), 0), max(int(math.floor(y0 - pad)), 0)
    cx1, cy1 = min(int(math.ceil(x1 + pad)) + 1, w), min(int(math.ceil(y1 + pad)) + 1, h)
    if cx1 - cx0 < 4 or cy1 - cy0 < 4:
        return float("nan")
    grey = cv2.cvtColor(frame[cy0:cy1, cx0:cx1], cv2.COLOR_BGR2GRAY)
    scale = face_width / width
    size = (max(1, round((cx1 - cx0) * scale)), max(1, round((cy1 - cy0) * scale)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F)
    hull = cv2.convexHull(np.round((p - (cx0, cy0)) * scale).astype(np.int32))
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    values = lap[mask > 0]
    return float(values.var()) if values.size > 8 else float("nan")


# ----------------------------------------------------------------------------------------------
# The ceiling: the source through the model's crop with no network


def ceiling_frame(frame: np.ndarray, detector: HaarDetector, crop_size: int, margin: float) -> np.ndarray:
    """One frame with its largest Haar face cut to `crop_size` px (with `margin`) and pasted back."""
    boxes = detector.detect(frame)
    if not boxes:
        return frame
    crop, transform = crop_face(frame, boxes[0], crop_size, margin)
    return paste_back(frame, crop, transform)


class AlignedCeiling:
    """The no-network ceiling of an aligned model, frame by frame, as the server would paste it.

    The largest Haar face -> dlib's five points -> the model's `template` (the face sets'
    framing, at the template's side) -> resized to `output_size` (the model's output face) ->
    pasted back through the inverse warp, once with the server's blend mask (`blend_erode`,
    `blend_feather`: outside it the frame keeps its own pixels, as in a served swap) and once
    over the whole square (what the network's square itself can hold). A frame without a Haar
    face, or whose five points are implausible (the server skips those), passes unchanged.
    """

    def __init__(self, template: AlignTemplate, output_size: int, blend_erode: float = BLEND_ERODE,
                 blend_feather: float = BLEND_FEATHER, detector: HaarDetector | None = None) -> None:
        if int(output_size) < 8:
            raise ValueError(f"output_size must be >= 8, got {output_size}")
        self.template, self.output_size = template, int(output_size)
        self.aligner = Aligner(template)
        self.mask = blend_mask(template, self.output_size, blend_erode, blend_feather)
        self.blend_erode, self.blend_feather = float(blend_erode), float(blend_feather)
        self.detector = detector or HaarDetector()

    def frames(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pasted with the blend mask, pasted as the whole square) for one BGR frame."""
        boxes = self.detector.detect(frame)
        if not boxes:
            return frame, frame
        try:
            al = self.aligner.align(frame, boxes[0])
        except ValueError:  # the box lies (mostly) outside the frame
            return frame, frame
        if not plausible(al.landmarks, boxes[0], al.roll):
            return frame, frame
        return (pass_through(frame, al, self.output_size, self.mask), pass_through(frame, al, self.output_size))

    def describe(self) -> dict:
        """The ceiling's settings for the report."""
        t = self.template
        return {"kind": "aligned", "template": {"size": t.size, "eye_distance": t.eye_distance,
                                                "eye_line": t.eye_line},
                "output_size": self.output_size, "blend_erode": self.blend_erode, "blend_feather": self.blend_feather}


def aligned_ceiling(frames: Iterable[np.ndarray], template: AlignTemplate, output_size: int,
                    mask: bool = True, detector: HaarDetector | None = None) -> Iterator[np.ndarray]:
    """The frames as a perfect aligned network with an `output_size` px face would give them back
    through the server's paste (`AlignedCeiling`); `mask=False` pastes the whole square. A generator."""
    ceiling = AlignedCeiling(template, output_size, detector=detector)
    for frame in frames:
        yield ceiling.frames(frame)[0 if mask else 1]


def ceiling_settings(model_dir: str) -> dict:
    """The ceiling keyword arguments of `judge_frames`/`judge_videos` for the model in `model_dir`
    (its manifest.json): `template` and `output_size` for an aligned model, else `crop_size` and
    `margin` (the Haar square it was trained on). Raises InputError (ManifestError) for a folder
    that is not a valid model."""
    from swapstream.faces.model_folder import load_manifest

    m = load_manifest(model_dir, check_io=False)
    if m.aligned:
        return {"crop_size": m.crop_size, "margin": m.crop_margin, "template": m.align_template,
                "output_size": m.out_size}
    return {"crop_size": m.crop_size, "margin": m.crop_margin, "template": None, "output_size": None}


def crop_ceiling(frames: Iterable[np.ndarray], crop_size: int, margin: float,
                 detector: HaarDetector | None = None) -> Iterator[np.ndarray]:
    """The frames as a perfect network working on `crop_size` px crops would give them back.

    Each frame's largest Haar face (the pipeline's detector) is cut with faces/crop.py at
    `crop_size` x `crop_size` with `margin`, and pasted back unchanged: the detail a swap at
    that crop size can reach at best. Frames without a Haar face pass through as they are.
    A generator, so long videos need little memory.
    """
    if int(crop_size) < 8:
        raise ValueError(f"crop_size must be >= 8, got {crop_size}")
    if not 0.0 <= float(margin) <= 2.0:
        raise ValueError(f"margin must be within 0..2, got {margin}")
    detector = detector or HaarDetector()
    for frame in frames:
        yield ceiling_frame(frame, detector, int(crop_size), float(margin))


# ----------------------------------------------------------------------------------------------
# Aggregation


def _num(value: float | None) -> float | None:
    """A JSON-safe float (None for NaN/inf), rounded to what the figures can carry."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), 4)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two series; NaN with fewer than 3 pairs or a constant series."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum() / den) if den > 1e-12 else float("nan")


@dataclass(frozen=True)
class Identities:
    """The mean embeddings of A and B and the margins that anchor the transfer score."""

    mean_a: np.ndarray
    mean_b: np.ndarray
    margin_source: float   # mean d(., A) - d(., B) of the source's faces: transfer 0
    margin_b: float        # the same for B's held-out faces: transfer 1

    def margins(self, embeddings: np.ndarray) -> np.ndarray:
        """d(e, A) - d(e, B) for each row: positive when the face is nearer B."""
        return (np.linalg.norm(embeddings - self.mean_a, axis=1)
                - np.linalg.norm(embeddings - self.mean_b, axis=1))


def identity_row(embeddings: Sequence[np.ndarray], ids: Identities) -> dict:
    """Identity figures of a set of face embeddings against A and B."""
    if len(embeddings) == 0:
        return {"nearer_b": None, "transfer": None, "same_person_b": None, "dist_a": None, "dist_b": None}
    e = np.stack(embeddings)
    d_a = np.linalg.norm(e - ids.mean_a, axis=1)
    d_b = np.linalg.norm(e - ids.mean_b, axis=1)
    span = ids.margin_b - ids.margin_source
    transfer = (float((d_a - d_b).mean()) - ids.margin_source) / span if span > 1e-6 else float("nan")
    return {"nearer_b": _num((d_b < d_a).mean()), "transfer": _num(transfer),
            "same_person_b": _num((d_b < SAME_PERSON_DISTANCE).mean()),
            "dist_a": _num(d_a.mean()), "dist_b": _num(d_b.mean())}


def expression_row(swap_feats: list[np.ndarray | None], source_feats: list[np.ndarray | None]) -> dict:
    """Pearson r and MAE (in source standard deviations) per expression measure, over frames where
    both the swap and the source have a face."""
    pairs = [(s, t) for s, t in zip(swap_feats, source_feats) if s is not None and t is not None]
    row: dict = {"paired_frames": len(pairs)}
    sw = np.array([p[0] for p in pairs]).reshape(-1, 3)
    src = np.array([p[1] for p in pairs]).reshape(-1, 3)
    for k, name in enumerate(EXPRESSION_NAMES):
        spread = float(src[:, k].std()) if len(src) >= 3 else float("nan")
        mae = float(np.abs(sw[:, k] - src[:, k]).mean()) / spread if spread > 1e-9 else float("nan")
        row[f"{name}_r"] = _num(pearson(sw[:, k], src[:, k]))
        row[f"{name}_mae"] = _num(mae)
    return row


class _RowStats:
    """Per-frame observations of one judged video (the swap, the source or the ceiling)."""

    def __init__(self) -> None:
        self.frames = 0
        self.embeddings: list[np.ndarray] = []
        self.features: list[np.ndarray | None] = []
        self.detail: list[float] = []   # this video's detail on frames where the source has a face
        self.detail_square: list[float] = []  # aligned ceiling only: the whole square pasted back

    def add(self, obs: Observation | None) -> None:
        self.frames += 1
        if obs is not None and obs.embedding is not None:
            self.embeddings.append(obs.embedding)
        self.features.append(None if obs is None else expression_features(obs.landmarks))

    @property
    def found(self) -> int:
        return sum(f is not None for f in self.features)


def _detail_ratio(own: list[float], source: list[float]) -> float:
    pairs = [(a, b) for a, b in zip(own, source) if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return float("nan")
    den = sum(b for _, b in pairs)
    return sum(a for a, _ in pairs) / den if den > 1e-9 else float("nan")


def _even_sample(frames: Iterable[np.ndarray], limit: int) -> list[np.ndarray]:
    """At most `limit` frames, evenly spaced over the clip (first and last included)."""
    frames = list(frames)
    if len(frames) <= limit:
        return frames
    picks = np.linspace(0, len(frames) - 1, limit).round().astype(int)
    return [frames[i] for i in picks]


def _embed_all(judge: FaceJudge, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Embeddings of the faces dlib finds in `frames`."""
    return [obs.embedding for obs in map(judge.observe, frames) if obs is not None]


def judge_frames(swapped: Iterable[np.ndarray], a: Iterable[np.ndarray], b: Sequence[np.ndarray],
                 source: Iterable[np.ndarray] | None = None, *, crop_size: int = 64, margin: float = 0.2,
                 ceiling: bool = True, every: int = 1, reference_frames: int = REFERENCE_FRAMES,
                 judge: FaceJudge | None = None, template: AlignTemplate | None = None,
                 output_size: int | None = None,
                 variants: dict[str, Iterable[np.ndarray]] | None = None) -> dict:
    """Judge a swapped frame sequence (see the module doc); returns the report as a plain dict.

    `swapped` and `source` are frame-aligned (the swap of source frame i is swapped frame i);
    `source` defaults to `a` (a swap of A's own clip). `a` and `b` are reference clips of the two
    identities; B's frames are split in two halves: the first gives B's mean embedding, the
    second are B's held-out faces (transfer 1). `every` judges every Nth frame of the swap;
    references are sampled evenly, at most `reference_frames` each.

    The ceiling row: with `template` (an aligned model; `output_size` its output side, default
    the template's) the source through the aligned crop and back with the server's blend mask
    (`AlignedCeiling`; its `detail_square` is the whole square pasted); without, through a
    `crop_size` px Haar square with `margin` and back (`crop_ceiling`). `ceiling_settings(dir)`
    gives these from a model folder.

    `variants`: other swaps of the same source, frame-aligned like `swapped` (e.g. the model
    served without its watermark), each judged as a row of `result["variants"][name]`.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if reference_frames < 4:
        raise ValueError(f"reference_frames must be >= 4, got {reference_frames}")
    variants = dict(variants or {})
    for name in variants:
        if not name or name in ("swap", "source", "b_heldout", "ceiling"):
            raise ValueError(f"variant name {name!r} is empty or taken by a row of the report")
    aligned_ceil = None
    if ceiling and template is not None:
        aligned_ceil = AlignedCeiling(template, int(output_size or template.size))
    t_start = time.perf_counter()
    judge = judge or FaceJudge()
    observed_before = judge.observed
    b = _even_sample(b, reference_frames)
    if len(b) < 2:
        raise InputError("B's clip needs at least 2 frames (half for B's mean, half held out)")
    half = len(b) // 2
    b_ref, b_held = _embed_all(judge, b[:half]), _embed_all(judge, b[half:])
    n_b_ref, n_b_held = half, len(b) - half
    if not b_ref or not b_held:
        raise InputError(f"dlib found no face in {'the first' if not b_ref else 'the second'} half of B's clip")
    del b

    source_is_a = source is None
    source_iter = iter(a) if source_is_a else iter(source)
    swap_stats, src_stats, ceil_stats = _RowStats(), _RowStats(), _RowStats()
    var_iters = {name: iter(frames) for name, frames in variants.items()}
    var_stats = {name: _RowStats() for name in variants}
    n_variant = dict.fromkeys(variants, 0)
    haar = HaarDetector() if ceiling and aligned_ceil is None else None
    n_swapped = n_source = 0
    size_checked = False

    def check_size(frame: np.ndarray, src_frame: np.ndarray, what: str) -> None:
        if frame.shape != src_frame.shape:
            raise InputError(f"{what} frames are {frame.shape[1]}x{frame.shape[0]}, source frames "
                             f"{src_frame.shape[1]}x{src_frame.shape[0]}: the swap must keep the source's size")

    for i, swap_frame in enumerate(swapped):
        n_swapped += 1
        var_frames = {}
        for name, it in var_iters.items():
            frame = next(it, None)
            if frame is not None:
                n_variant[name] += 1
                var_frames[name] = frame
        src_frame = next(source_iter, None)
        if src_frame is None:
            continue
        n_source += 1
        if i % every:
            continue
        if not size_checked:
            check_size(swap_frame, src_frame, "swapped")
            size_checked = True
        src_obs = judge.observe(src_frame)
        swap_stats.add(judge.observe(swap_frame))
        src_stats.add(src_obs)
        ceil_square = None
        if aligned_ceil is not None:
            ceil_frame, ceil_square = aligned_ceil.frames(src_frame)
        elif ceiling:
            ceil_frame = ceiling_frame(src_frame, haar, crop_size, margin)
        else:
            ceil_frame = None
        if ceiling:
            ceil_stats.add(judge.observe(ceil_frame))
        for name, frame in var_frames.items():
            check_size(frame, src_frame, f"variant {name}'s")
            var_stats[name].add(judge.observe(frame))
        if src_obs is not None:
            src_detail = face_detail(src_frame, src_obs.landmarks)
            src_stats.detail.append(src_detail)
            swap_stats.detail.append(face_detail(swap_frame, src_obs.landmarks))
            if ceiling:
                ceil_stats.detail.append(face_detail(ceil_frame, src_obs.landmarks))
            if ceil_square is not None:
                ceil_stats.detail_square.append(face_detail(ceil_square, src_obs.landmarks))
            for name, stats in var_stats.items():
                frame = var_frames.get(name)
                stats.detail.append(face_detail(frame, src_obs.landmarks) if frame is not None else float("nan"))
    n_source += sum(1 for _ in source_iter)
    for name, it in var_iters.items():
        n_variant[name] += sum(1 for _ in it)
    if n_swapped == 0:
        raise InputError("the swapped video has no frames")
    if abs(n_swapped - n_source) > 2:
        raise InputError(f"the swapped video has {n_swapped} frames, the source {n_source}: "
                         "they must be frame-aligned (the swap of each source frame)")
    for name, count in n_variant.items():
        if abs(count - n_source) > 2:
            raise InputError(f"variant {name} has {count} frames, the source {n_source}: "
                             "it must be frame-aligned with the source")
    if src_stats.found == 0:
        raise InputError("dlib found no face in the source; nothing to judge against")

    if source_is_a:
        a_emb, n_a = src_stats.embeddings, src_stats.frames
    else:
        a_sample = _even_sample(a, reference_frames)
        a_emb, n_a = _embed_all(judge, a_sample), len(a_sample)
        if not a_emb:
            raise InputError("dlib found no face in A's clip")
    mean_a, mean_b = np.mean(a_emb, axis=0), np.mean(b_ref, axis=0)
    anchors = Identities(mean_a, mean_b, 0.0, 0.0)
    ids = Identities(mean_a, mean_b, float(anchors.margins(np.stack(src_stats.embeddings)).mean()),
                     float(anchors.margins(np.stack(b_held)).mean()))

    def video_row(stats: _RowStats) -> dict:
        row = {"frames": stats.frames, "face_found": _num(stats.found / max(stats.frames, 1))}
        row.update(identity_row(stats.embeddings, ids))
        row.update(expression_row(stats.features, src_stats.features))
        row["detail"] = _num(_detail_ratio(stats.detail, src_stats.detail))
        return row

    held_row = {"frames": n_b_held, "face_found": _num(len(b_held) / max(n_b_held, 1))}
    held_row.update(identity_row(b_held, ids))
    sanity = {"source": video_row(src_stats), "b_heldout": held_row}
    if ceiling:
        sanity["ceiling"] = video_row(ceil_stats)
        if aligned_ceil is not None:
            sanity["ceiling"]["detail_square"] = _num(_detail_ratio(ceil_stats.detail_square, src_stats.detail))
    if aligned_ceil is not None:
        ceiling_desc = aligned_ceil.describe()
    elif ceiling:
        ceiling_desc = {"kind": "haar", "crop_size": int(crop_size), "margin": float(margin)}
    else:
        ceiling_desc = None
    seconds = time.perf_counter() - t_start
    observed = judge.observed - observed_before
    return {
        "version": RESULT_VERSION,
        "judge": "dlib frontal detector, 68-point landmarks, ResNet embedding (face-recognition-models)",
        "settings": {"crop_size": int(crop_size), "margin": float(margin), "every": int(every),
                     "detail_face_width": DETAIL_FACE_WIDTH, "same_person_distance": SAME_PERSON_DISTANCE,
                     "ceiling": ceiling_desc},
        "frames": {"swapped": n_swapped, "source": n_source, "judged": swap_stats.frames, "a": n_a,
                   "b_reference": n_b_ref, "b_heldout": n_b_held},
        "swap": video_row(swap_stats),
        "variants": {name: video_row(stats) for name, stats in var_stats.items()},
        "sanity": sanity,
        "seconds": round(seconds, 2),
        # Per swapped frame judged (its source, ceiling and the references included), and per
        # frame dlib looked at.
        "seconds_per_frame": round(seconds / max(swap_stats.frames, 1), 4),
        "seconds_per_observation": round(seconds / max(observed, 1), 4),
    }


def read_frames(path: str, limit: int | None = None) -> list[np.ndarray]:
    """The BGR frames of a video: all of them, or at most `limit` evenly spaced over the clip.

    Raises InputError for a missing or undecodable file. Only the kept frames stay in memory.
    """
    with VideoReader(path) as reader:
        if limit is None:
            return list(reader)
        count = reader.frame_count
        if count is None:
            return _even_sample(list(reader), limit)
        keep = set(np.linspace(0, count - 1, min(limit, count)).round().astype(int).tolist())
        return [frame for i, frame in enumerate(reader) if i in keep]


def _iter_video(path: str) -> Iterator[np.ndarray]:
    with VideoReader(path) as reader:
        yield from reader


def judge_videos(swapped: str, a: str, b: str, source: str | None = None, *, crop_size: int = 64,
                 margin: float = 0.2, ceiling: bool = True, every: int = 1,
                 reference_frames: int = REFERENCE_FRAMES, judge: FaceJudge | None = None,
                 template: AlignTemplate | None = None, output_size: int | None = None,
                 variants: dict[str, str] | None = None) -> dict:
    """Judge the video `swapped` made from `source` (default: `a`) against clips `a` and `b`.

    See `judge_frames` for the measures and options (`template`/`output_size`: the aligned
    ceiling; `ceiling_settings(model_dir)` gives them); `variants` maps names to other swapped
    videos of the same source. The report also names the files. The swapped, variant and source
    videos are streamed (A's too when it is the source); of the reference clips only the sampled
    frames are kept.
    """
    variants = dict(variants or {})
    named = [("swapped", swapped), ("a", a), ("b", b), ("source", source)]
    named += [(f"variant {k}", v) for k, v in variants.items()]
    for name, path in named:
        if path is not None and not os.path.isfile(path):
            raise InputError(f"{name} video {path} does not exist")
    for path in [swapped, *variants.values()]:
        VideoReader(path).close()  # fail early, with the file's name, before any face is embedded
    same = source is None or os.path.realpath(source) == os.path.realpath(a)
    result = judge_frames(
        _iter_video(swapped), _iter_video(a) if same else read_frames(a, reference_frames),
        read_frames(b, reference_frames),
        None if same else _iter_video(source), crop_size=crop_size, margin=margin, ceiling=ceiling,
        every=every, reference_frames=reference_frames, judge=judge, template=template,
        output_size=output_size, variants={k: _iter_video(v) for k, v in variants.items()})
    result["inputs"] = {"swapped": swapped, "a": a, "b": b, "source": source or a, "variants": variants}
    return result


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def format_line(result: dict) -> str:
    """The report in one line: the swap's figures, with the ceiling's detail beside the swap's and
    each variant's transfer and detail (e.g. `unmarked`: the swap without the watermark)."""
    s = result["swap"]
    ceil = result.get("sanity", {}).get("ceiling")
    detail = _fmt(s["detail"])
    for name, row in (result.get("variants") or {}).items():
        detail += f", {name} {_fmt(row['detail'])}"
    if ceil:
        detail += f" (ceiling {_fmt(ceil['detail'])}"
        if ceil.get("detail_square") is not None:
            detail += f", whole square {_fmt(ceil['detail_square'])}"
        detail += ")"
    line = (f"judge: face found {_pct(s['face_found'])}, nearer B {_pct(s['nearer_b'])}, "
            f"transfer {_fmt(s['transfer'])}, same-person B {_pct(s['same_person_b'])}; "
            f"mouth r {_fmt(s['mouth_r'])} mae {_fmt(s['mouth_mae'])}, "
            f"eyes r {_fmt(s['eyes_r'])} mae {_fmt(s['eyes_mae'])}, "
            f"turn r {_fmt(s['turn_r'])} mae {_fmt(s['turn_mae'])}; detail {detail}")
    for name, row in (result.get("variants") or {}).items():
        line += (f"; {name}: transfer {_fmt(row['transfer'])}, mouth r {_fmt(row['mouth_r'])}, "
                 f"eyes r {_fmt(row['eyes_r'])}")
    return line


ROW_COLUMNS = ("face_found", "nearer_b", "transfer", "same_person_b", "dist_b", "mouth_r", "mouth_mae",
               "eyes_r", "eyes_mae", "turn_r", "turn_mae", "detail")


def format_table(result: dict) -> str:
    """The swap, its variants and the sanity rows as a Markdown table."""
    rows = [("swap", result["swap"])] + [(f"swap ({name})", row) for name, row in result.get("variants", {}).items()]
    rows += [(name, row) for name, row in result.get("sanity", {}).items()]
    head = "| row | " + " | ".join(ROW_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(ROW_COLUMNS) + 1)]
    for name, row in rows:
        cells = [_fmt(row.get(c)) for c in ROW_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
