"""`swapstream compare` and its metrics, on tiny synthetic face sets from the real synth + extract.

The metrics are pinned down by cases whose answer is known: the ground truth against itself,
a "swap" that returns its source unchanged, an untrained network against a trained one.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from swapstream.faces.extract import main as extract_main
from swapstream.faces.faceset import load_faceset
from swapstream.faces.synth_cli import main as synth_main
from swapstream.trainer import compare as cmp
from swapstream.trainer import evaluate as ev

ID_A, ID_B = 1, 2
FRAMES, FRAME_SIZE, CROP = 70, "128x128", 32  # 32 px: the trainer's tiny preset
STEPS = 60


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Face sets of two synthetic people (different motion, light and background per clip)."""
    folder = tmp_path_factory.mktemp("compare_sets")
    paths = {}
    for name, ident, seed in (("a", ID_A, 11), ("b", ID_B, 22)):
        video = str(folder / f"{name}.mp4")
        assert synth_main(["--identity", str(ident), "--frames", str(FRAMES), "--seed", str(seed),
                           "--size", FRAME_SIZE, "--out", video, "--quiet"]) == 0
        paths[name] = str(folder / f"{name}.npz")
        assert extract_main([video, "--out", paths[name], "--every", "1", "--size", str(CROP), "--quiet"]) == 0
    return paths


@pytest.fixture(scope="module")
def comparison(sets, tmp_path_factory):
    """One real comparison (the code path of `swapstream compare`): two methods, a handful of
    steps, tiny preset. Returns (report folder, Comparison)."""
    out = tmp_path_factory.mktemp("compare_report") / "report"
    args = cmp.build_parser().parse_args(["--a", sets["a"], "--b", sets["b"], "--out", str(out),
                                          "--methods", "ae,vae", "--steps", str(STEPS), "--preset", "tiny"])
    result = cmp.compare(args)
    assert result.exit_code == 0, result.failed
    return out, result


@pytest.fixture(scope="module")
def report(comparison):
    return comparison[0]


@pytest.fixture(scope="module")
def judges(comparison):
    c = comparison[1]
    return c.split_a, c.split_b, c.judges


def test_ssim_matches_tensorflow_and_psnr_is_capped():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-50, 50, a.shape), 0, 255).astype(np.uint8)
    want = tf.image.ssim(tf.constant(a / 255.0, tf.float32), tf.constant(b / 255.0, tf.float32), max_val=1.0)
    np.testing.assert_allclose(ev.ssim(a, b), want.numpy(), atol=1e-4)
    np.testing.assert_allclose(ev.ssim(a, b), ev.ssim(a / 255.0, b / 255.0), atol=1e-9)  # uint8 == 0..1
    assert np.all(ev.psnr(a, a) == ev.PSNR_CAP_DB)
    np.testing.assert_allclose(ev.psnr(a, b), tf.image.psnr(a, b, 255).numpy(), atol=1e-3)
    with pytest.raises(ValueError):
        ev.ssim(a, b[:2])


def test_code_alignment_tells_shared_codes_from_opposite_ones():
    rng = np.random.default_rng(0)
    pose_a, pose_b = rng.normal(size=(120, 2)), rng.normal(size=(120, 2))
    mix = rng.normal(size=(2, 16))
    codes_b = pose_b @ mix + 0.05 * rng.normal(size=(120, 16))
    # A codes parameter 0 the way B does, parameter 1 the opposite way.
    codes_a = (pose_a * [1.0, -1.0]) @ mix + 0.05 * rng.normal(size=(120, 16)) + 3.0
    table = ev.code_alignment(codes_a, pose_a, codes_b, pose_b, ["same", "flipped"])
    assert table["same"]["transfer_r"] > 0.95 and table["flipped"]["transfer_r"] < -0.95
    assert table["same"]["within_a_r"] > 0.95 and table["flipped"]["within_a_r"] > 0.95


def test_holdout_split_is_disjoint_spread_and_deterministic():
    train, test = ev.holdout_split(100, 0.2)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 100
    assert 15 <= len(test) <= 25
    assert test.min() < 50 < test.max(), "held-out faces come from all over the clip"
    assert np.array_equal(test, ev.holdout_split(100, 0.2)[1])


def test_ground_truth_scored_against_itself_is_perfect(sets):
    fs_a = load_faceset(sets["a"])
    fs_a.source = cmp.resolve_sources(fs_a.source, sets["a"])
    truth = ev.ground_truth_faces(fs_a, ID_B)
    assert truth.shape == fs_a.faces.shape and truth.dtype == np.uint8
    assert np.allclose(ev.ssim(truth, truth), 1.0)
    assert np.all(ev.psnr(truth, truth) == ev.PSNR_CAP_DB)
    # The re-render is cut exactly like extract cut the video: A's own "ground truth" is its
    # source face (up to the video codec), B's is clearly another face.
    assert ev.ssim(ev.ground_truth_faces(fs_a, ID_A), fs_a.faces).mean() > 0.9
    assert ev.ssim(truth, fs_a.faces).mean() < 0.75


