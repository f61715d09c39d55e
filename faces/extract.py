"""`swapstream extract`: build a face set (.npz) from videos of one person.

The data preparation: every Nth frame, Haar detection, a square crop with a margin,
resize, drop blurry crops and near-duplicates, save uncompressed.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

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

    def summary(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        ms = 1000.0 * self.seconds / max(self.frames_sampled, 1)
        return (f"frames read {self.frames_read}, sampled {self.frames_sampled}, faces kept {self.kept}; "
                f"dropped: {drops}; {ms:.1f} ms per sampled frame")


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
                  detector: HaarDetector | None = None, progress: bool = True) -> tuple[FaceSet, ExtractStats]:
    """Extract the largest face of every `every`-th frame of each video into a FaceSet.

    A crop is dropped when its Laplacian variance is below `min_sharpness` or when its 16x16
    grey thumbnail differs from the previous kept face of the same video by less than
    `dup_threshold` grey levels on average. Raises InputError if no face is kept.
    """
    if every < 1 or size < 8 or margin < 0:
        raise InputError("--every must be >= 1, --size >= 8 and --margin >= 0")
    detector = detector or HaarDetector()
    stats = ExtractStats()
    faces, sources, frame_idx, boxes, poses, identities = [], [], [], [], [], []
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
                crop, transform = crop_face(frame, box, size, margin)
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
                boxes.append(transform.box.as_tuple())
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
                 np.asarray(boxes, np.int64), margin, extra)
    return fs, stats


def main(argv: list[str] | None = None) -> int:
    """`swapstream extract VIDEO... --out SET.npz [--every N] [--size PX] [--margin F]`."""
    parser = ArgumentParser(prog="swapstream extract", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="video files of one person")
    parser.add_argument("--out", required=True, help="face set to write (.npz)")
    parser.add_argument("--every", type=int, default=10, help="take every Nth frame (default 10)")
    parser.add_argument("--size", type=int, default=160, help="crop side in pixels (default 160)")
    parser.add_argument("--margin", type=float, default=0.2,
                        help="margin around the detected box, fraction of its side on each side (default 0.2)")
    parser.add_argument("--min-sharpness", type=float, default=10.0,
                        help="drop crops whose Laplacian variance is below this (default 10)")
    parser.add_argument("--dedup", type=float, default=1.0,
                        help="drop a face whose 16x16 grey thumbnail is within this many grey levels "
                             "of the last kept one (default 1; 0 keeps all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def body() -> int:
        args = parser.parse_args(argv)
        if not args.out.endswith(".npz"):
            raise InputError(f"--out must end in .npz, got {args.out}")
        fs, stats = extract_faces(args.videos, args.every, args.size, args.margin,
                                  args.min_sharpness, args.dedup, progress=not args.quiet)
        save_faceset(args.out, fs)
        print(f"{args.out}: {len(fs)} faces {fs.size}x{fs.size}; {stats.summary()}")
        return 0

    return run_cli(body, "swapstream extract")
