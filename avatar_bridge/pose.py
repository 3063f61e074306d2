"""Top-down pose inference: person boxes in, COCO keypoints in image pixels out.

Per frame: every box becomes a center and a size with the model's aspect ratio and 1.25 padding;
each person is cut out with ONE ``cv2.warpAffine`` into a reused uint8 batch buffer, and one
vectorized multiply-add turns the whole batch into the model's normalized NCHW input (channel order,
mean and std folded into a per-channel scale and offset). One forward pass runs all people. Decoding
is vectorized over people and joints: heatmap argmax, then either the quarter-pixel shift toward
the higher neighbour (the paper's decoder) or DARK (Zhang et al. 2020: second-order Taylor expansion
of the Gaussian-smoothed log heatmap). The default ``reference`` / ``reference-dark`` modes reproduce
MMPose 1.x's conventions exactly (crop matrix, border rules, zero-padded DARK blur, one-column flip
shift; checked against MMPose's own output in tests/test_parity.py); ``quarter`` / ``dark`` are the
earlier variants. Heatmap coordinates map back to the image with the inverse of the crop's scale and
shift; no matrix inversion is needed because the crop has no rotation.

Two backends share all of the above: :class:`TorchBackend` (SimpleBaseline from :mod:`avatar_bridge.model`,
CPU or CUDA with fp16 autocast, channels_last, pinned input and non-blocking copies) and
:class:`OnnxBackend` (any NCHW heatmap model through onnxruntime).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future, wait
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
    centers = (boxes[:, :2] + boxes[:, 2:]) * np.float32(0.5)
    # MMPose's order (bbox_xyxy2cs, then TopdownAffine's _fix_aspect_ratio), float32 throughout
    w = np.maximum(boxes[:, 2] - boxes[:, 0], np.float32(1.0)) * np.float32(padding)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], np.float32(1.0)) * np.float32(padding)
    wide = w > h * np.float32(aspect)
    w, h = np.where(wide, w, h * np.float32(aspect)), np.where(wide, w / np.float32(aspect), h)
    return centers, np.stack([w, h], axis=1).astype(np.float32)


def crop_matrices(centers: np.ndarray, sizes: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """(N, 2, 3) affine matrices image -> crop: the box center lands on the crop center, and the box
    width ``sizes[:, 0]`` spans the crop width (the height follows from the aspect ratio).

    Built as MMPose 1.x's ``get_warp_matrix`` (mmpose/structures/bbox/transforms.py) builds it, no
    rotation: three float32 point pairs (center, center - half width along x, and the point a quarter
    turn from it) solved by ``cv2.getAffineTransform``. The float32 rounding of that solve is part of
    the convention: with the exact matrix, ``cv2.warpAffine``'s fixed-point interpolation rounds a
    few pixels per crop to the neighbouring grey level.
    """
    mats = np.zeros((len(centers), 2, 3), np.float64)
    dst = np.array([[out_w * 0.5, out_h * 0.5], [0.0, out_h * 0.5], [0.0, out_h * 0.5 + out_w * 0.5]], np.float32)
    for i, (center, size) in enumerate(zip(np.asarray(centers, np.float32), np.asarray(sizes, np.float32))):
        left = np.float32(center[0] - size[0] * np.float32(0.5))
        src = np.array([center, (left, center[1]), (left, center[1] + (center[0] - left))], np.float32)
        mats[i] = cv2.getAffineTransform(src, dst)
    return mats


# --- decoding -------------------------------------------------------------------------------------


def _argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer peak (x, y) (N, K) and peak value (N, K)."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxval = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    return idx % w, idx // w, maxval


DECODERS = ("reference", "reference-dark", "quarter", "dark", "argmax")


def decode_heatmaps(heatmaps: np.ndarray, method: str = "reference", blur_kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, h, w) heatmaps -> coordinates (N, K, 2) in heatmap pixels and raw peak values (N, K).

    Peak values are the raw heatmap maxima (not clipped; they can exceed 1 or be negative).
    Methods (conventions and sources in docs/pose.md):

    - ``reference``: MMPose 1.x ``MSRAHeatmap`` without ``unbiased`` (``get_heatmap_maximum`` then
      ``refine_keypoints`` in mmpose/codecs/utils): argmax; a peak whose value is <= 0 is reported at
      (-1, -1); x moves a quarter pixel toward the higher neighbour only when 1 < x < w-1 (and 0 < y),
      y only when 1 < y < h-1 (and 0 < x).
    - ``reference-dark``: the same argmax, then MMPose's ``refine_keypoints_dark`` (Zhang et al., CVPR
      2020): Gaussian blur of ``blur_kernel`` (sigma from OpenCV's rule, 2 for 11) with zero padding,
      rescaled to the original maximum, log, and one unclipped Newton step where 1 < x < w-2 and 1 < y < h-2.
    - ``quarter``: avatar-bridge's earlier variant: quarter pixel wherever 0 < x < w-1 / 0 < y < h-1.
    - ``dark``: avatar-bridge's earlier DARK: reflect-101 blur border, every position, step clipped to 1 px.
    - ``argmax``: the integer peak.

    Raises ``ValueError`` for an unknown method.
    """
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    if method not in DECODERS:
        raise ValueError(f"unknown heatmap decoder {method!r}: choose {', '.join(DECODERS)}")
    n, k, h, w = heatmaps.shape
    if method == "reference" and n:
        return _reference_quarter(heatmaps)
    px, py, maxval = _argmax(heatmaps)
    coords = np.stack([px, py], axis=-1).astype(np.float32)
    if method == "argmax" or n == 0:
        return coords, maxval
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    if method == "reference-dark":
        coords[maxval <= 0] = -1.0  # MMPose's get_heatmap_maximum marks a non-positive peak as invalid
        px, py = coords[..., 0].astype(np.int64), coords[..., 1].astype(np.int64)
        return _reference_dark(heatmaps, coords, px, py, ni, ki, blur_kernel), maxval
    if method == "quarter":
        # Shift a quarter pixel toward the higher neighbour (interior peaks only).
        xl, xr = np.clip(px - 1, 0, w - 1), np.clip(px + 1, 0, w - 1)
        yu, yd = np.clip(py - 1, 0, h - 1), np.clip(py + 1, 0, h - 1)
        dx = np.sign(heatmaps[ni, ki, py, xr] - heatmaps[ni, ki, py, xl])
        dy = np.sign(heatmaps[ni, ki, yd, px] - heatmaps[ni, ki, yu, px])
        coords[..., 0] += np.where((px > 0) & (px < w - 1), 0.25 * dx, 0.0)
        coords[..., 1] += np.where((py > 0) & (py < h - 1), 0.25 * dy, 0.0)
        return coords, maxval
    return coords + _dark_offsets(heatmaps, px, py, ni, ki), maxval


