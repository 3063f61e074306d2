"""Person detectors behind one method: ``detect(image) -> list[Detection]``.

- ``none``: the whole frame is one person (a single user filling the view; no model needed).
- YOLOX-family ONNX models through onnxruntime (``yolox:PATH.onnx``, a bare ``PATH.onnx``, or the
  names ``yolox-nano`` / ``light-person-detector`` looked up in ``model_dir``).
- torchvision detectors by name (``fasterrcnn_resnet50_fpn``, ``fasterrcnn_mobilenet_v3_large_fpn``,
  ``ssdlite``), weights from torchvision's enums, downloaded once to the torch cache.

The tracker calls a detector rarely (every N frames or when a track is lost), so detectors favour
simplicity over per-call speed, but the ONNX path still reuses its input buffers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .types import Detection

log = logging.getLogger(__name__)

# Named ONNX detectors: name -> file name expected in ``model_dir`` (or ``model_dir/name/``).
NAMED_ONNX_DETECTORS = {
    "yolox-nano": ("yolox_nano_416x416.onnx", "YOLOX-nano from github.com/Megvii-BaseDetection/YOLOX releases"),
    "light-person-detector": (
        "light_person_detector_192.onnx",
        "the light person detector from github.com/Kazuhito00/Detection-PoseEstimation-Pipeline",
    ),
}
TORCHVISION_DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "ssdlite")
DEFAULT_MODEL_DIR = Path(os.environ.get("AVATAR_BRIDGE_MODELS", "~/.cache/avatar-bridge/models")).expanduser()


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (boxes x1y1x2y2)."""
    order = np.argsort(-scores)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class WholeFrameDetector:
    """Detector ``none``: one box covering the whole frame."""

    name = "none"

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return [Detection(np.array([0, 0, w, h], np.float32), 1.0)]


class YoloxDetector:
    """A YOLOX-style ONNX detector: letterbox to the top-left (pad 114), BGR 0..255, grid decoding.

    Works for the 80-class COCO models (person = class 0) and one-class person models alike; the
    class count is read from the output shape.
    """

    def __init__(
        self,
        path: str | Path,
        score_threshold: float = 0.4,
        nms_threshold: float = 0.45,
        max_people: int = 4,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"detector model {self.path} not found: check --detector yolox:PATH.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the pose session (pose.py)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"detector model {self.path} is not a valid ONNX model: {exc}".splitlines()[0]) from None
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not all(isinstance(s, int) for s in shape[2:]) or shape[1] != 3:
            raise ValueError(
                f"detector model {self.path} has input {inputs[0].name} {shape}: expected one 1x3xHxW image "
                "input of a YOLOX-style model"
            )
        out_shape = outputs[0].shape
        if len(out_shape) != 3 or not isinstance(out_shape[2], int) or out_shape[2] < 6:
            raise ValueError(
                f"detector model {self.path} has output {out_shape}: expected 1xNx(5+classes) YOLOX rows"
            )
        self.input_name = inputs[0].name
        self.input_h, self.input_w = int(shape[2]), int(shape[3])
        self.num_classes = int(out_shape[2]) - 5
        self.name = f"yolox:{self.path.name}"
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_people = max_people
        self.grid, self.strides = self._make_grid(self.input_h, self.input_w)
        if isinstance(out_shape[1], int) and out_shape[1] != self.grid.shape[0]:
            raise ValueError(
                f"detector model {self.path} outputs {out_shape[1]} rows but strides 8/16/32 on "
                f"{self.input_w}x{self.input_h} give {self.grid.shape[0]}: not a YOLOX-style model"
            )
        self._canvas = np.full((self.input_h, self.input_w, 3), 114, np.uint8)
        self._blob = np.empty((1, 3, self.input_h, self.input_w), np.float32)

    @staticmethod
    def _make_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        grids, strides = [], []
        for stride in (8, 16, 32):
            gh, gw = h // stride, w // stride
            ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
            strides.append(np.full((gh * gw, 1), stride))
        return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        ratio = min(self.input_h / h, self.input_w / w)
        nh, nw = int(round(h * ratio)), int(round(w * ratio))
        self._canvas[:] = 114
        cv2.resize(image, (nw, nh), dst=self._canvas[:nh, :nw], interpolation=cv2.INTER_LINEAR)
        self._blob[0] = self._canvas.transpose(2, 0, 1)
        rows = self.session.run(None, {self.input_name: self._blob})[0][0]
        # Person score = objectness x person-class probability (class 0 in COCO and one-class models).
        scores = rows[:, 4] * rows[:, 5]
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        rows, scores = rows[keep], scores[keep]
        centre = (rows[:, :2] + self.grid[keep]) * self.strides[keep]
        size = np.exp(rows[:, 2:4]) * self.strides[keep]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) / ratio
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        kept = nms(boxes, scores, self.nms_threshold)[: self.max_people]
        return [Detection(boxes[i].astype(np.float32), float(scores[i])) for i in kept]


