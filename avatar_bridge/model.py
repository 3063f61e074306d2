"""SimpleBaseline (Xiao et al., ECCV 2018): a classification backbone, three deconvolutions, heatmaps.

The backbone is torchvision's own ResNet or MobileNetV2 module (without its classifier), so the
parameter names are torchvision's: ``backbone.conv1.weight``, ``backbone.layer1.0.bn1.weight`` ... for
ResNet and ``backbone.0.0.weight`` ... (``features.*``) for MobileNetV2. :mod:`avatar_bridge.weights`
maps the published checkpoint layouts onto these names.

Output: K heatmaps at 1/4 of the input resolution (256x192 in -> 64x48 out).

Caffe-style ResNets (``resnet50-caffe``, ``resnet101-caffe``, ``resnet152-caffe``): the first
bottleneck of ``layer2``..``layer4`` downsamples with stride 2 on its first 1x1 convolution instead
of the 3x3 one (torchvision's "ResNet v1.5"). Microsoft's SimpleBaseline code builds this variant when
``MODEL.STYLE = 'caffe'`` (``Bottleneck_CAFFE`` in ``lib/models/pose_resnet.py`` of
microsoft/human-pose-estimation.pytorch). Both styles have exactly the same parameter names and
shapes, so the weights cannot tell which one a checkpoint was trained with: pass the arch explicitly.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
CAFFE_SUFFIX = "-caffe"
CAFFE_ARCHITECTURES = tuple(f"{name}{CAFFE_SUFFIX}" for name in ("resnet50", "resnet101", "resnet152"))
ARCHITECTURES = (*RESNET_DEPTHS, "mobilenetv2", *CAFFE_ARCHITECTURES)


def base_arch(arch: str) -> str:
    """``resnet50-caffe`` -> ``resnet50``; other names unchanged."""
    return arch[: -len(CAFFE_SUFFIX)] if arch in CAFFE_ARCHITECTURES else arch


def _to_caffe_style(net: nn.Module) -> None:
    """Move the stride of every downsampling bottleneck from its 3x3 conv (conv2) to its first 1x1 (conv1)."""
    for layer in (net.layer2, net.layer3, net.layer4):
        block = layer[0]
        if block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
DECONV_CHANNELS = 256
DECONV_LAYERS = 3


def _backbone(arch: str) -> tuple[nn.Module, int]:
    """torchvision backbone without pooling/classifier, and its output channel count."""
    if arch in CAFFE_ARCHITECTURES:
        net, channels = _backbone(base_arch(arch))
        _to_caffe_style(net)
        return net, channels
    if arch in RESNET_DEPTHS:
        net = getattr(torchvision.models, arch)(weights=None)
        channels = net.fc.in_features  # 512 for ResNet-18/34, 2048 for the bottleneck ResNets
        del net.avgpool, net.fc  # SimpleBaseline keeps the stride-32 feature map
        return net, channels
    if arch == "mobilenetv2":
        return torchvision.models.mobilenet_v2(weights=None).features, 1280
    raise ValueError(f"unknown pose architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")


class SimpleBaseline(nn.Module):
    """Backbone -> 3 x (ConvTranspose 4x4 s2, 256 ch, BN, ReLU) -> 1x1 conv to ``num_keypoints`` heatmaps."""

    def __init__(self, arch: str = "resnet50", num_keypoints: int = 17):
        super().__init__()
        if not 1 <= int(num_keypoints) <= 1000:
            raise ValueError(f"num_keypoints must be between 1 and 1000, got {num_keypoints}")
        self.arch = arch
        self.num_keypoints = int(num_keypoints)
        self.backbone, channels = _backbone(arch)
        layers: list[nn.Module] = []
        for _ in range(DECONV_LAYERS):
            layers += [
                nn.ConvTranspose2d(channels, DECONV_CHANNELS, 4, stride=2, padding=1, output_padding=0, bias=False),
                nn.BatchNorm2d(DECONV_CHANNELS),
                nn.ReLU(inplace=True),
            ]
            channels = DECONV_CHANNELS
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(DECONV_CHANNELS, self.num_keypoints, kernel_size=1)
        self._init_head()

    def _init_head(self) -> None:
        # The initialisation of the paper's code: small normal weights in the head.
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "mobilenetv2":
            return self.backbone(x)
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized RGB -> (N, K, H/4, W/4) heatmaps."""
        return self.final_layer(self.deconv_layers(self.features(x)))


def build_model(arch: str = "resnet50", num_keypoints: int = 17) -> SimpleBaseline:
    """A SimpleBaseline with random weights (load a checkpoint with :func:`avatar_bridge.weights.load_checkpoint`)."""
    return SimpleBaseline(arch, num_keypoints)


def parse_input_size(text: str) -> tuple[int, int]:
    """``"256x192"`` -> (256, 192): a network input size, HEIGHTxWIDTH, each a multiple of 32.

    Raises ValueError naming the flag and the fix.
    """
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size {text!r}: write HEIGHTxWIDTH, e.g. 256x192") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise ValueError(f"--input-size {text!r}: height and width must be multiples of 32 (e.g. 256x192, 384x288)")
    return h, w
