"""Video reading and writing that keeps frame rate and size (OpenCV; mp4v .mp4, MJPG/XVID .avi)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import cv2
import numpy as np

from swapstream.faces.errors import VideoError
from swapstream.faces.files import publish

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoReader:
    """Iterate the BGR frames of a video file (or a webcam index, given as int or digit string)."""

    def __init__(self, source: str | int) -> None:
        self.source = source
        is_cam = isinstance(source, int) or (isinstance(source, str) and source.isdigit())
        if not is_cam and not os.path.isfile(str(source)):
            raise VideoError(f"video {source} does not exist")
        self._cap = cv2.VideoCapture(int(source) if is_cam else str(source))
        if not self._cap.isOpened():
            raise VideoError(f"cannot open {source} as a video")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise VideoError(f"{source} holds no decodable video frames")
        self._first: np.ndarray | None = first
        self.height, self.width = first.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not is_cam else None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._first is not None:
            frame, self._first = self._first, None
            yield frame
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield frame

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Write BGR frames of one size to a video; the file appears only when writing succeeded.

    Frames go to a temporary file in the target folder that is renamed into place on a clean
    close, so an error or interruption never leaves a half-written video behind.
    """

    def __init__(self, path: str, fps: float, size: tuple[int, int]) -> None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in FOURCC:
            raise VideoError(f"unsupported video extension {ext!r} for {path}; use one of {', '.join(FOURCC)}")
        self.path, self.size = path, (int(size[0]), int(size[1]))
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise VideoError(f"output folder {folder} does not exist")
        fd, self._tmp = tempfile.mkstemp(prefix=".video-", suffix=ext, dir=folder)
        os.close(fd)
        self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*FOURCC[ext]), float(fps), self.size)
        if not self._writer.isOpened():
            os.unlink(self._tmp)
            raise VideoError(f"cannot write video {path} ({FOURCC[ext]})")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 BGR frame of the writer's size."""
        if frame.shape[:2] != (self.size[1], self.size[0]) or frame.dtype != np.uint8:
            raise VideoError(f"frame {frame.shape} {frame.dtype} does not match video size {self.size}")
        self._writer.write(frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file; with keep=False (or no frames) delete it instead."""
        self._writer.release()
        if keep and self.frames > 0:
            publish(self._tmp, self.path)
        elif os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)
