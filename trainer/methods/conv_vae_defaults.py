"""`conv-vae` defaults: its config dataclass and its presets (networks, schedule, augmentation, precision)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from swapstream.trainer.methods.configs import ConvAutoencoderConfig
from swapstream.trainer.preset import CPU_AUGMENT, CPU_TRAIN, GPU_AUGMENT, GPU_TRAIN, TINY_AUGMENT, TINY_TRAIN, Preset


@dataclass(frozen=True)
class ConvVAEConfig(ConvAutoencoderConfig):
    """Convolutional VAE hyper-parameters: the `ae` networks' fields plus the KL weight."""

    method: ClassVar[str] = "conv-vae"
    beta: float = 0.02


PRESETS = {
    "tiny": Preset(ConvVAEConfig(size=32, encoder_filters=(8, 16, 32), latent_dim=32, bottleneck_filters=32,
                                 decoder_filters=(16, 8), learning_rate=1e-3, upscale=2), TINY_TRAIN,
                   TINY_AUGMENT),
    "cpu": Preset(ConvVAEConfig(learning_rate=5e-4, upscale=2, dssim_downscale=2), CPU_TRAIN, CPU_AUGMENT,
                  precision="auto"),
    "gpu": Preset(ConvVAEConfig(size=128, encoder_filters=(64, 128, 256, 512, 1024), latent_dim=512,
                                bottleneck_filters=512, decoder_filters=(512, 256, 128, 64),
                                learning_rate=5e-5, dtype_policy="mixed_bfloat16"), GPU_TRAIN, GPU_AUGMENT),
}
