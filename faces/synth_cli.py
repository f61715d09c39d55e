"""`swapstream synth`: render a synthetic talking-head video (and its ground-truth twin).

    swapstream synth --identity ID --frames N --out VIDEO.mp4 [--seed S] [--size WxH] [--fps F]
                     [--truth-identity ID2 --truth-out VIDEO2.mp4]

Besides each video it writes VIDEO.mp4.synth.npz with the identity and the pose of every
frame, so `swapstream extract` can attach ground-truth render parameters to each face.
`--truth-identity` renders the same motion (same seed, same poses) with another identity:
what a perfect swap of the first video into that identity looks like.
"""
from __future__ import annotations

import os
import re
import sys
from contextlib import ExitStack

import numpy as np
from tqdm import tqdm

from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.files import atomic_path
from swapstream.faces.synth import identity_from_seed, pose_sequence, render_face, sidecar_arrays, sidecar_path
from swapstream.faces.video import FOURCC, VideoWriter

PROG = "swapstream synth"
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
MIN_SIDE, MAX_SIDE = 32, 4096


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H); both even (mp4v drops an odd last row/column) and within 32..4096."""
    match = _SIZE_RE.match(text or "")
    if not match:
        raise InputError(f"--size must look like 256x256, got {text!r}")
    w, h = int(match.group(1)), int(match.group(2))
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise InputError(f"--size {w}x{h} is out of range; each side must be {MIN_SIDE}..{MAX_SIDE}")
    if w % 2 or h % 2:
        raise InputError(f"--size {w}x{h}: width and height must be even (the mp4v codec needs it)")
    return w, h


def _check_int64(name: str, value: int) -> None:
    if not _INT64[0] <= value <= _INT64[1]:
        raise InputError(f"{name} {value} does not fit in 64 bits")


def _check_output(path: str) -> None:
    """Refuse an output we could not write, before rendering anything."""
    if os.path.isdir(path):
        raise InputError(f"output {path} is a folder")
    ext = os.path.splitext(path)[1].lower()
    if ext not in FOURCC:
        raise InputError(f"output {path} must end in one of {', '.join(FOURCC)}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable")


def synthesize(jobs: list[tuple[int, str]], frames: int, seed: int, size: tuple[int, int], fps: float,
               progress: bool = True) -> None:
    """Render the same motion (seed) once per (identity, video path) job, with sidecars.

    All outputs appear together at the end (temporary files renamed into place); on any error
    none of them is left behind, half-written or otherwise.
    """
    poses = pose_sequence(frames, seed=seed, fps=fps)
    identities = [identity_from_seed(ident) for ident, _ in jobs]
    # The sidecars' temporary files are opened first so they are published last: after the
    # videos they describe.
    with ExitStack() as sidecars:
        sidecar_tmps = [sidecars.enter_context(atomic_path(sidecar_path(path), suffix=".npz")) for _, path in jobs]
        with ExitStack() as stack:
            try:
                writers = [stack.enter_context(VideoWriter(path, fps, size)) for _, path in jobs]
            except OSError as exc:
                raise InputError(f"cannot write video: {exc}") from exc
            bar = stack.enter_context(tqdm(total=frames, desc="synth", unit="frame", file=sys.stderr,
                                           disable=not progress, leave=False))
            for pose in poses:
                for ident, writer in zip(identities, writers):
                    writer.write(render_face(ident, pose, size))
                bar.update(1)
            for (ident, _), tmp in zip(jobs, sidecar_tmps):
                np.savez(tmp, **sidecar_arrays(ident, poses, size, fps, seed))


def _body(argv: list[str] | None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--identity", type=int, required=True, help="identity seed (any integer)")
    parser.add_argument("--frames", type=int, required=True, help="number of frames to render")
    parser.add_argument("--out", required=True, help="video to write (.mp4)")
    parser.add_argument("--seed", type=int, default=0, help="motion seed (default 0)")
    parser.add_argument("--size", default="256x256", help="frame size WxH, both even (default 256x256)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    parser.add_argument("--truth-identity", type=int, help="also render this identity with the same motion")
    parser.add_argument("--truth-out", help="video for --truth-identity (required with it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    if args.frames <= 0:
        raise InputError(f"--frames must be > 0, got {args.frames}")
    if not 0 < args.fps <= 1000:
        raise InputError(f"--fps must be in (0, 1000], got {args.fps}")
    size = parse_size(args.size)
    _check_int64("--identity", args.identity)
    _check_int64("--seed", args.seed)
    jobs = [(args.identity, args.out)]
    if args.truth_identity is not None or args.truth_out is not None:
        if args.truth_identity is None or args.truth_out is None:
            raise InputError("--truth-identity and --truth-out must be given together")
        _check_int64("--truth-identity", args.truth_identity)
        if os.path.abspath(args.truth_out) == os.path.abspath(args.out):
            raise InputError("--truth-out must differ from --out")
        jobs.append((args.truth_identity, args.truth_out))
    for _, path in jobs:
        _check_output(path)

    synthesize(jobs, args.frames, args.seed, size, args.fps, progress=not args.quiet)
    names = " and ".join(f"{path} (identity {ident})" for ident, path in jobs)
    print(f"wrote {args.frames} frames of {size[0]}x{size[1]} at {args.fps:g} fps to {names}, "
          f"motion seed {args.seed}; render parameters in *{os.path.basename(sidecar_path(''))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swapstream synth`; 0 ok, 2 bad input (one-line reason on stderr)."""
    return run_cli(lambda: _body(argv), PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
