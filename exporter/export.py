"""Write a model folder (model.onnx + manifest.json [+ NAME.dfm]) from a Keras inference model.

Everything is written into a hidden temporary folder beside the destination and renamed into
place only after the parity checks passed and the manifest validated, so a failed export
leaves nothing behind (and never half-replaces an existing model folder).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from swapstream.exporter.convert import DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD, INPUT_NAME, OUTPUT_NAMES, convert_keras
from swapstream.exporter.folder import check_destination, discard_staging, make_staging_folder, move_into_place
from swapstream.exporter.parity import TOLERANCE, ParityResult, compare, keras_outputs, onnx_outputs, parity_faces
from swapstream.faces.align import AlignTemplate
from swapstream.faces.model_folder import MODEL_FILE, load_manifest, new_manifest, producer_string, write_manifest

EXTERNAL_DATA_FILE = MODEL_FILE + ".data"


class ParityError(RuntimeError):
    """onnxruntime's output differs from Keras' beyond the tolerance; nothing was written."""

    def __init__(self, results: list[ParityResult]):
        self.results = results
        super().__init__("; ".join(r.line() for r in results if not r.ok))


@dataclass(frozen=True)
class ExportSpec:
    """What to export and the facts that go into the manifest and the ONNX metadata."""

    method: str
    direction: str
    crop_size: int
    crop_margin: float
    fp16: bool = False
    dfm: bool = False
    device: str = "cpu"          # onnxruntime device for the parity check: auto | cpu | cuda
    opset: int = DEFAULT_OPSET
    real_faces: np.ndarray | None = field(default=None, repr=False)  # uint8 NxSxSx3 BGR crops
    output_size: int | None = None     # side of the returned faces when it differs from crop_size (2x head)
    align_template: AlignTemplate | None = None  # the face sets' template (None: Haar squares, crop_margin)

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"


@dataclass
class ExportResult:
    """Where the model went, the parity figures and how long each stage took (seconds)."""

    model_dir: str
    parity: list[ParityResult]
    timings: dict[str, float]
    dfm_path: str | None = None


def export_model(model, out_dir: str, spec: ExportSpec, force: bool = False,
                 log: Callable[[str], None] | None = None) -> ExportResult:
    """Convert `model` (Functional Keras: "face" -> swapped face [, mask]) into `out_dir`.

    Raises InputError for an unusable destination, ParityError when onnxruntime disagrees
    with Keras beyond the tolerance (fp32 1e-4, fp16 1e-2); in every failure case the
    destination is left as it was.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = os.path.abspath(out_dir)
    check_destination(out_dir, force)
    tmp, created = make_staging_folder(out_dir)
    try:
        result = _export_into(model, tmp, spec, os.path.basename(out_dir), log)
        move_into_place(tmp, out_dir)
    except BaseException:
        discard_staging(tmp, created)
        raise
    result.model_dir = out_dir
    if result.dfm_path:
        result.dfm_path = os.path.join(out_dir, os.path.basename(result.dfm_path))
    return result


def _export_into(model, folder: str, spec: ExportSpec, name: str, log) -> ExportResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    proto = convert_keras(model, opset=spec.opset)
    timings["convert"] = time.perf_counter() - t0
    if spec.fp16:
        from swapstream.exporter.fp16 import to_fp16

        t = time.perf_counter()
        proto = to_fp16(proto)
        timings["fp16"] = time.perf_counter() - t
    has_mask = len(proto.graph.output) > 1
    set_metadata(proto, spec)
    t = time.perf_counter()
    onnx_path = os.path.join(folder, MODEL_FILE)
    save_model(proto, onnx_path)
    dfm_path = None
    if spec.dfm:
        from swapstream.exporter.dfm import make_dfm

        # Rewired in place after model.onnx is on disk: never two copies of the weights in memory.
        make_dfm(proto, spec.crop_size, spec.output_size)
        dfm_path = os.path.join(folder, f"{name}.dfm")
        save_model(proto, dfm_path, external_name=f"{name}.dfm.data")
    del proto  # the parity sessions read the files
    timings["save"] = time.perf_counter() - t

    t = time.perf_counter()
    faces, n_real = parity_faces(spec.crop_size, spec.real_faces)
    reference = keras_outputs(model, faces)
    timings["keras_reference"] = time.perf_counter() - t
    t = time.perf_counter()
    results = [_check_model(onnx_path, spec, faces, n_real, reference)]
    if dfm_path:
        results.append(_check_dfm(dfm_path, spec, faces, n_real, reference, has_mask))
    timings["parity"] = time.perf_counter() - t
    for r in results:
        log(r.line())
    if not all(r.ok for r in results):
        raise ParityError(results)

    manifest = new_manifest(
        folder, method=spec.method, direction=spec.direction, crop_size=spec.crop_size,
        crop_margin=spec.crop_margin, input_name=INPUT_NAME, output_name=OUTPUT_NAMES[0],
        precision=spec.precision, mask_output_name=OUTPUT_NAMES[1] if has_mask else None,
        output_size=spec.output_size, align_template=spec.align_template)
    write_manifest(folder, manifest)
    load_manifest(folder)  # the server's own validation, before anything becomes visible
    timings["total"] = time.perf_counter() - t0
    return ExportResult(folder, results, timings, dfm_path)


