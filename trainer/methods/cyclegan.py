"""`cyclegan`: unpaired translation A <-> B (Zhu et al. 2017).

Generators G_AB and G_BA are ResNet generators (c7s1-F, two strided downsamples, `res_blocks`
residual blocks, two upsamples (nearest + 3x3 conv), c7s1-3 tanh) with instance normalisation
(GroupNormalization with one group per channel). Discriminators are PatchGANs. Losses: LSGAN,
cycle consistency (lambda = cycle_weight, 10) and identity (identity_weight * lambda, 0.5 * 10).
Networks take and give images in 0..1 and rescale to -1..1 inside, so the exported generator
needs no wrapper; L1 terms are measured on the -1..1 scale of the paper, on aligned faces over
the template's face region only (the discriminators still see the whole crop). Image-to-image:
the output has the input's side. Swap = G_AB(face_A).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from swapstream.trainer import losses
from swapstream.trainer.blocks import instance_norm, resnet_block
from swapstream.trainer.methods.base import SwapMethod
from swapstream.trainer.methods.cyclegan_defaults import CycleGANConfig


def build_generator(cfg: CycleGANConfig, name: str) -> keras.Model:
    """ResNet generator: face (S,S,3) in 0..1 -> translated face in 0..1."""
    dt, f = cfg.dtype_policy, cfg.gen_filters
    face = keras.Input((cfg.size, cfg.size, 3), name="face")
    x = layers.Rescaling(2.0, offset=-1.0, dtype=dt)(face)
    x = layers.Conv2D(f, 7, padding="same", dtype=dt)(x)
    x = layers.Activation("relu", dtype=dt)(instance_norm(dt)(x))
    for mult in (2, 4):
        x = layers.Conv2D(f * mult, 3, strides=2, padding="same", dtype=dt)(x)
        x = layers.Activation("relu", dtype=dt)(instance_norm(dt)(x))
    for _ in range(cfg.res_blocks):
        x = resnet_block(x, f * 4, dt)
    for mult in (2, 1):
        # Nearest upsampling + conv instead of a transposed conv: no checkerboard artefacts
        # (Odena et al. 2016), which a few hundred CPU steps would not train away.
        x = layers.UpSampling2D(2, interpolation="nearest", dtype=dt)(x)
        x = layers.Conv2D(f * mult, 3, padding="same", dtype=dt)(x)
        x = layers.Activation("relu", dtype=dt)(instance_norm(dt)(x))
    x = layers.Conv2D(3, 7, padding="same", dtype=dt)(x)
    x = layers.Activation("tanh", dtype="float32")(x)
    out = layers.Rescaling(0.5, offset=0.5, dtype="float32")(x)
    return keras.Model(face, out, name=name)


def build_patchgan(cfg: CycleGANConfig, name: str) -> keras.Model:
    """PatchGAN: face in 0..1 -> grid of real/fake scores (LSGAN, no sigmoid)."""
    dt = cfg.dtype_policy
    face = keras.Input((cfg.size, cfg.size, 3), name="face")
    x = layers.Rescaling(2.0, offset=-1.0, dtype=dt)(face)
    last = len(cfg.disc_filters) - 1
    for i, f in enumerate(cfg.disc_filters):
        x = layers.Conv2D(f, 4, strides=1 if i == last else 2, padding="same", dtype=dt)(x)
        if i > 0:
            x = instance_norm(dt)(x)
        x = layers.LeakyReLU(0.2, dtype=dt)(x)
    score = layers.Conv2D(1, 4, padding="same", dtype="float32")(x)
    return keras.Model(face, score, name=name)


class CycleGAN(SwapMethod):
    """Two generators, two PatchGAN discriminators; swap = G_AB(A) or G_BA(B)."""

    method_name = "cyclegan"
    optimizer_names = ("generator", "discriminator")
    progress_metric = "l1"  # the cycle reconstruction's L1 (0..1 scale)

    def __init__(self, config: CycleGANConfig, seed: int = 0, template=None) -> None:
        super().__init__(config, seed, template)
        # Uniform without a template; the face region (weight 1, background 0) with one.
        self.loss_weights = losses.reconstruction_weights(config, self.output_size, template)
        self.gen_ab = build_generator(config, "gen_ab")
        self.gen_ba = build_generator(config, "gen_ba")
        self.disc_a = build_patchgan(config, "disc_a")
        self.disc_b = build_patchgan(config, "disc_b")
        self.track_losses("gen_loss", "disc_loss", "adversarial", "cycle", "identity", "l1")

    def networks(self):
        return {"gen_ab": self.gen_ab, "gen_ba": self.gen_ba, "disc_a": self.disc_a,
                "disc_b": self.disc_b}

    def optimizer_variables(self, name):
        if name == "generator":
            return self.gen_ab.trainable_variables + self.gen_ba.trainable_variables
        return self.disc_a.trainable_variables + self.disc_b.trainable_variables

    def call(self, face, training=False):
        return self.gen_ab(face, training=training)

    def swap(self, face, direction):
        return (self.gen_ab if direction == "a2b" else self.gen_ba)(face)

    def train_step(self, data):
        cfg = self.config
        # CycleGAN learns from unpaired real faces: the unwarped (flipped, jittered) targets.
        real_a, real_b = data["target_a"], data["target_b"]

        def l1(x, y):  # on the paper's -1..1 scale
            return 2.0 * losses.weighted_l1(y, tf.cast(x, tf.float32), self.loss_weights)

        with tf.GradientTape(persistent=True) as tape:
            fake_b = self.gen_ab(real_a, training=True)
            fake_a = self.gen_ba(real_b, training=True)
            cyc_a = self.gen_ba(fake_b, training=True)
            cyc_b = self.gen_ab(fake_a, training=True)
            score_fake_b = self.disc_b(fake_b, training=True)
            score_fake_a = self.disc_a(fake_a, training=True)
            adversarial = (losses.lsgan_loss(score_fake_b, True)
                           + losses.lsgan_loss(score_fake_a, True))
            cycle = l1(cyc_a, real_a) + l1(cyc_b, real_b)
            gen_loss = adversarial + cfg.cycle_weight * cycle
            identity = tf.constant(0.0)
            if cfg.identity_weight:
                identity = (l1(self.gen_ba(real_a, training=True), real_a)
                            + l1(self.gen_ab(real_b, training=True), real_b))
                gen_loss += cfg.identity_weight * cfg.cycle_weight * identity
            disc_loss = 0.5 * (losses.lsgan_loss(self.disc_a(real_a, training=True), True)
                               + losses.lsgan_loss(self.disc_a(tf.stop_gradient(fake_a), training=True), False)
                               + losses.lsgan_loss(self.disc_b(real_b, training=True), True)
                               + losses.lsgan_loss(self.disc_b(tf.stop_gradient(fake_b), training=True), False))
            scale = self.replica_scale()
            gen_scaled, disc_scaled = gen_loss * scale, disc_loss * scale
        self.apply_loss("generator", tape, gen_scaled)
        self.apply_loss("discriminator", tape, disc_scaled)
        del tape
        values = {"gen_loss": gen_loss, "disc_loss": disc_loss, "adversarial": adversarial,
                  "cycle": cycle, "identity": identity, "l1": cycle / 4.0}
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        return self.metric_logs()
