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


def test_caffe_style_strides_on_the_first_1x1_conv():
    pytorch_style, caffe = build_model("resnet50"), build_model("resnet50-caffe")
    assert caffe.arch == "resnet50-caffe"
    assert pytorch_style.state_dict().keys() == caffe.state_dict().keys()  # same names and shapes: same checkpoints
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(caffe.backbone, name)[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
        assert block.downsample[0].stride == (2, 2)
        ref = getattr(pytorch_style.backbone, name)[0]
        assert ref.conv1.stride == (1, 1) and ref.conv2.stride == (2, 2)
    assert caffe.backbone.layer1[0].conv1.stride == (1, 1)  # layer1 does not downsample


def test_caffe_block_computes_microsofts_bottleneck_caffe():
    """The downsampling block, recomputed with plain functional ops as Microsoft's Bottleneck_CAFFE
    defines it (conv1 1x1 stride 2 -> bn -> relu -> conv2 3x3 stride 1 -> bn -> relu -> conv3 -> bn,
    plus the strided 1x1 downsample), equals the caffe arch's block and differs from the pytorch one."""
    import torch.nn.functional as F

    caffe = build_model("resnet50-caffe").eval()
    pytorch_style = build_model("resnet50").eval()
    pytorch_style.load_state_dict(caffe.state_dict())
    block = caffe.backbone.layer2[0]
    x = torch.randn(1, 256, 16, 12)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    with torch.inference_mode():
        out = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=2), block.bn1))
        out = F.relu(bn(F.conv2d(out, block.conv2.weight, stride=1, padding=1), block.bn2))
        out = bn(F.conv2d(out, block.conv3.weight), block.bn3)
        expected = F.relu(out + bn(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1]))
        torch.testing.assert_close(block(x), expected)
        assert not torch.allclose(pytorch_style.backbone.layer2[0](x), expected, atol=1e-3)
