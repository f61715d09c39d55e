"""The real-face judge (faces/judge.py: dlib's detector, 68 landmarks, ResNet embedding) in `swapstream compare`.

Every held-out face of a comparison comes from a known video frame (the face set stores its
source video, frame index and alignment). A method's swap of that face is pasted back into the
frame the way the server pastes it (aligned sets: the inverse warp with the template's blend
mask, faces/regions.py; Haar squares: the crop box with the face ellipse), with no colour
transfer, so the figures are of what the network draws. The judge then reads the pasted frame
as `swapstream judge` reads a swapped video:

- identity: share of swapped faces nearer the target's mean embedding than the source's, the
  transfer score (0 = the held-out source faces' margin, 1 = the target's held-out faces'
  margin), share under dlib's 0.6 same-person distance to the target's mean;
- expression: Pearson r with the source frame of mouth opening, eye openness and head turn, and
  the mean absolute error of each in units of the source's spread;
- detail: Laplacian variance inside the source's landmark hull with the face scaled 128 px wide,
  swap over source (ratio of sums);
- face found: share of pasted frames where dlib finds a face.

Both identities' mean embeddings come from their *training* faces' frames (evenly sampled), so
every held-out face, the target's included, is new to the references: for A->B the transfer's 1
is B's held-out faces, for B->A it is A's.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from swapstream.faces.errors import InputError
from swapstream.faces.faceset import FaceSet

REFERENCE_FRAMES = 60   # training frames per identity embedded for its mean
DIRECTIONS = (("a2b", "a", "b"), ("b2a", "b", "a"))


class JudgeSkipped(Exception):
    """The real-face judge cannot run on this comparison (the reason is the message)."""


@dataclass
class _Face:
    """One held-out face: its source frame, how to paste a swap into it, and what dlib saw there."""

    frame: np.ndarray
    paste: object            # callable(face uint8 SxSx3) -> pasted frame
    landmarks: np.ndarray | None = None
    embedding: np.ndarray | None = None
    features: np.ndarray | None = None
    detail: float = float("nan")


@dataclass
class FaceJudgeSession:
    """The judge's models, both held-out sets with their source frames observed, and the two
    identities' reference embeddings. `judge(...)` rates one set of swaps."""

    judge: object
    held: dict[str, list[_Face]]
    means: dict[str, np.ndarray]
    reference_frames: dict[str, int]   # training frames embedded for each identity's mean
    seconds: float = 0.0               # what prepare() took

    def _margins(self, embeddings: np.ndarray, source: str, target: str) -> np.ndarray:
        return (np.linalg.norm(embeddings - self.means[source], axis=1)
                - np.linalg.norm(embeddings - self.means[target], axis=1))

    def _identities(self, source: str, target: str):
        from swapstream.faces.judge import Identities

        def mean_margin(name: str) -> float:
            emb = [f.embedding for f in self.held[name] if f.embedding is not None]
            return float(self._margins(np.stack(emb), source, target).mean())

        return Identities(self.means[source], self.means[target], mean_margin(source), mean_margin(target))

    def rate_frames(self, direction: str, frames: list[np.ndarray]) -> dict:
        """Judge row for pasted frames of one direction ("a2b": swaps of A's held-out faces)."""
        from swapstream.faces.judge import expression_row, face_detail, identity_row

        source, target = ("a", "b") if direction == "a2b" else ("b", "a")
        faces = self.held[source]
        if len(frames) != len(faces):
            raise ValueError(f"{len(frames)} frames for {len(faces)} held-out faces of {source.upper()}")
        embeddings, feats, own, src = [], [], [], []
        for face, frame in zip(faces, frames):
            obs = self.judge.observe(frame)
            if obs is not None:
                embeddings.append(obs.embedding)
            feats.append(None if obs is None else _features(obs.landmarks))
            if face.landmarks is not None:
                own.append(face_detail(frame, face.landmarks))
                src.append(face.detail)
        row = {"frames": len(frames),
               "face_found": _num(sum(f is not None for f in feats) / max(len(frames), 1))}
        ident = identity_row(embeddings, self._identities(source, target))
        row.update(nearer_target=ident["nearer_b"], transfer=ident["transfer"],
                   same_person_target=ident["same_person_b"], dist_source=ident["dist_a"],
                   dist_target=ident["dist_b"])
        row.update(expression_row(feats, [f.features for f in faces]))
        row["detail"] = _num(_ratio(own, src))
        return row

    def rate(self, swaps: dict[str, np.ndarray]) -> dict:
        """Both directions of a method's swaps (`{"a2b": faces of A's held-out set as B, "b2a": ...}`,
        uint8 or 0..1, any square side) pasted into their frames and judged; plus their mean."""
        from swapstream.trainer.evaluate import as_uint8

        out = {}
        for direction, source, _ in DIRECTIONS:
            faces = as_uint8(swaps[direction])
            frames = [f.paste(face) for f, face in zip(self.held[source], faces)]
            out[direction] = self.rate_frames(direction, frames)
        out["mean"] = mean_row(out["a2b"], out["b2a"])
        return out

    def rate_source(self) -> dict:
        """The unswapped source frames judged as if they were the swap (transfer 0, r 1, detail 1)."""
        out = {d: self.rate_frames(d, [f.frame for f in self.held[s]]) for d, s, _ in DIRECTIONS}
        out["mean"] = mean_row(out["a2b"], out["b2a"])
        return out

    def rate_target(self) -> dict:
        """The target's own held-out faces, identity only (transfer 1 by construction)."""
        from swapstream.faces.judge import identity_row

        out = {}
        for direction, source, target in DIRECTIONS:
            emb = [f.embedding for f in self.held[target] if f.embedding is not None]
            ident = identity_row(emb, self._identities(source, target))
            out[direction] = {"frames": len(self.held[target]),
                              "face_found": _num(len(emb) / max(len(self.held[target]), 1)),
                              "nearer_target": ident["nearer_b"], "transfer": ident["transfer"],
                              "same_person_target": ident["same_person_b"], "dist_source": ident["dist_a"],
                              "dist_target": ident["dist_b"]}
        out["mean"] = mean_row(out["a2b"], out["b2a"])
        return out

    def rate_ceiling(self, sets: dict[str, FaceSet], side: int) -> dict:
        """The no-network ceiling of a `side` px output: each held-out source face cut from its
        frame (the face set's crop, at the set's side), resized to `side` and pasted back the way a
        swap is."""
        from swapstream.faces.align import resize_crop

        return self.rate({d: np.stack([resize_crop(c, side) for c in sets[s].faces]) for d, s, _ in DIRECTIONS})


