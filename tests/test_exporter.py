"""Exporter: Keras -> ONNX parity (fp32, fp16), DeepFaceLive .dfm contract, manifest, atomic output."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

keras = pytest.importorskip("keras")

from swapstream.exporter import export as export_mod  # noqa: E402
from swapstream.exporter.convert import convert_keras  # noqa: E402
from swapstream.exporter.dfm import DFM_CELEB_FACE, DFM_CELEB_MASK, DFM_FACE_MASK, DFM_INPUT  # noqa: E402
from swapstream.exporter.export import ExportSpec, ParityError, export_model  # noqa: E402
from swapstream.exporter.parity import parity_faces  # noqa: E402
from swapstream.faces.errors import InputError  # noqa: E402
from swapstream.faces.mask import ellipse_mask  # noqa: E402
from swapstream.faces.model_folder import load_manifest  # noqa: E402
from tests.exporter_fixtures import tiny_autoencoder, tiny_generator  # noqa: E402

S = 16


def _spec(**kw) -> ExportSpec:
    base = dict(method="ae", direction="a2b", crop_size=S, crop_margin=0.2)
    base.update(kw)
    return ExportSpec(**base)


def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _keras(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


@pytest.fixture(scope="module")
def faces():
    x, _ = parity_faces(S, n_random=16, seed=7)
    return x


@pytest.mark.parametrize("fp16,tol", [(False, 1e-4), (True, 1e-2)])
def test_export_parity_manifest_and_metadata(tmp_path, faces, fp16, tol):
    model = tiny_autoencoder(S, seed=1)
    out = tmp_path / "ae_a2b"
    result = export_model(model, str(out), _spec(fp16=fp16), log=lambda m: None)

    assert sorted(os.listdir(out)) == ["manifest.json", "model.onnx"]
    assert os.stat(out / "manifest.json").st_mode & 0o777 == 0o644  # readable by a server of another user
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary folder left behind"
    manifest = load_manifest(str(out))  # the server's validation: hash, names, shapes, dtypes
    assert (manifest.method, manifest.direction, manifest.crop_size, manifest.crop_margin) == ("ae", "a2b", S, 0.2)
    assert manifest.precision == ("fp16" if fp16 else "fp32") and manifest.mask_output_name is None
    assert result.parity[0].ok and result.parity[0].faces >= 16

    # Independent of the exporter's own check: same faces through Keras and onnxruntime.
    sess = _session(str(out / "model.onnx"))
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, outp.name, outp.type) == ("face", "tensor(float)", "swapped", "tensor(float)")
    got = sess.run(None, {"face": faces})[0]
    diff = np.abs(got - _keras(model, faces)[0]).max()
    assert diff <= tol
    if fp16:
        weights = onnx.load(str(out / "model.onnx")).graph.initializer
        big = [t for t in weights if np.prod(t.dims) > 64]
        assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
        assert diff > 1e-6  # really computed in half precision

    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert meta["swapstream.method"] == "ae" and meta["swapstream.direction"] == "a2b"
    assert meta["swapstream.crop_size"] == str(S) and float(meta["swapstream.crop_margin"]) == 0.2
    assert meta["swapstream.colour_order"] == "BGR" and meta["swapstream.value_range"] == "0..1"
    assert meta["swapstream.producer"].startswith("swapstream")


def test_generator_ops_parity(faces):
    """Instance norm, residual add, transposed conv, tanh->0..1 (the CycleGAN generator's ops)."""
    model = tiny_generator(S, seed=2)
    proto = convert_keras(model)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"face": faces})[0]
    assert np.abs(got - _keras(model, faces)[0]).max() <= 1e-4


def test_weights_are_folded_into_initializers():
    """No layout op is left running on weights at inference time; weights are stored once."""
    model = tiny_autoencoder(S, seed=3)
    proto = convert_keras(model)
    inits = {t.name for t in proto.graph.initializer}
    assert [i.name for i in proto.graph.input] == ["face"]
    for node in proto.graph.node:
        if node.op_type in ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Sqrt", "Reciprocal"):
            assert not all(name in inits for name in node.input if name), node
    stored = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    params = model.count_params()
    # Batch norm's four vectors fold into two; a few shape constants come in; nothing is duplicated.
    assert 0.99 * params <= stored <= params + 64


