"""Keras Functional model -> ONNX, fast and lean, with tf2onnx as the op-mapping library.

Why not `tf2onnx.convert.from_keras`: on a big model its time and memory grow with the
weights, not with the op mapping (the graph has a few dozen nodes): TensorFlow freezes the
variables into graph constants and runs grappler over them; tf2onnx then keeps each constant as
an ONNX TensorProto inside its node and, after every one of its optimizer passes (repeated
until nothing changes), deep-copies the whole graph (for error recovery) and re-serialises every
node, weights included, into its NodeProto (`Graph.update_proto`). bench/export_bench.py
measures both ways.

So the weights never enter TensorFlow's graph or tf2onnx here:

1. The model is traced with `model.stateless_call` inside a `tf.function` whose inputs are the
   face batch *and every variable* (as placeholders). The traced graph holds ops only.
2. tf2onnx converts that small graph (its full optimizer runs, in well under a second).
3. The weight placeholders become ONNX initializers, written once from the Keras variables
   (numpy), and a small numpy constant-folding pass applies the layout ops tf2onnx put in
   front of them (HWIO -> OIHW kernel transposes, bias reshapes, batch-norm arithmetic).

The result computes exactly what Keras computes (parity is checked by the caller).
"""
from __future__ import annotations

import os

import numpy as np

# TensorFlow's C++ start-up chatter is noise for a CLI; must be set before TF is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

DEFAULT_OPSET = 17
INPUT_NAME = "face"
OUTPUT_NAMES = ("swapped", "mask")  # first output: the face; optional second: a mask
# Beyond this many bytes of weights a single protobuf cannot hold the model (2 GiB limit):
# the initializers go to an external data file next to model.onnx.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class ConversionError(RuntimeError):
    """The Keras model could not be turned into a valid ONNX graph."""


