"""`swapstream demo`: the whole chain on a fresh machine, with no arguments.

Each stage runs the public `swapstream` subcommand in a child process, exactly as a user
would, so the demo exercises the same contracts as scripts outside the repo and this module
imports nothing heavy (no TensorFlow in the client).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import cv2
import numpy as np

from faces.cliutil import ArgumentParser, run_cli
from faces.errors import InputError
from faces.faceset import load_faceset

IDENTITY_A, IDENTITY_B = 1, 2


def _swapstream(args: list[str], log: list[str]) -> None:
    """Run one `swapstream` subcommand; raise with its stderr tail if it fails."""
    cmd = [sys.executable, "-m", "clients.cli", *args]
    log.append(" ".join(["swapstream", *args]))
    print(f"\n$ swapstream {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"`swapstream {args[0]}` failed with exit code {proc.returncode}")


def contact_sheet(face_sets: dict[str, str], path: str, per_row: int = 12, rows: int = 2, tile: int = 64) -> None:
    """Write a PNG with `rows` rows of evenly spaced faces from each face set, labelled."""
    bands = []
    for label, fs_path in face_sets.items():
        faces = load_faceset(fs_path).faces
        pick = np.linspace(0, len(faces) - 1, min(len(faces), per_row * rows)).astype(int)
        tiles = [cv2.resize(faces[i], (tile, tile), interpolation=cv2.INTER_AREA) for i in pick]
        tiles += [np.zeros((tile, tile, 3), np.uint8)] * (per_row * rows - len(tiles))
        grid = np.vstack([np.hstack(tiles[r * per_row:(r + 1) * per_row]) for r in range(rows)])
        header = np.full((22, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(header, f"{label}: {len(faces)} faces ({os.path.basename(fs_path)})", (4, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        bands += [header, grid]
    cv2.imwrite(path, np.vstack(bands))


def main(argv: list[str] | None = None) -> int:
    """`swapstream demo [--a VIDEO --b VIDEO] [--out out/demo]`."""
    parser = ArgumentParser(prog="swapstream demo", description=__doc__.splitlines()[0])
    parser.add_argument("--a", help="video of person A (default: a synthetic identity)")
    parser.add_argument("--b", help="video of person B (default: another synthetic identity)")
    parser.add_argument("--out", default=os.path.join("out", "demo"), help="output folder (default out/demo)")
    parser.add_argument("--frames", type=int, default=600, help="frames per synthetic training video")

    def body() -> int:
        args = parser.parse_args(argv)
        if bool(args.a) != bool(args.b):
            raise InputError("give both --a and --b, or neither")
        start = time.perf_counter()
        out = args.out
        data = os.path.join(out, "data")
        os.makedirs(data, exist_ok=True)
        log: list[str] = []
        if args.a:
            video_a, video_b = args.a, args.b
            every = "2"
        else:
            video_a, video_b = os.path.join(data, "a.mp4"), os.path.join(data, "b.mp4")
            _swapstream(["synth", "--identity", str(IDENTITY_A), "--frames", str(args.frames), "--seed", "11",
                         "--out", video_a], log)
            _swapstream(["synth", "--identity", str(IDENTITY_B), "--frames", str(args.frames), "--seed", "22",
                         "--out", video_b], log)
            every = "2"
        set_a, set_b = os.path.join(data, "a.npz"), os.path.join(data, "b.npz")
        _swapstream(["extract", video_a, "--out", set_a, "--every", every], log)
        _swapstream(["extract", video_b, "--out", set_b, "--every", every], log)
        sheet = os.path.join(out, "faces.png")
        contact_sheet({"A": set_a, "B": set_b}, sheet)
        took = time.perf_counter() - start
        print(f"\ndemo finished in {took:.0f} s; wrote {sheet}")
        for line in log:
            print(f"  ran: {line}")
        return 0

    return run_cli(body, "swapstream demo")
