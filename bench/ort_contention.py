"""One onnxruntime session's call time alone and under background load, CUDA and CPU providers.

Separates what can slow inference down beside the serving threads: other processes busy on
every core (the OS scheduler), Python threads spinning in the interpreter (the GIL), threads
doing what a stream does (Haar detection, JPEG, blur; OpenCV releases the GIL), the same at
lower priority (nice 10), and a shorter switch interval. On an H100 none of these explained the
multi-stream CUDA stall (the batch size changing between calls did; docs/serving.md).

    python bench/ort_contention.py MODEL_FOLDER [--batch 16] [--calls 30] [--json OUT.json]

MODEL_FOLDER is an exported model (manifest.json + model.onnx). Sessions are opened through
server.session.make_session, as the server does. Input is float32 noise at the model's size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from faces.detect import HaarDetector  # noqa: E402
from server.manifest import load_manifest  # noqa: E402
from server.session import make_session  # noqa: E402

# (load, workers, nice): what runs beside the timed calls.
CELLS = [("none", 0, 0), ("procs", 24, 0), ("procs", 24, 10), ("py", 12, 0), ("cv", 12, 0),
         ("cv", 12, 10), ("cv", 4, 0)]


def time_calls(session, name: str, x: np.ndarray, calls: int) -> dict:
    """p50 / p90 / max ms of `calls` session runs after five warm-up runs."""
    for _ in range(5):
        session.run(None, {name: x})
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1000.0)
    return {"p50": round(float(np.percentile(times, 50)), 2), "p90": round(float(np.percentile(times, 90)), 2),
            "max": round(max(times), 2)}


def _lower_priority(nice: int) -> None:
    if nice:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _python_spin(stop: threading.Event, nice: int) -> None:
    _lower_priority(nice)
    while not stop.is_set():
        sum(range(2000))


def _stream_work(stop: threading.Event, nice: int, frame: np.ndarray) -> None:
    """What a stream's threads do per frame, minus inference."""
    _lower_priority(nice)
    detector = HaarDetector()
    while not stop.is_set():
        detector.detect(frame)
        cv2.imencode(".jpg", frame)
        cv2.GaussianBlur(frame, (0, 0), 2)


def under_load(load: str, workers: int, nice: int, measure):
    """Run measure() while `workers` processes or threads of kind `load` keep the CPU busy."""
    stop = threading.Event()
    procs, threads = [], []
    frame = cv2.GaussianBlur((np.random.default_rng(1).random((512, 512, 3)) * 255).astype(np.uint8), (0, 0), 3)
    if load == "procs":
        procs = [subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"])
                 for _ in range(workers)]
    elif load in ("py", "cv"):
        target, extra = (_python_spin, ()) if load == "py" else (_stream_work, (frame,))
        threads = [threading.Thread(target=target, args=(stop, nice, *extra), daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
    time.sleep(0.5)
    try:
        return measure()
    finally:
        stop.set()
        for p in procs:
            p.kill()
        for t in threads:
            t.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="exported model folder")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    manifest = load_manifest(args.model)
    onnx_path = os.path.join(args.model, "model.onnx")
    size = manifest.crop_size
    x = np.random.default_rng(0).random((args.batch, size, size, 3)).astype(np.float32)
    sessions = {}
    for device in ("cuda", "cpu"):
        try:
            sessions[device] = make_session(onnx_path, device)[0]
        except Exception as exc:  # noqa: BLE001 - no CUDA here is a result, not a crash
            print(f"{device}: {exc}", file=sys.stderr)
    print("providers:", {d: s.get_providers()[0] for d, s in sessions.items()}, "cpus:", os.cpu_count(), flush=True)
    rows = []
    for load, workers, nice in CELLS:
        for device, session in sessions.items():
            r = under_load(load, workers, nice, lambda: time_calls(session, manifest.input_name, x, args.calls))
            rows.append({"load": load, "workers": workers, "nice": nice, "device": device, **r})
            print(json.dumps(rows[-1]), flush=True)
    if "cuda" in sessions:
        sys.setswitchinterval(0.0001)
        r = under_load("cv", 12, 0, lambda: time_calls(sessions["cuda"], manifest.input_name, x, args.calls))
        rows.append({"load": "cv", "workers": 12, "nice": 0, "device": "cuda", "switch_interval": 0.0001, **r})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
