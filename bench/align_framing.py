"""The no-network ceiling of a face framing: detail the paste-back keeps, old Haar crop against
aligned templates.

    .venv/bin/python bench/align_framing.py VIDEO [--every 3] [--out-size 128] [--set-size 160]
        [--framings 0.27:0.42,0.30:0.40,0.32:0.39,0.35:0.37] [--json OUT.json]

For every judged frame dlib's own detector and 68-point model find the source's face once
(faces/judge.py FaceJudge); each variant then passes the frame through its crop with no network
and pastes it back, and the judge's detail measure (`face_detail`: Laplacian variance inside the
source's landmark hull, the face scaled to 128 px wide) is summed over frames, swap over source:
  haar S m      the old path: the Haar square grown by margin m, at S px (faces/crop.py)
  aligned d:l   the Haar box -> dlib 5 points -> template (eye distance d, eye line l) at the face
                set's side, resized to the model's output side, pasted back through the inverse
                warp; once over the whole square, once with faces/regions.py's blend mask (what the
                server pastes: outside the mask the frame's own pixels stay)
Also per framing: the share of the 68-point hull inside the crop square and under the blend
mask (> 0.5), and the face ellipse's extent in the crop (clipped when it leaves 0..1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np

from swapstream.faces.align import Aligner, AlignTemplate, pass_through, rescale
from swapstream.faces.crop import crop_face, paste_back
from swapstream.faces.detect import HaarDetector
from swapstream.faces.files import write_text
from swapstream.faces.judge import FaceJudge, face_detail
from swapstream.faces.regions import FACE_ELLIPSE, blend_mask
from swapstream.faces.video import VideoReader


def hull_share(frame_shape, landmarks: np.ndarray, region_of_frame: np.ndarray) -> float:
    """Share of the landmark hull's pixels where `region_of_frame` (HxW float) is > 0.5."""
    hull = np.zeros(frame_shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    inside = hull > 0
    return float((region_of_frame[inside] > 0.5).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--out-size", type=int, default=128, help="model output side (default 128)")
    p.add_argument("--set-size", type=int, default=160, help="face-set side the templates are cut at (default 160)")
    p.add_argument("--haar", default="64:0.2,128:0.2", help="old-path variants SIZE:MARGIN,...")
    p.add_argument("--framings", default="0.27:0.42,0.30:0.40,0.32:0.39,0.35:0.37",
                   help="aligned variants EYE_DISTANCE:EYE_LINE,...")
    p.add_argument("--json")
    args = p.parse_args(argv)
    haar_variants = [(int(s), float(m)) for s, m in (v.split(":") for v in args.haar.split(","))]
    framings = [(float(d), float(e)) for d, e in (v.split(":") for v in args.framings.split(","))]
    judge, haar = FaceJudge(), HaarDetector()
    aligners = {f: Aligner(AlignTemplate(args.set_size, *f)) for f in framings}
    masks = {f: blend_mask(AlignTemplate(args.set_size, *f), args.out_size) for f in framings}
    sums: dict[str, list[float]] = {}
    cover: dict[str, list[float]] = {}
    source_sum = 0.0
    frames = 0
    t0 = time.perf_counter()

    def add(key: str, value: float) -> None:
        sums.setdefault(key, []).append(value)

    with VideoReader(args.video) as reader:
        for index, frame in enumerate(reader):
            if index % args.every:
                continue
            obs = judge.observe(frame, embed=False)
            boxes = haar.detect(frame)
            if obs is None or not boxes:
                continue
            lm = obs.landmarks
            src = face_detail(frame, lm)
            if not np.isfinite(src):
                continue
            frames += 1
            source_sum += src
            for size, margin in haar_variants:
                crop, tr = crop_face(frame, boxes[0], size, margin)
                add(f"haar {size} px, margin {margin}", face_detail(paste_back(frame, crop, tr), lm))
            for f, aligner in aligners.items():
                al = aligner.align(frame, boxes[0])
                name = f"aligned {f[0]:.2f}:{f[1]:.2f}, {args.set_size} -> {args.out_size} px"
                add(name + ", whole square", face_detail(pass_through(frame, al, args.out_size), lm))
                add(name + ", blend mask", face_detail(pass_through(frame, al, args.out_size, masks[f]), lm))
                out = rescale(al, args.out_size)
                inv = out.inverse()
                square = cv2.warpAffine(np.ones((args.out_size, args.out_size), np.float32), inv,
                                        (frame.shape[1], frame.shape[0]))
                under = cv2.warpAffine(np.asarray(masks[f]), inv, (frame.shape[1], frame.shape[0]))
                cover.setdefault(name + " hull in square", []).append(hull_share(frame.shape, lm, square))
                cover.setdefault(name + " hull under mask", []).append(hull_share(frame.shape, lm, under))
    if not frames:
        print("no frame with both a Haar and a dlib face", file=sys.stderr)
        return 2
    result = {"video": args.video, "frames": frames, "every": args.every, "seconds": time.perf_counter() - t0,
              "detail": {k: sum(v) / source_sum for k, v in sums.items()},
              "coverage": {k: float(np.mean(v)) for k, v in cover.items()}, "ellipse": {}}
    ex, ey, ax, ay = FACE_ELLIPSE
    for d, e in framings:
        result["ellipse"][f"{d:.2f}:{e:.2f}"] = {"top": e + (ey - ay) * d, "bottom": e + (ey + ay) * d,
                                                 "left": 0.5 - ax * d, "right": 0.5 + ax * d}
    print(f"{args.video}: {frames} frames (every {args.every}), {result['seconds']:.0f} s")
    print("| variant | detail |\n|---|---|")
    for k, v in result["detail"].items():
        print(f"| {k} | {v:.3f} |")
    for k, v in result["coverage"].items():
        print(f"{k}: {v:.3f}")
    for k, v in result["ellipse"].items():
        print(f"face ellipse {k}: " + ", ".join(f"{n} {x:.3f}" for n, x in v.items()))
    if args.json:
        write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
