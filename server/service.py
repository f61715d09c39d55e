"""The gRPC service: FaceSwap servicer, token auth, health, reflection, and server life cycle.

    with run_server("models/", port=0) as port:      # grpc examples style: a free loopback port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")

`SwapServer` is the same thing with explicit start()/shutdown(), for `swapstream serve`.
The server keeps no state beyond a stream's life, so replicas behind a gRPC load balancer
scale it out (DESIGN section 8).
"""
from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from swapstream.faces.errors import InputError
from swapstream.server.pipeline import PipelineConfig, StreamControl, StreamSettings, SwapPipeline
from swapstream.server.registry import ModelRegistry
from swapstream.v1 import swap_pb2, swap_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = swap_pb2.DESCRIPTOR.services_by_name["FaceSwap"].full_name
MODEL_METADATA_KEY = "swapstream-model"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class FaceSwapServicer(swap_pb2_grpc.FaceSwapServicer):
    """Implements swap.proto's FaceSwap over a ModelRegistry."""

    def __init__(self, registry: ModelRegistry, config: PipelineConfig, max_streams: int,
                 draining: threading.Event) -> None:
        self._registry = registry
        self._config = config
        self._pipelines = {m.name: SwapPipeline(m, config) for m in registry.models()}
        self._max_streams = max_streams
        self._active = 0
        self._lock = threading.Lock()
        self._draining = draining
        self._streams: set[StreamControl] = set()

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
            return True

    def _release_slot(self) -> None:
        with self._lock:
            self._active -= 1

    def _pipeline(self, name: str, context) -> SwapPipeline:
        pipeline = self._pipelines.get(name)
        if pipeline is None:
            valid = ", ".join(self._registry.names())
            if not name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"no model named: set metadata {MODEL_METADATA_KEY!r} or Frame.model (served: {valid})")
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r} (served: {valid})")
        return pipeline

    def StreamSwap(self, request_iterator, context) -> Iterator[swap_pb2.SwappedFrame]:
        if self._draining.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        if not self._acquire_slot():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"all {self._max_streams} stream slots are in use; retry later or use another replica")
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
            try:
                first = next(request_iterator, None)
            except Exception:  # client went away before its first frame
                return
            if first is None:
                return
            name = dict(context.invocation_metadata()).get(MODEL_METADATA_KEY) or first.model
            pipeline = self._pipeline(name, context)
            settings = StreamSettings.resolve(self._config, first.options)
            frames = itertools.chain([first], request_iterator)
            yield from pipeline.run_stream(frames, settings, control)
            if control.drained:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details("server is shutting down; every frame it received was answered")
        finally:
            release()

    def SwapImage(self, request: swap_pb2.Frame, context) -> swap_pb2.SwappedFrame:
        name = dict(context.invocation_metadata()).get(MODEL_METADATA_KEY) or request.model
        pipeline = self._pipeline(name, context)
        settings = StreamSettings.resolve(self._config, request.options)
        settings.redetect_every = 1
        reply = pipeline.swap_one(request, settings)
        if reply.HasField("error"):
            context.abort(_CODES.get(reply.error.code, grpc.StatusCode.INTERNAL), reply.error.message)
        return reply

    def ListModels(self, request, context) -> swap_pb2.ListModelsResponse:
        out = swap_pb2.ListModelsResponse()
        for m in self._registry.models():
            out.models.add(name=m.name, method=m.manifest.method, direction=m.manifest.direction,
                           input_size=m.manifest.crop_size, provider=m.provider,
                           crop_margin=m.manifest.crop_margin, precision=m.manifest.precision)
        return out


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Requires metadata `authorization: Bearer <token>` on every call except health checks."""

    EXEMPT = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self.EXEMPT):
            return continuation(handler_call_details)
        got = dict(handler_call_details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(got.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        return None if handler is None else _deny(handler, "missing token" if not got else "wrong token")


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
    """A configured gRPC server around a ModelRegistry: start(), then shutdown(grace)."""

    def __init__(self, registry: ModelRegistry, *, host: str = "127.0.0.1", port: int = 0,
                 max_streams: int = 8, token: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, config: PipelineConfig | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_streams < 1:
            raise InputError("--max-streams must be >= 1")
        if (tls_cert is None) != (tls_key is None):
            raise InputError("TLS needs both --tls-cert and --tls-key")
        self.registry = registry
        self.draining = threading.Event()
        self.servicer = FaceSwapServicer(registry, config or PipelineConfig(), max_streams, self.draining)
        self.health = health.HealthServicer()
        interceptors = [TokenAuthInterceptor(token)] if token else []
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
        self._executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
        self._server = grpc.server(self._executor, interceptors=interceptors, options=options,
                                   maximum_concurrent_rpcs=workers)
        swap_pb2_grpc.add_FaceSwapServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
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

    def start(self) -> None:
        self._server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s (%s)", ", ".join(self.registry.names()), self.address,
                 "TLS" if self.tls else "plaintext")

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
        self._executor.shutdown(wait=False)

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)


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
               intra_op_threads: int | None = None, grace: float = 5.0) -> Iterator[int]:
    """Load the models under `models_dir`, serve them, yield the bound port; drain on exit."""
    registry = ModelRegistry.load(models_dir, device=device, max_batch=max_batch,
                                  intra_op_threads=intra_op_threads)
    try:
        server = SwapServer(registry, host=host, port=port, max_streams=max_streams, token=token,
                            tls_cert=tls_cert, tls_key=tls_key, config=config,
                            max_message_bytes=max_message_bytes)
    except BaseException:
        registry.close()
        raise
    server.start()
    try:
        yield server.port
    finally:
        server.shutdown(grace)