def convert_keras(model: keras.Model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Convert a Functional Keras model (one NHWC image input) to an fp32 ONNX model.

    The input is named "face" with a dynamic batch dimension; outputs are "swapped" and,
    when the model has a second output, "mask". Raises ConversionError when the model does
    not fit that shape or holds ops that tf2onnx cannot map to ONNX.
    """
    if len(model.inputs) != 1:
        raise ConversionError(f"model has {len(model.inputs)} inputs; the exporter needs exactly 1 (the face)")
    if not 1 <= len(model.outputs) <= len(OUTPUT_NAMES):
        raise ConversionError(f"model has {len(model.outputs)} outputs; expected the face and optionally a mask")
    _check_float32(model)
    function, weights = _trace_with_weights_as_inputs(model)
    graph = _convert_op_graph(function, opset)
    weight_values = {name: np.asarray(keras.ops.convert_to_numpy(var)) for name, var in weights.items()}
    fold_constants(graph, weight_values)
    del weight_values
    _name_outputs(graph, len(model.outputs))
    _check_standard_ops(graph)
    return graph


def _check_float32(model: keras.Model) -> None:
    """Refuse mixed-precision graphs: their bfloat16/float16 casts would be exported as they are
    (onnxruntime has no bfloat16 convolution on CPU) and parity is defined in float32."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        compute = getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
        if compute not in ("float32", None):
            raise ConversionError(
                f"layer {layer.name!r} computes in {compute}; export a float32 copy of the network "
                "(exporter.runs.float32_inference_model) and use --fp16 for a half-precision file")


def _trace_with_weights_as_inputs(model: keras.Model):
    """A concrete tf.function computing `model(face)` with every variable as an extra input.

    Returns (concrete_function, {placeholder name: keras.Variable}). Keras' stateless_call
    substitutes the given tensors for the variables, so the traced graph captures no
    variables and freezing has nothing to copy.
    """
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    variables = trainable + non_trainable
    in_shape = tuple(model.inputs[0].shape[1:])
    names = [f"w{i}" for i in range(len(variables))]
    signature = [tf.TensorSpec((None,) + in_shape, tf.float32, name=INPUT_NAME)]
    signature += [tf.TensorSpec(v.shape, v.dtype, name=n) for n, v in zip(names, variables)]
    n_trainable = len(trainable)

    @tf.function(input_signature=signature, autograph=False)
    def forward(face, *weights):
        outputs, _ = model.stateless_call(
            list(weights[:n_trainable]), list(weights[n_trainable:]), face, training=False)
        return outputs

    concrete = forward.get_concrete_function()
    if concrete.captured_inputs:
        # A layer read state outside Keras' variable tracking; freezing would copy it in.
        raise ConversionError(
            f"model captures {len(concrete.captured_inputs)} tensors that are not Keras variables; "
            "cannot trace it with weights as inputs")
    return concrete, dict(zip(names, variables))


def _convert_op_graph(concrete, opset: int) -> onnx.ModelProto:
    """Run tf2onnx on the weight-free graph; inputs keep their signature names."""
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common, tensor_names_from_structed

    input_names = [t.name for t in concrete.inputs]
    output_names = [t.name for t in concrete.outputs]
    renames = tensor_names_from_structed(concrete, input_names, output_names)
    with tf.device("/cpu:0"):
        graph_def = tf_loader.from_function(concrete, input_names, output_names)
        proto, _ = _convert_common(
            graph_def, name="swapstream", continue_on_error=False, opset=opset,
            input_names=input_names, output_names=output_names, tensors_to_rename=renames)
    return proto


def _name_outputs(model: onnx.ModelProto, count: int) -> None:
    for out, new in zip(list(model.graph.output)[:count], OUTPUT_NAMES):
        rename_tensor(model.graph, out.name, new)


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it appears in `graph` (inputs, outputs, nodes, initializers)."""
    if old == new:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for seq in (graph.input, graph.output, graph.value_info, graph.initializer):
        for item in seq:
            if item.name == old:
                item.name = new


def _check_standard_ops(model: onnx.ModelProto) -> None:
    unknown = sorted({n.op_type for n in model.graph.node
                      if n.domain not in ("", "ai.onnx") or not onnx.defs.has(n.op_type)})
    if unknown:
        raise ConversionError(f"ops with no ONNX equivalent in the model: {', '.join(unknown)}")


# --- constant folding -------------------------------------------------------------------------
# tf2onnx leaves layout ops in front of weights that came in as graph inputs. Each is applied
# here once with numpy. Only ops whose result is no bigger than their inputs are folded, so a
# Tile or Expand of a constant never inflates the file; onnxruntime folds anything left.

def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _reshape(node, x, shape):
    shape = [x.shape[i] if d == 0 and not _attr(node, "allowzero", 0) else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _squeeze(node, x, axes=None):
    axes = _attr(node, "axes") if axes is None else axes
    return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))


def _unsqueeze(node, x, axes=None):
    axes = _attr(node, "axes") if axes is None else axes
    out = x
    for a in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
        out = np.expand_dims(out, a)
    return out


_FOLDERS = {
    "Transpose": lambda n, x: np.transpose(x, _attr(n, "perm")),
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": lambda n, x: x,
    "Cast": lambda n, x: x.astype(helper.tensor_dtype_to_np_dtype(_attr(n, "to"))),
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b,
    "Sqrt": lambda n, x: np.sqrt(x),
    "Reciprocal": lambda n, x: np.reciprocal(x),
    "Neg": lambda n, x: -x,
}


def fold_constants(model: onnx.ModelProto, inputs_as_constants: dict[str, np.ndarray] | None = None) -> int:
    """Apply, with numpy, every foldable node whose inputs are all constants.

    Constants are the initializers plus `inputs_as_constants` (graph inputs given values:
    the weights), which become initializers here. Folded nodes are replaced by initializers
    (in place); initializers nobody reads are dropped. Each value is held once as numpy and
    released as soon as its last reader is folded, so peak memory stays near one copy of the
    weights; `inputs_as_constants` is consumed (emptied) for that reason. Returns the number
    of nodes folded.
    """
    graph = model.graph
    values: dict[str, np.ndarray] = {}
    if inputs_as_constants:
        values.update(inputs_as_constants)
        inputs_as_constants.clear()
        kept_inputs = [i for i in graph.input if i.name not in values]
        del graph.input[:]
        graph.input.extend(kept_inputs)
    for t in graph.initializer:
        values[t.name] = numpy_helper.to_array(t)
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    new_nodes, folded = [], 0
    for node in graph.node:
        fn = _FOLDERS.get(node.op_type)
        if (fn is not None and node.domain in ("", "ai.onnx") and len(node.output) == 1
                and node.output[0] not in graph_outputs
                and all(name in values for name in node.input if name)):
            args = [values[name] for name in node.input if name]
            result = np.asarray(fn(node, *args))
            if result.size <= max(a.size for a in args):
                if node.op_type != "Cast":
                    result = result.astype(args[0].dtype, copy=False)
                values[node.output[0]] = np.ascontiguousarray(result)
                del args, result
                for name in node.input:
                    readers[name] -= 1
                    if readers[name] == 0 and name not in graph_outputs:
                        del values[name]
                folded += 1
                continue
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in new_nodes for name in node.input} | graph_outputs
    del graph.initializer[:]
    for name in [n for n in values if n in used]:
        graph.initializer.append(numpy_helper.from_array(values.pop(name), name))
    return folded
