"""`vae`: the dense variational autoencoder (fully connected encoder and decoders).

The "dense VAE": a shared MLP encoder gives mu and log-variance of a Gaussian code,
z = mu + sigma * eps (reparameterisation trick), and one MLP decoder per identity paints the
face. Loss = reconstruction (weighted L1 + DSSIM) + beta * KL, with KL summed over the code and
divided by the number of pixel values so beta does not depend on the size. The swap uses mu (no
sampling): decoder_B(mu(face_A)).

The encoder reads the grey-level gradient magnitude of the face (`trainer.blocks.edge_magnitude`),
flattened, rather than its pixels: a dense encoder on pixels codes A's mouth in another direction
than B's (their brightness changes run opposite ways), so decoder B would draw A's open mouth
closed; an opening mouth adds edges on both faces alike.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from swapstream.trainer import losses
from swapstream.trainer.blocks import edge_magnitude
from swapstream.trainer.methods.ae import reconstruction_loss
from swapstream.trainer.methods.base import SwapMethod
from swapstream.trainer.methods.vae_defaults import VAEConfig


def build_dense_encoder(cfg: VAEConfig) -> keras.Model:
    """Face (S,S,3) -> (mu, logvar), each (latent_dim,), read from the face's edge magnitude."""
    face = keras.Input((cfg.size, cfg.size, 3), name="face")
    x = layers.Flatten(dtype=cfg.dtype_policy)(edge_magnitude(face))
    for h in cfg.hidden:
        x = layers.Dense(h, dtype=cfg.dtype_policy)(x)
        x = layers.LeakyReLU(0.1, dtype=cfg.dtype_policy)(x)
    mu = layers.Dense(cfg.latent_dim, dtype="float32", name="mu")(x)
    logvar = layers.Dense(cfg.latent_dim, dtype="float32", name="logvar")(x)
    return keras.Model(face, [mu, logvar], name="encoder")


def build_dense_decoder(cfg: VAEConfig, name: str) -> keras.Model:
    """Code (latent_dim,) -> face (S,S,3) in 0..1."""
    z = keras.Input((cfg.latent_dim,), name="z")
    x = z
    for h in reversed(cfg.hidden):
        x = layers.Dense(h, dtype=cfg.dtype_policy)(x)
        x = layers.LeakyReLU(0.1, dtype=cfg.dtype_policy)(x)
    x = layers.Dense(cfg.size * cfg.size * 3, dtype=cfg.dtype_policy)(x)
    x = layers.Reshape((cfg.size, cfg.size, 3), dtype=cfg.dtype_policy)(x)
    return keras.Model(z, layers.Activation("sigmoid", dtype="float32")(x), name=name)


class MeanCodeSwap:
    """Sampling and swapping of the VAE family (`vae`, `conv-vae`, `vae-gan`): a mixin for a
    SwapMethod with `encoder` (face -> mu, logvar), `decoder_a`, `decoder_b`."""

    def sample(self, mu, logvar):
        """z = mu + sigma * eps, eps ~ N(0, I) from this model's seed generator."""
        eps = keras.random.normal(tf.shape(mu), seed=self.seed_generator)
        return mu + tf.exp(0.5 * logvar) * eps

    def call(self, face, training=False):
        """Reconstruction of identity A's faces through the mean code."""
        mu, _ = self.encoder(face, training=training)
        return self.decoder_a(mu, training=training)

    def swap(self, face, direction):
        """The other identity's decoder on the mean code (no sampling at swap time)."""
        mu, _ = self.encoder(face)
        decoder = self.decoder_b if direction == "a2b" else self.decoder_a
        return decoder(mu)


class VariationalAutoencoder(MeanCodeSwap, SwapMethod):
    """Shared (mu, logvar) encoder, one decoder per identity; swap = decoder_B(mu(A)).

    Subclasses change only the network builders (`conv-vae`).
    """

    method_name = "vae"
    optimizer_names = ("vae",)

    def __init__(self, config, seed: int = 0, template=None) -> None:
        super().__init__(config, seed, template)
        self.encoder, self.decoder_a, self.decoder_b = self.build_networks(config)
        self.loss_weights = losses.reconstruction_weights(config, self.output_size, template)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.l1_tracker = keras.metrics.Mean(name="l1")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.built = True

    @staticmethod
    def build_networks(config):
        """(encoder, decoder_a, decoder_b) for this variant."""
        return (build_dense_encoder(config), build_dense_decoder(config, "decoder_a"),
                build_dense_decoder(config, "decoder_b"))

    @property
    def metrics(self):
        return [self.loss_tracker, self.l1_tracker, self.kl_tracker]

    def networks(self):
        return {"encoder": self.encoder, "decoder_a": self.decoder_a, "decoder_b": self.decoder_b}

    def optimizer_variables(self, name):
        return (self.encoder.trainable_variables + self.decoder_a.trainable_variables
                + self.decoder_b.trainable_variables)

    def train_step(self, data):
        cfg = self.config
        pixels = float(self.output_size * self.output_size * 3)
        with tf.GradientTape() as tape:
            total, l1s, kls = 0.0, [], []
            for side, decoder in (("a", self.decoder_a), ("b", self.decoder_b)):
                mu, logvar = self.encoder(data[f"warped_{side}"], training=True)
                rec = decoder(self.sample(mu, logvar), training=True)
                rec_loss, l1 = reconstruction_loss(cfg, data[f"target_{side}"], rec, self.loss_weights)
                kl = losses.kl_divergence(mu, logvar)
                total += rec_loss + cfg.beta * kl / pixels
                l1s.append(l1)
                kls.append(kl)
            scaled = total * self.replica_scale()
        self.apply_loss("vae", tape, scaled)
        self.loss_tracker.update_state(total)
        self.l1_tracker.update_state((l1s[0] + l1s[1]) / 2)
        self.kl_tracker.update_state((kls[0] + kls[1]) / 2)
        return self.metric_logs()