class TorchvisionDetector:
    """A torchvision COCO detector; keeps label 1 (person)."""

    def __init__(
        self,
        name: str,
        score_threshold: float = 0.5,
        max_people: int = 4,
        device: str = "cpu",
        pretrained: bool = True,
    ) -> None:
        """``pretrained=False`` builds the network with random weights (tests, timing; finds nothing real)."""
        import torch
        from torchvision.models import detection as tvd

        builders = {
            "fasterrcnn_resnet50_fpn": (tvd.fasterrcnn_resnet50_fpn, tvd.FasterRCNN_ResNet50_FPN_Weights.DEFAULT),
            "fasterrcnn_mobilenet_v3_large_fpn": (
                tvd.fasterrcnn_mobilenet_v3_large_fpn,
                tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.DEFAULT,
            ),
            "ssdlite": (tvd.ssdlite320_mobilenet_v3_large, tvd.SSDLite320_MobileNet_V3_Large_Weights.DEFAULT),
        }
        builder, weights = builders[name]
        options = {"score_thresh": score_threshold} if name == "ssdlite" else {"box_score_thresh": score_threshold}
        if not pretrained:
            weights = None
            options.update(weights_backbone=None, num_classes=91)
        try:
            model = builder(weights=weights, **options)
        except OSError as exc:  # URLError is an OSError: no network, proxy, DNS
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise RuntimeError(
                f"detector {name}: could not download its weights {weights.url} ({exc}); on a machine with "
                f"network access download that file into {cache}, or use --detector light-person-detector, "
                "yolox:PATH.onnx or none"
            ) from None
        self.name = name
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.max_people = max_people
        self._torch = torch

    def detect(self, image: np.ndarray) -> list[Detection]:
        torch = self._torch
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        tensor = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            out = self.model([tensor])[0]
        person = out["labels"] == 1
        boxes = out["boxes"][person].cpu().numpy().astype(np.float32)
        scores = out["scores"][person].cpu().numpy()
        order = np.argsort(-scores)[: self.max_people]
        return [Detection(boxes[i], float(scores[i])) for i in order]


def resolve_named_model(name: str, model_dir: str | Path | None = None) -> Path:
    """Where a named ONNX detector's file lives, or a FileNotFoundError saying how to get it."""
    filename, origin = NAMED_ONNX_DETECTORS[name]
    folder = Path(model_dir).expanduser() if model_dir else DEFAULT_MODEL_DIR
    for candidate in (folder / name / filename, folder / filename):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"detector {name!r} needs {filename}, not found in {folder} (or {folder / name}): download "
        f"{origin} into that folder, set detector.model_dir, or pass --detector yolox:PATH.onnx"
    )


def load_detector(
    spec: str,
    score_threshold: float = 0.4,
    nms_threshold: float = 0.45,
    max_people: int = 4,
    threads: int = 0,
    device: str = "cpu",
    model_dir: str | Path | None = None,
) -> Any:
    """Build the detector a ``--detector`` value names (see the module docstring)."""
    text = spec.strip()
    if text in ("", "none"):
        return WholeFrameDetector()
    if text in NAMED_ONNX_DETECTORS:
        text = "yolox:" + str(resolve_named_model(text, model_dir))
    if text.startswith("yolox:") or text.lower().endswith(".onnx"):
        path = text.split(":", 1)[1] if text.startswith("yolox:") else text
        return YoloxDetector(path, score_threshold, nms_threshold, max_people, threads)
    if text in TORCHVISION_DETECTORS:
        return TorchvisionDetector(text, score_threshold, max_people, device)
    names = ["none", *NAMED_ONNX_DETECTORS, "yolox:PATH.onnx", *TORCHVISION_DETECTORS]
    raise ValueError(f"unknown detector {spec!r}: choose one of {', '.join(names)}")


def detector_from_config(config: Any, device: str = "cpu") -> Any:
    """``load_detector`` with the options of a :class:`~avatar_bridge.config.DetectorConfig`."""
    return load_detector(
        config.name,
        score_threshold=config.score_threshold,
        nms_threshold=config.nms_threshold,
        # more boxes than people tracked: the tracker keeps the largest and most confident of them
        max_people=max(4 * config.max_people, config.max_people + 8),
        threads=getattr(config, "threads", 0),
        device=device,
        model_dir=getattr(config, "model_dir", "") or None,
    )
