"""Video reading and writing on PyAV (FFmpeg's libraries), with OpenCV for webcams.

    with VideoReader("in.mp4") as reader:                  # upright BGR frames, source timestamps
        with VideoWriter("out.mp4", reader.fps, (reader.width, reader.height),
                         time_base=reader.time_base, audio=reader.path) as writer:
            for frame, pts in reader.frames_with_pts():
                writer.write(frame, pts)                    # H.264 yuv420p, +faststart, source audio

What it keeps: the frame rate, each frame's presentation time (variable-frame-rate input comes
out at the same times), the orientation (a rotation tag is applied to the pixels, so frames are
upright for the server and the output needs no tag), the size, and the first audio stream of
`audio` (copied packet for packet where the output container takes its codec, AAC or Opus
otherwise), cut at the end of the video when the video was cut short.

A webcam index (int or digit string) is read with OpenCV. Without PyAV installed, files are read
and written with OpenCV too (MPEG-4 part 2 .mp4, no audio), with one log line saying so.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from fractions import Fraction

import cv2
import numpy as np

from swapstream.faces.errors import VideoError
from swapstream.faces.files import publish

try:
    import av
    import av.error
except ImportError:  # the OpenCV fallback below
    av = None

log = logging.getLogger(__name__)

# Output extensions; the fourcc is what OpenCV writes when PyAV is missing.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".webm": "VP90"}
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska", ".webm": "webm"}
DEFAULT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                  ".avi": "mpeg4", ".webm": "libvpx-vp9"}
# Friendly names for --codec; anything else is taken as an FFmpeg encoder name.
CODEC_ALIASES = {"h264": "libx264", "x264": "libx264", "avc": "libx264", "vp9": "libvpx-vp9", "vp8": "libvpx",
                 "mpeg4": "mpeg4", "mjpeg": "mjpeg"}
DEFAULT_CRF = 23            # libx264's own default: visually close to the source at a modest size
# x264 without --preset: "superfast" with veryfast's macroblock tree over a 10-frame lookahead. On a
# 720p talking head that is 0.6x veryfast's CPU time for a file 1.4% larger (0.2 dB PSNR lower), where
# plain superfast doubles the file (it drops the lookahead). A live stream's client spends most of its
# CPU here, on the same cores as the server in the one-machine case.
DEFAULT_PRESET = "superfast"
DEFAULT_X264_PARAMS = "mbtree=1:rc-lookahead=10"

_fallback_logged = False


def _log_fallback(what: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        log.warning("PyAV (the 'av' package) is not installed: %s with OpenCV (MPEG-4 part 2, no audio)", what)


def is_webcam(source: str | int) -> bool:
    """True for a webcam index: an int or a string of digits."""
    return isinstance(source, int) or (isinstance(source, str) and source.isdigit())


def resolve_codec(name: str | None, ext: str) -> str:
    """The FFmpeg encoder for `--codec NAME` (None: the container's default); VideoError if this build lacks it."""
    codec = CODEC_ALIASES.get(name.lower(), name) if name else DEFAULT_CODECS.get(ext, "libx264")
    if av is not None:
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            raise VideoError(f"no video encoder {name!r} in this FFmpeg build "
                             f"(try {', '.join(sorted(set(CODEC_ALIASES)))})") from None
    return codec


class VideoReader:
    """Iterate the upright BGR frames of a video file (or a webcam index, given as int or digit string).

    Attributes: width, height (after rotation), fps, frame_count (None when unknown), time_base
    (a Fraction: what `frames_with_pts` counts in), rotation (degrees counter-clockwise in the
    file's display matrix, already applied), has_audio, path (None for a webcam).

    `close` may come from another thread than the one iterating (a client ends while its
    request thread is still reading): it waits for the frame being decoded, and the iteration
    then ends. Closing FFmpeg's decoder under a running decode crashes the process.
    """

    def __init__(self, source: str | int) -> None:
        self.source = source
        self._io_lock = threading.Lock()  # one decode or close at a time
        self._closed = False
        self.rotation = 0
        self.has_audio = False
        self.path: str | None = None
        self.decoded = 0
        if is_webcam(source):
            self._open_cv(int(source), camera=True)
            return
        if not os.path.isfile(str(source)):
            raise VideoError(f"video {source} does not exist")
        self.path = str(source)
        if av is None:
            _log_fallback("reading videos")
            self._open_cv(self.path, camera=False)
            return
        self._open_av(self.path)

    # -- PyAV ---------------------------------------------------------------------------------
    def _open_av(self, path: str) -> None:
        self._cap = None
        try:
            self._container = av.open(path, "r")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise VideoError(f"cannot open {path} as a video: {_reason(exc)}") from None
        try:
            if not self._container.streams.video:
                raise VideoError(f"{path} holds no video stream")
            self._stream = stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads: decoding is a visible share of a stream's CPU
            self.has_audio = bool(self._container.streams.audio)
            self.time_base = stream.time_base or Fraction(1, 90000)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate and 0 < float(rate) < 1000 else 25.0
            self.frame_count = int(stream.frames) if stream.frames and stream.frames > 0 else None
            self._frames = self._container.decode(stream)
            first = self._next_av()
        except VideoError:
            self._container.close()
            raise
        if first is None:
            self._container.close()
            raise VideoError(f"{path} holds no decodable video frames")
        self.rotation = int(round(first.rotation or 0)) % 360
        self._first_av = first
        image = self._to_bgr(first)
        self.height, self.width = image.shape[:2]
        self._first_image = image
        self._last_pts: int | None = None

    def _next_av(self):
        try:
            return next(self._frames, None)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path} is corrupt after frame {self.decoded}: {_reason(exc)}") from None

    def _to_bgr(self, frame) -> np.ndarray:
        image = frame.to_ndarray(format="bgr24")
        # The display matrix rotates counter-clockwise by `rotation`; apply it so frames are upright.
        if self.rotation == 90:
            image = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
        elif self.rotation == 180:
            image = cv2.rotate(image, cv2.ROTATE_180)
        elif self.rotation == 270:
            image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
        return image

    def _pts(self, frame) -> int:
        """The frame's presentation time in time_base; made up from the frame rate when missing or repeated."""
        pts = frame.pts
        step = max(1, round(1 / (self.fps * self.time_base)))
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + step
        elif self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a writer needs increasing times; keep the order
        self._last_pts = pts
        return pts

    # -- OpenCV (webcams, and files when PyAV is missing) ----------------------------------------
    def _open_cv(self, source: str | int, camera: bool) -> None:
        self._container = None
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise VideoError(f"cannot open {source} as a video")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise VideoError(f"{source} holds no decodable video frames")
        self._first_image = first
        self.height, self.width = first.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not camera else None
        self.time_base = Fraction(1, 1000) if camera else _frame_time_base(self.fps)[0]
        self._step = 0 if camera else _frame_time_base(self.fps)[1]
        self._camera = camera

    def _cv_frames(self) -> Iterator[tuple[np.ndarray, int]]:
        import time

        start = time.monotonic()
        frame: np.ndarray | None = self._first_image
        self._first_image = None
        i = 0
        while frame is not None:
            # A webcam's frames carry the time they arrived; a file's come at its frame rate.
            pts = int((time.monotonic() - start) * 1000) if self._camera else i * self._step
            yield frame, pts
            i += 1
            with self._io_lock:
                if self._closed:
                    return
                ok, frame = self._cap.read()
            if not ok:
                frame = None

    # -- iteration ------------------------------------------------------------------------------
    def frames_with_pts(self) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (upright BGR frame, presentation time in `time_base` units), in decode order = display order."""
        if self._cap is not None:
            for frame, pts in self._cv_frames():
                self.decoded += 1
                yield frame, pts
            return
        frame = self._first_av
        image = self._first_image
        self._first_av = self._first_image = None
        while frame is not None:
            self.decoded += 1
            yield image, self._pts(frame)
            with self._io_lock:
                if self._closed:
                    return
                frame = self._next_av()
                image = self._to_bgr(frame) if frame is not None else None
        # A cut-off file ends early without a decoder error; its header still counts every frame.
        # (A little slack: edit lists may legitimately hide a frame or two.)
        if self.frame_count and self.decoded < self.frame_count - max(2, self.frame_count // 50):
            raise VideoError(f"{self.path} is truncated: only {self.decoded} of its {self.frame_count} frames "
                             "could be read")

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame, _ in self.frames_with_pts():
            yield frame

    def close(self) -> None:
        """Release the file or camera; safe to call from another thread and more than once."""
        with self._io_lock:
            if self._closed:
                return
            self._closed = True
            if self._cap is not None:
                self._cap.release()
            if self._container is not None:
                self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame_time_base(fps: float) -> tuple[Fraction, int]:
    """(time base, ticks per frame) that count frames of `fps` exactly: 12.5 -> (1/25, 2), 29.97 -> (1/30000, 1001)."""
    rate = Fraction(fps).limit_denominator(1001)
    return Fraction(1, rate.numerator), rate.denominator


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).splitlines()[0][:200] if text else type(exc).__name__


class VideoWriter:
    """Write BGR frames of one size to a video; the file appears only when writing succeeded.

    Frames go to a temporary file in the target folder that is renamed into place on a clean
    close, so an error or interruption never leaves a half-written video behind.

    `codec` is an FFmpeg encoder (default: H.264 for .mp4/.mov/.m4v/.mkv, MPEG-4 part 2 for .avi,
    VP9 for .webm); `crf` its quality (x264/VP9 constant rate factor; lower is better and bigger).
    `time_base` is the unit of the `pts` given to `write` (default: one frame of `fps`).
    `audio` is a media file whose first audio stream goes into the output; `audio_end` (seconds,
    set before close) cuts it, e.g. at the end of a shortened video.
    """

    def __init__(self, path: str, fps: float, size: tuple[int, int], *, codec: str | None = None,
                 crf: int | None = None, preset: str | None = None, time_base: Fraction | None = None,
                 audio: str | None = None) -> None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in FOURCC:
            raise VideoError(f"unsupported video extension {ext!r} for {path}; use one of {', '.join(FOURCC)}")
        self.path, self.size = path, (int(size[0]), int(size[1]))
        if self.size[0] < 1 or self.size[1] < 1 or not fps or fps <= 0:
            raise VideoError(f"cannot write {path}: size {self.size} and rate {fps} must be positive")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise VideoError(f"output folder {folder} does not exist")
        self.frames, self.fps = 0, float(fps)
        self.audio_end: float | None = None
        self.codec = "mp4v" if av is None else resolve_codec(codec, ext)
        fd, self._tmp = tempfile.mkstemp(prefix=".video-", suffix=ext, dir=folder)
        os.close(fd)
        try:
            if av is None:
                _log_fallback("writing videos")
                self._open_cv(ext, fps)
            else:
                self._open_av(ext, fps, crf, preset, time_base, audio)
        except BaseException:
            os.unlink(self._tmp)
            raise

    def _open_cv(self, ext: str, fps: float) -> None:
        self._out = None
        self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*FOURCC[ext]), float(fps), self.size)
        if not self._writer.isOpened():
            raise VideoError(f"cannot write video {self.path} ({FOURCC[ext]})")

    def _open_av(self, ext: str, fps: float, crf: int | None, preset: str | None,
                 time_base: Fraction | None, audio: str | None) -> None:
        self._writer = None
        rate = Fraction(fps).limit_denominator(1001)
        # AVI stores no presentation times, only a frame rate: its frames are counted at `fps`
        # and given times are rounded to the nearest frame slot.
        self._caller_time_base = Fraction(time_base) if time_base is not None else None
        self._slots = FORMATS[ext] == "avi"
        if time_base is None or self._slots:
            time_base, self._step = _frame_time_base(fps)
        else:
            time_base = Fraction(time_base)
            if self.codec == "mpeg4" and time_base.denominator > 65535:
                # MPEG-4 part 2 caps the time base at 1/65535 (H.264 sources often use 1/90000):
                # a multiple of the frame rate under the cap keeps constant-rate times exact.
                base = _frame_time_base(fps)[0]
                time_base = base / max(1, 65535 // base.denominator)
            self._step = max(1, round(1 / (rate * time_base)))
        self.time_base = time_base
        options = {"movflags": "+faststart"} if FORMATS[ext] in ("mp4", "mov") else {}
        try:
            self._out = av.open(self._tmp, "w", format=FORMATS[ext], options=options)
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot write video {self.path}: {_reason(exc)}") from None
        try:
            self._video = self._add_video_stream(rate, crf, preset)
            self._audio = _AudioTrack(audio, self._out) if audio else None
        except BaseException:
            self._out.close()
            raise
        self._last_pts: int | None = None

    def _add_video_stream(self, rate: Fraction, crf: int | None, preset: str | None):
        stream = self._out.add_stream(self.codec, rate=rate)
        stream.width, stream.height = self.size
        odd = self.size[0] % 2 or self.size[1] % 2
        if self.codec == "libx264" and odd:
            # 4:2:0 needs even sides; 4:4:4 keeps the exact size (fewer players take it).
            log.warning("%s: %dx%d has an odd side: writing H.264 in yuv444p", self.path, *self.size)
            stream.pix_fmt = "yuv444p"
        elif self.codec in ("mjpeg",):
            stream.pix_fmt = "yuvj420p"
        else:
            stream.pix_fmt = "yuv420p"
        self._i420 = stream.pix_fmt == "yuv420p" and not odd
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        if self.codec == "libx264":
            stream.options = {"crf": str(DEFAULT_CRF if crf is None else crf), "preset": preset or DEFAULT_PRESET}
            if preset is None:  # a preset asked for by name is x264's own, unchanged
                stream.options = {**stream.options, "x264-params": DEFAULT_X264_PARAMS}
        elif self.codec in ("libvpx-vp9", "libvpx"):
            # Constant quality (b=0) at real-time speed: the default "good" deadline is far too slow here.
            stream.options = {"crf": str(32 if crf is None else crf), "b": "0", "deadline": "realtime",
                              "cpu-used": "8", "row-mt": "1"}
        elif self.codec in ("mpeg4", "mjpeg"):
            stream.codec_context.qscale = 3 if crf is None else max(1, min(31, int(crf)))
        elif crf is not None:
            stream.options = {"crf": str(crf)}
        return stream

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        """Append one uint8 BGR frame of the writer's size; `pts` in `time_base` units (default: the next frame)."""
        if frame.shape[:2] != (self.size[1], self.size[0]) or frame.dtype != np.uint8:
            raise VideoError(f"frame {frame.shape} {frame.dtype} does not match video size {self.size}")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self._writer is not None:
            self._writer.write(frame)
            self.frames += 1
            return
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        elif self._caller_time_base is not None and self._caller_time_base != self.time_base:
            if self._slots:  # AVI: the nearest free frame slot
                slot = round(pts * self._caller_time_base / (self.time_base * self._step)) * self._step
                pts = slot if self._last_pts is None or slot > self._last_pts else self._last_pts + self._step
            else:
                converted = round(pts * self._caller_time_base / self.time_base)
                if self._last_pts is not None and converted <= self._last_pts:
                    raise VideoError(f"frame times must increase: {pts} comes after an equal or later time")
                pts = converted
        elif self._last_pts is not None and pts <= self._last_pts:
            raise VideoError(f"frame times must increase: {pts} after {self._last_pts}")
        self._last_pts = pts
        if self._i420:
            # OpenCV's SIMD BGR->I420 (BT.601, limited range: the same matrix as FFmpeg's default,
            # within one level) costs a seventh of swscale's bgr24 path, a visible share of a stream.
            vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        else:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        vf.pts, vf.time_base = pts, self.time_base
        try:
            for packet in self._video.encode(vf):
                self._out.mux(packet)
            if self._audio is not None:
                # Audio follows the video written so far: interleaved in the file, and nothing
                # muxed past a point where the video may yet end (audio_end cuts the rest).
                self._audio.mux_until(float(pts * self.time_base))
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot write video {self.path}: {_reason(exc)}") from None
        self.frames += 1

    @property
    def duration(self) -> float:
        """Seconds of video written so far (end of the last frame)."""
        if self._writer is not None or self._last_pts is None:
            return self.frames / self.fps
        return float((self._last_pts + self._step) * self.time_base)

    def close(self, keep: bool = True, path: str | None = None) -> None:
        """Finish the file (under `path` when given, else the writer's path); with keep=False (or no frames)
        delete it instead."""
        if self._writer is not None:
            self._writer.release()
        else:
            try:
                if keep and self.frames > 0:
                    for packet in self._video.encode(None):
                        self._out.mux(packet)
                    if self._audio is not None:
                        self._audio.finish(self.audio_end)
            except av.error.FFmpegError as exc:
                keep = False
                raise VideoError(f"cannot finish video {self.path}: {_reason(exc)}") from None
            finally:
                if self._audio is not None:
                    self._audio.close()
                try:
                    self._out.close()
                except av.error.FFmpegError:
                    keep = False
                if not (keep and self.frames > 0) and os.path.exists(self._tmp):
                    os.unlink(self._tmp)
        if keep and self.frames > 0:
            publish(self._tmp, path or self.path)
        elif os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


