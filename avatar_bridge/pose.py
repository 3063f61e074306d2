"""Top-down pose inference: person boxes in, COCO keypoints in image pixels out.

Per frame: every box becomes a center and a size with the model's aspect ratio and 1.25 padding;
each person is cut out with ONE ``cv2.warpAffine`` into a reused uint8 batch buffer, and one
vectorized multiply-add turns the whole batch into the model's normalized NCHW input (channel order,
mean and std folded into a per-channel scale and offset). One forward pass runs all people. Decoding
is vectorized over people and joints: heatmap argmax, then either the quarter-pixel shift toward
the higher neighbour (the paper's decoder) or DARK (Zhang et al. 2020: second-order Taylor expansion
of the Gaussian-smoothed log heatmap). Heatmap coordinates map back to the image with the inverse of
the crop's scale and shift; no matrix inversion is needed because the crop has no rotation.

Two backends share all of the above: :class:`TorchBackend` (SimpleBaseline from :mod:`avatar_bridge.model`,
CPU or CUDA with fp16 autocast, channels_last, pinned input and non-blocking copies) and
:class:`OnnxBackend` (any NCHW heatmap model through onnxruntime).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .config import PoseConfig
from .keypoints import flip_permutation
from .types import Pose2D

log = logging.getLogger(__name__)

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)


# --- geometry -------------------------------------------------------------------------------------


def boxes_to_center_size(boxes: np.ndarray, aspect: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) x1 y1 x2 y2 -> centers (N, 2) and crop sizes (N, 2) (w, h) with ``w / h == aspect``.

    The shorter side is grown to the model's aspect ratio (never squashing the person), then both
    are enlarged by ``padding`` so limbs near the box edge stay inside the crop.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    centers = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    w, h = np.where(w > aspect * h, w, h * aspect), np.where(w > aspect * h, w / aspect, h)
    return centers, np.stack([w, h], axis=1) * padding


def crop_matrices(centers: np.ndarray, sizes: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """(N, 2, 3) affine matrices image -> crop: the box center lands on the crop center."""
    sx = out_w / sizes[:, 0]
    sy = out_h / sizes[:, 1]
    mats = np.zeros((len(centers), 2, 3), np.float64)
    mats[:, 0, 0] = sx
    mats[:, 1, 1] = sy
    mats[:, 0, 2] = out_w * 0.5 - centers[:, 0] * sx
    mats[:, 1, 2] = out_h * 0.5 - centers[:, 1] * sy
    return mats


# --- decoding -------------------------------------------------------------------------------------


def _argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer peak (x, y) (N, K) and peak value (N, K)."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxval = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    return idx % w, idx // w, maxval


def decode_heatmaps(heatmaps: np.ndarray, method: str = "quarter") -> tuple[np.ndarray, np.ndarray]:
    """(N, K, h, w) heatmaps -> coordinates (N, K, 2) in heatmap pixels and raw peak values (N, K)."""
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    n, k, h, w = heatmaps.shape
    px, py, maxval = _argmax(heatmaps)
    coords = np.stack([px, py], axis=-1).astype(np.float32)
    if method == "argmax" or n == 0:
        return coords, maxval
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    if method == "quarter":
        # Shift a quarter pixel toward the higher neighbour (interior peaks only).
        xl, xr = np.clip(px - 1, 0, w - 1), np.clip(px + 1, 0, w - 1)
        yu, yd = np.clip(py - 1, 0, h - 1), np.clip(py + 1, 0, h - 1)
        dx = np.sign(heatmaps[ni, ki, py, xr] - heatmaps[ni, ki, py, xl])
        dy = np.sign(heatmaps[ni, ki, yd, px] - heatmaps[ni, ki, yu, px])
        coords[..., 0] += np.where((px > 0) & (px < w - 1), 0.25 * dx, 0.0)
        coords[..., 1] += np.where((py > 0) & (py < h - 1), 0.25 * dy, 0.0)
        return coords, maxval
    if method == "dark":
        return coords + _dark_offsets(heatmaps, px, py, ni, ki), maxval
    raise ValueError(f"unknown heatmap decoder {method!r}: choose argmax, quarter or dark")


def _dark_offsets(heatmaps: np.ndarray, px: np.ndarray, py: np.ndarray, ni: np.ndarray, ki: np.ndarray,
                  kernel: int = 11) -> np.ndarray:
    """DARK sub-pixel offsets: Newton step -H^-1 g on the log of the Gaussian-smoothed heatmap."""
    smooth = np.empty_like(heatmaps)
    h, w = heatmaps.shape[2:]
    # One small C call per map: faster here than one vectorized scipy.ndimage filter.
    for src, dst in zip(heatmaps.reshape(-1, h, w), smooth.reshape(-1, h, w)):
        cv2.GaussianBlur(src, (kernel, kernel), 0, dst=dst)  # sigma 2 for 11x11, reflect-101 border
    # The log is needed only at the 5x5 points around each peak (edge pixels repeat at the border).
    # Rescaling the blurred map to the original peak height, as some implementations do, adds a
    # constant to the log and so cannot change its derivatives: it is skipped.

    def at(dy: int, dx: int) -> np.ndarray:
        values = smooth[ni, ki, np.clip(py + dy, 0, h - 1), np.clip(px + dx, 0, w - 1)]
        return np.log(np.maximum(values, 1e-10))

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    hyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    ok = (np.abs(det) > 1e-12) & (hxx < 0) & (hyy < 0)  # a maximum: negative-definite Hessian
    safe = np.where(ok, det, 1.0)
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(-hxy * gx + hxx * gy) / safe
    offsets = np.stack([np.where(ok, ox, 0.0), np.where(ok, oy, 0.0)], axis=-1)
    return np.clip(offsets, -1.0, 1.0).astype(np.float32)  # a Newton step beyond a pixel is noise


# --- backends -------------------------------------------------------------------------------------


class OnnxBackend:
    """Any NCHW top-down heatmap model through onnxruntime.

    The input size is read from the model when its spatial dims are static; a static batch
    dimension (e.g. 1) is honoured by running the crops in chunks of that size.
    """

    def __init__(self, path: str | Path, threads: int = 0, optimization: str = "all", device: str = "cpu"):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found: pass an existing .onnx file (pose.model / --model)")
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise ValueError(f"{path} cannot be loaded by onnxruntime ({str(exc).splitlines()[0][:160]}): "
                             "pass a valid .onnx pose model") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{path}: expected one NCHW image input, found {[(i.name, i.shape) for i in inputs]}: "
                             "pass a top-down heatmap model")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.static_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.static_size = (shape[2], shape[3]) if all(isinstance(d, int) and d > 0 for d in shape[2:]) else None
        if isinstance(shape[1], int) and shape[1] != 3:
            raise ValueError(f"{path}: input {self.input_name} has {shape[1]} channels, expected 3 (an RGB/BGR image)")
        self.path = path

    def prepare(self, capacity: int, height: int, width: int) -> np.ndarray:
        return np.empty((capacity, 3, height, width), np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        step = self.static_batch or len(batch)
        outs = [self.session.run(None, {self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)
        if out.ndim != 4:
            raise ValueError(f"{self.path}: first output has shape {out.shape}, expected (N, K, h, w) heatmaps")
        return out


class TorchBackend:
    """SimpleBaseline in torch: inference_mode, channels_last, fp16 autocast and pinned copies on CUDA."""

    def __init__(self, model, device: str = "cpu", fp16: bool = False, channels_last: bool = True, threads: int = 0):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"pose.device = {device!r} but torch sees no CUDA GPU: use --device cpu")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.fp16 = bool(fp16 and self.cuda)  # CPU fp16 convolutions are slower than fp32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        self.num_keypoints = model.num_keypoints
        self._host = None  # pinned host tensor that the numpy batch buffer views (CUDA only)

    def prepare(self, capacity: int, height: int, width: int) -> np.ndarray:
        """The reusable host batch buffer; on CUDA it is page-locked so the copy can be asynchronous."""
        torch = self.torch
        self._host = torch.empty((capacity, 3, height, width), dtype=torch.float32, pin_memory=self.cuda)
        return self._host.numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        host = self._host
        if host is not None and batch.ctypes.data == host.data_ptr() and batch.flags.c_contiguous:
            x = host[: len(batch)]  # the pinned tensor itself, so the copy below is truly asynchronous
        else:
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=self.cuda).contiguous(memory_format=self.memory_format)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.fp16):
                out = self.model(x)
            return out.float().cpu().numpy()


# --- estimator ------------------------------------------------------------------------------------


@dataclass
class Normalization:
    """Model input = (pixel[channel_order] - mean) / std, pixels 0..255."""

    channel_order: str = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def scale_offset(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Per output channel: BGR source channel, scale 1/std and offset -mean/std."""
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"pose.channel_order = {self.channel_order!r}: choose rgb or bgr")
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
            raise ValueError(f"pose.mean / pose.std must be 3 numbers each with std > 0, got {list(self.mean)} / {list(self.std)}")
        source = [2, 1, 0] if self.channel_order == "rgb" else [0, 1, 2]
        return 1.0 / std, -mean / std, source


