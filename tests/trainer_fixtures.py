"""Tiny synthetic face sets for the trainer tests (rendered with faces.synth, saved as .npz).

The sets are written as aligned face sets (format 2 with a template) by default: the crops are a
fixed window of the render, which frames the synthetic head about as the template does, and the
trainer only reads the template for where the face region lies.
"""
from __future__ import annotations

import cv2
import numpy as np

from swapstream.faces.align import AlignTemplate
from swapstream.faces.faceset import FaceSet, save_faceset
from swapstream.faces.synth import pose_sequence, render_face

# The window of the 96 x 96 render that synthetic_faces() crops: x0, y0, side.
WINDOW = (16, 14, 64)


def synthetic_faces(identity: int, count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (count, size, size, 3) BGR: `identity` rendered with a talking-head motion.

    The frame is rendered a little larger and centre-cropped so the face fills it like an
    `extract` crop does.
    """
    poses = pose_sequence(count, seed=seed)
    frames = []
    for pose in poses:
        frame = render_face(identity, pose, (96, 96))
        x0, y0, side = WINDOW
        crop = frame[y0:y0 + side, x0:x0 + side]  # the head sits slightly above the centre of the frame
        frames.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


def write_face_set(path: str, faces: np.ndarray, margin: float = 0.3, aligned: bool = True,
                   template: AlignTemplate | None = None) -> str:
    """Save uint8 crops of synthetic_faces() as a face set .npz; returns the path.

    aligned: with an alignment template of the crops' side (`template`, default AlignTemplate's
    proportions), the window's matrix and the template's points as landmarks; margin 0.
    Otherwise an unaligned set of Haar squares cut with `margin`.
    """
    n, size = len(faces), int(faces.shape[1])
    source, index = np.asarray(["synthetic.mp4"] * n), np.arange(n)
    box = np.tile([0, 0, size, size], (max(n, 0), 1))
    if not aligned:
        save_faceset(str(path), FaceSet(faces, source, index, box, margin))
        return str(path)
    template = template or AlignTemplate(size=size)
    x0, y0, side = WINDOW
    k = size / side
    matrix = np.array([[k, 0.0, -k * x0], [0.0, k, -k * y0]])
    landmarks = (template.points() - matrix[:, 2]) / k
    save_faceset(str(path), FaceSet(faces, source, index, box, 0.0, template=template,
                                    matrix=np.tile(matrix, (n, 1, 1)),
                                    landmarks=np.tile(landmarks.astype(np.float32), (n, 1, 1))))
    return str(path)


def make_pair(folder, count: int = 24, size: int = 32) -> tuple[str, str]:
    """Face sets of two different synthetic people (identities 3 and 11) in `folder`."""
    a = write_face_set(folder / "a.npz", synthetic_faces(3, count, size, seed=1))
    b = write_face_set(folder / "b.npz", synthetic_faces(11, count, size, seed=2))
    return a, b
