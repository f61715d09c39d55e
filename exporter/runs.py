"""What the exporter needs from a training run: the inference model and the facts around it.

The one place that speaks to the trainer's run API (trainer.runs.load_run), so a change there
touches only this module.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from swapstream.faces.errors import InputError


@dataclass
class InferenceSource:
    """A float32 Functional inference model plus the manifest facts of its run."""

    model: object          # keras.Model: "face" (None,S,S,3) BGR 0..1 -> swapped face [, mask]
    method: str
    size: int
    margin: float
    real_faces: np.ndarray | None  # uint8 crops of the source identity, for the parity check
    note: str = ""
    output_size: int | None = None  # side of the returned face when it differs from `size` (2x head)
    template: object = None         # AlignTemplate of the face sets (None: Haar squares with `margin`)


def load_inference(run_dir: str, direction: str) -> InferenceSource:
    """Load RUN's latest checkpoint and build `direction`'s inference model.

    Raises InputError (exit 2) for a missing or half-written run, a checkpoint that does not
    match its config, or an unknown direction: trainer.runs.load_run raises those itself.
    Mixed-precision runs are exported through a float32 twin of the network carrying the
    same weights: onnxruntime has no bfloat16 convolutions on CPU, and the fp32 graph is the
    one parity is defined against (use --fp16 for a half-precision file).
    """
    if direction not in ("a2b", "b2a"):
        raise InputError(f"direction must be a2b or b2a, got {direction!r}")
    from swapstream.trainer.runs import load_run

    method = load_run(run_dir)
    config = method.config
    model, note = float32_inference_model(method, direction)
    data = method.run_config.data
    faces = _source_faces(run_dir, data.a if direction == "a2b" else data.b)
    in_size, out_size = method.run_config.io_sizes
    return InferenceSource(model, method.method_name, int(config.size), float(data.margin), faces, note,
                           output_size=out_size if out_size != in_size else None,
                           template=method.run_config.template)


def float32_inference_model(method, direction: str):
    """(inference model computing in float32, note). A mixed-precision method gets a float32
    twin of its network carrying the same weights (the variables are float32 either way)."""
    model = method.inference_model(direction)
    policy = getattr(method.config, "dtype_policy", "float32")
    if policy == "float32":
        return model, ""
    from swapstream.trainer.methods import build_method

    twin = build_method(method.method_name, dataclasses.replace(method.config, dtype_policy="float32"))
    model32 = twin.inference_model(direction)
    model32.set_weights(model.get_weights())
    return model32, f"note: the run trained with {policy}; its weights were exported in a float32 graph"


def _source_faces(run_dir: str, set_path: str) -> np.ndarray | None:
    """The source identity's crops for the parity check, or None when the face set is gone."""
    from swapstream.faces.faceset import load_faceset

    candidates = [set_path] if os.path.isabs(set_path) else [set_path, os.path.join(run_dir, set_path)]
    for path in candidates:
        if os.path.isfile(path):
            try:
                return load_faceset(path).faces
            except InputError:
                return None  # moved on since training: parity then uses random crops only
    return None
