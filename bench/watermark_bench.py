"""Measure the provenance watermark on real faces: detection after JPEG q75 and H.264, false positives, cost.

    nice -n 10 .venv/bin/python bench/watermark_bench.py [--data DIR] [--frames-per-video 60]
        [--fp-frames 1000] [--only s13,d12] [--json OUT.json]

Marked frames are real frames (DIR/*.mp4 and DIR/more/*.mp4) with the mark embedded in the
Haar face box, tracked and smoothed as the server does (server/tracking.py), the anchor moved
with the face by watermark.AnchorTracker. Conditions: the marked frames as they are, after JPEG
q75 (OpenCV), and after an H.264 re-encode of each clip at libx264's defaults (crf 23, preset
medium, yuv420p; PyAV). "fixed_anchor" is the H.264 run with the pattern fixed to the frame's
grid instead (why the anchor moves). "swapped-like" repeats the H.264
run with the face blurred (Gaussian sigma 2) before marking: a model's output is smoother than
a real face, and a codec keeps less of a mark on smooth content. False positives: the detector
on `--fp-frames` unmarked real frames spread over all clips. PSNR: inside the face box, marked
against unmarked, and inside the square a small face is marked over (`watermark.mark_box`).
Timing: embed and detect per frame at 512x512 and 1280x720 (300 px face). `--only` measures the
named clips alone (their own frames for the false positives too), for quick iterations.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import time

import av
import cv2
import numpy as np

from swapstream.clients.verify import MAX_BIT_DIFF, model_for
from swapstream.faces import watermark as wm
from swapstream.faces.files import write_text
from swapstream.server.detector_pool import DetectorPool
from swapstream.server.pipeline import PipelineConfig, StreamSettings, stream_tracker

PAYLOAD = wm.model_id("bench-model", "0" * 64)
# What `verify --models` would know: the model and 99 others.
MODELS = {wm.model_id(f"decoy-{i}", "0" * 64): f"decoy-{i}" for i in range(99)} | {PAYLOAD: "bench-model"}
SMALL_FACE = 128  # px: faces under this (the full-body clip s13) are reported apart as well


GROUPS = ("all", f"face>={SMALL_FACE}px", f"face<{SMALL_FACE}px")


def in_group(group: str, side: int) -> bool:
    """Whether a face box of `side` px counts in a GROUPS entry."""
    return group == "all" or (side >= SMALL_FACE) == (group == f"face>={SMALL_FACE}px")


def read_frames(path: str, limit: int | None = None) -> tuple[list[np.ndarray], float]:
    """The first `limit` frames (BGR) of a video and its frame rate."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = []
        for frame in c.decode(stream):
            frames.append(frame.to_ndarray(format="bgr24"))
            if limit and len(frames) >= limit:
                break
    return frames, fps


def h264(frames: list[np.ndarray], fps: float) -> list[np.ndarray]:
    """Encode with libx264 at its defaults (crf 23, preset medium) and decode again."""
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        stream.options = {"crf": "23"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h - h % 2, :w - w % 2]),
                                                             format="bgr24")))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as src:
        return [fr.to_ndarray(format="bgr24") for fr in src.decode(video=0)]


def jpeg(frame: np.ndarray, quality: int = 75) -> np.ndarray:
    """JPEG round trip at `quality` (OpenCV's encoder, 4:2:0)."""
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def face_boxes(frames: list[np.ndarray]) -> list[tuple[int, int, int, int] | None]:
    """The tracked, smoothed Haar box of the largest face per frame, as a stream's tracker in `serve`
    gives it (its defaults: the whole-frame, region and rescan detectors, a rescan every 10 frames)."""
    config = PipelineConfig()
    tracker = stream_tracker(config, StreamSettings.resolve(config, None), DetectorPool(config, sets=1).lend())
    out = []
    for f in frames:
        boxes = tracker.update(f)
        out.append(boxes[0].as_tuple() if boxes else None)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def video_verdict(dets: list[wm.Detection]) -> bool:
    """`swapstream verify`'s rule: two found frames agreeing on the payload (within MAX_BIT_DIFF bits)."""
    hits = [d for d in dets if d.found]
    if not hits:
        return False
    total = np.sum([d.soft_bits for d in hits], axis=0)
    payload = int(((total > 0).astype(np.int64) << np.arange(wm.N_BITS)).sum())
    agree = sum(bin(d.payload ^ payload).count("1") <= MAX_BIT_DIFF for d in hits)
    return agree >= (1 if len(dets) == 1 else 2)


