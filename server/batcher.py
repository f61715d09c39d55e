"""One onnxruntime call for many faces: a per-model worker that batches face crops from every
frame and every stream waiting at that moment (adaptive batching: no timer, whatever queued up
while the previous call ran goes into the next one, up to max_batch faces).

On CUDA every batch is padded to max_batch faces, so the session always sees one input shape,
run once when the model loads: calls whose batch size differed from the last one stalled there,
even with a few padded sizes each warmed up (docs/experiments/2026-11-27-cuda-batch-stall.md)."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from swapstream.faces.model_folder import Manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceResult:
    """Swapped faces for one submission, in submission order."""

    faces: np.ndarray          # uint8 N x S x S x 3 BGR
    masks: np.ndarray | None   # float32 N x S x S in 0..1 when the model outputs a mask
    infer_ms: float            # wall time of the onnxruntime call that held these faces
    batch_faces: int           # faces in that call (from all frames and streams batched together)


class InferenceBatcher:
    """Runs a model's session on batches of face crops in a worker thread.

    submit() is thread-safe and returns a Future; the queue is bounded (max_pending
    submissions), so a producer that outruns inference blocks instead of growing memory.
    """

    _STOP = object()

    def __init__(self, session, manifest: Manifest, max_batch: int = 16, max_pending: int = 64,
                 name: str = "model", fixed_batch: bool = False) -> None:
        self.session = session
        self.manifest = manifest
        self.max_batch = max(1, max_batch)
        # The batch size every call is padded to (fixed_batch, for CUDA); None = the face count.
        self.padded_batch = self.max_batch if fixed_batch and manifest.dynamic_batch else None
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._outputs = [manifest.output_name] + ([manifest.mask_output_name] if manifest.mask_output_name else [])
        self._thread = threading.Thread(target=self._run, name=f"infer-{name}", daemon=True)
        self._closed = False
        self.calls = 0
        self.on_batch: Callable[[int], None] | None = None  # told the face count of every call (metrics)
        self._thread.start()

    def submit(self, crops: np.ndarray, timeout: float = 60.0) -> Future:
        """Queue uint8 N x S x S x 3 BGR crops; the Future gives an InferenceResult."""
        fut: Future = Future()
        if self._closed:
            fut.set_exception(RuntimeError("inference worker is closed"))
            return fut
        self._queue.put((crops, fut), timeout=timeout)
        return fut

    def warm_up(self, batch: int | None = None) -> None:
        """Run the session once on `batch` zero crops (default: the padded batch, else 1), so no
        stream pays for its first call."""
        size = self.manifest.crop_size
        self._run_session(np.zeros((batch or self.padded_batch or 1, size, size, 3), np.uint8))

    def infer(self, crops: np.ndarray) -> InferenceResult:
        """Run crops through the model now in the caller's thread (no batching with others)."""
        out, masks, ms = self._run_session(crops)
        return InferenceResult(out, masks, ms, len(crops))

    def close(self) -> None:
        """Finish queued work and stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(self._STOP)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            batch = [item]
            n = len(item[0])
            stop = False
            while n < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is self._STOP:
                    stop = True
                    break
                batch.append(more)
                n += len(more[0])
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list) -> None:
        try:
            crops = np.concatenate([c for c, _ in batch], axis=0)
            out, masks, ms = self._run_session(crops)
        except Exception as exc:  # every frame in the batch gets the error
            exc = exc.with_traceback(None)  # its traceback holds this frame, which holds the futures: a cycle
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self.calls += 1
        start = 0
        for c, fut in batch:
            end = start + len(c)
            fut.set_result(InferenceResult(out[start:end], None if masks is None else masks[start:end], ms, len(crops)))
            start = end
        if self.on_batch is not None:
            try:
                self.on_batch(len(crops))
            except Exception:  # a reporting hook must never stop the worker
                log.exception("batch observer failed")

    def _run_session(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        m = self.manifest
        x = crops if m.dtype == "uint8" else crops.astype(np.float32) * np.float32(1.0 / 255.0)
        n = len(x)
        # Faces per session call: the fixed batch (padded up, more faces in several calls), one
        # for a graph with a fixed batch of 1 (e.g. DFM-style export), else all of them at once.
        step = max(1, self.padded_batch or (n if m.dynamic_batch else 1))
        t0 = time.perf_counter()
        parts = []
        for i in range(0, max(n, 1), step):
            part = x[i:i + step]
            if self.padded_batch and len(part) < step:
                part = np.concatenate([part, np.zeros((step - len(part), *x.shape[1:]), x.dtype)])
            parts.append(self.session.run(self._outputs, {m.input_name: part}))
        results = [np.concatenate([p[k] for p in parts], axis=0)[:n] for k in range(len(self._outputs))]
        ms = (time.perf_counter() - t0) * 1000.0
        faces = np.clip(results[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        masks = None
        if len(results) > 1:
            masks = np.clip(results[1].reshape(n, *results[1].shape[1:3]), 0.0, 1.0).astype(np.float32)
        return faces, masks, ms

