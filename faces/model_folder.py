"""The model-folder contract between exporter and server: MODEL/model.onnx + MODEL/manifest.json.

A neutral module (no TensorFlow, no gRPC) that both sides import: the exporter writes model
folders with `new_manifest` + `write_manifest`, the server reads them with `load_manifest`.

The manifest says what the ONNX graph expects and how its faces were cut out in training, so
the server can crop, normalise and blend without knowing anything about Keras:

    {
      "format_version": 1,
      "method": "ae",                 # trainer method name
      "direction": "a2b",             # a2b | b2a
      "input_name": "face",
      "input_shape": [null, 64, 64, 3],   # NHWC, batch dim null = dynamic
      "output_name": "swapped",
      "output_shape": [null, 64, 64, 3],
      "dtype": "float32",             # input tensor dtype: float32 (0..1) or uint8 (0..255)
      "value_range": [0.0, 1.0],      # of the input; the output is always float32 in 0..1
      "colour_order": "BGR",
      "crop_size": 64,                # S, the side of the training crops
      "crop_margin": 0.2,             # margin used to cut the training crops (faces.crop)
      "producer": "swapstream 0.1.0",
      "onnx_sha256": "…",
      "precision": "fp32",            # fp32 | fp16 (graph internals; I/O stays as above)
      "created": "2026-11-27T03:40:00+00:00",
      "mask_output_name": null,       # optional second output: a face mask N x O x O x 1 in 0..1
      "align_template": {"size": 160, "eye_distance": 0.32, "eye_line": 0.39},   # optional
      "input_size": 64,               # optional: S again (present with output_size)
      "output_size": 128              # optional: O, the side of the output (default S)
    }

`align_template` present means the model was trained on landmark-aligned faces (faces/align.py):
the server aligns each face to that template (at `input_size` for the model's input; its output
at `output_size` is pasted back through the inverse warp) and blends with the template's face
mask. Without it the server cuts axis-aligned Haar squares with `crop_margin` (older models).

`load_manifest` refuses anything that does not add up, with a ManifestError saying what is
wrong: a missing or mistyped field, a hash that does not match model.onnx, or input/output
names, shapes and dtypes that differ from the graph. The I/O check uses onnxruntime (the
serving box has no `onnx` package).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from swapstream.faces.align import AlignTemplate
from swapstream.faces.errors import InputError
from swapstream.faces.files import write_text

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
DIRECTIONS = ("a2b", "b2a")
PRECISIONS = ("fp32", "fp16")
# input dtype -> (value range, onnxruntime type string)
DTYPES = {"float32": ((0.0, 1.0), "tensor(float)"), "uint8": ((0.0, 255.0), "tensor(uint8)")}
OUTPUT_ORT_TYPE = "tensor(float)"


class ManifestError(InputError):
    """A model folder's manifest is missing, malformed, or does not match its model.onnx."""


@dataclass(frozen=True)
class Manifest:
    """Everything the server needs to know about one exported model (see module docstring)."""

    method: str
    direction: str
    input_name: str
    input_shape: tuple[int | None, int, int, int]
    output_name: str
    output_shape: tuple[int | None, int, int, int]
    crop_size: int
    crop_margin: float
    onnx_sha256: str
    producer: str
    created: str
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    colour_order: str = "BGR"
    precision: str = "fp32"
    mask_output_name: str | None = None
    format_version: int = FORMAT_VERSION
    align_template: AlignTemplate | None = None
    input_size: int | None = None
    output_size: int | None = None

    @property
    def size(self) -> int:
        """Side S of the square face crops the model takes."""
        return self.crop_size

    @property
    def out_size(self) -> int:
        """Side of the faces the model returns (2 x S for a pixel-shuffle 2x head)."""
        return self.crop_size if self.output_size is None else self.output_size

    @property
    def aligned(self) -> bool:
        """True when the model expects landmark-aligned crops (see `align_template`)."""
        return self.align_template is not None

    @property
    def dynamic_batch(self) -> bool:
        """True when the graph accepts any number of faces in one call."""
        return self.input_shape[0] is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)  # align_template becomes {size, eye_distance, eye_line}
        for key in ("input_shape", "output_shape", "value_range"):
            d[key] = list(d[key])
        # Optional fields are left out when unset, so older readers' manifests stay as they were.
        for key in ("align_template", "input_size", "output_size"):
            if d[key] is None:
                del d[key]
        return d


