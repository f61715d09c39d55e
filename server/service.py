"""The gRPC service: FaceSwap servicer, token auth, health, reflection, and server life cycle.

    with run_server("models/", port=0) as port:      # grpc examples style: a free loopback port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")

`SwapServer` is the same thing with explicit start()/shutdown(), for `swapstream serve`.
The server keeps no state beyond a stream's life, so replicas behind a gRPC load balancer
scale it out (DESIGN section 8).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from swapstream.faces.errors import InputError
from swapstream.faces.wire import MODEL_METADATA_KEY, RETRY_PUSHBACK_KEY, encode_frame
from swapstream.server.detector_pool import DetectorPool, default_sets
from swapstream.server.memory import Trimmer, trim
from swapstream.server.metrics import Metrics, PrometheusMetrics
from swapstream.server.pipeline import (
    FaceMarker,
    Failure,
    FrameReader,
    FrameResult,
    PipelineConfig,
    PixelBudget,
    StreamControl,
    StreamSettings,
    SwapError,
    SwapPipeline,
    shorten,
)
from swapstream.server.registry import LoadedModel, ModelRegistry
from swapstream.v1 import swap_pb2, swap_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = swap_pb2.DESCRIPTOR.services_by_name["FaceSwap"].full_name
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_PUSHBACK_MS = 1000
DEFAULT_TRIM_INTERVAL = 2.0  # seconds between malloc_trim calls while frames are being served
MESSAGE_LIMIT = 1000  # characters of a status or per-frame error message
LISTED_MODELS = 20    # model names listed in a NOT_FOUND message

# Whose mistake a pipeline failure was, as a gRPC status code (docs: the status codes table).
STATUS_OF = {
    Failure.BAD_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    Failure.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Failure.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Failure.INTERNAL: grpc.StatusCode.INTERNAL,
}


def to_reply(result: FrameResult) -> swap_pb2.SwappedFrame:
    """The wire reply of a pipeline result: a failure becomes its per-frame error (status code number)."""
    if result.error is not None:
        result.reply.error.code = STATUS_OF[result.error.failure].value[0]
        result.reply.error.message = result.error.message[:MESSAGE_LIMIT]
    return result.reply


def warm_up(pipeline: SwapPipeline) -> dict:
    """Run synthetic frames through every stage of `pipeline` once, so no client pays for first use.

    A stream of a synthetic face (JPEG, PNG and RAW_BGR in and out: full detection, tracking,
    alignment, inference, blending, the watermark, every codec), one SwapImage-style call, and
    one inference call at the batcher's largest batch. Cascades, dlib's predictor, onnxruntime's
    kernels and plans, codec tables and the pages of their libraries are loaded here, before the
    server reports SERVING, instead of during the first client's frames. Returns what ran.
    """
    from swapstream.faces.synth import pose_sequence, render_face

    size = 256  # a frame the Haar cascade finds the synthetic face in
    images = [render_face(3, pose, (size, size)) for pose in pose_sequence(6, seed=3)]
    codecs = (swap_pb2.JPEG, swap_pb2.PNG, swap_pb2.RAW_BGR)
    frames = []
    for i, image in enumerate(images):
        encoding = codecs[i % len(codecs)]
        frames.append(swap_pb2.Frame(index=i, encoding=encoding, data=encode_frame(image, encoding),
                                     width=size, height=size))
    settings = StreamSettings.resolve(pipeline.config, None)
    results = list(pipeline.stream_results(iter(frames), settings, StreamControl()))
    results.append(pipeline.swap_one(frames[0], settings))
    pipeline.model.batcher.warm_up(pipeline.model.batcher.max_batch)
    failed = [r.error.message for r in results if r.error is not None]
    return {"frames": len(results), "faces": sum(len(r.reply.faces) for r in results), "failed": failed}


def prestart_workers(executor: futures.ThreadPoolExecutor, workers: int) -> None:
    """Start all of a ThreadPoolExecutor's `workers` now (it otherwise adds one per busy call, up to
    the cap): the server's threads are then as many at SERVING as under load."""
    barrier = threading.Barrier(workers + 1)
    for _ in range(workers):
        executor.submit(barrier.wait, 30)
    barrier.wait(30)


def result_name(result: FrameResult) -> str:
    """"ok", or the status code name of a failed frame (the metrics' result label)."""
    return "ok" if result.error is None else STATUS_OF[result.error.failure].name


def stream_replies(pipeline: SwapPipeline, frames: Iterable[swap_pb2.Frame], settings: StreamSettings,
                   control: StreamControl) -> Iterator[swap_pb2.SwappedFrame]:
    """A stream's replies exactly as StreamSwap sends them, without the transport (bench --in-process)."""
    for result in pipeline.stream_results(frames, settings, control):
        yield to_reply(result)


