"""Prometheus metrics of one server (`swapstream serve --metrics-port P`).

`Metrics` is the interface and does nothing (metrics off, the default, costs nothing);
`PrometheusMetrics` records into a registry of its own (no process-global state, so tests and
several servers in one process do not mix) and serves it as /metrics over HTTP.

    swapstream_active_streams                         gauge
    swapstream_frames_total{model,result}             counter; result = ok or the per-frame status code
    swapstream_faces_swapped_total{model}             counter
    swapstream_stage_seconds{model,stage}             histogram; stage = decode, detect, align, infer, blend,
                                                      encode, queue, total (answered frames only)
    swapstream_inference_batch_faces{model}           histogram: faces per onnxruntime call
    swapstream_rejected_calls_total{method,code}      counter: calls that ended with an error status
    swapstream_models_loaded, swapstream_models_refused   gauges
"""
from __future__ import annotations

import grpc

from swapstream.faces.wire import STAGES
from swapstream.v1 import swap_pb2

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """What the server reports; this base class records nothing."""

    port: int | None = None

    def stream_started(self) -> None:
        """A stream took a slot."""

    def stream_ended(self) -> None:
        """A stream gave its slot back."""

    def frame(self, model: str, result: str, reply: swap_pb2.SwappedFrame) -> None:
        """A frame was answered: result is "ok" or the name of its per-frame status code."""

    def rejected(self, method: str, code: grpc.StatusCode) -> None:
        """A call ended with an error status."""

    def batch(self, model: str, faces: int) -> None:
        """One onnxruntime call ran `faces` faces."""

    def models(self, loaded: int, refused: int) -> None:
        """How many model folders were loaded and how many were refused."""

    def serve(self, host: str, port: int) -> int:
        """Start serving /metrics; return the bound port."""
        raise NotImplementedError("metrics are off")

    def close(self) -> None:
        """Stop serving /metrics."""


class PrometheusMetrics(Metrics):
    """Metrics in a registry of their own, served over HTTP by prometheus-client."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self._active = Gauge("swapstream_active_streams", "Streams being served now", registry=r)
        self._frames = Counter("swapstream_frames", "Frames answered, by result (ok or the per-frame status code)",
                               ["model", "result"], registry=r)
        self._faces = Counter("swapstream_faces_swapped", "Faces swapped into frames", ["model"], registry=r)
        self._stage = Histogram("swapstream_stage_seconds", "Server time per answered frame, by stage",
                                ["model", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self._batch = Histogram("swapstream_inference_batch_faces", "Faces per onnxruntime call",
                                ["model"], buckets=BATCH_BUCKETS, registry=r)
        self._rejected = Counter("swapstream_rejected_calls", "Calls that ended with an error status",
                                 ["method", "code"], registry=r)
        self._loaded = Gauge("swapstream_models_loaded", "Model folders being served", registry=r)
        self._refused = Gauge("swapstream_models_refused", "Model folders refused at start (bad manifest, "
                                                           "hash or I/O mismatch, load failure)", registry=r)
        self._httpd = None

    def stream_started(self) -> None:
        self._active.inc()

    def stream_ended(self) -> None:
        self._active.dec()

    def frame(self, model: str, result: str, reply: swap_pb2.SwappedFrame) -> None:
        self._frames.labels(model, result).inc()
        if result != "ok":
            return
        if reply.faces:
            self._faces.labels(model).inc(len(reply.faces))
        t = reply.timings
        for stage in STAGES:
            self._stage.labels(model, stage).observe(getattr(t, f"{stage}_ms") / 1000.0)

    def rejected(self, method: str, code: grpc.StatusCode) -> None:
        self._rejected.labels(method, code.name).inc()

    def batch(self, model: str, faces: int) -> None:
        self._batch.labels(model).observe(faces)

    def models(self, loaded: int, refused: int) -> None:
        self._loaded.set(loaded)
        self._refused.set(refused)

    def serve(self, host: str, port: int) -> int:
        from prometheus_client import start_http_server

        self._httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._httpd.server_address[1]
        return self.port

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
