"""fp16 variant of an exported graph: weights and compute in float16, I/O stays float32."""
from __future__ import annotations

import onnx


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return `model` with float16 weights and internals; inputs and outputs stay float32.

    Uses onnxruntime's bundled copy of the onnxconverter-common float16 pass (already a
    dependency via onnxruntime, so no extra package). `keep_io_types=True` inserts the Casts
    at the edges; ops onnxruntime cannot run in fp16 (its default block list, e.g. Resize)
    keep fp32 with casts around them. On CPU, onnxruntime runs fp16 nodes that lack an fp16
    kernel through inserted casts, so the CPU parity check still exercises the fp16 weights.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # disable_shape_infer: onnx shape inference is not needed here (the converter falls back
    # to value types it can read) and refuses models above 2 GiB.
    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=_too_big(model))


def _too_big(model: onnx.ModelProto) -> bool:
    return sum(len(t.raw_data) for t in model.graph.initializer) > 1_500_000_000