def manifest_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 (hex) of a model folder's manifest.json: with the folder's name, the model's identity
    in watermarks and credentials."""
    return file_sha256(os.path.join(model_dir, MANIFEST_FILE))


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in chunks (models can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def producer_string() -> str:
    """'swapstream <version>' of the installed package."""
    try:
        from importlib.metadata import version

        return f"swapstream {version('swapstream')}"
    except Exception:  # running from a source tree that is not installed
        return "swapstream unknown"


def new_manifest(
    model_dir: str,
    *,
    method: str,
    direction: str,
    crop_size: int,
    crop_margin: float,
    input_name: str = "face",
    output_name: str = "swapped",
    precision: str = "fp32",
    dtype: str = "float32",
    mask_output_name: str | None = None,
    dynamic_batch: bool = True,
    output_size: int | None = None,
    align_template: AlignTemplate | None = None,
) -> Manifest:
    """Build a manifest for MODEL_DIR/model.onnx (already written): hash, producer, timestamp filled in.

    `output_size` (default: crop_size) is the side of the returned faces; when it is given,
    `input_size` and `output_size` are both recorded. `align_template`: the template the
    training faces were aligned to (None: Haar squares with `crop_margin`).
    """
    onnx_path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(onnx_path):
        raise ManifestError(f"{onnx_path} does not exist; write the model before its manifest")
    batch = None if dynamic_batch else 1
    size = int(crop_size)
    out = size if output_size is None else int(output_size)
    return Manifest(
        method=method, direction=direction, input_name=input_name, input_shape=(batch, size, size, 3),
        output_name=output_name, output_shape=(batch, out, out, 3), crop_size=size,
        crop_margin=float(crop_margin), onnx_sha256=file_sha256(onnx_path),
        producer=producer_string(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        dtype=dtype, value_range=DTYPES[dtype][0] if dtype in DTYPES else (0.0, 1.0),
        precision=precision, mask_output_name=mask_output_name, align_template=align_template,
        input_size=None if output_size is None else size, output_size=None if output_size is None else out,
    )


def write_manifest(model_dir: str, manifest: Manifest) -> str:
    """Validate the fields and write MODEL_DIR/manifest.json atomically; return its path."""
    _check_fields(manifest, model_dir)
    path = os.path.join(model_dir, MANIFEST_FILE)
    write_text(path, json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def load_manifest(model_dir: str, check_io: bool = True) -> Manifest:
    """Read and validate MODEL_DIR/manifest.json against MODEL_DIR/model.onnx.

    Checks the fields, the sha256 of model.onnx and (unless check_io=False, for callers that
    will check a session they create anyway with `check_session_io`) the graph's input/output
    names, shapes and dtypes. Raises ManifestError naming the model folder and the problem.
    """
    name = os.path.basename(os.path.normpath(model_dir))
    path = os.path.join(model_dir, MANIFEST_FILE)
    onnx_path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isdir(model_dir):
        raise ManifestError(f"model {name}: {model_dir} is not a folder")
    if not os.path.isfile(path):
        raise ManifestError(f"model {name}: no {MANIFEST_FILE} in {model_dir}")
    if not os.path.isfile(onnx_path):
        raise ManifestError(f"model {name}: no {MODEL_FILE} in {model_dir}")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"model {name}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc
    manifest = _from_dict(raw, name)
    _check_fields(manifest, name)
    actual = file_sha256(onnx_path)
    if actual != manifest.onnx_sha256:
        raise ManifestError(
            f"model {name}: sha256 of {MODEL_FILE} is {actual[:12]}…, manifest says "
            f"{manifest.onnx_sha256[:12]}…; the file was changed or truncated after export"
        )
    if check_io:
        check_session_io(manifest, signature_session(onnx_path, name), name)
    return manifest


def signature_session(onnx_path: str, name: str = "model") -> Any:
    """An onnxruntime CPU session of `onnx_path` for reading its inputs and outputs; ManifestError if it won't load."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Only the graph's signature is needed: skip optimisation so even a large graph loads fast.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ManifestError(f"model {name}: onnxruntime cannot load {MODEL_FILE}: {exc}") from exc


