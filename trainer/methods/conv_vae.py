"""`conv-vae`: the convolutional variational autoencoder.

Same training as the dense `vae` (shared encoder giving mu and log-variance, one decoder per
identity, reconstruction + beta * KL, swap through mu), with convolutional networks: strided 5x5
convolutions down to a dense code, and pixel-shuffle upscales back up in each decoder (with
`upscale` 2 a pixel-shuffle head paints the face at twice the input's side, as in `ae`).
"""
from __future__ import annotations

import keras
from keras import layers

from swapstream.trainer.blocks import conv_down, upscale
from swapstream.trainer.methods.ae import output_head
from swapstream.trainer.methods.vae import VariationalAutoencoder


def build_conv_encoder(cfg) -> keras.Model:
    """Face (S,S,3) -> (mu, logvar), each (latent_dim,)."""
    face = keras.Input((cfg.size, cfg.size, 3), name="face")
    x = face
    for f in cfg.encoder_filters:
        x = conv_down(x, f, cfg.dtype_policy)
    x = layers.Flatten(dtype=cfg.dtype_policy)(x)
    mu = layers.Dense(cfg.latent_dim, dtype="float32", name="mu")(x)
    logvar = layers.Dense(cfg.latent_dim, dtype="float32", name="logvar")(x)
    return keras.Model(face, [mu, logvar], name="encoder")


def build_conv_decoder(cfg, name: str) -> keras.Model:
    """Code (latent_dim,) -> face (S',S',3) in 0..1, S' = size * upscale (dense to a small map,
    then upscales)."""
    s = cfg.size // 2 ** len(cfg.encoder_filters)
    z = keras.Input((cfg.latent_dim,), name="z")
    x = layers.Dense(s * s * cfg.bottleneck_filters, dtype=cfg.dtype_policy)(z)
    x = layers.Reshape((s, s, cfg.bottleneck_filters), dtype=cfg.dtype_policy)(x)
    x = upscale(x, cfg.bottleneck_filters, cfg.dtype_policy)
    for f in cfg.decoder_filters:
        x = upscale(x, f, cfg.dtype_policy)
    return keras.Model(z, output_head(x, cfg), name=name)


class ConvVariationalAutoencoder(VariationalAutoencoder):
    """Convolutional encoder/decoders, trained and swapped like the dense VAE."""

    method_name = "conv-vae"
    optimizer_names = ("vae",)

    @staticmethod
    def build_networks(config):
        return (build_conv_encoder(config), build_conv_decoder(config, "decoder_a"),
                build_conv_decoder(config, "decoder_b"))
