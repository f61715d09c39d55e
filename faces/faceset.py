"""Face sets: one uncompressed .npz of aligned face crops plus per-face metadata.

Arrays (all plain numeric or unicode, never objects, so `allow_pickle=False` always works):
  faces        uint8  (N, S, S, 3)  BGR crops
  source       <U     (N,)          source video path of each face
  frame_index  int64  (N,)          frame number in its source video
  box          int64  (N, 4)        x, y, w, h of the square crop box in the source frame
  margin       float64 ()           crop margin used (fraction of the detected box side)
Optional, present when the faces came from `swapstream synth` videos (ground truth):
  identity     int64  (N,)          synthetic identity seed
  pose         float64 (N, P)       render (expression/pose) parameters of each face's frame
  pose_names   <U     (P,)          names of the pose parameters
  frame_size   int64  (2,)          width, height of the rendered frames
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from swapstream.faces.errors import FaceSetError
from swapstream.faces.files import atomic_path

REQUIRED = ("faces", "source", "frame_index", "box")
# An .npz is a zip archive: a local file header first, or the end record of an empty archive.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class FaceSet:
    """Face crops (uint8 BGR, N x S x S x 3) with where each came from."""

    faces: np.ndarray
    source: np.ndarray
    frame_index: np.ndarray
    box: np.ndarray
    margin: float = 0.0
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.faces.shape[0])

    @property
    def size(self) -> int:
        """Side length S of the square crops."""
        return int(self.faces.shape[1])

    def subset(self, index: np.ndarray) -> "FaceSet":
        """A new face set holding only the faces at `index` (metadata kept in step)."""
        per_face = ("identity", "pose")
        extra = {k: (v[index] if k in per_face else v) for k, v in self.extra.items()}
        return FaceSet(self.faces[index], self.source[index], self.frame_index[index],
                       self.box[index], self.margin, extra)


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """A batch of square face crops (N, S, S, C) at size x size, same dtype: area filter when
    shrinking, cubic when enlarging (float crops stay within 0..1). The batch itself if S == size."""
    arr = np.asarray(faces)
    if arr.shape[1] == size and arr.shape[2] == size:
        return arr
    interp = cv2.INTER_AREA if arr.shape[1] > size else cv2.INTER_CUBIC
    out = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in arr]).reshape(
        len(arr), size, size, *arr.shape[3:])
    if np.issubdtype(out.dtype, np.floating):  # cubic overshoots at edges; uint8 saturates by itself
        np.clip(out, 0.0, 1.0, out=out)
    return out


def save_faceset(path: str, fs: FaceSet) -> None:
    """Write a face set atomically (temporary file, then rename) as an uncompressed .npz."""
    _validate(fs.faces, path)
    arrays = {
        "faces": fs.faces,
        "source": np.asarray(fs.source, dtype=np.str_),
        "frame_index": np.asarray(fs.frame_index, dtype=np.int64),
        "box": np.asarray(fs.box, dtype=np.int64).reshape(-1, 4),
        "margin": np.float64(fs.margin),
        **fs.extra,
    }
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_faceset(path: str, min_faces: int = 1) -> FaceSet:
    """Load and check a face set; raise FaceSetError naming the problem if the file is wrong."""
    if not os.path.isfile(path):
        raise FaceSetError(f"face set {path} does not exist")
    # np.load takes anything that is neither .npz nor .npy for a pickle, and allow_pickle=False
    # would then report "pickled data": say what the file is not, instead.
    with open(path, "rb") as fh:
        if fh.read(4) not in ZIP_MAGIC:
            raise FaceSetError(f"face set {path} is not an .npz face set (make one with `swapstream extract`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            missing = [k for k in REQUIRED if k not in names]
            if missing:
                raise FaceSetError(f"face set {path} lacks array(s) {', '.join(missing)}")
            arrays = {k: data[k] for k in data.files}
    except FaceSetError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise FaceSetError(f"face set {path} holds pickled objects; refusing to load it") from exc
        raise FaceSetError(f"face set {path} is not a valid .npz: {exc}") from exc
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError ...
        raise FaceSetError(f"face set {path} is not a valid .npz ({type(exc).__name__}: {exc})") from exc
    faces = arrays.pop("faces")
    _validate(faces, path)
    n = faces.shape[0]
    if n < min_faces:
        raise FaceSetError(f"face set {path} holds {n} faces; need at least {min_faces}")
    source, frame_index, box = arrays.pop("source"), arrays.pop("frame_index"), arrays.pop("box")
    for name, arr in (("source", source), ("frame_index", frame_index), ("box", box)):
        if arr.shape[:1] != (n,):
            raise FaceSetError(f"face set {path}: {name} has {arr.shape[:1]} entries for {n} faces")
    margin = float(arrays.pop("margin", np.float64(0.0)))
    return FaceSet(faces, source, frame_index, box.reshape(n, 4), margin, arrays)


def _validate(faces: np.ndarray, path: str) -> None:
    if faces.dtype != np.uint8:
        raise FaceSetError(f"face set {path}: faces must be uint8, got {faces.dtype}")
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.shape[1] != faces.shape[2]:
        raise FaceSetError(f"face set {path}: faces must be N x S x S x 3, got shape {faces.shape}")
