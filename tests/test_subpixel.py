"""The sub-pixel rewrite of ONNX transposed convolutions (avatar_bridge/subpixel.py): outputs equal to
ONNX Runtime's ConvTranspose on graphs built here and on the fixture pose model."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from avatar_bridge.config import PoseConfig
from avatar_bridge.pose import OnnxBackend, load_estimator
from avatar_bridge.subpixel import phase_weights, same_heatmaps, subpixel_deconvolutions
from conftest import POSE_ONNX, need


def deconv_model(c_in=4, c_out=4, group=1, bias=True, batch_norm=False, after="tail", layers=1, size=(5, 6), opset=13, ir=8):
    """input (N, c_in, h, w) -> ``layers`` x [ConvTranspose 4x4/2/1 (+ BN)] -> ``after``:
    "tail" (ReLU + 1x1 conv to 3 maps), "conv3x3" (a 3x3 conv: not per position) or "none"."""
    rng = np.random.default_rng(7)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    x, channels = "input", c_in
    for i in range(layers):
        inputs = [x, const(f"w{i}", rng.standard_normal((channels, c_out // group, 4, 4)))]
        if bias:
            inputs.append(const(f"b{i}", rng.standard_normal(c_out)))
        nodes.append(helper.make_node("ConvTranspose", inputs, [f"up{i}"], name=f"up{i}", group=group, kernel_shape=[4, 4],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
        x, channels = f"up{i}", c_out
        if batch_norm:
            params = [const(f"bn{i}_{p}", v) for p, v in (("g", rng.uniform(0.5, 2, c_out)), ("b", rng.standard_normal(c_out)),
                                                          ("m", rng.standard_normal(c_out)), ("v", rng.uniform(0.5, 2, c_out)))]
            nodes.append(helper.make_node("BatchNormalization", [x, *params], [f"bn{i}"], epsilon=1e-5))
            x = f"bn{i}"
    k_out = channels
    if after == "tail":
        nodes.append(helper.make_node("Relu", [x], ["relu"]))
        nodes.append(helper.make_node("Conv", ["relu", const("head", rng.standard_normal((3, channels, 1, 1)))], ["out"], kernel_shape=[1, 1]))
        k_out = 3
    elif after == "conv3x3":
        nodes.append(helper.make_node("Conv", [x, const("k3", rng.standard_normal((2, channels, 3, 3)))], ["out"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        k_out = 2
    else:
        nodes.append(helper.make_node("Identity", [x], ["out"]))
    scale = 2**layers
    graph = helper.make_graph(nodes, "deconv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c_in, *size])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", k_out, size[0] * scale, size[1] * scale])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def run(model, x):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def check_same(model, batch=2, c_in=4, size=(5, 6), expect=1):
    x = np.random.default_rng(3).standard_normal((batch, c_in, *size)).astype(np.float32)
    expected = run(model, x)
    rewritten = onnx.load_from_string(model.SerializeToString())
    assert subpixel_deconvolutions(rewritten) == expect
    onnx.checker.check_model(rewritten)
    assert not any(n.op_type == "ConvTranspose" for n in rewritten.graph.node)
    got = run(rewritten, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    return rewritten


def test_depthwise_with_batch_norm_and_pointwise_tail_runs_the_phases_stacked():
    rewritten = check_same(deconv_model(group=4, batch_norm=True, after="tail"))
    ops = [n.op_type for n in rewritten.graph.node]
    assert "BatchNormalization" not in ops  # folded into the phase weights
    assert ops.count("Conv") == 4 + 1 and "Split" in ops and ops[-1] == "DepthToSpace"  # interleaved last, on 3 maps
    assert {i.name for i in rewritten.graph.initializer}.isdisjoint({"w0", "bn0_g"})  # old constants dropped


def test_dense_deconvolution_before_a_spatial_conv_interleaves_at_once():
    rewritten = check_same(deconv_model(c_in=3, c_out=5, group=1, after="conv3x3"), c_in=3)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Split" not in ops and ops.index("DepthToSpace") < len(ops) - 1


def test_grouped_with_batch_norm():
    check_same(deconv_model(c_in=4, c_out=6, group=2, batch_norm=True, after="conv3x3"))


def test_grouped_without_bias_as_the_graph_output():
    check_same(deconv_model(c_in=4, c_out=6, group=2, bias=False, after="none"))


def test_three_stacked_like_simplebaseline_at_batch_3():
    check_same(deconv_model(c_in=6, c_out=6, group=6, batch_norm=True, layers=3, size=(4, 3)), batch=3, c_in=6, size=(4, 3), expect=3)


def test_ir3_model_gets_its_new_constants_as_graph_inputs():
    model = deconv_model(group=4, batch_norm=True, opset=8, ir=3)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer)
    rewritten = check_same(model)
    inputs = {i.name for i in rewritten.graph.input}
    assert {t.name for t in rewritten.graph.initializer} <= inputs and "w0" not in inputs


@pytest.mark.parametrize("change", [{"strides": [1, 1]}, {"pads": [0, 0, 0, 0]}, {"kernel_shape": [3, 3]}, {"output_padding": [1, 1]}])
def test_other_transposed_convolutions_are_left_alone(change):
    model = deconv_model()
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} | change
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    before = model.SerializeToString()
    assert subpixel_deconvolutions(model) == 0
    assert model.SerializeToString() == before


def test_control_flow_graphs_are_left_alone():
    model = deconv_model()
    branch = helper.make_graph([helper.make_node("Identity", ["w0"], ["w0_copy"])], "then", [],
                               [helper.make_tensor_value_info("w0_copy", TensorProto.FLOAT, None)])
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    model.graph.node.append(helper.make_node("If", ["flag"], ["unused"], then_branch=branch, else_branch=branch))
    assert subpixel_deconvolutions(model) == 0


def test_phase_weights_match_a_direct_transposed_convolution_in_numpy():
    rng = np.random.default_rng(0)
    weight, x = rng.standard_normal((2, 1, 4, 4)), rng.standard_normal((2, 3, 4))
    # y[c, 2m+p, 2n+q] = sum_{i,j,ky,kx: 2i+ky-1 = 2m+p, 2j+kx-1 = 2n+q} x[c, i, j] w[c, 0, ky, kx]
    y = np.zeros((2, 6, 8))
    for i in range(3):
        for j in range(4):
            for ky in range(4):
                for kx in range(4):
                    oy, ox = 2 * i + ky - 1, 2 * j + kx - 1
                    if 0 <= oy < 6 and 0 <= ox < 8:
                        y[:, oy, ox] += x[:, i, j] * weight[:, 0, ky, kx]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    for (py, px), kernel in phase_weights(weight, group=2).items():
        assert kernel.shape == (2, 1, 2, 2)
        for m in range(3):
            for n in range(4):
                window = padded[:, m + py : m + py + 2, n + px : n + px + 2]  # input rows m-1+p .. m+p
                np.testing.assert_allclose(np.sum(window * kernel[:, 0], axis=(1, 2)), y[:, 2 * m + py, 2 * n + px], atol=1e-12)


def test_phase_weights_reject_a_group_count_that_does_not_divide():
    with pytest.raises(ValueError, match="groups"):
        phase_weights(np.zeros((3, 1, 4, 4)), group=2)


def test_same_heatmaps_tolerance_shapes_and_nan():
    a = np.array([[1.0, -2.0]], np.float32)
    assert same_heatmaps(a, a + 1e-5)[0]
    assert not same_heatmaps(a, a + 1e-3)[0]
    assert not same_heatmaps(a, a[:, :1])[0]
    assert not same_heatmaps(a, np.array([[np.nan, -2.0]], np.float32))[0]
    assert same_heatmaps(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32))[0]


def test_fixture_model_opset8_batch_norm_spatial0(caplog):
    path = need(POSE_ONNX)
    with caplog.at_level(logging.INFO, logger="avatar_bridge.pose"):
        fast, plain = OnnxBackend(path, threads=1), OnnxBackend(path, threads=1, subpixel=False)
    assert fast.subpixel_layers == 3 and plain.subpixel_layers == 0
    assert "3 transposed convolutions run as sub-pixel convolutions" in caplog.text
    x = np.random.default_rng(5).uniform(-2, 2, (1, 3, 256, 192)).astype(np.float32)
    np.testing.assert_allclose(fast(x), plain(x), rtol=0, atol=1e-6)


def test_pose_config_switch_and_a_model_without_deconvolutions(tmp_path):
    path = need(POSE_ONNX)
    assert load_estimator(PoseConfig(model=str(path), threads=1, ort_subpixel=False)).backend.subpixel_layers == 0
    assert load_estimator(PoseConfig(model=str(path), threads=1)).backend.subpixel_layers == 3
    plain = tmp_path / "plain.onnx"
    onnx.save(deconv_model(c_in=3, after="conv3x3", layers=0), plain)
    assert OnnxBackend(plain, check_size=(5, 6)).subpixel_layers == 0


def test_a_file_the_rewrite_cannot_read_runs_as_it_is(tmp_path, caplog):
    path = tmp_path / "model.onnx"
    onnx.save(deconv_model(c_in=3), path)
    backend = OnnxBackend(path, subpixel=False, check_size=(5, 6))
    session = backend.session
    backend.path = tmp_path / "not-a-model.onnx"
    backend.path.write_text("not protobuf")
    with caplog.at_level(logging.INFO, logger="avatar_bridge.pose"):
        backend._use_subpixel(ort.SessionOptions(), ["CPUExecutionProvider"], (5, 6))
    assert backend.session is session and backend.subpixel_layers == 0
    assert "sub-pixel rewrite did not apply" in caplog.text
