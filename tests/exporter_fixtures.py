"""Tiny Functional models shaped like the trainer's networks, for the exporter tests.

They use the layer set of trainer/blocks.py (strided convs, dense bottleneck, pixel-shuffle
upscale, instance norm, residual add, transposed conv) plus batch norm, so the exporter is
exercised on every op family a method can produce, in well under a second per conversion.
"""
from __future__ import annotations

import keras
from keras import layers, ops


def tiny_autoencoder(size: int = 16, seed: int = 0, with_mask: bool = False) -> keras.Model:
    """Encoder (2 strided convs, dense) + decoder (dense, pixel shuffle, batch norm, conv)."""
    keras.utils.set_random_seed(seed)
    face = keras.Input((size, size, 3), name="face")
    x = layers.Conv2D(8, 5, strides=2, padding="same")(face)
    x = layers.LeakyReLU(0.1)(x)
    x = layers.Conv2D(16, 5, strides=2, padding="same")(x)
    x = layers.LeakyReLU(0.1)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32)(x)
    s = size // 4
    x = layers.Dense(s * s * 16)(x)
    x = layers.Reshape((s, s, 16))(x)
    x = layers.Conv2D(8 * 4, 3, padding="same")(x)
    x = layers.LeakyReLU(0.1)(x)
    x = ops.depth_to_space(x, 2)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    out = layers.Conv2D(3, 5, padding="same", activation="sigmoid", name="swapped")(x)
    outputs = [out]
    if with_mask:
        outputs.append(layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="mask")(x))
    model = keras.Model(face, outputs if with_mask else out)
    _randomise_batch_norm(model, seed)
    return model


def tiny_generator(size: int = 16, seed: int = 0) -> keras.Model:
    """CycleGAN-like: conv + instance norm, a residual block, transposed-conv upsampling, tanh -> 0..1."""
    keras.utils.set_random_seed(seed)
    face = keras.Input((size, size, 3), name="face")
    x = layers.Conv2D(8, 7, padding="same")(face)
    x = layers.GroupNormalization(groups=-1, epsilon=1e-5)(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    y = layers.Conv2D(16, 3, padding="same")(x)
    y = layers.GroupNormalization(groups=-1, epsilon=1e-5)(y)
    y = layers.Activation("relu")(y)
    x = layers.Add()([x, y])
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = layers.Conv2D(3, 7, padding="same", activation="tanh")(x)
    out = layers.Rescaling(0.5, offset=0.5, name="swapped")(x)
    return keras.Model(face, out)


def _randomise_batch_norm(model: keras.Model, seed: int) -> None:
    """Give batch-norm statistics non-trivial values so the export must carry them correctly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            for var in layer.weights:
                shape = tuple(var.shape)
                if "variance" in var.path:
                    var.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
                else:
                    var.assign(rng.normal(0.0, 0.3, shape).astype("float32"))
