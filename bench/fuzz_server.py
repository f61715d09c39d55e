"""The server fuzz, long run, and the decompression-bomb memory check, against a `swapstream serve`
process on loopback (run from the repository root):

    python -m bench.fuzz_server --requests 10000 --json out/fuzz.json

Phases:
  fuzz   hypothesis-generated SwapImage and StreamSwap calls (tests/fuzz_cases.py: bombs, 1x1 and
         large frames, truncated and mutated images, size lies, unknown enums, hostile names, size
         changes within a stream) from `--clients` threads, plus streams that never send a frame;
         counts status codes, problems (anything outside the documented behaviour), calls slower
         than --hang-s, and the server's RSS, threads and file descriptors before and after.
  bombs  16 concurrent 20000 x 20000 PNGs (real, valid files of ~50 KB) as SwapImage calls and as
         stream frames, and 16 concurrent legal 6000 x 6000 PNGs: the server's peak RSS above idle.

The model is tests/server_fixtures.write_autoencoder_model: the layout and cost of the `ae` cpu
preset's swap path (64 px), random weights.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
from hypothesis import HealthCheck, given, seed, settings

from bench.report import print_report
from swapstream.faces.wire import MODEL_METADATA_KEY
from swapstream.v1 import swap_pb2, swap_pb2_grpc
from tests import fuzz_cases
from tests.server_fixtures import png_bomb, write_autoencoder_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerProcess:
    """`swapstream serve` in a child process; its resources read from /proc."""

    def __init__(self, models: str, *flags: str, env: dict | None = None) -> None:
        start = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swapstream.clients.cli", "serve", "--models", models, "--port", "0",
             "--device", "cpu", "--log-level", "WARNING", *flags],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.start_s = round(time.monotonic() - start, 2)
        # The honest "before": the server as it reports SERVING, before any request.
        self.at_serving = self.resources()
        self.address = line.split()[-1]

    def resources(self) -> dict:
        status = {}
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                status[key] = rest.split()
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            stat = fh.read().rsplit(")", 1)[1].split()
        # RSS = anonymous memory (heaps, stacks: what serving holds) + file pages (mapped code and
        # data the kernel can drop and read again).
        return {"rss_mb": round(int(status["VmRSS"][0]) / 1024, 1),
                "rss_anon_mb": round(int(status["RssAnon"][0]) / 1024, 1),
                "rss_file_mb": round(int(status["RssFile"][0]) / 1024, 1),
                "peak_rss_mb": round(int(status["VmHWM"][0]) / 1024, 1),
                "threads": int(status["Threads"][0]), "fds": len(os.listdir(f"/proc/{self.proc.pid}/fd")),
                "minor_faults": int(stat[7]),
                "cpu_s": round((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), 2)}

    def reset_peak(self) -> None:
        """Start VmHWM afresh at the current RSS (Linux: write 5 to clear_refs)."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as fh:
            fh.write("5")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def settle(server: ServerProcess, seconds: float = 3.0) -> dict:
    time.sleep(seconds)  # streams' helper threads wind down, timed-out streams end
    return server.resources()


