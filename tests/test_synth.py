"""Synthetic faces: determinism, distinct identities, ground truth, Haar detection, `swapstream synth`."""
import dataclasses
import os

import cv2
import numpy as np
import pytest

from swapstream.faces import synth
from swapstream.faces.detect import HaarDetector
from swapstream.faces.synth import (
    POSE_FIELDS,
    Pose,
    identity_from_seed,
    load_sidecar,
    pose_from_vector,
    pose_sequence,
    pose_to_vector,
    render_face,
    sidecar_path,
)
from swapstream.faces.synth_cli import main as synth_main


@pytest.fixture(scope="module")
def detector():
    return HaarDetector()


def _box_centre(box):
    return np.array([box.x + box.w / 2, box.y + box.h / 2])


def test_same_arguments_give_identical_pixels():
    pose = pose_sequence(30, seed=4)[17]
    a = render_face(3, pose, (256, 256))
    b = render_face(identity_from_seed(3), pose, (256, 256))
    assert a.dtype == np.uint8 and a.shape == (256, 256, 3)
    assert np.array_equal(a, b)
    assert identity_from_seed(3) == identity_from_seed(3)


def test_motion_is_deterministic_smooth_and_prefix_stable():
    long, short = pose_sequence(200, seed=7), pose_sequence(60, seed=7)
    assert long[:60] == short, "frame i must not depend on the sequence length"
    assert pose_sequence(60, seed=8) != short
    arr = synth.poses_to_array(long)
    assert arr.shape == (200, len(POSE_FIELDS))
    col = {name: arr[:, k] for k, name in enumerate(POSE_FIELDS)}
    # A talking head: the mouth opens and closes, the eyes blink, the head moves a little.
    assert col["mouth_open"].max() > 0.5 and col["mouth_open"].min() < 0.1
    assert col["blink"].max() > 0.9
    assert np.abs(col["yaw"]).max() <= 18 and np.abs(col["roll"]).max() <= 10
    # Head motion is smooth: no jumps between neighbouring frames (25 fps).
    assert np.abs(np.diff(col["yaw"])).max() < 2.0
    assert np.abs(np.diff(col["tx"])).max() < 0.01
    assert np.abs(np.diff(col["scale"])).max() < 0.01


def test_takes_hold_the_eyes_closed_often_enough_to_learn_from():
    # Plain blinks (about 3 frames each) close the eyes in ~3% of frames; the held closures
    # bring that to a share a trainer sees in every few batches, without taking over the take.
    for seed in (11, 22, 33):
        blink = np.array([p.blink for p in pose_sequence(600, seed=seed)])
        closed = blink > 0.5
        assert 0.08 < closed.mean() < 0.3, (seed, closed.mean())
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, closed.astype(int), 0])))[::2]
        assert runs.max() >= 6, "at least one closure held for a quarter of a second"
        assert (blink < 0.1).mean() > 0.6, "the eyes are open most of the time"


def test_pose_vector_round_trip_and_names():
    pose = pose_sequence(5, seed=2)[3]
    vec = pose_to_vector(pose)
    assert vec.dtype == np.float64 and vec.shape == (len(POSE_FIELDS),)
    assert pose_from_vector(vec) == pose
    order = list(reversed(POSE_FIELDS))
    assert pose_from_vector(vec[::-1], order) == pose
    with pytest.raises(ValueError, match="unknown pose field"):
        pose_from_vector([0.5], ["not_a_field"])
    with pytest.raises(ValueError, match="values for"):
        pose_from_vector(vec[:-1])


def test_any_integer_is_an_identity_and_identities_differ():
    ids = [identity_from_seed(s) for s in (0, 1, 2, 3, -5, 2 ** 40)]
    assert len({i.skin for i in ids}) == len(ids)
    pose = Pose()
    frames = [render_face(i, pose) for i in ids]
    box = (slice(70, 190), slice(80, 176))  # the face region at the default pose
    for a in range(len(frames)):
        for b in range(a + 1, len(frames)):
            diff = np.abs(frames[a][box].astype(int) - frames[b][box].astype(int)).mean()
            assert diff > 8, f"identities {ids[a].seed} and {ids[b].seed} look alike (mean diff {diff:.1f})"
    # Consecutive seeds are at least two skin-tone steps apart.
    tones = [float(np.mean(identity_from_seed(s).skin)) for s in range(8)]
    assert min(abs(x - y) for x, y in zip(tones, tones[1:])) > 20


def test_ground_truth_puts_the_other_identity_in_the_same_place(detector):
    poses = pose_sequence(120, seed=11)[::12]
    offsets, ratios = [], []
    for pose in poses:
        found_a = detector.detect(render_face(0, pose))
        found_b = detector.detect(render_face(5, pose))
        if found_a and found_b:
            a, b = found_a[0], found_b[0]
            offsets.append(np.abs(_box_centre(a) - _box_centre(b)).max() / a.w)
            ratios.append(b.w / a.w)
    assert len(offsets) >= 8
    assert np.median(offsets) < 0.08, offsets
    assert 0.85 < np.median(ratios) < 1.18, ratios


