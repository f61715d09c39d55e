"""`swapstream export` on real (tiny) training runs, every method's graph, and bad input."""
from __future__ import annotations

import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import yaml

pytest.importorskip("keras")

from swapstream.exporter.cli import main as export_main  # noqa: E402
from swapstream.exporter.convert import ConversionError, convert_keras  # noqa: E402
from swapstream.exporter.fp16 import to_fp16  # noqa: E402
from swapstream.exporter.parity import keras_outputs, parity_faces  # noqa: E402
from swapstream.exporter.runs import float32_inference_model  # noqa: E402
from swapstream.faces.model_folder import load_manifest  # noqa: E402
from swapstream.trainer.cli import main as train_main  # noqa: E402
from swapstream.trainer.methods import METHODS, build_method, preset_config  # noqa: E402
from tests.trainer_fixtures import make_pair  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real `ae` run: tiny preset, two training steps, one checkpoint."""
    folder = tmp_path_factory.mktemp("export_run")
    a, b = make_pair(folder, count=24, size=32)
    run = str(folder / "ae_run")
    assert train_main(["--method", "ae", "--a", a, "--b", b, "--out", run, "--preset", "tiny",
                       "--steps", "2", "--no-progress"]) == 0
    return run


def _only(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder))


def test_cli_export_both_directions_with_dfm(run_dir, tmp_path, capsys):
    out = tmp_path / "models"
    assert export_main([run_dir, "--out", str(out / "ae_a2b"), "--dfm"]) == 0
    assert export_main([run_dir, "--out", str(out / "ae_b2a"), "--direction", "b2a", "--fp16"]) == 0
    err = capsys.readouterr().err
    assert "16 real" in err  # the run's own face set was used beside the random crops
    m = load_manifest(str(out / "ae_a2b"))
    # The fixture's face sets are aligned and the tiny ae has the 2x head: aligned crops, no margin.
    assert (m.method, m.direction, m.crop_size, m.crop_margin, m.precision) == ("ae", "a2b", 32, 0.0, "fp32")
    assert m.align_template is not None and m.out_size == 64
    assert _only(out / "ae_a2b") == ["ae_a2b.dfm", "manifest.json", "model.onnx"]
    m = load_manifest(str(out / "ae_b2a"))
    assert (m.direction, m.precision) == ("b2a", "fp16")
    assert _only(out) == ["ae_a2b", "ae_b2a"]
    # Two directions really are two different graphs.
    x, _ = parity_faces(32, n_random=4)
    outs = [ort.InferenceSession(str(out / d / "model.onnx"), providers=["CPUExecutionProvider"])
            .run(None, {"face": x})[0] for d in ("ae_a2b", "ae_b2a")]
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


REASONS = {"missing": "does not exist", "no_checkpoint": "no checkpoint", "mismatch": "does not fit",
           "truncated": "truncated", "direction": "--direction", "exists": "not empty"}


@pytest.mark.parametrize("case", ["missing", "no_checkpoint", "mismatch", "truncated", "direction", "exists"])
def test_cli_bad_input_exit_2_and_nothing_written(run_dir, tmp_path, capsys, case):
    run = str(tmp_path / "run")
    out = tmp_path / "out"
    args = [run, "--out", str(out)]
    if case != "missing":
        shutil.copytree(run_dir, run)
    if case == "no_checkpoint":  # training stopped before its first checkpoint
        shutil.rmtree(os.path.join(run, "checkpoints"))
    elif case == "mismatch":  # config no longer describes the checkpoint's networks
        path = os.path.join(run, "config.yaml")
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
        cfg["model"]["latent_dim"] = cfg["model"]["latent_dim"] * 2
        with open(path, "w") as fh:
            yaml.safe_dump(cfg, fh)
    elif case == "truncated":
        ckpt_dir = os.path.join(run, "checkpoints")
        for name in os.listdir(ckpt_dir):
            if name.endswith(".h5"):
                path = os.path.join(ckpt_dir, name)
                with open(path, "r+b") as fh:
                    fh.truncate(os.path.getsize(path) // 2)
    elif case == "direction":
        args += ["--direction", "sideways"]
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = _only(tmp_path)
    assert export_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("swapstream export: error:")
    assert REASONS[case] in err[-1]
    assert _only(tmp_path) == before  # no model folder, no staging folder
    if case == "exists":
        assert _only(out) == ["keep.txt"]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_parity_fp32_fp16(name):
    """Each method's inference graph (tiny preset) converts and matches Keras."""
    model = build_method(name, preset_config(name, "tiny")).inference_model("a2b")
    faces, _ = parity_faces(model.inputs[0].shape[1], n_random=16)
    reference = keras_outputs(model, faces)[0]
    proto = convert_keras(model)
    for graph, tol in ((proto, 1e-4), (to_fp16(proto), 1e-2)):
        sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(["swapped"], {"face": faces})[0]
        assert got.shape == reference.shape and np.abs(got - reference).max() <= tol


def test_mixed_precision_method_exports_through_float32_twin():
    """A mixed_bfloat16 run (the GPU preset's policy) exports its weights in a float32 graph."""
    import dataclasses

    cfg = dataclasses.replace(preset_config("ae", "tiny"), dtype_policy="mixed_bfloat16")
    method = build_method("ae", cfg)
    with pytest.raises(ConversionError, match="bfloat16"):
        convert_keras(method.inference_model("a2b"))
    model, note = float32_inference_model(method, "a2b")
    assert "mixed_bfloat16" in note
    faces, _ = parity_faces(cfg.size, n_random=16)
    reference = keras_outputs(model, faces)[0]
    bf16 = keras_outputs(method.inference_model("a2b"), faces)[0]
    assert np.abs(bf16 - reference).max() < 0.05  # same weights, only the arithmetic differs
    sess = ort.InferenceSession(convert_keras(model).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"face": faces})[0] - reference).max() <= 1e-4
