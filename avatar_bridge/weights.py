"""Pretrained SimpleBaseline checkpoints: a small registry, a verified download, strict loading.

Checkpoints exist in three layouts, all mapped onto :class:`avatar_bridge.model.SimpleBaseline`'s
own parameter names (torchvision backbone names under ``backbone.``, then ``deconv_layers.*`` and
``final_layer.*``):

- Microsoft official (``conv1.*``, ``layer1.*``, ``deconv_layers.*``, ``final_layer.*``), possibly
  wrapped in ``{"state_dict": ...}`` and/or prefixed ``module.``;
- MMPose 0.x (``backbone.*``, ``keypoint_head.deconv_layers.*``, ``keypoint_head.final_layer.*``);
- MMPose 1.x (``backbone.*``, ``head.deconv_layers.*``, ``head.final_layer.*``).

MMPose's MobileNetV2 names its layers ``backbone.conv1.conv``, ``backbone.layer3.1.conv.0.bn`` ...
where torchvision says ``features.0.0``, ``features.5.conv.0.1``; :func:`mmpose_mobilenetv2_to_torchvision`
translates. Loading is strict: missing and unexpected keys and shape mismatches are all listed in
one error, because a silently half-loaded network produces plausible-looking garbage.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .model import SimpleBaseline, build_model

MMPOSE_URL = "https://download.openmmlab.com/mmpose/top_down/"


@dataclass(frozen=True)
class CheckpointInfo:
    """One published checkpoint. ``sha256`` is the start of the file's SHA-256 (from its file name)."""

    name: str
    arch: str
    input_size: tuple[int, int]  # height, width
    url: str
    sha256: str
    coco_ap: float  # COCO val2017 AP reported by the publisher (person detector with AP 56.4)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


REGISTRY: dict[str, CheckpointInfo] = {
    info.name: info
    for info in (
        CheckpointInfo("simplebaseline-resnet50-256x192", "resnet50", (256, 192),
                       MMPOSE_URL + "resnet/res50_coco_256x192-ec54d7f3_20200709.pth", "ec54d7f3", 71.8),
        CheckpointInfo("simplebaseline-resnet50-384x288", "resnet50", (384, 288),
                       MMPOSE_URL + "resnet/res50_coco_384x288-e6f795e9_20200709.pth", "e6f795e9", 73.1),
        CheckpointInfo("simplebaseline-resnet101-256x192", "resnet101", (256, 192),
                       MMPOSE_URL + "resnet/res101_coco_256x192-6e6babf0_20200708.pth", "6e6babf0", 72.6),
        CheckpointInfo("simplebaseline-resnet101-384x288", "resnet101", (384, 288),
                       MMPOSE_URL + "resnet/res101_coco_384x288-8c71bdc9_20200709.pth", "8c71bdc9", 74.8),
        CheckpointInfo("simplebaseline-resnet152-256x192", "resnet152", (256, 192),
                       MMPOSE_URL + "resnet/res152_coco_256x192-f6e307c2_20200709.pth", "f6e307c2", 73.5),
        CheckpointInfo("simplebaseline-resnet152-384x288", "resnet152", (384, 288),
                       MMPOSE_URL + "resnet/res152_coco_384x288-3860d4c9_20200709.pth", "3860d4c9", 75.0),
        CheckpointInfo("simplebaseline-mobilenetv2-256x192", "mobilenetv2", (256, 192),
                       MMPOSE_URL + "mobilenetv2/mobilenetv2_coco_256x192-d1e58e7b_20200727.pth", "d1e58e7b", 64.6),
        CheckpointInfo("simplebaseline-mobilenetv2-384x288", "mobilenetv2", (384, 288),
                       MMPOSE_URL + "mobilenetv2/mobilenetv2_coco_384x288-26be4816_20200727.pth", "26be4816", 67.3),
    )
}


def registry_name(arch: str, input_size: tuple[int, int] | list[int]) -> str:
    """The registry entry for an architecture and input size (``[256, 192]`` -> ``...-256x192``)."""
    name = f"simplebaseline-{arch}-{int(input_size[0])}x{int(input_size[1])}"
    if name not in REGISTRY:
        raise ValueError(
            f"no pretrained checkpoint for arch {arch!r} at input size {input_size[0]}x{input_size[1]}: "
            f"pass pose.model = a .pth/.onnx path, or one of {', '.join(REGISTRY)}"
        )
    return name


