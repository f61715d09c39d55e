"""faces/files.py: the one atomic-write helper (mode, cleanup on failure) and the PNG writer."""
from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest

from swapstream.faces.files import atomic_path, write_bytes, write_json, write_png


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_published_files_get_the_mode_asked_for_whatever_the_umask(tmp_path):
    old = os.umask(0o077)  # what would make a plain open() private
    try:
        write_bytes(str(tmp_path / "a.bin"), b"abc")
        write_bytes(str(tmp_path / "b.bin"), b"abc", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    assert _mode(tmp_path / "a.bin") == 0o644 and _mode(tmp_path / "b.bin") == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "keep.json"
    write_json(str(path), {"b": 1, "a": [2]})
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_path(str(path), suffix=".json") as tmp:
            assert tmp.endswith(".json") and os.path.dirname(tmp) == str(path.parent)
            with open(tmp, "w") as fh:
                fh.write("{half")
            raise RuntimeError("half way")
    assert sorted(os.listdir(path.parent)) == ["keep.json"]
    assert path.read_text().startswith('{\n  "a"')


def test_write_png_round_trips_and_refuses_what_png_cannot_hold(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    write_png(str(tmp_path / "x.png"), image)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "x.png")), image)
    with pytest.raises((OSError, cv2.error)):
        write_png(str(tmp_path / "bad.png"), np.zeros((4, 4, 7), np.float64))
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
