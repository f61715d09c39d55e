"""`swapstream extract`: faces kept from a synthetic video, and bad input refused cleanly."""
import os

import numpy as np

from swapstream.faces import extract
from swapstream.faces.faceset import load_faceset
from swapstream.faces.video import VideoWriter


def _run(argv, capsys):
    rc = extract.main(argv)
    return rc, capsys.readouterr().err


def test_missing_video_exit_2_no_output(tmp_path, capsys):
    out = tmp_path / "set.npz"
    rc, err = _run([str(tmp_path / "missing.mp4"), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and "does not exist" in err and not out.exists()


def test_not_a_video_exit_2_no_output(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello " * 500)
    out = tmp_path / "set.npz"
    rc, err = _run([str(bad), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and "video" in err and not out.exists()


def test_video_without_faces_exit_2_no_output(tmp_path, capsys):
    video = str(tmp_path / "blank.mp4")
    with VideoWriter(video, 25, (96, 96)) as w:
        for i in range(12):
            w.write(np.full((96, 96, 3), 40 + i, np.uint8))
    out = tmp_path / "set.npz"
    rc, err = _run([video, "--out", str(out), "--every", "2", "--quiet"], capsys)
    assert rc == 2 and "no usable face" in err and not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["blank.mp4"]


def test_bad_options_exit_2(tmp_path, capsys):
    rc, err = _run(["x.mp4", "--out", str(tmp_path / "set.txt")], capsys)
    assert rc == 2 and ".npz" in err
    rc, err = _run(["x.mp4"], capsys)
    assert rc == 2 and "--out" in err


def test_extract_from_synthetic_video_keeps_expected_faces(tmp_path, capsys):
    from swapstream.faces import synth_cli

    video = str(tmp_path / "a.mp4")
    assert synth_cli.main(["--identity", "3", "--frames", "40", "--out", video, "--size", "192x192", "--quiet"]) == 0
    out = str(tmp_path / "a.npz")
    rc, err = _run([video, "--out", out, "--every", "4", "--size", "48", "--dedup", "0", "--quiet"], capsys)
    assert rc == 0, err
    fs = load_faceset(out)
    assert len(fs) == 10 and fs.faces.shape[1:] == (48, 48, 3)
    assert fs.frame_index.tolist() == list(range(0, 40, 4))
    # ground-truth parameters of the synthetic frames travel with the faces
    assert fs.extra["identity"].tolist() == [3] * 10
    assert fs.extra["pose"].shape[0] == 10 and fs.extra["frame_size"].tolist() == [192, 192]
    # the default near-duplicate filter can only drop faces, never add
    rc, _ = _run([video, "--out", out, "--every", "4", "--size", "48", "--quiet"], capsys)
    assert rc == 0 and 1 <= len(load_faceset(out)) <= 10
