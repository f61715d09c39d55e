"""Render speed of the synthetic face renderer: milliseconds per frame at a few frame sizes.

    .venv/bin/python bench/synth_speed.py [--frames 40] [--sizes 256x256,512x512,1280x720] [--identity 6]

Renders the same talking-head motion (one warm-up frame first) and reports the median and the
95th percentile per frame size. It reports, it does not judge: on a shared machine the figures
vary with the load.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from swapstream.faces.synth import identity_from_seed, pose_sequence, render_face
from swapstream.faces.synth_cli import parse_size


def render_ms(identity: int, frames: int, size: tuple[int, int]) -> np.ndarray:
    """Milliseconds for each of `frames` renders at `size` (after one warm-up render)."""
    ident = identity_from_seed(identity)
    poses = pose_sequence(frames, seed=identity)
    render_face(ident, poses[0], size)
    times = []
    for pose in poses:
        start = time.perf_counter()
        render_face(ident, pose, size)
        times.append(1000.0 * (time.perf_counter() - start))
    return np.asarray(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames per size (default 40)")
    parser.add_argument("--sizes", default="256x256,512x512,1280x720", help="comma-separated WxH")
    parser.add_argument("--identity", type=int, default=6, help="identity seed (default 6)")
    args = parser.parse_args(argv)
    if args.frames <= 0:
        parser.error("--frames must be > 0")
    print("| frame size | frames | median ms/frame | p95 ms/frame |")
    print("|---|---|---|---|")
    for text in args.sizes.split(","):
        size = parse_size(text)
        ms = render_ms(args.identity, args.frames, size)
        print(f"| {size[0]}x{size[1]} | {len(ms)} | {np.median(ms):.2f} | {np.percentile(ms, 95):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
