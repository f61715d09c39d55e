"""The wire format's frame codec and metadata keys, shared by the client and the server.

Frames travel as JPEG, PNG or raw BGR (swap.proto `Encoding`). Decoding never trusts the bytes:
the image size is read from the header (PNG IHDR, JPEG SOF) and checked against the caps
*before* anything is decoded, the data must start with a PNG or JPEG signature (OpenCV would
otherwise sniff and decode any format it knows), and every decoder failure is a
FrameDecodeError. OpenCV's own pixel limit is set to the same cap before cv2 is first imported
(it reads OPENCV_IO_MAX_IMAGE_PIXELS once, when it loads), a second line behind the header check.

No gRPC in here (the Encoding values come from the generated protobuf module).
"""
from __future__ import annotations

import os
import struct

MAX_SIDE = 8192          # largest accepted frame side, pixels
MAX_PIXELS = 40_000_000  # largest accepted frame area (an 8K frame is 33 Mpx)
MAX_JPEG_SCANS = 100     # a progressive JPEG has about 10; thousands of tiny scans are a CPU bomb
MAX_PNG_CHUNKS = 65536   # encoders write IDAT in 8-64 KiB chunks: a 16 MiB PNG has a few thousand
DEFAULT_JPEG_QUALITY = 90

# Read by OpenCV when it loads; an operator's own setting wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402  (after the pixel limit above)
import numpy as np  # noqa: E402

from swapstream.v1 import swap_pb2  # noqa: E402

# gRPC metadata: the model a call is for (instead of Frame.model), and the server's retry
# pushback hint on RESOURCE_EXHAUSTED (gRFC A6: milliseconds to wait before retrying).
MODEL_METADATA_KEY = "swapstream-model"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# StageTimings' fields (`<stage>_ms`), in pipeline order: the work stages, then queueing and the whole.
STAGES = ("decode", "detect", "align", "infer", "blend", "encode", "queue", "total")
WORK_STAGES = STAGES[:6]

JPEG, PNG, RAW_BGR = swap_pb2.JPEG, swap_pb2.PNG, swap_pb2.RAW_BGR
ENCODINGS = (JPEG, PNG, RAW_BGR)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT (C4),
# JPG (C8) or DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameDecodeError(ValueError):
    """The bytes of a frame are not an image we accept (bad data, wrong size, unknown encoding)."""


def encoding_name(encoding: int) -> str:
    """'JPEG', 'PNG', 'RAW_BGR', or the number of an encoding this version does not know."""
    try:
        return swap_pb2.Encoding.Name(encoding)
    except ValueError:
        return str(encoding)


