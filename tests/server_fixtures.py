"""Shared helpers for the server and client tests: a tiny real ONNX model and face frames.

The model is built with onnx.helper (no TensorFlow): input "face" [N, S, S, 3] NHWC float 0..1,
output "swapped" = 1 - face (a photographic negative), through NCHW Transposes around a 1x1
Conv so it is a genuine convolutional graph. Whatever the colour transfer does afterwards, the
face region visibly changes and everything else must stay as it was.
"""
from __future__ import annotations

import contextlib
import os
import struct
import zlib

import cv2
import numpy as np

from swapstream.faces.align import AlignTemplate
from swapstream.faces.model_folder import new_manifest, write_manifest


def write_negative_model(model_dir: str, size: int = 32, margin: float = 0.2,
                         dynamic_batch: bool = True) -> str:
    """Write MODEL_DIR/model.onnx (1 - x) and its manifest; return model_dir."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(model_dir, exist_ok=True)
    weight = (-np.eye(3, dtype=np.float32)).reshape(3, 3, 1, 1)
    bias = np.ones(3, np.float32)
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["face"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "w", "b"], ["conv"]),
            helper.make_node("Transpose", ["conv"], ["swapped"], perm=[0, 2, 3, 1]),
        ],
        "negative",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("swapped", TensorProto.FLOAT, [batch, size, size, 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(model_dir, "model.onnx"))
    manifest = new_manifest(model_dir, method="ae", direction="a2b", crop_size=size, crop_margin=margin,
                            dynamic_batch=dynamic_batch)
    write_manifest(model_dir, manifest)
    return model_dir


def write_aligned_negative_model(model_dir: str, size: int = 32, upscale: int = 2,
                                 template: AlignTemplate | None = None) -> str:
    """An aligned model (manifest with `align_template`, input_size, output_size): output "swapped"
    = 1 - face, resized `upscale` x (bilinear), so the output side is upscale * size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(model_dir, exist_ok=True)
    out = size * upscale
    weight = (-np.eye(3, dtype=np.float32)).reshape(3, 3, 1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["face"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Resize", ["nchw", "", "scales"], ["big"], mode="linear"),
            helper.make_node("Conv", ["big", "w", "b"], ["conv"]),
            helper.make_node("Transpose", ["conv"], ["swapped"], perm=[0, 2, 3, 1]),
        ],
        "aligned_negative",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("swapped", TensorProto.FLOAT, ["N", out, out, 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.ones(3, np.float32), "b"),
         numpy_helper.from_array(np.array([1, 1, upscale, upscale], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(model_dir, "model.onnx"))
    manifest = new_manifest(model_dir, method="ae", direction="a2b", crop_size=size, crop_margin=0.0,
                            output_size=out, align_template=template or AlignTemplate())
    write_manifest(model_dir, manifest)
    return model_dir


def face_frames(n: int, size: int = 256, seed: int = 3) -> list[np.ndarray]:
    """n BGR frames of a moving synthetic face that the Haar cascade finds."""
    from swapstream.faces.synth import pose_sequence, render_face

    return [render_face(seed, pose, (size, size)) for pose in pose_sequence(n, seed=seed)]


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def unjpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def png_bytes(width: int, height: int, idat: bytes | None, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A PNG file of the given header (default 1-bit grey) around the compressed rows `idat`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + (chunk(b"IDAT", idat) if idat is not None else b"")
            + chunk(b"IEND", b""))


def png_header_bomb(width: int = 40000, height: int = 40000) -> bytes:
    """About 65 bytes whose header claims a huge image (OpenCV raises on it rather than returning None)."""
    return png_bytes(width, height, zlib.compress(b"\0" * 16), bit_depth=8, colour_type=2)


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A real, valid PNG of width x height (black, 1 bit per pixel): tens of KB that decode to
    width x height x 3 bytes of BGR (1.2 GB at the default size) in a decoder that trusts it."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return png_bytes(width, height, idat)


def jpeg_header_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A JPEG start-of-image and baseline frame header claiming width x height, then end of image."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def write_autoencoder_model(model_dir: str, size: int = 64, margin: float = 0.2,
                            encoder_filters: tuple[int, ...] = (32, 64, 128, 256), latent_dim: int = 256,
                            bottleneck_filters: int = 256, decoder_filters: tuple[int, ...] = (128, 64, 32),
                            seed: int = 0, upscale: int = 1, template: AlignTemplate | None = None) -> str:
    """An ONNX graph with the layout and cost of trainer's `ae` swap path (defaults: its cpu
    preset), random weights: 5x5 stride-2 convs + LeakyReLU, dense latent, dense to a code map,
    pixel-shuffle upscales (3x3 conv + LeakyReLU + DepthToSpace), 5x5 conv to RGB, sigmoid.

    `upscale` 2 is the trainer's pixel-shuffle head (the 5x5 RGB conv emits 3 x 4 channels, then
    DepthToSpace): the output side is 2 x size. With `template` the manifest says the model is
    aligned (align_template, input_size, output_size).
    Stands in for an exported model when measuring serving speed; its faces are noise.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name, shape, fan_in):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name))
        bias = np.zeros(shape[0] if len(shape) == 4 else shape[1], np.float32)
        inits.append(numpy_helper.from_array(bias, name + "_b"))

    def conv(x, name, c_in, c_out, k, stride, act=True):
        weight(name, (c_out, c_in, k, k), c_in * k * k)
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, name, name + "_b"], [name + "_y"], strides=[stride, stride],
                                      pads=[p, p, p, p], kernel_shape=[k, k]))
        if not act:
            return name + "_y"
        nodes.append(helper.make_node("LeakyRelu", [name + "_y"], [name + "_a"], alpha=0.1))
        return name + "_a"

    def shuffle_up(x, name, c_in, filters):
        y = conv(x, name, c_in, filters * 4, 3, 1)
        nodes.append(helper.make_node("DepthToSpace", [y], [name + "_up"], blocksize=2, mode="CRD"))
        return name + "_up"

    nodes.append(helper.make_node("Transpose", ["face"], ["x0"], perm=[0, 3, 1, 2]))
    x, c = "x0", 3
    for i, f in enumerate(encoder_filters):
        x, c = conv(x, f"enc{i}", c, f, 5, 2), f
    s = size // 2 ** len(encoder_filters)
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    weight("latent", (c * s * s, latent_dim), c * s * s)
    nodes.append(helper.make_node("Gemm", ["flat", "latent", "latent_b"], ["z"]))
    weight("code", (latent_dim, s * s * bottleneck_filters), latent_dim)
    nodes.append(helper.make_node("Gemm", ["z", "code", "code_b"], ["code_flat"]))
    inits.append(numpy_helper.from_array(np.array([-1, bottleneck_filters, s, s], np.int64), "code_shape"))
    nodes.append(helper.make_node("Reshape", ["code_flat", "code_shape"], ["code_map"]))
    x, c = shuffle_up("code_map", "bott", bottleneck_filters, bottleneck_filters), bottleneck_filters
    for i, f in enumerate(decoder_filters):
        x, c = shuffle_up(x, f"dec{i}", c, f), f
    out = size * upscale
    y = conv(x, "rgb", c, 3 * upscale * upscale, 5, 1, act=False)
    if upscale > 1:
        nodes.append(helper.make_node("DepthToSpace", [y], ["rgb_up"], blocksize=upscale, mode="DCR"))
        y = "rgb_up"
    nodes.append(helper.make_node("Sigmoid", [y], ["rgb_s"]))
    nodes.append(helper.make_node("Transpose", ["rgb_s"], ["swapped"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes, "ae_like",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("swapped", TensorProto.FLOAT, ["N", out, out, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(model_dir, exist_ok=True)
    onnx.save(model, os.path.join(model_dir, "model.onnx"))
    write_manifest(model_dir, new_manifest(model_dir, method="ae", direction="a2b", crop_size=size,
                                           crop_margin=margin, output_size=out if upscale > 1 else None,
                                           align_template=template))
    return model_dir


def negative_models(tmp_path_factory, **model_kwargs) -> str:
    """A models folder holding one negative model named `neg` (32 px unless told otherwise)."""
    root = tmp_path_factory.mktemp("models")
    write_negative_model(str(root / "neg"), **{"size": 32, **model_kwargs})
    return str(root)


@contextlib.contextmanager
def serving_stub(models_dir: str, **server_kwargs):
    """A real server on a free loopback port (CPU) and a stub on an open channel: yields (stub, channel)."""
    import grpc

    from swapstream.server.service import run_server
    from swapstream.v1 import swap_pb2_grpc

    with run_server(models_dir, 0, device="cpu", **server_kwargs) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield swap_pb2_grpc.FaceSwapStub(channel), channel
        finally:
            channel.close()