def test_haar_finds_rendered_faces(detector):
    hits = total = 0
    for ident, seed in ((0, 21), (1, 22), (2, 23), (7, 24)):
        for pose in pose_sequence(15 * 8, seed=seed)[::8]:
            total += 1
            hits += bool(detector.detect(render_face(ident, pose)))
    assert total == 60
    assert hits / total >= 0.9, f"Haar found faces in {hits}/{total} frames"


def test_non_square_frames():
    frame = render_face(4, pose_sequence(1, seed=1)[0], (320, 240))
    assert frame.shape == (240, 320, 3)
    with pytest.raises(ValueError):
        render_face(4, Pose(), (16, 16))


def _read_video(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def test_cli_writes_video_truth_and_sidecars(tmp_path, detector):
    out, truth = tmp_path / "a.mp4", tmp_path / "sub" / "b.mp4"
    rc = synth_main(["--identity", "1", "--frames", "12", "--out", str(out), "--seed", "3", "--size", "160x128",
                     "--truth-identity", "2", "--truth-out", str(truth), "--quiet"])
    assert rc == 0
    frames_a, fps = _read_video(out)
    frames_b, _ = _read_video(truth)
    assert len(frames_a) == len(frames_b) == 12
    assert frames_a[0].shape == frames_b[0].shape == (128, 160, 3)
    assert abs(fps - 25.0) < 1e-6
    side_a, side_b = load_sidecar(sidecar_path(str(out))), load_sidecar(sidecar_path(str(truth)))
    assert (side_a.identity, side_b.identity) == (1, 2)
    assert side_a.poses == side_b.poses and len(side_a.poses) == 12
    assert side_a.size == (160, 128) and side_a.motion_seed == 3
    with np.load(sidecar_path(str(out)), allow_pickle=False) as data:
        assert data["pose"].shape == (12, len(POSE_FIELDS)) and data["pose"].dtype == np.float64
        assert tuple(data["pose_names"]) == POSE_FIELDS
        assert data["identity"].dtype == np.int64
    # The sidecar re-renders the video's frames (up to mp4 compression) and its ground truth.
    again = side_a.render(5)
    assert np.abs(again.astype(int) - frames_a[5].astype(int)).mean() < 4
    assert np.abs(side_a.render(5, identity=2).astype(int) - frames_b[5].astype(int)).mean() < 4
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "a.mp4.synth.npz", "sub"]
    assert sorted(os.listdir(tmp_path / "sub")) == ["b.mp4", "b.mp4.synth.npz"]


def test_cli_through_the_swapstream_dispatcher(tmp_path):
    from swapstream.clients.cli import main as swapstream
    out = tmp_path / "x.mp4"
    assert swapstream(["synth", "--identity", "0", "--frames", "3", "--out", str(out), "--quiet"]) == 0
    assert len(_read_video(out)[0]) == 3


@pytest.mark.parametrize("args, reason", [
    (["--frames", "0"], "--frames"),
    (["--frames", "-3"], "--frames"),
    (["--size", "256"], "--size"),
    (["--size", "axb"], "--size"),
    (["--size", "255x256"], "even"),
    (["--size", "16x16"], "out of range"),
    (["--truth-identity", "2"], "together"),
    (["--truth-out", "{tmp}/t.mp4"], "together"),
    (["--truth-identity", "2", "--truth-out", "{tmp}/out.mp4"], "differ"),
    (["--out", "{tmp}/out.txt"], "must end in"),
    (["--out", "{tmp}/d.mp4"], "is a folder"),
    (["--out", "{tmp}/file/out.mp4"], "cannot create output folder"),
    (["--identity", str(2 ** 64)], "64 bits"),
])
def test_cli_bad_input_exit_2_and_no_output(tmp_path, capsys, args, reason):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "d.mp4").mkdir()
    base = {"--identity": "1", "--frames": "4", "--out": "{tmp}/out.mp4"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = [item.replace("{tmp}", str(tmp_path)) for pair in base.items() for item in pair] + ["--quiet"]
    assert synth_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1, err
    assert sorted(os.listdir(tmp_path)) == ["d.mp4", "file"]
    assert os.listdir(tmp_path / "d.mp4") == []


def test_cli_failure_mid_render_leaves_nothing(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = synth.render_face

    def failing(ident, pose, size):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("renderer broke")
        return real(ident, pose, size)

    monkeypatch.setattr("swapstream.faces.synth_cli.render_face", failing)
    argv = ["--identity", "1", "--frames", "10", "--out", str(tmp_path / "a.mp4"),
            "--truth-identity", "2", "--truth-out", str(tmp_path / "b.mp4"), "--quiet"]
    with pytest.raises(RuntimeError):
        synth_main(argv)
    assert os.listdir(tmp_path) == []


def test_pose_defaults_are_a_valid_frontal_face(detector):
    frame = render_face(0, dataclasses.replace(Pose(), scale=0.6))
    assert detector.detect(frame)
