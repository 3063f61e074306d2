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

Files are read with ``torch.load(weights_only=True)`` plus a scoped allow-list of numpy and known
mmengine globals (:func:`read_checkpoint`), and :func:`inspect_checkpoint` reads what a checkpoint says
about itself (arch, keypoint count, input size, channel order, mean/std, flip pairs) into a
:class:`CheckpointMeta`; docs/pose.md lists each rule and its source.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .files import default_file_mode
from .model import CAFFE_ARCHITECTURES, SimpleBaseline, base_arch, build_model

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
                done = 0
                # tqdm: bytes done / total, rate and ETA on stderr; a plain line per update off a terminal
                with tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                          disable=not progress, file=sys.stderr, mininterval=0.2) as bar:
                    while True:
                        chunk = response.read(1 << 16)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
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
        default_file_mode(tmp_name)
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
    """Input size of a registry entry, or parsed from a file name such as ``res50_coco_384x288-....pth``.

    Only a fallback: :func:`inspect_checkpoint` reads the size from the checkpoint's own config first.
    """
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path].input_size
    m = re.search(r"(\d{3})x(\d{3})", Path(name_or_path).name)
    return (int(m[1]), int(m[2])) if m else None


# --- safe reading ---------------------------------------------------------------------------------


class _HistoryBufferStandIn:
    """Stands in for ``mmengine.logging.history_buffer.HistoryBuffer`` (the logged scalars inside the
    ``message_hub`` of an MMPose 1.x training checkpoint) so such a file loads without mmengine. It
    only receives the pickled attribute dict (numbers and numpy arrays); no mmengine code runs."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _numpy_globals() -> list:
    """The numpy callables and classes that pickled arrays, dtypes and scalars refer to.

    ``_reconstruct`` / ``ndarray`` / ``dtype`` rebuild arrays and ``scalar`` rebuilds numpy scalars:
    none of them runs code chosen by the file. Each is listed under the module path numpy 1.x writes
    (``numpy.core.multiarray``) and the one numpy 2.x writes (``numpy._core.multiarray``), since a
    checkpoint keeps the path of the numpy that saved it.
    """
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    out: list = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype, named in pickles of dtypes
    if dtypes is not None:
        out += [cls for name, cls in vars(dtypes).items() if name.endswith("DType") and isinstance(cls, type)]
    return out


# Known non-tensor objects of training checkpoints (MMPose 1.x via mmengine), mapped to inert stand-ins.
_MMENGINE_GLOBALS = [(_HistoryBufferStandIn, "mmengine.logging.history_buffer.HistoryBuffer")]

_RESAVE_HINT = (
    "if you trust the file, keep only its weights with: python -c \"import torch; c = torch.load('IN.pth', "
    "weights_only=False); torch.save({'state_dict': c['state_dict'], 'meta': c.get('meta')}, 'OUT.pth')\""
)


def read_checkpoint(path: str | Path) -> object:
    """Unpickle a checkpoint file with ``torch.load(weights_only=True)`` plus a scoped allow-list.

    Allowed beyond torch's own tensors and plain containers: numpy arrays, dtypes and scalars (MMPose
    1.x ``meta['dataset_meta']``, Microsoft's ``perf``) and mmengine's ``HistoryBuffer`` (MMPose 1.x
    training checkpoints), the latter as an inert stand-in. The allow-list is active only during
    this call (``torch.serialization.safe_globals``); any other global is refused, never silently
    unpickled. Errors: ``FileNotFoundError``; ``ValueError`` whose one line says whether the file
    holds a disallowed object (and names it, with how to re-save the weights) or is truncated/not a
    checkpoint (download again).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: pass an existing .pth file or a name from `avatar-bridge weights`")
    try:
        with torch.serialization.safe_globals(_numpy_globals() + _MMENGINE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / non-pickle / unsafe files
        text = str(exc)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+) was not an allowed", text)
        if m or "Weights only load failed" in text:
            what = m[1] if m else "an object torch's safe loader refuses"
            raise ValueError(
                f"{path} holds {what}, which is not a tensor, number, container or numpy array, so avatar-bridge "
                f"will not unpickle it (that could run code from the file); {_RESAVE_HINT}"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ValueError(
            f"{path} cannot be read as a torch checkpoint ({first[:160]}): the file is truncated, corrupt or not a .pth; "
            "download it again (delete it first) or pass another file"
        ) from None


# --- what the checkpoint says about itself ----------------------------------------------------------


class _ConfigError(ValueError):
    pass


def _literal(node, names: dict):
    """Value of a config expression built from literals, ``dict(...)``, names assigned earlier and ``a[b]``."""
    import ast

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, names) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_literal(k, names): _literal(v, names) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, names) for kw in node.keywords if kw.arg}
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Subscript):
        return _literal(node.value, names)[_literal(node.slice, names)]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand, names)
    raise _ConfigError(type(node).__name__)


