"""`ae` defaults: its config dataclass and its presets (networks, schedule, augmentation, precision)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from swapstream.trainer.methods.configs import ConvAutoencoderConfig
from swapstream.trainer.preset import CPU_AUGMENT, CPU_TRAIN, GPU_AUGMENT, GPU_TRAIN, TINY_AUGMENT, TINY_TRAIN, Preset


@dataclass(frozen=True)
class AEConfig(ConvAutoencoderConfig):
    """Autoencoder hyper-parameters (all shared with the convolutional VAE's networks)."""

    method: ClassVar[str] = "ae"


PRESETS = {
    "tiny": Preset(AEConfig(size=32, encoder_filters=(8, 16, 32), latent_dim=32, bottleneck_filters=32,
                            decoder_filters=(16, 8), learning_rate=1e-3, upscale=2), TINY_TRAIN, TINY_AUGMENT),
    # 2e-4: with the eyes-and-mouth weight and no warp, a higher rate can make a long run on real
    # faces collapse.
    # 64 px in, a 128 px face out (the pixel-shuffle head); DSSIM on the 2x2-averaged faces keeps
    # the step at about the cost of a 64 px one.
    "cpu": Preset(AEConfig(learning_rate=2e-4, upscale=2, dssim_downscale=2), CPU_TRAIN, CPU_AUGMENT,
                  precision="auto"),
    "gpu": Preset(AEConfig(size=128, encoder_filters=(64, 128, 256, 512, 1024), latent_dim=512,
                           bottleneck_filters=512, decoder_filters=(512, 256, 128, 64),
                           learning_rate=5e-5, dtype_policy="mixed_bfloat16"), GPU_TRAIN, GPU_AUGMENT),
    # `swapstream demo`'s network: the cpu one with a narrower bottleneck and decoder (about half
    # the parameters, so nearly twice the steps in its few minutes) and a higher learning rate,
    # which learns the mouth within them. That rate can collapse on some face sets, so the demo
    # trains with --retries. Wider decoders (0.84M each, latent 128) cost 12% of the steps in a
    # same-time run and drew no better on the synthetic pair. The shipped prior fits this network.
    "demo": Preset(AEConfig(bottleneck_filters=128, decoder_filters=(64, 32, 16), learning_rate=5e-4, upscale=2,
                            dssim_downscale=2),
                   CPU_TRAIN, CPU_AUGMENT, precision="auto"),
}
