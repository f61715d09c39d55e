"""Parity: the same face crops through Keras and through onnxruntime, with explicit tolerances."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
MIN_FACES = 16


@dataclass(frozen=True)
class ParityResult:
    """Max/mean absolute difference between Keras and onnxruntime over `faces` crops."""

    label: str
    faces: int
    real_faces: int
    max_abs: float
    mean_abs: float
    tolerance: float
    provider: str

    @property
    def ok(self) -> bool:
        """True when the largest difference is within the tolerance (NaN never passes)."""
        return bool(self.max_abs <= self.tolerance)

    def line(self) -> str:
        """One human-readable line with the figures."""
        verdict = "ok" if self.ok else "FAILED"
        return (f"parity {self.label}: max |keras - onnx| = {self.max_abs:.3g} (tolerance {self.tolerance:g}), "
                f"mean {self.mean_abs:.3g}, {self.faces} faces ({self.real_faces} real), "
                f"{self.provider}: {verdict}")


def parity_faces(size: int, real: np.ndarray | None = None, n_random: int = MIN_FACES,
                 seed: int = 0) -> tuple[np.ndarray, int]:
    """Float32 NxSxSx3 crops in 0..1: `n_random` random ones (half pixel noise, half smooth
    random fields, which look more like images) plus up to 16 of the `real` uint8 BGR crops
    (resized to `size` when they differ). Returns (faces, number of real faces)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n_random - n_random // 2, size, size, 3), dtype=np.float32)
    smooth = [cv2.resize(rng.random((4, 4, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
              for _ in range(n_random // 2)]
    parts = [noise, np.clip(np.stack(smooth), 0.0, 1.0).reshape(-1, size, size, 3)]
    n_real = 0
    if real is not None and len(real):
        pick = real[rng.permutation(len(real))[:16]]
        if pick.shape[1:3] != (size, size):
            pick = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in pick])
        parts.append(pick.astype(np.float32) / 255.0)
        n_real = len(pick)
    return np.concatenate(parts).astype(np.float32), n_real


def keras_outputs(model, faces: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    """Run the Keras model in inference mode; one array per model output."""
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(faces), batch):
        out = model(faces[start:start + batch], training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        chunks.append([np.asarray(o, dtype=np.float32) for o in outs])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def onnx_outputs(session, input_name: str, output_names: list[str], faces: np.ndarray,
                 batch: int) -> list[np.ndarray]:
    """Run an onnxruntime session over `faces` in chunks of `batch` (1 for fixed-batch graphs)."""
    chunks = [session.run(output_names, {input_name: faces[s:s + batch]}) for s in range(0, len(faces), batch)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def compare(label: str, reference: list[np.ndarray], actual: list[np.ndarray], tolerance: float,
            provider: str, real_faces: int) -> ParityResult:
    """ParityResult over all output pairs (reference[i] vs actual[i])."""
    if len(reference) != len(actual):
        raise ValueError(f"{label}: {len(actual)} outputs, Keras has {len(reference)}")
    diffs = [np.abs(r.astype(np.float64) - a.astype(np.float64)) for r, a in zip(reference, actual)]
    max_abs = max(float(np.max(d)) if d.size else 0.0 for d in diffs)
    if any(not np.all(np.isfinite(a)) for a in actual):
        max_abs = float("nan")
    mean_abs = float(np.mean(np.concatenate([d.ravel() for d in diffs])))
    return ParityResult(label, len(reference[0]), real_faces, max_abs, mean_abs, tolerance, provider)