def parse_config_text(text: str) -> dict:
    """Top-level assignments of an OpenMMLab config file's text (``meta['cfg']`` in MMPose 1.x,
    ``meta['config']`` in 0.x), evaluated WITHOUT executing it: only literals, ``dict(...)``, earlier
    names and subscripts are understood; assignments using anything else are skipped."""
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    names: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                names[stmt.targets[0].id] = _literal(stmt.value, names)
            except (_ConfigError, KeyError, IndexError, TypeError):
                continue
    return names


@dataclass
class CheckpointMeta:
    """What a checkpoint file tells about how to run it; ``None`` = it does not say.

    ``input_size`` is (height, width) pixels; ``mean`` / ``std`` are per model-input channel in 0..255
    pixel units, applied after reordering to ``channel_order``; ``flip_indices`` maps each keypoint to
    its mirror (flip test); ``sources`` says where each field came from.
    """

    layout: str = "unknown"
    arch: str | None = None
    num_keypoints: int | None = None
    input_size: tuple[int, int] | None = None
    channel_order: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    flip_indices: tuple[int, ...] | None = None
    dark: bool | None = None  # the config decodes with DARK (unbiased=True / post_process='unbiased')
    sources: dict = field(default_factory=dict)


def infer_arch(keys: list[str]) -> str | None:
    """Backbone of a state dict (any layout, ``module.`` stripped) from its key structure, or None.

    MobileNetV2: MMPose's ``backbone.layer7`` / ``backbone.conv2`` or torchvision's ``backbone.18``.
    ResNet: bottleneck (``conv3`` in blocks) or basic, and the block count of ``layer3`` (2, 6, 6, 23,
    36 for depth 18, 34, 50, 101, 152; He et al. 2016, Table 1). Caffe style cannot be told from
    the keys (see :mod:`avatar_bridge.model`).
    """
    body = [re.sub(r"^(backbone\.)", "", k) for k in keys if not k.startswith(("head.", "keypoint_head.", "deconv_layers.", "final_layer."))]
    if any(re.match(r"(layer7\.|conv2\.conv\.|18\.0\.)", k) for k in body):
        return "mobilenetv2"
    blocks = {int(m[1]) for k in body if (m := re.match(r"layer3\.(\d+)\.", k))}
    if not blocks:
        return None
    bottleneck = any(re.match(r"layer1\.0\.conv3\.", k) for k in body)
    depth = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50", (23, True): "resnet101",
             (36, True): "resnet152"}
    return depth.get((max(blocks) + 1, bottleneck))


