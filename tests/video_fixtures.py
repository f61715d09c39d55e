"""Test clips made with PyAV directly (not with faces/video.py, the code under test).

`make_clip` writes H.264 video at given presentation times, optionally with a display-matrix
rotation and a sine-tone audio track; `read_audio` and `peak_hz` check what came out.
"""
from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np


def make_clip(path: str, frames: list[np.ndarray], fps: float = 25.0, *, pts: list[int] | None = None,
              time_base: Fraction = Fraction(1, 1000), rotation: int = 0, tone_hz: float | None = None,
              sample_rate: int = 48000, audio_codec: str = "aac", audio_seconds: float | None = None) -> None:
    """Write BGR `frames` as H.264; `pts` in `time_base` (default: evenly at `fps`).

    `rotation` (degrees counter-clockwise, as FFmpeg's display matrix) is stored as a tag: the
    frames are stored as given and a player turns them by `rotation` to show them. `tone_hz`
    adds a mono sine tone lasting the video's duration (or `audio_seconds`).
    """
    if pts is None:
        step = 1 / (fps * time_base)
        pts = [round(i * step) for i in range(len(frames))]
    out = av.open(path, "w")
    video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = "yuv420p"
    video.codec_context.time_base = time_base
    video.time_base = time_base
    video.options = {"crf": "18", "preset": "ultrafast"}
    if rotation:
        video.set_display_rotation(rotation)
    audio = out.add_stream(audio_codec, rate=sample_rate, layout="mono") if tone_hz else None
    for image, t in zip(frames, pts):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts, frame.time_base = t, time_base
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if audio is not None:
        seconds = audio_seconds if audio_seconds is not None else float(pts[-1] * time_base) + 1 / fps
        n = int(round(seconds * sample_rate))
        tone = (0.4 * np.sin(2 * np.pi * tone_hz * np.arange(n) / sample_rate)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = np.ascontiguousarray(tone[None, start:start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    out.close()


def stored_sideways(image: np.ndarray) -> np.ndarray:
    """An upright image as a phone held sideways stores it, to be shown with rotation 90 (turned back CCW)."""
    return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)


def probe(path: str) -> dict:
    """What a player sees: codec, pixel format, size, rotation tag, frame times (s), audio codec and duration."""
    with av.open(path) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        info = {"codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt,
                "size": (v.codec_context.width, v.codec_context.height),
                "rotation": int(frames[0].rotation or 0), "times": [float(f.time) for f in frames],
                "first": frames[0].to_ndarray(format="bgr24")}
    samples, rate, start = read_audio(path)
    info["audio_seconds"] = None if samples is None else len(samples) / rate
    info["audio_start"] = start
    return info


def read_audio(path: str) -> tuple[np.ndarray | None, int, float]:
    """(mono float samples, sample rate, start time in s) of the first audio stream; (None, 0, 0) without one."""
    with av.open(path) as c:
        if not c.streams.audio:
            return None, 0, 0.0
        stream = c.streams.audio[0]
        chunks, start = [], None
        for frame in c.decode(stream):
            if start is None:
                start = float(frame.time or 0.0)
            data = frame.to_ndarray().astype(np.float32)
            chunks.append(data.mean(axis=0) if data.ndim == 2 and not frame.format.is_packed else data.reshape(-1))
        return np.concatenate(chunks), stream.codec_context.sample_rate, start or 0.0


def peak_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the strongest component (Hann window, FFT)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])
