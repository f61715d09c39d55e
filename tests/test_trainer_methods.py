"""Trainer methods: registry, inference-model contract, size checks, and loss falling for each."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from swapstream.faces.align import AlignTemplate  # noqa: E402
from swapstream.faces.errors import InputError  # noqa: E402
from swapstream.faces.faceset import resize_faces  # noqa: E402
from swapstream.trainer.data import AugmentConfig, make_dataset  # noqa: E402
from swapstream.trainer.methods import METHODS, build_method, get_method, preset_config  # noqa: E402
from swapstream.trainer.methods.configs import io_sizes  # noqa: E402
from tests.trainer_fixtures import synthetic_faces  # noqa: E402

ALL = ["ae", "vae", "conv-vae", "vae-gan", "cyclegan"]
# The methods whose decoders end in the 2x pixel-shuffle head in their presets.
UPSCALED = ["ae", "conv-vae", "vae-gan"]
TEMPLATE = AlignTemplate(size=160)


def _dataset(method, faces, batch_size=4, augment=None, seed=0):
    """Batches for `method`: targets at its output side, inputs at its input side."""
    side = method.output_size
    return make_dataset(resize_faces(faces[0], side), resize_faces(faces[1], side), batch_size=batch_size,
                        augment=augment or AugmentConfig(), seed=seed, input_size=method.input_size)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Drop the graphs and name counters of earlier tests (keeps later tracing fast)."""
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(3, 24, 32, seed=1), synthetic_faces(11, 24, 32, seed=2)


def test_registry_lists_all_five_and_rejects_unknown_names():
    assert list(METHODS) == ALL
    for name in ALL:
        assert get_method(name).method_name == name
    with pytest.raises(InputError) as err:
        get_method("gan")
    for name in ALL:
        assert name in str(err.value)


def test_each_methods_presets_and_config_come_from_its_defaults_module():
    """The registry is the one list: each name's class, config class and presets agree, every
    method has the shared presets, and a preset's batch, schedule and augmentation sit beside
    its networks."""
    from swapstream.trainer.methods import config_class, get_preset, preset_names, shared_preset_names

    assert shared_preset_names() == ("tiny", "cpu", "gpu")
    for name in ALL:
        assert get_method(name).method_name == name
        for preset in preset_names(name):
            p = get_preset(name, preset)
            assert type(p.model) is config_class(name), (name, preset)
            assert p.train.batch_size > 0 and p.augment.warp_grid >= 2
    assert get_preset("cyclegan", "cpu").train.batch_size == 4 < get_preset("ae", "cpu").train.batch_size
    assert get_preset("ae", "cpu").augment.warp == 0.0 < get_preset("ae", "gpu").augment.warp
    with pytest.raises(InputError, match="valid presets: tiny, cpu, gpu, demo"):
        get_preset("ae", "huge")


@pytest.mark.parametrize("name", ALL)
def test_inference_model_contract(name):
    cfg = preset_config(name, "tiny")
    method = build_method(name, cfg)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    out = 64 if name in UPSCALED else 32  # the pixel-shuffle head doubles the side
    assert io_sizes(cfg) == (32, out) and (method.input_size, method.output_size) == (32, out)
    outputs = {}
    for direction in ("a2b", "b2a"):
        model = method.inference_model(direction)
        # Functional (not a subclass): what tf2onnx converts.
        assert type(model).__name__ == "Functional"
        assert [t.name for t in model.inputs] == ["face"]
        assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)
        assert model.inputs[0].dtype == "float32"
        assert tuple(model.outputs[0].shape) == (None, out, out, 3)
        y = np.asarray(model(x))
        assert y.dtype == np.float32 and y.shape == (2, out, out, 3)
        assert 0.0 <= y.min() and y.max() <= 1.0
        outputs[direction] = y
    # The two directions use different decoders / generators.
    assert np.abs(outputs["a2b"] - outputs["b2a"]).max() > 1e-4
    with pytest.raises(InputError):
        method.inference_model("b2c")


@pytest.mark.parametrize("name,size", [("ae", 36), ("conv-vae", 20), ("vae-gan", 36), ("cyclegan", 30)])
def test_size_the_network_cannot_take_is_refused(name, size):
    with pytest.raises(InputError, match="multiple of"):
        preset_config(name, "tiny", size=size)


