"""What bench/code_alignment.py and bench/expression_carried.py share: a training run and two synthetic face sets."""
from __future__ import annotations

import argparse

from swapstream.faces.faceset import FaceSet, load_faceset


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser taking RUN A.npz B.npz and --json, described by the first paragraph of `doc`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--json", help="write the table as JSON here too")
    return parser


def load(args: argparse.Namespace) -> tuple[object, list[FaceSet]]:
    """The run's method and the face sets A and B; SystemExit unless both carry their render parameters."""
    from swapstream.trainer import evaluate as ev
    from swapstream.trainer.runs import load_run

    method = load_run(args.run)
    sets = [load_faceset(p) for p in (args.a, args.b)]
    for path, fs in zip((args.a, args.b), sets):
        if not ev.is_synthetic(fs):
            raise SystemExit(f"{path} carries no pose parameters (not a synthetic face set)")
    return method, sets
