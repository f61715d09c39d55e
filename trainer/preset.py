"""What a preset fixes for a new run besides the networks: the schedule, the augmentation, the precision.

A method's presets live in its defaults module (`trainer/methods/<method>_defaults.py`), one
`Preset` per name, built from the shared baselines below so that what is common is written once
and what a method changes is visible next to it. No TensorFlow here: run configs can be read and
checked without it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from swapstream.faces.errors import InputError

DISTRIBUTE_CHOICES = ("none", "mirrored", "multiworker")
DEFAULT_PRESET = "cpu"  # what a new run gets without --preset


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule and bookkeeping (the `train:` section of config.yaml)."""

    batch_size: int = 16
    steps: int | None = None  # total steps of the run (a resumed run continues up to it)
    minutes: float | None = None  # wall-clock budget of one training session
    log_every: int = 50  # window (steps) over which logged losses are averaged
    checkpoint_every: int = 500
    preview_every: int = 500
    keep: int = 3
    seed: int = 0
    distribute: str = "none"
    logical_cpus: int = 0  # split the host CPU into N logical devices (to test mirrored on CPU)

    def validate(self) -> None:
        """InputError naming the flag of any value out of range, or a run without a budget."""
        flags = {"batch_size": "--batch", "log_every": "--log-every", "keep": "--keep",
                 "checkpoint_every": "--checkpoint-every", "preview_every": "--preview-every"}
        for name, flag in flags.items():
            if getattr(self, name) <= 0:
                raise InputError(f"{flag} must be > 0, got {getattr(self, name)}")
        if self.steps is None and self.minutes is None:
            raise InputError("give --steps N or --minutes T")
        if self.steps is not None and self.steps <= 0:
            raise InputError(f"--steps must be > 0, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise InputError(f"--minutes must be > 0, got {self.minutes}")
        if self.distribute not in DISTRIBUTE_CHOICES:
            raise InputError(f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (0 switches a term off); trainer/data.py applies them."""

    rotation_deg: float = 10.0
    zoom: float = 0.05
    shift: float = 0.05  # fraction of the image side
    warp: float = 0.025  # std of the control-point displacement, fraction of the side
    warp_grid: int = 5
    flip: bool = True
    color_jitter: float = 0.03

    def validate(self) -> None:
        """InputError for a strength below 0 or a warp grid under 2 points."""
        for name in ("rotation_deg", "zoom", "shift", "warp", "color_jitter"):
            if getattr(self, name) < 0:
                raise InputError(f"augment {name} must be >= 0, got {getattr(self, name)}")
        if self.warp_grid < 2:
            raise InputError(f"augment warp_grid must be >= 2, got {self.warp_grid}")


@dataclass(frozen=True)
class Preset:
    """Everything a new run of one method takes from `--preset NAME` (the command line overrides it)."""

    model: object  # the method's frozen config dataclass: networks, losses, learning rate
    train: TrainConfig
    augment: AugmentConfig
    # The --precision a new run gets when none is given ("auto": bfloat16 where the CPU has it);
    # None keeps the model's dtype_policy as it is.
    precision: str | None = None

    def with_batch(self, batch_size: int) -> Preset:
        """This preset with another batch size."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, batch_size=batch_size))


# Shared baselines of the three sizes every method has.
# `tiny`: tests and smoke runs at 32 px.
TINY_TRAIN = TrainConfig(batch_size=4, log_every=10, checkpoint_every=50, preview_every=50)
# `cpu`: batch 8, because on a CPU more, smaller steps learn faster per minute than fewer big ones.
CPU_TRAIN = TrainConfig(batch_size=8, log_every=50, checkpoint_every=500, preview_every=250)
GPU_TRAIN = TrainConfig(batch_size=32, log_every=100, checkpoint_every=2000, preview_every=1000)
TINY_AUGMENT = AugmentConfig()
# No random warp on a CPU budget: it pays off over long runs, and in the minutes a CPU run gets
# it slows the learning of pose and expression down more than it helps.
CPU_AUGMENT = AugmentConfig(warp=0.0)
GPU_AUGMENT = AugmentConfig()