def _num(value) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), 4)


def _ratio(own: list[float], source: list[float]) -> float:
    pairs = [(a, b) for a, b in zip(own, source) if math.isfinite(a) and math.isfinite(b)]
    den = sum(b for _, b in pairs)
    return sum(a for a, _ in pairs) / den if pairs and den > 1e-9 else float("nan")


def _features(landmarks: np.ndarray) -> np.ndarray:
    from swapstream.faces.judge import expression_features

    return expression_features(landmarks)


def mean_row(a: dict, b: dict) -> dict:
    """The two directions' rows averaged key by key (None where either is None)."""
    out = {}
    for key, va in a.items():
        vb = b.get(key)
        out[key] = None if va is None or vb is None else _num(0.5 * (va + vb))
    return out


def _read_frames(path: str, wanted: set[int]) -> dict[int, np.ndarray]:
    from swapstream.faces.video import VideoReader

    frames = {}
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                frames[i] = frame
            if len(frames) == len(wanted):
                break
    return frames


def source_frames(face_set: FaceSet) -> list[np.ndarray]:
    """The video frame every face of `face_set` was cut from (raises JudgeSkipped when a video is gone)."""
    by_video: dict[str, set[int]] = {}
    for src, idx in zip(face_set.source.tolist(), face_set.frame_index.tolist()):
        by_video.setdefault(str(src), set()).add(int(idx))
    read: dict[str, dict[int, np.ndarray]] = {}
    for path, wanted in by_video.items():
        if not os.path.isfile(path):
            raise JudgeSkipped(f"source video {path} of the face set is not there (the judge pastes swaps "
                               "into their frames)")
        read[path] = _read_frames(path, wanted)
        if len(read[path]) != len(wanted):
            raise JudgeSkipped(f"{path} has fewer frames than its face set names")
    return [read[str(s)][int(i)] for s, i in zip(face_set.source.tolist(), face_set.frame_index.tolist())]