def default_weights_dir() -> Path:
    """torch hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), shared with torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints"


# --- download -----------------------------------------------------------------------------------


def _progress(done: int, total: int, started: float, label: str) -> None:
    """One self-overwriting stderr line, like tqdm, without the dependency."""
    rate = done / max(time.monotonic() - started, 1e-6) / 1e6
    if total > 0:
        width = 30
        filled = int(width * done / total)
        text = f"\r{label}: [{'#' * filled}{'.' * (width - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB {rate:.1f} MB/s"
    else:
        text = f"\r{label}: {done / 1e6:.1f} MB {rate:.1f} MB/s"
    sys.stderr.write(text)
    sys.stderr.flush()


def download(url: str, dest: Path, sha256_prefix: str = "", progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` through a temporary file, checking the SHA-256 prefix before renaming.

    A partial or corrupt download never appears at ``dest``. Offline, the error says which file to
    place where.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done, started, last = 0, time.monotonic(), 0.0
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if progress and (now - last > 0.2 or done == total):
                        _progress(done, total, started, dest.name)
                        last = now
                if progress:
                    sys.stderr.write("\n")
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(
                f"cannot download {url} ({reason}): without network, download it elsewhere and place it at "
                f"{dest}, or pass --model /path/to/checkpoint.pth"
            ) from None
        if total and done != total:
            raise RuntimeError(f"download of {url} stopped after {done} of {total} bytes: run the command again")
        actual = digest.hexdigest()
        if sha256_prefix and not actual.startswith(sha256_prefix.lower()):
            raise RuntimeError(
                f"{url}: SHA-256 {actual[:16]}... does not start with the expected {sha256_prefix}: "
                f"the download is corrupt or the file changed; nothing was written to {dest}, try again"
            )
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


def fetch(name: str, weights_dir: str | Path | None = None, allow_download: bool = True, progress: bool = True) -> Path:
    """Path of the named checkpoint in the cache, downloading it (hash-checked) when absent."""
    if name not in REGISTRY:
        raise ValueError(f"unknown checkpoint {name!r}: run `avatar-bridge weights` to list the names, or pass a .pth/.onnx path")
    info = REGISTRY[name]
    dest = Path(weights_dir) if weights_dir else default_weights_dir()
    dest = dest / info.filename
    if dest.is_file():
        return dest
    if not allow_download:
        raise FileNotFoundError(
            f"checkpoint {info.filename} is not in {dest.parent}: download {info.url} and place it at {dest}, "
            f"or allow downloads (pose.download = true)"
        )
    return download(info.url, dest, info.sha256, progress=progress)


# --- layouts --------------------------------------------------------------------------------------

_MOBILENET_BLOCKS = (1, 2, 3, 4, 3, 3, 1)  # inverted residual blocks per MMPose layer1..layer7


def mmpose_mobilenetv2_to_torchvision(key: str) -> str:
    """``conv1.conv.weight`` -> ``0.0.weight``, ``layer2.1.conv.0.bn.bias`` -> ``3.conv.0.1.bias`` ...

    Input and output keys are relative to the backbone. MMPose wraps every conv in a ConvModule
    (``.conv`` / ``.bn``); torchvision uses Conv2dNormActivation (``.0`` / ``.1``) except for the
    final linear projection of each block, which is a bare conv + BN pair.
    """
    sub = {"conv": "0", "bn": "1"}
    m = re.fullmatch(r"conv1\.(conv|bn)\.(.+)", key)
    if m:
        return f"0.{sub[m[1]]}.{m[2]}"
    m = re.fullmatch(r"conv2\.(conv|bn)\.(.+)", key)
    if m:
        return f"18.{sub[m[1]]}.{m[2]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.conv\.(\d)\.(conv|bn)\.(.+)", key)
    if not m:
        return key  # unknown: left as is, reported by the strict load
    layer, block, step, part, rest = int(m[1]), int(m[2]), int(m[3]), m[4], m[5]
    index = 1 + sum(_MOBILENET_BLOCKS[: layer - 1]) + block
    last_step = 1 if layer == 1 else 2  # layer1 has no expansion conv
    if step == last_step:  # linear projection: conv then BN as siblings
        return f"{index}.conv.{step + (1 if part == 'bn' else 0)}.{rest}"
    return f"{index}.conv.{step}.{sub[part]}.{rest}"


def torchvision_mobilenetv2_to_mmpose(key: str) -> str:
    """Inverse of :func:`mmpose_mobilenetv2_to_torchvision` (tests use it to build MMPose checkpoints)."""
    m = re.fullmatch(r"(0|18)\.([01])\.(.+)", key)
    if m:
        return f"{'conv1' if m[1] == '0' else 'conv2'}.{('conv', 'bn')[int(m[2])]}.{m[3]}"
    m = re.fullmatch(r"(\d+)\.conv\.(\d)\.(.+)", key)
    if not m:
        return key
    index, step, rest = int(m[1]), int(m[2]), m[3]
    starts = [1 + sum(_MOBILENET_BLOCKS[:i]) for i in range(len(_MOBILENET_BLOCKS))]
    layer = max(i for i, s in enumerate(starts) if s <= index) + 1
    block = index - starts[layer - 1]
    last_step = 1 if layer == 1 else 2
    if step >= last_step:  # bare conv (step) and BN (step + 1) of the linear projection
        return f"layer{layer}.{block}.conv.{last_step}.{'conv' if step == last_step else 'bn'}.{rest}"
    part, _, rest = rest.partition(".")
    return f"layer{layer}.{block}.conv.{step}.{('conv', 'bn')[int(part)]}.{rest}"


LAYOUTS = ("native", "microsoft", "mmpose0", "mmpose1")


def detect_layout(keys: list[str]) -> str:
    """Which of the known layouts a state dict uses (after stripping ``module.``)."""
    if any(k.startswith("keypoint_head.") for k in keys):
        return "mmpose0"
    if any(k.startswith("head.") for k in keys):
        return "mmpose1"
    if any(k.startswith("backbone.") for k in keys):
        return "native"
    if any(k.startswith(("conv1.", "layer1.")) for k in keys) and any(k.startswith("deconv_layers.") for k in keys):
        return "microsoft"
    return "unknown"


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint file: ``state_dict`` / ``model`` wrappers, ``module.`` prefix."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path} is not a model checkpoint (expected a state dict of tensors, possibly under 'state_dict'): "
            "pass a SimpleBaseline .pth from `avatar-bridge weights` or the MMPose/Microsoft model zoo"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def to_native(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename any known layout's keys to :class:`SimpleBaseline`'s."""
    layout = detect_layout(list(state))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("data_preprocessor.", "target_generator.")):
            continue  # MMPose 1.x bookkeeping buffers, not weights
        if layout == "microsoft" and not key.startswith(("deconv_layers.", "final_layer.")):
            key = "backbone." + key
        elif layout == "mmpose0":
            key = key.replace("keypoint_head.", "", 1)
        elif layout == "mmpose1":
            key = key.replace("head.", "", 1) if key.startswith("head.") else key
        if arch == "mobilenetv2" and key.startswith("backbone.") and re.match(r"backbone\.(conv[12]|layer\d)\.", key):
            key = "backbone." + mmpose_mobilenetv2_to_torchvision(key[len("backbone."):])
        out[key] = value
    return out


