"""`vae` (dense) defaults: its config dataclass and its presets (networks, schedule, augmentation, precision)."""
from __future__ import annotations

from dataclasses import dataclass

from swapstream.faces.errors import InputError
from swapstream.trainer.methods.configs import TrainingConfig, check_positive
from swapstream.trainer.preset import CPU_AUGMENT, CPU_TRAIN, GPU_AUGMENT, GPU_TRAIN, TINY_AUGMENT, TINY_TRAIN, Preset


@dataclass(frozen=True)
class VAEConfig(TrainingConfig):
    """Dense VAE hyper-parameters."""

    size: int = 64
    hidden: tuple[int, ...] = (256, 256)
    latent_dim: int = 128
    beta: float = 0.02

    def validate(self) -> None:
        check_positive(self, ("size", "hidden", "latent_dim", "learning_rate"))
        if self.size < 8:
            raise InputError(f"size {self.size} is too small for vae (at least 8)")
        weights = self.size * self.size * self.hidden[0]  # one input channel: the edge magnitude
        if weights > 200_000_000:
            raise InputError(f"size {self.size} makes the dense vae's first layer "
                             f"{weights:,} weights; use a smaller size")


PRESETS = {
    "tiny": Preset(VAEConfig(size=32, hidden=(64,), latent_dim=32, learning_rate=1e-3), TINY_TRAIN, TINY_AUGMENT),
    "cpu": Preset(VAEConfig(learning_rate=5e-4), CPU_TRAIN, CPU_AUGMENT, precision="auto"),
    "gpu": Preset(VAEConfig(size=128, hidden=(1024, 512), latent_dim=256, learning_rate=1e-4,
                            dtype_policy="mixed_bfloat16"), GPU_TRAIN, GPU_AUGMENT),
}
