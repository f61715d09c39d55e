"""Model-folder housekeeping without TensorFlow: destination checks and the atomic swap-in."""
from __future__ import annotations

import os
import shutil
import tempfile

from swapstream.faces.errors import InputError


def check_destination(out_dir: str, force: bool) -> None:
    """InputError unless `out_dir` is absent, empty, or (with force) a folder we may replace."""
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise InputError(f"--out {out_dir} exists and is not a folder")
        if os.listdir(out_dir) and not force:
            raise InputError(f"--out {out_dir} already exists and is not empty (use --force to replace it)")


def make_staging_folder(out_dir: str) -> tuple[str, str | None]:
    """A hidden, empty folder beside `out_dir` (same file system, so the final rename is atomic).

    Returns (staging folder, the topmost parent folder created for it or None); give both to
    `discard_staging` on failure so that no trace is left.
    """
    parent = os.path.dirname(out_dir)
    created = None
    probe = parent
    while probe and not os.path.exists(probe):
        created = probe
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.export-", dir=parent), created


def discard_staging(staging: str, created: str | None) -> None:
    """Remove a staging folder and the parent folders made for it."""
    shutil.rmtree(staging, ignore_errors=True)
    if created:
        shutil.rmtree(created, ignore_errors=True)


def move_into_place(staging: str, out_dir: str) -> None:
    """Rename the finished folder onto `out_dir`; an existing one is swapped out, then removed."""
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
        os.rmdir(old)
        os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        if old:
            os.rename(old, out_dir)
        raise
    os.chmod(out_dir, 0o755)  # mkdtemp makes 0700 folders
    if old:
        shutil.rmtree(old, ignore_errors=True)