@pytest.mark.slow
def test_source_copy_scores_clearly_lower_than_the_ground_truth(comparison, judges):
    split_a, split_b, j = judges
    assert j.synthetic and j.classifier.accuracy >= 0.9
    refs = comparison[1].references
    copy, truth, other = refs["source copy"], refs["ground truth"], refs["target faces"]
    assert truth["ssim"]["mean"] > 0.999 and truth["ssim_crop"]["mean"] > 0.999
    assert copy["ssim"]["mean"] < truth["ssim"]["mean"] - 0.3
    assert copy["identity"]["mean"] < 0.2 < 0.8 < truth["identity"]["mean"]
    # Copy and truth both keep the source's expression and pose: the pose judge says so ...
    assert truth["pose"]["mean"] > 0.3 and copy["pose"]["mean"] > 0.3
    assert truth["preservation"] == 1.0 and copy["preservation"] > 0.7
    # ... and the target's own faces, which ignore the source, do not (on either measure).
    assert other["pose"]["mean"] < truth["pose"]["mean"] - 0.3
    assert other["structure_rsa"]["mean"] < truth["structure_rsa"]["mean"] - 0.3
    assert other["identity"]["mean"] > 0.8
    # The judges see the same faces the report names.
    assert len(j.truth_ab) == len(split_a.test_idx) and len(j.truth_ba) == len(split_b.test_idx)


@pytest.mark.slow
def test_untrained_model_scores_clearly_lower_than_trained(report, judges):
    from swapstream.trainer.methods import build_method
    from swapstream.trainer.runs import load_run

    split_a, split_b, j = judges
    trained = load_run(str(report / "runs" / "ae"))
    untrained = build_method("ae", trained.config, seed=1)
    scores = {}
    for name, model in (("trained", trained), ("untrained", untrained)):
        src_a = ev.as_float(split_a.test.faces)
        src_b = ev.as_float(split_b.test.faces)
        ab = model.inference_model("a2b").predict(src_a, verbose=0)
        ba = model.inference_model("b2a").predict(src_b, verbose=0)
        scores[name] = cmp.judge_swaps(j, src_a, ab, src_b, ba)
    assert scores["trained"]["ssim"]["mean"] > scores["untrained"]["ssim"]["mean"] + 0.1
    assert scores["trained"]["psnr"]["mean"] > scores["untrained"]["psnr"]["mean"] + 2.0


@pytest.mark.slow
def test_compare_writes_grid_metrics_and_report(report):
    for name in ("grid.png", "metrics.json", "report.md"):
        assert (report / name).is_file(), name
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"ae", "vae"} and not metrics["failed"]
    assert [row["place"] for row in metrics["ranking"]] == [1, 2]
    for m in ("ae", "vae"):
        r = metrics["methods"][m]
        assert 0.0 <= r["identity"]["mean"] <= 1.0 and 0.0 <= r["preservation"] <= 1.0
        assert -1.0 <= r["ssim"]["mean"] <= 1.0 and r["training"]["steps"] == STEPS
        assert r["training"]["images_per_second"] > 0 and r["inference"]["batch1_ms"] > 0
    assert metrics["references"]["ground truth"]["ssim"]["mean"] > 0.999
    grid = cv2.imread(str(report / "grid.png"))
    rows = 2 * 4  # 4 held-out faces of A and of B
    cols = 1 + 1 + 2  # source, truth, two methods
    assert grid.shape[0] > rows * cmp.GRID_CELL and grid.shape[1] > cols * cmp.GRID_CELL
    text = (report / "report.md").read_text()
    assert "| **ae** |" in text and "| **vae** |" in text and "## Ranking" in text
    assert "1. **" in text and "2. **" in text


@pytest.mark.slow
def test_existing_runs_are_not_clobbered_without_reuse(report, sets, capsys):
    args = ["--a", sets["a"], "--b", sets["b"], "--out", str(report), "--methods", "ae",
            "--steps", str(STEPS), "--preset", "tiny"]
    assert cmp.main(args) == 2  # run folders exist: refuse without --reuse
    assert "--reuse" in capsys.readouterr().err
    assert (report / "runs" / "ae" / "summary.json").is_file()
    # Reusing runs trained on other faces (A and B swapped) is refused before anything is written.
    swapped = ["--a", sets["b"], "--b", sets["a"], *args[4:], "--reuse"]
    before = (report / "report.md").stat().st_mtime_ns
    assert cmp.main(swapped) == 2
    assert "other faces" in capsys.readouterr().err
    assert (report / "report.md").stat().st_mtime_ns == before


