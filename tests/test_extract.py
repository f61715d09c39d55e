"""`swapstream extract`: faces kept from a synthetic video, and bad input refused cleanly."""
import os

import numpy as np
import pytest

from swapstream.faces import extract
from swapstream.faces.align import AlignTemplate
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
    # aligned to the default template at 48 px: each face's matrix takes its five points onto it
    assert fs.aligned and fs.template == AlignTemplate(size=48) and fs.margin == 0.0
    assert fs.matrix.shape == (10, 2, 3) and fs.landmarks.shape == (10, 5, 2)
    placed = np.einsum("nij,nkj->nki", fs.matrix[:, :, :2], fs.landmarks) + fs.matrix[:, None, :, 2]
    assert np.abs(placed - (fs.template.points() - 0.5)).max() < 0.15 * fs.template.eye_distance * 48
    # ground-truth parameters of the synthetic frames travel with the faces
    assert fs.extra["identity"].tolist() == [3] * 10
    assert fs.extra["pose"].shape[0] == 10 and fs.extra["frame_size"].tolist() == [192, 192]
    # the default near-duplicate filter can only drop faces, never add
    rc, _ = _run([video, "--out", out, "--every", "4", "--size", "48", "--quiet"], capsys)
    assert rc == 0 and 1 <= len(load_faceset(out)) <= 10


def test_aligned_extract_holds_the_true_eyes_still(tmp_path, capsys):
    """Across a talking, turning synthetic head the renderer's own eye centres stay put in the
    aligned crops (within 3% of the eye distance), and a tighter template frames them tighter."""
    from swapstream.faces import synth_cli
    from swapstream.faces.synth import load_sidecar, sidecar_path
    from tests.test_align import truth_points

    video = str(tmp_path / "a.mp4")
    assert synth_cli.main(["--identity", "5", "--frames", "24", "--out", video, "--size", "256x256",
                           "--seed", "4", "--quiet"]) == 0
    take = load_sidecar(sidecar_path(video))
    spans = {}
    for eye_distance, eye_line in ((0.27, 0.42), (0.32, 0.39)):
        out = str(tmp_path / f"a{eye_distance}.npz")
        rc, err = _run([video, "--out", out, "--every", "2", "--dedup", "0", "--size", "128", "--quiet",
                        "--eye-distance", str(eye_distance), "--eye-line", str(eye_line)], capsys)
        assert rc == 0, err
        fs = load_faceset(out)
        assert fs.template == AlignTemplate(128, eye_distance, eye_line) and len(fs) >= 10
        eyes, dists = [], []
        for m, index in zip(fs.matrix, fs.frame_index):
            truth = truth_points(5, take.poses[int(index)])
            crop = truth @ m[:, :2].T + m[:, 2]
            eyes.append(crop[:4].mean(0))
            dists.append(np.linalg.norm(crop[0:2].mean(0) - crop[2:4].mean(0)))
        eyes, d = np.array(eyes), float(np.mean(dists))
        assert np.linalg.norm(eyes - eyes.mean(0), axis=1).mean() < 0.03 * d
        spans[eye_distance] = d
    assert abs(spans[0.32] / spans[0.27] - 0.32 / 0.27) < 0.02


def test_no_align_keeps_haar_squares_and_bad_template_exits_2(tmp_path, capsys):
    from swapstream.faces import synth_cli

    video = str(tmp_path / "a.mp4")
    assert synth_cli.main(["--identity", "3", "--frames", "8", "--out", video, "--size", "160x160", "--quiet"]) == 0
    out = str(tmp_path / "a.npz")
    rc, err = _run([video, "--out", out, "--every", "4", "--size", "32", "--no-align", "--margin", "0.3",
                    "--quiet"], capsys)
    assert rc == 0, err
    fs = load_faceset(out)
    assert not fs.aligned and fs.matrix is None and fs.margin == 0.3 and fs.size == 32
    rc, err = _run([video, "--out", out, "--eye-distance", "2", "--quiet"], capsys)
    assert rc == 2 and "eye_distance" in err


def test_face_check_confirms_the_face_the_landmarks_point_at():
    """dlib's frontal detector on the landmarks' wider view: yes on a face, no on the same five
    points moved onto background or on noise, whatever the face set's side."""
    from swapstream.faces.align import Aligner
    from swapstream.faces.detect import HaarDetector
    from swapstream.faces.extract import CHECK_TEMPLATE, FaceCheck
    from swapstream.faces.synth import pose_sequence, render_face

    check = FaceCheck()
    frame = render_face(3, pose_sequence(1, seed=2)[0], (256, 256))
    landmarks = Aligner().landmarks(frame, HaarDetector().detect(frame)[0])
    assert check.score(frame, landmarks) > 1.0 and check(frame, landmarks)
    canvas = np.empty((256, 640, 3), np.uint8)
    canvas[:] = frame[4, 4]
    canvas[:, :256] = frame
    assert check(canvas, landmarks)
    assert check.view(canvas, landmarks).shape == (CHECK_TEMPLATE.size,) * 2 + (3,)
    assert not check(canvas, landmarks + np.array([384.0, 0.0], np.float32))  # plausible points, no face
    noise = np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8)
    assert check.score(noise, landmarks) < check.min_score


def test_extract_drops_what_the_face_check_refuses(tmp_path, capsys):
    """The check runs on every aligned face: with an unreachable threshold nothing is kept (and
    the error says why); with the default every synthetic face is kept and its cost logged."""
    from swapstream.faces import synth_cli
    from swapstream.faces.errors import FaceSetError
    from swapstream.faces.extract import FaceCheck, extract_faces

    video = str(tmp_path / "a.mp4")
    assert synth_cli.main(["--identity", "2", "--frames", "12", "--out", video, "--size", "192x192", "--quiet"]) == 0
    fs, stats = extract_faces([video], every=3, size=64, dup_threshold=0, progress=False)
    assert len(fs) == 4 and stats.checked == 4 and "face check" in stats.summary()
    with pytest.raises(FaceSetError, match="not a face 4"):
        extract_faces([video], every=3, size=64, progress=False, face_check=FaceCheck(min_score=10.0))
    fs, stats = extract_faces([video], every=3, size=64, dup_threshold=0, progress=False, face_check=False)
    assert len(fs) == 4 and stats.checked == 0
    out = str(tmp_path / "a.npz")
    for flags, checked in (([], True), (["--no-face-check"], False)):
        assert extract.main([video, "--out", out, "--every", "3", "--size", "64", "--quiet", *flags]) == 0
        assert ("face check" in capsys.readouterr().out) == checked
