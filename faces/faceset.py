"""Face sets: one uncompressed .npz of aligned face crops plus per-face metadata.

Format 2 (`format_version` = 2). Arrays (all plain numeric or unicode, never objects, so
`allow_pickle=False` always works):
  format_version int64 ()           2
  faces        uint8  (N, S, S, 3)  BGR crops
  source       <U     (N,)          source video path of each face
  frame_index  int64  (N,)          frame number in its source video
  box          int64  (N, 4)        x, y, w, h: the Haar detection box in the source frame (aligned
                                    sets), or the square crop box (unaligned sets)
  margin       float64 ()           crop margin around the Haar box (unaligned sets; 0 when aligned)
Aligned sets (what `swapstream extract` writes by default) also hold:
  template     float64 (3,)         the AlignTemplate: size (= S), eye_distance, eye_line
  matrix       float64 (N, 2, 3)    frame pixels -> crop pixels (cv2.warpAffine's convention)
  landmarks    float32 (N, 5, 2)    dlib's five points in frame pixels (faces/align.py POINT_NAMES)
Optional, present when the faces came from `swapstream synth` videos (ground truth):
  identity     int64  (N,)          synthetic identity seed
  pose         float64 (N, P)       render (expression/pose) parameters of each face's frame
  pose_names   <U     (P,)          names of the pose parameters
  frame_size   int64  (2,)          width, height of the rendered frames

A file without `format_version` is format 1 (axis-aligned Haar squares): it is refused with a
message saying to re-extract it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from swapstream.faces.align import AlignTemplate, resize_interpolation
from swapstream.faces.errors import FaceSetError
from swapstream.faces.files import atomic_path

FORMAT_VERSION = 2
REQUIRED = ("faces", "source", "frame_index", "box")
ALIGNED = ("template", "matrix", "landmarks")
PER_FACE = ("identity", "pose")  # optional extras with one row per face
# An .npz is a zip archive: a local file header first, or the end record of an empty archive.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class FaceSet:
    """Face crops (uint8 BGR, N x S x S x 3) with where each came from.

    `template` (an AlignTemplate of side S), `matrix` (N, 2, 3) and `landmarks` (N, 5, 2) are set
    for aligned faces, all three or none.
    """

    faces: np.ndarray
    source: np.ndarray
    frame_index: np.ndarray
    box: np.ndarray
    margin: float = 0.0
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    template: AlignTemplate | None = None
    matrix: np.ndarray | None = None
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.faces.shape[0])

    @property
    def size(self) -> int:
        """Side length S of the square crops."""
        return int(self.faces.shape[1])

    @property
    def aligned(self) -> bool:
        """True when the faces were warped to `template` (landmark-aligned)."""
        return self.template is not None

    def subset(self, index: np.ndarray) -> "FaceSet":
        """A new face set holding only the faces at `index` (metadata kept in step)."""
        extra = {k: (v[index] if k in PER_FACE else v) for k, v in self.extra.items()}
        return FaceSet(self.faces[index], self.source[index], self.frame_index[index],
                       self.box[index], self.margin, extra, self.template,
                       None if self.matrix is None else self.matrix[index],
                       None if self.landmarks is None else self.landmarks[index])


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """A batch of square face crops (N, S, S, C) at size x size, same dtype: area filter when
    shrinking 2x or more, Lanczos when shrinking less (a non-integer box blurs: 160 -> 128), cubic
    when enlarging (faces/align.py `resize_interpolation`; float crops stay within 0..1).
    The batch itself if S == size."""
    arr = np.asarray(faces)
    if arr.shape[1] == size and arr.shape[2] == size:
        return arr
    interp = resize_interpolation(arr.shape[1], size)
    out = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in arr]).reshape(
        len(arr), size, size, *arr.shape[3:])
    if np.issubdtype(out.dtype, np.floating):  # cubic/Lanczos overshoot at edges; uint8 saturates by itself
        np.clip(out, 0.0, 1.0, out=out)
    return out


def template_array(template: AlignTemplate) -> np.ndarray:
    """The template as stored in a face set: float64 [size, eye_distance, eye_line]."""
    return np.array([template.size, template.eye_distance, template.eye_line], np.float64)


def template_from_array(values: np.ndarray, path: str = "face set") -> AlignTemplate:
    """The AlignTemplate stored as [size, eye_distance, eye_line]; FaceSetError if it is not one."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or v[0] != round(v[0]):
        raise FaceSetError(f"face set {path}: template must be [size, eye_distance, eye_line], got {v.tolist()}")
    try:
        return AlignTemplate(size=int(v[0]), eye_distance=float(v[1]), eye_line=float(v[2]))
    except ValueError as exc:
        raise FaceSetError(f"face set {path}: bad template ({exc})") from None


