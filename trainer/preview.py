"""Preview grids: rows A, A->B, B, B->A (one column per fixed preview face)."""
from __future__ import annotations

import cv2
import numpy as np

from swapstream.faces.faceset import resize_faces

ROW_LABELS = ("A", "A->B", "B", "B->A")


def _to_float(faces: np.ndarray) -> np.ndarray:
    return faces.astype(np.float32) / 255.0


def _to_uint8(images) -> np.ndarray:
    return (np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def swap_faces(model, faces: np.ndarray) -> np.ndarray:
    """Run an inference model on uint8 BGR faces (resized to its input side); return uint8 BGR
    at its output side."""
    side = int(model.inputs[0].shape[1])
    return _to_uint8(model(_to_float(resize_faces(faces, side)), training=False))


def preview_grid(method, faces_a: np.ndarray, faces_b: np.ndarray, scale: int = 1) -> np.ndarray:
    """uint8 BGR grid: rows A, A->B, B, B->A, with row labels on the left.

    `faces_a` and `faces_b` are uint8 (N, S, S, 3) (same N), shown at their side S; the networks
    read them at their input side and every row is shown at the output side.
    """
    side = method.output_size
    rows = [resize_faces(faces_a, side), swap_faces(method.inference_model("a2b"), faces_a),
            resize_faces(faces_b, side), swap_faces(method.inference_model("b2a"), faces_b)]
    return grid_image(rows, ROW_LABELS, scale)


def grid_image(rows: list[np.ndarray], labels: tuple[str, ...], scale: int = 1) -> np.ndarray:
    """Tile rows of equal-size faces into one image with a label strip on the left."""
    s = rows[0].shape[1] * scale
    strip_w = max(48, s // 2)
    out_rows = []
    for faces, label in zip(rows, labels):
        tiles = [cv2.resize(f, (s, s), interpolation=cv2.INTER_NEAREST) if scale != 1 else f
                 for f in faces]
        strip = np.full((s, strip_w, 3), 255, np.uint8)
        cv2.putText(strip, label, (4, s // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        out_rows.append(np.concatenate([strip] + tiles, axis=1))
    return np.concatenate(out_rows, axis=0)
