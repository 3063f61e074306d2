"""ONNX export: dynamic batch, onnxruntime agrees with torch, and the export runs in the estimator."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from avatar_bridge.cli import main as cli_main
from avatar_bridge.config import PoseConfig
from avatar_bridge.export_onnx import export_onnx, max_abs_difference, parse_size
from avatar_bridge.model import build_model
from avatar_bridge.pose import TopDownEstimator, TorchBackend, load_estimator

torch.set_num_threads(1)
SIZE = (128, 96)  # small input: the export path is the same, the test is faster


def trained_looking(arch: str, seed: int = 0):
    """Random weights of realistic scale (heatmaps of order 1), so a 1e-4 tolerance means something."""
    model = build_model(arch)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            if isinstance(module, (torch.nn.ConvTranspose2d,)):
                module.weight.normal_(0, 0.02, generator=gen)
        model.final_layer.weight.normal_(0, 0.1, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = trained_looking("resnet18")
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "r18.onnx", SIZE)
    return model, path


def test_onnxruntime_matches_torch(exported):
    model, path = exported
    with torch.inference_mode():
        scale = model(torch.randn(1, 3, *SIZE)).abs().max().item()
    assert scale > 0.01  # outputs are not vanishingly small, so the tolerance below is a real check
    assert max_abs_difference(model, path, batch=3, input_size=SIZE) < 1e-4


def test_batch_dimension_is_dynamic(exported):
    _, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == [3, *SIZE]
    for batch in (1, 5):
        out = session.run(None, {"input": np.zeros((batch, 3, *SIZE), np.float32)})[0]
        assert out.shape == (batch, 17, SIZE[0] // 4, SIZE[1] // 4)


def test_exported_model_gives_the_same_keypoints_through_the_estimator(exported):
    model, path = exported
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[20, 20, 150, 280], [200, 30, 380, 290]], np.float32)
    via_torch = TopDownEstimator(TorchBackend(model), input_size=SIZE).estimate(image, boxes)
    onnx_estimator = load_estimator(PoseConfig(model=str(path), input_size=[256, 192], threads=1))
    assert (onnx_estimator.input_h, onnx_estimator.input_w) == SIZE  # static H, W read from the file
    assert onnx_estimator.backend.static_batch is None
    via_onnx = onnx_estimator.estimate(image, boxes)
    for a, b in zip(via_torch, via_onnx):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_cli_export_checks_the_result(tmp_path, capsys):
    out = tmp_path / "mb2.onnx"
    assert cli_main(["export-onnx", "--model", "random", "--arch", "mobilenetv2", "--input-size", "128x96",
                     "--out", str(out)]) == 0
    assert out.is_file()
    assert "max |torch - onnxruntime|" in capsys.readouterr().out


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(build_model("resnet18"), tmp_path / "model.pth")
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_size("250x190")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_size("big")
    code = cli_main(["export-onnx", "--model", str(tmp_path / "none.pth"), "--arch", "resnet18", "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "none.pth not found" in err and err.count("\n") == 1
