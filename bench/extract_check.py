"""The extract face check (faces/extract.py FaceCheck): faces kept with and without it, its
scores, its cost per face, and contact sheets of what it rejects and keeps.

    .venv/bin/python bench/extract_check.py VIDEO [VIDEO...] [--every 2] [--out-dir DIR] [--json OUT.json]

For each video: `extract_faces` without the check (what a plain extract kept before), the
detector's score of each of those faces (faces scoring below the threshold are the ones the
check drops), then `extract_faces` with the check (the kept count, the check's cost per face
from ExtractStats). With --out-dir, DIR/NAME_rejected.png and DIR/NAME_kept.png show the
faces the check rejects and an even sample of those it keeps, each labelled with its score.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np

from swapstream.faces.extract import FaceCheck, extract_faces
from swapstream.faces.files import write_png, write_text
from swapstream.faces.video import VideoReader


def sheet(faces: list[np.ndarray], labels: list[str], per_row: int = 12, tile: int = 96) -> np.ndarray:
    """Faces in rows of `per_row` tiles, each with its label."""
    tiles = []
    for face, label in zip(faces, labels):
        t = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_AREA).copy()
        cv2.putText(t, label, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1, cv2.LINE_AA)
        tiles.append(t)
    if not tiles:
        return np.full((tile, tile * per_row, 3), 255, np.uint8)
    tiles += [np.zeros((tile, tile, 3), np.uint8)] * (-len(tiles) % per_row)
    return np.vstack([np.hstack(tiles[r:r + per_row]) for r in range(0, len(tiles), per_row)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videos", nargs="+")
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--out-dir")
    p.add_argument("--json")
    args = p.parse_args(argv)
    check = FaceCheck()
    report = {"every": args.every, "min_score": check.min_score, "videos": {}}
    for video in args.videos:
        name = os.path.splitext(os.path.basename(video))[0]
        before, st_before = extract_faces([video], every=args.every, progress=False, face_check=False)
        wanted = set(before.frame_index.tolist())
        frames = {i: f for i, f in enumerate(VideoReader(video)) if i in wanted}
        scores = np.array([check.score(frames[int(i)], lm) for i, lm in zip(before.frame_index, before.landmarks)])
        after, st_after = extract_faces([video], every=args.every, progress=False, face_check=check)
        low = scores < check.min_score
        finite = scores[np.isfinite(scores)]
        row = {"sampled": st_before.frames_sampled, "kept_without_check": len(before), "kept_with_check": len(after),
               "rejected_of_those_kept": int(low.sum()), "dropped_with_check": dict(st_after.dropped),
               "score_min_kept": float(scores[~low].min()) if (~low).any() else None,
               "score_max_rejected": float(finite[finite < check.min_score].max())
               if (finite < check.min_score).any() else None,
               "check_ms_per_face": 1000.0 * st_after.check_seconds / max(st_after.checked, 1),
               "align_ms_per_face": 1000.0 * st_after.align_seconds / max(st_after.aligned, 1),
               "ms_per_sampled_frame": 1000.0 * st_after.seconds / max(st_after.frames_sampled, 1)}
        report["videos"][name] = row
        print(f"{name}: {st_before.frames_sampled} sampled, kept {len(before)} -> {len(after)} with the check "
              f"({int(low.sum())} of the unchecked set score below {check.min_score}); "
              f"kept scores >= {row['score_min_kept']}, rejected <= {row['score_max_rejected']}; "
              f"check {row['check_ms_per_face']:.1f} ms per face (alignment {row['align_ms_per_face']:.1f}); "
              f"drops {dict(st_after.dropped)}", flush=True)
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            rej = np.nonzero(low)[0]
            write_png(os.path.join(args.out_dir, f"{name}_rejected.png"),
                      sheet([before.faces[i] for i in rej], [f"{before.frame_index[i]}: {scores[i]:.2f}" for i in rej]))
            keep = np.nonzero(~low)[0]
            keep = keep[np.linspace(0, len(keep) - 1, min(len(keep), 36)).astype(int)] if len(keep) else keep
            labels = [f"{before.frame_index[i]}: {scores[i]:.2f}" for i in keep]
            write_png(os.path.join(args.out_dir, f"{name}_kept.png"), sheet([before.faces[i] for i in keep], labels))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
