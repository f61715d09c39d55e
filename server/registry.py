"""The models a server serves: every folder under --models with a valid manifest, by folder name."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import Manifest, ManifestError, check_session_io, load_manifest, manifest_sha256
from swapstream.server.batcher import InferenceBatcher
from swapstream.server.session import CUDA, make_session

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """One servable model: its manifest, onnxruntime session and batching worker."""

    name: str
    path: str
    manifest: Manifest
    provider: str
    batcher: InferenceBatcher
    manifest_sha256: str  # of manifest.json as loaded; with the name, the model's identity in watermarks


class ModelRegistry:
    """Models addressed by name. Immutable after loading (no global state; one per server)."""

    def __init__(self, models: dict[str, LoadedModel], skipped: dict[str, str]) -> None:
        self._models = dict(models)
        self.skipped = dict(skipped)  # name -> why it was not loaded

    @classmethod
    def load(cls, models_dir: str, device: str = "auto", max_batch: int = 16,
             intra_op_threads: int | None = None) -> "ModelRegistry":
        """Load every model folder under `models_dir`; a broken one is logged by name and skipped.

        Raises InputError if the folder does not exist or holds no usable model.
        """
        if not os.path.isdir(models_dir):
            raise InputError(f"models folder {models_dir} does not exist")
        models: dict[str, LoadedModel] = {}
        skipped: dict[str, str] = {}
        for name in sorted(os.listdir(models_dir)):
            path = os.path.join(models_dir, name)
            if name.startswith(".") or not os.path.isdir(path):
                continue
            try:
                manifest = load_manifest(path, check_io=False)  # hash now, I/O on the real session
                manifest_sha = manifest_sha256(path)
                session, provider = make_session(os.path.join(path, "model.onnx"), device, intra_op_threads)
                check_session_io(manifest, session, name)
            except ManifestError as exc:
                skipped[name] = str(exc)
                log.error("skipping model %s: %s", name, exc)
                continue
            except Exception as exc:  # onnxruntime cannot load it, CUDA demanded and absent...
                skipped[name] = f"model {name}: {type(exc).__name__}: {exc}"
                log.error("skipping model %s: %s: %s", name, type(exc).__name__, exc)
                continue
            batcher = InferenceBatcher(session, manifest, max_batch=max_batch, name=name,
                                       fixed_batch=provider == CUDA)
            if provider == CUDA:
                batcher.warm_up()
            models[name] = LoadedModel(name, path, manifest, provider, batcher, manifest_sha)
            log.info("loaded model %s (%s %s, %d px, %s, %s)", name, manifest.method, manifest.direction,
                     manifest.crop_size, manifest.precision, provider)
        if not models:
            why = "; ".join(skipped.values()) or "no model folders"
            raise InputError(f"no usable model under {models_dir} ({why})")
        return cls(models, skipped)

    def get(self, name: str) -> LoadedModel | None:
        """The model called `name`, or None."""
        return self._models.get(name)

    def names(self) -> list[str]:
        return sorted(self._models)

    def models(self) -> list[LoadedModel]:
        return [self._models[n] for n in self.names()]

    def close(self) -> None:
        """Stop every model's inference worker (after finishing queued work)."""
        for model in self._models.values():
            model.batcher.close()
