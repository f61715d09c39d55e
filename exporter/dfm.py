"""DeepFaceLive-compatible .dfm: the swap graph re-wired to DeepFaceLive's tensor names.

DeepFaceLive (and FaceFusion's deep swapper) load a .dfm as a plain ONNX file and call

    out_face_mask, out_celeb_face, out_celeb_face_mask = sess.run(None, {"in_face:0": img})

with `img` float32 [1, S, S, 3] BGR in 0..1 and S read from the input's shape. The output
order is the contract (they unpack by position); masks are [1, S, S, 1] in 0..1.
Our models have no mask of the *input* face, so `out_face_mask:0` carries the model's own mask
when it has one and otherwise, like `out_celeb_face_mask:0`, a feathered ellipse stored as a
constant (faces.mask.ellipse_mask, the same mask the server blends with).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from swapstream.exporter.convert import INPUT_NAME, OUTPUT_NAMES, rename_tensor

DFM_INPUT = "in_face:0"
DFM_FACE_MASK = "out_face_mask:0"
DFM_CELEB_FACE = "out_celeb_face:0"
DFM_CELEB_MASK = "out_celeb_face_mask:0"
DFM_OUTPUTS = (DFM_FACE_MASK, DFM_CELEB_FACE, DFM_CELEB_MASK)


def make_dfm(model: onnx.ModelProto, size: int, out_size: int | None = None) -> None:
    """Rewire an exported swap model (input "face", outputs "swapped"[, "mask"]) *in place*
    into a .dfm: DeepFaceLive's names, batch fixed to 1, the three outputs in DeepFaceLive's
    order. In place because the weights can be hundreds of MB: save model.onnx first.
    The face output is clipped to 0..1 (DeepFaceLive converts it to uint8 without checking).

    A 2x model (`out_size` = 2 * `size`) takes in_face at the output side, since DeepFaceLive
    pastes out_celeb_face at in_face's side: a linear half-size Resize (half-pixel centres, so
    each output pixel is the mean of a 2x2 block) feeds the network its `size` crop."""
    from swapstream.faces.mask import ellipse_mask

    graph = model.graph
    outputs = [o.name for o in graph.output]
    if [i.name for i in graph.input] != [INPUT_NAME] or outputs[0] != OUTPUT_NAMES[0]:
        raise ValueError(f"expected input {INPUT_NAME!r} and first output {OUTPUT_NAMES[0]!r}, "
                         f"got {[i.name for i in graph.input]} -> {outputs}")
    has_mask = len(outputs) > 1 and outputs[1] == OUTPUT_NAMES[1]

    out_size = out_size or size
    if out_size == size:
        rename_tensor(graph, INPUT_NAME, DFM_INPUT)
    else:
        if out_size != 2 * size:
            raise ValueError(f"a .dfm takes a model whose output side is its input side or twice it, "
                             f"not {size} -> {out_size}")
        small = "dfm_face_half"
        rename_tensor(graph, INPUT_NAME, small)
        graph.input[0].name = DFM_INPUT
        scales = numpy_helper.from_array(np.array([1.0, 0.5, 0.5, 1.0], np.float32), "dfm_half_scales")
        graph.initializer.append(scales)
        graph.node.insert(0, helper.make_node("Resize", [DFM_INPUT, "", scales.name], [small], mode="linear",
                                              coordinate_transformation_mode="half_pixel", name="dfm_half"))
    _fix_batch(graph.input[0], out_size, 3)
    size = out_size  # the outputs are at the output side
    face = OUTPUT_NAMES[0] + "_unclipped"
    rename_tensor(graph, OUTPUT_NAMES[0], face)
    lo = numpy_helper.from_array(np.array(0.0, np.float32), "dfm_clip_min")
    hi = numpy_helper.from_array(np.array(1.0, np.float32), "dfm_clip_max")
    graph.initializer.extend([lo, hi])
    nodes = [helper.make_node("Clip", [face, lo.name, hi.name], [DFM_CELEB_FACE], name="dfm_clip_face")]
    if has_mask:
        mask_src = OUTPUT_NAMES[1]
    else:
        ellipse = np.ascontiguousarray(ellipse_mask(size), dtype=np.float32).reshape(1, size, size, 1)
        mask_src = "dfm_ellipse_mask"
        graph.initializer.append(numpy_helper.from_array(ellipse, mask_src))
    # Graph outputs must be produced by nodes (some runtimes reject an initializer as output).
    nodes += [helper.make_node("Identity", [mask_src], [DFM_FACE_MASK], name="dfm_face_mask"),
              helper.make_node("Identity", [mask_src], [DFM_CELEB_MASK], name="dfm_celeb_mask")]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(DFM_FACE_MASK, TensorProto.FLOAT, [1, size, size, 1]),
        helper.make_tensor_value_info(DFM_CELEB_FACE, TensorProto.FLOAT, [1, size, size, 3]),
        helper.make_tensor_value_info(DFM_CELEB_MASK, TensorProto.FLOAT, [1, size, size, 1]),
    ])


def _fix_batch(value_info: onnx.ValueInfoProto, size: int, channels: int) -> None:
    dims = value_info.type.tensor_type.shape.dim
    for dim, want in zip(dims, (1, size, size, channels)):
        dim.Clear()
        dim.dim_value = want
