"""What a prior does to a real pair run of the same budget: person1 -> person2, with and without `--init`, judged.

    .venv/bin/python bench/prior_gain_real.py --a person1.mp4 --b person2.mp4 --prior PRIOR.npz
        [--minutes 9] [--preset demo] [--work /tmp/prior_gain_real] [--arms scratch,init] [--every 1]
        [--json OUT.json]

Face sets as `swapstream demo --a --b` cuts them (every 2nd frame) train `ae` with the preset for
the same minutes in each arm (`swapstream train ... --retries 2`, one process each, one after the
other). Then every frame of A's clip is swapped in process, the way the server does it without
colour transfer: the aligned crop `extract` cuts (every frame, no de-duplication) goes through
the network and back through the inverse warp with the template's blend mask
(faces/regions.py). The swapped frames are judged with faces/judge.py (`judge_frames`, dlib, not
trained on the pair) against A's and B's clips. Frames where extract found no face stay as they
are (the judge counts them as A).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from swapstream.faces.files import write_json

try:  # run as `python -m bench.prior_gain_real` or as `python bench/prior_gain_real.py`
    from bench.prior_gain import add_arm_arguments, arm_priors, swapstream, train_arms
except ImportError:
    from prior_gain import add_arm_arguments, arm_priors, swapstream, train_arms


def swapped_frames(run_dir: str, frames: list[np.ndarray], clip_set) -> list[np.ndarray]:
    """A's frames with each extracted face replaced by the run's A->B swap (blend-masked paste)."""
    from swapstream.faces.align import Alignment, paste_aligned, rescale
    from swapstream.faces.faceset import resize_faces
    from swapstream.faces.regions import blend_mask
    from swapstream.trainer import evaluate as ev
    from swapstream.trainer.runs import load_run

    method = load_run(run_dir)
    model = method.inference_model("a2b")
    x = resize_faces(clip_set.faces, method.input_size).astype(np.float32) / 255.0
    out = ev.as_uint8(np.concatenate([np.asarray(model(x[i:i + 32], training=False)) for i in range(0, len(x), 32)]))
    mask = blend_mask(method.template, method.output_size)
    result = [f.copy() for f in frames]
    for k, index in enumerate(clip_set.frame_index):
        alignment = rescale(Alignment(clip_set.matrix[k], clip_set.landmarks[k], clip_set.size), method.output_size)
        result[int(index)] = paste_aligned(frames[int(index)], out[k], alignment, mask)
    return result


def main(argv: list[str] | None = None) -> int:
    """Train the arms, swap A's clip with each, judge, print one line per arm (and --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="video of A (whose face is replaced)")
    parser.add_argument("--b", required=True, help="video of B")
    add_arm_arguments(parser, "/tmp/prior_gain_real")
    parser.add_argument("--every", type=int, default=1, help="judge every Nth frame (default 1)")
    args = parser.parse_args(argv)
    arm_priors(args)  # refuse a missing prior before any extraction or training
    data = os.path.join(args.work, "data")
    os.makedirs(data, exist_ok=True)
    set_a, set_b, clip = (os.path.join(data, n) for n in ("a.npz", "b.npz", "clip.npz"))
    if not os.path.isfile(clip):
        swapstream("extract", args.a, "--out", set_a, "--every", "2", "--quiet")
        swapstream("extract", args.b, "--out", set_b, "--every", "2", "--quiet")
        swapstream("extract", args.a, "--out", clip, "--every", "1", "--dedup", "0", "--min-sharpness", "0", "--quiet")
    runs = train_arms(args, set_a, set_b)

    from swapstream.trainer.tf_quiet import import_tensorflow

    import_tensorflow()
    from swapstream.faces.faceset import load_faceset
    from swapstream.faces.judge import FaceJudge, format_line, judge_frames, read_frames

    frames_a, frames_b = read_frames(args.a), read_frames(args.b)
    clip_set = load_faceset(clip)
    judge = FaceJudge()
    figures = {"prior": args.prior and os.path.abspath(args.prior), "minutes": args.minutes, "steps": args.steps,
               "preset": args.preset, "arms": {}}
    for arm, run in runs.items():
        swapped = swapped_frames(run, frames_a, clip_set)
        result = judge_frames(swapped, frames_a, frames_b, crop_size=128, margin=0.2, ceiling=False,
                              every=args.every, judge=judge)
        with open(os.path.join(run, "summary.json"), encoding="utf-8") as fh:
            summary = json.load(fh)
        figures["arms"][arm] = {"judge": result["swap"], "steps": summary["step"],
                                "init": (summary.get("init") or {}).get("path"),
                                "images_per_second": summary["images_per_second"],
                                "retries": len(summary.get("retries", []))}
        print(f"{arm} ({summary['step']} steps): {format_line(result)}")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
