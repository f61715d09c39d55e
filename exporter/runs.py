"""What the exporter needs from a training run: the inference model and the facts around it.

The one place that speaks to the trainer's run API (trainer.runs.load_run), so a change there
touches only this module.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from faces.errors import InputError


@dataclass
class InferenceSource:
    """A float32 Functional inference model plus the manifest facts of its run."""

    model: object          # keras.Model: "face" (None,S,S,3) BGR 0..1 -> swapped face [, mask]
    method: str
    size: int
    margin: float
    real_faces: np.ndarray | None  # uint8 crops of the source identity, for the parity check
    note: str = ""


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
    from trainer.runs import load_run

    method = load_run(run_dir)
    config = method.config
    model = method.inference_model(direction)
    note = ""
    policy = getattr(config, "dtype_policy", "float32")
    if policy != "float32":
        from trainer.methods import build_method

        twin = build_method(method.method_name, dataclasses.replace(config, dtype_policy="float32"))
        model32 = twin.inference_model(direction)
        model32.set_weights(model.get_weights())
        model = model32
        note = f"note: the run trained with {policy}; exported its weights in a float32 graph"
    margin, faces = _run_data(run_dir, direction, config.size)
    return InferenceSource(model, method.method_name, int(config.size), margin, faces, note)


def _run_data(run_dir: str, direction: str, size: int) -> tuple[float, np.ndarray | None]:
    """(crop margin, source-identity crops or None) from RUN/config.yaml and its face sets."""
    import yaml

    path = os.path.join(run_dir, "config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"run {run_dir}: cannot read config.yaml ({exc})") from exc
    data = cfg.get("data", cfg) if isinstance(cfg, dict) else {}
    source_key = "a" if direction == "a2b" else "b"
    faces = None
    margin = data.get("margin", data.get("crop_margin"))
    set_path = data.get(source_key) or data.get(f"set_{source_key}")
    if isinstance(set_path, str) and os.path.isfile(set_path):
        from faces.faceset import load_faceset

        try:
            fs = load_faceset(set_path)
        except InputError:
            fs = None  # the parity check then uses random crops only
        if fs is not None:
            faces = fs.faces
            if margin is None:
                margin = fs.margin
    if margin is None:
        raise InputError(f"run {run_dir}: config.yaml records no crop margin (data.margin)")
    return float(margin), faces
