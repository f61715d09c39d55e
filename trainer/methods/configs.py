"""The config dataclasses every method's config builds on, and the checks they share.

No TensorFlow here: a run's config.yaml can be read and checked, and a preset listed, without it.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from swapstream.faces.errors import InputError


def check_positive(config, names: tuple[str, ...]) -> None:
    """Raise InputError if any named config field (int/float or tuple of them) is not > 0."""
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        if not values or any(v <= 0 for v in values):
            raise InputError(f"{type(config).__name__}.{name} must be > 0, got {value!r}")


def check_non_negative(config, names: tuple[str, ...]) -> None:
    """Raise InputError if any named float config field (a loss weight) is < 0."""
    for name in names:
        if getattr(config, name) < 0:
            raise InputError(f"{type(config).__name__}.{name} must be >= 0, got {getattr(config, name)!r}")


def check_size_multiple(size: int, downsamples: int, method: str, minimum: int | None = None) -> None:
    """Raise InputError unless `size` survives `downsamples` halvings (and is at least `minimum`)."""
    step = 2**downsamples
    minimum = minimum or step
    if size < minimum or size % step:
        ok = [s for s in (32, 48, 64, 96, 128, 160) if s % step == 0 and s >= minimum]
        raise InputError(
            f"size {size} does not fit {method}: its networks halve the image {downsamples} times, "
            f"so the size must be a multiple of {step} and at least {minimum} (e.g. {', '.join(map(str, ok))})"
        )


UPSCALES = (1, 2)


def check_upscale(config) -> None:
    """Raise InputError unless the config's `upscale` is 1 or 2."""
    if getattr(config, "upscale", 1) not in UPSCALES:
        raise InputError(f"upscale must be one of {', '.join(map(str, UPSCALES))}, got {config.upscale!r}")


def io_sizes(config) -> tuple[int, int]:
    """(input side, output side) of a method config's inference model: the output is
    `upscale` times the input where the config has that field, the input's side otherwise."""
    size = int(config.size)
    return size, size * int(getattr(config, "upscale", 1))


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """What every autoencoder method learns with: the reconstruction loss, the optimizer, the
    precision. Method configs add their networks' fields (frozen dataclasses, YAML-able)."""

    l1_weight: float = 1.0
    dssim_weight: float = 1.0
    # DSSIM on the faces area-averaged by this factor (L1 stays at the full side): SSIM's blurs
    # cost about a third of a 2x-head step at 128 px, a sixteenth of it at 64.
    dssim_downscale: int = 1
    # On faces without an alignment template: loss weight on a central ellipse (1 at the border).
    face_weight: float = 3.0
    expression_weight: float = 10.0  # extra loss weight on the eyes and the mouth (1 = none)
    # On aligned faces the loss covers the template's face region (faces/regions.py) with weight 1
    # and the rest of the crop with this weight: 0 spends no capacity on hair and background,
    # which the blend mask never pastes anyway.
    background_weight: float = 0.0
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    dtype_policy: str = "float32"
    jit_compile: bool = False


@dataclasses.dataclass(frozen=True)
class ConvAutoencoderConfig(TrainingConfig):
    """Strided 5x5 convolutions down to a dense code, pixel-shuffle upscales back up (`ae`,
    `conv-vae`, `vae-gan`). The encoder halves the image len(encoder_filters) times; the
    decoder starts with one upscale of the bottleneck, so it takes one filter entry fewer.
    `upscale` 2 ends the decoder in a pixel-shuffle head (its last convolution emits 4x the
    channels, then depth-to-space): the face comes out at 2 * size for about the cost of size."""

    method: ClassVar[str] = ""
    size: int = 64
    encoder_filters: tuple[int, ...] = (32, 64, 128, 256)
    latent_dim: int = 256
    bottleneck_filters: int = 256
    decoder_filters: tuple[int, ...] = (128, 64, 32)
    upscale: int = 1  # output side / input side: 1, or 2 with the pixel-shuffle head

    def validate(self) -> None:
        check_positive(self, ("size", "encoder_filters", "latent_dim", "bottleneck_filters",
                              "decoder_filters", "learning_rate"))
        check_non_negative(self, ("background_weight",))
        check_positive(self, ("dssim_downscale",))
        check_upscale(self)
        if self.size * self.upscale % self.dssim_downscale:
            raise InputError(f"dssim_downscale {self.dssim_downscale} must divide the output side "
                             f"{self.size * self.upscale}")
        check_size_multiple(self.size, len(self.encoder_filters), self.method)
        if len(self.decoder_filters) != len(self.encoder_filters) - 1:
            raise InputError("decoder_filters needs one entry fewer than encoder_filters "
                             "(the decoder starts with one upscale of the bottleneck)")
