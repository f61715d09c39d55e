"""The network `swapstream pretrain` trains: a method's shared encoder and ONE generic decoder.

The encoder and decoder are built by the method itself (so their weights fit a pair run of the
same config exactly) and trained with the method's own per-identity reconstruction loss, on
faces of many identities pooled into one stream. It runs through the same loop as a pair
(trainer/loop.py: checkpoints, previews, divergence guard, time budget).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from swapstream.trainer.methods import build_method
from swapstream.trainer.methods.base import SwapMethod


class PriorTrainer(SwapMethod):
    """Encoder + generic decoder of method `base_method`; every batch face is reconstructed.

    A batch is the pair format (warped_a, target_a, warped_b, target_b), both halves drawn from
    the pooled faces: the step sends all of them through the one decoder, so it costs what a
    pair's step costs.
    """

    method_name = "prior"
    optimizer_names = ("prior",)

    def __init__(self, config, base_method: str = "ae", seed: int = 0, template=None) -> None:
        super().__init__(config, seed, template)
        base = build_method(base_method, config, seed=seed, template=template)
        self.base_method = base_method
        self.encoder = base.encoder
        self.decoder = base.decoder_a
        # The pair's own per-identity loss (a bound method: Keras does not track it, so the
        # unused decoder_b stays out of this model's weights).
        self._side_loss = base.side_loss
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.l1_tracker = keras.metrics.Mean(name="l1")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.l1_tracker]

    def networks(self):
        return {"encoder": self.encoder, "decoder": self.decoder}

    def optimizer_variables(self, name):
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def call(self, face, training=False):
        return self.decoder(self.encoder(face, training=training), training=training)

    def swap(self, face, direction):
        """The generic reconstruction (a prior has no identities to swap between)."""
        return self.decoder(self.encoder(face))

    def train_step(self, data):
        warped = tf.concat([data["warped_a"], data["warped_b"]], axis=0)
        target = tf.concat([data["target_a"], data["target_b"]], axis=0)
        with tf.GradientTape() as tape:
            # The pair's loss is a sum over its two identities: twice the per-identity mean.
            loss, l1 = self._side_loss(warped, target, self.decoder)
            loss = 2.0 * loss
            scaled = loss * self.replica_scale()
        self.apply_loss("prior", tape, scaled)
        self.loss_tracker.update_state(loss)
        self.l1_tracker.update_state(l1)
        return self.metric_logs()
