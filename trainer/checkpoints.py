"""Checkpoints of a run: weights and optimizer state, written atomically, last K kept.

Layout under RUN/checkpoints/:
    ckpt-00000500.weights.h5   Keras weights file: every network, every optimizer's slots and
                               iteration counter, the sampling seed state
    index.json                 {"checkpoints": [meta, ...]} oldest first; meta = step, file, bytes,
                               sha256, method, fingerprint (hash of the networks' weight shapes), time
A weights file is first written under a temporary name and renamed when complete; the index is
rewritten (atomically) only after that, so the index never names a half-written file. Loading
checks method, fingerprint, size and sha256 before touching the model, so a truncated file or one
from another method or config is refused with an InputError and nothing is modified.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from swapstream.faces.errors import InputError
from swapstream.faces.files import TMP_PREFIX, atomic_path, write_json
from swapstream.faces.model_folder import file_sha256

CHECKPOINT_DIR = "checkpoints"
INDEX_FILE = "index.json"


class TrainingDiverged(InputError):
    """A loss or weight became NaN/inf: training stops and the last good checkpoint is kept."""


def weights_fingerprint(method) -> str:
    """Hash of every network weight's shape, in order: equal iff a checkpoint's weights fit.

    Shapes, not layer names: Keras numbers auto-generated names per process.
    """
    shapes = [f"{name}:" + ";".join(f"{tuple(w.shape)}" for w in net.weights)
              for name, net in method.networks().items()]
    return hashlib.sha256("|".join(shapes).encode()).hexdigest()[:16]


def weights_finite(method) -> bool:
    """True if every floating-point variable (networks and optimizer slots) is finite."""
    for v in method.variables:
        value = np.asarray(v.numpy())
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return False
    return True


def read_index(run_dir: str) -> list[dict]:
    """Checkpoint metadata, oldest first ([] when the run has none yet)."""
    path = os.path.join(run_dir, CHECKPOINT_DIR, INDEX_FILE)
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding="utf-8") as fh:
            entries = json.load(fh)["checkpoints"]
        for e in entries:
            for key in ("step", "file", "bytes", "sha256", "method", "fingerprint"):
                e[key]  # noqa: B018 - presence check
        return entries
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"checkpoint index {path} is damaged ({type(exc).__name__}: {exc})") from exc


def save_checkpoint(method, run_dir: str, keep: int, chief: bool = True) -> dict | None:
    """Save the method's weights and optimizer state at its current step; return the metadata.

    Raises TrainingDiverged (and saves nothing) if any weight is not finite. Non-chief workers of
    a multi-worker run must save too (collective reads of mirrored state), into a scratch folder
    that is deleted at once; they return None.
    """
    if not weights_finite(method):
        raise TrainingDiverged(f"weights became NaN/inf by step {method.step}; not checkpointed")
    step = method.step
    name = f"ckpt-{step:08d}.weights.h5"
    if not chief:
        scratch = tempfile.mkdtemp(prefix="swapstream-worker-ckpt-")
        try:
            method.save_weights(os.path.join(scratch, name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    os.makedirs(folder, exist_ok=True)
    with atomic_path(os.path.join(folder, name), suffix=".weights.h5") as tmp:  # Keras wants the suffix
        method.save_weights(tmp)
        meta = {"step": step, "file": name, "bytes": os.path.getsize(tmp), "sha256": file_sha256(tmp),
                "method": method.method_name, "fingerprint": weights_fingerprint(method),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    entries = [e for e in read_index(run_dir) if e["step"] != step] + [meta]
    entries.sort(key=lambda e: e["step"])
    kept, dropped = entries[-keep:], entries[:-keep]
    write_json(os.path.join(folder, INDEX_FILE), {"checkpoints": kept})
    keep_files = {e["file"] for e in kept}
    for e in dropped:
        if e["file"] not in keep_files:
            _remove(os.path.join(folder, e["file"]))
    # Leftovers of a process killed mid-save (temporary files, files never indexed).
    for leftover in os.listdir(folder):
        if leftover.startswith(TMP_PREFIX) or (leftover.endswith(".weights.h5") and leftover not in keep_files):
            _remove(os.path.join(folder, leftover))
    return meta


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def latest_checkpoint(run_dir: str) -> dict | None:
    """Metadata of the newest checkpoint, or None when the run has none."""
    entries = read_index(run_dir)
    return entries[-1] if entries else None


def verify_checkpoint(run_dir: str, meta: dict, method_name: str, fingerprint: str, hint: str = "") -> str:
    """Path of the checkpoint file after checking it belongs to this run and is complete (`hint`
    ends the message when its networks do not fit)."""
    path = os.path.join(run_dir, CHECKPOINT_DIR, meta["file"])
    if meta["method"] != method_name:
        raise InputError(f"checkpoint {path} was written by method {meta['method']!r}, "
                         f"but the run's config says {method_name!r}")
    if meta["fingerprint"] != fingerprint:
        raise InputError(f"checkpoint {path} does not fit the networks that config.yaml describes "
                         f"(weight shapes differ: fingerprint {meta['fingerprint']} vs {fingerprint}); "
                         + (hint or "was the config edited or the checkpoint copied from another run?"))
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path} named by the index is missing")
    size = os.path.getsize(path)
    if size != meta["bytes"]:
        raise InputError(f"checkpoint {path} is truncated or damaged: {size} bytes, expected {meta['bytes']}")
    if file_sha256(path) != meta["sha256"]:
        raise InputError(f"checkpoint {path} is damaged: its sha256 does not match the index")
    return path


def restore_checkpoint(method, run_dir: str, hint: str = "") -> dict:
    """Load the latest checkpoint into a compiled method (optimizers built); return its metadata.

    The learning rates stored with the optimizer state are replaced by the method config's, so
    a resumed run can continue with another --lr. `hint` (RunConfig.dropped_hint) ends the error
    of a checkpoint that does not fit the networks.
    """
    meta = latest_checkpoint(run_dir)
    if meta is None:
        raise InputError(f"run {run_dir} has no checkpoint yet (training stopped before the first one)")
    path = verify_checkpoint(run_dir, meta, method.method_name, weights_fingerprint(method), hint)
    try:
        method.load_weights(path)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"checkpoint {path} does not fit the model from config.yaml: {exc}"
                         + (f"; {hint}" if hint else "")) from exc
    if method.step != meta["step"]:
        raise InputError(f"checkpoint {path} restored step {method.step}, index says {meta['step']}")
    for name, rate in method.learning_rates().items():
        method.named_optimizer(name).learning_rate = rate
    return meta
