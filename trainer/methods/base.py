"""The life cycle every method shares (keras-io style `keras.Model` subclass).

A method owns its networks (built by plain functions in its module), named optimizers given to
`compile`, loss trackers in `metrics`, a `train_step` used through `fit()`, and
`inference_model(direction)`: the Functional graph that the exporter converts to ONNX.

Batches are dicts of float32 BGR images in 0..1:
    warped_a, warped_b   (N, S, S, 3)     the network's input (S = config.size)
    target_a, target_b   (N, S', S', 3)   the same faces unwarped, S' = S * upscale (io_sizes)
(`warped_*` is the augmented input, `target_*` the same face unwarped; see trainer/data.py).
On aligned faces the method is given the face sets' AlignTemplate: its loss covers the
template's face region (trainer.losses.reconstruction_weights).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

from swapstream.faces.errors import InputError
from swapstream.faces.model_folder import DIRECTIONS
from swapstream.trainer.blocks import count_params
from swapstream.trainer.methods.configs import io_sizes


class SwapMethod(keras.Model):
    """Base class: shared encoder/decoders or generators, trained through `fit()`."""

    method_name: ClassVar[str] = ""
    optimizer_names: ClassVar[tuple[str, ...]] = ()
    # The metric every method tracks and that should fall while it learns (pixel L1 of the
    # reconstruction; the cycle reconstruction for CycleGAN).
    progress_metric: ClassVar[str] = "l1"

    def __init__(self, config, seed: int = 0, template=None) -> None:
        config.validate()
        super().__init__(name=self.method_name.replace("-", "_"))
        self.config = config
        self.template = template  # faces.align.AlignTemplate of the training faces, or None
        self.input_size, self.output_size = io_sizes(config)
        self.seed_generator = keras.random.SeedGenerator(seed)

    # ----- networks -------------------------------------------------------------------
    def networks(self) -> dict[str, keras.Model]:
        """The named sub-networks (Functional models) of this method."""
        raise NotImplementedError

    def swap(self, face, direction: str):
        """Symbolic graph from a face batch in 0..1 to the swapped face in 0..1."""
        raise NotImplementedError

    def inference_model(self, direction: str) -> keras.Model:
        """Functional model: input "face" float32 (None,S,S,3) BGR 0..1 -> (None,S',S',3) 0..1,
        S' = S * upscale (trainer.methods.configs.io_sizes)."""
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

    def track_losses(self, *names: str) -> None:
        """One Mean tracker per name in `self.trackers` (what `metrics` lists, in order); marks the
        model built, since all weights exist once the networks are built Functional models."""
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.built = True

    @property
    def metrics(self):
        """The trackers made by `track_losses` (Keras resets them each epoch)."""
        return list(self.trackers.values())

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