class TopDownEstimator:
    """Crops every person of a frame, runs them as one batch, returns keypoints in image pixels.

    The input buffers are reused across calls, so one estimator serves one thread at a time.
    """

    def __init__(self, backend, input_size: tuple[int, int] = (256, 192), decode: str = "quarter",
                 flip_test: bool = False, padding: float = 1.25, normalization: Normalization | None = None,
                 max_batch: int = 64):
        if decode not in ("argmax", "quarter", "dark"):
            raise ValueError(f"pose.decode = {decode!r}: choose argmax, quarter or dark")
        self.backend = backend
        self.input_h, self.input_w = int(input_size[0]), int(input_size[1])
        self.aspect = self.input_w / self.input_h
        self.decode = decode
        self.flip_test = flip_test
        self.padding = padding
        self.max_batch = max_batch
        self.scale, self.offset, self.source = (normalization or Normalization()).scale_offset()
        self._crops = np.empty((0, self.input_h, self.input_w, 3), np.uint8)
        self._batch = np.empty((0, 3, self.input_h, self.input_w), np.float32)

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Reused uint8 crop and float input buffers, grown (doubling) only when a frame has more people."""
        rows = 2 * n if self.flip_test else n
        if len(self._batch) < rows:
            capacity = max(rows, 2 * len(self._batch), 2 if self.flip_test else 1)
            self._crops = np.empty((capacity, self.input_h, self.input_w, 3), np.uint8)
            self._batch = self.backend.prepare(capacity, self.input_h, self.input_w)
        return self._crops, self._batch

    def preprocess(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fill the input batch; returns (batch view (N or 2N, 3, H, W), centers, sizes)."""
        centers, sizes = boxes_to_center_size(boxes, self.aspect, self.padding)
        n = len(centers)
        crops, batch = self._buffers(n)
        for i, mat in enumerate(crop_matrices(centers, sizes, self.input_w, self.input_h)):
            cv2.warpAffine(image, mat, (self.input_w, self.input_h), dst=crops[i], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        for c, src in enumerate(self.source):  # channel order, /std and -mean in one pass per channel
            np.multiply(crops[:n, :, :, src], self.scale[c], out=batch[:n, c])
            batch[:n, c] += self.offset[c]
        if self.flip_test:
            batch[n : 2 * n] = batch[:n, :, :, ::-1]
            return batch[: 2 * n], centers, sizes
        return batch[:n], centers, sizes

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) <= self.max_batch:
            return self.backend(batch)
        return np.concatenate([self.backend(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])

    def heatmaps(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, K, h, w) heatmaps (flip-averaged when flip test is on), centers and sizes."""
        batch, centers, sizes = self.preprocess(image, boxes)
        out = self._forward(batch)
        if self.flip_test:
            n = len(centers)
            flipped = out[n:, flip_permutation(out.shape[1]), :, ::-1]
            # The crop is mirrored about input x = (W-1)/2, i.e. heatmap x = (W-1)/(2 stride), but
            # reversing the heatmap mirrors about (w-1)/2: the flipped-back map sits 1 - w/W columns
            # (0.75 at stride 4) left of the truth. Shift it back by linear interpolation (the paper's
            # code shifts a whole column, which biases the average by a quarter heatmap pixel).
            shift = 1.0 - out.shape[3] / self.input_w
            shifted = np.empty_like(flipped)
            shifted[..., 1:] = (1.0 - shift) * flipped[..., 1:] + shift * flipped[..., :-1]
            shifted[..., 0] = flipped[..., 0]
            out = (out[:n] + shifted) * 0.5
        return out, centers, sizes

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> list[Pose2D]:
        """BGR image (H, W, 3) uint8 and (N, 4) x1 y1 x2 y2 boxes -> one :class:`Pose2D` per box."""
        if image is None or not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            desc = None if image is None else f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            raise ValueError(f"pose input must be a BGR uint8 image of shape (H, W, 3), got {desc}")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return []
        if not np.isfinite(boxes).all():
            raise ValueError(f"pose boxes must be finite x1 y1 x2 y2 pixels, got {boxes[~np.isfinite(boxes).all(1)][0].tolist()}")
        heatmaps, centers, sizes = self.heatmaps(image, boxes)
        coords, maxval = decode_heatmaps(heatmaps, self.decode)
        h, w = heatmaps.shape[2:]
        # heatmap pixel -> image pixel: undo the stride, then the crop's scale and shift
        scale = sizes / np.array([w, h], np.float32)  # (N, 2) image px per heatmap px
        keypoints = coords * scale[:, None, :] + (centers - sizes * 0.5)[:, None, :]
        scores = np.clip(maxval, 0.0, 1.0).astype(np.float32)
        return [Pose2D(keypoints=keypoints[i].astype(np.float32), scores=scores[i], box=boxes[i].copy())
                for i in range(len(boxes))]


def load_estimator(config: PoseConfig | None = None) -> TopDownEstimator:
    """Build the estimator a :class:`PoseConfig` describes.

    ``config.model``: a ``.onnx`` file (onnxruntime), a ``.pth`` checkpoint, a registry name,
    ``random`` (untrained weights, for timing), or empty for the registry checkpoint of ``arch``.
    """
    config = config or PoseConfig()
    model = config.model.strip()
    input_size = tuple(int(v) for v in config.input_size)
    if len(input_size) != 2 or min(input_size) < 16:
        raise ValueError(f"pose.input_size = {list(config.input_size)}: give [height, width], e.g. [256, 192]")
    backend_name = config.backend
    if backend_name == "auto":
        backend_name = "onnxruntime" if model.lower().endswith(".onnx") else "torch"
    if backend_name == "onnxruntime":
        if not model.lower().endswith(".onnx"):
            raise ValueError(f"pose.backend = onnxruntime needs pose.model = a .onnx file, got {model!r} "
                             "(make one with `avatar-bridge export-onnx`)")
        backend = OnnxBackend(model, threads=config.threads, optimization=config.ort_optimization, device=config.device)
        if backend.static_size and backend.static_size != input_size:
            log.info("%s has a fixed input size %dx%d; using it", model, *backend.static_size)
            input_size = backend.static_size
    else:
        from .model import build_model  # torch is imported only for the torch backend
        from .weights import REGISTRY, checkpoint_input_size, load_pretrained, registry_name

        if model.lower().endswith(".onnx"):
            raise ValueError(f"pose.backend = torch cannot run {model}: use backend auto or onnxruntime")
        if model == "random":
            net = build_model(config.arch, config.num_keypoints)
        else:
            name = model or registry_name(config.arch, input_size)
            if name in REGISTRY or name.endswith(".pth") or Path(name).is_file():
                input_size = checkpoint_input_size(name) or input_size
                arch = REGISTRY[name].arch if name in REGISTRY else config.arch
                net = load_pretrained(name, arch, config.num_keypoints, config.weights_dir or None, config.download)
            else:
                raise ValueError(f"pose.model = {model!r} is neither a file nor a checkpoint name: pass a .pth/.onnx "
                                 f"path, 'random', or one of {', '.join(REGISTRY)}")
        backend = TorchBackend(net, device=config.device, fp16=config.fp16, channels_last=config.channels_last,
                               threads=config.threads)
    return TopDownEstimator(
        backend, input_size=input_size, decode=config.decode, flip_test=config.flip_test, padding=config.padding,
        normalization=Normalization(config.channel_order, tuple(config.mean), tuple(config.std)),
        max_batch=config.max_batch,
    )
