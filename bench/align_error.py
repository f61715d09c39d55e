"""Alignment error on synthetic faces: the five landmarks against where the renderer drew them,
the true eyes' stillness in the aligned crop, and the cost per face.

    .venv/bin/python bench/align_error.py [--identities 30] [--poses 4] [--size 256]

Ground truth from faces/synth.py's head model (as tests/test_align.py): the ends of the lid
curves (dlib's eye corners) and the point between the nostrils (dlib's nose base). Errors are in %
of the true eye distance, in the face's own frame:
  raw          mean distance of dlib's five points from the truth
  offset-free  the same after removing each point's mean offset, measured on the other half of
               the identities (a fixed difference of definition between dlib's corners, learnt on
               real faces, and the cartoon's lid ends is not an alignment error; it moves every
               crop alike)
  per-identity spread from pose to pose of one face (what shakes a crop)
  crop eyes    spread of the true eye centres in the aligned crop (x, y)
Cost: landmarks + matrix, and the warp to the 160 px template, median ms per face.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from swapstream.faces import synth
from swapstream.faces.align import Aligner, AlignTemplate, warp_face
from swapstream.faces.detect import HaarDetector
from swapstream.faces.synth import identity_from_seed, pose_sequence, render_face


def truth_points(identity: int, pose, size) -> np.ndarray:
    """The renderer's five points in dlib's order (see tests/test_align.py)."""
    ident = identity_from_seed(identity)
    head = synth._Head(ident, pose, size[0], size[1])
    pts = []
    for side, ends in ((1, (-1, 0)), (-1, (0, -1))):
        upper, _, _ = synth._eye_curves(ident, pose, side)
        pts += [head.project(upper[k][None], -0.05)[0] for k in ends]
    pts.append(head.project(np.array([[0.0, ident.eye_y + ident.nose_length + 0.025]]), 0.12)[0])
    return np.array(pts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--identities", type=int, default=30)
    p.add_argument("--poses", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    size = (args.size, args.size)
    aligner, haar = Aligner(AlignTemplate()), HaarDetector()
    rows, idents, crop_eyes, t_lm, t_warp = [], [], [], [], []
    missed = 0
    for ident in range(1, args.identities + 1):
        for pose in pose_sequence(20 * args.poses, seed=300 + ident)[::20]:
            frame = render_face(ident, pose, size)
            boxes = haar.detect(frame)
            if not boxes:
                missed += 1
                continue
            truth = truth_points(ident, pose, size)
            t0 = time.perf_counter()
            al = aligner.align(frame, boxes[0])
            t1 = time.perf_counter()
            warp_face(frame, al)
            t_lm.append(t1 - t0)
            t_warp.append(time.perf_counter() - t1)
            v = truth[0:2].mean(0) - truth[2:4].mean(0)
            ed = float(np.linalg.norm(v))
            c, s = v / ed
            rows.append((al.landmarks - truth) @ np.array([[c, s], [-s, c]]).T / ed)
            idents.append(ident)
            ct = al.to_crop(truth)
            crop_eyes.append((ct[:4].mean(0), np.linalg.norm(ct[0:2].mean(0) - ct[2:4].mean(0))))
    err, idents = np.array(rows), np.array(idents)
    raw = 100 * np.linalg.norm(err, axis=2).mean()
    half = idents <= args.identities // 2
    free = []
    for test, train in ((half, ~half), (~half, half)):
        free.append(np.linalg.norm(err[test] - err[train].mean(0), axis=2))
    free = 100 * np.concatenate(free).mean()
    within = 100 * np.mean([np.linalg.norm(err[idents == i] - err[idents == i].mean(0), axis=2).mean()
                            for i in np.unique(idents)])
    centres, dists = np.array([c for c, _ in crop_eyes]), np.array([d for _, d in crop_eyes])
    eyes = 100 * centres.std(0) / dists.mean()
    print(f"{len(err)} faces ({args.identities} identities x {args.poses} poses, {args.size} px; Haar missed {missed})")
    print(f"landmark error, % of eye distance: raw {raw:.2f}, offset-free {free:.2f}, per-identity spread {within:.2f}")
    print(f"true eye centres in the aligned crop: spread x {eyes[0]:.2f}%, y {eyes[1]:.2f}% of the eye distance; "
          f"the true eye distance varies {100 * dists.std() / dists.mean():.2f}% between crops")
    print(f"cost per face: landmarks + matrix {1000 * np.median(t_lm):.2f} ms, "
          f"warp to 160 px {1000 * np.median(t_warp):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
