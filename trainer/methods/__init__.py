"""The method registry: an explicit dict from name to method class and presets.

    get_method("ae")         -> trainer.methods.ae.Autoencoder
    preset_config("ae", "cpu", size=None) -> AEConfig
"""
from __future__ import annotations

import dataclasses
from types import ModuleType

from swapstream.faces.errors import InputError
from swapstream.trainer.methods import ae, conv_vae, cyclegan, vae, vae_gan
from swapstream.trainer.methods.base import DIRECTIONS, SwapMethod

# name -> (method class, module holding its Config and PRESETS)
METHODS: dict[str, tuple[type[SwapMethod], ModuleType]] = {
    "ae": (ae.Autoencoder, ae),
    "vae": (vae.VariationalAutoencoder, vae),
    "conv-vae": (conv_vae.ConvVariationalAutoencoder, conv_vae),
    "vae-gan": (vae_gan.VAEGAN, vae_gan),
    "cyclegan": (cyclegan.CycleGAN, cyclegan),
}
CONFIGS = {"ae": ae.AEConfig, "vae": vae.VAEConfig, "conv-vae": conv_vae.ConvVAEConfig,
           "vae-gan": vae_gan.VAEGANConfig, "cyclegan": cyclegan.CycleGANConfig}
PRESET_NAMES = ("tiny", "cpu", "gpu")

__all__ = ["METHODS", "CONFIGS", "PRESET_NAMES", "DIRECTIONS", "SwapMethod", "get_method",
           "config_class", "preset_config", "build_method"]


def _check_name(name: str) -> None:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")


def get_method(name: str) -> type[SwapMethod]:
    """The method class registered under `name` (InputError listing valid names otherwise)."""
    _check_name(name)
    return METHODS[name][0]


def config_class(name: str) -> type:
    """The frozen config dataclass of method `name`."""
    _check_name(name)
    return CONFIGS[name]


def preset_config(name: str, preset: str, size: int | None = None):
    """Method `name`'s config for `preset` (tiny|cpu|gpu), optionally at another image size."""
    _check_name(name)
    presets = METHODS[name][1].PRESETS
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r}; valid presets: {', '.join(presets)}")
    cfg = presets[preset]
    if size is not None:
        cfg = dataclasses.replace(cfg, size=int(size))
    cfg.validate()
    return cfg


def build_method(name: str, config, seed: int = 0) -> SwapMethod:
    """A new, unbuilt-optimizer method object of type `name` with `config`."""
    return get_method(name)(config, seed=seed)
