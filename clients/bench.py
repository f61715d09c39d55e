"""`swapstream bench`: swap latency and throughput, per stage and end to end.

Runs synthetic talking-head frames (faces.synth, deterministic) through a model:
  * 1 stream, 1 frame in flight   -> pure per-frame latency
  * 1 stream, --window in flight  -> pipelined single-stream throughput
  * --streams N concurrent streams (when N > 1) -> throughput with batching across streams
either over gRPC (--server HOST:PORT) or in this process without gRPC (--in-process MODELS_DIR:
the server's own pipeline and batcher), so the transport's cost is the difference.
Writes a JSON file and a Markdown table on request, prints the table.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from swapstream.clients.stream import (
    DEFAULT_TARGET,
    STAGES,
    USER_ERRORS,
    SwapClient,
    add_token_arguments,
    encode_image,
    percentile,
    resolve_token,
    windowed_replies,
)
from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.files import write_text
from swapstream.v1 import swap_pb2

PROG = "swapstream bench"
Caller = Callable[[Iterator[swap_pb2.Frame]], Iterable[swap_pb2.SwappedFrame]]


def synthetic_frames(count: int, size: int, seed: int = 7, quality: int = 90) -> list[bytes]:
    """`count` JPEG frames (size x size) of a moving synthetic face, deterministic."""
    from swapstream.faces.synth import pose_sequence, render_face

    return [encode_image(render_face(seed, pose, (size, size)), swap_pb2.JPEG, quality)
            for pose in pose_sequence(count, seed=seed)]


def _messages(frames: list[bytes], model: str, size: int) -> Iterator[swap_pb2.Frame]:
    for i, data in enumerate(frames):
        yield swap_pb2.Frame(index=i, encoding=swap_pb2.JPEG, data=data, width=size, height=size,
                             model=model if i == 0 else "")


def run_scenario(name: str, caller_factory: Callable[[], Caller], frames: list[bytes], model: str,
                 size: int, streams: int, window: int, warmup: int) -> dict:
    """Run `streams` concurrent streams of `frames`; return the statistics of one scenario.

    The first `warmup` frames of each stream are sent but left out of the statistics.
    """
    results: list[list[tuple[swap_pb2.SwappedFrame, float, float]]] = [[] for _ in range(streams)]
    begun: list[float] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(streams)

    def one(k: int) -> None:
        try:
            call = caller_factory()
            barrier.wait()
            begun.append(time.perf_counter())
            for reply, latency in windowed_replies(_messages(frames, model, size), call, window):
                results[k].append((reply, latency, time.perf_counter()))
        except BaseException as exc:  # reported after the threads join
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    measured = [r for rs in results for r in rs[warmup:]]
    if not measured:
        raise InputError("no frames left to measure; raise --frames above --warmup")
    # Throughput of the measured part: replies after the warm-up over the time they took.
    t0 = min(rs[warmup - 1][2] for rs in results) if warmup else min(begun)
    wall = max(rs[-1][2] for rs in results) - t0
    counted = len(measured)
    ok = [(r, lat) for r, lat, _ in measured if not r.HasField("error")]
    lat = [lat for _, lat in ok]
    stage = {s: [getattr(r.timings, f"{s}_ms") for r, _ in ok] for s in STAGES}
    pct = lambda v: {f"p{q}": round(percentile(v, q), 2) for q in (50, 95, 99)}  # noqa: E731
    return {
        "name": name, "streams": streams, "window": window,
        "frames_measured": len(measured), "errors": len(measured) - len(ok),
        "fps": round(counted / wall, 2) if wall > 0 else 0.0,
        "fps_per_stream": round(counted / wall / streams, 2) if wall > 0 else 0.0,
        "latency_ms": pct(lat),
        "stages_ms": {s: pct(v) for s, v in stage.items()},
        "faces_per_frame": round(float(np.mean([len(r.faces) for r, _ in ok])) if ok else 0.0, 3),
        "mean_batch_faces": round(float(np.mean([r.timings.batch_faces for r, _ in ok if r.faces] or [0])), 2),
    }


def markdown_table(report: dict) -> str:
    """The runs of a report as a Markdown table (latency and per-stage p50/p95, FPS)."""
    head = ("| run | transport | streams | window | FPS | FPS/stream | latency p50 / p95 / p99 ms | "
            + " | ".join(f"{s} p50/p95" for s in STAGES) + " | faces/batch |")
    sep = "|" + "---|" * (8 + len(STAGES))
    rows = [head, sep]
    for run in report["runs"]:
        lat = run["latency_ms"]
        stages = " | ".join(f"{run['stages_ms'][s]['p50']:.1f} / {run['stages_ms'][s]['p95']:.1f}" for s in STAGES)
        rows.append(f"| {run['name']} | {report['transport']} | {run['streams']} | {run['window']} | "
                    f"{run['fps']:.1f} | {run['fps_per_stream']:.1f} | "
                    f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} | {stages} | "
                    f"{run['mean_batch_faces']:.2f} |")
    return "\n".join(rows) + "\n"


def _grpc_caller_factory(target: str, token: str | None, tls_ca: str | None, model: str):
    clients: list[SwapClient] = []

    def factory() -> Caller:
        client = SwapClient(target, token, tls_ca)  # one channel per stream, as separate clients would
        clients.append(client)
        return lambda requests: client.stub.StreamSwap(requests, metadata=client.metadata(model))

    return factory, clients


def _in_process_caller_factory(models_dir: str, model: str, device: str):
    """The server's registry and pipeline, without gRPC."""
    from swapstream.server.pipeline import PipelineConfig, StreamControl, StreamSettings, SwapPipeline
    from swapstream.server.registry import ModelRegistry
    from swapstream.server.service import stream_replies

    registry = ModelRegistry.load(models_dir, device=device)
    loaded = registry.get(model)
    if loaded is None:
        registry.close()
        raise InputError(f"unknown model {model!r} under {models_dir} (models: {', '.join(registry.names())})")
    config = PipelineConfig()
    pipeline = SwapPipeline(loaded, config)
    settings = StreamSettings.resolve(config, None)

    def factory() -> Caller:
        return lambda requests: stream_replies(pipeline, requests, settings, StreamControl())

    return factory, registry, loaded.provider


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Measure face-swap latency and throughput (per stage and end to end).")
    p.add_argument("--model", required=True, help="model name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", help=f"HOST:PORT of a running server (default {DEFAULT_TARGET})")
    where.add_argument("--in-process", metavar="MODELS_DIR", help="run the server pipeline here, without gRPC")
    p.add_argument("--streams", type=int, default=4, help="concurrent streams for the multi-stream run (1 = skip it)")
    p.add_argument("--frames", type=int, default=60, help="frames per stream")
    p.add_argument("--warmup", type=int, default=5, help="frames per stream left out of the statistics")
    p.add_argument("--window", type=int, default=4, help="frames in flight per stream in the pipelined runs")
    p.add_argument("--size", type=int, default=512, help="frame side in pixels (square synthetic frames)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="with --in-process")
    add_token_arguments(p)
    p.add_argument("--tls-ca")
    p.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    p.add_argument("--markdown", metavar="OUT.md", help="write the table as Markdown")
    return p


def run_bench(args) -> dict:
    """Run every scenario; return the report dict (also what --json writes)."""
    frames = synthetic_frames(args.frames, args.size)
    if args.in_process:
        factory, registry, provider = _in_process_caller_factory(args.in_process, args.model, args.device)
        transport, closers = "in-process", [registry.close]
    else:
        target = args.server or DEFAULT_TARGET
        token = resolve_token(args)
        factory, clients = _grpc_caller_factory(target, token, args.tls_ca, args.model)
        probe = SwapClient(target, token, args.tls_ca)
        clients.append(probe)
        models = {m.name: m for m in probe.list_models()}
        if args.model not in models:
            raise InputError(f"server {target} has no model {args.model!r} (models: {', '.join(models)})")
        provider = models[args.model].provider
        transport, closers = "gRPC", [lambda: [c.close() for c in clients]]
    scenarios = [("single stream, 1 in flight", 1, 1), (f"single stream, {args.window} in flight", 1, args.window)]
    if args.streams > 1:
        scenarios.append((f"{args.streams} streams, {args.window} in flight each", args.streams, args.window))
    runs = []
    try:
        for name, streams, window in scenarios:
            print(f"{PROG}: {name} ({transport})...", file=sys.stderr, flush=True)
            runs.append(run_scenario(name, factory, frames, args.model, args.size, streams, window, args.warmup))
    finally:
        for close in closers:
            close()
    return {
        "model": args.model, "transport": transport, "provider": provider,
        "frame_size": args.size, "frames_per_stream": args.frames, "warmup": args.warmup,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    """`swapstream bench`; 0 ok, 2 bad input (unknown model, bad options), 1 other failure."""
    def body() -> int:
        import grpc

        args = build_parser().parse_args(argv)
        if args.frames < 2 or args.warmup < 0 or args.warmup >= args.frames:
            raise InputError("need --frames >= 2 and 0 <= --warmup < --frames")
        if args.streams < 1 or args.window < 1 or not 64 <= args.size <= 4096:
            raise InputError("need --streams >= 1, --window >= 1 and 64 <= --size <= 4096")
        for path in (args.json, args.markdown):
            if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise InputError(f"output folder of {path} does not exist")
        try:
            report = run_bench(args)
        except grpc.RpcError as exc:
            if exc.code() in USER_ERRORS:
                raise InputError(f"server: {exc.details()}") from exc
            print(f"{PROG}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        table = markdown_table(report)
        print(f"model {report['model']} ({report['provider']}), {report['frame_size']}x{report['frame_size']} frames, "
              f"{report['transport']}")
        print(table)
        if args.json:
            write_text(args.json, json.dumps(report, indent=2))
        if args.markdown:
            write_text(args.markdown, f"model `{report['model']}` ({report['provider']}), {report['frame_size']}x"
                                      f"{report['frame_size']} frames, {report['transport']}\n\n{table}")
        return 0

    return run_cli(body, PROG)