@pytest.mark.parametrize("extra, message", [
    (["--methods", "ae,nope"], "unknown method"),
    (["--steps", "0"], "--steps"),
    (["--steps", "3", "--minutes-per-method", "1"], "not allowed"),
])
def test_bad_arguments_exit_2(sets, tmp_path, capsys, extra, message):
    rc = cmp.main(["--a", sets["a"], "--b", sets["b"], "--out", str(tmp_path / "r"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r" / "report.md")


def test_missing_face_set_exits_2(sets, tmp_path, capsys):
    rc = cmp.main(["--a", str(tmp_path / "missing.npz"), "--b", sets["b"], "--out", str(tmp_path / "r"),
                   "--steps", "5"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_real_face_judge_rates_every_method_and_ranks_them(report, comparison):
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["info"]["face_judge"] and metrics["info"]["ranked_by"] == "face judge"
    refs = metrics["references"]
    source = refs["source copy"]["face_judge"]["mean"]
    # The unswapped frames: transfer 0, r 1, MAE 0 and detail 1 by construction.
    assert source["face_found"] == 1.0 and source["transfer"] == pytest.approx(0.0, abs=1e-3)
    assert source["mouth_r"] == pytest.approx(1.0) and source["eyes_mae"] == pytest.approx(0.0)
    assert source["detail"] == pytest.approx(1.0)
    assert refs["target faces"]["face_judge_target"]["mean"]["transfer"] == pytest.approx(1.0, abs=1e-3)
    truth = refs["ground truth"]["face_judge"]["mean"]
    assert truth["transfer"] > 0.3 and truth["nearer_target"] > 0.7
    # A 64 px output pasted into the frame keeps less detail than the frame itself.
    ceiling = metrics["face_judge_ceilings"]["ceiling 64 px"]["mean"]
    assert ceiling["detail"] < 0.9 and ceiling["transfer"] < 0.3
    for m in ("ae", "vae"):
        fj = metrics["methods"][m]["face_judge"]
        assert fj["a2b"]["frames"] == len(metrics["held_out"]["a"])
        assert fj["b2a"]["frames"] == len(metrics["held_out"]["b"])
        assert 0.0 <= fj["mean"]["face_found"] <= 1.0
    assert {row["judge"] for row in metrics["ranking"]} == {"face judge"}
    text = (report / "report.md").read_text()
    assert "## Real-face judge" in text and "## Pair-trained judges (extra columns)" in text
    assert "_ceiling 64 px_" in text


def test_ranking_uses_the_face_judge_where_every_method_has_it():
    def result(p, pres, transfer=None, rs=(0.0, 0.0, 0.0), found=1.0):
        r = {"identity": {"mean": p, "share_judged_target": p}, "preservation": pres, "preservation_raw": pres}
        if transfer is not None:
            row = dict(zip(cmp.FACE_JUDGE_R, rs), transfer=transfer, face_found=found, nearer_target=1.0,
                       detail=0.3)
            r["face_judge"] = {"mean": row}
        return r

    # The pair-trained judges prefer x; the face judge prefers y.
    by_face = cmp.rank({"x": result(1.0, 1.0, 0.1, (0.2, 0.2, 0.2)), "y": result(0.5, 0.5, 0.9, (0.9, 0.8, 0.7))})
    assert [r["method"] for r in by_face] == ["y", "x"] and by_face[0]["judge"] == "face judge"
    assert by_face[0]["score"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.8)
    assert by_face[1]["pair_score"] == pytest.approx(1.0)
    # One method without the face judge's figures: all ranked by the pair-trained judges.
    fallback = cmp.rank({"x": result(1.0, 1.0), "y": result(0.5, 0.5, 0.9, (0.9, 0.8, 0.7))})
    assert [r["method"] for r in fallback] == ["x", "y"] and fallback[0]["judge"] == "pair-trained judges"
    # Swaps dlib cannot find as faces score for the share it finds; r and transfer are clipped.
    assert cmp.face_judge_halves({"transfer": 1.4, "face_found": 0.5, "mouth_r": 1.0, "eyes_r": -1.0,
                                  "turn_r": None}) == pytest.approx((0.5, 0.0))


def test_face_judge_reads_the_faces_frames_and_says_when_it_cannot(sets, tmp_path):
    from swapstream.trainer import compare_judge as cj

    fs = load_faceset(sets["a"])
    fs.source = cmp.resolve_sources(fs.source, sets["a"])
    frames = cj.source_frames(fs.subset(np.array([0, len(fs) - 1])))
    assert len(frames) == 2 and frames[0].shape[:2] == (128, 128) and not np.array_equal(frames[0], frames[1])
    # The crop stored with face 0, pasted back into its own frame, changes the frame only a little
    # (resampling); the same crop upside down changes it several times more.
    paste = cj.paster(fs, 0, frames[0])

    def change(face: np.ndarray) -> float:
        pasted = paste(np.ascontiguousarray(face))
        assert pasted.shape == frames[0].shape
        return float(np.abs(pasted.astype(int) - frames[0]).mean())

    assert change(fs.faces[0]) < 1.0 and change(fs.faces[0]) < 0.3 * change(fs.faces[0][::-1])
    fs.source = np.asarray([str(tmp_path / "gone.mp4")] * len(fs))
    with pytest.raises(cj.JudgeSkipped, match="gone.mp4"):
        cj.source_frames(fs)
