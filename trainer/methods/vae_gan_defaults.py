"""`vae-gan` defaults: its config dataclass and its presets (networks, schedule, augmentation, precision)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from swapstream.faces.errors import InputError
from swapstream.trainer.methods.configs import ConvAutoencoderConfig, check_positive, check_size_multiple
from swapstream.trainer.preset import CPU_AUGMENT, CPU_TRAIN, GPU_AUGMENT, GPU_TRAIN, TINY_AUGMENT, TINY_TRAIN, Preset


@dataclass(frozen=True)
class VAEGANConfig(ConvAutoencoderConfig):
    """VAE-GAN hyper-parameters (encoder/decoders as conv-vae, plus discriminators)."""

    method: ClassVar[str] = "vae-gan"
    disc_filters: tuple[int, ...] = (32, 64, 128, 256)
    feature_layer: int = 3  # features after this many discriminator convolutions
    prior_samples: bool = True  # also show the discriminators decoded N(0, I) codes (the paper)
    beta: float = 0.02
    gamma: float = 1.0  # weight of the feature loss in the decoder loss (the paper's gamma)
    feature_weight: float = 1.0
    adversarial_weight: float = 0.05
    pixel_weight: float = 1.0
    disc_learning_rate: float = 1e-4

    def validate(self) -> None:
        super().validate()
        check_positive(self, ("disc_filters", "feature_layer", "disc_learning_rate"))
        # The discriminators halve the decoders' output too.
        check_size_multiple(self.size * self.upscale, len(self.disc_filters), self.method)
        if self.feature_layer > len(self.disc_filters):
            raise InputError(f"feature_layer {self.feature_layer} > {len(self.disc_filters)} "
                             "discriminator layers")


PRESETS = {
    "tiny": Preset(VAEGANConfig(size=32, encoder_filters=(8, 16, 32), latent_dim=32, bottleneck_filters=32,
                                decoder_filters=(16, 8), disc_filters=(8, 16, 32), feature_layer=2,
                                learning_rate=1e-3, disc_learning_rate=5e-4, upscale=2), TINY_TRAIN, TINY_AUGMENT),
    # Without prior samples a step costs half the decoder passes: the swap only ever decodes
    # encoded faces, and on a CPU the saved time buys more steps.
    "cpu": Preset(VAEGANConfig(learning_rate=5e-4, disc_learning_rate=2e-4, prior_samples=False, upscale=2,
                               dssim_downscale=2),
                  CPU_TRAIN, CPU_AUGMENT, precision="auto"),
    "gpu": Preset(VAEGANConfig(size=128, encoder_filters=(64, 128, 256, 512, 1024), latent_dim=512,
                               bottleneck_filters=512, decoder_filters=(512, 256, 128, 64),
                               disc_filters=(64, 128, 256, 512), learning_rate=5e-5,
                               disc_learning_rate=5e-5, dtype_policy="mixed_bfloat16"), GPU_TRAIN, GPU_AUGMENT),
}
