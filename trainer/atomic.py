"""Write files so that a crash never leaves a half-written file under the final name."""
from __future__ import annotations

import json
import os
import tempfile

import yaml


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync, then rename.

    The file is made world-readable (0644) like a plain open() would, not mkstemp's private 0600
    (reading the umask would mean setting it, which races with other threads).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    """Atomically write `obj` as indented JSON."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_yaml(path: str, obj) -> None:
    """Atomically write `obj` as YAML (block style, keys in insertion order)."""
    write_bytes(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).encode())