def _reference_quarter(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MMPose's ``get_heatmap_maximum`` + ``refine_keypoints``: the argmax, (-1, -1) for a peak <= 0,
    then +-0.25 toward the higher neighbour with its exact border rules. The four neighbours are read
    in one gather on the flattened maps: it runs right after the network, when the caches are cold,
    where fewer array calls measured 0.105 -> 0.065 ms per crop (0.064 -> 0.040 warm; docs/profile.md)."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    px, py, maxval = _argmax(heatmaps)
    valid = ~(maxval <= 0)  # as MMPose: only a peak <= 0 is invalid (NaN stays)
    px, py = np.where(valid, px, -1), np.where(valid, py, -1)
    xs, ys = np.maximum(px, 0), np.maximum(py, 0)  # an invalid peak reads (0, 0): its shift is masked below
    row, col = ys * w, xs
    neighbours = np.stack([row + np.minimum(col + 1, w - 1), row + np.maximum(col - 1, 0),
                           np.minimum(ys + 1, h - 1) * w + col, np.maximum(ys - 1, 0) * w + col], axis=-1)
    v = np.take_along_axis(flat, neighbours, axis=2)  # (N, K, 4): right, left, below, above
    ok = np.stack([(px > 1) & (px < w - 1) & (py > 0) & (py < h), (py > 1) & (py < h - 1) & (px > 0) & (px < w)], axis=-1)
    step = np.where(ok, np.sign(v[..., 0::2] - v[..., 1::2]), 0.0).astype(np.float32) * np.float32(0.25)
    return np.stack([px, py], axis=-1).astype(np.float32) + step, maxval


def blur_zero_padded(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """MMPose's ``gaussian_blur`` (mmpose/codecs/utils/post_processing.py): each (h, w) map is padded
    with (kernel-1)/2 zeros per side, blurred by ``cv2.GaussianBlur(kernel, sigma 0)`` and rescaled
    so its maximum equals the original map's maximum. (N, K, h, w) float32 in, same shape out."""
    if kernel % 2 != 1 or kernel < 3:
        raise ValueError(f"blur kernel must be odd and >= 3, got {kernel}")
    border = (kernel - 1) // 2
    h, w = heatmaps.shape[2:]
    out = np.empty_like(heatmaps, dtype=np.float32)
    padded = np.zeros((h + 2 * border, w + 2 * border), np.float32)
    for src, dst in zip(heatmaps.reshape(-1, h, w), out.reshape(-1, h, w)):
        origin_max = np.max(src)
        padded[border:-border, border:-border] = src
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
        dst[:] = blurred * (origin_max / np.max(blurred))
    return out


def _reference_dark(heatmaps, coords, px, py, ni, ki, kernel: int) -> np.ndarray:
    """MMPose's ``refine_keypoints_dark``: Newton step on the log of :func:`blur_zero_padded`, float32."""
    h, w = heatmaps.shape[2:]
    logs = np.log(np.maximum(blur_zero_padded(heatmaps, kernel), np.float32(1e-10)))
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    xs, ys = np.where(ok, px, 2), np.where(ok, py, 2)

    def at(dy: int, dx: int) -> np.ndarray:
        return logs[ni, ki, ys + dy, xs + dx]

    half, quarter = np.float32(0.5), np.float32(0.25)
    dx = half * (at(0, 1) - at(0, -1))
    dy = half * (at(1, 0) - at(-1, 0))
    dxx = quarter * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = quarter * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = quarter * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    ok &= (dxx * dyy - dxy**2) != 0
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)  # (N, K, 2, 2) float32
    hessian[~ok] = np.eye(2, dtype=np.float32)
    offsets = -(np.linalg.inv(hessian) @ np.stack([dx, dy], -1)[..., None])[..., 0]
    out = coords.copy()
    out[ok] += offsets[ok]
    return out


def merge_flip(heatmaps: np.ndarray, flipped: np.ndarray, input_width: int, method: str = "reference",
               flip_indices: np.ndarray | None = None) -> np.ndarray:
    """Average (N, K, h, w) heatmaps with those of the mirrored crops, mirrored back.

    ``flipped`` is the network's raw output on the horizontally mirrored input. It is reversed along
    x and its left/right keypoints swapped (``flip_indices``, COCO pairs by default). The crop is
    mirrored about input x = (W-1)/2 but reversing a map mirrors about heatmap x = (w-1)/2, so the
    mirrored-back map sits 1 - w/W columns (0.75 at stride 4) left of where it belongs:

    - reference methods shift it right by ONE whole column, keeping column 0, as MMPose's
      ``flip_heatmaps(..., shift_heatmap=True)`` (mmpose/models/utils/tta.py) and Microsoft's
      ``flip_back`` + ``output_flipped[:, :, :, 1:] = output_flipped.clone()[:, :, :, 0:-1]`` do;
    - ``quarter`` / ``dark`` / ``argmax`` shift it by the exact 1 - w/W columns with linear interpolation.
    """
    perm = flip_permutation(heatmaps.shape[1]) if flip_indices is None else np.asarray(flip_indices)
    back = flipped[:, perm, :, ::-1]
    shifted = np.empty_like(back)
    if method.startswith("reference"):
        shifted[..., 1:] = back[..., :-1]
    else:
        shift = 1.0 - heatmaps.shape[3] / input_width
        shifted[..., 1:] = (1.0 - shift) * back[..., 1:] + shift * back[..., :-1]
    shifted[..., 0] = back[..., 0]
    return (heatmaps + shifted) * 0.5


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

    def __init__(self, path: str | Path, threads: int = 0, optimization: str = "all", device: str = "cpu",
                 subpixel: bool = True, check_size: tuple[int, int] = (256, 192)):
        import onnxruntime as ort

        self.threads = threads
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
        # No spin-waiting between ops: the capture, decode and output threads share the cores with the
        # pool, and spinning workers took their time (docs/profile.md: 15.1 -> 21.9 pose updates/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self.subpixel_layers = 0  # transposed convolutions running as sub-pixel convolutions
        if subpixel and self.session.get_providers()[0] == "CPUExecutionProvider":
            self._use_subpixel(options, providers, self.static_size or tuple(check_size))

    def _use_subpixel(self, options, providers: list[str], size: tuple[int, int]) -> None:
        """Run the model with its 4x4 stride-2 deconvolutions as sub-pixel convolutions
        (:mod:`avatar_bridge.subpixel`; ``pose.ort_subpixel``), once the rewritten graph has given
        the same heatmaps as the file's (max difference within 1e-4 of the largest heatmap value, on
        one random input of ``size`` (height, width)); otherwise the model runs as it is (logged)."""
        import onnxruntime as ort

        try:
            import onnx

            from .subpixel import same_heatmaps, subpixel_deconvolutions

            model = onnx.load(str(self.path))
            count = subpixel_deconvolutions(model)
            if not count:
                return
            rewritten = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        except Exception as exc:  # onnx missing, or a graph this rewrite or onnxruntime cannot take
            log.info("%s: runs as it is (the sub-pixel rewrite did not apply: %s)", self.path.name, str(exc).splitlines()[0][:160])
            return
        del model
        sample = np.random.default_rng(0).standard_normal((self.static_batch or 1, 3, *size)).astype(np.float32)
        expected = self.session.run(None, {self.input_name: sample})[0]
        got = rewritten.run(None, {self.input_name: sample})[0]
        same, error, scale = same_heatmaps(expected, got)
        if not same:
            log.warning("%s: the sub-pixel rewrite changed the heatmaps (max difference %.3g of %.3g): the model runs "
                        "as it is (set pose.ort_subpixel = false to skip the rewrite)", self.path.name, error, scale)
            return
        self.session, self.subpixel_layers = rewritten, count
        log.info("%s: %d transposed convolution%s run as sub-pixel convolutions (max difference %.2g of %.2g)",
                 self.path.name, count, "" if count == 1 else "s", error, scale)

    def prepare(self, capacity: int, height: int, width: int) -> np.ndarray:
        return np.empty((capacity, 3, height, width), np.float32)

    def forward_ms(self, input_size: tuple[int, int], runs: int = 10, warmup: int = 3) -> float:
        """Median ms of one forward pass on a zero crop of ``input_size`` (height, width), batch 1."""
        batch = np.zeros((1, 3, *input_size), np.float32)
        times = []
        for i in range(warmup + runs):
            t = time.perf_counter()
            self(batch)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1000.0)
        return float(np.median(times))

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
        # The pinned host tensors the estimator's numpy batch buffers view (two: one is filled while
        # the network reads the other), by address; page-locked on CUDA so copies can be asynchronous.
        self._hosts: dict[int, object] = {}

    def prepare(self, capacity: int, height: int, width: int) -> np.ndarray:
        """A reusable host batch buffer; on CUDA it is page-locked so the copy can be asynchronous."""
        torch = self.torch
        host = torch.empty((capacity, 3, height, width), dtype=torch.float32, pin_memory=self.cuda)
        # Kept (a buffer only grows by doubling, so a few at most): an address is never reused while
        # its tensor is held, so the look-up below cannot mistake a new buffer for an old one.
        self._hosts[host.data_ptr()] = host
        return host.numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        host = self._hosts.get(batch.ctypes.data)
        if host is not None and batch.flags.c_contiguous and len(batch) <= len(host):
            x = host[: len(batch)]  # the pinned tensor itself, so the copy below is truly asynchronous
        else:
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=self.cuda).contiguous(memory_format=self.memory_format)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.fp16):
                out = self.model(x)
            return out.float().cpu().numpy()