def paster(face_set: FaceSet, i: int, frame: np.ndarray):
    """A function that pastes a square face (any side) into a copy of `frame` where face `i` of the
    set was cut: through its alignment and the template's blend mask, or into its Haar square
    with the face ellipse."""
    if face_set.template is not None:
        from swapstream.faces.align import Alignment, rescale
        from swapstream.faces.regions import blend_mask

        base = Alignment(np.asarray(face_set.matrix[i], np.float64), face_set.landmarks[i], face_set.size)

        def paste(face: np.ndarray) -> np.ndarray:
            from swapstream.faces.align import paste_aligned

            side = face.shape[0]
            return paste_aligned(frame, face, rescale(base, side), blend_mask(face_set.template, side))
    else:
        from swapstream.faces.crop import CropTransform, paste_back
        from swapstream.faces.detect import Box
        from swapstream.trainer.evaluate import face_mask

        box = Box(*(int(v) for v in face_set.box[i]))

        def paste(face: np.ndarray) -> np.ndarray:
            side = face.shape[0]
            face = np.ascontiguousarray(face)
            return paste_back(frame, face, CropTransform(box, side), mask=face_mask(side).astype(np.float32))

    return paste


def _even(n: int, limit: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else np.zeros(0, int)


def prepare(train: dict[str, FaceSet], held: dict[str, FaceSet], reference_frames: int = REFERENCE_FRAMES,
            judge=None) -> FaceJudgeSession:
    """Load the judge, read and observe every held-out face's frame and up to `reference_frames`
    training frames of each identity (their mean embeddings). Raises JudgeSkipped when dlib or
    its models are missing, a source video is gone, or dlib finds no face in a set's frames."""
    from swapstream.faces.judge import FaceJudge, JudgeUnavailable, face_detail

    start = time.perf_counter()
    try:
        judge = judge or FaceJudge()
    except JudgeUnavailable as exc:
        raise JudgeSkipped(str(exc)) from exc
    if reference_frames < 2:
        raise InputError(f"reference frames must be >= 2, got {reference_frames}")
    means, held_faces, counts = {}, {}, {}
    for name in ("a", "b"):
        ref = train[name].subset(_even(len(train[name]), reference_frames))
        emb = [obs.embedding for obs in map(judge.observe, source_frames(ref)) if obs is not None]
        if not emb:
            raise JudgeSkipped(f"dlib found no face in the frames of {name.upper()}'s training faces")
        means[name] = np.mean(emb, axis=0)
        counts[name] = len(ref)
        faces = []
        for i, frame in enumerate(source_frames(held[name])):
            obs = judge.observe(frame)
            face = _Face(frame, paster(held[name], i, frame))
            if obs is not None:
                face.landmarks, face.embedding = obs.landmarks, obs.embedding
                face.features = _features(obs.landmarks)
                face.detail = face_detail(frame, obs.landmarks)
            faces.append(face)
        if sum(f.embedding is not None for f in faces) < 3:
            raise JudgeSkipped(f"dlib found a face in fewer than 3 of {name.upper()}'s held-out frames")
        held_faces[name] = faces
    session = FaceJudgeSession(judge, held_faces, means, counts)
    session.seconds = time.perf_counter() - start
    return session
