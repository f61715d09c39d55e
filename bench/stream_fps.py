"""`swapstream stream` of one video before and after the PyAV video I/O: FPS, output size, playability, audio.

    python bench/stream_fps.py --models MODELS_DIR --model NAME --video s18.mp4 \
        [--before /tmp/before] [--runs 2] [--json OUT.json]

Starts one `swapstream serve` (CPU) and streams the video through it, one client process per
run, alternating the variants so a busy machine hurts them alike:
  * memory: frames decoded beforehand, replies dropped: the stream without any video I/O
  * after:  `stream_video` of this checkout (PyAV decode, H.264 encode, audio kept)
  * before: `stream_video` of an older checkout's clients/ and faces/ (OpenCV, mp4v, no audio),
            e.g. `git archive COMMIT clients faces | tar -x -C /tmp/before`
Each output is decoded back with PyAV (frames counted, audio duration compared with the
input's). A last part times the client's video I/O alone (decode + encode, no server).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import av

if __package__:  # python -m bench.stream_fps
    from bench.report import print_report
else:  # python bench/stream_fps.py, or imported by client_retry's child: this folder is on sys.path
    from report import print_report


def load_before(root: str) -> None:
    """Make swapstream.faces / swapstream.clients the packages under `root` (an older checkout)."""
    for name in ("faces", "clients"):
        spec = importlib.util.spec_from_file_location(f"swapstream.{name}", os.path.join(root, name, "__init__.py"),
                                                      submodule_search_locations=[os.path.join(root, name)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


def media_info(path: str) -> dict:
    """Frames decoded back, codec, audio seconds (None without audio), size in bytes."""
    with av.open(path) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        codec = v.codec_context.name
    audio = None
    with av.open(path) as c:
        if c.streams.audio:
            samples, rate = 0, c.streams.audio[0].codec_context.sample_rate
            for frame in c.decode(c.streams.audio[0]):
                samples += frame.samples
            audio = samples / rate
    return {"frames": frames, "codec": codec, "audio_s": audio, "audio_peak_hz": peak_hz(path) if audio else None,
            "bytes": os.path.getsize(path)}


def mux_tone(src: str, dst: str, hz: float, rate: int = 48000) -> None:
    """Copy the video packets of `src` into `dst`, with a mono AAC sine tone of `hz` as long as the video."""
    import numpy as np

    with av.open(src) as inp:
        vin = inp.streams.video[0]
        seconds = float(vin.duration * vin.time_base) if vin.duration else float(inp.duration / 1e6)
        with av.open(dst, "w") as out:
            vout = out.add_stream_from_template(vin)
            aout = out.add_stream("aac", rate=rate, layout="mono")
            for packet in inp.demux(vin):
                if packet.dts is None:
                    continue
                packet.stream = vout
                out.mux(packet)
            n = int(round(seconds * rate))
            tone = (0.4 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)
            for start in range(0, n, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[None, start:start + 1024]),
                                                   format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                for packet in aout.encode(frame):
                    out.mux(packet)
            for packet in aout.encode():
                out.mux(packet)


def peak_hz(path: str) -> float | None:
    """The strongest frequency of the first audio stream (FFT), None without audio."""
    import numpy as np

    with av.open(path) as c:
        if not c.streams.audio:
            return None
        chunks = [f.to_ndarray().astype(np.float32).mean(axis=0) for f in c.decode(c.streams.audio[0])]
        rate = c.streams.audio[0].codec_context.sample_rate
    x = np.concatenate(chunks)
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))))])


def worker(variant: str, args) -> dict:
    """One client run in this process; returns its figures."""
    if variant == "before":
        load_before(args.before)
    from swapstream.clients import stream

    if variant == "memory":
        with av.open(args.video) as c:
            frames = [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]
        with stream.SwapClient(args.server) as client:
            cpu0 = time.process_time()
            start = time.perf_counter()
            n = sum(1 for _ in client.stream(frames, args.model, window=args.window, keep_source=False))
            seconds = time.perf_counter() - start
        return {"variant": variant, "frames": n, "fps": n / seconds, "client_cpu_s": time.process_time() - cpu0}
    out = os.path.join(args.tmp, f"{variant}.mp4")
    cpu0 = time.process_time()
    start = time.perf_counter()
    summary = stream.stream_video(args.video, out, args.model, args.server, progress=False, window=args.window)
    wall = time.perf_counter() - start
    return {"variant": variant, "frames": summary.frames, "fps": summary.frames / wall,
            "client_cpu_s": time.process_time() - cpu0, "output": media_info(out)}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_alone(video: str, tmp: str) -> dict:
    """ms per frame to decode the video and encode it again, without a server: PyAV (H.264) and OpenCV (mp4v)."""
    import cv2

    from swapstream.faces.video import VideoReader, VideoWriter

    out = {}
    with VideoReader(video) as r:
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        with VideoWriter(os.path.join(tmp, "io.mp4"), r.fps, (r.width, r.height), time_base=r.time_base,
                         audio=r.path if r.has_audio else None) as w:
            for frame, pts in r.frames_with_pts():
                w.write(frame, pts)
                n += 1
        out["pyav_h264"] = {"wall_ms": 1000 * (time.perf_counter() - start) / n,
                            "cpu_ms": 1000 * (time.process_time() - cpu) / n}
    cap = cv2.VideoCapture(video)
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(3)), int(cap.get(4)))
    writer = cv2.VideoWriter(os.path.join(tmp, "io_cv.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
        n += 1
    writer.release()
    out["opencv_mp4v"] = {"wall_ms": 1000 * (time.perf_counter() - start) / n,
                          "cpu_ms": 1000 * (time.process_time() - cpu) / n}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--before", help="an older checkout's root holding clients/ and faces/")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--tone", type=float, help="first replace the video's audio by a sine tone of this frequency")
    p.add_argument("--skip-io", action="store_true", help="leave out the timing of the video I/O alone")
    p.add_argument("--json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--server", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    tmp = tempfile.mkdtemp(prefix="stream-fps-")
    if args.tone:
        toned = os.path.join(tmp, "toned_" + os.path.basename(args.video))
        mux_tone(args.video, toned, args.tone)
        args.video = toned
    server = subprocess.Popen([sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", args.models,
                               "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    address = None
    for line in server.stdout:
        if line.startswith("listening on "):
            address = line.split("listening on ", 1)[1].strip()
            break
    if address is None:
        print("the server did not start", file=sys.stderr)
        return 1
    variants = ["memory", "after"] + (["before"] if args.before else [])
    runs: list[dict] = []
    try:
        for k in range(args.runs):
            for variant in variants:
                cmd = [sys.executable, __file__, "--models", args.models, "--model", args.model, "--video",
                       args.video, "--window", str(args.window), "--worker", variant, "--server", address,
                       "--tmp", tmp] + (["--before", args.before] if args.before else [])
                server_cpu = process_cpu_s(server.pid)
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                runs[-1]["server_cpu_s"] = process_cpu_s(server.pid) - server_cpu
                print(f"run {k + 1} {variant}: {runs[-1]['fps']:.2f} FPS", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(30)
    source = media_info(args.video)
    report = {"video": args.video, "source": source, "runs": runs,
              "io_alone": None if args.skip_io else io_alone(args.video, tmp)}
    for variant in variants:
        fps = [r["fps"] for r in runs if r["variant"] == variant]
        report[f"{variant}_fps_median"] = round(statistics.median(fps), 2)
    report["pyav_cost_vs_memory"] = round(1 - report["after_fps_median"] / report["memory_fps_median"], 3)
    # Load-independent view: CPU per frame, client and server. On a machine of its own, a stream
    # that is CPU-bound runs at cores / (total CPU per frame), so the client's extra CPU for video
    # I/O, as a share of the total, is what it costs in FPS there.
    for variant in variants:
        rs = [r for r in runs if r["variant"] == variant]
        report[f"{variant}_cpu_ms_per_frame"] = {
            "client": round(statistics.median(1000 * r["client_cpu_s"] / r["frames"] for r in rs), 2),
            "server": round(statistics.median(1000 * r["server_cpu_s"] / r["frames"] for r in rs), 2)}
    cpu = {v: report[f"{v}_cpu_ms_per_frame"] for v in variants}
    total_after = cpu["after"]["client"] + cpu["after"]["server"]
    report["pyav_io_share_of_cpu"] = round((cpu["after"]["client"] - cpu["memory"]["client"]) / total_after, 3)
    if "before" in cpu:
        total_before = cpu["before"]["client"] + cpu["before"]["server"]
        report["opencv_io_share_of_cpu_before"] = round(
            (cpu["before"]["client"] - cpu["memory"]["client"]) / total_before, 3)
    for r in runs:
        if "output" in r and r["output"]["audio_s"] is not None and source["audio_s"]:
            r["output"]["audio_diff_ms"] = round(1000 * (r["output"]["audio_s"] - source["audio_s"]), 1)
    return print_report(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