def generate(n: int, run_seed: int, streams_share: float) -> list:
    """n cases (('image', Frame) or ('stream', StreamCase)) drawn by hypothesis."""
    cases: list = []
    rng = np.random.default_rng(run_seed)

    @seed(run_seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(frame=fuzz_cases.frames(with_model=True), case=fuzz_cases.stream_cases())
    def draw(frame, case):
        cases.append(("stream", case) if rng.random() < streams_share else ("image", frame))

    draw()
    return cases[:n]


def describe_call(case, out: fuzz_cases.Outcome) -> dict:
    """One slow call for the report: seconds, code, the server's stage times, what was sent."""
    kind, payload = case
    return {"s": round(out.seconds, 3), "code": out.code, "server_ms": out.server_ms,
            "sent": (fuzz_cases.describe_case(payload) if kind == "stream"
                     else "SwapImage " + fuzz_cases.describe_frame(payload))}


def silent_stream(stub, timeout: float) -> fuzz_cases.Outcome:
    """A stream that never sends a frame: the server must end it (DEADLINE_EXCEEDED) and free its slot."""
    hold = threading.Event()

    def nothing():
        hold.wait(timeout)
        yield from ()

    start = time.monotonic()
    try:
        list(stub.StreamSwap(nothing(), metadata=((MODEL_METADATA_KEY, fuzz_cases.MODEL),), timeout=timeout))
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    hold.set()
    out = fuzz_cases.Outcome(code.name, time.monotonic() - start)
    if code != grpc.StatusCode.DEADLINE_EXCEEDED:
        out.problems.append(f"silent stream ended with {code.name}")
    return out


def fuzz(server: ServerProcess, args) -> dict:
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_receive_message_length", 1 << 26),
                                                             ("grpc.max_send_message_length", 1 << 26)])
    stub = swap_pb2_grpc.FaceSwapStub(channel)
    before = server.at_serving
    first = fuzz_cases.stream(stub, fuzz_cases.StreamCase("first-frame", None, [fuzz_cases.good_frame()]),
                              args.timeout)
    after_first_call = settle(server, 1.0)
    after_first_chunk = None
    trace: list[dict] = []
    codes: collections.Counter = collections.Counter()
    frame_codes: collections.Counter = collections.Counter()
    problems: list[str] = []
    slow: list[float] = []
    slowest: list[tuple] = []  # the slowest calls: (seconds, case, outcome)
    calls = frames = 0
    start = time.monotonic()
    chunk = 500
    with ThreadPoolExecutor(args.clients) as pool:
        for k in range(0, args.requests, chunk):
            cases = generate(min(chunk, args.requests - k), args.seed + k, args.streams_share)

            def run(case):
                kind, payload = case
                if kind == "stream":
                    return fuzz_cases.stream(stub, payload, args.timeout)
                return fuzz_cases.swap_image(stub, payload, args.timeout)

            outcomes = list(pool.map(run, cases))
            # Only the slowest are described (a header parse per frame): keep them as (seconds, case, outcome).
            slowest = sorted(slowest + [(out.seconds, case, out) for case, out in zip(cases, outcomes)],
                             key=lambda d: -d[0])[:args.keep_slowest]
            if k // chunk % 4 == 0:  # now and then a stream that never sends anything
                outcomes += list(pool.map(lambda _: silent_stream(stub, args.timeout), range(2)))
            for out in outcomes:
                calls += 1
                frames += out.frames
                codes[out.code] += 1
                frame_codes.update(grpc.StatusCode.INVALID_ARGUMENT.name if c == 3 else str(c) for c in out.frame_codes)
                problems += out.problems
                # A silent stream is meant to last its first-frame timeout.
                limit = args.hang_s + (args.first_frame_timeout if out.frames == 0 else 0.0)
                if out.seconds > limit:
                    slow.append(round(out.seconds, 2))
            now = server.resources()
            if after_first_chunk is None:
                after_first_chunk = settle(server)
            trace.append({"calls": calls, "rss_mb": now["rss_mb"], "threads": now["threads"], "fds": now["fds"]})
            print(f"fuzz: {calls} calls, {frames} frames, {len(problems)} problems, {len(slow)} slow, "
                  f"{time.monotonic() - start:.0f} s, server {now}", file=sys.stderr, flush=True)
    after = settle(server)
    channel.close()
    # The client's connection is gone too: what the server keeps of it (HTTP/2 buffers grown to the
    # largest message) is released, and what is left is what serving left behind.
    disconnected = settle(server)
    alive = server.proc.poll() is None

    def growth_of(res: dict) -> dict:
        return {k: round(res[k] / before[k] - 1.0, 3) if before[k] else None for k in ("rss_mb", "threads", "fds")}

    growth = growth_of(after)
    served = {"server_cpu_ms_per_frame": round((after["cpu_s"] - before["cpu_s"]) * 1000 / max(frames, 1), 2),
              "minor_faults_per_frame": round((after["minor_faults"] - before["minor_faults"]) / max(frames, 1), 1)}
    return {"calls": calls, "frames": frames, "seconds": round(time.monotonic() - start, 1),
            "server_alive": alive, "status_codes": dict(codes), "per_frame_error_codes": dict(frame_codes),
            "problems": len(problems), "problem_examples": sorted(set(problems))[:10],
            f"calls_over_{args.hang_s:g}s": len(slow), "slowest_s": sorted(slow)[-5:],
            "slowest_calls": [describe_call(case, out) for _, case, out in slowest],
            "first_call_s": round(first.seconds, 3), "first_call_server_ms": first.server_ms,
            "server_start_s": server.start_s, "resources_at_serving": before,
            "resources_after_first_call": after_first_call, "resources_after_first_chunk": after_first_chunk,
            "resources_after": after, "growth_after_vs_serving": growth,
            "resources_after_disconnect": disconnected, "growth_after_disconnect_vs_serving": growth_of(disconnected),
            "flat_within_10pct": all(g is not None and g <= 0.10 for g in growth.values()), **served,
            "trace": trace}


