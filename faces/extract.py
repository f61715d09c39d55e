"""`swapstream extract`: build a face set (.npz) from videos of one person.

The data preparation: every Nth frame, Haar detection, dlib's five landmarks inside the Haar
box, a similarity warp to the alignment template (faces/align.py: roll, scale and position the
same in every crop), a face check (dlib's frontal detector on a wider aligned view: a Haar false
detection on which the five points still land plausibly, an arm or a dress, is dropped), drop
blurry crops and near-duplicates, save uncompressed with each face's matrix and landmarks and
the template. `--no-align` keeps the old axis-aligned Haar square
with a margin instead (for comparisons).
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from swapstream.faces.align import Aligner, Alignment, AlignTemplate, plausible, umeyama, warp_face
from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.crop import crop_face
from swapstream.faces.detect import HaarDetector
from swapstream.faces.errors import FaceSetError, InputError
from swapstream.faces.faceset import FaceSet, save_faceset
from swapstream.faces.synth import sidecar_path
from swapstream.faces.video import VideoReader


@dataclass
class ExtractStats:
    """What extraction saw and why faces were dropped."""

    frames_read: int = 0
    frames_sampled: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    align_seconds: float = 0.0  # landmarks + matrix + warp, summed over the faces aligned
    aligned: int = 0
    check_seconds: float = 0.0  # the face check, summed over the faces checked
    checked: int = 0

    def summary(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        ms = 1000.0 * self.seconds / max(self.frames_sampled, 1)
        align = (f", alignment {1000.0 * self.align_seconds / self.aligned:.1f} ms per face"
                 if self.aligned else "")
        if self.checked:
            align += f", face check {1000.0 * self.check_seconds / self.checked:.1f} ms per face"
        return (f"frames read {self.frames_read}, sampled {self.frames_sampled}, faces kept {self.kept}; "
                f"dropped: {drops}; {ms:.1f} ms per sampled frame{align}")


# The face check's view: the same five points placed in a wider, fixed-size crop, so dlib's
# frontal detector (a HOG window of 80 px, trained on boxes with some context around the face)
# sees the face's box about 88 px wide with its surroundings, whatever the face set's side. On
# the real clips it finds every true face there and nothing at all on the Haar false
# detections (an arm, a dress, a wall); in the template's own tight crop true faces scored
# barely above the threshold (docs/faces.md "The face check").
CHECK_TEMPLATE = AlignTemplate(size=160, eye_distance=0.21, eye_line=0.43)
CHECK_MIN_SCORE = 0.0       # the detector's own decision threshold
CHECK_CENTRE_TOLERANCE = 0.15  # the detection's centre within this share of the side of where the face sits


class FaceCheck:
    """Is there a face where the five landmarks say? dlib's frontal face detector (HOG), run on
    a `CHECK_TEMPLATE` view of the landmarks, must find a face centred where the template puts
    it. The Haar cascade and the 5-point model both answer on anything face-like; this is a
    second, independent detector on the aligned view."""

    def __init__(self, min_score: float = CHECK_MIN_SCORE) -> None:
        try:
            import dlib
        except ImportError as exc:
            from swapstream.faces.judge import JudgeUnavailable

            raise JudgeUnavailable(
                "the face check needs dlib: pip install 'swapstream[landmarks]' (the dlib-bin wheel)") from exc
        self._detector = dlib.get_frontal_face_detector()
        self.min_score = float(min_score)
        self._dst = CHECK_TEMPLATE.points() - 0.5  # pixel indices, as Aligner.from_landmarks

    def view(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The CHECK_TEMPLATE crop of `frame` placed by five landmarks (frame pixels)."""
        pts = np.asarray(landmarks, np.float64).reshape(5, 2)
        return warp_face(frame, Alignment(umeyama(pts, self._dst), pts.astype(np.float32), CHECK_TEMPLATE.size))

    def score(self, frame: np.ndarray, landmarks: np.ndarray) -> float:
        """The detector's best score for a face centred in the view (-inf when it finds none;
        only detections scoring above -1 are seen)."""
        view = self.view(frame, landmarks)
        rgb = np.ascontiguousarray(view[:, :, ::-1]) if view.ndim == 3 else view
        rects, scores, _ = self._detector.run(rgb, 0, -1.0)
        side = float(CHECK_TEMPLATE.size)
        best = -math.inf
        for rect, s in zip(rects, scores):
            cx, cy = (rect.left() + rect.right()) / 2 / side, (rect.top() + rect.bottom()) / 2 / side
            # where the detector puts the box of an aligned face: (0.49, 0.49-0.56) of the side
            if abs(cx - 0.5) <= CHECK_CENTRE_TOLERANCE and abs(cy - 0.52) <= CHECK_CENTRE_TOLERANCE:
                best = max(best, float(s))
        return best

    def __call__(self, frame: np.ndarray, landmarks: np.ndarray) -> bool:
        """True when the detector finds a face where the landmarks are (score >= min_score)."""
        return self.score(frame, landmarks) >= self.min_score