def frame_size(encoding: int, data: bytes, width: int = 0, height: int = 0,
               max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a frame from its header alone; FrameDecodeError if bad or over the caps.

    For RAW_BGR the size is the message's width and height, and the data length must match.
    """
    if not data:
        raise FrameDecodeError("frame has no data")
    if encoding == RAW_BGR:
        if width <= 0 or height <= 0:
            raise FrameDecodeError("RAW_BGR frame needs width and height")
        _check_size(width, height, max_side, max_pixels)
        if len(data) != width * height * 3:
            raise FrameDecodeError(
                f"RAW_BGR frame of {width}x{height} needs {width * height * 3} bytes, got {len(data)}")
        return width, height
    if encoding not in (PNG, JPEG):
        raise FrameDecodeError(f"unknown frame encoding {encoding_name(encoding)}; use JPEG, PNG or RAW_BGR")
    # The label is a hint: a JPEG sent as PNG decodes (OpenCV goes by the signature too), but
    # nothing else does, so no other decoder of OpenCV's (TIFF, WebP, ...) ever sees client bytes.
    try:
        if data.startswith(_PNG_SIGNATURE):
            w, h = _png_size(data)
        elif data.startswith(_JPEG_SIGNATURE):
            w, h = _jpeg_size(data)
        else:
            raise FrameDecodeError("neither a PNG nor a JPEG signature")
    except FrameDecodeError as exc:
        raise FrameDecodeError(f"cannot decode {len(data)} bytes as {encoding_name(encoding)}: {exc}") from None
    _check_size(w, h, max_side, max_pixels)
    return w, h


def decode_frame(encoding: int, data: bytes, width: int = 0, height: int = 0,
                 max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one frame to uint8 HxWx3 BGR; raise FrameDecodeError saying what is wrong.

    The size is checked from the header first (see `frame_size`), so a frame never costs more
    than its cap, whatever its header or its compressed data claim.
    """
    w, h = frame_size(encoding, data, width, height, max_side, max_pixels)
    if encoding == RAW_BGR:
        return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()
    name = encoding_name(encoding)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises (not returns None) on some corrupt headers
        reason = str(exc).strip().splitlines()[-1][:200]
        raise FrameDecodeError(f"cannot decode {len(data)} bytes as {name}: {reason}") from None
    if image is None:
        raise FrameDecodeError(f"cannot decode {len(data)} bytes as {name}")
    if image.shape[:2] != (h, w):
        raise FrameDecodeError(f"{name} header says {w}x{h} but the image decoded to "
                               f"{image.shape[1]}x{image.shape[0]}")
    return image


def encode_frame(image: np.ndarray, encoding: int, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Encode a uint8 BGR image as JPEG, PNG or raw BGR bytes (ValueError on an unknown encoding)."""
    if encoding == RAW_BGR:
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if encoding == PNG:
        # Fast zlib (level 1, run-length matches) after the SUB filter: libpng's default tries
        # every filter on every row, 2-3x the time for files within a few percent of the size.
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER,
                                               cv2.IMWRITE_PNG_FILTER_SUB, cv2.IMWRITE_PNG_STRATEGY,
                                               cv2.IMWRITE_PNG_STRATEGY_RLE])
    elif encoding == JPEG:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality or DEFAULT_JPEG_QUALITY)])
    else:
        raise ValueError(f"unknown encoding {encoding_name(encoding)}; use JPEG, PNG or RAW_BGR")
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame")
    return buf.tobytes()


def _check_size(width: int, height: int, max_side: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise FrameDecodeError(f"frame size {width}x{height} is empty")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise FrameDecodeError(f"frame {width}x{height} is too large (max side {max_side}, max {max_pixels} pixels)")


def _png_size(data: bytes) -> tuple[int, int]:
    # Signature, then the IHDR chunk, which the PNG spec requires to come first:
    # length (4) "IHDR" (4) width (4) height (4), big-endian.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise FrameDecodeError("no IHDR header")
    # Every chunk's length must fit in the data: OpenCV allocates what a chunk claims before it
    # reads it (a 26 KB PNG whose IDAT claimed 2.7 GB took 2.5 GB and 2 s to fail).
    pos, n, chunks = 8, len(data), 0
    while True:
        if pos + 12 > n:
            raise FrameDecodeError("truncated: no IEND chunk")
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        if length > n - pos - 12:
            raise FrameDecodeError(f"chunk {data[pos + 4:pos + 8]!r} at byte {pos} claims {length} bytes, "
                                   f"{n - pos - 12} follow")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise FrameDecodeError(f"more than {MAX_PNG_CHUNKS} chunks")
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise FrameDecodeError(f"corrupt: no marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes may pad any marker
            i += 1
        if i >= n:
            break
        marker = data[i]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan, before any frame header
            raise FrameDecodeError("no frame header (SOF) before the image data")
        if i + 3 > n:
            break
        length = struct.unpack(">H", data[i + 1:i + 3])[0]
        if marker in _JPEG_SOF:
            if length < 8 or i + 8 > n:
                break
            height, width = struct.unpack(">HH", data[i + 4:i + 8])
            if height == 0:  # height given later by a DNL marker: not worth supporting
                raise FrameDecodeError("a frame header without a height is not supported")
            # SOS cannot occur inside entropy-coded data (0xFF is stuffed there), so this counts scans.
            scans = data.count(b"\xff\xda", i)
            if scans > MAX_JPEG_SCANS:
                raise FrameDecodeError(f"{scans} scans (max {MAX_JPEG_SCANS})")
            return width, height
        if length < 2:
            raise FrameDecodeError(f"corrupt: segment length {length} at byte {i}")
        i += 1 + length
    raise FrameDecodeError("truncated before its frame header (SOF)")
