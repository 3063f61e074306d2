"""``avatar-bridge export-onnx``: write a SimpleBaseline to ONNX with a dynamic batch dimension.

The exported file runs through :class:`avatar_bridge.pose.OnnxBackend` (onnxruntime), which is the
fastest CPU path. The export is written to a temporary file next to the destination and checked:
onnxruntime's heatmaps on a random batch must match torch's within ``tolerance`` x the largest
|torch heatmap| (relative, 1e-3 by default: fp32 kernels of the two runtimes differ by ~2e-5 of the
heatmap scale on real checkpoints, a wrong graph by far more). Only a file that passes is renamed
to the destination, so a bad export never appears there.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .files import default_file_mode
from .model import SimpleBaseline


INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"


def export_onnx(model: SimpleBaseline, path: str | Path, input_size: tuple[int, int] = (256, 192), opset: int = 17) -> Path:
    """Export ``model`` (eval mode, fp32, CPU) to ``path``; batch is dynamic, H and W are fixed."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"export path {path} must end in .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    dummy = torch.zeros(2, 3, int(input_size[0]), int(input_size[1]))
    options = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: no onnxscript dependency, dynamic_axes as given
    torch.onnx.export(
        model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, do_constant_folding=True, **options,
    )
    return path


def max_abs_difference(model: SimpleBaseline, path: str | Path, batch: int = 3, input_size: tuple[int, int] = (256, 192),
                       seed: int = 0) -> float:
    """Largest |torch - onnxruntime| over the heatmaps of a random batch."""
    return relative_difference(model, path, batch, input_size, seed)[0]


def relative_difference(model: SimpleBaseline, path: str | Path, batch: int = 3, input_size: tuple[int, int] = (256, 192),
                        seed: int = 0) -> tuple[float, float]:
    """(max |torch - onnxruntime|, max |torch|) over the heatmaps of a random standard-normal batch."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, int(input_size[0]), int(input_size[1])), dtype=np.float32)
    with torch.inference_mode():
        expected = model.eval().float().cpu()(torch.from_numpy(x)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: x})[0]
    if actual.shape != expected.shape:
        raise RuntimeError(f"{path}: onnxruntime output shape {actual.shape} differs from torch {expected.shape}")
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf from an overflowing net: reported by the caller
        return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def export_checked(model: SimpleBaseline, path: str | Path, input_size: tuple[int, int] = (256, 192), opset: int = 17,
                   tolerance: float = 1e-3) -> tuple[Path, float, float]:
    """Export to a temporary file beside ``path``, check it, and rename it to ``path`` only if
    max |torch - onnxruntime| <= ``tolerance`` * max |torch heatmap|. Returns (path, max abs
    difference, heatmap scale). Raises ``RuntimeError`` (nothing written at ``path``) when the check fails.
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"export path {path} must end in .onnx")
    if not tolerance > 0:
        raise ValueError(f"--tolerance must be > 0, got {tolerance}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.stem + ".", suffix=".part.onnx", dir=path.parent)
    os.close(fd)
    try:
        export_onnx(model, tmp_name, input_size, opset)
        diff, scale = relative_difference(model, tmp_name, input_size=input_size)
        if not np.isfinite(scale):
            raise RuntimeError(f"{path}: torch's own heatmaps are not finite on a random input, so the export cannot be "
                               "checked; nothing was written: the checkpoint's weights overflow (check the file)")
        if not diff <= tolerance * max(scale, 1e-12):
            raise RuntimeError(
                f"{path}: onnxruntime differs from torch by {diff:.2e} on heatmaps up to {scale:.2g} "
                f"({diff / max(scale, 1e-12):.1e} relative > {tolerance:g}); nothing was written: "
                "try another --opset or report the torch/onnxruntime versions"
            )
        default_file_mode(tmp_name)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path, diff, scale
