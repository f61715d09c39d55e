"""`swapstream serve`: serve every model folder under --models over gRPC until SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from swapstream.faces.cliutil import ArgumentParser, read_secret_file, run_cli
from swapstream.faces.errors import InputError
from swapstream.server.memory import ARENA_MAX, no_huge_pages, tune_malloc
from swapstream.server.pipeline import PipelineConfig
from swapstream.server.registry import ModelRegistry
from swapstream.server.service import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PUSHBACK_MS,
    DEFAULT_TRIM_INTERVAL,
    SwapServer,
)
from swapstream.server.watermarking import KEY_ENV, read_watermark_key, watermark_markers

PROG = "swapstream serve"
TOKEN_ENV = "SWAPSTREAM_TOKEN"
def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG,
                       description="Serve exported face-swap models (MODEL/model.onnx + manifest.json) over gRPC.")
    p.add_argument("--models", required=True,
                   help="folder whose sub-folders are model folders; a model's name is its folder name")
    p.add_argument("--host", default=os.environ.get("SWAPSTREAM_HOST", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=int(os.environ.get("SWAPSTREAM_PORT", "50051")),
                   help="port (0 = any free port; the bound port is logged)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="onnxruntime execution provider; auto = CUDA when it really works, else CPU")
    p.add_argument("--max-streams", type=int, default=8, help="concurrent streams; more get RESOURCE_EXHAUSTED")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help=f"require 'authorization: Bearer TOKEN' metadata (also ${TOKEN_ENV}; "
                                      "visible in the process list: prefer --token-file)")
    auth.add_argument("--token-file", metavar="FILE", help="read the token from FILE (its first line)")
    p.add_argument("--tls-cert", help="PEM certificate chain; with --tls-key serves TLS")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to drain in-flight frames on SIGTERM")
    p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_BYTES / 2**20,
                   help="largest accepted/sent message (frame), MiB; a reply over it fails that frame only")
    p.add_argument("--first-frame-timeout", type=float, default=PipelineConfig.first_frame_timeout,
                   help="seconds a new stream may take to send its first frame (DEADLINE_EXCEEDED after)")
    p.add_argument("--idle-timeout", type=float, default=PipelineConfig.idle_timeout,
                   help="seconds a stream with every frame answered may send nothing (0 = no limit)")
    p.add_argument("--decode-mpx", type=float, default=PipelineConfig.decode_pixels / 1e6,
                   help="megapixels being decoded at once, over all streams (frames wait their turn)")
    p.add_argument("--retry-pushback-ms", type=int, default=DEFAULT_PUSHBACK_MS,
                   help="retry hint sent with RESOURCE_EXHAUSTED (grpc-retry-pushback-ms, jittered 0.5-1.5x)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (default: off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)")
    p.add_argument("--max-batch", type=int, default=16, help="most faces in one onnxruntime call")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    p.add_argument("--redetect-every", type=int, default=PipelineConfig.redetect_every,
                   help="full-frame face detection every K frames (tracking in between)")
    p.add_argument("--detect-side", type=int, default=PipelineConfig.detect_max_side,
                   help="Haar detection runs on the frame downscaled to this longest side")
    p.add_argument("--blend", choices=("alpha", "seamless"), default=PipelineConfig.blend)
    mark = p.add_mutually_exclusive_group()
    mark.add_argument("--no-watermark", action="store_true",
                      help="do not mark the swapped faces (default: every swapped face carries an invisible "
                           "watermark naming its model, read by `swapstream verify`)")
    mark.add_argument("--watermark-key-file", metavar="FILE",
                      help=f"the watermark key from FILE's first line (else ${KEY_ENV}, else the public key "
                           "that `swapstream verify` also uses by default)")
    p.add_argument("--trim-every", type=float, default=DEFAULT_TRIM_INTERVAL, metavar="SECONDS",
                   help="give freed memory back to the OS (glibc malloc_trim) at most this often, after frames "
                        "were served (0 = never)")
    p.add_argument("--malloc-arenas", type=int, default=ARENA_MAX,
                   help="glibc malloc arenas shared by all threads (0 = glibc's default, 8 per core; "
                        "MALLOC_ARENA_MAX in the environment wins)")
    p.add_argument("--huge-pages", action="store_true",
                   help="keep the system's transparent huge pages (default: the server opts out; they kept "
                        "megabytes of freed frames resident)")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip running synthetic frames through every model before serving (default: warm up, so "
                        "the first client's frames are not slow and memory does not grow on first use)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def read_token(args) -> str | None:
    """The bearer token from --token-file, --token or $SWAPSTREAM_TOKEN (in that order); None = no auth."""
    if args.token_file is not None:
        return read_secret_file(args.token_file, "--token-file")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise InputError("--token must not be empty")
    return token


def main(argv: list[str] | None = None) -> int:
    """Run the server; 0 after a clean drain on SIGTERM/SIGINT, 2 on bad options or no usable model."""
    def body() -> int:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=args.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port)):
            if port is not None and not 0 <= port <= 65535:
                raise InputError(f"{flag} must be 0..65535, got {port}")
        if args.redetect_every < 1 or args.detect_side < 64 or args.max_batch < 1:
            raise InputError("--redetect-every and --max-batch must be >= 1, --detect-side >= 64")
        if args.first_frame_timeout <= 0 or args.idle_timeout < 0:
            raise InputError("--first-frame-timeout must be > 0 and --idle-timeout >= 0")
        if args.trim_every < 0 or args.malloc_arenas < 0:
            raise InputError("--trim-every and --malloc-arenas must be >= 0")
        if args.decode_mpx <= 0 or args.retry_pushback_ms < 0 or args.max_message_mb <= 0:
            raise InputError("--decode-mpx and --max-message-mb must be > 0, --retry-pushback-ms >= 0")
        if (args.tls_cert is None) != (args.tls_key is None):
            raise InputError("TLS needs both --tls-cert and --tls-key")
        for path in (args.tls_cert, args.tls_key):
            if path is not None and not os.path.isfile(path):
                raise InputError(f"{path} does not exist")
        token = read_token(args)
        markers = None
        if not args.no_watermark:
            key, key_source = read_watermark_key(args.watermark_key_file)
            markers = watermark_markers(key)
        # Before the model sessions and the server make their threads (arenas made earlier stay).
        tune_malloc(arena_max=args.malloc_arenas)
        if not args.huge_pages and not no_huge_pages():
            logging.getLogger(__name__).warning("could not opt out of transparent huge pages (no glibc prctl, or "
                                                "refused): RSS may carry huge pages of freed frames")
        config = PipelineConfig(redetect_every=args.redetect_every, detect_max_side=args.detect_side,
                                blend=args.blend, first_frame_timeout=args.first_frame_timeout,
                                idle_timeout=args.idle_timeout, decode_pixels=int(args.decode_mpx * 1e6))
        registry = ModelRegistry.load(args.models, device=args.device, max_batch=args.max_batch,
                                      intra_op_threads=args.threads or None)
        try:
            server = SwapServer(registry, host=args.host, port=args.port, max_streams=args.max_streams,
                                token=token, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                config=config, max_message_bytes=int(args.max_message_mb * 2**20),
                                metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                                pushback_ms=args.retry_pushback_ms, markers=markers, warm=not args.no_warm_up,
                                trim_interval=args.trim_every)
        except BaseException:
            registry.close()
            raise
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
        server.start()
        # Machine-readable lines for scripts that started us with --port 0 / --metrics-port 0.
        print(f"listening on {server.address}", flush=True)
        if server.metrics_port is not None:
            print(f"metrics on http://{server.metrics_address}/metrics", flush=True)
        for name, why in registry.skipped.items():
            print(f"skipped model {name}: {why}", file=sys.stderr, flush=True)
        logging.getLogger(__name__).info(
            "watermark: off (--no-watermark)" if markers is None else f"watermark: on, key from the {key_source}")
        while not stop.wait(0.5):
            pass
        logging.getLogger(__name__).info("signal received: draining (grace %.1f s)", args.grace)
        server.shutdown(args.grace)
        logging.getLogger(__name__).info("stopped")
        return 0

    return run_cli(body, PROG)
