"""Loss terms shared by the methods: weight maps, masked L1, SSIM/DSSIM, KL divergence, LSGAN and BCE-GAN terms.

All take float32 images in 0..1, NHWC, and return a scalar averaged over the batch.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from swapstream.faces import regions
from swapstream.faces.align import AlignTemplate

# Where the eyes (brows included) and the mouth sit in a crop cut by `extract` (Haar box plus
# margin), as centre x, centre y, half-width, half-height in fractions of the side. Read off
# mean faces of synthetic and real face sets.
FEATURE_REGIONS = ((0.365, 0.42, 0.10, 0.07), (0.635, 0.42, 0.10, 0.07), (0.50, 0.655, 0.14, 0.09))


def face_weight_map(size: int, face_weight: float, expression_weight: float = 1.0) -> np.ndarray:
    """Per-pixel loss weights (S, S, 1): 1 at the border, `face_weight` on a soft central ellipse,
    and `expression_weight` times that on the eyes and the mouth.

    Crops from `extract` put the face in the middle with a margin around it; weighting the
    centre makes the networks spend their capacity on the face rather than on background.
    The eyes and the mouth cover a few percent of the crop but carry the expression a swap must
    keep (blinks, speech): without extra weight a network learns them last, after identity.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    # Ellipse a little taller than wide, covering roughly the detected face box.
    r = np.sqrt(((xx - c) / (0.36 * size)) ** 2 + ((yy - c) / (0.44 * size)) ** 2)
    inside = np.clip((1.15 - r) / 0.3, 0.0, 1.0)  # 1 inside, feathered edge
    weights = 1.0 + (face_weight - 1.0) * inside
    if expression_weight != 1.0:
        u, v = (xx + 0.5) / size, (yy + 0.5) / size
        feature = np.zeros_like(weights)
        for cx, cy, hw, hh in FEATURE_REGIONS:
            d = np.sqrt(((u - cx) / hw) ** 2 + ((v - cy) / hh) ** 2)
            feature = np.maximum(feature, np.clip((1.3 - d) / 0.6, 0.0, 1.0))  # soft-edged ellipse
        weights = weights * (1.0 + (expression_weight - 1.0) * feature)
    return weights[:, :, None].astype(np.float32)


def reconstruction_weights(config, size: int, template: AlignTemplate | None) -> np.ndarray:
    """The per-pixel loss weights (S, S, 1) of a method config at output side `size`.

    On aligned faces (`template` given) the template's face region with weight 1, the rest of the
    crop `background_weight`, and `expression_weight` on the eyes and the mouth at their template
    positions (faces/regions.py). Without a template, the central-ellipse map of `face_weight_map`.
    """
    expression = float(getattr(config, "expression_weight", 1.0))
    if template is None:
        return face_weight_map(size, float(getattr(config, "face_weight", 1.0)), expression)
    return regions.loss_weights(template, size, expression, float(getattr(config, "background_weight", 0.0)))


def weighted_l1(y_true, y_pred, weights) -> tf.Tensor:
    """Mean absolute error with per-pixel weights (weights: S x S x 1)."""
    w = tf.convert_to_tensor(weights)
    err = tf.reduce_sum(tf.abs(y_true - y_pred) * w, axis=[1, 2, 3])
    return tf.reduce_mean(err / (tf.reduce_sum(w) * 3.0))


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    ax = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def ssim_window(image_size: int) -> int:
    """SSIM window: the usual 11 px, smaller for tiny test images."""
    return 11 if image_size >= 64 else 7


def ssim(x, y, weights=None, window: int = 11) -> tf.Tensor:
    """Structural similarity of each pair of BGR images in 0..1, shape (N,): the project's one SSIM.

    The definition of `tf.image.ssim(x, y, max_val=1.0)`: Gaussian window of `window` px with
    sigma 1.5, 'valid' borders, K1 0.01, K2 0.03. The SSIM map is averaged over the channels, then
    over the pixels, uniformly or under `weights` (S x S x 1, e.g. the face-weight map or a face
    mask). Differentiable: the DSSIM loss below and compare's figures both use it.
    """
    x, y = tf.cast(x, tf.float32), tf.cast(y, tf.float32)
    channels = int(x.shape[-1])
    taps = _gaussian_taps(window, 1.5)
    # The five local moments blurred in one pass: the 2-D Gaussian is separable, so two 1-D
    # depthwise convolutions over all 5 x C channels stacked (a fraction of five 2-D blurs' cost).
    stack = tf.concat([x, y, x * x, y * y, x * y], axis=-1)
    kx = tf.constant(np.tile(taps[None, :, None, None], (1, 1, 5 * channels, 1)))
    ky = tf.constant(np.tile(taps[:, None, None, None], (1, 1, 5 * channels, 1)))
    blurred = tf.nn.depthwise_conv2d(stack, kx, strides=[1, 1, 1, 1], padding="VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, ky, strides=[1, 1, 1, 1], padding="VALID")
    mu_x, mu_y, exx, eyy, exy = tf.split(blurred, 5, axis=-1)

    c1, c2 = 0.01**2, 0.03**2
    sxx = exx - mu_x * mu_x
    syy = eyy - mu_y * mu_y
    sxy = exy - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    smap = tf.reduce_mean(smap, axis=-1, keepdims=True)
    if weights is None:
        return tf.reduce_mean(smap, axis=[1, 2, 3])
    half = (window - 1) // 2
    w = tf.cast(tf.convert_to_tensor(weights), tf.float32)[half:-half, half:-half, :]
    return tf.reduce_sum(smap * w, axis=[1, 2, 3]) / tf.reduce_sum(w)


def weighted_dssim(y_true, y_pred, weights, window: int = 11) -> tf.Tensor:
    """(1 - SSIM) / 2 averaged over the batch, with the SSIM map averaged under `weights`."""
    return tf.reduce_mean((1.0 - ssim(y_true, y_pred, weights, window)) / 2.0)


def kl_divergence(mu, logvar) -> tf.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch."""
    kl = -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar), axis=-1)
    return tf.reduce_mean(kl)


def lsgan_loss(pred, target_is_real: bool) -> tf.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean (D(x) - 1)^2 for real, D(x)^2 for fake."""
    target = 1.0 if target_is_real else 0.0
    return tf.reduce_mean(tf.square(pred - target))


def bce_gan_loss(logits, target_is_real: bool) -> tf.Tensor:
    """Binary cross-entropy on discriminator logits (the non-saturating GAN loss)."""
    labels = tf.ones_like(logits) if target_is_real else tf.zeros_like(logits)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
