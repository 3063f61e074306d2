"""ONNX export: dynamic batch, onnxruntime agrees with torch, and the export runs in the estimator."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from avatar_bridge.cli import main as cli_main
from avatar_bridge.config import PoseConfig
from avatar_bridge.export_onnx import export_checked, export_onnx, max_abs_difference
from avatar_bridge.model import parse_input_size
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
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not mkstemp's 0600


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(build_model("resnet18"), tmp_path / "model.pth")
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_input_size("250x190")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_input_size("big")
    code = cli_main(["export-onnx", "--model", str(tmp_path / "none.pth"), "--arch", "resnet18", "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "none.pth not found" in err and err.count("\n") == 1


class ExportsWrong(torch.nn.Module):
    """A real network whose ONNX graph is not what it computes in torch: while being exported it adds
    0.5% of its output scale (the kind of silent divergence a broken exporter or op produces)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.num_keypoints = model.num_keypoints
        self.arch = model.arch

    def forward(self, x):
        out = self.model(x)
        if torch.onnx.is_in_onnx_export():
            out = out + 0.005 * out.abs().amax()
        return out


def real_scale(model, peak: float = 6.0):
    """Scale the final layer so heatmaps reach about ``peak``, like a trained checkpoint's."""
    with torch.inference_mode():
        scale = model(torch.randn(2, 3, *SIZE)).abs().max().item()
        model.final_layer.weight.mul_(peak / scale)
        model.final_layer.bias.mul_(peak / scale)
    return model


def test_relative_check_passes_real_scale_heatmaps(tmp_path):
    model = real_scale(trained_looking("resnet18", seed=3))
    path, diff, scale = export_checked(model, tmp_path / "big.onnx", SIZE)
    assert path.is_file() and scale > 3.0 and diff <= 1e-3 * scale
    assert not list(tmp_path.glob("*.part.onnx"))


def test_wrong_export_is_caught_and_leaves_nothing(tmp_path, capsys):
    model = trained_looking("resnet18")
    out = tmp_path / "wrong.onnx"
    with pytest.raises(RuntimeError, match=r"wrong.onnx: onnxruntime differs from torch .* relative > 0.001.*nothing was written"):
        export_checked(ExportsWrong(model), out, SIZE)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    out.write_bytes(b"previous good export")
    with pytest.raises(RuntimeError):
        export_checked(ExportsWrong(model), out, SIZE)
    assert out.read_bytes() == b"previous good export"  # an existing file is never replaced by a failed export
    export_checked(model, out, SIZE)  # the same network exported faithfully passes
    assert out.read_bytes() != b"previous good export"
    with pytest.raises(ValueError, match="--tolerance must be > 0"):
        export_checked(model, out, SIZE, tolerance=0)


def test_cli_takes_the_input_size_from_the_checkpoint(tmp_path, capsys):
    from test_weights import mmpose1_checkpoint

    ckpt = tmp_path / "best_coco_AP_epoch_210.pth"
    torch.save(mmpose1_checkpoint(trained_looking("resnet18")), ckpt)  # its config says 384x288
    out = tmp_path / "r18.onnx"
    assert cli_main(["export-onnx", "--model", str(ckpt), "--out", str(out)]) == 0
    assert "resnet18, input input Nx3x384x288" in capsys.readouterr().out
    assert ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[2:] == [384, 288]


def test_overflowing_network_is_a_clear_error(tmp_path):
    model = trained_looking("resnet18")
    with torch.no_grad():
        model.final_layer.bias.fill_(float("inf"))
    with pytest.raises(RuntimeError, match="heatmaps are not finite.*nothing was written"):
        export_checked(model, tmp_path / "inf.onnx", SIZE)
    assert list(tmp_path.iterdir()) == []
