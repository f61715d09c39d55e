"""The real-face judge (dlib) on synthetic clips: measures, sanity rows, the Haar and aligned ceilings,
variants, `swapstream judge`."""
import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest

from swapstream.faces.align import Aligner, AlignTemplate, rescale
from swapstream.faces.detect import HaarDetector
from swapstream.faces.errors import InputError
from swapstream.faces.judge import (
    AlignedCeiling,
    FaceJudge,
    Identities,
    aligned_ceiling,
    ceiling_settings,
    crop_ceiling,
    expression_features,
    face_detail,
    format_line,
    format_table,
    identity_row,
    judge_frames,
    pearson,
    read_frames,
)
from swapstream.faces.judge_cli import main as judge_main
from swapstream.faces.synth import pose_sequence, render_face
from swapstream.faces.synth_cli import main as synth_main
from swapstream.faces.video import VideoWriter

SIZE = (256, 256)
ID_A, ID_B = 3, 8
N = 12
# Designed so each measure sweeps its range and the three are not in step with each other.
MOUTH = (0.0, 0.9, 0.3, 1.0, 0.0, 0.6, 0.1, 0.8, 0.0, 0.5, 1.0, 0.2)
BLINK = (0.0, 0.0, 1.0, 0.0, 0.6, 0.0, 1.0, 0.0, 0.0, 1.0, 0.3, 0.0)
YAW = (-15.0, -9.0, -3.0, 3.0, 9.0, 15.0, 12.0, 6.0, 0.0, -6.0, -12.0, -15.0)
SHUFFLE = (6, 9, 0, 11, 3, 8, 1, 4, 10, 2, 5, 7)  # a fixed permutation with no fixed point


@pytest.fixture(scope="module")
def judge():
    return FaceJudge()


def _poses(seed: int):
    base = pose_sequence(N, seed=seed)
    return [dataclasses.replace(p, mouth_open=m, blink=bl, yaw=y, smile=0.2, pitch=0.0, roll=0.0)
            for p, m, bl, y in zip(base, MOUTH, BLINK, YAW)]


@pytest.fixture(scope="module")
def clips():
    """A's take, B's own take (other motion), and the ground truth: B with A's motion."""
    poses_a = _poses(1)
    a = [render_face(ID_A, p, SIZE) for p in poses_a]
    b = [render_face(ID_B, p, SIZE) for p in pose_sequence(N, seed=2)]
    truth = [render_face(ID_B, p, SIZE) for p in poses_a]
    return {"a": a, "b": b, "truth": truth}


def _write(path, frames, fps=25.0):
    with VideoWriter(str(path), fps, (frames[0].shape[1], frames[0].shape[0])) as w:
        for f in frames:
            w.write(f)
    return str(path)


# ----------------------------------------------------------------------------------------------
# Single measures


def test_dlib_finds_the_synthetic_faces(judge, clips):
    # The judge's detector must find these renders, or every other test here would judge nothing.
    found = [judge.observe(f, embed=False) is not None for f in clips["a"] + clips["b"] + clips["truth"]]
    assert np.mean(found) >= 0.95


def test_expression_features_follow_the_pose(judge):
    base = pose_sequence(1, seed=5)[0]

    def feats(**kw):
        obs = judge.observe(render_face(ID_A, dataclasses.replace(base, **kw), SIZE), embed=False)
        assert obs is not None and obs.landmarks.shape == (68, 2)
        return expression_features(obs.landmarks)

    shut, wide = feats(mouth_open=0.0, blink=0.0, yaw=0.0), feats(mouth_open=1.0, blink=0.0, yaw=0.0)
    closed = feats(mouth_open=0.0, blink=1.0, yaw=0.0)
    left, right = feats(mouth_open=0.0, blink=0.0, yaw=-15.0), feats(mouth_open=0.0, blink=0.0, yaw=15.0)
    assert wide[0] > shut[0] + 0.1          # mouth opening, in eye distances
    assert closed[1] < shut[1] - 0.05  # eye aspect ratio drops with the lids (dlib never puts cartoon lids fully shut)
    assert np.sign(left[2]) != np.sign(right[2]) and abs(left[2] - right[2]) > 0.1


def test_expression_features_reject_wrong_shape():
    with pytest.raises(ValueError, match="68"):
        expression_features(np.zeros((5, 2)))