def _meta_from_config(cfg: dict, meta: CheckpointMeta, where: str) -> None:
    """Fill ``meta`` from an MMPose 1.x (``codec``, ``model.data_preprocessor``) or 0.x (``data_cfg``,
    ``test_pipeline`` NormalizeTensor) config; the documented defaults of each version apply to
    what the config leaves out (1.x: bgr_to_rgb is False unless set; 0.x: images load as RGB)."""
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    codec = cfg.get("codec") if isinstance(cfg.get("codec"), dict) else None
    head = model.get("head") if isinstance(model.get("head"), dict) else None
    if codec is None and head and isinstance(head.get("decoder"), dict):
        codec = head["decoder"]
    if codec and isinstance(codec.get("input_size"), (list, tuple)) and len(codec["input_size"]) == 2:
        w, h = codec["input_size"]  # MMPose 1.x writes (width, height)
        meta.input_size, meta.sources["input_size"] = (int(h), int(w)), f"{where} codec.input_size"
        meta.dark = bool(codec.get("unbiased", False))
    pre = model.get("data_preprocessor") if isinstance(model.get("data_preprocessor"), dict) else None
    if pre and "mean" in pre and "std" in pre:
        meta.mean, meta.std = tuple(float(v) for v in pre["mean"]), tuple(float(v) for v in pre["std"])
        # LoadImage gives BGR; PoseDataPreprocessor swaps to RGB only when bgr_to_rgb is set.
        meta.channel_order = "rgb" if pre.get("bgr_to_rgb") else "bgr"
        meta.sources["normalization"] = f"{where} model.data_preprocessor"
    data_cfg = cfg.get("data_cfg") if isinstance(cfg.get("data_cfg"), dict) else None
    if meta.input_size is None and data_cfg and isinstance(data_cfg.get("image_size"), (list, tuple)):
        w, h = data_cfg["image_size"]  # MMPose 0.x writes [width, height] too
        meta.input_size, meta.sources["input_size"] = (int(h), int(w)), f"{where} data_cfg.image_size"
    pipeline = cfg.get("test_pipeline") if isinstance(cfg.get("test_pipeline"), list) else []
    for step in pipeline:
        if isinstance(step, dict) and step.get("type") == "NormalizeTensor" and meta.mean is None:
            meta.mean = tuple(255.0 * float(v) for v in step.get("mean", (0.485, 0.456, 0.406)))
            meta.std = tuple(255.0 * float(v) for v in step.get("std", (0.229, 0.224, 0.225)))
            order = next((s.get("channel_order", "rgb") for s in pipeline
                          if isinstance(s, dict) and s.get("type") == "LoadImageFromFile"), "rgb")
            meta.channel_order = "bgr" if order == "bgr" else "rgb"
            meta.sources["normalization"] = f"{where} test_pipeline NormalizeTensor"
    test_cfg = model.get("test_cfg") if isinstance(model.get("test_cfg"), dict) else {}
    if meta.dark is None and "post_process" in test_cfg:
        meta.dark = test_cfg.get("post_process") == "unbiased"


def checkpoint_meta(obj: object, state: dict[str, torch.Tensor]) -> CheckpointMeta:
    """Everything :class:`CheckpointMeta` can learn from a loaded checkpoint object and its state dict."""
    meta = CheckpointMeta(layout=detect_layout(list(state)))
    meta.arch = infer_arch(list(state))
    if meta.arch:
        meta.sources["arch"] = "state dict structure"
    for key in ("final_layer.weight", "head.final_layer.weight", "keypoint_head.final_layer.weight"):
        if key in state and state[key].ndim == 4:
            meta.num_keypoints, meta.sources["num_keypoints"] = int(state[key].shape[0]), key
            break
    if meta.layout == "microsoft":
        # microsoft/human-pose-estimation.pytorch reads images with cv2.imread (BGR) and normalizes with
        # ImageNet mean/std in RGB order (lib/dataset/JointsDataset.py, pose_estimation/valid.py).
        meta.channel_order, meta.sources["normalization"] = "bgr", "Microsoft layout (trained on BGR input)"
        meta.mean, meta.std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    raw = obj.get("meta") if isinstance(obj, dict) else None
    if isinstance(raw, dict):
        text = raw.get("cfg") if isinstance(raw.get("cfg"), str) else raw.get("config")
        if isinstance(text, str):
            _meta_from_config(parse_config_text(text), meta, "meta config")
        dataset = raw.get("dataset_meta")
        if isinstance(dataset, dict) and dataset.get("flip_indices") is not None:
            meta.flip_indices = tuple(int(i) for i in dataset["flip_indices"])
            meta.sources["flip_indices"] = "meta dataset_meta.flip_indices"
    if meta.layout in ("mmpose0", "mmpose1") and meta.channel_order is None:
        meta.channel_order, meta.sources["normalization"] = "rgb", "MMPose layout (RGB, ImageNet mean/std)"
        meta.mean, meta.std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    return meta


