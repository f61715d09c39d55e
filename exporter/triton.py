"""A model folder as an NVIDIA Triton Inference Server model-repository entry.

    REPO/<name>/config.pbtxt        onnxruntime backend, dynamic batching, I/O from the manifest
    REPO/<name>/1/model.onnx        the exported graph, byte for byte (+ model.onnx.data if any)
    REPO/<name>/1/manifest.json     the manifest, so REPO/<name>/1 is also a swapstream model folder

A GPU fleet serves the graph with Triton while swapstream's pipeline does detection, alignment
and blending around it; the manifest beside the graph tells that pipeline the crop size, margin
and value range. Triton ignores files it does not know in a version folder.

Only the manifest, the graph's signature (read with onnxruntime) and the files are needed: no
TensorFlow, no onnx package, no tritonclient. `swapstream triton MODEL_DIR --repo REPO` (this
module's `main`) writes an entry for a model folder that already exists;
`swapstream export RUN --out MODEL_DIR --triton REPO` writes one right after the export.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

from swapstream.exporter.folder import discard_staging, make_staging_folder, move_into_place
from swapstream.faces.cliutil import EXIT_OK, ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    ManifestError,
    check_session_io,
    load_manifest,
    signature_session,
)

CONFIG_FILE = "config.pbtxt"
BACKEND = "onnxruntime"
# The server's own --max-batch default: the same number of faces per call either way.
DEFAULT_MAX_BATCH = 16
DEFAULT_VERSION = 1
# Manifest dtype -> Triton DataType (the output is always float32).
TRITON_TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8"}
ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(uint8)": "TYPE_UINT8", "tensor(float16)": "TYPE_FP16"}
EXTERNAL_DATA_FILE = MODEL_FILE + ".data"
PROG = "swapstream triton"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it: dims without the batch dimension when batching."""

    name: str
    data_type: str          # Triton DataType name, e.g. TYPE_FP32
    dims: tuple[int, ...]   # -1 for a dynamic dimension
    nhwc: bool = False      # an image tensor: written as format FORMAT_NHWC


@dataclass(frozen=True)
class TritonEntry:
    """What `write_triton_model` wrote."""

    name: str
    folder: str             # REPO/<name>
    config_path: str        # REPO/<name>/config.pbtxt
    model_path: str         # REPO/<name>/<version>/model.onnx
    max_batch_size: int     # 0 when the graph has a fixed batch (then no dynamic batching)


def triton_config(manifest: Manifest, name: str, max_batch: int = DEFAULT_MAX_BATCH,
                  mask_dims: tuple[int, ...] | None = None, max_queue_delay_us: int = 0) -> str:
    """The text of config.pbtxt for a model with this manifest.

    Input and output names, data types and dims come from the manifest; the optional mask
    output's dims (the manifest has only its name) from the graph, without the batch dimension
    (default S x S x 1). A graph with a dynamic batch gets `max_batch_size: max_batch` and
    dynamic batching (Triton packs queued requests into one call, waiting at most
    max_queue_delay_us); a graph with a fixed batch gets `max_batch_size: 0` and full dims,
    as Triton requires for a model that cannot batch.
    """
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise InputError(f"Triton max batch size must be an integer >= 1, got {max_batch!r}")
    if not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise InputError(f"Triton max queue delay must be an integer >= 0 microseconds, got {max_queue_delay_us!r}")
    if manifest.dtype not in TRITON_TYPES:
        raise ManifestError(f"model {name}: no Triton data type for input dtype {manifest.dtype!r}")
    batching = manifest.dynamic_batch
    in_shape, out_shape = tuple(manifest.input_shape), tuple(manifest.output_shape)
    if batching:
        in_dims, out_dims = in_shape[1:], out_shape[1:]
    else:
        in_dims, out_dims = in_shape, out_shape
    inputs = [TensorSpec(manifest.input_name, TRITON_TYPES[manifest.dtype], in_dims, nhwc=len(in_dims) == 3)]
    outputs = [TensorSpec(manifest.output_name, "TYPE_FP32", out_dims)]
    if manifest.mask_output_name:
        s = manifest.crop_size
        dims = tuple(mask_dims) if mask_dims is not None else ((s, s, 1) if batching else (out_shape[0], s, s, 1))
        outputs.append(TensorSpec(manifest.mask_output_name, "TYPE_FP32", dims))
    lines = [
        f"# Triton model configuration written by {manifest.producer} from {MANIFEST_FILE}:",
        f"# {manifest.method} {manifest.direction}, {manifest.precision} graph, {manifest.crop_size} px BGR crops "
        f"(margin {manifest.crop_margin:g}), input {manifest.dtype} in {manifest.value_range[0]:g}.."
        f"{manifest.value_range[1]:g}, output float32 in 0..1.",
        f"name: {_quote(name)}",
        f"backend: {_quote(BACKEND)}",
        f"max_batch_size: {max_batch if batching else 0}",
        *_tensors("input", inputs),
        *_tensors("output", outputs),
    ]
    if batching:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