def checkpoint_input_size(name_or_path: str) -> tuple[int, int] | None:
    """Input size of a registry entry, or parsed from a file name such as ``res50_coco_384x288-....pth``."""
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path].input_size
    m = re.search(r"(\d{3})x(\d{3})", Path(name_or_path).name)
    return (int(m[1]), int(m[2])) if m else None


def load_checkpoint(model: SimpleBaseline, path: str | Path) -> SimpleBaseline:
    """Load a checkpoint file of any known layout into ``model``, strictly; returns ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: pass an existing .pth file or a name from `avatar-bridge weights`")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / non-pickle / unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path} cannot be read as a torch checkpoint ({first[:160]}): the file is corrupt or not a .pth; "
            "download it again (delete it first) or pass another file"
        ) from None
    state = to_native(_unwrap(obj, path), model.arch)
    expected = model.state_dict()
    ignore = ("num_batches_tracked",)  # absent from old checkpoints; not a weight
    missing = [k for k in expected if k not in state and not k.endswith(ignore)]
    unexpected = [k for k in state if k not in expected and not k.endswith(ignore)]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise ValueError(
            f"{path} does not fit SimpleBaseline {model.arch} with {model.num_keypoints} keypoints "
            f"({'; '.join(parts)}): set pose.arch / pose.num_keypoints to the checkpoint's, or pass the right file"
        )
    with torch.no_grad():
        for key, value in expected.items():
            if key in state:
                value.copy_(state[key])
    return model


def load_pretrained(name_or_path: str, arch: str, num_keypoints: int = 17, weights_dir: str | Path | None = None,
                    allow_download: bool = True) -> SimpleBaseline:
    """A model with weights from a registry name (downloaded if needed) or a .pth path."""
    if name_or_path in REGISTRY:
        info = REGISTRY[name_or_path]
        arch = info.arch
        path = fetch(name_or_path, weights_dir, allow_download)
    else:
        path = Path(name_or_path)
    return load_checkpoint(build_model(arch, num_keypoints), path)


# --- CLI ------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "download"), default="list",
                        help="list the named checkpoints (default) or download some")
    parser.add_argument("names", nargs="*", help="checkpoint names to download (default: all)")
    parser.add_argument("--dir", default="", help="cache folder (default: torch hub cache)")


def run_command(args: argparse.Namespace) -> int:
    folder = Path(args.dir) if args.dir else default_weights_dir()
    if args.action == "list":
        print(f"{'name':36} {'arch':12} {'input':8} {'COCO AP':>7}  cached  file")
        for info in REGISTRY.values():
            cached = "yes" if (folder / info.filename).is_file() else "no"
            print(f"{info.name:36} {info.arch:12} {info.input_size[0]}x{info.input_size[1]:<4} {info.coco_ap:7.1f}  {cached:6}  {info.url}")
        print(f"cache: {folder}")
        return 0
    for name in args.names or list(REGISTRY):
        path = fetch(name, folder, allow_download=True)
        print(f"{name}: {path}")
    return 0