def timing(frames_by_size: dict[str, tuple[np.ndarray, tuple[int, int, int, int]]], repeat: int = 20) -> dict:
    """Median ms per call of embed and detect for a frame of each size."""
    out = {}
    for label, (frame, box) in frames_by_size.items():
        wm.embed(frame, box, PAYLOAD)
        marked = wm.embed(frame, box, PAYLOAD)
        wm.analyze(marked)
        e, d = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            wm.embed(frame, box, PAYLOAD)
            e.append((time.perf_counter() - t0) * 1000)
        for _ in range(max(repeat // 4, 3)):
            t0 = time.perf_counter()
            wm.analyze(marked)
            d.append((time.perf_counter() - t0) * 1000)
        out[label] = {"embed_ms": round(float(np.median(e)), 2), "detect_ms": round(float(np.median(d)), 1),
                      "face_box": list(box)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real"))
    p.add_argument("--frames-per-video", type=int, default=60)
    p.add_argument("--fp-frames", type=int, default=1000)
    p.add_argument("--json", default=None)
    p.add_argument("--only", default=None,
                   help="comma-separated clip names (e.g. s13) to measure alone, the false positives on them too")
    args = p.parse_args()
    videos = sorted(glob.glob(os.path.join(args.data, "*.mp4")) + glob.glob(os.path.join(args.data, "more", "*.mp4")))
    if args.only:
        want = set(args.only.split(","))
        videos = [v for v in videos if os.path.splitext(os.path.basename(v))[0] in want]
    if not videos:
        raise SystemExit(f"no videos under {args.data}" + (f" named {args.only}" if args.only else ""))
    t_start = time.perf_counter()
    conds = ("raw", "jpeg75", "h264", "h264_fixed_anchor", "h264_swapped_like")
    totals = {(c, g): {"frames": 0, "found": 0, "payload_ok": 0, "model_ok": 0, "scores": []}
              for c in conds for g in GROUPS}
    per_video, psnrs, mark_psnrs, clip_verdicts, clip_fp = [], [], [], {"h264": [], "h264_swapped_like": []}, []
    timing_frames = {}
    for path in videos:
        frames, fps = read_frames(path, args.frames_per_video)
        boxes = face_boxes(frames)
        keep = [i for i, b in enumerate(boxes) if b is not None]
        marked, fixed_marked, smooth_marked = [], [], []
        tracker, smooth_tracker = wm.AnchorTracker(), wm.AnchorTracker()
        for f, b in zip(frames, boxes):
            if b is None:
                marked.append(f)
                fixed_marked.append(f)
                smooth_marked.append(f)
                tracker.reset()
                smooth_tracker.reset()
                continue
            x, y, w, h = b
            # As the server marks: the anchor follows the face (AnchorTracker).
            marked.append(wm.embed(f, b, PAYLOAD, anchor=tracker.update(f, b)))
            psnrs.append(psnr(marked[-1][y:y + h, x:x + w], f[y:y + h, x:x + w]))
            mx, my, mw, mh = wm.mark_box(b)  # the square a small face is marked over
            mx0, my0 = max(mx, 0), max(my, 0)
            mark_psnrs.append(psnr(marked[-1][my0:my + mh, mx0:mx + mw], f[my0:my + mh, mx0:mx + mw]))
            fixed_marked.append(wm.embed(f, b, PAYLOAD))  # the pattern fixed to the frame's grid
            g = f.copy()
            g[y:y + h, x:x + w] = cv2.GaussianBlur(f[y:y + h, x:x + w], (0, 0), 2.0)
            smooth_marked.append(wm.embed(g, b, PAYLOAD, anchor=smooth_tracker.update(g, b)))
        if keep:
            shape = frames[0].shape[:2]
            if shape == (512, 512) and "512x512" not in timing_frames:
                timing_frames["512x512"] = (frames[keep[0]], boxes[keep[0]])
            if shape == (720, 1280) and "1280x720" not in timing_frames:
                timing_frames["1280x720"] = (frames[keep[0]], boxes[keep[0]])
        sets = {"raw": marked, "jpeg75": [jpeg(m) for m in marked], "h264": h264(marked, fps),
                "h264_fixed_anchor": h264(fixed_marked, fps), "h264_swapped_like": h264(smooth_marked, fps)}
        row = {"video": os.path.relpath(path, args.data), "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
               "frames_with_face": len(keep),
               "face_px": int(np.median([boxes[i][2] for i in keep])) if keep else 0}
        for c, fs in sets.items():
            dets = [wm.analyze(fs[i]) for i in keep]
            for g in GROUPS:
                use = [d for d, i in zip(dets, keep) if in_group(g, boxes[i][2])]
                tot = totals[(c, g)]
                tot["frames"] += len(use)
                tot["found"] += sum(d.found for d in use)
                tot["payload_ok"] += sum(d.payload == PAYLOAD for d in use)
                tot["model_ok"] += sum(d.found and model_for(d.payload, d.soft_bits, MODELS) == "bench-model"
                                       for d in use)
                tot["scores"] += [d.score for d in use]
            row[c] = f"{sum(d.found for d in dets)}/{len(dets)}"
            if c in clip_verdicts and dets:
                clip_verdicts[c].append(video_verdict(dets))
        # The same clip unmarked through H.264: does the video-level rule ever fire?
        clip_fp.append(video_verdict([wm.analyze(f) for f in h264(frames, fps)]))
        per_video.append(row)
        print(json.dumps(row), flush=True)
    # False positives: unmarked real frames spread evenly over every clip.
    counts = []
    for path in videos:
        with av.open(path) as c:
            counts.append(c.streams.video[0].frames or 0)
    fp_scores = []
    share = args.fp_frames / max(sum(counts), 1)
    for path, n in zip(videos, counts):
        frames, _ = read_frames(path)
        want = max(1, int(round(n * share)))
        for i in np.linspace(0, len(frames) - 1, min(want, len(frames))).astype(int):
            fp_scores.append(wm.analyze(frames[i]).score)
    fp_scores = fp_scores[:args.fp_frames]
    fp = np.array(fp_scores)
    report = {
        "threshold": wm.DEFAULT_THRESHOLD, "strength": wm.DEFAULT_STRENGTH, "band": list(wm.BAND),
        "detection": {f"{c} {g}": {"frames": t["frames"], "found_rate": round(t["found"] / max(t["frames"], 1), 4),
                                   "payload_ok_rate": round(t["payload_ok"] / max(t["frames"], 1), 4),
                                   "model_named_rate": round(t["model_ok"] / max(t["frames"], 1), 4),
                                   "score_p5": round(float(np.percentile(t["scores"], 5)), 2) if t["scores"] else None,
                                   "score_median": round(float(np.median(t["scores"])), 2) if t["scores"] else None}
                      for (c, g), t in totals.items()},
        "clips_found": {c: f"{sum(v)}/{len(v)}" for c, v in clip_verdicts.items()},
        "unmarked_clips_flagged": f"{sum(clip_fp)}/{len(clip_fp)}",
        "false_positives": {"frames": int(fp.size), "rate": round(float((fp >= wm.DEFAULT_THRESHOLD).mean()), 4),
                            "score_max": round(float(fp.max()), 2), "score_p99": round(float(np.percentile(fp, 99)), 2),
                            "score_median": round(float(np.median(fp)), 2)},
        "psnr_in_face_db": {"mean": round(float(np.mean(psnrs)), 2), "min": round(float(np.min(psnrs)), 2)},
        "psnr_in_marked_square_db": {"mean": round(float(np.mean(mark_psnrs)), 2),
                                     "min": round(float(np.min(mark_psnrs)), 2)},
        "timing": timing(timing_frames),
        "per_video": per_video,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "per_video"}, indent=1))
    if args.json:
        write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