@pytest.mark.parametrize("with_mask", [False, True])
def test_dfm_names_shapes_ranges(tmp_path, faces, with_mask):
    model = tiny_autoencoder(S, seed=4, with_mask=with_mask)
    out = tmp_path / "swapper"
    result = export_model(model, str(out), _spec(dfm=True), log=lambda m: None)
    assert result.dfm_path == str(out / "swapper.dfm") and os.path.isfile(result.dfm_path)
    assert load_manifest(str(out)).mask_output_name == ("mask" if with_mask else None)

    sess = _session(result.dfm_path)
    assert [(i.name, i.shape, i.type) for i in sess.get_inputs()] == [(DFM_INPUT, [1, S, S, 3], "tensor(float)")]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [
        (DFM_FACE_MASK, [1, S, S, 1]), (DFM_CELEB_FACE, [1, S, S, 3]), (DFM_CELEB_MASK, [1, S, S, 1])]
    ref = _keras(model, faces)
    for i in range(4):
        # DeepFaceLive's call: positional unpacking of sess.run(None, {"in_face:0": img}).
        face_mask, celeb, celeb_mask = sess.run(None, {DFM_INPUT: faces[i:i + 1]})
        assert celeb.dtype == np.float32 and 0.0 <= celeb.min() and celeb.max() <= 1.0
        assert np.abs(celeb - ref[0][i:i + 1]).max() <= 1e-4
        for mask in (face_mask, celeb_mask):
            assert mask.shape == (1, S, S, 1) and 0.0 <= mask.min() and mask.max() <= 1.0
        if with_mask:
            assert np.abs(celeb_mask - ref[1][i:i + 1]).max() <= 1e-4
        else:
            np.testing.assert_allclose(celeb_mask[0, ..., 0], ellipse_mask(S), atol=1e-6)
            assert celeb_mask[0, S // 2, S // 2, 0] > 0.9 and celeb_mask[0, 0, 0, 0] < 0.05


def _fp16_overflow_model():
    """Exact in float32, but x * 1e5 overflows float16 (max 65504): the fp16 export must fail parity."""
    face = keras.Input((S, S, 3), name="face")
    x = keras.layers.Rescaling(1e5)(face)
    out = keras.layers.Rescaling(1e-5, name="swapped")(x)
    return keras.Model(face, out)


def test_parity_failure_writes_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "parents" / "bad"
    with pytest.raises(ParityError) as info:
        export_model(_fp16_overflow_model(), str(out), _spec(fp16=True))
    assert info.value.results and not info.value.results[0].ok
    assert "FAILED" in capsys.readouterr().err  # the figures were printed
    assert os.listdir(tmp_path) == []


def test_failure_keeps_existing_model_folder(tmp_path):
    out = tmp_path / "model"
    export_model(tiny_autoencoder(S, seed=5), str(out), _spec(), log=lambda m: None)
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    with pytest.raises(InputError, match="not empty"):
        export_model(tiny_autoencoder(S, seed=6), str(out), _spec(), log=lambda m: None)
    with pytest.raises(ParityError):
        export_model(_fp16_overflow_model(), str(out), _spec(fp16=True), force=True, log=lambda m: None)
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["model"]
    # --force with a good model replaces it.
    export_model(tiny_autoencoder(S, seed=6), str(out), _spec(direction="b2a"), force=True, log=lambda m: None)
    assert load_manifest(str(out)).direction == "b2a"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_large_model_path_writes_external_data(tmp_path, monkeypatch, faces):
    """Models beyond protobuf's 2 GiB keep their weights in model.onnx.data (threshold lowered here)."""
    monkeypatch.setattr(export_mod, "EXTERNAL_DATA_THRESHOLD", 1000)
    model = tiny_autoencoder(S, seed=8)
    out = tmp_path / "big"
    export_model(model, str(out), _spec(dfm=True), log=lambda m: None)
    assert sorted(os.listdir(out)) == ["big.dfm", "big.dfm.data", "manifest.json", "model.onnx", "model.onnx.data"]
    assert os.path.getsize(out / "model.onnx") < 100_000 < os.path.getsize(out / "model.onnx.data")
    load_manifest(str(out))
    got = _session(str(out / "model.onnx")).run(None, {"face": faces})[0]
    assert np.abs(got - _keras(model, faces)[0]).max() <= 1e-4
