"""SimpleBaseline model: shapes for every backbone, keypoint count, parameter count, clear errors."""

from __future__ import annotations

import pytest
import torch

from avatar_bridge.model import ARCHITECTURES, SimpleBaseline, build_model

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_backbone_gives_quarter_resolution_heatmaps(arch):
    model = build_model(arch, num_keypoints=17).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 64))  # small input keeps the test fast; stride is what matters
    assert out.shape == (2, 17, 16, 16)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(256, 192), (384, 288)])
def test_standard_input_sizes(size):
    model = build_model("resnet18").eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 17, size[0] // 4, size[1] // 4)


def test_head_structure_and_keypoint_count():
    model = build_model("mobilenetv2", num_keypoints=5)
    deconvs = [m for m in model.deconv_layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconvs) == 3
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.out_channels == 256 for m in deconvs)
    assert deconvs[0].in_channels == 1280
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.deconv_layers) == 3
    assert model.final_layer.kernel_size == (1, 1) and model.final_layer.out_channels == 5


def test_resnet50_parameter_count_matches_the_paper():
    # Xiao et al. report 34.0 M parameters for ResNet-50 SimpleBaseline at 256x192.
    params = sum(p.numel() for p in SimpleBaseline("resnet50").parameters())
    assert 33.9e6 < params < 34.1e6


def test_state_dict_uses_torchvision_backbone_names():
    keys = set(build_model("resnet18").state_dict())
    assert {"backbone.conv1.weight", "backbone.layer4.1.bn2.running_var", "deconv_layers.0.weight",
            "deconv_layers.7.bias", "final_layer.weight"} <= keys
    assert not any(k.startswith("backbone.fc") for k in keys)


def test_unknown_architecture_and_bad_keypoint_count_are_clear_errors():
    with pytest.raises(ValueError, match="unknown pose architecture 'vgg16'.*resnet50"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="num_keypoints"):
        build_model("resnet18", num_keypoints=0)
