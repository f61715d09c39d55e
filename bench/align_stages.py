"""Per-stage server cost of one video's frames, in process, one frame at a time: the old Haar-square
path against the aligned path, for model folders given on the command line.

    .venv/bin/python bench/align_stages.py MODELS_DIR --video s18.mp4 [--models a,b] [--frames 120]
        [--rounds 2] [--threads 1] [--json OUT.json]

Frames are decoded beforehand and sent as JPEG (quality 90, as `swapstream stream` does), through
SwapPipeline.prepare + finish in this thread (no overlap, no gRPC), so each stage's milliseconds are
its CPU cost: decode, detect (Haar + tracking), align (5 landmarks, smoothing, warp), infer
(onnxruntime, --threads intra-op threads), blend (colour match, mask, paste), encode. Models are
interleaved round by round so a busy machine hurts them alike; the mean per stage (what sets the
throughput: detection's full-frame search runs every `redetect_every`-th frame (10)
and when a face is lost) and the median are reported,
and the median detection time on the frames of the full-frame search and on the others (on a
shared machine the medians are the steadier figures: preemption inflates the means).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import cv2

from swapstream.faces import watermark as wm
from swapstream.faces.files import write_text
from swapstream.faces.video import VideoReader
from swapstream.server.pipeline import PipelineConfig, StreamSettings, SwapPipeline
from swapstream.server.registry import ModelRegistry
from swapstream.server.watermarking import watermark_markers
from swapstream.v1 import swap_pb2

STAGES = ("decode", "detect", "align", "infer", "blend", "encode")


def run(pipeline: SwapPipeline, frames: list[bytes], settings: StreamSettings) -> dict[str, list[float]]:
    tracker = pipeline.new_tracker(settings)
    marker = pipeline.stream_marker()
    out: dict[str, list[float]] = {s: [] for s in (*STAGES, "sum", "wall")}
    for i, data in enumerate(frames):
        t0 = time.perf_counter()
        job = pipeline.prepare(swap_pb2.Frame(index=i, encoding=swap_pb2.JPEG, data=data), tracker,
                               time.perf_counter(), settings)
        result = pipeline.finish(job, settings, marker)
        wall = (time.perf_counter() - t0) * 1000.0
        if result.error is not None:
            raise RuntimeError(result.error.message)
        t = result.reply.timings
        for s in STAGES:
            out[s].append(getattr(t, f"{s}_ms"))
        out["sum"].append(sum(getattr(t, f"{s}_ms") for s in STAGES))
        out["wall"].append(wall)
        out.setdefault("faces", []).append(len(result.reply.faces))
        # The frames of the scheduled whole-frame search (the rest are tracked or followed).
        key = "detect_full" if i % pipeline.config.redetect_every == 0 else "detect_between"
        out.setdefault(key, []).append(t.detect_ms)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models_dir")
    p.add_argument("--video", required=True)
    p.add_argument("--models", help="comma-separated model names (default: all)")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--keep-mouth", action="store_true")
    p.add_argument("--watermark", action="store_true", help="mark the faces as `serve` does (counted in blend)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    registry = ModelRegistry.load(args.models_dir, device="cpu", intra_op_threads=args.threads)
    names = args.models.split(",") if args.models else registry.names()
    frames = []
    with VideoReader(args.video) as reader:
        for frame in reader:
            frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
            if len(frames) >= args.frames:
                break
    config = PipelineConfig()
    settings = StreamSettings.resolve(config, swap_pb2.SwapOptions(keep_mouth=args.keep_mouth))
    markers = watermark_markers(wm.PUBLIC_KEY) if args.watermark else (lambda model: None)
    pipelines = {n: SwapPipeline(registry.get(n), config, mark=markers(registry.get(n))) for n in names}
    for n in names:  # warm-up: sessions, cascades, dlib
        run(pipelines[n], frames[:5], settings)
    results: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for _ in range(args.rounds):
        for n in names:
            for k, v in run(pipelines[n], frames, settings).items():
                results[n].setdefault(k, []).extend(v)
    registry.close()
    report = {stat: {n: {k: fn(v) for k, v in r.items()} for n, r in results.items()}
              for stat, fn in (("mean", statistics.fmean), ("median", statistics.median))}
    print(f"{args.video}: {len(frames)} frames x {args.rounds} rounds, JPEG q90, onnxruntime threads {args.threads}, "
          f"watermark {'on' if args.watermark else 'off'}; ms per frame, mean (median)")
    print("| model | " + " | ".join(STAGES) + " | sum | wall | faces | detect: full-frame / other frames |")
    print("|---|" + "---|" * (len(STAGES) + 4))
    for n in names:
        m = registry.get(n).manifest
        label = f"{n} ({'aligned ' if m.aligned else ''}{m.crop_size}->{m.out_size} px)"
        mean, med = report["mean"][n], report["median"][n]
        print(f"| {label} | " + " | ".join(f"{mean[s]:.2f} ({med[s]:.2f})" for s in (*STAGES, "sum", "wall"))
              + f" | {mean['faces']:.2f} | {med['detect_full']:.2f} / {med['detect_between']:.2f} |")
    if args.json:
        summary = {"video": args.video, "frames": len(frames), "rounds": args.rounds, "ms": report}
        write_text(args.json, json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