# How much faster more intra-op threads must make the network before they are worth taking from the
# rest of the pipeline (pose.auto_threads).
THREADS_WORTH = 0.85


def fewer_threads_unless_faster(ms_by_threads: dict[int, float], worth: float = THREADS_WORTH) -> int:
    """The thread count to keep: the fewest whose forward time is within ``worth`` of the fastest
    count's, i.e. more threads only when they cut the time to ``worth`` x or less. ``ms_by_threads``:
    thread count -> median ms per forward pass."""
    fastest = min(ms_by_threads.values())
    for threads in sorted(ms_by_threads):
        if fastest / ms_by_threads[threads] > worth:  # the faster counts cut less than 1 - worth off this one
            return threads
    return max(ms_by_threads)  # pragma: no cover - the fastest count always passes the test above


def onnx_backend_with_checked_threads(path: str | Path, threads: int, input_size: tuple[int, int],
                                      optimization: str = "all", device: str = "cpu", subpixel: bool = True) -> "OnnxBackend":
    """``pose.auto_threads``: an :class:`OnnxBackend` with ``threads`` intra-op threads, or with one when
    ``threads`` is not at least 15% faster on this machine (:func:`fewer_threads_unless_faster`, batch
    1 at ``input_size``, both timed here in turns). A small model on two cores gains nothing from a
    second thread (the fixture model: 2.94 against 2.95 ms per crop) while the thread takes the core
    the rest of the pipeline needs; MobileNetV2 SimpleBaseline does gain (12.2 against 20.2 ms)."""
    many = OnnxBackend(path, threads=threads, optimization=optimization, device=device, subpixel=subpixel, check_size=input_size)
    if threads <= 1 or device.startswith("cuda"):
        return many
    one = OnnxBackend(path, threads=1, optimization=optimization, device=device, subpixel=subpixel, check_size=input_size)
    size = many.static_size or input_size
    ms = {1: [], threads: []}
    for _ in range(3):  # in turns, so a change in the machine's speed falls on both
        ms[1].append(one.forward_ms(size, runs=5, warmup=2))
        ms[threads].append(many.forward_ms(size, runs=5, warmup=2))
    medians = {n: float(np.median(v)) for n, v in ms.items()}
    keep = fewer_threads_unless_faster(medians)
    log.info("%s: %d ONNX Runtime thread%s (forward %.2f ms with 1, %.2f ms with %d: more threads only when "
             "%d%% faster)", Path(path).name, keep, "" if keep == 1 else "s", medians[1], medians[threads], threads,
             round(100 * (1 - THREADS_WORTH)))
    return one if keep == 1 else many


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


