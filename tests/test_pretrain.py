"""`swapstream pretrain` and the prior file: format, fit check, training at 32 px, resume, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from swapstream.faces.errors import InputError
from swapstream.faces.faceset import resize_faces
from swapstream.trainer.methods import preset_config
from swapstream.trainer.prior import FORMAT, read_prior, write_prior

# --------------------------------------------------------------- the file (no TensorFlow)


def _tiny_prior(path, model=None, **info):
    """A prior file with random weights of plausible shapes (the format does not care which)."""
    rng = np.random.default_rng(0)
    nets = {"encoder": [rng.normal(0, 0.1, (3, 3, 3, 8)).astype(np.float32), np.zeros(8, np.float32)],
            "decoder": [rng.normal(0, 0.1, (8, 3)).astype(np.float32), np.array([7e4, 0, 1], np.float32)]}
    write_prior(str(path), "ae", "tiny", model or preset_config("ae", "tiny"), nets, {"steps": 3, **info})
    return nets


def test_prior_round_trip_keeps_weights_in_float16_where_they_fit(tmp_path):
    nets = _tiny_prior(tmp_path / "p.npz", identities=[5, 6])
    prior = read_prior(str(tmp_path / "p.npz"))
    assert prior.method == "ae" and prior.meta["preset"] == "tiny" and prior.meta["identities"] == [5, 6]
    assert prior.meta["networks"]["encoder"] == [[3, 3, 3, 8], [8]]
    assert prior.weights["encoder"][0].dtype == np.float16
    np.testing.assert_allclose(prior.weights["encoder"][0], nets["encoder"][0], atol=1e-3)
    # 7e4 overflows float16 (max 65504): that array is kept in float32, exactly.
    assert prior.weights["decoder"][1].dtype == np.float32
    np.testing.assert_array_equal(prior.weights["decoder"][1], nets["decoder"][1])
    assert prior.describe()["sha256"] and prior.describe()["steps"] == 3


def test_read_prior_refuses_what_is_not_a_whole_prior(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_prior(str(tmp_path / "missing.npz"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match="not a prior file"):
        read_prior(str(tmp_path / "text.npz"))
    np.savez(tmp_path / "faces.npz", faces=np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="not a prior file"):
        read_prior(str(tmp_path / "faces.npz"))
    _tiny_prior(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["format"] == FORMAT
    np.savez(tmp_path / "v9.npz", **{**arrays, "meta": np.asarray(json.dumps({**meta, "version": 9}))})
    with pytest.raises(InputError, match="format version 9"):
        read_prior(str(tmp_path / "v9.npz"))
    np.savez(tmp_path / "cut.npz", **{k: v for k, v in arrays.items() if k != "decoder/001"})
    with pytest.raises(InputError, match="damaged.*decoder/001"):
        read_prior(str(tmp_path / "cut.npz"))
    bad = dict(arrays)
    bad["encoder/001"] = np.full(8, np.nan, np.float16)
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(InputError, match="NaN"):
        read_prior(str(tmp_path / "nan.npz"))


def test_framing_check_refuses_faces_framed_otherwise(tmp_path):
    framed = {"size": 160, "eye_distance": 0.32, "eye_line": 0.39}
    _tiny_prior(tmp_path / "p.npz", align_template=framed)
    prior = read_prior(str(tmp_path / "p.npz"))
    prior.check_framing(dict(framed))
    with pytest.raises(InputError, match="eye distance 0.32.*eye distance 0.27"):
        prior.check_framing({**framed, "eye_distance": 0.27})
    with pytest.raises(InputError, match="Haar squares"):
        prior.check_framing(None)


def test_fit_check_names_the_network_fields_that_differ(tmp_path):
    tiny = preset_config("ae", "tiny")
    _tiny_prior(tmp_path / "p.npz", model=tiny)
    prior = read_prior(str(tmp_path / "p.npz"))
    prior.check_fits("ae", tiny)
    # Learning rate, loss weights and precision are how a pair fine-tunes, not what the networks are.
    import dataclasses

    prior.check_fits("ae", dataclasses.replace(tiny, learning_rate=1e-5, dssim_weight=0.0,
                                               dtype_policy="mixed_bfloat16"))
    with pytest.raises(InputError, match=r"decoder_filters: prior \[16, 8\], run \[32, 8\].*preset it was "
                                         r"pretrained with \('tiny'"):
        prior.check_fits("ae", dataclasses.replace(tiny, decoder_filters=(32, 8)))
    with pytest.raises(InputError, match="size: prior 32, run 64"):
        prior.check_fits("ae", dataclasses.replace(tiny, size=64))
    with pytest.raises(InputError, match="pretrained for method 'ae', the run is 'conv-vae'"):
        prior.check_fits("conv-vae", tiny)


def test_the_shipped_demo_prior_fits_the_demo_preset_and_leaves_out_the_demo_pair():
    import os

    from swapstream.clients.demo import IDENTITY_A, IDENTITY_B, PRIOR_NAME, TRAIN_PRESET
    from swapstream.faces.align import AlignTemplate
    from swapstream.trainer.config import template_dict
    from swapstream.trainer.prior import shipped_prior

    path = shipped_prior(PRIOR_NAME)
    assert path is not None, "trainer/priors/demo-ae.npz is missing"
    assert os.path.getsize(path) <= 25e6
    prior = read_prior(path)
    # A change of the demo preset's networks or of the default framing needs a new prior (docs/pretrain.md).
    prior.check_fits("ae", preset_config("ae", TRAIN_PRESET))
    prior.check_framing(template_dict(AlignTemplate()))
    identities = set(prior.meta["identities"])
    assert len(identities) >= 50 and not identities & {IDENTITY_A, IDENTITY_B}


# --------------------------------------------------------------- training (TensorFlow)

keras = pytest.importorskip("keras")

from swapstream.trainer.pretrain import main  # noqa: E402
from tests.trainer_fixtures import synthetic_faces, write_face_set  # noqa: E402

PRETRAIN_IDS = (21, 22, 23)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sets")
    return [write_face_set(folder / f"id{i}.npz", synthetic_faces(i, 16, 64, seed=i)) for i in PRETRAIN_IDS]


def _pretrain(*args) -> int:
    return main(["--preset", "tiny", "--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory, sets):
    out = tmp_path_factory.mktemp("prior") / "tiny.npz"
    assert _pretrain("--faces", *sets, "--out", out, "--steps", 150, "--seed", 1) == 0
    return out


def _reconstruction_l1(method, faces: np.ndarray) -> float:
    """Mean L1 of decoder_a(encoder(face)) against the face at the output side."""
    x = resize_faces(faces, method.input_size).astype(np.float32) / 255.0
    target = resize_faces(faces, method.output_size).astype(np.float32) / 255.0
    out = np.asarray(method.decoder_a(method.encoder(x)), dtype=np.float32)
    return float(np.abs(out - target).mean())


@pytest.mark.slow
def test_pretrain_writes_a_prior_whose_weights_a_pair_takes(prior_path, sets):
    from swapstream.trainer.methods import build_method

    prior = read_prior(str(prior_path))
    assert prior.meta["steps"] == 150 and prior.meta["faces"] == 48
    assert prior.meta["face_sets"] == [f"id{i}.npz" for i in PRETRAIN_IDS]
    work = prior_path.parent / "tiny.run"
    assert (work / "pretrain.json").is_file() and (work / "previews" / "preview.png").is_file()

    seen = synthetic_faces(PRETRAIN_IDS[1], 8, 64, seed=PRETRAIN_IDS[1])
    fresh = build_method("ae", preset_config("ae", "tiny"), seed=1)
    started = build_method("ae", preset_config("ae", "tiny"), seed=1)
    assert prior.apply(started) == {"encoder": "encoder", "decoder_a": "decoder", "decoder_b": "decoder"}
    for a, b in zip(started.decoder_a.get_weights(), started.decoder_b.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(started.encoder.get_weights()[0], prior.weights["encoder"][0].astype(np.float32))
    # The weights went where they belong (a wrong order or a missed network draws noise).
    assert _reconstruction_l1(started, seen) < 0.7 * _reconstruction_l1(fresh, seen)

    other = build_method("ae", preset_config("ae", "cpu"))
    with pytest.raises(InputError, match="does not fit"):
        prior.apply(other)


@pytest.mark.slow
def test_pretrain_resume_continues_to_the_total_step(tmp_path, sets):
    out = tmp_path / "p.npz"
    assert _pretrain("--faces", *sets, "--out", out, "--steps", 10, "--checkpoint-every", 10) == 0
    assert main(["--no-progress", "--out", str(out), "--resume", "--steps", "20"]) == 0
    prior = read_prior(str(out))
    assert prior.meta["steps"] == 20 and prior.meta["preset"] == "tiny"
    # A new run into a working folder that exists is refused, not mixed into it.
    assert _pretrain("--faces", *sets, "--out", out, "--steps", 10) == 2


def test_pretrain_bad_input_exits_2_with_one_line(tmp_path, sets, capsys):
    out = str(tmp_path / "p.npz")
    cases = [
        (["--faces", *sets, "--out", out, "--steps", "5", "--method", "cyclegan"], "supports --method ae"),
        (["--out", out, "--steps", "5"], "--faces"),
        (["--faces", sets[0], sets[0], "--out", out, "--steps", "5"], "hold the same faces"),
        (["--faces", str(tmp_path / "nope.npz"), "--out", out, "--steps", "5"], "nope.npz"),
        (["--faces", *sets, "--out", out], "--steps N or --minutes T"),
        (["--faces", *sets, "--out", str(tmp_path), "--steps", "5"], "is a folder"),
        (["--out", out, "--resume", "--steps", "5"], "not a pretraining run"),
    ]
    for argv, message in cases:
        assert _pretrain(*argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (argv, err)


@pytest.mark.slow
def test_train_init_starts_both_decoders_from_the_prior(tmp_path, prior_path, sets):
    import yaml

    from swapstream.trainer.cli import main as train_main

    def train(out, *extra):
        return train_main(["--method", "ae", "--preset", "tiny", "--a", sets[0], "--b", sets[1], "--out", str(out),
                           "--steps", "10", "--log-every", "5", "--no-progress", *map(str, extra)])

    assert train(tmp_path / "init", "--init", prior_path) == 0
    assert train(tmp_path / "scratch") == 0
    summary = json.loads((tmp_path / "init" / "summary.json").read_text())
    scratch = json.loads((tmp_path / "scratch" / "summary.json").read_text())
    assert summary["init"]["path"] == str(prior_path) and summary["init"]["steps"] == 150
    assert scratch["init"] is None
    # Both identities were in the prior's faces: from it, the pair starts far ahead.
    assert summary["final_losses"]["l1"] < 0.7 * scratch["final_losses"]["l1"]
    assert yaml.safe_load((tmp_path / "init" / "config.yaml").read_text())["model"]["size"] == 32


def test_train_init_refuses_a_prior_that_does_not_fit(tmp_path, sets, capsys):
    from swapstream.trainer.cli import main as train_main

    _tiny_prior(tmp_path / "cpu.npz", model=preset_config("ae", "cpu"))
    argv = ["--method", "ae", "--preset", "tiny", "--a", sets[0], "--b", sets[1], "--steps", "2", "--no-progress"]
    assert train_main([*argv, "--out", str(tmp_path / "r1"), "--init", str(tmp_path / "cpu.npz")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the run's networks" in err and "size: prior 64, run 32" in err
    assert train_main([*argv, "--out", str(tmp_path / "r2"), "--init", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()

