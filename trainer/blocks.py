"""Network building blocks shared by the method builders.

Only layers that tf2onnx converts cleanly: Conv2D, Conv2DTranspose, Dense, Reshape, Flatten,
LeakyReLU, Activation, GroupNormalization, Add, pixel shuffle via `ops.depth_to_space`, and a
fixed Sobel convolution after a reflecting pad (`edge_magnitude`).
Every builder takes the dtype policy explicitly ("float32" or "mixed_bfloat16"); there is no
global mixed-precision switch.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

GREY_BGR = np.array([0.114, 0.587, 0.299], np.float32)  # faces are BGR crops (OpenCV order)
# Sobel x and y kernels as one (3, 3, 1, 2) convolution kernel.
SOBEL = np.stack([np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
                  np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32)], axis=-1)[:, :, None, :]


def conv_down(x, filters: int, dtype: str, kernel: int = 5, name: str | None = None):
    """Strided 5x5 convolution (halves H and W) + LeakyReLU(0.1): the deepfakes encoder step."""
    x = layers.Conv2D(filters, kernel, strides=2, padding="same", dtype=dtype, name=name)(x)
    return layers.LeakyReLU(0.1, dtype=dtype)(x)


def upscale(x, filters: int, dtype: str, name: str | None = None):
    """Pixel-shuffle upscale (doubles H and W): 3x3 conv to 4*filters, LeakyReLU, depth_to_space."""
    x = layers.Conv2D(filters * 4, 3, padding="same", dtype=dtype, name=name)(x)
    x = layers.LeakyReLU(0.1, dtype=dtype)(x)
    return ops.depth_to_space(x, 2)


def edge_magnitude(face):
    """Grey-level Sobel gradient magnitude (S, S, 1) of a float32 face batch in 0..1: where the
    image changes, not which way. An opening mouth adds edges on a light face and on a dark one
    alike, while its brightness change can run opposite ways."""
    grey = ops.sum(face * GREY_BGR, axis=-1, keepdims=True)
    grey = ops.pad(grey, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
    gradients = ops.conv(grey, SOBEL, padding="valid")
    return ops.sqrt(ops.sum(ops.square(gradients), axis=-1, keepdims=True) + 1e-6)


def instance_norm(dtype: str, name: str | None = None):
    """Instance normalisation: GroupNormalization with one group per channel."""
    return layers.GroupNormalization(groups=-1, epsilon=1e-5, dtype=dtype, name=name)


def resnet_block(x, filters: int, dtype: str):
    """CycleGAN residual block: conv3x3-IN-ReLU-conv3x3-IN + skip."""
    y = layers.Conv2D(filters, 3, padding="same", dtype=dtype)(x)
    y = instance_norm(dtype)(y)
    y = layers.Activation("relu", dtype=dtype)(y)
    y = layers.Conv2D(filters, 3, padding="same", dtype=dtype)(y)
    y = instance_norm(dtype)(y)
    return layers.Add(dtype=dtype)([x, y])


def to_image(x, dtype: str, activation: str = "sigmoid", kernel: int = 5, name: str | None = None):
    """Final 3-channel convolution; computed in float32 even under mixed precision."""
    x = layers.Conv2D(3, kernel, padding="same", dtype=dtype, name=name)(x)
    return layers.Activation(activation, dtype="float32")(x)


def icnr(conv: layers.Conv2D, factor: int) -> None:
    """Initialise a built pixel-shuffle convolution so that its factor^2 sub-pixels start equal
    (ICNR, Aitken et al. 2017): it begins as nearest-neighbour upsampling of one random
    convolution, so the first images carry no fixed sub-pixel grain for training to undo."""
    kernel = conv.kernel.numpy()
    channels = kernel.shape[-1] // (factor * factor)
    # depth_to_space puts channel (i * factor + j) * C + c at sub-pixel (i, j), colour c.
    conv.kernel.assign(np.tile(kernel[..., :channels], (1, 1, 1, factor * factor)))


def to_image_upscaled(x, dtype: str, factor: int = 2, kernel: int = 5, name: str | None = None):
    """Pixel-shuffle output head: one convolution to 3 * factor^2 channels (ICNR-initialised),
    then depth-to-space, so the image comes out `factor` times the side of `x` (DeepFaceLab
    SAEHD's "-d" head: the decoder runs at half the output side); sigmoid in float32."""
    conv = layers.Conv2D(3 * factor * factor, kernel, padding="same", dtype=dtype, name=name)
    x = conv(x)
    icnr(conv, factor)
    x = ops.depth_to_space(x, factor)
    return layers.Activation("sigmoid", dtype="float32")(x)


def count_params(model: keras.Model) -> int:
    """Number of scalar weights (trainable and not) in a built model."""
    return int(sum(int(ops.size(w)) for w in model.weights))