def inspect_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read a checkpoint safely (:func:`read_checkpoint`): its raw state dict (``module.`` stripped)
    and its :class:`CheckpointMeta`, the input size falling back to the file name.

    Raises what :func:`read_checkpoint` raises, and ``ValueError`` when the file holds no state dict.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state = _unwrap(obj, path)
    meta = checkpoint_meta(obj, state)
    if meta.input_size is None and checkpoint_input_size(str(path)):
        meta.input_size, meta.sources["input_size"] = checkpoint_input_size(str(path)), "file name"
    return state, meta


def _load_state(model: SimpleBaseline, state: dict[str, torch.Tensor], path: Path) -> SimpleBaseline:
    state = to_native(state, model.arch)
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


def load_checkpoint(model: SimpleBaseline, path: str | Path) -> SimpleBaseline:
    """Load a checkpoint file of any known layout into ``model``, strictly; returns ``model``.

    Errors (``ValueError``, one line): unreadable or unsafe file (:func:`read_checkpoint`), or the
    missing / unexpected / mismatched keys when the file does not fit ``model``.
    """
    path = Path(path)
    return _load_state(model, _unwrap(read_checkpoint(path), path), path)


def resolve_arch(requested: str, meta: CheckpointMeta, path: Path) -> str:
    """The arch to build: the checkpoint's own (from its keys) unless ``requested`` is its caffe-style
    variant; a file whose name says ``caffe`` must be loaded with a ``-caffe`` arch."""
    inferred = meta.arch
    arch = requested if inferred is None or base_arch(requested) == inferred else inferred
    if "caffe" in path.name.lower() and arch not in CAFFE_ARCHITECTURES:
        raise ValueError(
            f"{path} is named as a caffe-style checkpoint, whose downsampling bottlenecks stride on the first 1x1 "
            f"conv; loading it as {arch} would compute something else: pass --arch / pose.arch {arch}-caffe"
        )
    return arch


def load_pretrained_with_meta(name_or_path: str, arch: str, num_keypoints: int = 17,
                              weights_dir: str | Path | None = None,
                              allow_download: bool = True) -> tuple[SimpleBaseline, CheckpointMeta]:
    """A model with weights from a registry name (downloaded if needed) or a .pth path, and its meta.

    The checkpoint decides the arch (from its keys; ``arch`` is used when they do not tell, or to pick
    the ``-caffe`` variant) and the keypoint count (from ``final_layer``; ``num_keypoints`` otherwise).
    """
    if name_or_path in REGISTRY:
        info = REGISTRY[name_or_path]
        arch = info.arch
        path = fetch(name_or_path, weights_dir, allow_download)
    else:
        path = Path(name_or_path)
    state, meta = inspect_checkpoint(path)
    if name_or_path in REGISTRY:
        meta.input_size, meta.sources["input_size"] = REGISTRY[name_or_path].input_size, "registry"
    arch = resolve_arch(arch, meta, path)
    model = build_model(arch, meta.num_keypoints or num_keypoints)
    return _load_state(model, state, path), meta


def load_pretrained(name_or_path: str, arch: str, num_keypoints: int = 17, weights_dir: str | Path | None = None,
                    allow_download: bool = True) -> SimpleBaseline:
    """A model with weights from a registry name (downloaded if needed) or a .pth path."""
    return load_pretrained_with_meta(name_or_path, arch, num_keypoints, weights_dir, allow_download)[0]


# --- CLI ------------------------------------------------------------------------------------------
