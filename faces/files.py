"""Publishing a finished temporary file under its final name."""
from __future__ import annotations

import os


def publish(tmp: str, path: str) -> None:
    """Give `tmp` (made by mkstemp, so 0600) a plain file's mode, 0644, and rename it to `path`.

    A fixed mode rather than one derived from the umask: reading the umask means setting it,
    which races with other threads.
    """
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
