"""Writing files so that a crash never leaves a half-written file under the final name.

One way to do it, used everywhere a file is published:

    with atomic_path(path, suffix=".npz") as tmp:   # a temporary file beside `path`
        np.savez(tmp, **arrays)                      # write it by name, any way you like
    # on leaving the block: fsync, mode FILE_MODE, rename onto `path`; on an error: removed

`write_bytes`, `write_text`, `write_json` and `write_png` are that block for whole contents.
The mode is set explicitly rather than derived from the umask: reading the umask means setting
it, which races with other threads; and mkstemp's own 0600 would hide the file from a server
running as another user.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

FILE_MODE = 0o644
TMP_PREFIX = ".tmp-"  # leftovers of a killed writer start with this (cleanup code looks for it)


def publish(tmp: str, path: str, mode: int = FILE_MODE) -> None:
    """Flush `tmp` to disk, give it `mode` and rename it onto `path` (the last step of
    `atomic_path`, for a writer that must keep its temporary file open across calls)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str, suffix: str = "", mode: int = FILE_MODE) -> Iterator[str]:
    """Yield the name of a new empty temporary file in `path`'s folder (made if missing).

    When the block ends normally the file is published under `path` (see `publish`); when it
    raises, the temporary file is removed and `path` is left as it was. `suffix` is for writers
    that insist on a file extension (np.savez adds ".npz", Keras wants ".weights.h5").
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        publish(tmp, path, mode)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Atomically write `data` to `path`."""
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_text(path: str, text: str, mode: int = FILE_MODE) -> None:
    """Atomically write `text` to `path` as UTF-8."""
    write_bytes(path, text.encode("utf-8"), mode)


def write_json(path: str, obj, mode: int = FILE_MODE) -> None:
    """Atomically write `obj` as indented JSON with sorted keys."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


def write_png(path: str, image: np.ndarray) -> None:
    """Atomically write a uint8 BGR (or grey) image as PNG; OSError if it cannot be encoded."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    write_bytes(path, buf.tobytes())
