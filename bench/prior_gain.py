"""What a prior does to a pair run of the same budget: the synthetic demo pair, with and without `--init`.

    .venv/bin/python bench/prior_gain.py --prior PRIOR.npz [--minutes 9] [--preset demo]
        [--work /tmp/prior_gain] [--arms scratch,init] [--json OUT.json]

Renders the demo's pair exactly as `swapstream demo` does (identities 1 and 4, 600 frames each,
motion seeds 11 and 22, extracted every 2nd frame) and its held-out clip (identity 1, motion seed
33, 150 frames at 512x512) with the ground truth (identity 4 making the same moves). Each arm
trains `ae` with the preset for the same minutes (`swapstream train ... --retries 2`, in its own
process, one after the other), from scratch or from the prior. Then every face of the clip (the
aligned crop `extract` cuts) is swapped A->B and compared with the ground truth cut through the
same alignment, at the model's output side, inside the template's face region
(faces/regions.py face_mask): SSIM and PSNR, and the same for the source copy (the clip's own
crop) as the floor. Crops, not pasted frames: this measures the network alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from swapstream.faces.files import write_json

IDENTITY_A, IDENTITY_B = 1, 4  # clients/demo.py's pair


def swapstream(*args: str) -> None:
    """Run one `swapstream` subcommand as a user would; stop on failure."""
    print(f"$ swapstream {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "swapstream.clients.cli", *args], check=True)


def prepare(work: str) -> dict[str, str]:
    """Render and extract the demo pair and the held-out clip (skipped when already there)."""
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    p = {k: os.path.join(data, v) for k, v in {
        "video_a": "a.mp4", "video_b": "b.mp4", "clip": "clip.mp4", "truth": "truth.mp4",
        "a": "a.npz", "b": "b.npz", "clip_set": "clip.npz"}.items()}
    if not os.path.isfile(p["a"]):
        swapstream("synth", "--identity", str(IDENTITY_A), "--frames", "600", "--seed", "11", "--out", p["video_a"],
                   "--quiet")
        swapstream("synth", "--identity", str(IDENTITY_B), "--frames", "600", "--seed", "22", "--out", p["video_b"],
                   "--quiet")
        swapstream("synth", "--identity", str(IDENTITY_A), "--frames", "150", "--seed", "33", "--size", "512x512",
                   "--out", p["clip"], "--truth-identity", str(IDENTITY_B), "--truth-out", p["truth"], "--quiet")
        swapstream("extract", p["video_a"], "--out", p["a"], "--every", "2", "--quiet")
        swapstream("extract", p["video_b"], "--out", p["b"], "--every", "2", "--quiet")
        swapstream("extract", p["clip"], "--out", p["clip_set"], "--every", "1", "--dedup", "0", "--quiet")
    return p


def truth_crops(clip_set, truth_video: str) -> np.ndarray:
    """The ground-truth render cut through each clip face's own alignment (uint8, set side)."""
    from swapstream.faces.align import Alignment, warp_face
    from swapstream.faces.video import VideoReader

    frames = list(VideoReader(truth_video))
    return np.stack([warp_face(frames[int(i)], Alignment(clip_set.matrix[k], clip_set.landmarks[k], clip_set.size))
                     for k, i in enumerate(clip_set.frame_index)])


def score(run_dir: str, sources: np.ndarray, truth: np.ndarray) -> dict:
    """SSIM / PSNR of the run's A->B swaps of `sources` against `truth`, inside the face region."""
    from swapstream.faces.faceset import resize_faces
    from swapstream.faces.regions import face_mask
    from swapstream.trainer import evaluate as ev
    from swapstream.trainer.runs import load_run

    method = load_run(run_dir)
    model = method.inference_model("a2b")
    x = resize_faces(sources, method.input_size).astype(np.float32) / 255.0
    swapped = ev.as_uint8(np.concatenate([np.asarray(model(x[i:i + 32], training=False))
                                          for i in range(0, len(x), 32)]))
    out_truth = resize_faces(truth, method.output_size)
    mask = face_mask(method.template, method.output_size)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    return {"ssim": float(ev.ssim(swapped, out_truth, mask).mean()),
            "psnr": float(ev.psnr(swapped, out_truth, mask).mean()),
            "steps": summary["step"], "training_seconds": summary["training_seconds"],
            "init": (summary.get("init") or {}).get("path"),
            "images_per_second": summary["images_per_second"], "retries": len(summary.get("retries", []))}