class _AudioTrack:
    """The first audio stream of a media file, muxed into an output beside the video.

    Stream copy when the output container takes the codec (AAC into .mp4, Opus into .webm ...),
    else decoded and encoded as AAC (Opus for .webm). Packets keep their source times, so audio
    and video stay as much in sync as they were in the source.
    """

    def __init__(self, path: str, out) -> None:
        try:
            self._in = av.open(path, "r")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise VideoError(f"cannot read the audio of {path}: {_reason(exc)}") from None
        self.stream_in = self._in.streams.audio[0] if self._in.streams.audio else None
        self._out = out
        self._pending = None
        self._done = self.stream_in is None
        if self._done:
            return
        src = self.stream_in.codec_context
        # AVI has no edit lists: a copied AAC stream's priming packet (negative time) would make
        # the muxer shift every stream; MP3 is AVI's own audio codec.
        avi = out.format.name == "avi"
        self.copy = src.name in out.supported_codecs and not avi
        if self.copy:
            self.stream_out = out.add_stream_from_template(self.stream_in)
        else:
            codec = "libmp3lame" if avi else "aac" if "aac" in out.supported_codecs else "libopus"
            rate = src.sample_rate if codec == "aac" else 48000  # Opus runs at 48 kHz only
            self.stream_out = out.add_stream(codec, rate=rate, layout=src.layout.name if src.layout else "stereo")
            self._resampler = None
        self._packets = self._in.demux(self.stream_in)

    def _next_packet(self):
        while True:
            packet = next(self._packets, None)
            if packet is None or packet.dts is not None or packet.pts is not None:
                return packet  # None: end of file (demux ends with an empty flush packet, skipped here)

    def mux_until(self, seconds: float | None) -> None:
        """Mux audio whose start lies before `seconds` (None: all the rest)."""
        while not self._done:
            packet = self._pending or self._next_packet()
            self._pending = None
            if packet is None:
                self._done = True
                self._flush_encoder()
                return
            start = float(packet.pts * packet.time_base) if packet.pts is not None else None
            if seconds is not None and start is not None and start >= seconds:
                self._pending = packet
                return
            self._mux(packet)

    def _mux(self, packet) -> None:
        if self.copy:
            packet.stream = self.stream_out
            self._out.mux(packet)
            return
        for frame in packet.decode():
            for out_packet in self.stream_out.encode(frame):
                self._out.mux(out_packet)

    def _flush_encoder(self) -> None:
        if not self.copy:
            for out_packet in self.stream_out.encode(None):
                self._out.mux(out_packet)

    def finish(self, end: float | None) -> None:
        """Mux the rest, up to `end` seconds when given."""
        self.mux_until(end)
        if not self._done:
            self._done = True
            self._flush_encoder()

    def close(self) -> None:
        self._in.close()
