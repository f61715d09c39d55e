"""`swapstream demo`: the whole chain on a fresh machine, with no arguments.

Render two synthetic identities, extract their aligned face sets, train `ae` with its demo preset
(64 px in, a 128 px face out) for a bounded time, starting from the shipped prior when there is
one (`train --init`), export it to ONNX, start the server on a free loopback port, stream a clip
of A through it, and write the swapped video, a side-by-side video, a preview PNG, the latency
summary and quality.json to out/demo/. The server marks every swapped face with its watermark
(on by default), which adds fine grain the detail measure counts; so the clip is streamed once
more through a server started with --no-watermark (swapped_unmarked.mp4), and both swaps are
judged. quality.json holds the judge's report (faces/judge.py, where dlib is installed; the
ceiling row from the exported model's manifest; the unmarked swap as its variant "unmarked")
and, on the synthetic pair, the SSIM of both swapped faces to the ground-truth render (B making
exactly A's moves) and of the unswapped source's. With --a/--b it does the same with two real
videos.

Each stage runs the public `swapstream` subcommand in a child process, exactly as a user
would, so the demo exercises the same contracts as scripts outside the repo and this module
imports nothing heavy (no TensorFlow in the client).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np

from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.faceset import load_faceset
from swapstream.faces.files import write_json, write_png
from swapstream.faces.video import VideoReader

# Two synthetic people of the same skin tone (different hair, brows and face shape): a shared
# code learns the mouth of a light and a dark face in opposite directions, so the swap would
# close A's open mouth.
IDENTITY_A, IDENTITY_B = 1, 4
MODEL_NAME = "demo-ae"
# `ae`'s preset made for this demo's few CPU minutes (trainer/methods/ae_defaults.py).
TRAIN_PRESET = "demo"
# The priors `swapstream pretrain` made for that preset (trainer/priors/, docs/pretrain.md): on
# synthetic identities other than the demo's two, and on real clips other than person1/person2
# (for --a/--b); used with `train --init` when there.
PRIOR_NAME, REAL_PRIOR_NAME = "demo-ae.npz", "real-ae.npz"
# The side the swapped face is cut at for its SSIM: the demo model's output side.
QUALITY_FACE_SIDE = 128


class Stage:
    """Runs `swapstream` subcommands as child processes and records what ran and how long."""

    def __init__(self) -> None:
        self.log: list[tuple[str, float]] = []

    def run(self, args: list[str]) -> None:
        """Run one subcommand; raise with its exit code if it fails."""
        print(f"\n$ swapstream {' '.join(args)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "swapstream.clients.cli", *args])
        self.log.append((" ".join(["swapstream", *args]), time.perf_counter() - start))
        if proc.returncode != 0:
            raise RuntimeError(f"`swapstream {args[0]}` failed with exit code {proc.returncode}")


class ServerProcess:
    """`swapstream serve` on a free loopback port, stopped with SIGTERM like a deployment would."""

    def __init__(self, models_dir: str, log_path: str, extra: list[str] | None = None) -> None:
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", models_dir, "--port", "0",
             *(extra or [])],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.address = self._wait_for_address()
        # keep draining stdout so the server never blocks on a full pipe
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _wait_for_address(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("listening on "):
                return line.split("listening on ", 1)[1].strip()
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the server did not start (exit code {self.proc.returncode}); see {self._log.name}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def contact_sheet(face_sets: dict[str, str], path: str, per_row: int = 12, rows: int = 2, tile: int = 64) -> None:
    """Write a PNG with `rows` rows of evenly spaced faces from each face set, labelled."""
    bands = []
    for label, fs_path in face_sets.items():
        faces = load_faceset(fs_path).faces
        pick = np.linspace(0, len(faces) - 1, min(len(faces), per_row * rows)).astype(int)
        tiles = [cv2.resize(faces[i], (tile, tile), interpolation=cv2.INTER_AREA) for i in pick]
        tiles += [np.zeros((tile, tile, 3), np.uint8)] * (per_row * rows - len(tiles))
        grid = np.vstack([np.hstack(tiles[r * per_row:(r + 1) * per_row]) for r in range(rows)])
        bands += [_label_bar(f"{label}: {len(faces)} faces ({os.path.basename(fs_path)})", grid.shape[1]), grid]
    write_png(path, np.vstack(bands))


def _label_bar(text: str, width: int) -> np.ndarray:
    bar = np.full((22, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def preview(videos: dict[str, str], path: str, picks: int = 4, tile: int = 256) -> None:
    """A PNG with one column per video (source, swapped, ...) and `picks` frames as rows."""
    frames = {label: list(VideoReader(p)) for label, p in videos.items()}
    n = min(len(f) for f in frames.values())
    rows = []
    for i in np.linspace(n // 8, n - 1, picks).astype(int):
        rows.append(np.hstack([cv2.resize(frames[label][i], (tile, tile), interpolation=cv2.INTER_AREA)
                               for label in videos]))
    header = np.hstack([_label_bar(label, tile) for label in videos])
    write_png(path, np.vstack([header, *rows]))


def _gaussian_ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map (H-10, W-10) of two float32 BGR images in 0..1, averaged over the channels: the
    definition of tf.image.ssim (11 px Gaussian window, sigma 1.5, valid region, K1 0.01, K2 0.03),
    in OpenCV, since the client side loads no TensorFlow."""
    g = cv2.getGaussianKernel(11, 1.5).astype(np.float32)

    def blur(t):
        return cv2.sepFilter2D(t, -1, g, g, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(axis=-1)


def face_ssim(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """SSIM of two uint8 BGR images of one size, averaged under `weights` (the face region; None: all of it)."""
    smap = _gaussian_ssim_map(x.astype(np.float32) / 255.0, y.astype(np.float32) / 255.0)
    if weights is None:
        return float(smap.mean())
    w = weights[5:-5, 5:-5]
    return float((smap * w).sum() / max(float(w.sum()), 1e-9))


def synthetic_quality(source: str, swapped: str, truth: str, side: int = QUALITY_FACE_SIDE) -> dict:
    """SSIM of the swapped face to the ground-truth render and of the unswapped source's, in the
    face region of the aligned face (`side` px), over every frame where the source's face is
    found; the same alignment (Haar box, 5 landmarks of the source frame) cuts all three."""
    from swapstream.faces.align import Aligner, AlignTemplate, warp_face
    from swapstream.faces.detect import HaarDetector
    from swapstream.faces.regions import face_mask

    template = AlignTemplate(size=side)
    aligner, detector = Aligner(template), HaarDetector()
    weights = face_mask(template, side)
    swap_scores, copy_scores, frames = [], [], 0
    with VideoReader(source) as src, VideoReader(swapped) as out, VideoReader(truth) as ref:
        for f_src, f_out, f_ref in zip(src, out, ref):
            frames += 1
            boxes = detector.detect(f_src)
            if not boxes:
                continue
            al = aligner.align(f_src, max(boxes, key=lambda b: b.w * b.h))
            face_ref = warp_face(f_ref, al)
            swap_scores.append(face_ssim(warp_face(f_out, al), face_ref, weights))
            copy_scores.append(face_ssim(warp_face(f_src, al), face_ref, weights))
    if not swap_scores:
        raise RuntimeError("no face found in the streamed clip: cannot score the swap")
    swap, copy = float(np.mean(swap_scores)), float(np.mean(copy_scores))
    return {"ssim_swap_vs_truth": round(swap, 4), "ssim_source_copy_vs_truth": round(copy, 4),
            "ssim_gain_over_copy": round(swap - copy, 4), "frames": frames, "faces": len(swap_scores),
            "face_side": side, "region": "faces/regions.py face_mask of the aligned face",
            "targets": {"ssim_swap_vs_truth": 0.85, "ssim_gain_over_copy": 0.12}}


def judge_quality(swapped: str, video_a: str, video_b: str, source: str, model_dir: str,
                  unmarked: str | None = None) -> dict:
    """The real-face judge's report (faces/judge.py), or why it could not run.

    The ceiling row follows the model folder's manifest (`ceiling_settings`: for the demo's
    aligned model the aligned crop at its output side, pasted back with the server's blend mask);
    `unmarked`, the same clip served without the watermark, is judged in the same pass as the
    variant "unmarked"."""
    try:
        from swapstream.faces.judge import JudgeUnavailable, ceiling_settings, format_line, judge_videos
    except ImportError as exc:  # pragma: no cover - the judge module itself imports no optional package
        return {"unavailable": str(exc)}
    try:
        result = judge_videos(swapped, video_a, video_b, source=source, variants={"unmarked": unmarked} if unmarked
                              else None, **ceiling_settings(model_dir))
    except JudgeUnavailable as exc:
        return {"unavailable": str(exc)}
    result["line"] = format_line(result)
    return result


def _training_summary(run_dir: str) -> dict:
    """The training figures of the demo's run (its summary.json), or {} when it is unreadable."""
    import json

    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as fh:
            s = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {k: s.get(k) for k in ("step", "training_seconds", "images_per_second", "size", "output_size",
                                  "aligned", "init")}


def quality_lines(quality: dict) -> list[str]:
    """What the demo prints about the swap's quality: the synthetic SSIM and the judge's line."""
    lines = []
    syn = quality.get("synthetic")
    if syn:
        unmarked = quality.get("synthetic_unmarked")
        also = f", unmarked {unmarked['ssim_swap_vs_truth']:.3f}" if unmarked else ""
        lines.append(f"synthetic: SSIM of the swapped face to the ground truth {syn['ssim_swap_vs_truth']:.3f}{also} "
                     f"(source copy {syn['ssim_source_copy_vs_truth']:.3f}, gain "
                     f"{syn['ssim_gain_over_copy']:+.3f}; targets >= 0.85 and >= +0.12), {syn['faces']} faces")
    judge = quality.get("judge") or {}
    lines.append(judge["line"] if "line" in judge else f"judge: not run ({judge.get('unavailable', 'unknown')})")
    return lines


def _shipped_prior(name: str) -> str | None:
    from swapstream.trainer.prior import shipped_prior  # numpy only: no TensorFlow here

    return shipped_prior(name)


def main(argv: list[str] | None = None) -> int:
    """`swapstream demo [--a VIDEO --b VIDEO] [--out out/demo]`."""
    parser = ArgumentParser(prog="swapstream demo", description=__doc__.splitlines()[0])
    parser.add_argument("--a", help="video of person A, whose face is replaced (default: a synthetic identity)")
    parser.add_argument("--b", help="video of person B, the face put in (default: another synthetic identity)")
    parser.add_argument("--out", default=os.path.join("out", "demo"), help="output folder (default out/demo)")
    parser.add_argument("--frames", type=int, default=600, help="frames per synthetic training video (default 600)")
    parser.add_argument("--minutes", type=float, default=9.0, help="training time for `ae` (default 9)")
    parser.add_argument("--clip-frames", type=int, default=150,
                        help="frames of the synthetic clip streamed (default 150)")
    parser.add_argument("--size", type=int, default=512, help="side of the synthetic clip streamed (default 512)")
    parser.add_argument("--init", metavar="PRIOR",
                        help=f"prior to start from: a file from `swapstream pretrain`, or 'none' (default: the "
                             f"shipped {PRIOR_NAME} for the synthetic pair, {REAL_PRIOR_NAME} for --a/--b, where "
                             "shipped)")
    parser.add_argument("--preset", default=TRAIN_PRESET,
                        help=f"the `ae` preset to train (default {TRAIN_PRESET}; the shipped prior fits only it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="passed to `swapstream train --set` (e.g. upscale=1 for a 64 px face); repeatable")

    def body() -> int:
        args = parser.parse_args(argv)
        if bool(args.a) != bool(args.b):
            raise InputError("give both --a and --b, or neither")
        for video in (args.a, args.b):
            if video and not os.path.isfile(video):
                raise InputError(f"video {video} does not exist")
        if args.init not in (None, "none") and not os.path.isfile(args.init):
            raise InputError(f"prior {args.init} does not exist")
        start = time.perf_counter()
        out, stage = args.out, Stage()
        data, models = os.path.join(out, "data"), os.path.join(out, "models")
        os.makedirs(data, exist_ok=True)
        truth = None
        if args.a:
            video_a, video_b, clip = args.a, args.b, args.a
        else:
            video_a, video_b = os.path.join(data, "a.mp4"), os.path.join(data, "b.mp4")
            clip, truth = os.path.join(out, "input.mp4"), os.path.join(out, "ground_truth.mp4")
            stage.run(["synth", "--identity", str(IDENTITY_A), "--frames", str(args.frames), "--seed", "11",
                       "--out", video_a, "--quiet"])
            stage.run(["synth", "--identity", str(IDENTITY_B), "--frames", str(args.frames), "--seed", "22",
                       "--out", video_b, "--quiet"])
            # The clip streamed through the server: new motion of A, never seen in training, and
            # its ground truth (B making exactly A's moves) for the preview.
            stage.run(["synth", "--identity", str(IDENTITY_A), "--frames", str(args.clip_frames), "--seed", "33",
                       "--size", f"{args.size}x{args.size}", "--out", clip,
                       "--truth-identity", str(IDENTITY_B), "--truth-out", truth, "--quiet"])
        set_a, set_b = os.path.join(data, "a.npz"), os.path.join(data, "b.npz")
        stage.run(["extract", video_a, "--out", set_a, "--every", "2", "--quiet"])
        stage.run(["extract", video_b, "--out", set_b, "--every", "2", "--quiet"])
        contact_sheet({"A": set_a, "B": set_b}, os.path.join(out, "faces.png"))

        run_dir = os.path.join(out, "run")
        shutil.rmtree(run_dir, ignore_errors=True)
        # The preset's learning rate can collapse on some face sets: a divergence goes back to
        # the last checkpoint at half the rate.
        if args.init is not None:
            prior = None if args.init == "none" else args.init
        elif args.preset == TRAIN_PRESET and not args.settings:  # what the shipped priors fit
            prior = _shipped_prior(REAL_PRIOR_NAME if args.a else PRIOR_NAME)
        else:
            prior = None
        init = ["--init", prior] if prior else []
        settings = [arg for item in args.settings for arg in ("--set", item)]
        stage.run(["train", "--method", "ae", "--preset", args.preset, "--a", set_a, "--b", set_b,
                   "--out", run_dir, "--minutes", str(args.minutes), "--retries", "2", *init, *settings])
        model_dir = os.path.join(models, MODEL_NAME)
        stage.run(["export", run_dir, "--out", model_dir, "--force"])

        swapped, side = os.path.join(out, "swapped.mp4"), os.path.join(out, "side_by_side.mp4")
        server = ServerProcess(models, os.path.join(out, "server.log"))
        try:
            print(f"\nserver listening on {server.address}", flush=True)
            # Synthetic A and B share the renderer's lighting, so matching the swap's colours to
            # A's face would only paint A's skin tone back over B: keep B's colours there.
            colour = [] if args.a else ["--no-colour-transfer"]
            stage.run(["stream", clip, "-o", swapped, "--model", MODEL_NAME, "--server", server.address,
                       "--side-by-side", side, "--no-progress", *colour])
            stage.run(["bench", "--model", MODEL_NAME, "--server", server.address, "--streams", "1",
                       "--frames", "60", "--size", str(args.size),
                       "--json", os.path.join(out, "latency.json"), "--markdown", os.path.join(out, "latency.md")])
        finally:
            code = server.stop()
        print(f"server stopped (exit code {code})")
        # The same clip from the same model with no watermark: the judge's detail should count
        # only what the network drew, and the watermark's grain adds band-pass "detail".
        unmarked = os.path.join(out, "swapped_unmarked.mp4")
        server = ServerProcess(models, os.path.join(out, "server_unmarked.log"), ["--no-watermark"])
        try:
            stage.run(["stream", clip, "-o", unmarked, "--model", MODEL_NAME, "--server", server.address,
                       "--no-progress", *colour])
        finally:
            code = server.stop()
        print(f"server (--no-watermark) stopped (exit code {code})")

        columns = {"source (A)": clip, "swapped (A->B)": swapped}
        if truth:
            columns["ground truth (B as A)"] = truth
        preview(columns, os.path.join(out, "preview.png"))

        quality: dict = {"prior": prior, "training": _training_summary(run_dir)}
        quality["videos"] = {"marked": swapped, "unmarked": unmarked}
        if truth:
            quality["synthetic"] = synthetic_quality(clip, swapped, truth)
            quality["synthetic_unmarked"] = synthetic_quality(clip, unmarked, truth)
        print("\njudging the swap (faces/judge.py) ...", flush=True)
        t_judge = time.perf_counter()
        quality["judge"] = judge_quality(swapped, video_a, video_b, clip, model_dir, unmarked=unmarked)
        quality["judge_seconds"] = round(time.perf_counter() - t_judge, 1)
        write_json(os.path.join(out, "quality.json"), quality)
        took = time.perf_counter() - start
        summary = {"seconds": round(took, 1), "stages": [{"command": c, "seconds": round(s, 1)} for c, s in stage.log],
                   "outputs": sorted(os.listdir(out))}
        write_json(os.path.join(out, "demo.json"), summary)
        print(f"\ndemo finished in {took:.0f} s. In {out}/: swapped.mp4, swapped_unmarked.mp4, side_by_side.mp4, "
              f"preview.png, faces.png, quality.json, latency.md, latency.json, demo.json")
        for command, seconds in stage.log:
            print(f"  {seconds:6.1f} s  {command}")
        for line in quality_lines(quality):
            print(line)
        return 0

    return run_cli(body, "swapstream demo")
