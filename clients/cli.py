"""The `swapstream` command: one entry point, one subcommand per job.

Each subcommand lives in the package that owns it and exposes `main(argv) -> int`.
They are imported lazily so that `swapstream serve` or `swapstream stream` never
imports TensorFlow (a serving box does not have it).
"""
from __future__ import annotations

import importlib
import sys

# Explicit registry: subcommand -> (module, one-line help). No plugin discovery.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("swapstream.faces.synth_cli", "render a synthetic face video (and its ground-truth twin)"),
    "extract": ("swapstream.faces.extract", "extract a face set (.npz) from one or more videos"),
    "train": ("swapstream.trainer.cli", "train a face-swap method on two face sets"),
    "pretrain": ("swapstream.trainer.pretrain", "pretrain an encoder and one generic decoder on many face sets"),
    "compare": ("swapstream.trainer.compare", "train every method on the same faces and rate them"),
    "export": ("swapstream.exporter.cli", "export a training run to ONNX (model.onnx + manifest.json)"),
    "triton": ("swapstream.exporter.triton", "write a Triton model-repository entry for an exported model folder"),
    "serve": ("swapstream.server.cli", "serve exported models over gRPC"),
    "stream": ("swapstream.clients.stream", "stream a video file or webcam through the server"),
    "bench": ("swapstream.clients.bench", "measure swap latency and throughput"),
    "demo": ("swapstream.clients.demo", "the whole chain on synthetic faces (or --a/--b videos)"),
    "judge": ("swapstream.faces.judge_cli", "rate a swapped video with a face recognizer (dlib)"),
    "verify": ("swapstream.clients.verify", "is a video or image a swap? read its watermark and C2PA credential"),
}

USAGE = "usage: swapstream <command> [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()
) + "\n\nRun `swapstream <command> --help` for the options of one command."


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's `main(argv)`; exit codes: 0 ok, 2 bad usage/input, 1 other."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"swapstream: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