def sharpness(face: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low means blurry."""
    return float(cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _thumb(face: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)


def _load_synth_params(video: str) -> dict[str, np.ndarray] | None:
    """Ground-truth render parameters written by `swapstream synth`, if this video has them."""
    path = sidecar_path(video)
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in ("identity", "pose", "pose_names", "size") if k in data.files}


def extract_faces(videos: list[str], every: int = 10, size: int = 160, margin: float = 0.2,
                  min_sharpness: float = 10.0, dup_threshold: float = 1.0,
                  detector: HaarDetector | None = None, progress: bool = True,
                  template: AlignTemplate | None = None, align: bool = True,
                  aligner: Aligner | None = None, face_check: bool | FaceCheck = True,
                  ) -> tuple[FaceSet, ExtractStats]:
    """Extract the largest face of every `every`-th frame of each video into a FaceSet.

    With `align` (the default) each face is warped to `template` (default AlignTemplate(size));
    the set records the template, each face's 2x3 matrix and its five landmarks, and `margin`
    is not used. With align=False it is the Haar square grown by `margin`, resized to `size`.
    With `face_check` (aligned only; True or a FaceCheck) a face that dlib's frontal detector
    does not find in the landmarks' wider view is dropped ("not a face"). A crop is dropped
    when its Laplacian variance is below `min_sharpness` or when its 16x16 grey thumbnail
    differs from the previous kept face of the same video by less than `dup_threshold` grey
    levels on average. Raises InputError if no face is kept.
    """
    if every < 1 or size < 8 or margin < 0:
        raise InputError("--every must be >= 1, --size >= 8 and --margin >= 0")
    if align:
        if template is None:
            template = AlignTemplate(size=size)
        elif template.size != size:
            raise InputError(f"the template is {template.size} px but --size is {size}")
        aligner = aligner or Aligner(template)
        if aligner.template != template:
            raise ValueError("the aligner's template differs from `template`")
    checker = None
    if align and face_check:
        checker = face_check if isinstance(face_check, FaceCheck) else FaceCheck()
    detector = detector or HaarDetector()
    stats = ExtractStats()
    faces, sources, frame_idx, boxes, poses, identities = [], [], [], [], [], []
    matrices, landmarks = [], []
    synth_all = True
    pose_names = frame_size = None
    start = time.perf_counter()
    for video in videos:
        synth = _load_synth_params(video)
        synth_all = synth_all and synth is not None and "pose" in synth
        if synth is not None and "pose_names" in synth:
            pose_names, frame_size = synth["pose_names"], synth.get("size")
        last_thumb = None
        with VideoReader(video) as reader:
            bar = tqdm(total=reader.frame_count, desc=f"extract {os.path.basename(video)}", unit="frame",
                       disable=not progress, file=sys.stderr, leave=False)
            for index, frame in enumerate(reader):
                stats.frames_read += 1
                bar.update(1)
                if index % every:
                    continue
                stats.frames_sampled += 1
                found = detector.detect(frame)
                if not found:
                    stats.dropped["no face"] += 1
                    continue
                box = found[0]
                if align:
                    t0 = time.perf_counter()
                    try:
                        al = aligner.align(frame, box)
                    except ValueError:  # the box lies (mostly) outside the frame
                        stats.dropped["no landmarks"] += 1
                        continue
                    if not plausible(al.landmarks, box, al.roll):
                        stats.dropped["implausible landmarks"] += 1
                        continue
                    crop = warp_face(frame, al)
                    stats.align_seconds += time.perf_counter() - t0
                    stats.aligned += 1
                    if checker is not None:
                        t0 = time.perf_counter()
                        is_face = checker(frame, al.landmarks)
                        stats.check_seconds += time.perf_counter() - t0
                        stats.checked += 1
                        if not is_face:
                            stats.dropped["not a face"] += 1
                            continue
                    stored_box = box.as_tuple()
                else:
                    crop, transform = crop_face(frame, box, size, margin)
                    stored_box = transform.box.as_tuple()
                if sharpness(crop) < min_sharpness:
                    stats.dropped["blurry"] += 1
                    continue
                thumb = _thumb(crop)
                if last_thumb is not None and float(np.abs(thumb - last_thumb).mean()) < dup_threshold:
                    stats.dropped["near-duplicate"] += 1
                    continue
                last_thumb = thumb
                faces.append(crop)
                sources.append(video)
                frame_idx.append(index)
                boxes.append(stored_box)
                if align:
                    matrices.append(al.matrix)
                    landmarks.append(al.landmarks)
                if synth is not None and "pose" in synth and index < len(synth["pose"]):
                    poses.append(synth["pose"][index])
                    identities.append(int(synth["identity"]))
                else:
                    synth_all = False
            bar.close()
    stats.seconds = time.perf_counter() - start
    stats.kept = len(faces)
    if not faces:
        raise FaceSetError(f"no usable face found in {', '.join(videos)} ({stats.summary()})")
    extra: dict[str, np.ndarray] = {}
    if synth_all and pose_names is not None:
        # Enough to re-render each face's frame with another identity: the swap's ground truth.
        extra = {"identity": np.asarray(identities, np.int64), "pose": np.asarray(poses, np.float64),
                 "pose_names": np.asarray(pose_names, np.str_)}
        if frame_size is not None:
            extra["frame_size"] = np.asarray(frame_size, np.int64)
    fs = FaceSet(np.stack(faces), np.asarray(sources, np.str_), np.asarray(frame_idx, np.int64),
                 np.asarray(boxes, np.int64), 0.0 if align else margin, extra,
                 template if align else None,
                 np.asarray(matrices, np.float64) if align else None,
                 np.asarray(landmarks, np.float32) if align else None)
    return fs, stats


def main(argv: list[str] | None = None) -> int:
    """`swapstream extract VIDEO... --out SET.npz [--every N] [--size PX] [--margin F]`."""
    defaults = AlignTemplate()
    parser = ArgumentParser(prog="swapstream extract", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="video files of one person")
    parser.add_argument("--out", required=True, help="face set to write (.npz)")
    parser.add_argument("--every", type=int, default=10, help="take every Nth frame (default 10)")
    parser.add_argument("--size", type=int, default=defaults.size,
                        help=f"crop side in pixels (default {defaults.size})")
    parser.add_argument("--eye-distance", type=float, default=defaults.eye_distance,
                        help="alignment template: distance of the eye centres, share of the crop side "
                             f"(default {defaults.eye_distance}; larger = tighter framing)")
    parser.add_argument("--eye-line", type=float, default=defaults.eye_line,
                        help=f"alignment template: height of the eyes, share of the side (default {defaults.eye_line})")
    parser.add_argument("--no-align", action="store_true",
                        help="axis-aligned Haar squares grown by --margin instead of aligned faces")
    parser.add_argument("--margin", type=float, default=None,
                        help="with --no-align: margin around the detected box, fraction of its side on each side "
                             "(default 0.2); aligned faces are framed by the template instead")
    parser.add_argument("--min-sharpness", type=float, default=10.0,
                        help="drop crops whose Laplacian variance is below this (default 10)")
    parser.add_argument("--dedup", type=float, default=1.0,
                        help="drop a face whose 16x16 grey thumbnail is within this many grey levels "
                             "of the last kept one (default 1; 0 keeps all)")
    parser.add_argument("--no-face-check", action="store_true",
                        help="keep every aligned crop whose landmarks are plausible, without dlib's frontal detector "
                             "confirming a face there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def body() -> int:
        args = parser.parse_args(argv)
        if not args.out.endswith(".npz"):
            raise InputError(f"--out must end in .npz, got {args.out}")
        for name in ("eye_distance", "eye_line"):
            if not math.isfinite(getattr(args, name)):
                raise InputError(f"--{name.replace('_', '-')} must be a number")
        template = None
        if not args.no_align:
            if args.margin is not None:
                print("swapstream extract: note: --margin applies to --no-align crops; aligned faces are "
                      "framed by the template (--eye-distance, --eye-line)", file=sys.stderr)
            if args.size < 8:
                raise InputError("--size must be >= 8")
            try:
                template = AlignTemplate(size=args.size, eye_distance=args.eye_distance, eye_line=args.eye_line)
            except ValueError as exc:
                raise InputError(str(exc)) from None
        margin = 0.2 if args.margin is None else args.margin
        fs, stats = extract_faces(args.videos, args.every, args.size, margin,
                                  args.min_sharpness, args.dedup, progress=not args.quiet,
                                  template=template, align=not args.no_align,
                                  face_check=not args.no_face_check)
        save_faceset(args.out, fs)
        kind = (f"aligned (eye distance {template.eye_distance}, eye line {template.eye_line})" if template
                else f"Haar squares, margin {margin}")
        print(f"{args.out}: {len(fs)} faces {fs.size}x{fs.size} {kind}; {stats.summary()}")
        return 0

    return run_cli(body, "swapstream extract")