def bombs(server: ServerProcess, concurrency: int = 16) -> dict:
    channel = grpc.insecure_channel(server.address)
    stub = swap_pb2_grpc.FaceSwapStub(channel)
    meta = ((MODEL_METADATA_KEY, fuzz_cases.MODEL),)
    bomb = png_bomb(20000, 20000)
    legal_png = cv2.imencode(".png", np.full((6000, 6000, 3), 128, np.uint8))[1].tobytes()
    report = {"bomb_bytes": len(bomb), "legal_png_bytes": len(legal_png)}
    for name, data, kind in (("bomb_20000x20000_swap_image", bomb, "image"),
                             ("bomb_20000x20000_stream_frames", bomb, "stream"),
                             ("legal_6000x6000_swap_image", legal_png, "image")):
        time.sleep(1.0)
        idle = server.resources()
        server.reset_peak()

        def call(_):
            t0 = time.monotonic()
            frame = swap_pb2.Frame(encoding=swap_pb2.PNG, data=data)
            try:
                if kind == "image":
                    stub.SwapImage(frame, metadata=meta, timeout=60)
                    return "OK", time.monotonic() - t0
                replies = list(stub.StreamSwap(iter([frame]), metadata=meta, timeout=60))
                return (replies[0].error.code if replies[0].HasField("error") else "OK"), time.monotonic() - t0
            except grpc.RpcError as exc:
                return exc.code().name, time.monotonic() - t0

        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(call, range(concurrency)))
        peak = server.resources()["peak_rss_mb"]
        report[name] = {"concurrent": concurrency, "results": dict(collections.Counter(str(r) for r, _ in results)),
                        "slowest_s": round(max(s for _, s in results), 3), "idle_rss_mb": idle["rss_mb"],
                        "peak_rss_mb": peak, "peak_above_idle_mb": round(peak - idle["rss_mb"], 1)}
        print(f"bombs: {name}: {report[name]}", file=sys.stderr, flush=True)
    channel.close()
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=10000, help="fuzzed calls (SwapImage or StreamSwap)")
    p.add_argument("--clients", type=int, default=2, help="concurrent client threads")
    p.add_argument("--streams-share", type=float, default=0.3, help="share of the calls that are streams")
    p.add_argument("--timeout", type=float, default=30.0, help="client deadline per call, s")
    p.add_argument("--hang-s", type=float, default=2.0, help="a call slower than this counts as a hang")
    p.add_argument("--first-frame-timeout", type=float, default=1.0, help="the server's, for silent streams")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--keep-slowest", type=int, default=10, help="report this many slowest calls with what they sent")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra `swapstream serve` argument for the fuzz server (repeat; e.g. --serve-arg=--no-warm-up)")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the server process (repeat; e.g. MALLOC_ARENA_MAX=8)")
    p.add_argument("--skip-fuzz", action="store_true")
    p.add_argument("--skip-bombs", action="store_true")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args()
    if any("=" not in kv for kv in args.server_env):
        p.error("--server-env takes KEY=VALUE")
    env = dict(kv.split("=", 1) for kv in args.server_env)
    with tempfile.TemporaryDirectory() as models:
        write_autoencoder_model(os.path.join(models, fuzz_cases.MODEL), size=64)
        report: dict = {"model": "ae cpu-preset layout, 64 px (tests/server_fixtures.write_autoencoder_model)"}
        if not args.skip_fuzz:
            server = ServerProcess(models, "--max-streams", "4", "--max-message-mb", "4", "--first-frame-timeout",
                                   str(args.first_frame_timeout), "--idle-timeout", "2", *args.serve_arg, env=env)
            report["server_args"], report["server_env"] = args.serve_arg, env
            try:
                report["fuzz"] = fuzz(server, args)
            finally:
                report["fuzz_server_exit_code_on_sigterm"] = server.stop()
        if not args.skip_bombs:
            server = ServerProcess(models)  # the defaults: 8 streams, 16 workers, 16 MiB messages
            try:
                report["bombs"] = bombs(server)
            finally:
                server.stop()
    return print_report(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
