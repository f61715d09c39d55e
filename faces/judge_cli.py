"""`swapstream judge`: rate a swapped video with a face recognizer that was not trained on the pair.

    swapstream judge SWAPPED.mp4 --a A.mp4 --b B.mp4 [--source A.mp4] [--json OUT.json]
                     [--model MODEL_DIR | --aligned [--output-size 128] | --crop-size 64 --margin 0.2]
                     [--variant NAME=VIDEO]... [--no-ceiling] [--every N] [--reference-frames N]

SWAPPED is the swap of --source (default: --a) frame by frame; --a and --b are clips of the two
people. Prints a Markdown table (the swap, its variants and the sanity rows: the unswapped source,
B's held-out faces, the source through the model's crop with no network) and one summary line;
--json writes the whole report. The ceiling follows the model folder's manifest (--model: aligned
crop and blend mask, or a Haar square), --aligned (the default template), or --crop-size/--margin
(a Haar square). --variant judges another swap of the same source in the same pass (e.g.
`--variant unmarked=OUT_nowm.mp4`, streamed from `swapstream serve --no-watermark`). The measures
are described in docs/judge.md.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

from swapstream.faces.cliutil import EXIT_ERROR, EXIT_OK, ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.files import publish

PROG = "swapstream judge"


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Rate a swapped video: identity moved to B, the source's "
                       "expression kept, detail inside the face (dlib, not trained on the pair).")
    p.add_argument("swapped", help="the swapped video (frame-aligned with the source)")
    p.add_argument("--a", required=True, help="a clip of A, the person in the source")
    p.add_argument("--b", required=True, help="a clip of B, the person swapped in")
    p.add_argument("--source", help="the video the swap was made from (default: --a)")
    p.add_argument("--json", dest="json_out", help="write the whole report here")
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="the model folder the swap came from: its manifest picks the ceiling (aligned crop at its "
                        "output side with the server's blend mask, or its Haar crop size and margin)")
    p.add_argument("--aligned", action="store_true",
                   help="ceiling of an aligned model with the default template (160 px, eye distance 0.32, "
                        "eye line 0.39) and --output-size")
    p.add_argument("--output-size", type=int, default=128, help="with --aligned: the model's output side (128)")
    p.add_argument("--crop-size", type=int, default=64,
                   help="unaligned models: the Haar crop size, for the ceiling row (64)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="unaligned models: the Haar crop margin, for the ceiling row (0.2)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=VIDEO",
                   help="another swap of the same source judged in the same pass, reported as its own row "
                        "(e.g. unmarked=swap_nowm.mp4); repeatable")
    p.add_argument("--no-ceiling", action="store_true", help="leave out the crop-ceiling row")
    p.add_argument("--every", type=int, default=1, help="judge every Nth frame of the swap (1)")
    p.add_argument("--reference-frames", type=int, default=120,
                   help="embed at most this many frames of each reference clip, evenly spaced (120)")
    return p


def _check(args) -> None:
    if args.crop_size < 8 or args.crop_size > 1024:
        raise InputError(f"--crop-size must be 8..1024, got {args.crop_size}")
    if not 0.0 <= args.margin <= 2.0:
        raise InputError(f"--margin must be 0..2, got {args.margin}")
    if args.model and args.aligned:
        raise InputError("give --model or --aligned, not both (the model's manifest says whether it is aligned)")
    if args.output_size < 8 or args.output_size > 1024:
        raise InputError(f"--output-size must be 8..1024, got {args.output_size}")
    variants = {}
    for item in args.variant:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--variant must be NAME=VIDEO, got {item!r}")
        if name in variants or name in ("swap", "source", "b_heldout", "ceiling"):
            raise InputError(f"--variant name {name!r} is repeated or taken by a row of the report")
        variants[name] = path
    args.variants = variants
    if args.every < 1:
        raise InputError(f"--every must be >= 1, got {args.every}")
    if args.reference_frames < 4:
        raise InputError(f"--reference-frames must be >= 4, got {args.reference_frames}")
    if args.json_out:
        if os.path.isdir(args.json_out):
            raise InputError(f"--json {args.json_out} is a folder")
        folder = os.path.dirname(os.path.abspath(args.json_out))
        if not os.path.isdir(folder):
            raise InputError(f"--json: folder {folder} does not exist")


def write_json(result: dict, path: str) -> None:
    """Write the report atomically (a temporary file renamed into place)."""
    fd, tmp = tempfile.mkstemp(prefix=".judge-", suffix=".json", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=2, allow_nan=False)
            fh.write("\n")
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swapstream judge`; 0 ok, 2 bad input, 1 the judge's models are missing."""

    def body() -> int:
        args = _parser().parse_args(argv)
        _check(args)
        # Imported here so `--help` and bad arguments answer without loading dlib.
        from swapstream.faces.align import AlignTemplate
        from swapstream.faces.judge import (
            JudgeUnavailable,
            ceiling_settings,
            format_line,
            format_table,
            judge_videos,
        )
        if args.model:
            ceiling = ceiling_settings(args.model)
        elif args.aligned:
            ceiling = {"template": AlignTemplate(), "output_size": args.output_size}
        else:
            ceiling = {"crop_size": args.crop_size, "margin": args.margin}
        try:
            result = judge_videos(args.swapped, args.a, args.b, args.source, ceiling=not args.no_ceiling,
                                  every=args.every, reference_frames=args.reference_frames,
                                  variants=args.variants, **ceiling)
        except JudgeUnavailable as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        print(format_table(result))
        print(format_line(result))
        print(f"{result['seconds']:.1f} s: {result['seconds_per_frame']:.2f} s per swapped frame, "
              f"{result['seconds_per_observation'] * 1000:.0f} ms per frame dlib looked at")
        if args.json_out:
            write_json(result, args.json_out)
        return EXIT_OK

    return run_cli(body, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
