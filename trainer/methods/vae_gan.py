"""`vae-gan`: VAE with a learned similarity metric (Larsen et al. 2016), one pair per identity.

Networks: the conv-VAE encoder (shared) and decoders (one per identity), plus one discriminator
per identity. Each discriminator also returns the activations of an intermediate layer
(`feature_layer`); reconstruction is measured there ("Dis_l" likelihood) instead of in pixels.
Losses per identity X, after the paper:
    encoder:        beta * KL + feature
    decoder X:      gamma * feature + adversarial (reconstructions and prior samples as fakes)
    discriminator:  BCE on real faces vs reconstructions and prior samples (decoded N(0, I)
                    codes; `prior_samples=False` leaves them out, as the cpu preset does)
A weighted pixel term (L1 + DSSIM, `pixel_weight`) is added to encoder and decoder losses: it
steadies the first few hundred steps, which matter on a CPU budget; set it to 0 for the pure
paper loss. Three optimizers: encoder, decoder, discriminator. Swap = decoder_B(mu(face_A)).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from swapstream.trainer import losses
from swapstream.trainer.blocks import conv_down
from swapstream.trainer.methods.ae import reconstruction_loss
from swapstream.trainer.methods.base import SwapMethod
from swapstream.trainer.methods.configs import io_sizes
from swapstream.trainer.methods.conv_vae import build_conv_decoder, build_conv_encoder
from swapstream.trainer.methods.vae import MeanCodeSwap
from swapstream.trainer.methods.vae_gan_defaults import VAEGANConfig


def build_discriminator(cfg: VAEGANConfig, name: str) -> keras.Model:
    """Face (S',S',3) at the decoders' output side -> (features at `feature_layer`, real/fake logit)."""
    side = io_sizes(cfg)[1]
    face = keras.Input((side, side, 3), name="face")
    x = face
    features = None
    for i, f in enumerate(cfg.disc_filters, start=1):
        x = conv_down(x, f, cfg.dtype_policy)
        if i == cfg.feature_layer:
            features = x
    x = layers.Flatten(dtype=cfg.dtype_policy)(x)
    logit = layers.Dense(1, dtype="float32", name="logit")(x)
    features = layers.Activation("linear", dtype="float32")(features)
    return keras.Model(face, [features, logit], name=name)


class VAEGAN(MeanCodeSwap, SwapMethod):
    """Shared VAE encoder, decoder and discriminator per identity; swap = decoder_B(mu(A))."""

    method_name = "vae-gan"
    optimizer_names = ("encoder", "decoder", "discriminator")

    def __init__(self, config: VAEGANConfig, seed: int = 0, template=None) -> None:
        super().__init__(config, seed, template)
        self.encoder = build_conv_encoder(config)
        self.decoder_a = build_conv_decoder(config, "decoder_a")
        self.decoder_b = build_conv_decoder(config, "decoder_b")
        self.disc_a = build_discriminator(config, "disc_a")
        self.disc_b = build_discriminator(config, "disc_b")
        self.loss_weights = losses.reconstruction_weights(config, self.output_size, template)
        self.track_losses("enc_loss", "dec_loss", "disc_loss", "feature", "kl", "l1")

    def networks(self):
        return {"encoder": self.encoder, "decoder_a": self.decoder_a, "decoder_b": self.decoder_b,
                "disc_a": self.disc_a, "disc_b": self.disc_b}

    def optimizer_variables(self, name):
        if name == "encoder":
            return self.encoder.trainable_variables
        if name == "decoder":
            return self.decoder_a.trainable_variables + self.decoder_b.trainable_variables
        return self.disc_a.trainable_variables + self.disc_b.trainable_variables

    def learning_rates(self):
        rates = super().learning_rates()
        rates["discriminator"] = self.config.disc_learning_rate
        return rates

    def _identity_losses(self, cfg, warped, target, decoder, disc):
        mu, logvar = self.encoder(warped, training=True)
        rec = decoder(self.sample(mu, logvar), training=True)
        feat_real, logit_real = disc(target, training=True)
        feat_rec, logit_rec = disc(rec, training=True)
        feature = tf.reduce_mean(tf.square(tf.stop_gradient(feat_real) - feat_rec))
        kl = losses.kl_divergence(mu, logvar) / float(self.output_size * self.output_size * 3)
        pixel, l1 = reconstruction_loss(cfg, target, rec, self.loss_weights)
        disc_loss = losses.bce_gan_loss(logit_real, True)
        adversarial = losses.bce_gan_loss(logit_rec, True)
        if cfg.prior_samples:
            prior = decoder(keras.random.normal(tf.shape(mu), seed=self.seed_generator), training=True)
            _, logit_prior = disc(prior, training=True)
            disc_loss += 0.5 * (losses.bce_gan_loss(logit_rec, False)
                                + losses.bce_gan_loss(logit_prior, False))
            adversarial += losses.bce_gan_loss(logit_prior, True)
        else:
            disc_loss += losses.bce_gan_loss(logit_rec, False)
        enc = cfg.beta * kl + cfg.feature_weight * feature + cfg.pixel_weight * pixel
        dec = (cfg.gamma * cfg.feature_weight * feature + cfg.adversarial_weight * adversarial
               + cfg.pixel_weight * pixel)
        return {"enc_loss": enc, "dec_loss": dec, "disc_loss": disc_loss, "feature": feature,
                "kl": kl, "l1": l1}

    def train_step(self, data):
        cfg = self.config
        scale = self.replica_scale()
        with tf.GradientTape(persistent=True) as tape:
            a = self._identity_losses(cfg, data["warped_a"], data["target_a"], self.decoder_a, self.disc_a)
            b = self._identity_losses(cfg, data["warped_b"], data["target_b"], self.decoder_b, self.disc_b)
            totals = {k: a[k] + b[k] for k in a}
            scaled = {k: totals[k] * scale for k in ("enc_loss", "dec_loss", "disc_loss")}
        self.apply_loss("encoder", tape, scaled["enc_loss"])
        self.apply_loss("decoder", tape, scaled["dec_loss"])
        self.apply_loss("discriminator", tape, scaled["disc_loss"])
        del tape
        for name, tracker in self.trackers.items():
            tracker.update_state(totals[name] / 2 if name in ("l1", "kl", "feature") else totals[name])
        return self.metric_logs()
