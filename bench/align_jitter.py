"""How much an aligned paste shakes: the alignment's frame-to-frame jitter with and without the
server's landmark smoothing, on a real video.

    .venv/bin/python bench/align_jitter.py VIDEO [--frames 200] [--min-cutoff 1.5] [--beta 0.8]

Runs the server's tracker and aligner (server/tracking.py, faces/align.py) over the frames, once
with the One-Euro filter on the landmarks and once without. For each, the crop square's four
corners in the frame are followed over time; jitter = mean absolute second difference of the
corners (smooth motion has none; frame-to-frame shake does), lag = mean distance of the smoothed
corners from the raw ones; both in % of the eye distance.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from swapstream.faces.align import Aligner, AlignTemplate, eye_distance
from swapstream.faces.detect import HaarDetector
from swapstream.faces.video import VideoReader
from swapstream.server.pipeline import PipelineConfig
from swapstream.server.tracking import FaceTracker, OneEuroPoints


def corners(aligner: Aligner, points: np.ndarray) -> np.ndarray:
    inv = aligner.from_landmarks(points).inverse()
    s = aligner.template.size
    return np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64) @ inv[:, :2].T + inv[:, 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--min-cutoff", type=float, default=PipelineConfig.landmark_min_cutoff)
    p.add_argument("--beta", type=float, default=PipelineConfig.landmark_beta)
    args = p.parse_args(argv)
    c = PipelineConfig()
    aligner = Aligner(AlignTemplate())
    tracker = FaceTracker(HaarDetector(max_side=c.detect_max_side, min_size_frac=c.min_face_frac),
                          HaarDetector(scale_factor=1.2, min_neighbors=4, max_side=c.roi_max_side, min_size_frac=0.3),
                          redetect_every=c.redetect_every, smoothing=c.smoothing, landmark_filter=None)
    smoother = OneEuroPoints(min_cutoff=args.min_cutoff, beta=args.beta)
    raw, smooth, eds = [], [], []
    with VideoReader(args.video) as reader:
        for i, frame in enumerate(reader):
            if i >= args.frames:
                break
            faces = tracker.update_faces(frame)
            if not faces:
                smoother.reset()
                raw.append(None)
                smooth.append(None)
                continue
            f = faces[0]
            pts = aligner.landmarks(frame, f.box).astype(np.float64)
            tracker.follow_landmarks(f.track_id, pts)
            ed = eye_distance(pts)
            raw.append(corners(aligner, pts))
            smooth.append(corners(aligner, smoother(pts, ed)))
            eds.append(ed)
    ed = float(np.mean(eds))

    def jitter(seq) -> float:
        acc = [np.abs(seq[i + 1] - 2 * seq[i] + seq[i - 1]).mean() for i in range(1, len(seq) - 1)
               if seq[i - 1] is not None and seq[i] is not None and seq[i + 1] is not None]
        return 100.0 * float(np.mean(acc)) / ed

    lag = 100.0 * float(np.mean([np.abs(a - b).mean() for a, b in zip(raw, smooth) if a is not None])) / ed
    print(f"{args.video}: {sum(r is not None for r in raw)} frames with a face, eye distance {ed:.0f} px; "
          f"jitter raw {jitter(raw):.2f}%, smoothed {jitter(smooth):.2f}% of the eye distance per frame; "
          f"smoothed - raw {lag:.2f}% (min_cutoff {args.min_cutoff}, beta {args.beta})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
