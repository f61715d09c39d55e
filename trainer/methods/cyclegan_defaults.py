"""`cyclegan` defaults: its config dataclass and its presets (networks, schedule, augmentation, precision)."""
from __future__ import annotations

from dataclasses import dataclass

from swapstream.trainer.methods.configs import check_non_negative, check_positive, check_size_multiple
from swapstream.trainer.preset import CPU_AUGMENT, CPU_TRAIN, GPU_AUGMENT, GPU_TRAIN, TINY_AUGMENT, TINY_TRAIN, Preset


@dataclass(frozen=True)
class CycleGANConfig:
    """CycleGAN hyper-parameters."""

    size: int = 64
    gen_filters: int = 16
    res_blocks: int = 6
    disc_filters: tuple[int, ...] = (32, 64, 128)
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    dtype_policy: str = "float32"
    jit_compile: bool = False

    def validate(self) -> None:
        check_positive(self, ("size", "gen_filters", "res_blocks", "disc_filters", "learning_rate"))
        check_non_negative(self, ("cycle_weight", "identity_weight"))
        # Generator halves twice; the PatchGAN halves len(disc_filters) - 1 times.
        check_size_multiple(self.size, max(2, len(self.disc_filters) - 1), "cyclegan", minimum=16)


# A step runs six generator passes: smaller batches than the other methods give it more updates
# per minute.
PRESETS = {
    "tiny": Preset(CycleGANConfig(size=32, gen_filters=8, res_blocks=1, disc_filters=(8, 16, 32),
                                  learning_rate=1e-3), TINY_TRAIN, TINY_AUGMENT),
    # identity_weight 5 (the paper's 0.5): in a short run it keeps much more of the source's
    # mouth and brows.
    "cpu": Preset(CycleGANConfig(res_blocks=4, identity_weight=5.0), CPU_TRAIN, CPU_AUGMENT,
                  precision="auto").with_batch(4),
    "gpu": Preset(CycleGANConfig(size=128, gen_filters=64, res_blocks=9, disc_filters=(64, 128, 256, 512),
                                 dtype_policy="mixed_bfloat16"), GPU_TRAIN, GPU_AUGMENT).with_batch(8),
}
