"""CPU per 1280x720 frame of what `swapstream stream` does besides waiting for the server, one stage at a time.

    .venv/bin/python bench/client_stages.py --video s18.mp4 [--frames 150] [--region 304x336]

Stages (process CPU time, ms per frame): the H.264 decode to BGR (PyAV, as VideoReader does), the
JPEG q90 encode of the frame sent, the decode of a whole-frame JPEG reply and of a region reply
(a `--region` rectangle of the frame: about a face's paste footprint on s18) with the copy of the
frame it is pasted into (and the server's encode of that region), and the output's H.264 encode
(BGR -> I420 and libx264 at CRF 23) with the default settings (superfast with veryfast's
macroblock tree and a 10-frame lookahead) and with x264's veryfast and superfast presets, with
the size of each file.
"""
from __future__ import annotations

import argparse
import io
import sys
import time

import av
import cv2
import numpy as np

from swapstream.faces.video import DEFAULT_PRESET, DEFAULT_X264_PARAMS


def cpu_ms(fn, n: int, keep: bool = False) -> tuple[float, list]:
    """Mean process CPU ms of fn(i) over i < n (after one untimed call), and the results if `keep`.

    Results are dropped unless kept, as a stream drops its frames once written: holding a few
    hundred frame-sized arrays would charge each call with fresh pages the stream never pays for.
    """
    fn(0)
    out = []
    t0 = time.process_time()
    for i in range(n):
        r = fn(i)
        if keep:
            out.append(r)
    return (time.process_time() - t0) * 1000.0 / n, out


def x264(frames: list[np.ndarray], preset: str, params: str | None) -> tuple[float, int]:
    bio = io.BytesIO()
    container = av.open(bio, "w", format="mp4")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    stream.options = {"crf": "23", "preset": preset, **({"x264-params": params} if params else {})}
    t0 = time.process_time()
    for i, frame in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        vf.pts = i
        for packet in stream.encode(vf):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    ms = (time.process_time() - t0) * 1000.0 / len(frames)
    container.close()
    return ms, len(bio.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", required=True)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--region", default="304x336", help="WxH of the region reply, centred on the frame's upper half")
    args = p.parse_args(argv)
    frames = []
    with av.open(args.video) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="bgr24"))
            if len(frames) >= args.frames:
                break
    with av.open(args.video) as c:  # timed apart, frames dropped as decoded (see cpu_ms)
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        t0 = time.process_time()
        for i, f in enumerate(c.decode(s)):
            f.to_ndarray(format="bgr24")
            if i + 1 >= len(frames):
                break
        decode = (time.process_time() - t0) * 1000.0 / len(frames)
    n = len(frames)
    h, w = frames[0].shape[:2]
    rw, rh = (int(v) for v in args.region.split("x"))
    x0, y0 = (w - rw) // 2 // 16 * 16, max(0, h // 3 - rh // 2) // 16 * 16
    q = [cv2.IMWRITE_JPEG_QUALITY, 90]
    send, whole = cpu_ms(lambda i: cv2.imencode(".jpg", frames[i], q)[1], n, keep=True)
    whole_dec, _ = cpu_ms(lambda i: cv2.imdecode(whole[i], cv2.IMREAD_COLOR), n)
    region_enc, parts = cpu_ms(lambda i: cv2.imencode(".jpg", frames[i][y0:y0 + rh, x0:x0 + rw], q)[1], n, keep=True)

    def paste(i: int) -> np.ndarray:
        image = frames[i].copy()
        image[y0:y0 + rh, x0:x0 + rw] = cv2.imdecode(parts[i], cv2.IMREAD_COLOR)
        return image

    region_dec, _ = cpu_ms(paste, n)
    print(f"{args.video}: {n} frames {w}x{h}; CPU ms per frame")
    print("| stage | ms | note |\n|---|---|---|")
    print(f"| decode H.264 -> BGR | {decode:.2f} | PyAV, frame and slice threads |")
    print(f"| send: JPEG q90 encode | {send:.2f} | {np.mean([len(b) for b in whole]) / 1e3:.0f} KB |")
    print(f"| reply: whole-frame JPEG decode | {whole_dec:.2f} | (the server's whole-frame encode: as the send) |")
    print(f"| (server) {rw}x{rh} region JPEG q90 encode | {region_enc:.2f} | |")
    print(f"| reply: {rw}x{rh} region decode + paste into a copy of the frame | {region_dec:.2f} | "
          f"{np.mean([len(b) for b in parts]) / 1e3:.0f} KB |")
    for label, preset, params in (("default", DEFAULT_PRESET, DEFAULT_X264_PARAMS), ("veryfast", "veryfast", None),
                                  ("superfast", "superfast", None)):
        ms, size = x264(frames, preset, params)
        print(f"| output: H.264 encode, {label} ({preset}{' ' + params if params else ''}) | {ms:.2f} | "
              f"{size / 1e3:.0f} KB for {n} frames |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
