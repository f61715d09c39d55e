"""Does a run draw A's expression? The comparison's pose judge read on its outputs.

    .venv/bin/python bench/expression_carried.py RUN A.npz B.npz [--png OUT.png] [--json OUT.json]

A.npz and B.npz are synthetic face sets (`swapstream synth` then `extract`), which carry each
face's pose. The identity-blind pose judge of `swapstream compare` (trainer.evaluate
`train_pose_regressor`, trained on renders of A's and B's poses worn by A, B and two strangers)
reads every expression and head-pose parameter from A's faces, from A's faces through A's own
decoder (A->A: the `b2a` model on A's faces for the shared-encoder methods, the A->B->A cycle for
CycleGAN) and from the swaps (A->B). Printed per parameter: the correlation of the judge's
reading with A's true values. Near 1: the output shows A's value (the judge itself sets the
ceiling, the "input" column); near 0: the output ignores it (a network that draws one mean eye
whatever A does scores about 0 for blink). Unlike `bench/code_alignment.py`, which probes the
code, this judges the pictures, so it works for all five methods. It reads every face of
A.npz: give it faces the run never trained on (`swapstream compare` judges its held-out split)
to tell what the network learned from what it remembers.
The PNG shows the faces of A with the eyes most closed and the mouth most open, with A->A and
A->B outputs beside each.
"""
from __future__ import annotations

import json

import numpy as np

from swapstream.faces.faceset import resize_faces
from swapstream.faces.files import write_png, write_text
from swapstream.trainer import evaluate as ev

if __package__:  # python -m bench.expression_carried
    from bench import synthetic_pair
else:  # python bench/expression_carried.py: this folder is sys.path[0]
    import synthetic_pair


def outputs_of(method, faces: np.ndarray) -> dict[str, np.ndarray]:
    """A->B swaps and A->A reconstructions (float 0..1) of A's faces."""
    def run(direction, x):
        return np.asarray(method.inference_model(direction).predict(x, batch_size=64, verbose=0))

    to_b = run("a2b", faces)
    # Shared-encoder methods swap by decoder choice alone, so `b2a` on A's faces is A's own
    # decoder on A's code; CycleGAN has no such thing and goes round its cycle.
    to_a = run("b2a", to_b if method.method_name == "cyclegan" else faces)
    return {"A->A": to_a, "A->B": to_b}


def write_sheet(path: str, columns: list[np.ndarray], picks: list[int], tile: int = 128) -> None:
    """Rows = picked faces; columns = input, A->A, A->B (BGR crops, as cv2 writes them)."""
    import cv2

    rows = [np.hstack([cv2.resize((c[i] * 255).clip(0, 255).astype(np.uint8), (tile, tile),
                                  interpolation=cv2.INTER_NEAREST) for c in columns]) for i in picks]
    write_png(path, np.vstack(rows))


def main() -> int:
    parser = synthetic_pair.arguments(__doc__)
    parser.add_argument("--png", help="write the most closed-eyed and open-mouthed faces with their outputs here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the judge (default 0)")
    args = parser.parse_args()
    method, sets = synthetic_pair.load(args)
    size = method.config.size
    ids = [ev.identity_of(sets[0]), ev.identity_of(sets[1]), *ev.EXTRA_JUDGE_IDENTITIES[:2]]
    judge = ev.train_pose_regressor(sets, ids, size=size, seed=args.seed)
    true = ev.pose_columns(sets[0], judge.names)
    x = resize_faces(sets[0].faces, size).astype(np.float32) / 255.0
    images = {"input": x, **outputs_of(method, x)}
    read = {k: judge.predict(v) for k, v in images.items()}
    table = {name: {k: round(ev.correlation(read[k][:, i], true[:, i]), 3) for k in images}
             for i, name in enumerate(judge.names)}
    print(f"{args.run} ({method.method_name}): {len(x)} faces of A; judge trained on {judge.n_train} faces"
          " (in-sample for the input column)")
    print(f"{'r with A':12s}" + "".join(f"{k:>8s}" for k in images))
    for name, row in table.items():
        print(f"{name:12s}" + "".join(f"{v:8.2f}" for v in row.values()))
    if args.png:
        cols = list(judge.names)
        picks = [*np.argsort(-true[:, cols.index("blink")])[:3], *np.argsort(-true[:, cols.index("mouth_open")])[:2]]
        write_sheet(args.png, list(images.values()), picks)
    if args.json:
        write_text(args.json, json.dumps({"run": args.run, "method": method.method_name, "faces": len(x), "r": table},
                                         indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