@dataclass
class PoseRequest:
    """One frame's crops on their way through the pose net (:meth:`TopDownEstimator.begin`).

    ``boxes`` (N, 4) x1 y1 x2 y2 pixels, ``centers`` / ``sizes`` (N, 2) the crops in pixels; the
    heatmaps are either computed (``heatmaps``) or coming from another thread (``future``).
    """

    boxes: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    heatmaps: np.ndarray | None = None
    future: Future | None = None

    def raw_heatmaps(self) -> np.ndarray:
        """The network's output (N or 2N with flip test, K, h, w); waits for it if it is on its way."""
        if self.future is not None:
            self.heatmaps, self.future = self.future.result(), None
        return self.heatmaps


class TopDownEstimator:
    """Crops every person of a frame, runs them as one batch, returns keypoints in image pixels.

    The input buffers are reused across calls: one estimator serves one thread, with at most one
    :class:`PoseRequest` in flight (:meth:`begin` fills one of two buffers while the network reads
    the other).
    """

    def __init__(self, backend, input_size: tuple[int, int] = (256, 192), decode: str = "reference",
                 flip_test: bool = False, padding: float = 1.25, normalization: Normalization | None = None,
                 max_batch: int = 64, flip_indices: tuple[int, ...] | None = None):
        if decode not in DECODERS:
            raise ValueError(f"pose.decode = {decode!r}: choose {', '.join(DECODERS)}")
        self.flip_indices = None if flip_indices is None else np.asarray(flip_indices, np.int64)
        self.backend = backend
        self.input_h, self.input_w = int(input_size[0]), int(input_size[1])
        self.aspect = self.input_w / self.input_h
        self.decode = decode
        self.flip_test = flip_test
        self.padding = padding
        self.max_batch = max_batch
        self.scale, self.offset, self.source = (normalization or Normalization()).scale_offset()
        empty = (np.empty((0, self.input_h, self.input_w, 3), np.uint8), np.empty((0, 3, self.input_h, self.input_w), np.float32))
        self._slots = [empty, empty]  # (uint8 crops, float input batch) x 2: one filled while the other runs
        self._slot = 0
        self._running: list[Future | None] = [None, None]  # the forward pass reading each buffer, if any

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next of the two reused uint8 crop and float input buffers, grown (doubling) only when a
        frame has more people."""
        self._slot ^= 1
        if self._running[self._slot] is not None:  # a third request before the first was finished:
            wait([self._running[self._slot]])  # never overwrite an input the network is still reading
            self._running[self._slot] = None
        crops, batch = self._slots[self._slot]
        rows = 2 * n if self.flip_test else n
        if len(batch) < rows:
            capacity = max(rows, 2 * len(batch), 2 if self.flip_test else 1)
            crops = np.empty((capacity, self.input_h, self.input_w, 3), np.uint8)
            batch = self.backend.prepare(capacity, self.input_h, self.input_w)
            self._slots[self._slot] = (crops, batch)
        return crops, batch

    def preprocess(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fill the next input batch; returns (batch view (N or 2N, 3, H, W), centers, sizes)."""
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
        request = self.begin(image, boxes)
        if len(request.boxes) == 0:
            return np.zeros((0, 0, 0, 0), np.float32), request.centers, request.sizes
        return self._merged_heatmaps(request), request.centers, request.sizes

    def _merged_heatmaps(self, request: PoseRequest) -> np.ndarray:
        out = request.raw_heatmaps()
        if self.flip_test:
            n = len(request.centers)
            out = merge_flip(out[:n], out[n:], self.input_w, self.decode, self.flip_indices)
        return out

    def begin(self, image: np.ndarray, boxes: np.ndarray, executor: Executor | None = None) -> PoseRequest:
        """Crop and normalize the people of a frame and start the network on them: on ``executor``
        (one worker thread; the backends release the GIL while they run, so this thread can track
        and smooth the previous frame meanwhile) or here and now (None). :meth:`finish` completes it.

        BGR image (H, W, 3) uint8, boxes (N, 4) x1 y1 x2 y2 pixels. Raises ``ValueError`` for a
        non-uint8 / non-3-channel image or non-finite boxes. Only one request may be in flight when
        the next begins (two input buffers alternate; a third waits for the network to be done with
        the buffer it takes).
        """
        if image is None or not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            desc = None if image is None else f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            raise ValueError(f"pose input must be a BGR uint8 image of shape (H, W, 3), got {desc}")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"pose boxes must be finite x1 y1 x2 y2 pixels, got {boxes[~np.isfinite(boxes).all(1)][0].tolist()}")
        if len(boxes) == 0:
            empty = np.zeros((0, 2), np.float32)
            return PoseRequest(boxes, empty, empty)
        batch, centers, sizes = self.preprocess(image, boxes)
        if executor is None:
            return PoseRequest(boxes, centers, sizes, heatmaps=self._forward(batch))
        future = executor.submit(self._forward, batch)
        self._running[self._slot] = future
        return PoseRequest(boxes, centers, sizes, future=future)

    def finish(self, request: PoseRequest) -> tuple[np.ndarray, np.ndarray]:
        """Wait for a :meth:`begin` request's heatmaps and decode them: keypoints (N, K, 2) float32 in
        image pixels and raw scores (N, K), as :meth:`predict`."""
        if len(request.boxes) == 0:
            return np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), np.float32)
        heatmaps, centers, sizes = self._merged_heatmaps(request), request.centers, request.sizes
        coords, maxval = decode_heatmaps(heatmaps, self.decode)
        h, w = heatmaps.shape[2:]
        # heatmap pixel -> image pixel: undo the stride, then the crop's scale and shift
        scale = sizes / np.array([w, h], np.float32)  # (N, 2) image px per heatmap px
        keypoints = coords * scale[:, None, :] + (centers - sizes * 0.5)[:, None, :]
        return keypoints.astype(np.float32), maxval.astype(np.float32)

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BGR image (H, W, 3) uint8 and (N, 4) x1 y1 x2 y2 boxes -> keypoints (N, K, 2) float32 in image
        pixels and raw scores (N, K): the heatmap maxima, unclipped (what evaluation and MMPose report).

        Raises ``ValueError`` for a non-uint8 / non-3-channel image or non-finite boxes.
        """
        return self.finish(self.begin(image, boxes))

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> list[Pose2D]:
        """BGR image (H, W, 3) uint8 and (N, 4) x1 y1 x2 y2 boxes -> one :class:`Pose2D` per box.

        Pose2D scores are the raw maxima clipped to [0, 1] (a confidence for tracking and smoothing);
        :meth:`predict` gives the raw ones.
        """
        return self.poses(self.begin(image, boxes))

    def poses(self, request: PoseRequest) -> list[Pose2D]:
        """:meth:`finish` as one :class:`Pose2D` per box (scores clipped to [0, 1])."""
        keypoints, raw = self.finish(request)
        if len(keypoints) == 0:
            return []
        boxes = request.boxes
        scores = np.clip(raw, 0.0, 1.0).astype(np.float32)
        return [Pose2D(keypoints=keypoints[i].astype(np.float32), scores=scores[i], box=boxes[i].copy())
                for i in range(len(boxes))]


def load_estimator(config: PoseConfig | None = None) -> TopDownEstimator:
    """Build the estimator a :class:`PoseConfig` describes.

    ``config.model``: a ``.onnx`` file (onnxruntime), a ``.pth`` checkpoint, a registry name,
    ``random`` (untrained weights, for timing), or empty for the registry checkpoint of ``arch``.
    A checkpoint decides what it records (:class:`avatar_bridge.weights.CheckpointMeta`): its arch and
    keypoint count, its input size (registry, then its config, then its file name; ``input_size``
    otherwise), its flip pairs, and, with ``channel_order = "auto"``, its channel order and
    mean/std (Microsoft layout: BGR). Otherwise, and for ONNX files, ``auto`` means RGB with the
    configured ``mean`` / ``std``.
    """
    config = config or PoseConfig()
    model = config.model.strip()
    input_size = tuple(int(v) for v in config.input_size)
    if len(input_size) != 2 or min(input_size) < 16:
        raise ValueError(f"pose.input_size = {list(config.input_size)}: give [height, width], e.g. [256, 192]")
    normalization = Normalization("rgb" if config.channel_order == "auto" else config.channel_order,
                                  tuple(config.mean), tuple(config.std))
    flip_indices = None
    backend_name = config.backend
    if backend_name == "auto":
        backend_name = "onnxruntime" if model.lower().endswith(".onnx") else "torch"
    if backend_name == "onnxruntime":
        if not model.lower().endswith(".onnx"):
            raise ValueError(f"pose.backend = onnxruntime needs pose.model = a .onnx file, got {model!r} "
                             "(make one with `avatar-bridge export-onnx`)")
        if config.auto_threads:
            backend = onnx_backend_with_checked_threads(model, config.threads, input_size, config.ort_optimization,
                                                        config.device, config.ort_subpixel)
        else:
            backend = OnnxBackend(model, threads=config.threads, optimization=config.ort_optimization, device=config.device,
                                  subpixel=config.ort_subpixel, check_size=input_size)
        if backend.static_size and backend.static_size != input_size:
            log.info("%s has a fixed input size %dx%d; using it", model, *backend.static_size)
            input_size = backend.static_size
    else:
        from .model import build_model  # torch is imported only for the torch backend
        from .weights import REGISTRY, load_pretrained_with_meta, registry_name

        if model.lower().endswith(".onnx"):
            raise ValueError(f"pose.backend = torch cannot run {model}: use backend auto or onnxruntime")
        if model == "random":
            net = build_model(config.arch, config.num_keypoints)
        else:
            name = model or registry_name(config.arch, input_size)
            if name in REGISTRY or name.endswith(".pth") or Path(name).is_file():
                net, meta = load_pretrained_with_meta(name, config.arch, config.num_keypoints,
                                                      config.weights_dir or None, config.download)
                if net.num_keypoints != config.num_keypoints:
                    raise ValueError(
                        f"{name} has {net.num_keypoints} keypoints (final_layer.weight "
                        f"{tuple(net.final_layer.weight.shape)}) but pose.num_keypoints = {config.num_keypoints}: "
                        f"set pose.num_keypoints = {net.num_keypoints} (eval, export), or pass a COCO-17 checkpoint "
                        "(the live pipeline retargets COCO-17)")
                if meta.input_size:
                    input_size = meta.input_size
                if config.channel_order == "auto" and meta.channel_order:
                    normalization = Normalization(meta.channel_order, meta.mean or tuple(config.mean),
                                                  meta.std or tuple(config.std))
                if meta.dark and config.decode == "reference":
                    log.info("%s was configured for DARK decoding (unbiased): pose.decode = reference-dark matches it", name)
                if meta.flip_indices and len(meta.flip_indices) == net.num_keypoints:
                    flip_indices = meta.flip_indices
                log.info("%s: %s, %d keypoints, input %dx%d, %s input (%s)", name, net.arch, net.num_keypoints,
                         *input_size, normalization.channel_order.upper(),
                         ", ".join(f"{k} from {v}" for k, v in meta.sources.items()))
            else:
                raise ValueError(f"pose.model = {model!r} is neither a file nor a checkpoint name: pass a .pth/.onnx "
                                 f"path, 'random', or one of {', '.join(REGISTRY)}")
        backend = TorchBackend(net, device=config.device, fp16=config.fp16, channels_last=config.channels_last,
                               threads=config.threads)
    return TopDownEstimator(
        backend, input_size=input_size, decode=config.decode, flip_test=config.flip_test, padding=config.padding,
        normalization=normalization, max_batch=config.max_batch, flip_indices=flip_indices,
    )