def set_metadata(proto: onnx.ModelProto, spec: ExportSpec) -> None:
    """Record the manifest's facts inside the ONNX file too (metadata_props)."""
    producer = producer_string()
    proto.producer_name, _, version = producer.partition(" ")
    proto.producer_version = version
    facts = {
        "swapstream.method": spec.method,
        "swapstream.direction": spec.direction,
        "swapstream.crop_size": str(spec.crop_size),
        "swapstream.crop_margin": repr(float(spec.crop_margin)),
        "swapstream.colour_order": "BGR",
        "swapstream.value_range": "0..1",
        "swapstream.layout": "NHWC",
        "swapstream.precision": spec.precision,
        "swapstream.producer": producer,
    }
    if spec.output_size is not None:
        facts["swapstream.output_size"] = str(spec.output_size)
    if spec.align_template is not None:
        t = spec.align_template
        facts["swapstream.align_template"] = f"size={t.size} eye_distance={t.eye_distance!r} eye_line={t.eye_line!r}"
    del proto.metadata_props[:]
    for key, value in facts.items():
        proto.metadata_props.add(key=key, value=value)


def save_model(proto: onnx.ModelProto, path: str, external_name: str | None = None) -> None:
    """Save an ONNX model; weights beyond protobuf's 2 GiB limit go to a `.data` file beside it."""
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    if weight_bytes > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external_name or os.path.basename(path) + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, path)


def _check_model(path: str, spec: ExportSpec, faces, n_real, reference) -> ParityResult:
    from swapstream.server.session import make_session

    session, provider = make_session(path, spec.device)
    names = [o.name for o in session.get_outputs()]
    actual = onnx_outputs(session, INPUT_NAME, names, faces, batch=8)
    return compare(f"{MODEL_FILE} {spec.precision}", reference, actual, TOLERANCE[spec.precision],
                   provider, n_real)


def _check_dfm(path: str, spec: ExportSpec, faces, n_real, reference, has_mask: bool) -> ParityResult:
    """Parity of the face output plus DeepFaceLive's contract: names, shapes, mask range."""
    from swapstream.exporter.dfm import DFM_CELEB_FACE, DFM_CELEB_MASK, DFM_FACE_MASK, DFM_INPUT, DFM_OUTPUTS
    from swapstream.server.session import make_session

    session, provider = make_session(path, spec.device)
    got_in = [(i.name, i.shape) for i in session.get_inputs()]
    s = spec.output_size or spec.crop_size
    if s != spec.crop_size:
        # A 2x model's .dfm averages each 2x2 block of in_face: blocks of the crops give the crops back.
        k = s // spec.crop_size
        faces = np.repeat(np.repeat(faces, k, axis=1), k, axis=2)
    if got_in != [(DFM_INPUT, [1, s, s, 3])] or [o.name for o in session.get_outputs()] != list(DFM_OUTPUTS):
        raise RuntimeError(f"dfm graph has I/O {got_in} -> {[o.name for o in session.get_outputs()]}")
    face_mask, celeb, celeb_mask = onnx_outputs(
        session, DFM_INPUT, [DFM_FACE_MASK, DFM_CELEB_FACE, DFM_CELEB_MASK], faces, batch=1)
    for label, mask in ((DFM_FACE_MASK, face_mask), (DFM_CELEB_MASK, celeb_mask)):
        if mask.shape != (len(faces), s, s, 1) or mask.min() < 0.0 or mask.max() > 1.0:
            raise RuntimeError(f"dfm {label}: shape {mask.shape}, range {mask.min()}..{mask.max()}")
    want = [np.clip(reference[0], 0.0, 1.0)] + ([reference[1]] if has_mask else [])
    got = [celeb] + ([celeb_mask] if has_mask else [])
    return compare(f"{os.path.basename(path)} {spec.precision}", want, got, TOLERANCE[spec.precision],
                   provider, n_real)