class FaceSwapServicer(swap_pb2_grpc.FaceSwapServicer):
    """Implements swap.proto's FaceSwap over a ModelRegistry."""

    def __init__(self, registry: ModelRegistry, config: PipelineConfig, max_streams: int,
                 draining: threading.Event, metrics: Metrics | None = None,
                 pushback_ms: int = DEFAULT_PUSHBACK_MS,
                 markers: Callable[[LoadedModel], FaceMarker | None] | None = None,
                 after_frame: Callable[[], None] | None = None) -> None:
        self._registry = registry
        self._after_frame = after_frame or (lambda: None)
        self.config = config
        budget = PixelBudget(config.decode_pixels)  # one for the whole server
        # Cascades for one search per core, lent to every stream and image of every model's pipeline.
        self.detectors = DetectorPool(config, sets=default_sets(max_streams))
        # The streams' preparer threads, kept for the server's life. A stream's slot is free when
        # its call ends, but its preparer may still be finishing a frame (waiting for the decode
        # budget or the inference queue): twice the slots, so a new stream never waits for one.
        self.preparer_threads = 2 * max_streams + 2
        self.preparers = futures.ThreadPoolExecutor(max_workers=self.preparer_threads,
                                                    thread_name_prefix="stream-prepare")
        self.pipelines = {m.name: SwapPipeline(m, config, budget, markers(m) if markers else None, self.detectors,
                                               self.preparers)
                          for m in registry.models()}
        self._max_streams = max_streams
        self._active = 0
        self._lock = threading.Lock()
        self._draining = draining
        self._streams: set[StreamControl] = set()
        self._metrics = metrics or Metrics()
        self._pushback_ms = pushback_ms
        self._random = random.Random()

    @property
    def active_streams(self) -> int:
        with self._lock:
            return self._active

    def frames_in_flight(self) -> tuple[int, int]:
        """(streams, frames received but not yet answered) right now."""
        with self._lock:
            streams = list(self._streams)
        return len(streams), sum(max(0, c.taken - c.answered) for c in streams)

    def _acquire_slot(self) -> bool:
        with self._lock:
            if self._active >= self._max_streams:
                return False
            self._active += 1
        self._metrics.stream_started()
        return True

    def _release_slot(self) -> None:
        with self._lock:
            self._active -= 1
        self._metrics.stream_ended()

    def _abort(self, context, method: str, code: grpc.StatusCode, message: str, pushback: bool = False):
        """End the call with `code` (counted in the metrics); with pushback, tell the client when to retry."""
        self._metrics.rejected(method, code)
        if pushback:
            # gRFC A6: clients with a retry policy wait this long; the jitter spreads a crowd out.
            ms = int(self._pushback_ms * self._random.uniform(0.5, 1.5))
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(ms)),))
        context.abort(code, message[:MESSAGE_LIMIT])

    def _fail(self, context, method: str, error: SwapError):
        code = STATUS_OF[error.failure]
        self._abort(context, method, code, error.message, pushback=code == grpc.StatusCode.RESOURCE_EXHAUSTED)

    def _pipeline(self, name: str, context, method: str) -> SwapPipeline:
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            names = self._registry.names()
            valid = ", ".join(names[:LISTED_MODELS]) + (f" and {len(names) - LISTED_MODELS} more"
                                                        if len(names) > LISTED_MODELS else "")
            if not name:
                self._abort(context, method, grpc.StatusCode.INVALID_ARGUMENT,
                            f"no model named: set metadata {MODEL_METADATA_KEY!r} or Frame.model (served: {valid})")
            self._abort(context, method, grpc.StatusCode.NOT_FOUND, f"unknown model {shorten(name)} (served: {valid})")
        return pipeline

    def StreamSwap(self, request_iterator, context) -> Iterator[swap_pb2.SwappedFrame]:
        method = "StreamSwap"
        if self._draining.is_set():
            self._abort(context, method, grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        if not self._acquire_slot():
            self._abort(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"all {self._max_streams} stream slots are in use; retry later or use another replica",
                        pushback=True)
        control = StreamControl(draining=self._draining)
        with self._lock:
            self._streams.add(control)
        once = threading.Lock()
        released = []

        def release() -> None:  # from the RPC-done callback or the handler, whichever is first
            with once:
                if not released:
                    released.append(True)
                    self._release_slot()
                    with self._lock:
                        self._streams.discard(control)

        def on_done() -> None:
            control.cancelled.set()
            release()

        context.add_callback(on_done)
        try:
            reader = FrameReader(request_iterator, control, self.config.queue_depth)
            try:
                first = reader.first(self.config.first_frame_timeout)
            except SwapError as exc:
                self._fail(context, method, exc)
            if first is None:  # the client closed the stream without a frame, or went away
                return
            name = dict(context.invocation_metadata()).get(MODEL_METADATA_KEY) or first.model
            pipeline = self._pipeline(name, context, method)
            try:
                settings = StreamSettings.resolve(self.config, first.options)
            except SwapError as exc:
                self._fail(context, method, exc)
            try:
                for result in pipeline.stream_results(reader, settings, control):
                    reply = to_reply(result)
                    self._metrics.frame(pipeline.model.name, result_name(result), reply)
                    self._after_frame()
                    yield reply
            except SwapError as exc:  # the stream went idle
                self._fail(context, method, exc)
            if control.drained:
                self._metrics.rejected(method, grpc.StatusCode.UNAVAILABLE)
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details("server is shutting down; every frame it received was answered")
        finally:
            release()

    def SwapImage(self, request: swap_pb2.Frame, context) -> swap_pb2.SwappedFrame:
        method = "SwapImage"
        name = dict(context.invocation_metadata()).get(MODEL_METADATA_KEY) or request.model
        pipeline = self._pipeline(name, context, method)
        try:
            settings = StreamSettings.resolve(self.config, request.options)
        except SwapError as exc:
            self._fail(context, method, exc)
        settings.redetect_every = 1
        result = pipeline.swap_one(request, settings)
        self._metrics.frame(pipeline.model.name, result_name(result), result.reply)
        self._after_frame()
        if result.error is not None:
            self._fail(context, method, result.error)
        return result.reply

    def ListModels(self, request, context) -> swap_pb2.ListModelsResponse:
        out = swap_pb2.ListModelsResponse()
        for m in self._registry.models():
            out.models.add(name=m.name, method=m.manifest.method, direction=m.manifest.direction,
                           input_size=m.manifest.crop_size, provider=m.provider,
                           crop_margin=m.manifest.crop_margin, precision=m.manifest.precision,
                           output_size=m.manifest.out_size, aligned=m.manifest.aligned,
                           manifest_sha256=m.manifest_sha256)
        return out


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Requires metadata `authorization: Bearer <token>` on every call except health checks."""

    EXEMPT = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str, metrics: Metrics | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics or Metrics()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self.EXEMPT):
            return continuation(handler_call_details)
        got = dict(handler_call_details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(got.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        self._metrics.rejected(handler_call_details.method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED)
        return _deny(handler, "missing token" if not got else "wrong token")


def _deny(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{why}: send metadata 'authorization: Bearer <token>'")

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(abort, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class SwapServer:
    """A configured gRPC server around a ModelRegistry: start(), then shutdown(grace).

    metrics_port: serve Prometheus metrics on http://metrics_host:metrics_port/metrics (None = off;
    0 = any free port, see `metrics_port` after construction). markers: gives each model's
    pipeline the function that marks its swapped faces (the provenance watermark), or None.
    """

    def __init__(self, registry: ModelRegistry, *, host: str = "127.0.0.1", port: int = 0,
                 max_streams: int = 8, token: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, config: PipelineConfig | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", pushback_ms: int = DEFAULT_PUSHBACK_MS,
                 markers: Callable[[LoadedModel], FaceMarker | None] | None = None,
                 warm: bool = True, trim_interval: float = DEFAULT_TRIM_INTERVAL) -> None:
        if max_streams < 1:
            raise InputError("--max-streams must be >= 1")
        if (tls_cert is None) != (tls_key is None):
            raise InputError("TLS needs both --tls-cert and --tls-key")
        self.registry = registry
        self.draining = threading.Event()
        self.metrics: Metrics = PrometheusMetrics() if metrics_port is not None else Metrics()
        self.metrics.models(len(registry.names()), len(registry.skipped))
        # Replies over the transport's send cap would end the whole stream: the pipeline fails them per frame.
        config = dataclasses.replace(config or PipelineConfig(), max_reply_bytes=max_message_bytes)
        self.trimmer = Trimmer(trim_interval)
        self.servicer = FaceSwapServicer(registry, config, max_streams, self.draining, self.metrics,
                                         pushback_ms, markers, after_frame=self.trimmer.note)
        self.health = health.HealthServicer()
        interceptors = [TokenAuthInterceptor(token, self.metrics)] if token else []
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC sets SO_REUSEPORT by default: a second server on a busy port would bind
            # silently and share its calls. A port in use must be an error instead.
            ("grpc.so_reuseport", 0),
        ]
        # Workers: every stream holds one for its life; the rest answer health, ListModels,
        # SwapImage and the RESOURCE_EXHAUSTED refusals beyond --max-streams. Calls beyond the
        # workers are refused by gRPC with RESOURCE_EXHAUSTED instead of queueing without bound.
        workers = max_streams + 8
        self._workers = workers
        self._warm = warm
        self._executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
        self._server = grpc.server(self._executor, interceptors=interceptors, options=options,
                                   maximum_concurrent_rpcs=workers)
        swap_pb2_grpc.add_FaceSwapServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        address = _address(host, port)
        try:
            if tls_cert:
                creds = grpc.ssl_server_credentials([(_read(tls_key, "TLS key"), _read(tls_cert, "TLS certificate"))])
                self.port = self._server.add_secure_port(address, creds)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise InputError(f"cannot listen on {address}: {exc}") from exc
        if not self.port:
            raise InputError(f"cannot listen on {address}")
        self.address = address.rsplit(":", 1)[0] + f":{self.port}"
        self.tls = bool(tls_cert)
        self.metrics_port: int | None = None
        if metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(metrics_host, metrics_port)
            except OSError as exc:
                raise InputError(f"cannot serve metrics on {_address(metrics_host, metrics_port)}: "
                                 f"{exc.strerror or exc}") from exc
            self.metrics_address = _address(metrics_host, self.metrics_port)

    def start(self) -> None:
        """Warm every model and the worker pool (unless warm=False), then serve and report SERVING."""
        if self._warm:
            self.warm_up()
        for model in self.registry.models():  # after the warm-up: the metrics count clients' batches only
            model.batcher.on_batch = (lambda faces, name=model.name: self.metrics.batch(name, faces))
        self.trimmer.start()
        self._server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s (%s)", ", ".join(self.registry.names()), self.address,
                 "TLS" if self.tls else "plaintext")
        if self.metrics_port is not None:
            log.info("metrics on http://%s/metrics", self.metrics_address)

    def warm_up(self) -> None:
        """Every model's stages once on synthetic frames (see `warm_up`), the shared cascades made and
        sized, every gRPC worker thread started, and the memory this freed given back to the OS."""
        # The pool first: the warm-up streams then borrow sized sets instead of making unsized ones.
        kept = self.servicer.detectors.fill()
        log.info("%d sets of Haar cascades ready", kept)
        for name, pipeline in self.servicer.pipelines.items():
            t0 = time.perf_counter()
            done = warm_up(pipeline)
            ms = (time.perf_counter() - t0) * 1000.0
            if done["failed"]:
                log.warning("warm-up of model %s: %d of %d frames failed: %s", name, len(done["failed"]),
                            done["frames"], done["failed"][0][:MESSAGE_LIMIT])
            else:
                log.info("warmed up model %s in %.0f ms (%d frames, %d faces)", name, ms, done["frames"],
                         done["faces"])
        prestart_workers(self._executor, self._workers)
        prestart_workers(self.servicer.preparers, self.servicer.preparer_threads)
        gc.collect()
        trim()  # what the warm-up freed goes back now: SERVING reports what serving needs

    def shutdown(self, grace: float = 10.0) -> None:
        """Drain: refuse new calls, answer every frame already received, end streams, stop.

        Streams end with UNAVAILABLE after their in-flight frames are answered; anything still
        running after `grace` seconds is cancelled.
        """
        streams, frames = self.servicer.frames_in_flight()
        log.info("draining: %d stream(s), %d frame(s) in flight; grace %.1f s", streams, frames, grace)
        self.draining.set()
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self.registry.close()
        self.metrics.close()
        self.trimmer.close()
        self._executor.shutdown(wait=False)
        self.servicer.preparers.shutdown(wait=False)

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from exc


@contextlib.contextmanager
def run_server(models_dir: str, port: int = 0, *, host: str = "127.0.0.1", device: str = "auto",
               max_streams: int = 8, token: str | None = None, tls_cert: str | None = None,
               tls_key: str | None = None, config: PipelineConfig | None = None,
               max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_batch: int = 16,
               intra_op_threads: int | None = None, grace: float = 5.0, metrics_port: int | None = None,
               pushback_ms: int = DEFAULT_PUSHBACK_MS,
               markers: Callable[[LoadedModel], FaceMarker | None] | None = None,
               warm: bool = True, trim_interval: float = DEFAULT_TRIM_INTERVAL) -> Iterator[int]:
    """Load the models under `models_dir`, serve them, yield the bound port; drain on exit."""
    registry = ModelRegistry.load(models_dir, device=device, max_batch=max_batch,
                                  intra_op_threads=intra_op_threads)
    try:
        server = SwapServer(registry, host=host, port=port, max_streams=max_streams, token=token,
                            tls_cert=tls_cert, tls_key=tls_key, config=config,
                            max_message_bytes=max_message_bytes, metrics_port=metrics_port,
                            pushback_ms=pushback_ms, markers=markers, warm=warm,
                            trim_interval=trim_interval)
    except BaseException:
        registry.close()
        raise
    try:
        server.start()
        yield server.port
    finally:
        server.shutdown(grace)
