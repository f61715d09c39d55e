"""SSIM and PSNR cost of the provenance watermark on smooth faces, adaptive strength against plain.

    nice -n 10 .venv/bin/python bench/watermark_ssim.py [--data DIR] [--json OUT.json]

Synthetic: swapstream.faces.synth renders (4 identities x 4 poses, 256x256, the face box
(51, 60, 152, 152)) blurred by a Gaussian of sigma 1 as a stand-in for a model's smoother output;
SSIM against the sharp render (the truth), with the demo's SSIM (`clients/demo.face_ssim`; the face
box resized to 128 px), without the mark, with the plain mark (`adaptive=False`) and with the
default (adaptive) mark; plus the detection score after JPEG q75. Real: the first face of each
clip (DIR/*.mp4, DIR/more/*.mp4), blurred by sigma 2 (the bench's "swapped-like"), SSIM and PSNR
of the marked face box against the unmarked one.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from watermark_bench import PAYLOAD, face_boxes, jpeg, psnr, read_frames  # noqa: E402

from swapstream.clients.demo import face_ssim as ssim  # noqa: E402  (the demo's own SSIM)
from swapstream.faces import watermark as wm  # noqa: E402
from swapstream.faces.files import write_text  # noqa: E402
from swapstream.faces.synth import pose_sequence, render_face  # noqa: E402

BOX = (51, 60, 152, 152)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    x, y, w, h = BOX
    def face(f: np.ndarray) -> np.ndarray:
        return cv2.resize(f[y:y + h, x:x + w], (128, 128), interpolation=cv2.INTER_AREA)

    synth = {"unmarked": [], "plain": [], "adaptive": []}
    scores = {"plain": [], "adaptive": []}
    for seed in (3, 11, 21, 40):
        for pose in pose_sequence(4, seed=seed):
            truth = render_face(seed, pose, (256, 256))
            smooth = cv2.GaussianBlur(truth, (0, 0), 1.0)
            synth["unmarked"].append(ssim(face(truth), face(smooth)))
            for mode in ("plain", "adaptive"):
                marked = wm.embed(smooth, BOX, PAYLOAD, adaptive=mode == "adaptive")
                synth[mode].append(ssim(face(truth), face(marked)))
                scores[mode].append(wm.analyze(jpeg(marked)).score)
    real = {"plain": {"ssim": [], "psnr": []}, "adaptive": {"ssim": [], "psnr": []}}
    videos = sorted(glob.glob(os.path.join(args.data, "*.mp4")) + glob.glob(os.path.join(args.data, "more", "*.mp4")))
    for path in videos:
        frames, _ = read_frames(path, 10)
        boxes = face_boxes(frames)
        i = next((k for k, b in enumerate(boxes) if b is not None), None)
        if i is None:
            continue
        bx, by, bw, bh = boxes[i]
        smooth = frames[i].copy()
        smooth[by:by + bh, bx:bx + bw] = cv2.GaussianBlur(frames[i][by:by + bh, bx:bx + bw], (0, 0), 2.0)
        for mode in ("plain", "adaptive"):
            marked = wm.embed(smooth, boxes[i], PAYLOAD, adaptive=mode == "adaptive")
            a, b = marked[by:by + bh, bx:bx + bw], smooth[by:by + bh, bx:bx + bw]
            real[mode]["ssim"].append(ssim(a, b))
            real[mode]["psnr"].append(psnr(a, b))
    report = {
        "synthetic_ssim_to_truth": {k: round(float(np.mean(v)), 4) for k, v in synth.items()},
        "synthetic_ssim_cost": {m: round(float(np.mean(synth["unmarked"]) - np.mean(synth[m])), 4)
                                for m in ("plain", "adaptive")},
        "synthetic_jpeg75_score": {m: {"min": round(float(np.min(v)), 1), "median": round(float(np.median(v)), 1)}
                                   for m, v in scores.items()},
        "real_swapped_like": {m: {"clips": len(v["ssim"]),
                                  "ssim_marked_vs_unmarked": round(float(np.mean(v["ssim"])), 4),
                                  "psnr_db": round(float(np.mean(v["psnr"])), 2)} for m, v in real.items()},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
