"""`swapstream stream` through `swapstream serve` on this machine: FPS and the CPU each side spends per frame.

    .venv/bin/python bench/stream_cpu.py --models MODELS_DIR --model NAME --video s18.mp4 \
        [--variant NAME='SERVE ARGS|STREAM ARGS' ...] [--runs 3] [--json OUT.json]

Each variant starts its own `serve` (CPU) and runs one `stream` client process against it; the
variants take turns, run by run, so a busy machine hurts them alike. Per run: the client's FPS, the
client's CPU per frame (user + system of its process) and the server's (from /proc, over that
run only). With client and server on the same cores, 1000 x cores / (client + server ms) is the FPS
that idle cores would bound it to; the client's figure includes its process's start-up (imports,
connecting, opening the files), which its FPS does not, so the bound is a little low. Default
variants, both without the watermark: `now` (the other defaults) and `whole` (whole-frame JPEG
replies, x264 veryfast, a full-frame detection every 5 frames: the settings before region replies).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere
from bench.fuzz_server import ServerProcess  # noqa: E402

DEFAULT_VARIANTS = {
    "now": "--no-watermark|",
    "whole": "--no-watermark --redetect-every 5|--full-replies --preset veryfast",
}


def run_once(models: str, model: str, video: str, serve_args: list[str], stream_args: list[str], out: str) -> dict:
    """One server, one client run: FPS, CPU ms per frame of each side, output bytes."""
    server = ServerProcess(models, *serve_args)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = server.resources()["cpu_s"]
        done = subprocess.run([sys.executable, "-m", "swapstream.clients.cli", "stream", video, "-o", out,
                               "--model", model, "--server", server.address, "--no-progress", *stream_args],
                              capture_output=True, text=True)
        s1 = server.resources()["cpu_s"]
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        server.stop()
    if done.returncode != 0:
        raise RuntimeError(f"stream failed: {done.stderr.strip()[-500:]}")
    frames = int(re.search(r"frames (\d+)", done.stdout).group(1))
    client_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"fps": float(re.search(r"([\d.]+) FPS", done.stdout).group(1)), "frames": frames,
            "client_ms": round(client_s * 1000 / frames, 2), "server_ms": round((s1 - s0) * 1000 / frames, 2),
            "bytes": os.path.getsize(out), "load": round(os.getloadavg()[0], 1),
            "stages": next((line for line in done.stdout.splitlines() if "server p50" in line), "")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--variant", action="append", default=[], metavar="NAME='SERVE ARGS|STREAM ARGS'")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    results: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for name, spec in variants.items():
                serve_args, _, stream_args = spec.partition("|")
                r = run_once(args.models, args.model, args.video, serve_args.split(), stream_args.split(),
                             os.path.join(tmp, f"{name}.mp4"))
                results[name].append(r)
                print(f"run {run + 1} {name}: {r['fps']:.1f} FPS, client {r['client_ms']:.1f} + server "
                      f"{r['server_ms']:.1f} ms CPU per frame, load {r['load']}; {r['stages']}", flush=True)
    cores = os.cpu_count() or 1
    print(f"| variant | FPS (median of {args.runs}) | client ms CPU / frame | server ms CPU / frame | "
          f"bound on {cores} idle cores | output bytes |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("fps", "client_ms", "server_ms", "bytes")}
        med["bound_fps"] = 1000.0 * cores / statistics.median(r["client_ms"] + r["server_ms"] for r in rs)
        summary[name] = {"median": med, "runs": rs}
        print(f"| {name} | {med['fps']:.1f} | {med['client_ms']:.1f} | {med['server_ms']:.1f} | "
              f"{med['bound_fps']:.0f} FPS | {med['bytes']:.0f} |")
    if args.json:
        from swapstream.faces.files import write_text

        write_text(args.json, json.dumps({"video": args.video, "model": args.model, "variants": variants,
                                          "results": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
