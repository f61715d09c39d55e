"""A pretrained prior: the shared encoder and one generic decoder, trained on many identities.

`swapstream pretrain` (trainer/pretrain.py) writes one; `swapstream train --init PRIOR` starts a
pair from it: the run's encoder takes the prior's encoder and both decoders A and B the generic
decoder (DeepFaceLab's pretrain mode). No TensorFlow here: the fit check runs before TensorFlow
starts its devices, and a prior can be inspected on a box without it.

File: one .npz (load with allow_pickle=False), small enough to commit:
    meta                 <U ()   JSON: format, version, method, preset, model (the method's config
                                 as a dict), networks {name: [shape, ...]}, and how it was trained
                                 (steps, seconds, face sets, faces, identities, ...)
    <network>/<index>    float16 (or float32 where float16 would overflow) weight arrays, in the
                                 order of the network's `weights`
Networks: "encoder" and "decoder".
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from swapstream.faces.errors import InputError
from swapstream.faces.files import atomic_path
from swapstream.faces.model_folder import file_sha256
from swapstream.trainer.methods.configs import TrainingConfig

FORMAT = "swapstream-prior"
VERSION = 1
# Methods whose networks are one shared encoder plus one decoder per identity (what a generic
# decoder can stand in for).
PRETRAINABLE = ("ae",)
PRIOR_NETWORKS = ("encoder", "decoder")
# The priors shipped with the package (package data of swapstream.trainer).
PRIORS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "priors")
# Config fields that change how a network learns, not what it computes: a run may differ from
# its prior in these (a pair can fine-tune at another learning rate or precision).
TRAINING_ONLY = frozenset(f.name for f in dataclasses.fields(TrainingConfig))


def plain_config(config) -> dict:
    """A method config as a JSON-able dict (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def run_network_for(name: str) -> str | None:
    """The prior network that a run's network `name` starts from (None: it starts fresh)."""
    if name == "encoder":
        return "encoder"
    if name.startswith("decoder_"):
        return "decoder"
    return None


def _shapes(weights) -> list[list[int]]:
    return [[int(d) for d in np.shape(w)] for w in weights]


def _stored(array: np.ndarray) -> np.ndarray:
    """float16 when it holds the values (halves the file), float32 where float16 would overflow."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return array
    with np.errstate(over="ignore"):
        half = array.astype(np.float16)
    return half if np.isfinite(half).all() else array.astype(np.float32)


@dataclass(frozen=True)
class Prior:
    """A prior read from its file: meta (see module docstring) and weights per network."""

    path: str
    meta: dict
    weights: dict[str, list[np.ndarray]]

    @property
    def method(self) -> str:
        return self.meta["method"]

    @property
    def model(self) -> dict:
        return self.meta["model"]

    def config_differences(self, config) -> list[str]:
        """'field: prior X, run Y' for each network field of `config` that differs from the prior's.

        A field the prior's config lacks (added to the method after the prior was made) counts as
        its default.
        """
        run = plain_config(config)
        defaults = plain_config(type(config)())
        diffs = []
        for name, value in run.items():
            if name in TRAINING_ONLY:
                continue
            stored = self.model.get(name, defaults.get(name))
            if stored != value:
                diffs.append(f"{name}: prior {stored}, run {value}")
        return diffs

    def check_fits(self, method: str, config) -> None:
        """InputError unless a run of `method` with model config `config` can start from this prior."""
        if method != self.method:
            raise InputError(f"prior {self.path} was pretrained for method {self.method!r}, the run is {method!r}")
        diffs = self.config_differences(config)
        if diffs:
            raise InputError(f"prior {self.path} does not fit the run's networks ({'; '.join(diffs)}): train with "
                             f"the preset it was pretrained with ({self.meta.get('preset')!r}, same --size and "
                             "--set), or pretrain a prior for this config")

    def check_framing(self, template: dict | None) -> None:
        """InputError unless the pair's faces are framed as the prior's were (`template`: the face
        sets' alignment template as trainer.config.template_dict gives it, None for Haar squares).

        Weights would fit either way, but a prior that learnt faces at one framing starts a pair
        cut at another from the wrong place.
        """
        stored = self.meta.get("align_template")
        if stored != template:
            raise InputError(f"prior {self.path} was pretrained on faces framed {_framing(stored)}; the face sets "
                             f"are framed {_framing(template)}: extract them as the prior's were, or pretrain on "
                             "faces framed like them")

    def apply(self, method) -> dict[str, str]:
        """Copy the prior's weights into a built method: encoder to encoder, decoder to every decoder.

        Returns {run network: prior network} for what was set. InputError (nothing changed) if
        any weight shape differs.
        """
        plan = {}
        for name, net in method.networks().items():
            source = run_network_for(name)
            if source is None:
                continue
            want, have = _shapes(net.weights), _shapes(self.weights[source])
            if want != have:
                raise InputError(f"prior {self.path}: its {source} does not fit the run's {name} "
                                 f"({len(have)} weights vs {len(want)}, shapes differ); pretrain for this config")
            plan[name] = (net, source)
        missing = [n for n in PRIOR_NETWORKS if n not in {s for _, s in plan.values()}]
        if missing:
            raise InputError(f"the run's networks have no place for the prior's {', '.join(missing)}")
        for net, source in plan.values():
            net.set_weights([w.astype(v.dtype) for w, v in zip(self.weights[source], net.weights)])
        return {name: source for name, (_, source) in plan.items()}

    def describe(self) -> dict:
        """What a run records about the prior it started from."""
        keys = ("method", "preset", "steps", "faces", "identities", "face_sets")
        return {"path": os.path.abspath(self.path), "sha256": file_sha256(self.path),
                **{k: self.meta[k] for k in keys if k in self.meta}}


def _framing(template: dict | None) -> str:
    if template is None:
        return "as Haar squares (not aligned)"
    return (f"aligned at {template['size']} px, eye distance {template['eye_distance']}, "
            f"eye line {template['eye_line']}")


def shipped_prior(name: str) -> str | None:
    """Path of the prior `name` (e.g. "demo-ae.npz") shipped in trainer/priors/, or None if absent."""
    path = os.path.join(PRIORS_DIR, name)
    return path if os.path.isfile(path) else None


def write_prior(path: str, method: str, preset: str, config, networks: dict[str, list[np.ndarray]],
                info: dict) -> dict:
    """Write a prior file atomically; returns its meta.

    `networks` maps "encoder" and "decoder" to their weight arrays (a network's `get_weights()`),
    `info` adds how it was trained (steps, seconds, face sets, ...) to the meta.
    """
    if set(networks) != set(PRIOR_NETWORKS):
        raise ValueError(f"a prior holds the networks {PRIOR_NETWORKS}, got {tuple(networks)}")
    meta = {**info, "format": FORMAT, "version": VERSION, "method": method, "preset": preset,
            "model": plain_config(config),
            "networks": {name: _shapes(ws) for name, ws in networks.items()}}
    arrays = {"meta": np.asarray(json.dumps(meta, sort_keys=True))}
    for name, ws in networks.items():
        for i, w in enumerate(ws):
            arrays[f"{name}/{i:03d}"] = _stored(w)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return meta


def read_prior(path: str) -> Prior:
    """Load and check a prior file (InputError with a one-line reason if it is not a valid one)."""
    if not os.path.isfile(path):
        raise InputError(f"prior {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path} is not a prior file from `swapstream pretrain` ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != FORMAT:
            raise ValueError("no prior format tag")
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path} is not a prior file from `swapstream pretrain` ({exc})") from exc
    if meta.get("version") != VERSION:
        raise InputError(f"prior {path} has format version {meta.get('version')}; this version reads {VERSION}")
    weights = {}
    for name in PRIOR_NETWORKS:
        shapes = meta["networks"].get(name)
        if shapes is None:
            raise InputError(f"prior {path} lacks its {name}")
        try:
            ws = [arrays[f"{name}/{i:03d}"] for i in range(len(shapes))]
        except KeyError as exc:
            raise InputError(f"prior {path} is damaged: weight {exc} of its {name} is missing") from exc
        if _shapes(ws) != shapes:
            raise InputError(f"prior {path} is damaged: the {name} weights' shapes differ from its meta")
        if not all(np.isfinite(w).all() for w in ws if np.issubdtype(w.dtype, np.floating)):
            raise InputError(f"prior {path} is damaged: its {name} holds NaN or infinite weights")
        weights[name] = ws
    return Prior(path, meta, weights)