def train_arms(args, set_a: str, set_b: str) -> dict[str, str]:
    """Train every arm of `args.arms` (scratch, init, NAME=PRIOR.npz) on one pair at one budget; arm -> run
    folder under `args.work` (a finished run is reused)."""
    runs = {}
    for arm, prior in arm_priors(args):
        run = os.path.join(args.work, f"run-{arm}")
        if not os.path.isfile(os.path.join(run, "summary.json")):
            extra = ["--init", prior] if prior else []
            budget = ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes)]
            started = time.time()
            swapstream("train", "--method", "ae", "--preset", args.preset, "--a", set_a, "--b", set_b, "--out", run,
                       *budget, "--retries", "2", "--no-progress", *extra)
            print(f"{arm}: trained in {time.time() - started:.0f} s", file=sys.stderr)
        runs[arm] = run
    return runs


def arm_priors(args) -> list[tuple[str, str]]:
    """(arm, prior or "") for every arm of `args.arms`; SystemExit for an `init` without --prior."""
    out = []
    for spec in args.arms.split(","):
        arm, _, prior = spec.partition("=")
        prior = prior or (args.prior if arm == "init" else "")
        if arm == "init" and not prior:
            raise SystemExit("the arm init needs --prior (or name the prior: NAME=PRIOR.npz)")
        out.append((arm, prior))
    return out


def add_arm_arguments(parser: argparse.ArgumentParser, work: str) -> None:
    """The options every prior-gain bench shares: the prior, the budget, the preset, the arms, --work, --json."""
    parser.add_argument("--prior", help="prior from `swapstream pretrain` (fits --preset) for the arm `init`")
    parser.add_argument("--minutes", type=float, default=9.0, help="training minutes of each arm (default 9)")
    parser.add_argument("--steps", type=int, help="train each arm this many steps instead (the same compute "
                                                  "whatever else the CPU runs)")
    parser.add_argument("--preset", default="demo", help="ae preset of both arms (default demo)")
    parser.add_argument("--work", default=work, help=f"folder for data and runs (default {work})")
    parser.add_argument("--arms", default="scratch,init",
                        help="comma-separated: scratch (no prior), init (--prior), NAME=PRIOR.npz (that prior)")
    parser.add_argument("--json", help="write the figures here")


def main(argv: list[str] | None = None) -> int:
    """Run the arms and print one table (and --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arm_arguments(parser, "/tmp/prior_gain")
    args = parser.parse_args(argv)
    arm_priors(args)  # refuse a missing prior before any training
    paths = prepare(args.work)
    results = train_arms(args, paths["a"], paths["b"])

    from swapstream.trainer.tf_quiet import import_tensorflow

    import_tensorflow()
    from swapstream.faces.faceset import load_faceset, resize_faces
    from swapstream.faces.regions import face_mask
    from swapstream.trainer import evaluate as ev
    from swapstream.trainer.methods.configs import io_sizes
    from swapstream.trainer.runs import read_run_config

    clip = load_faceset(paths["clip_set"])
    truth = truth_crops(clip, paths["truth"])
    figures = {"prior": args.prior and os.path.abspath(args.prior), "minutes": args.minutes, "steps": args.steps,
               "preset": args.preset,
               "clip_faces": len(clip), "arms": {}}
    for arm, run in results.items():
        figures["arms"][arm] = score(run, clip.faces, truth)
    out_side = io_sizes(read_run_config(next(iter(results.values()))).model)[1]
    src, tru = resize_faces(clip.faces, out_side), resize_faces(truth, out_side)
    mask = face_mask(clip.template, out_side)
    figures["source_copy"] = {"ssim": float(ev.ssim(src, tru, mask).mean()),
                              "psnr": float(ev.psnr(src, tru, mask).mean())}
    print("| arm | steps | SSIM (face region) | PSNR dB | images/s | retries |\n|---|---|---|---|---|---|")
    for arm, f in figures["arms"].items():
        print(f"| {arm} | {f['steps']} | {f['ssim']:.3f} | {f['psnr']:.2f} | {f['images_per_second']:.0f} | "
              f"{f['retries']} |")
    print(f"| source copy | | {figures['source_copy']['ssim']:.3f} | {figures['source_copy']['psnr']:.2f} | | |")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