def check_session_io(manifest: Manifest, session: Any, name: str = "model") -> None:
    """Raise ManifestError unless an onnxruntime session's I/O matches the manifest."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if manifest.input_name not in inputs:
        raise ManifestError(
            f"model {name}: manifest input {manifest.input_name!r} is not in the graph "
            f"(graph inputs: {', '.join(inputs) or 'none'})")
    if len(inputs) != 1:
        raise ManifestError(f"model {name}: graph has {len(inputs)} inputs ({', '.join(inputs)}); need exactly 1")
    want_out = [manifest.output_name] + ([manifest.mask_output_name] if manifest.mask_output_name else [])
    for out in want_out:
        if out not in outputs:
            raise ManifestError(
                f"model {name}: manifest output {out!r} is not in the graph "
                f"(graph outputs: {', '.join(outputs) or 'none'})")
    inp, out = inputs[manifest.input_name], outputs[manifest.output_name]
    want_type = DTYPES[manifest.dtype][1]
    if inp.type != want_type:
        raise ManifestError(f"model {name}: graph input is {inp.type}, manifest says {manifest.dtype}")
    if out.type != OUTPUT_ORT_TYPE:
        raise ManifestError(f"model {name}: graph output is {out.type}, need float32")
    _check_shape(name, "input", inp.shape, manifest.input_shape)
    _check_shape(name, "output", out.shape, manifest.output_shape)


def _check_shape(name: str, what: str, graph_shape: list, declared: tuple) -> None:
    if len(graph_shape) != 4:
        raise ManifestError(f"model {name}: graph {what} has rank {len(graph_shape)} ({graph_shape}); need NHWC rank 4")
    # onnxruntime reports dynamic dims as a name string (or None).
    graph = [d if isinstance(d, int) else None for d in graph_shape]
    if graph[1:] != list(declared[1:]):
        raise ManifestError(
            f"model {name}: graph {what} shape is {graph_shape}, manifest says {list(declared)} "
            "(NHWC expected)")
    if declared[0] is None and graph[0] is not None:
        raise ManifestError(
            f"model {name}: manifest says the {what} batch dimension is dynamic but the graph fixes it to {graph[0]}")
    if declared[0] is not None and graph[0] not in (None, declared[0]):
        raise ManifestError(f"model {name}: graph {what} batch is {graph[0]}, manifest says {declared[0]}")


def _from_dict(raw: Any, name: str) -> Manifest:
    if not isinstance(raw, dict):
        raise ManifestError(f"model {name}: {MANIFEST_FILE} must hold a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"model {name}: manifest format_version is {version!r}; this server reads version {FORMAT_VERSION}")
    known = {f.name for f in fields(Manifest)}
    required = {f.name for f in fields(Manifest) if f.default is MISSING}
    missing = sorted(required - raw.keys())
    if missing:
        raise ManifestError(f"model {name}: manifest lacks field(s) {', '.join(missing)}")
    unknown = sorted(raw.keys() - known)
    if unknown:
        raise ManifestError(f"model {name}: manifest has unknown field(s) {', '.join(unknown)}")
    values = dict(raw)
    try:
        for key in ("input_shape", "output_shape"):
            shape = values[key]
            if not isinstance(shape, list) or len(shape) != 4:
                raise ManifestError(f"model {name}: {key} must be a list of 4 (NHWC), got {shape!r}")
            values[key] = tuple(None if d is None else _int(d, key, name) for d in shape)
        if "value_range" in values:
            vr = values["value_range"]
            if not isinstance(vr, list) or len(vr) != 2:
                raise ManifestError(f"model {name}: value_range must be [low, high], got {vr!r}")
            values["value_range"] = (float(vr[0]), float(vr[1]))
        values["crop_size"] = _int(values["crop_size"], "crop_size", name)
        if isinstance(values["crop_margin"], bool) or not isinstance(values["crop_margin"], (int, float)):
            raise ManifestError(f"model {name}: crop_margin must be a number, got {values['crop_margin']!r}")
        values["crop_margin"] = float(values["crop_margin"])
        for key in ("input_size", "output_size"):
            if values.get(key) is not None:
                values[key] = _int(values[key], key, name)
        if values.get("align_template") is not None:
            values["align_template"] = _template(values["align_template"], name)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"model {name}: malformed manifest ({exc})") from exc
    return Manifest(**values)


def _template(raw: Any, name: str) -> AlignTemplate:
    keys = ("size", "eye_distance", "eye_line")
    if not isinstance(raw, dict) or sorted(raw) != sorted(keys):
        raise ManifestError(f"model {name}: align_template must be {{size, eye_distance, eye_line}}, got {raw!r}")
    size = _int(raw["size"], "align_template.size", name)
    for key in keys[1:]:
        if isinstance(raw[key], bool) or not isinstance(raw[key], (int, float)):
            raise ManifestError(f"model {name}: align_template.{key} must be a number, got {raw[key]!r}")
    try:
        return AlignTemplate(size=size, eye_distance=float(raw["eye_distance"]), eye_line=float(raw["eye_line"]))
    except ValueError as exc:
        raise ManifestError(f"model {name}: align_template: {exc}") from None


def _int(value: Any, key: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"model {name}: {key} must hold integers, got {value!r}")
    return value


def _check_fields(m: Manifest, name: str) -> None:
    """Field-level consistency, shared by write (catch exporter bugs early) and load."""
    def bad(msg: str) -> None:
        raise ManifestError(f"model {name}: {msg}")

    for key in ("method", "input_name", "output_name", "onnx_sha256", "producer", "created"):
        if not isinstance(getattr(m, key), str) or not getattr(m, key):
            bad(f"{key} must be a non-empty string")
    if m.format_version != FORMAT_VERSION:
        bad(f"format_version must be {FORMAT_VERSION}")
    if m.direction not in DIRECTIONS:
        bad(f"direction must be one of {', '.join(DIRECTIONS)}, got {m.direction!r}")
    if m.precision not in PRECISIONS:
        bad(f"precision must be one of {', '.join(PRECISIONS)}, got {m.precision!r}")
    if m.dtype not in DTYPES:
        bad(f"dtype must be one of {', '.join(DTYPES)}, got {m.dtype!r}")
    if tuple(m.value_range) != DTYPES[m.dtype][0]:
        bad(f"value_range for {m.dtype} input must be {list(DTYPES[m.dtype][0])}, got {list(m.value_range)}")
    if m.colour_order != "BGR":
        bad(f"colour_order must be 'BGR', got {m.colour_order!r}")
    if len(m.onnx_sha256) != 64 or any(c not in "0123456789abcdef" for c in m.onnx_sha256):
        bad("onnx_sha256 must be 64 lowercase hex digits")
    if not isinstance(m.crop_size, int) or m.crop_size < 8:
        bad(f"crop_size must be an integer >= 8, got {m.crop_size!r}")
    if not 0.0 <= m.crop_margin <= 2.0:
        bad(f"crop_margin must be in 0..2, got {m.crop_margin}")
    if (m.input_size is None) != (m.output_size is None):
        bad("input_size and output_size go together")
    if m.input_size is not None and m.input_size != m.crop_size:
        bad(f"input_size ({m.input_size}) must equal crop_size ({m.crop_size})")
    if m.output_size is not None and (not isinstance(m.output_size, int) or m.output_size < 8):
        bad(f"output_size must be an integer >= 8, got {m.output_size!r}")
    if m.align_template is not None and not isinstance(m.align_template, AlignTemplate):
        bad("align_template must be {size, eye_distance, eye_line}")
    for key, side in (("input_shape", m.crop_size), ("output_shape", m.out_size)):
        shape = tuple(getattr(m, key))
        if len(shape) != 4 or shape[1:] != (side, side, 3):
            bad(f"{key} must be [batch, {side}, {side}, 3] (NHWC), got {list(shape)}")
        if shape[0] is not None and shape[0] < 1:
            bad(f"{key} batch dimension must be null (dynamic) or >= 1")
    if m.input_shape[0] != m.output_shape[0]:
        bad("input and output batch dimensions differ")
    if m.mask_output_name is not None and (not isinstance(m.mask_output_name, str) or not m.mask_output_name):
        bad("mask_output_name must be null or a non-empty string")
