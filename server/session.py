"""onnxruntime sessions with honest provider selection (shared by exporter parity checks and server).

onnxruntime-gpu lists CUDA as "available" even on a box without CUDA libraries; a session that
asks for CUDA there logs a red error and silently runs on CPU. `make_session` hides that spam,
checks which provider the session really got, and says so in one log line.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os

import onnxruntime as ort

from swapstream.faces.errors import InputError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
# onnxruntime's default logger level (WARNING); restored after a quiet CUDA attempt.
_ORT_DEFAULT_SEVERITY = 2


class SessionError(RuntimeError):
    """The requested execution provider could not be used (e.g. --device cuda without CUDA)."""


def make_session(
    onnx_path: str,
    device: str = "auto",
    intra_op_threads: int | None = None,
    spin: bool = False,
    cpu_arena: bool = False,
) -> tuple[ort.InferenceSession, str]:
    """Create an InferenceSession for `onnx_path`; return (session, provider actually used).

    device: "cpu" -> CPU only; "cuda" -> CUDA or SessionError; "auto" -> CUDA when it really
    works, else CPU with one INFO log line saying why. intra_op_threads: None = onnxruntime's
    default (all cores). spin: let idle intra-op threads busy-wait (onnxruntime's default; only
    worth it when nothing else shares the CPU). cpu_arena: onnxruntime's CPU memory arena (off:
    the arena keeps the memory of the largest batch it has run and, with batch sizes varying from
    call to call, fragments and grows further; without it a call's buffers are freed when it
    ends, and `serve`'s trimming thread gives them back to the OS, for a few percent per call).
    """
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if not os.path.isfile(onnx_path):
        raise InputError(f"{onnx_path} does not exist")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = bool(cpu_arena)
    if intra_op_threads:
        opts.intra_op_num_threads = int(intra_op_threads)
    if not spin:
        # Idle onnxruntime threads otherwise busy-wait for the next call, taking CPU from the
        # detection and blending threads of the serving pipeline (measured: up to 2x FPS on 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")

    if device == "cpu":
        return ort.InferenceSession(onnx_path, opts, providers=[CPU]), CPU

    reason = _cuda_unavailable_reason()
    if reason is None:
        _preload_cuda_libraries()
        # Silence the default logger while CUDA is tried: a failed provider load is reported
        # below in one line instead of onnxruntime's multi-line error.
        ort.set_default_logger_severity(4)
        try:
            session = ort.InferenceSession(onnx_path, opts, providers=[CUDA, CPU])
        finally:
            ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
        if session.get_providers()[0] == CUDA:
            log.info("onnxruntime: using %s for %s", CUDA, os.path.basename(os.path.dirname(onnx_path)) or onnx_path)
            return session, CUDA
        reason = "onnxruntime could not load its CUDA provider (needs CUDA 13 and cuDNN 9 libraries)"
    else:
        session = None
    if device == "cuda":
        raise SessionError(f"--device cuda requested but {reason}")
    log.info("onnxruntime: CUDA not used (%s); running on CPU", reason)
    if session is None:
        session = ort.InferenceSession(onnx_path, opts, providers=[CPU])
    return session, CPU


def _cuda_unavailable_reason() -> str | None:
    """A short reason CUDA certainly cannot work, or None if it is worth trying."""
    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.get_device()}) has no CUDA provider"
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
            or os.environ.get("CUDA_VISIBLE_DEVICES")):
        return "no NVIDIA device found"
    return None


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip wheels when they are installed (quietly)."""
    if importlib.util.find_spec("nvidia") is None or not hasattr(ort, "preload_dlls"):
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception:  # missing libraries are reported by the session check
            pass
