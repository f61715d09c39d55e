"""The life cycle every method shares (keras-io style `keras.Model` subclass).

A method owns its networks (built by plain functions in its module), named optimizers given to
`compile`, loss trackers in `metrics`, a `train_step` used through `fit()`, and
`inference_model(direction)`: the Functional graph that the exporter converts to ONNX.

Batches are dicts of float32 BGR images in 0..1:
    warped_a, target_a, warped_b, target_b   (N, S, S, 3)
(`warped_*` is the augmented input, `target_*` the same face unwarped; see trainer/data.py).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

from swapstream.faces.errors import InputError
from swapstream.trainer.blocks import count_params

DIRECTIONS = ("a2b", "b2a")


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


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """What every autoencoder method learns with: the reconstruction loss, the optimizer, the
    precision. Method configs add their networks' fields (frozen dataclasses, YAML-able)."""

    l1_weight: float = 1.0
    dssim_weight: float = 1.0
    face_weight: float = 3.0
    expression_weight: float = 10.0  # extra loss weight on the eyes and the mouth (1 = none)
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    dtype_policy: str = "float32"
    jit_compile: bool = False


@dataclasses.dataclass(frozen=True)
class ConvAutoencoderConfig(TrainingConfig):
    """Strided 5x5 convolutions down to a dense code, pixel-shuffle upscales back up (`ae`,
    `conv-vae`, `vae-gan`). The encoder halves the image len(encoder_filters) times; the
    decoder starts with one upscale of the bottleneck, so it takes one filter entry fewer."""

    method: ClassVar[str] = ""
    size: int = 64
    encoder_filters: tuple[int, ...] = (32, 64, 128, 256)
    latent_dim: int = 256
    bottleneck_filters: int = 256
    decoder_filters: tuple[int, ...] = (128, 64, 32)

    def validate(self) -> None:
        check_positive(self, ("size", "encoder_filters", "latent_dim", "bottleneck_filters",
                              "decoder_filters", "learning_rate"))
        check_size_multiple(self.size, len(self.encoder_filters), self.method)
        if len(self.decoder_filters) != len(self.encoder_filters) - 1:
            raise InputError("decoder_filters needs one entry fewer than encoder_filters "
                             "(the decoder starts with one upscale of the bottleneck)")


class SwapMethod(keras.Model):
    """Base class: shared encoder/decoders or generators, trained through `fit()`."""

    method_name: ClassVar[str] = ""
    optimizer_names: ClassVar[tuple[str, ...]] = ()
    # The metric every method tracks and that should fall while it learns (pixel L1 of the
    # reconstruction; the cycle reconstruction for CycleGAN).
    progress_metric: ClassVar[str] = "l1"

    def __init__(self, config, seed: int = 0) -> None:
        config.validate()
        super().__init__(name=self.method_name.replace("-", "_"))
        self.config = config
        self.seed_generator = keras.random.SeedGenerator(seed)

    # ----- networks -------------------------------------------------------------------
    def networks(self) -> dict[str, keras.Model]:
        """The named sub-networks (Functional models) of this method."""
        raise NotImplementedError

    def swap(self, face, direction: str):
        """Symbolic graph from a face batch in 0..1 to the swapped face in 0..1."""
        raise NotImplementedError

    def inference_model(self, direction: str) -> keras.Model:
        """Functional model: input "face" float32 (None,S,S,3) BGR 0..1 -> (None,S,S,3) 0..1."""
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        s = self.config.size
        face = keras.Input(shape=(s, s, 3), dtype="float32", name="face")
        out = self.swap(face, direction)
        out = keras.layers.Activation("linear", dtype="float32", name="swapped")(out)
        return keras.Model(face, out, name=f"{self.method_name.replace('-', '_')}_{direction}")

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per sub-network, of one exported direction, and in total."""
        counts = {name: count_params(net) for name, net in self.networks().items()}
        counts["inference"] = count_params(self.inference_model("a2b"))
        counts["total"] = sum(v for k, v in counts.items() if k != "inference")
        return counts

    # ----- optimisation ---------------------------------------------------------------
    def optimizer_variables(self, name: str) -> list:
        """The trainable variables that optimizer `name` updates."""
        raise NotImplementedError

    def learning_rates(self) -> dict[str, float]:
        """Learning rate of each named optimizer (the config's learning_rate by default)."""
        return {n: self.config.learning_rate for n in self.optimizer_names}

    def default_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        """Adam per optimizer name, with `learning_rates()` and the config's beta_1."""
        return {n: keras.optimizers.Adam(lr, beta_1=self.config.beta_1, name=f"{n}_adam")
                for n, lr in self.learning_rates().items()}

    def compile(self, optimizers: dict[str, keras.optimizers.Optimizer], jit_compile: bool = False):
        """Attach the named optimizers and build their slots now.

        Building here (inside the distribution strategy's scope when there is one) matters:
        optimizers first built inside a replica's train step fail under MirroredStrategy, and
        restoring a checkpoint needs the slot variables to exist.
        """
        if set(optimizers) != set(self.optimizer_names):
            raise ValueError(f"{self.method_name} needs optimizers {self.optimizer_names}, "
                             f"got {tuple(optimizers)}")
        # optimizer=None: Keras' single `self.optimizer` is unused (and would be built with
        # slots for every variable); the named optimizers below do the work.
        super().compile(optimizer=None, jit_compile=jit_compile)
        for name in self.optimizer_names:
            opt = optimizers[name]
            opt.build(self.optimizer_variables(name))
            setattr(self, f"{name}_optimizer", opt)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: networks exist from __init__ and optimizers from compile().

        Keras' version peeks at one batch and all-reduces it to build unbuilt models, which
        fails for dict batches under MultiWorkerMirroredStrategy (and wastes a batch).
        """
        return

    def named_optimizer(self, name: str) -> keras.optimizers.Optimizer:
        return getattr(self, f"{name}_optimizer")

    @property
    def step(self) -> int:
        """Training steps done (iterations of the first optimizer; each step applies each once)."""
        return int(self.named_optimizer(self.optimizer_names[0]).iterations.numpy())

    @staticmethod
    def replica_scale() -> float:
        """1 / replicas: optimizers sum gradients over replicas, so each replica's loss is scaled."""
        return 1.0 / tf.distribute.get_strategy().num_replicas_in_sync

    def apply_loss(self, name: str, tape: tf.GradientTape, loss) -> None:
        """Gradient of `loss` (already replica-scaled) w.r.t. optimizer `name`'s variables, applied."""
        variables = self.optimizer_variables(name)
        grads = tape.gradient(loss, variables)
        self.named_optimizer(name).apply_gradients(zip(grads, variables))

    def metric_logs(self) -> dict:
        """The loss trackers' current values: what `train_step` returns to `fit()`."""
        logs = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras' fit reduces each log with reduce("MEAN", axis=0) under this strategy, which
            # rejects scalars (Keras 3.15): give them a length-1 axis.
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def describe(self) -> dict:
        """Plain-dict description (method, config) for logs and summaries."""
        return {"method": self.method_name, "config": dataclasses.asdict(self.config)}