def test_face_detail_is_one_for_the_same_frame_and_drops_with_blur(judge, clips):
    frame = clips["a"][0]
    obs = judge.observe(frame, embed=False)
    sharp = face_detail(frame, obs.landmarks)
    assert sharp > 0
    assert face_detail(frame.copy(), obs.landmarks) == sharp
    blurred = face_detail(cv2.GaussianBlur(frame, (0, 0), 2.0), obs.landmarks)
    assert blurred < 0.5 * sharp


def test_pearson_and_identity_arithmetic():
    x = np.arange(6.0)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert np.isnan(pearson(x, np.ones(6)))
    a, b = np.zeros(4), np.array([1.0, 0, 0, 0])
    ids = Identities(a, b, margin_source=-1.0, margin_b=1.0)
    # A face at A's mean has margin -1 (the source's): transfer 0; at B's mean +1: transfer 1.
    assert identity_row([a], ids)["transfer"] == pytest.approx(0.0)
    assert identity_row([b], ids)["transfer"] == pytest.approx(1.0)
    mid = identity_row([np.array([0.5, 0, 0, 0])], ids)
    assert mid["transfer"] == pytest.approx(0.5) and mid["nearer_b"] == 0.0  # a tie is not nearer B
    assert identity_row([], ids)["nearer_b"] is None


def test_crop_ceiling_changes_only_the_face_square(clips):
    frame = clips["a"][0]
    box = HaarDetector().detect(frame)[0]
    out = list(crop_ceiling([frame, np.full_like(frame, 90)], crop_size=32, margin=0.2))
    assert out[0].shape == frame.shape and out[0].dtype == np.uint8
    side = int(round(max(box.w, box.h) * 1.4))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    inside = np.s_[max(y0, 0):y0 + side, max(x0, 0):x0 + side]
    outside = np.ones(frame.shape[:2], bool)
    outside[inside] = False
    assert np.array_equal(out[0][outside], frame[outside])
    assert np.abs(out[0][inside].astype(int) - frame[inside]).mean() > 1.0
    assert np.array_equal(out[1], np.full_like(frame, 90))  # no face: passed through
    with pytest.raises(ValueError):
        list(crop_ceiling([frame], crop_size=2, margin=0.2))


