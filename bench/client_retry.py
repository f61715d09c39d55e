"""The client under server trouble: a drain mid-stream, and a retry storm against a full server.

    python bench/client_retry.py drain --models DIR --model NAME --video V.mp4 [--before /tmp/before]
    python bench/client_retry.py storm --models DIR --model NAME [--clients 8] [--max-streams 2]

drain: two `swapstream serve` replicas (with --metrics-port 0), one target naming both
(round_robin). `swapstream stream` runs as a child process; once the replica holding the stream
has answered `--at` of its frames it gets SIGTERM. Frames lost = input frames - frames in the
output (decoded back with PyAV). With --before, the same with an older checkout's client
(clients/ and faces/ under that folder), which had no retry.

storm: one replica with --max-streams; two clients start first and are admitted, then the others
start while the slots are full, all as child processes (each makes its frames first and waits
for a word on stdin, so no start-up cost falls into the figures). "naive": each refused client
calls again at once, in a loop (what the issue measured); "backoff": this checkout's client
(pushback hint, full-jitter backoff); "alone": the others wait until the two are done.
Reported: the admitted streams' FPS against "alone", and the refused calls the server counted
(from /metrics).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import av

if __package__:  # python -m bench.client_retry
    from bench.report import print_report
else:  # python bench/client_retry.py: this folder is sys.path[0]
    from report import print_report

HERE = os.path.dirname(os.path.abspath(__file__))


class Replica:
    """`swapstream serve` as a child process, with its gRPC address and metrics URL."""

    def __init__(self, models: str, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", models,
                                      "--port", "0", "--device", "cpu", "--metrics-port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.metrics = None
        for line in self.proc.stdout:
            if line.startswith("listening on "):
                self.address = line.split("listening on ", 1)[1].strip()
            if line.startswith("metrics on "):
                self.metrics = line.split("metrics on ", 1)[1].strip()
                break
        if not (self.address and self.metrics):
            raise RuntimeError("a replica did not start")

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics, timeout=5) as r:
            return r.read().decode()

    def value(self, pattern: str) -> float:
        """Sum of the samples whose line matches `pattern` (a regex over 'name{labels}')."""
        total = 0.0
        for line in self.scrape().splitlines():
            if line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            if re.fullmatch(pattern, name):
                total += float(value)
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def frames_in(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with av.open(path) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def client_cmd(before: str | None) -> list[str]:
    if before is None:
        return [sys.executable, "-m", "swapstream.clients.cli", "stream"]
    # The older client, run with its own clients/ and faces/ packages.
    shim = (f"import sys; sys.path.insert(0, {HERE!r}); import stream_fps; stream_fps.load_before({before!r}); "
            "from swapstream.clients import stream; sys.exit(stream.main(sys.argv[1:]))")
    return [sys.executable, "-c", shim]


def drain(args) -> dict:
    replicas = [Replica(args.models), Replica(args.models)]
    target = "ipv4:" + ",".join(r.address for r in replicas)
    out = os.path.join(tempfile.mkdtemp(prefix="drain-"), "out.mp4")
    total = frames_in(args.video)
    client = subprocess.Popen(client_cmd(args.before) + [args.video, "-o", out, "--model", args.model,
                                                         "--server", target, "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, answered = None, 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and client.poll() is None:
        for r in replicas:
            answered = r.value(r"swapstream_frames_total\{.*\}")
            if answered >= args.at:
                victim = r
                break
        if victim:
            break
        time.sleep(0.05)
    t_kill = time.monotonic()
    victim.proc.send_signal(signal.SIGTERM)
    stdout, stderr = client.communicate(timeout=900)
    victim_code = victim.proc.wait(60)
    for r in replicas:
        r.stop()
    kept = frames_in(out) or frames_in(out.replace(".mp4", ".partial.mp4"))
    return {"client": "before" if args.before else "after", "frames": total,
            "answered_before_sigterm": int(answered), "client_exit": client.returncode,
            "replica_exit_after_sigterm": victim_code, "seconds_after_sigterm": round(time.monotonic() - t_kill, 1),
            "output_frames": frames_in(out), "partial_frames": frames_in(out.replace(".mp4", ".partial.mp4")),
            "frames_lost": total - kept if client.returncode == 0 or kept else int(answered),
            "client_said": (stdout.strip().splitlines() + stderr.strip().splitlines())[-3:]}


def storm_worker(mode: str, server: str, model: str, frames: int, size: int) -> dict:
    """One client of the storm: stream `frames` synthetic frames, retrying per `mode`."""
    import grpc

    from swapstream.clients.bench import synthetic_frames
    from swapstream.clients.stream import RetryPolicy, SwapClient, decode_reply
    from swapstream.v1 import swap_pb2

    data = synthetic_frames(frames, size)
    images = [decode_reply(swap_pb2.SwappedFrame(encoding=swap_pb2.JPEG, data=d, width=size, height=size))
              for d in data]
    # Ready (imports done, frames made): wait for the word, so start-up costs stay out of the figures.
    print("ready", flush=True)
    sys.stdin.readline()
    attempts = 0
    start = time.perf_counter()
    with SwapClient(server) as client:
        if mode == "backoff":
            n = sum(1 for _ in client.stream(images, model, retry=RetryPolicy(attempts=1000, max_backoff=5.0)))
            attempts = 1 + client.retries
        else:  # naive: call again at once until admitted
            while True:
                attempts += 1
                try:
                    n = sum(1 for _ in client.stream(images, model))
                    break
                except Exception as exc:
                    cause = getattr(exc, "cause", exc)
                    if not isinstance(cause, grpc.RpcError) or cause.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
    end = time.perf_counter()
    return {"mode": mode, "frames": n, "attempts": attempts, "start": start, "end": end}


def storm(args) -> dict:
    def start(cmd: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a storm client did not start")
        return proc

    def go(procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def result(proc: subprocess.Popen) -> dict:
        return json.loads(proc.communicate()[0].strip().splitlines()[-1])

    def run(mode: str, contenders: int) -> dict:
        """Two admitted streams; `contenders` more that, in "alone", wait until those are done."""
        replica = Replica(args.models, "--max-streams", str(args.max_streams))
        cmd = [sys.executable, __file__, "worker", "--models", args.models, "--model", args.model,
               "--server", replica.address, "--frames", str(args.frames), "--size", str(args.size)]
        try:
            first = [start(cmd + ["--mode", "backoff"]) for _ in range(args.max_streams)]
            rest = [start(cmd + ["--mode", "backoff" if mode == "alone" else mode]) for _ in range(contenders)]
            go(first)
            while replica.value(r"swapstream_active_streams") < args.max_streams:
                time.sleep(0.02)
            t0 = time.perf_counter()
            if mode != "alone":
                go(rest)
            results = [result(p) for p in first]
            admitted_end = time.perf_counter()
            refused_during = replica.value(r'swapstream_rejected_calls_total\{.*RESOURCE_EXHAUSTED.*\}')
            if mode == "alone":
                go(rest)
            others = [result(p) for p in rest]
            refused = replica.value(r'swapstream_rejected_calls_total\{.*RESOURCE_EXHAUSTED.*\}')
        finally:
            replica.stop()
        fps = [r["frames"] / (r["end"] - r["start"]) for r in results]
        span = admitted_end - t0
        return {"mode": mode, "contenders": contenders,
                "admitted_fps_each": [round(f, 2) for f in fps], "admitted_fps_sum": round(sum(fps), 2),
                "refused_while_admitted_ran": int(refused_during),
                "refused_per_s_while_admitted_ran": round(refused_during / span, 1) if span > 0 else None,
                "refused_total": int(refused), "contender_attempts": [r["attempts"] for r in others],
                "contender_frames": [r["frames"] for r in others]}

    contenders = args.clients - args.max_streams
    # Interleaved repetitions: a shared machine's load drifts between runs, the medians less so.
    runs = {"alone": [], "naive": [], "backoff": []}
    for rep in range(args.reps):
        for mode in runs:
            runs[mode].append(run(mode, contenders))
            print(f"rep {rep + 1} {mode}: admitted {runs[mode][-1]['admitted_fps_sum']} FPS, refused "
                  f"{runs[mode][-1]['refused_per_s_while_admitted_ran']}/s", file=sys.stderr, flush=True)
    report: dict = {"runs": runs}
    for mode, rs in runs.items():
        report[f"{mode}_admitted_fps_median"] = statistics.median(r["admitted_fps_sum"] for r in rs)
        report[f"{mode}_refused_per_s_median"] = statistics.median(r["refused_per_s_while_admitted_ran"] for r in rs)
    for mode in ("naive", "backoff"):
        report[f"{mode}_admitted_fps_vs_alone"] = round(report[f"{mode}_admitted_fps_median"]
                                                        / report["alone_admitted_fps_median"], 3)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("drain", "storm", "worker"))
    p.add_argument("--models", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--video")
    p.add_argument("--before")
    p.add_argument("--at", type=int, default=60, help="drain: SIGTERM once the replica answered this many frames")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-streams", type=int, default=2)
    p.add_argument("--frames", type=int, default=80, help="storm: frames per stream")
    p.add_argument("--size", type=int, default=384, help="storm: frame side")
    p.add_argument("--reps", type=int, default=3, help="storm: repetitions of the three runs, interleaved")
    p.add_argument("--json")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--server", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.what == "worker":
        print(json.dumps(storm_worker(args.mode, args.server, args.model, args.frames, args.size)))
        return 0
    report = drain(args) if args.what == "drain" else storm(args)
    return print_report(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
