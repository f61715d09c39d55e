"""Tiny synthetic face sets for the trainer tests (rendered with faces.synth, saved as .npz)."""
from __future__ import annotations

import cv2
import numpy as np

from swapstream.faces.faceset import FaceSet, save_faceset
from swapstream.faces.synth import pose_sequence, render_face


def synthetic_faces(identity: int, count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (count, size, size, 3) BGR: `identity` rendered with a talking-head motion.

    The frame is rendered a little larger and centre-cropped so the face fills it like an
    `extract` crop does.
    """
    poses = pose_sequence(count, seed=seed)
    frames = []
    for pose in poses:
        frame = render_face(identity, pose, (96, 96))
        crop = frame[14:78, 16:80]  # the head sits slightly above the centre of the frame
        frames.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


def write_face_set(path: str, faces: np.ndarray, margin: float = 0.3) -> str:
    """Save uint8 crops as a face set .npz; returns the path."""
    n = len(faces)
    save_faceset(str(path), FaceSet(faces, np.asarray(["synthetic.mp4"] * n), np.arange(n),
                                    np.tile([0, 0, faces.shape[1], faces.shape[1]], (max(n, 0), 1)),
                                    margin))
    return str(path)


def make_pair(folder, count: int = 24, size: int = 32) -> tuple[str, str]:
    """Face sets of two different synthetic people (identities 3 and 11) in `folder`."""
    a = write_face_set(folder / "a.npz", synthetic_faces(3, count, size, seed=1))
    b = write_face_set(folder / "b.npz", synthetic_faces(11, count, size, seed=2))
    return a, b
