"""Frame bytes <-> BGR images (JPEG, PNG, raw BGR), with size caps against decompression bombs."""
from __future__ import annotations

import cv2
import numpy as np

from swapstream.v1 import swap_pb2

MAX_SIDE = 8192          # largest accepted frame side, pixels
MAX_PIXELS = 40_000_000  # largest accepted frame area (a 8K frame is 33 Mpx)
DEFAULT_JPEG_QUALITY = 90


class FrameDecodeError(ValueError):
    """The bytes of a frame are not an image we accept (bad data, wrong size, unknown encoding)."""


def decode_frame(encoding: int, data: bytes, width: int = 0, height: int = 0) -> np.ndarray:
    """Decode one frame to uint8 HxWx3 BGR; raise FrameDecodeError saying what is wrong."""
    if not data:
        raise FrameDecodeError("frame has no data")
    if encoding == swap_pb2.RAW_BGR:
        if width <= 0 or height <= 0:
            raise FrameDecodeError("RAW_BGR frame needs width and height")
        _check_size(width, height)
        if len(data) != width * height * 3:
            raise FrameDecodeError(
                f"RAW_BGR frame of {width}x{height} needs {width * height * 3} bytes, got {len(data)}")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3).copy()
    if encoding not in (swap_pb2.JPEG, swap_pb2.PNG):
        raise FrameDecodeError(f"unknown frame encoding {encoding}; use JPEG, PNG or RAW_BGR")
    buf = np.frombuffer(data, np.uint8)
    # OpenCV itself refuses images over 2^30 pixels (OPENCV_IO_MAX_IMAGE_PIXELS); ours is tighter.
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        name = swap_pb2.Encoding.Name(encoding)
        raise FrameDecodeError(f"cannot decode {len(data)} bytes as {name}")
    _check_size(image.shape[1], image.shape[0])
    return image


def encode_frame(image: np.ndarray, encoding: int, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Encode a uint8 BGR image as JPEG, PNG or raw BGR bytes."""
    if encoding == swap_pb2.RAW_BGR:
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if encoding == swap_pb2.PNG:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif encoding == swap_pb2.JPEG:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality or DEFAULT_JPEG_QUALITY)])
    else:
        raise ValueError(f"unknown encoding {encoding}")
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame")
    return buf.tobytes()


def _check_size(width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise FrameDecodeError(f"frame {width}x{height} is too large (max side {MAX_SIDE}, max {MAX_PIXELS} pixels)")
