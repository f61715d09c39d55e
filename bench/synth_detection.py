"""Haar detection rate on synthetic faces, per identity and overall, plus render time.

    .venv/bin/python bench/synth_detection.py [--identities 6] [--frames 100] [--size 256x256]
        [--every 3] [--first-identity 0] [--sheet /tmp/synth_sheet.png] [--through-video]

Each identity gets its own motion seed (1000 + identity) and `--frames` frames sampled every
`--every` frames of its talking-head sequence, so the frames cover blinks, speech, head motion,
light and background. The detector is the project's HaarDetector with its defaults (the one
`swapstream extract` uses). `--through-video` also writes each identity's frames to an mp4 and
detects on the decoded frames, as `extract` sees them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np

from swapstream.faces.detect import HaarDetector
from swapstream.faces.files import write_png
from swapstream.faces.synth import identity_from_seed, pose_sequence, render_face
from swapstream.faces.synth_cli import parse_size
from swapstream.faces.video import VideoReader, VideoWriter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--first-identity", type=int, default=0)
    parser.add_argument("--frames", type=int, default=100, help="frames per identity")
    parser.add_argument("--every", type=int, default=3, help="sample every Nth frame of the motion")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--sheet", help="write a contact sheet PNG (first 8 sampled frames per identity)")
    parser.add_argument("--through-video", action="store_true", help="also detect on mp4-decoded frames")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    detector = HaarDetector()
    render_s = detect_s = 0.0
    total = hits = hits_video = 0
    rows = []
    print(f"{'identity':>8} {'skin':>5} {'hair':>7} {'found':>7} {'rate':>6}" +
          (f" {'mp4 rate':>8}" if args.through_video else ""))
    for ident_seed in range(args.first_identity, args.first_identity + args.identities):
        ident = identity_from_seed(ident_seed)
        poses = pose_sequence(args.frames * args.every, seed=1000 + ident_seed)[::args.every]
        frames, found = [], 0
        for pose in poses:
            t0 = time.perf_counter()
            frame = render_face(ident, pose, size)
            t1 = time.perf_counter()
            boxes = detector.detect(frame)
            detect_s += time.perf_counter() - t1
            render_s += t1 - t0
            found += bool(boxes)
            frames.append(frame)
            if args.sheet and len(frames) <= 8:
                shown = frame.copy()
                for b in boxes[:1]:
                    cv2.rectangle(shown, (b.x, b.y), (b.x + b.w, b.y + b.h), (0, 255, 0), 1)
                rows.append((ident_seed, shown))
        line = (f"{ident_seed:>8} {np.mean(ident.skin):>5.0f} {ident.hair_style:>7} "
                f"{found:>3}/{len(poses):<3} {found / len(poses):>6.3f}")
        if args.through_video:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "v.mp4")
                with VideoWriter(path, 25.0, size) as writer:
                    for frame in frames:
                        writer.write(frame)
                with VideoReader(path) as reader:
                    found_v = sum(bool(detector.detect(f)) for f in reader)
            hits_video += found_v
            line += f" {found_v / len(poses):>8.3f}"
        print(line, flush=True)
        total += len(poses)
        hits += found
    print(f"overall: {hits}/{total} = {hits / total:.4f} at {size[0]}x{size[1]}"
          + (f"; after mp4 encode/decode {hits_video}/{total} = {hits_video / total:.4f}"
             if args.through_video else ""))
    print(f"render {1000 * render_s / total:.2f} ms/frame, Haar detect {1000 * detect_s / total:.2f} ms/frame "
          f"(one process, shared machine: timings are indicative)")
    if args.sheet and rows:
        per = {}
        for ident_seed, img in rows:
            per.setdefault(ident_seed, []).append(img)
        sheet = np.vstack([np.hstack(imgs) for imgs in per.values()])
        write_png(args.sheet, sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