def write_triton_model(model_dir: str, repo: str, name: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                       version: int = DEFAULT_VERSION, max_queue_delay_us: int = 0,
                       force: bool = False) -> TritonEntry:
    """Write REPO/<name>/config.pbtxt and REPO/<name>/<version>/{model.onnx, manifest.json} for MODEL_DIR.

    name defaults to the model folder's name. The model folder is validated first (manifest
    fields, the sha256 of model.onnx, the graph's I/O against the manifest), the copy is hashed
    again, and the entry is built in a hidden folder in REPO and renamed into place, so a failure
    leaves REPO as it was. An existing, non-empty REPO/<name> is replaced only with force.
    Raises InputError (ManifestError) naming what is wrong.
    """
    model_dir = os.path.abspath(model_dir)
    name = name or os.path.basename(os.path.normpath(model_dir))
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"Triton model version must be an integer >= 1, got {version!r}")
    check_triton_destination(repo, name, force)
    dest = os.path.join(os.path.abspath(repo), name)
    manifest = load_manifest(model_dir, check_io=False)  # fields and hash; the I/O check follows on a session
    mask_dims = _check_graph(manifest, os.path.join(model_dir, MODEL_FILE), name)
    text = triton_config(manifest, name, max_batch, mask_dims, max_queue_delay_us)

    tmp, created = make_staging_folder(dest)
    try:
        version_dir = os.path.join(tmp, str(version))
        os.makedirs(version_dir)
        for file in (MODEL_FILE, EXTERNAL_DATA_FILE, MANIFEST_FILE):
            src = os.path.join(model_dir, file)
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(version_dir, file))
                os.chmod(os.path.join(version_dir, file), 0o644)  # readable by a Triton running as another user
        load_manifest(version_dir, check_io=False)  # the copy hashes to what the manifest says
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(os.path.join(tmp, CONFIG_FILE), 0o644)
        os.chmod(version_dir, 0o755)
        move_into_place(tmp, dest)
    except BaseException:
        discard_staging(tmp, created)
        raise
    return TritonEntry(name=name, folder=dest, config_path=os.path.join(dest, CONFIG_FILE),
                       model_path=os.path.join(dest, str(version), MODEL_FILE),
                       max_batch_size=max_batch if manifest.dynamic_batch else 0)


def check_triton_destination(repo: str, name: str, force: bool) -> None:
    """InputError unless REPO is a folder (or absent) and REPO/<name> is absent, empty or (force) replaceable."""
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise InputError(f"Triton model name {name!r} is not a folder name")
    if os.path.exists(repo) and not os.path.isdir(repo):
        raise InputError(f"Triton repository {repo} exists and is not a folder")
    dest = os.path.join(repo, name)
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise InputError(f"Triton entry {dest} exists and is not a folder")
        if os.listdir(dest) and not force:
            raise InputError(f"Triton entry {dest} already exists and is not empty (use --force to replace it)")


def _check_graph(manifest: Manifest, onnx_path: str, name: str) -> tuple[int, ...] | None:
    """Check the graph's I/O against the manifest; return the mask output's dims (no batch) if it has one."""
    session = signature_session(onnx_path, name)
    check_session_io(manifest, session, name)
    if not manifest.mask_output_name:
        return None
    mask = next(o for o in session.get_outputs() if o.name == manifest.mask_output_name)
    if ORT_TO_TRITON.get(mask.type) != "TYPE_FP32":
        raise ManifestError(f"model {name}: mask output {mask.name!r} is {mask.type}, need float32")
    dims = tuple(d if isinstance(d, int) else -1 for d in mask.shape)
    if len(dims) != 4:
        raise ManifestError(f"model {name}: mask output {mask.name!r} has shape {mask.shape}; need NHWC rank 4")
    return dims[1:] if manifest.dynamic_batch else dims


def _tensors(kind: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(specs):
        lines += ["  {", f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}"]
        if t.nhwc:
            lines.append("    format: FORMAT_NHWC")
        lines += [f"    dims: [ {', '.join(str(d) for d in t.dims)} ]", "  }" + ("," if i < len(specs) - 1 else "")]
    lines.append("]")
    return lines


def _quote(text: str) -> str:
    """A protobuf text-format string literal (names come from a manifest: refuse what cannot be a tensor name)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"name {text!r} holds control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swapstream triton MODEL_DIR --repo REPO`; returns the exit code."""
    return run_cli(lambda: _run(argv), PROG)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Write a Triton Inference Server model-repository entry "
                       "(REPO/<name>/config.pbtxt + REPO/<name>/1/model.onnx) for an exported model folder.")
    p.add_argument("model", help="model folder (model.onnx + manifest.json, written by `swapstream export`)")
    p.add_argument("--repo", required=True, help="Triton model repository folder (created if absent)")
    p.add_argument("--name", help="model name in the repository (default: the model folder's name)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"Triton max_batch_size: faces per call (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--version", type=int, default=DEFAULT_VERSION, help="version folder (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty REPO/<name>")
    return p


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isdir(args.model):
        raise InputError(f"model folder {args.model} does not exist")
    entry = write_triton_model(args.model, args.repo, name=args.name, max_batch=args.max_batch,
                               version=args.version, force=args.force)
    print(f"wrote Triton entry {entry.folder} ({CONFIG_FILE}, {os.path.relpath(entry.model_path, entry.folder)}; "
          f"max_batch_size {entry.max_batch_size})")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
