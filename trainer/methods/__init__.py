"""The method registry: the one list of method names, each with where its code and defaults live.

    METHODS                  -> {"ae": Registration, ...} in the thesis' order
    get_method("ae")         -> trainer.methods.ae.Autoencoder
    config_class("ae")       -> trainer.methods.ae_defaults.AEConfig
    get_preset("ae", "cpu")  -> trainer.preset.Preset (networks, schedule, augmentation, precision)
    preset_config("ae", "cpu", size=None) -> AEConfig

Every other list of method or preset names (help texts, `compare --methods`, benches) is read
from here. Each method has two modules: `<module>.py` with the networks and the training step
(imports TensorFlow, loaded on first use) and `<module>_defaults.py` with its config dataclass
and its `PRESETS` (no TensorFlow), so names, presets and run configs are known without it.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import DIRECTIONS

if TYPE_CHECKING:
    from swapstream.trainer.methods.base import SwapMethod
    from swapstream.trainer.preset import Preset


@dataclass(frozen=True)
class Registration:
    """One method: its name and the names of its class, its config class and its module."""

    name: str
    module: str  # trainer/methods/<module>.py and <module>_defaults.py
    method_class: str  # in <module>.py
    config_class: str  # in <module>_defaults.py, beside PRESETS


METHODS: dict[str, Registration] = {r.name: r for r in (
    Registration("ae", "ae", "Autoencoder", "AEConfig"),
    Registration("vae", "vae", "VariationalAutoencoder", "VAEConfig"),
    Registration("conv-vae", "conv_vae", "ConvVariationalAutoencoder", "ConvVAEConfig"),
    Registration("vae-gan", "vae_gan", "VAEGAN", "VAEGANConfig"),
    Registration("cyclegan", "cyclegan", "CycleGAN", "CycleGANConfig"),
)}

__all__ = ["METHODS", "DIRECTIONS", "Registration", "get_method", "config_class", "get_preset", "preset_names",
           "shared_preset_names", "preset_config", "build_method"]


def _registration(name: str) -> Registration:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def _defaults(name: str):
    return importlib.import_module(f"{__name__}.{_registration(name).module}_defaults")


def get_method(name: str) -> type[SwapMethod]:
    """The method class registered under `name` (InputError listing valid names otherwise)."""
    reg = _registration(name)
    return getattr(importlib.import_module(f"{__name__}.{reg.module}"), reg.method_class)


def config_class(name: str) -> type:
    """The frozen config dataclass of method `name`."""
    return getattr(_defaults(name), _registration(name).config_class)


def preset_names(name: str) -> tuple[str, ...]:
    """The presets method `name` has."""
    return tuple(_defaults(name).PRESETS)


def shared_preset_names() -> tuple[str, ...]:
    """The presets every method has (what `compare` can train them all with)."""
    names = [preset_names(m) for m in METHODS]
    return tuple(p for p in names[0] if all(p in n for n in names[1:]))


def get_preset(name: str, preset: str) -> Preset:
    """Method `name`'s preset `preset` (InputError listing the method's presets otherwise)."""
    presets = _defaults(name).PRESETS
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r} for {name}; valid presets: {', '.join(presets)}")
    return presets[preset]


def preset_config(name: str, preset: str, size: int | None = None):
    """Method `name`'s config for `preset`, optionally at another image size (validated)."""
    cfg = get_preset(name, preset).model
    if size is not None:
        cfg = dataclasses.replace(cfg, size=int(size))
    cfg.validate()
    return cfg


def build_method(name: str, config, seed: int = 0, template=None) -> SwapMethod:
    """A new, unbuilt-optimizer method object of type `name` with `config`; `template` (the
    faces.align.AlignTemplate of aligned training faces) places its loss on the face region."""
    return get_method(name)(config, seed=seed, template=template)
