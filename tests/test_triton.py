"""Triton model-repository entries: config.pbtxt checked against Triton's own schema and the graph.

The schema is Triton's ModelConfig protobuf as shipped in tritonclient (`model_config_pb2`),
parsed with protobuf's text format, exactly as Triton reads config.pbtxt. Triton itself is
not run here.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from swapstream.exporter.cli import main as export_main
from swapstream.exporter.triton import CONFIG_FILE, triton_config, write_triton_model
from swapstream.exporter.triton import main as triton_main
from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import (
    MANIFEST_FILE,
    MODEL_FILE,
    ManifestError,
    file_sha256,
    load_manifest,
    new_manifest,
    write_manifest,
)

ONNX_TO_TRITON = {TensorProto.FLOAT: model_config_pb2.TYPE_FP32, TensorProto.UINT8: model_config_pb2.TYPE_UINT8}


def _model_folder(folder, size: int = 8, mask: bool = False, dtype: str = "float32", batch: int | None = None) -> str:
    """A real model folder: a small ONNX graph face -> swapped [, mask] plus its manifest."""
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.UINT8
    n = batch if batch is not None else "N"
    nodes = []
    if dtype == "uint8":
        nodes += [helper.make_node("Cast", ["face"], ["as_float"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["as_float", "scale"], ["unit"])]
        inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / 255.0])]
    else:
        nodes.append(helper.make_node("Identity", ["face"], ["unit"]))
        inits = []
    nodes.append(helper.make_node("Sigmoid", ["unit"], ["swapped"]))
    outputs = [helper.make_tensor_value_info("swapped", TensorProto.FLOAT, [n, size, size, 3])]
    if mask:
        nodes.append(helper.make_node("ReduceMean", ["swapped"], ["mask"], axes=[3], keepdims=1))
        outputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [n, size, size, 1]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("face", elem, [n, size, size, 3])],
                              outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    os.makedirs(folder)
    onnx.save_model(proto, os.path.join(folder, MODEL_FILE))
    manifest = new_manifest(str(folder), method="ae", direction="a2b", crop_size=size, crop_margin=0.2,
                            dtype=dtype, mask_output_name="mask" if mask else None, dynamic_batch=batch is None)
    write_manifest(str(folder), manifest)
    return str(folder)


def _parse(path: str) -> model_config_pb2.ModelConfig:
    with open(path, encoding="utf-8") as fh:
        return text_format.Parse(fh.read(), model_config_pb2.ModelConfig())


def _graph_io(onnx_path: str):
    """(name, Triton data type, dims with -1 for dynamic) of each graph input and output, read with onnx."""
    graph = onnx.load(onnx_path, load_external_data=False).graph

    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        return v.name, ONNX_TO_TRITON[v.type.tensor_type.elem_type], dims

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


def check_entry(entry_dir: str, model_dir: str, max_batch: int) -> model_config_pb2.ModelConfig:
    """Assert a written entry agrees with Triton's schema, the model folder's manifest and its graph."""
    name = os.path.basename(entry_dir)
    config = _parse(os.path.join(entry_dir, CONFIG_FILE))
    manifest = load_manifest(model_dir)
    batching = manifest.dynamic_batch
    assert config.name == name
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == (max_batch if batching else 0)
    assert config.HasField("dynamic_batching") == batching
    # Against the manifest.
    want_in = model_config_pb2.TYPE_FP32 if manifest.dtype == "float32" else model_config_pb2.TYPE_UINT8
    drop = 1 if batching else 0
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (manifest.input_name, want_in, [(-1 if d is None else d) for d in manifest.input_shape[drop:]])]
    assert config.output[0].name == manifest.output_name
    assert list(config.output[0].dims) == [(-1 if d is None else d) for d in manifest.output_shape[drop:]]
    assert [t.name for t in config.output[1:]] == ([manifest.mask_output_name] if manifest.mask_output_name else [])
    # Against the graph itself, as Triton's onnxruntime backend compares them when it loads the model.
    graph_in, graph_out = _graph_io(os.path.join(entry_dir, "1", MODEL_FILE))
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [(n, ty, d[drop:]) for n, ty, d in graph_in]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        (n, ty, d[drop:]) for n, ty, d in graph_out]
    if batching:
        assert all(d[0] == -1 for _, _, d in graph_in + graph_out)  # Triton needs a dynamic first dim to batch
    # The version folder is a complete swapstream model folder holding the very same graph.
    assert sorted(os.listdir(entry_dir)) == ["1", CONFIG_FILE]
    assert file_sha256(os.path.join(entry_dir, "1", MODEL_FILE)) == file_sha256(os.path.join(model_dir, MODEL_FILE))
    assert load_manifest(os.path.join(entry_dir, "1")) == manifest
    return config


@pytest.mark.parametrize("mask,dtype", [(False, "float32"), (True, "float32"), (True, "uint8")])
def test_entry_matches_schema_manifest_and_graph(tmp_path, mask, dtype):
    model = _model_folder(tmp_path / "m", mask=mask, dtype=dtype)
    repo = tmp_path / "repo"
    entry = write_triton_model(model, str(repo), max_batch=4)
    assert entry.folder == str(repo / "m") and entry.max_batch_size == 4
    config = check_entry(entry.folder, model, max_batch=4)
    assert config.input[0].format == model_config_pb2.ModelInput.FORMAT_NHWC
    assert os.listdir(repo) == ["m"]  # no staging folder left behind
    # The copy really takes several faces in one call, as dynamic batching will send them.
    x = np.random.default_rng(0).uniform(0, 1 if dtype == "float32" else 255, (3, 8, 8, 3))
    x = x.astype(np.float32 if dtype == "float32" else np.uint8)
    out = ort.InferenceSession(entry.model_path, providers=["CPUExecutionProvider"]).run(None, {"face": x})
    assert out[0].shape == (3, 8, 8, 3) and (len(out) == 2) == mask


def test_fixed_batch_graph_gets_no_batching(tmp_path):
    model = _model_folder(tmp_path / "fixed", batch=1, mask=True)
    entry = write_triton_model(model, str(tmp_path / "repo"))
    config = check_entry(entry.folder, model, max_batch=16)
    assert entry.max_batch_size == 0 and list(config.input[0].dims) == [1, 8, 8, 3]
    assert config.input[0].format == model_config_pb2.ModelInput.FORMAT_NONE  # NHWC format needs 3 dims


def test_config_text_alone_from_a_manifest(tmp_path):
    """triton_config needs only a manifest: names, the delay and odd characters are written as Triton reads them."""
    manifest = load_manifest(_model_folder(tmp_path / "m", size=16))
    config = text_format.Parse(triton_config(manifest, 'we"ird\\name', max_batch=2, max_queue_delay_us=500),
                               model_config_pb2.ModelConfig())
    assert config.name == 'we"ird\\name'
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.output[0].dims) == [16, 16, 3]
    with pytest.raises(InputError, match="max batch"):
        triton_config(manifest, "m", max_batch=0)
    with pytest.raises(InputError, match="control"):
        triton_config(manifest, "a\nb")


def test_refuses_bad_model_and_busy_destination(tmp_path):
    model = _model_folder(tmp_path / "m")
    repo = tmp_path / "repo"
    entry = write_triton_model(model, str(repo))
    first = os.path.getmtime(entry.config_path)
    with pytest.raises(InputError, match="not empty"):
        write_triton_model(model, str(repo))
    os.utime(entry.config_path, (first - 10, first - 10))
    write_triton_model(model, str(repo), force=True)  # replaced
    assert os.path.getmtime(entry.config_path) > first - 10
    assert sorted(os.listdir(repo)) == ["m"]

    with open(os.path.join(model, MODEL_FILE), "ab") as fh:  # the graph changed after export
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        write_triton_model(model, str(tmp_path / "repo2"))
    assert not os.path.exists(tmp_path / "repo2")

    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_triton_model(model, str(tmp_path / "file"))


def test_triton_command(tmp_path, capsys):
    model = _model_folder(tmp_path / "face_a2b", mask=True)
    repo = str(tmp_path / "repo")
    assert triton_main([model, "--repo", repo, "--max-batch", "8"]) == 0
    assert "face_a2b" in capsys.readouterr().out
    check_entry(os.path.join(repo, "face_a2b"), model, max_batch=8)
    assert triton_main([model, "--repo", repo]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("swapstream triton: error:") and "not empty" in err
    assert triton_main([str(tmp_path / "none"), "--repo", repo]) == 2
    assert triton_main([model, "--repo", repo, "--name", "x", "--max-batch", "0"]) == 2
    assert sorted(os.listdir(repo)) == ["face_a2b"]


def test_export_refuses_busy_triton_entry_before_loading_anything(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "ae_a2b").mkdir(parents=True)
    (repo / "ae_a2b" / "keep.txt").write_text("mine")
    out = tmp_path / "models" / "ae_a2b"
    assert export_main([str(tmp_path / "no_run"), "--out", str(out), "--triton", str(repo)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Triton entry" in err and "not empty" in err
    assert not out.exists() and os.listdir(repo / "ae_a2b") == ["keep.txt"]


@pytest.mark.slow
def test_export_writes_triton_entry_from_a_real_run(tmp_path):
    """`swapstream export RUN --out MODEL_DIR --triton REPO` on a tiny real `ae` run."""
    pytest.importorskip("keras")
    from swapstream.trainer.cli import main as train_main
    from tests.trainer_fixtures import make_pair

    a, b = make_pair(tmp_path, count=24, size=32)
    run = str(tmp_path / "run")
    assert train_main(["--method", "ae", "--a", a, "--b", b, "--out", run, "--preset", "tiny",
                       "--steps", "2", "--no-progress"]) == 0
    model = tmp_path / "models" / "ae_a2b"
    repo = tmp_path / "triton"
    assert export_main([run, "--out", str(model), "--triton", str(repo), "--triton-max-batch", "8"]) == 0
    assert os.listdir(repo) == ["ae_a2b"]
    check_entry(str(repo / "ae_a2b"), str(model), max_batch=8)
    assert os.path.isfile(repo / "ae_a2b" / "1" / MANIFEST_FILE)
    # Triton would run the same graph: same faces in, same faces out.
    x = np.random.default_rng(1).uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)
    got = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"face": x})[0]
           for p in (model / MODEL_FILE, repo / "ae_a2b" / "1" / MODEL_FILE)]
    np.testing.assert_array_equal(got[0], got[1])