@pytest.mark.parametrize("name", UPSCALED)
def test_the_2x_head_starts_as_nearest_neighbour_upsampling(name):
    """ICNR: before training, the four sub-pixels of each output 2x2 block are equal (no fixed
    sub-pixel grain), and training can still tell them apart (the kernels are separate weights)."""
    method = build_method(name, preset_config(name, "tiny"))
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    y = np.asarray(method.inference_model("a2b")(x)).reshape(2, 32, 2, 32, 2, 3)
    assert np.abs(y - y[:, :, :1, :, :1]).max() < 1e-6
    assert y.std() > 1e-5  # not a constant image
    head = [w for w in method.decoder_b.trainable_weights if len(w.shape) == 4 and tuple(w.shape)[-1] == 12]
    assert len(head) == 1 and tuple(head[0].shape)[:2] == (5, 5)


def test_upscale_is_1_or_2_and_old_configs_keep_output_equal_to_input():
    import dataclasses

    with pytest.raises(InputError, match="upscale"):
        dataclasses.replace(preset_config("ae", "tiny"), upscale=3).validate()
    from swapstream.trainer.methods.ae_defaults import AEConfig

    assert AEConfig().upscale == 1 and io_sizes(AEConfig()) == (64, 64)  # a run made before the head


def test_cpu_presets_are_cpu_sized():
    """`cpu`: 64 px input (128 px out with the 2x head) and a few million parameters per
    exported network (not tens of millions)."""
    for name in ALL:
        method = build_method(name, preset_config(name, "cpu"))
        counts = method.parameter_counts()
        assert method.config.size == 64
        assert method.output_size == (128 if name in UPSCALED else 64)
        assert 3e5 < counts["inference"] < 1.2e7, (name, counts)
        assert counts["total"] < 2e7, (name, counts)


def test_gpu_presets_use_mixed_precision_at_thesis_sizes():
    for name in ALL:
        cfg = preset_config(name, "gpu")
        assert 128 <= cfg.size <= 160 and cfg.dtype_policy == "mixed_bfloat16"
        preset_config(name, "gpu", size=160)  # the thesis' 160 x 160 fits every network
    counts = build_method("ae", preset_config("ae", "gpu")).parameter_counts()
    assert 2e7 < counts["total"] < 1.5e8, counts


@pytest.mark.slow
def test_mixed_precision_trains_and_exports_float32(faces):
    """The gpu presets' bfloat16 path, at 32 px on the CPU: finite losses, float32 in and out."""
    import dataclasses

    cfg = dataclasses.replace(preset_config("ae", "tiny"), dtype_policy="mixed_bfloat16")
    method = build_method("ae", cfg, template=TEMPLATE)
    method.compile(method.default_optimizers())
    assert method.encoder.layers[1].compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in method.encoder.weights)
    dataset = _dataset(method, faces)
    history = method.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"]).all()
    model = method.inference_model("a2b")
    assert model.inputs[0].dtype == "float32" and model.outputs[0].dtype == "float32"


