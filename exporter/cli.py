"""`swapstream export RUN --out MODEL_DIR [--direction a2b|b2a] [--fp16] [--dfm] [--device auto|cpu|cuda]
[--triton REPO [--triton-max-batch N]]`.

Loads a training run (trainer.runs.load_run), takes its inference model for one direction,
converts it to ONNX, checks parity against Keras, and writes MODEL_DIR/model.onnx +
manifest.json (+ MODEL_DIR/<name>.dfm with --dfm; + a Triton model-repository entry
REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx with --triton, exporter.triton). Exit
codes: 0 ok, 2 bad input (missing or half-written run, unknown direction, checkpoint that does
not match its config, unusable --out or --triton), 1 anything else (parity failure: the figures
are printed, nothing is written).
"""
from __future__ import annotations

import os
import sys

# TensorFlow's C++ start-up chatter is noise on a CLI; set before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from swapstream.exporter.folder import check_destination  # noqa: E402
from swapstream.exporter.triton import DEFAULT_MAX_BATCH, check_triton_destination, write_triton_model  # noqa: E402
from swapstream.faces.cliutil import EXIT_ERROR, EXIT_OK, ArgumentParser, run_cli  # noqa: E402
from swapstream.faces.errors import InputError  # noqa: E402

PROG = "swapstream export"
DEVICES = ("auto", "cpu", "cuda")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swapstream export`; returns the exit code."""
    return run_cli(lambda: _run(argv), PROG)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Export a training run to ONNX (model.onnx + manifest.json).")
    p.add_argument("run", help="training run folder (written by `swapstream train`)")
    p.add_argument("--out", required=True, help="model folder to write (its name is the model's name)")
    p.add_argument("--direction", default="a2b", choices=("a2b", "b2a"),
                   help="a2b: faces of A come out as B (default); b2a the other way")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute inside; I/O stays float32")
    p.add_argument("--dfm", action="store_true", help="also write a DeepFaceLive-compatible MODEL_DIR/<name>.dfm")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="onnxruntime device for the parity check (default cpu)")
    p.add_argument("--triton", metavar="REPO",
                   help="also write a Triton Inference Server model-repository entry: "
                        "REPO/<name>/config.pbtxt + REPO/<name>/1/model.onnx (<name>: the --out folder's name)")
    p.add_argument("--triton-max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"max_batch_size of the Triton entry (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--force", action="store_true",
                   help="replace an existing, non-empty --out folder (and REPO/<name> with --triton)")
    return p


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = os.path.abspath(args.out)
    check_destination(out, args.force)  # cheap checks before TensorFlow loads
    if args.triton is not None:
        check_triton_destination(args.triton, os.path.basename(out), args.force)
        if args.triton_max_batch < 1:
            raise InputError(f"--triton-max-batch must be >= 1, got {args.triton_max_batch}")
    if not os.path.isdir(args.run):
        raise InputError(f"run folder {args.run} does not exist")

    from swapstream.trainer.tf_quiet import import_tensorflow

    import_tensorflow()  # before the exporter's modules load it with its start-up lines
    from swapstream.exporter.convert import ConversionError
    from swapstream.exporter.export import ExportSpec, ParityError, export_model
    from swapstream.exporter.runs import load_inference
    from swapstream.server.session import SessionError

    source = load_inference(args.run, args.direction)
    spec = ExportSpec(method=source.method, direction=args.direction, crop_size=source.size,
                      crop_margin=source.margin, fp16=args.fp16, dfm=args.dfm, device=args.device,
                      real_faces=source.real_faces, output_size=source.output_size,
                      align_template=source.template)
    try:
        result = export_model(source.model, args.out, spec, force=args.force,
                              log=lambda msg: print(msg, file=sys.stderr))
    except ParityError as exc:
        print(f"{PROG}: parity check failed, nothing written:", file=sys.stderr)
        for r in exc.results:
            print(f"  {r.line()}", file=sys.stderr)
        return EXIT_ERROR
    except SessionError as exc:
        raise InputError(str(exc)) from exc
    except ConversionError as exc:
        print(f"{PROG}: cannot convert {source.method} {args.direction}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    t = result.timings
    print(f"exported {source.method} {args.direction} ({spec.precision}, {source.size} px) to "
          f"{result.model_dir} in {t['total']:.1f} s (convert {t['convert']:.1f} s)"
          + (f"; dfm: {result.dfm_path}" if result.dfm_path else ""))
    if args.triton is not None:
        entry = write_triton_model(result.model_dir, args.triton, max_batch=args.triton_max_batch, force=args.force)
        print(f"Triton entry: {entry.folder} (max_batch_size {entry.max_batch_size})")
    if source.note:
        print(source.note)
    return EXIT_OK
