"""SimpleBaseline's transposed convolutions rewritten as sub-pixel convolutions in an ONNX graph.

SimpleBaseline's head (Xiao, Wu, Wei, ECCV 2018) upsamples with three 4x4, stride-2, padding-1
transposed convolutions (ONNX ``ConvTranspose``). ONNX Runtime's CPU kernel for them is a GEMM plus
col2im per group, slow next to its convolutions (the fixture model: 0.85 of 3.2 ms per crop in
three depthwise deconvolutions). Such a deconvolution is exactly four 2x2 convolutions, one per
output phase (row parity, column parity), whose outputs interleave (``DepthToSpace``): the sub-pixel
convolution of Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network", CVPR 2016. Per axis, output ``2m + p`` takes input
``m + d`` through kernel tap ``p + 1 - 2d``: phase 0 reads ``d`` in {-1, 0} (taps 3, 1), phase 1
``d`` in {0, 1} (taps 2, 0).

Two more exact steps:

- a ``BatchNormalization`` that alone reads a deconvolution is folded into the phase weights;
- when everything between the last deconvolution and a graph output is per position (ReLU, batch
  norm, 1x1 convolutions: SimpleBaseline's final layer), the four phases are stacked on the batch
  axis, run through those layers, and interleaved only at the end, on K heatmaps instead of the
  deconvolution's channels (``DepthToSpace`` is a slow copy in ONNX Runtime).

Measured on this project's 2-core CPU, one thread, batch 1, 256x192 (docs/profile.md): the fixture
model 3.22 -> 2.73 ms, MobileNetV2 SimpleBaseline 23.4 -> 17.6 ms, ResNet-50 56.1 -> 51.0 ms; outputs
equal to float32 rounding. Only 2-D ``ConvTranspose`` nodes with kernel 4, stride 2, padding 1,
dilation 1, no output padding and constant weights are rewritten; others are left as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# Ops that act on each position (and, for batch norm, each channel) alone, so they commute with
# interleaving the phases.
PER_POSITION_OPS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Identity", "BatchNormalization"}


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_subpixel_deconvolution(node, constants: dict) -> bool:
    if node.op_type != "ConvTranspose" or len(node.input) < 2 or node.input[1] not in constants:
        return False
    a = _attributes(node)
    auto_pad = a.get("auto_pad", b"NOTSET")
    return (
        len(constants[node.input[1]].dims) == 4
        and list(a.get("kernel_shape", constants[node.input[1]].dims[2:])) == [4, 4]
        and list(a.get("strides", [1, 1])) == [2, 2]
        and list(a.get("pads", [0, 0, 0, 0])) == [1, 1, 1, 1]
        and list(a.get("dilations", [1, 1])) == [1, 1]
        and not any(a.get("output_padding", [0, 0]))
        and "output_shape" not in a
        and auto_pad in (b"NOTSET", "NOTSET")
        and (len(node.input) < 3 or not node.input[2] or node.input[2] in constants)
    )


def _is_per_position(node, constants: dict) -> bool:
    """Whether ``node`` maps its first input position by position, every other input a constant."""
    if any(name and name not in constants for name in node.input[1:]) or len(node.output) != 1:
        return False
    if node.op_type in PER_POSITION_OPS:
        return True
    if node.op_type != "Conv" or len(constants[node.input[1]].dims) != 4:
        return False
    a = _attributes(node)
    return (list(constants[node.input[1]].dims[2:]) == [1, 1] and list(a.get("strides", [1, 1])) == [1, 1]
            and not any(a.get("pads", [0, 0, 0, 0])) and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def phase_weights(weight: np.ndarray, group: int) -> dict[tuple[int, int], np.ndarray]:
    """The four 2x2 convolution kernels equivalent to a 4x4, stride-2, padding-1 ``ConvTranspose``.

    ``weight``: the ConvTranspose weight (C_in, C_out / group, 4, 4). Returns, per output phase
    (row parity, column parity), a Conv weight (C_out, C_in / group, 2, 2) to run with the same
    group and pads (top, left, bottom, right) = (1 - p_row, 1 - p_col, p_row, p_col).
    """
    c_in, c_out_g = weight.shape[:2]
    if c_in % group:
        raise ValueError(f"ConvTranspose weight {weight.shape} does not split into {group} groups")
    # Conv weights are (C_out, C_in / group): swap the channel axes within each group.
    conv = weight.reshape(group, c_in // group, c_out_g, 4, 4).transpose(0, 2, 1, 3, 4).reshape(group * c_out_g, c_in // group, 4, 4)
    taps = {0: [3, 1], 1: [2, 0]}  # phase -> kernel taps read at input offsets (-1, 0) / (0, 1)
    return {(py, px): conv[:, :, taps[py]][:, :, :, taps[px]] for py in (0, 1) for px in (0, 1)}


def subpixel_deconvolutions(model: "onnx.ModelProto") -> int:
    """Rewrite ``model`` in place (see the module docstring); returns how many deconvolutions were
    rewritten (0: the model is unchanged)."""
    from onnx import AttributeProto, helper, numpy_helper

    graph = model.graph
    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for node in graph.node for a in node.attribute):
        return 0  # control flow (If, Loop, Scan): its subgraphs may read any constant; left as it is
    constants = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    def constant(name: str, array: np.ndarray) -> str:
        tensor = numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name)
        graph.initializer.append(tensor)
        constants[name] = tensor
        return name

    removed, replacements, appended = set(), {}, {}
    for node in list(graph.node):
        if not _is_subpixel_deconvolution(node, constants):
            continue
        group = int(_attributes(node).get("group", 1))
        weight = numpy_helper.to_array(constants[node.input[1]]).astype(np.float64)
        c_out = weight.shape[1] * group
        has_bias = len(node.input) > 2 and node.input[2]
        bias = numpy_helper.to_array(constants[node.input[2]]).astype(np.float64) if has_bias else np.zeros(c_out)
        output, readers = node.output[0], consumers.get(node.output[0], [])
        if (len(readers) == 1 and readers[0].op_type == "BatchNormalization" and output not in graph_outputs
                and len(readers[0].output) == 1 and all(name in constants for name in readers[0].input[1:5])):
            norm = readers[0]
            eps = float(_attributes(norm).get("epsilon", 1e-5))
            gamma, beta, mean, var = (numpy_helper.to_array(constants[n]).astype(np.float64).reshape(-1) for n in norm.input[1:5])
            if len(gamma) == c_out:
                scale = gamma / np.sqrt(var + eps)
                # weight row ci (group ci // (C_in / group)), column j: output channel group * C_out_g + j
                weight = weight * np.repeat(scale.reshape(group, -1), weight.shape[0] // group, axis=0)[:, :, None, None]
                bias = (bias - mean) * scale + beta
                removed.add(id(norm))
                output = norm.output[0]
        prefix = f"{node.name or output}_subpixel"
        bias_name = constant(f"{prefix}_bias", bias)
        phases, nodes = [], []
        for (py, px), kernel in phase_weights(weight, group).items():
            name = f"{prefix}_phase{py}{px}"
            phases.append(name)
            nodes.append(helper.make_node("Conv", [node.input[0], constant(f"{name}_weight", kernel), bias_name], [name],
                                          name=name, group=group, kernel_shape=[2, 2], strides=[1, 1],
                                          dilations=[1, 1], pads=[1 - py, 1 - px, py, px]))
        # The layers after it, if each is per position and they lead straight to a graph output.
        chain, tensor = [], output
        while tensor not in graph_outputs:
            readers = consumers.get(tensor, [])
            if len(readers) != 1 or readers[0].input[0] != tensor or not _is_per_position(readers[0], constants):
                chain = None
                break
            chain.append(readers[0])
            tensor = readers[0].output[0]
        if chain is not None and tensor != output:
            # phases stacked on the batch axis (4N), through the chain, then split and interleaved
            nodes.append(helper.make_node("Concat", phases, [output], axis=0, name=f"{prefix}_stack"))
            final, stacked = tensor, f"{prefix}_stacked_output"
            chain[-1].output[0] = stacked
            parts = [f"{prefix}_part{i}" for i in range(4)]
            appended[id(chain[-1])] = [
                helper.make_node("Split", [stacked], parts, axis=0, name=f"{prefix}_split"),
                helper.make_node("Concat", parts, [f"{prefix}_by_phase"], axis=1, name=f"{prefix}_by_phase"),
                helper.make_node("DepthToSpace", [f"{prefix}_by_phase"], [final], blocksize=2, name=f"{prefix}_interleave"),
            ]
        else:
            nodes.append(helper.make_node("Concat", phases, [f"{prefix}_by_phase"], axis=1, name=f"{prefix}_by_phase"))
            nodes.append(helper.make_node("DepthToSpace", [f"{prefix}_by_phase"], [output], blocksize=2,
                                          name=f"{prefix}_interleave"))
        replacements[id(node)] = nodes
    if not replacements:
        return 0
    new_nodes = []
    for node in graph.node:
        if id(node) not in removed:
            new_nodes.extend(replacements.get(id(node), [node]))
            new_nodes.extend(appended.get(id(node), []))
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_constants(graph)
    if model.ir_version < 4:  # before IR 4 every initializer is also a graph input
        inputs = {i.name for i in graph.input}
        for tensor in graph.initializer:
            if tensor.name not in inputs:
                graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return len(replacements)


def _drop_unused_constants(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    dropped = {t.name for t in graph.initializer} - used
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = [i for i in graph.input if i.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)


def same_heatmaps(expected: np.ndarray, got: np.ndarray, tolerance: float = 1e-4) -> tuple[bool, float, float]:
    """Whether ``got`` equals ``expected`` (same shape) within ``tolerance`` times the largest
    ``|expected|``: (ok, max difference, largest value). NaN or a shape change is never the same."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    error = float(np.abs(got - expected).max()) if got.shape == expected.shape and got.size else (0.0 if got.shape == expected.shape else float("inf"))
    return bool(error <= tolerance * max(scale, float(np.finfo(np.float32).tiny))), error, scale