def save_faceset(path: str, fs: FaceSet) -> None:
    """Write a face set atomically (temporary file, then rename) as an uncompressed .npz."""
    _validate(fs.faces, path)
    _validate_alignment(fs, path)
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "faces": fs.faces,
        "source": np.asarray(fs.source, dtype=np.str_),
        "frame_index": np.asarray(fs.frame_index, dtype=np.int64),
        "box": np.asarray(fs.box, dtype=np.int64).reshape(-1, 4),
        "margin": np.float64(fs.margin),
        **{k: v for k, v in fs.extra.items() if k not in ("format_version", *ALIGNED)},
    }
    if fs.template is not None:
        arrays["template"] = template_array(fs.template)
        arrays["matrix"] = np.asarray(fs.matrix, np.float64)
        arrays["landmarks"] = np.asarray(fs.landmarks, np.float32)
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
    version = arrays.pop("format_version", None)
    if version is None:
        raise FaceSetError(f"face set {path} is format 1 (unaligned Haar crops, from an older swapstream); "
                           f"re-extract it with `swapstream extract VIDEO... --out {path}`")
    if version.shape != () or not np.issubdtype(version.dtype, np.integer) or int(version) != FORMAT_VERSION:
        raise FaceSetError(f"face set {path} has format_version {version.tolist()}; "
                           f"this swapstream reads format {FORMAT_VERSION} (re-extract it)")
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
    present = [k for k in ALIGNED if k in arrays]
    template = matrix = landmarks = None
    if present:
        if len(present) != len(ALIGNED):
            raise FaceSetError(f"face set {path} has {', '.join(present)} but lacks "
                               f"{', '.join(k for k in ALIGNED if k not in present)}")
        template = template_from_array(arrays.pop("template"), path)
        matrix, landmarks = arrays.pop("matrix"), arrays.pop("landmarks")
    fs = FaceSet(faces, source, frame_index, box.reshape(n, 4), margin, arrays, template, matrix, landmarks)
    _validate_alignment(fs, path)
    return fs


def _validate(faces: np.ndarray, path: str) -> None:
    if faces.dtype != np.uint8:
        raise FaceSetError(f"face set {path}: faces must be uint8, got {faces.dtype}")
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.shape[1] != faces.shape[2]:
        raise FaceSetError(f"face set {path}: faces must be N x S x S x 3, got shape {faces.shape}")


def _validate_alignment(fs: FaceSet, path: str) -> None:
    given = [x is not None for x in (fs.template, fs.matrix, fs.landmarks)]
    if not any(given):
        return
    if not all(given):
        raise FaceSetError(f"face set {path}: template, matrix and landmarks go together (all or none)")
    n = len(fs)
    if fs.template.size != fs.size:
        raise FaceSetError(f"face set {path}: the template is {fs.template.size} px, the faces {fs.size} px")
    for name, arr, shape in (("matrix", fs.matrix, (n, 2, 3)), ("landmarks", fs.landmarks, (n, 5, 2))):
        a = np.asarray(arr)
        if a.shape != shape or not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
            raise FaceSetError(f"face set {path}: {name} must be finite floats of shape {shape}, "
                               f"got {a.dtype} {a.shape}")