def test_the_dense_vae_reads_a_face_and_its_negative_alike():
    """`vae`'s encoder sees the Sobel gradient magnitude of the face, so a face and its negative
    get the same code."""
    import tensorflow as tf

    from swapstream.trainer.blocks import GREY_BGR, edge_magnitude

    faces = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    grey = tf.reduce_sum(faces * GREY_BGR, axis=-1, keepdims=True)
    sobel = tf.image.sobel_edges(grey)[..., 0, :]
    expected = np.sqrt(np.sum(np.square(sobel.numpy()), axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(edge_magnitude(faces)), expected, atol=1e-5)
    method = build_method("vae", preset_config("vae", "tiny"), seed=0)
    mu, _ = method.encoder(faces)
    mu_negative, _ = method.encoder(1.0 - faces)
    assert np.allclose(mu, mu_negative, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_loss_falls_for_every_method(name, faces):
    """A few steps at 32 px in (64 px out with the 2x head), on aligned faces: mean L1 of the
    last ten steps well below the first five's."""
    keras.utils.set_random_seed(0)
    method = build_method(name, preset_config(name, "tiny"), seed=0, template=TEMPLATE)
    method.compile(method.default_optimizers())
    dataset = _dataset(method, faces)
    history = method.fit(dataset, epochs=6, steps_per_epoch=5, verbose=0, shuffle=False).history
    l1 = np.asarray(history[method.progress_metric])
    assert np.isfinite(l1).all()
    assert l1[-2:].mean() < 0.85 * l1[0], l1


@pytest.mark.parametrize("name", ALL)
def test_on_aligned_faces_the_loss_sees_only_the_face_region(name, faces):
    """With a template the reconstruction (cycle, for CycleGAN) loss ignores everything outside
    the face region: a target changed there gives the same loss; changed inside, a higher one."""
    import tensorflow as tf

    from swapstream.faces import regions
    from swapstream.trainer import losses

    method = build_method(name, preset_config(name, "tiny"), template=TEMPLATE)
    side = method.output_size
    face = regions.face_mask(TEMPLATE, side)[None, :, :, None]
    target = resize_faces(faces[0][:2], side).astype(np.float32) / 255
    output = np.clip(target + np.random.default_rng(1).normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    outside = np.where(face == 0, 1.0 - target, target).astype(np.float32)
    inside = np.where(face == 1, 1.0 - target, target).astype(np.float32)

    def loss(t):
        if name == "cyclegan":
            return float(losses.weighted_l1(tf.constant(t), tf.constant(output), method.loss_weights))
        from swapstream.trainer.methods.ae import reconstruction_loss

        return float(reconstruction_loss(method.config, tf.constant(t), tf.constant(output), method.loss_weights)[1])

    assert method.loss_weights.shape == (side, side, 1) and method.loss_weights[0, 0, 0] == 0.0
    assert loss(outside) == pytest.approx(loss(target), rel=1e-5)
    assert loss(inside) > 2 * loss(target)


def test_dssim_downscale_measures_structure_on_the_area_averaged_faces():
    """dssim_downscale 2: L1 on the 64 px faces, DSSIM on both faces (and the weights) 2x2-averaged."""
    import dataclasses

    import tensorflow as tf

    from swapstream.trainer import losses
    from swapstream.trainer.methods.ae import reconstruction_loss

    rng = np.random.default_rng(0)
    target = rng.random((2, 64, 64, 3)).astype(np.float32)
    output = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
    weights = losses.reconstruction_weights(preset_config("ae", "tiny"), 64, TEMPLATE)
    cfg = dataclasses.replace(preset_config("ae", "tiny"), dssim_downscale=2)
    total, l1 = reconstruction_loss(cfg, tf.constant(target), tf.constant(output), weights)

    def pool(t):
        return t.reshape(t.shape[0], 32, 2, 32, 2, t.shape[-1]).mean(axis=(2, 4))

    want_l1 = float(losses.weighted_l1(target, output, weights))
    want_dssim = float(losses.weighted_dssim(pool(target), pool(output), pool(weights[None])[0], 7))
    assert float(l1) == pytest.approx(want_l1, rel=1e-5)
    assert float(total) == pytest.approx(cfg.l1_weight * want_l1 + cfg.dssim_weight * want_dssim, rel=1e-4)
    with pytest.raises(InputError, match="dssim_downscale"):
        dataclasses.replace(cfg, dssim_downscale=3).validate()


def test_expression_weight_raises_the_loss_weight_on_eyes_and_mouth_only():
    from swapstream.trainer.losses import FEATURE_REGIONS, face_weight_map

    plain, weighted = face_weight_map(64, 3.0)[..., 0], face_weight_map(64, 3.0, 10.0)[..., 0]
    for cx, cy, _, _ in FEATURE_REGIONS:  # eyes and mouth: ten times the face weight
        y, x = int(cy * 64), int(cx * 64)
        assert weighted[y, x] == pytest.approx(10.0 * plain[y, x])
    # Cheeks, forehead and background keep their weights.
    for x, y in ((12, 48), (32, 8), (2, 2), (50, 56)):
        assert weighted[y, x] == pytest.approx(plain[y, x])
    assert face_weight_map(64, 3.0, 1.0).tolist() == plain[..., None].tolist()


def test_the_dssim_loss_is_the_ssim_of_tensorflow_under_its_weights():
    """One SSIM: the loss's, uniformly weighted, is tf.image.ssim's; weights move it toward the
    pixels they favour."""
    import tensorflow as tf

    from swapstream.trainer.losses import face_weight_map, ssim, weighted_dssim

    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 32, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    want = tf.image.ssim(tf.constant(x), tf.constant(y), max_val=1.0).numpy()
    np.testing.assert_allclose(ssim(x, y), want, atol=1e-5)
    uniform = np.ones((32, 32, 1), np.float32)
    assert float(weighted_dssim(x, y, uniform)) == pytest.approx(float(np.mean((1 - want) / 2)), abs=1e-5)
    y[:, 12:20, 12:20] = 1.0 - y[:, 12:20, 12:20]  # damage the centre only
    assert float(weighted_dssim(x, y, face_weight_map(32, 5.0))) > float(weighted_dssim(x, y, uniform))