def test_aligned_ceiling_pastes_only_under_the_blend_mask(clips):
    frame = clips["a"][0]
    template = AlignTemplate(size=160)
    ceiling = AlignedCeiling(template, 32)
    masked, square = ceiling.frames(frame)
    assert masked.shape == frame.shape and masked.dtype == np.uint8
    # Where the mask is 0 the frame keeps its own pixels; the whole square changes more of them.
    al = Aligner(template).align(frame, HaarDetector().detect(frame)[0])
    out = rescale(al, 32)
    inv = out.inverse()
    under = cv2.warpAffine(ceiling.mask, inv, (frame.shape[1], frame.shape[0]))
    in_square = cv2.warpAffine(np.ones((32, 32), np.float32), inv, (frame.shape[1], frame.shape[0]))
    changed = np.abs(masked.astype(int) - frame).max(axis=2) > 0
    assert changed.any() and not changed[(under == 0) & (in_square == 0)].any()
    assert not changed[cv2.dilate((under > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0].any()
    changed_square = np.abs(square.astype(int) - frame).max(axis=2) > 0
    assert changed_square.sum() > 1.2 * changed.sum()
    # A 32 px face keeps little of the source's detail; the blend mask leaves the outline sharp.
    lm = FaceJudge().observe(frame, embed=False).landmarks
    src = face_detail(frame, lm)
    assert face_detail(square, lm) < face_detail(masked, lm) < 0.8 * src
    blank = np.full_like(frame, 90)
    assert all(np.array_equal(f, blank) for f in ceiling.frames(blank))  # no face: passed through
    assert np.array_equal(next(aligned_ceiling([frame], template, 32)), masked)
    assert np.array_equal(next(aligned_ceiling([frame], template, 32, mask=False)), square)
    assert ceiling.describe() == {"kind": "aligned", "template": {"size": 160, "eye_distance": 0.32, "eye_line": 0.39},
                                  "output_size": 32, "blend_erode": 0.02, "blend_feather": 0.06}
    with pytest.raises(ValueError):
        AlignedCeiling(template, 4)


def test_ceiling_settings_follow_the_model_folder(tmp_path):
    pytest.importorskip("onnx")
    from tests.server_fixtures import write_autoencoder_model

    template = AlignTemplate(size=160)
    aligned = write_autoencoder_model(str(tmp_path / "aligned"), size=16, encoder_filters=(4,), latent_dim=4,
                                      bottleneck_filters=4, decoder_filters=(4,), upscale=2, template=template)
    got = ceiling_settings(aligned)
    assert got["template"] == template and got["output_size"] == 32
    plain = write_autoencoder_model(str(tmp_path / "plain"), size=16, margin=0.3, encoder_filters=(4,),
                                    latent_dim=4, bottleneck_filters=4, decoder_filters=(4,))
    got = ceiling_settings(plain)
    assert got["template"] is None and got["crop_size"] == 16 and got["margin"] == pytest.approx(0.3)
    with pytest.raises(InputError, match="not a folder"):
        ceiling_settings(str(tmp_path / "missing"))


def test_aligned_ceiling_and_a_variant_in_one_pass(judge, clips):
    frames = clips["a"][:5]
    marked = [cv2.GaussianBlur(f, (0, 0), 1.5) for f in clips["truth"][:5]]
    res = judge_frames(marked, frames, clips["b"][:6], judge=judge, template=AlignTemplate(size=160),
                       output_size=48, variants={"copy": frames})
    assert res["settings"]["ceiling"]["kind"] == "aligned" and res["settings"]["ceiling"]["output_size"] == 48
    copy, ceiling = res["variants"]["copy"], res["sanity"]["ceiling"]
    # A variant that is the source itself scores as the source row does.
    assert copy["transfer"] == 0.0 and copy["detail"] == 1.0 and copy["mouth_r"] == 1.0
    assert copy == res["sanity"]["source"]
    assert res["swap"]["detail"] < 0.7 and res["swap"]["nearer_b"] > 0.5
    assert 0 < ceiling["detail_square"] < ceiling["detail"] < 1.0
    line = format_line(res)
    assert f"copy {copy['detail']:.2f}" in line and "whole square" in line and "; copy: transfer 0.00" in line
    assert "| swap (copy) |" in format_table(res)
    with pytest.raises(InputError, match="variant copy"):
        judge_frames(frames[:3], frames[:3], clips["b"][:4], judge=judge, ceiling=False,
                     variants={"copy": frames[:3] * 3})
    with pytest.raises(ValueError, match="taken"):
        judge_frames(frames[:3], frames[:3], clips["b"][:4], judge=judge, variants={"ceiling": frames[:3]})


def test_format_line_names_every_figure_and_copes_with_missing_ones():
    row = {k: None for k in ("face_found", "nearer_b", "transfer", "same_person_b", "mouth_r", "mouth_mae",
                             "eyes_r", "eyes_mae", "turn_r", "turn_mae", "detail")}
    line = format_line({"swap": dict(row, transfer=0.5, detail=0.25), "sanity": {"ceiling": dict(row, detail=0.3)}})
    assert "transfer 0.50" in line and "detail 0.25 (ceiling 0.30)" in line and "mouth r n/a" in line


def test_read_frames_keeps_an_even_sample(tmp_path, clips):
    path = _write(tmp_path / "a.mp4", clips["a"])
    every = read_frames(path)
    picked = read_frames(path, limit=4)
    assert len(every) == N and len(picked) == 4
    for got, index in zip(picked, (0, 4, 7, 11)):
        assert np.array_equal(got, every[index])


# ----------------------------------------------------------------------------------------------
# Whole reports


@pytest.mark.slow
def test_ground_truth_swap_moves_identity_and_keeps_expression(judge, clips):
    # A's mean from its own list of frames, not from the source's (the other code path).
    res = judge_frames(clips["truth"], list(clips["a"]), clips["b"], source=clips["a"], judge=judge, ceiling=False)
    swap, sanity = res["swap"], res["sanity"]
    assert res["frames"]["a"] == N
    assert swap["face_found"] == 1.0
    # Cartoon faces' embeddings move with the pose: at yaw 12 with shut eyes one truth frame is
    # about as near A's mean as B's, so not all 12 frames are nearer B.
    assert swap["nearer_b"] >= 0.9 and swap["transfer"] > 0.5
    assert swap["mouth_r"] > 0.8 and swap["eyes_r"] > 0.8 and swap["turn_r"] > 0.8
    assert sanity["source"]["transfer"] == 0.0 and sanity["b_heldout"]["transfer"] == 1.0
    assert sanity["b_heldout"]["nearer_b"] == 1.0 and sanity["source"]["nearer_b"] == 0.0
    assert "ceiling" not in sanity
    assert "| swap |" in format_table(res) and "| b_heldout |" in format_table(res)

    # The same faces out of step with the source: identity as good, expression lost.
    shuffled = judge_frames([clips["truth"][i] for i in SHUFFLE], clips["a"], clips["b"], judge=judge,
                            ceiling=False)["swap"]
    assert shuffled["nearer_b"] >= 0.9
    for name in ("mouth", "eyes", "turn"):
        assert shuffled[f"{name}_r"] < 0.5 < swap[f"{name}_r"]
        assert shuffled[f"{name}_mae"] > swap[f"{name}_mae"]


@pytest.mark.slow
def test_source_copy_through_the_cli_scores_zero_transfer_and_r_one(tmp_path, capsys):
    # Clips from `swapstream synth`, as a user would make them; the "swap" is A's clip unchanged.
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert synth_main(["--identity", str(ID_A), "--frames", "10", "--seed", "4", "--out", str(a), "--quiet"]) == 0
    assert synth_main(["--identity", str(ID_B), "--frames", "10", "--seed", "9", "--out", str(b), "--quiet"]) == 0
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(a, copy)
    out = tmp_path / "q.json"
    rc = judge_main([str(copy), "--a", str(a), "--b", str(b), "--json", str(out), "--crop-size", "24"])
    printed = capsys.readouterr().out
    assert rc == 0 and "judge: face found" in printed and "| ceiling |" in printed
    res = json.loads(out.read_text())
    swap, sanity = res["swap"], res["sanity"]
    assert res["frames"]["swapped"] == res["frames"]["source"] == res["frames"]["a"] == 10
    assert swap["face_found"] >= 0.9 and swap["nearer_b"] == 0.0
    assert swap["transfer"] == 0.0 and swap["detail"] == 1.0
    assert swap["mouth_r"] == swap["eyes_r"] == swap["turn_r"] == 1.0
    assert swap["mouth_mae"] == swap["eyes_mae"] == swap["turn_mae"] == 0.0
    assert sanity["source"] == swap
    assert sanity["b_heldout"]["transfer"] == 1.0 and sanity["b_heldout"]["nearer_b"] == 1.0
    # A 24 px crop is far blurrier than the frame: the ceiling must show it.
    assert sanity["ceiling"]["detail"] < 0.5
    assert set(res["inputs"]) == {"swapped", "a", "b", "source", "variants"}
    assert res["settings"]["ceiling"] == {"kind": "haar", "crop_size": 24, "margin": 0.2}
    assert res["variants"] == {}


# ----------------------------------------------------------------------------------------------
# Bad input


def test_cli_bad_input_exits_2(tmp_path, capsys, clips):
    a = _write(tmp_path / "a.mp4", clips["a"][:3])
    assert judge_main([str(tmp_path / "missing.mp4"), "--a", a, "--b", a]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert judge_main([a, "--a", a, "--b", a, "--every", "0"]) == 2
    assert judge_main([a, "--a", a]) == 2  # --b is required
    assert judge_main([a, "--a", a, "--b", a, "--json", str(tmp_path / "no" / "q.json")]) == 2
    not_video = tmp_path / "x.mp4"
    not_video.write_text("not a video")
    assert judge_main([str(not_video), "--a", a, "--b", a]) == 2
    assert judge_main([a, "--a", a, "--b", a, "--variant", "unmarked"]) == 2
    assert "NAME=VIDEO" in capsys.readouterr().err
    assert judge_main([a, "--a", a, "--b", a, "--variant", "ceiling=" + a]) == 2
    assert judge_main([a, "--a", a, "--b", a, "--variant", "u=" + str(tmp_path / "none.mp4")]) == 2
    assert "variant u" in capsys.readouterr().err
    assert judge_main([a, "--a", a, "--b", a, "--model", str(tmp_path), "--aligned"]) == 2
    assert judge_main([a, "--a", a, "--b", a, "--model", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err
    assert judge_main([a, "--a", a, "--b", a, "--aligned", "--output-size", "4"]) == 2
    assert judge_main(["--help"]) == 0


def test_frames_must_be_aligned_and_same_size(judge, clips):
    small = [cv2.resize(f, (128, 128)) for f in clips["a"][:3]]
    with pytest.raises(InputError, match="keep the source's size"):
        judge_frames(small, clips["a"][:3], clips["b"][:4], judge=judge, ceiling=False)
    with pytest.raises(InputError, match="frame-aligned"):
        judge_frames(clips["a"][:3], clips["a"][:8], clips["b"][:4], judge=judge, ceiling=False)
    blank = [np.full((256, 256, 3), 128, np.uint8)] * 4
    with pytest.raises(InputError, match="no face"):
        judge_frames(clips["a"][:3], clips["a"][:3], blank, judge=judge, ceiling=False)
