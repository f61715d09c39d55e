"""Do both identities share one code for pose and expression? Linear probes on a run's codes.

    .venv/bin/python bench/code_alignment.py RUN A.npz B.npz [--json OUT.json]

A.npz and B.npz are synthetic face sets (`swapstream synth` then `extract`), which carry each
face's pose parameters. For every parameter (mouth_open, smile, blink, yaw, ...) a ridge
regression from the encoder's code to the parameter is fitted on B's faces and applied to A's:
the correlation with A's true values says whether decoder B will read A's code the way it reads
B's own ("transfer r"). Near +1: shared code, the swap can follow A. Near 0: A's code means
nothing to decoder B. Near -1: the code runs the opposite way for A. "within-A r" is the same probe fitted on
one half of A and tested on the other: how well the code holds the parameter at all.

Methods with a shared encoder: `ae` (its dense code), `vae`, `conv-vae`, `vae-gan` (the mean).
"""
from __future__ import annotations

import json
import sys

import numpy as np

from swapstream.faces.faceset import resize_faces
from swapstream.faces.files import write_text
from swapstream.trainer.evaluate import code_alignment

if __package__:  # python -m bench.code_alignment
    from bench import synthetic_pair
else:  # python bench/code_alignment.py: this folder is sys.path[0]
    import synthetic_pair


def codes_of(method, faces: np.ndarray) -> np.ndarray:
    """The encoder's code vector of each face (uint8 crops at the method's size)."""
    import keras

    x = faces.astype(np.float32) / 255.0
    if method.method_name == "ae":
        encoder = method.encoder
        net = keras.Model(encoder.input, encoder.get_layer("latent").output)
        return np.asarray(net.predict(x, batch_size=64, verbose=0))
    if method.method_name in ("vae", "conv-vae", "vae-gan"):
        mu, _ = method.encoder.predict(x, batch_size=64, verbose=0)
        return np.asarray(mu).reshape(len(x), -1)
    raise SystemExit(f"{method.method_name} has no shared encoder to probe")


def main() -> int:
    args = synthetic_pair.arguments(__doc__).parse_args()
    method, sets = synthetic_pair.load(args)
    size = method.config.size
    names = [str(n) for n in sets[0].extra["pose_names"]]
    codes = [codes_of(method, resize_faces(fs.faces, size)) for fs in sets]
    poses = [fs.extra["pose"].astype(np.float64) for fs in sets]
    table = code_alignment(codes[0], poses[0], codes[1], poses[1], names)
    print(f"{args.run} ({method.method_name}, step {method.step}): {len(codes[0])} faces of A, {len(codes[1])} of B")
    print(f"{'parameter':<12} {'transfer r':>10} {'within-A r':>10}")
    for name, row in table.items():
        print(f"{name:<12} {row['transfer_r']:>10.2f} {row['within_a_r']:>10.2f}")
    if args.json:
        write_text(args.json, json.dumps({"run": args.run, "step": method.step, "probes": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
