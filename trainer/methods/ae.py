"""`ae`: the classic face-swap autoencoder (one shared encoder, one decoder per identity).

Training reconstructs each identity through its own decoder; the swap A->B is
decoder_B(encoder(face_A)): the shared code carries pose and expression, the decoder paints the
identity. Loss per identity: l1_weight * L1 + dssim_weight * DSSIM, both on the face region of
the alignment template (or toward the crop's centre on faces without one) and more on the eyes
and mouth (expression_weight). Architecture after deepfakes/faceswap's "original" model, scaled
by config; with `upscale` 2 the decoders end in a pixel-shuffle head and paint the face at twice
the input's side, against targets cut at that side.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from swapstream.trainer import losses
from swapstream.trainer.blocks import conv_down, to_image, to_image_upscaled, upscale
from swapstream.trainer.methods.ae_defaults import AEConfig
from swapstream.trainer.methods.base import SwapMethod


def build_encoder(cfg: AEConfig) -> keras.Model:
    """Face (S,S,3) -> code map (2s, 2s, bottleneck) with s = S / 2^len(encoder_filters)."""
    s = cfg.size // 2 ** len(cfg.encoder_filters)
    face = keras.Input((cfg.size, cfg.size, 3), name="face")
    x = face
    for f in cfg.encoder_filters:
        x = conv_down(x, f, cfg.dtype_policy)
    x = layers.Flatten(dtype=cfg.dtype_policy)(x)
    x = layers.Dense(cfg.latent_dim, dtype=cfg.dtype_policy, name="latent")(x)
    x = layers.Dense(s * s * cfg.bottleneck_filters, dtype=cfg.dtype_policy)(x)
    x = layers.Reshape((s, s, cfg.bottleneck_filters), dtype=cfg.dtype_policy)(x)
    x = upscale(x, cfg.bottleneck_filters, cfg.dtype_policy)
    return keras.Model(face, x, name="encoder")


def output_head(x, cfg):
    """The decoders' last layer: a face at the side of `x` (upscale 1) or twice it (pixel shuffle)."""
    if getattr(cfg, "upscale", 1) == 1:
        return to_image(x, cfg.dtype_policy)
    return to_image_upscaled(x, cfg.dtype_policy, cfg.upscale)


def build_decoder(cfg: AEConfig, name: str) -> keras.Model:
    """Code map (2s, 2s, bottleneck) -> face (S',S',3) in 0..1, S' = size * upscale."""
    s = 2 * cfg.size // 2 ** len(cfg.encoder_filters)
    code = keras.Input((s, s, cfg.bottleneck_filters), name="code")
    x = code
    for f in cfg.decoder_filters:
        x = upscale(x, f, cfg.dtype_policy)
    return keras.Model(code, output_head(x, cfg), name=name)


def reconstruction_loss(cfg, target, output, weights):
    """Weighted L1 and DSSIM of one identity's reconstruction: returns (total, l1).

    L1 at the output's side; DSSIM there too, or on both faces area-averaged by the config's
    `dssim_downscale` (weights likewise)."""
    output = tf.cast(output, tf.float32)
    l1 = losses.weighted_l1(target, output, weights)
    total = cfg.l1_weight * l1
    if cfg.dssim_weight:
        factor = int(getattr(cfg, "dssim_downscale", 1))
        if factor > 1:
            target, output = (tf.nn.avg_pool2d(t, factor, factor, "VALID") for t in (target, output))
            weights = tf.nn.avg_pool2d(tf.convert_to_tensor(weights)[None], factor, factor, "VALID")[0]
        total += cfg.dssim_weight * losses.weighted_dssim(
            target, output, weights, losses.ssim_window(int(weights.shape[0])))
    return total, l1


class Autoencoder(SwapMethod):
    """Shared encoder, decoder A, decoder B; swap = decoder_B(encoder(A))."""

    method_name = "ae"
    optimizer_names = ("ae",)

    def __init__(self, config: AEConfig, seed: int = 0, template=None) -> None:
        super().__init__(config, seed, template)
        self.encoder = build_encoder(config)
        self.decoder_a = build_decoder(config, "decoder_a")
        self.decoder_b = build_decoder(config, "decoder_b")
        self.loss_weights = losses.reconstruction_weights(config, self.output_size, template)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.l1_tracker = keras.metrics.Mean(name="l1")
        self.built = True  # all weights exist: the networks are built Functional models

    @property
    def metrics(self):
        return [self.loss_tracker, self.l1_tracker]

    def networks(self):
        return {"encoder": self.encoder, "decoder_a": self.decoder_a, "decoder_b": self.decoder_b}

    def optimizer_variables(self, name):
        return (self.encoder.trainable_variables + self.decoder_a.trainable_variables
                + self.decoder_b.trainable_variables)

    def call(self, face, training=False):
        """Reconstruction of identity A's faces (used by Keras to build; swaps go via `swap`)."""
        return self.decoder_a(self.encoder(face, training=training), training=training)

    def swap(self, face, direction):
        decoder = self.decoder_b if direction == "a2b" else self.decoder_a
        return decoder(self.encoder(face))

    def side_loss(self, warped, target, decoder):
        """(total, l1) of one identity's batch: `warped` through the encoder and `decoder`,
        against `target` (output side) on the loss weights. The pair's step and pretraining
        both use it."""
        rec = decoder(self.encoder(warped, training=True), training=True)
        return reconstruction_loss(self.config, target, rec, self.loss_weights)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss_a, l1_a = self.side_loss(data["warped_a"], data["target_a"], self.decoder_a)
            loss_b, l1_b = self.side_loss(data["warped_b"], data["target_b"], self.decoder_b)
            loss = loss_a + loss_b
            scaled = loss * self.replica_scale()
        self.apply_loss("ae", tape, scaled)
        self.loss_tracker.update_state(loss)
        self.l1_tracker.update_state((l1_a + l1_b) / 2)
        return self.metric_logs()
