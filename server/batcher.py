"""One onnxruntime call for many faces: a per-model worker that batches face crops from every
frame and every stream waiting at that moment (adaptive batching: no timer, whatever queued up
while the previous call ran goes into the next one, up to max_batch faces).

On CUDA every new input shape costs onnxruntime a cuDNN algorithm search, so there a batch is
padded up to one of a few bucket sizes (powers of two) and each size is run once when the model
loads: no stream pays for a shape's first call (docs/serving.md has the GPU measurements)."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from server.manifest import Manifest


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
                 name: str = "model", buckets: bool = False) -> None:
        self.session = session
        self.manifest = manifest
        self.max_batch = max(1, max_batch)
        # Batch sizes the session is called with (padded up to): None = the exact face count.
        self.buckets = bucket_sizes(self.max_batch) if buckets and manifest.dynamic_batch else None
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._outputs = [manifest.output_name] + ([manifest.mask_output_name] if manifest.mask_output_name else [])
        self._thread = threading.Thread(target=self._run, name=f"infer-{name}", daemon=True)
        self._closed = False
        self.calls = 0
        self._thread.start()

    def submit(self, crops: np.ndarray, timeout: float = 60.0) -> Future:
        """Queue uint8 N x S x S x 3 BGR crops; the Future gives an InferenceResult."""
        fut: Future = Future()
        if self._closed:
            fut.set_exception(RuntimeError("inference worker is closed"))
            return fut
        self._queue.put((crops, fut), timeout=timeout)
        return fut

    def warm_up(self) -> None:
        """Run every bucket size once (zeros), so no stream pays for a first call of a shape."""
        size = self.manifest.crop_size
        for n in self.buckets or (1,):
            self._run_session(np.zeros((n, size, size, 3), np.uint8))

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
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self.calls += 1
        start = 0
        for c, fut in batch:
            end = start + len(c)
            fut.set_result(InferenceResult(out[start:end], None if masks is None else masks[start:end], ms, len(crops)))
            start = end

    def _run_session(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        m = self.manifest
        x = crops if m.dtype == "uint8" else crops.astype(np.float32) * np.float32(1.0 / 255.0)
        n = len(x)
        if self.buckets and n < self.buckets[-1]:
            padded = next(b for b in self.buckets if b >= n)
            x = np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), x.dtype)])
        t0 = time.perf_counter()
        if m.dynamic_batch:
            results = [r[:n] for r in self.session.run(self._outputs, {m.input_name: x})]
        else:  # graph with a fixed batch of 1 (e.g. DFM-style export): one call per face
            parts = [self.session.run(self._outputs, {m.input_name: x[i:i + 1]}) for i in range(len(x))]
            results = [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(self._outputs))]
        ms = (time.perf_counter() - t0) * 1000.0
        faces = np.clip(results[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        masks = None
        if len(results) > 1:
            masks = np.clip(results[1].reshape(n, m.crop_size, m.crop_size), 0.0, 1.0).astype(np.float32)
        return faces, masks, ms


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two below max_batch, then max_batch itself: (1, 2, 4, 8, 16) for 16."""
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch)
