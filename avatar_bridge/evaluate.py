"""COCO keypoint evaluation of a pose model: AP, AP50, AP75, AR with pycocotools.

The protocol is the usual top-down one (as in the SimpleBaseline paper and MMPose): run the model
on every ground-truth person box (``boxes="gt"``) or on every detection of a COCO results file;
score each person as box score x :attr:`Pose2D.score` (the mean keypoint score, the confidence the
rest of the project uses); suppress duplicates of the same person with OKS-NMS at 0.9 (detections
overlap; ground-truth boxes do not); hand the results to ``COCOeval``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .keypoints import OKS_SIGMAS
from .pose import TopDownEstimator

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
PERSON = 1


@dataclass
class EvalResult:
    metrics: dict[str, float]
    results: list[dict] = field(default_factory=list)  # COCO keypoint results format
    people: int = 0
    images: int = 0
    seconds: float = 0.0


def load_coco(path: str | Path) -> dict:
    """Read a COCO keypoint annotation file, checking the parts evaluation needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found: pass a COCO keypoints JSON (e.g. person_keypoints_val2017.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not JSON ({exc}): pass a COCO keypoints annotation file") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path} is not a COCO annotation file (needs 'images', 'annotations' and 'categories' lists): "
                         "pass a COCO keypoints JSON such as person_keypoints_val2017.json")
    if not any(isinstance(c, dict) and "keypoints" in c for c in data["categories"]):
        raise ValueError(f"{path} has no keypoint category (no 'keypoints' in categories): pass a COCO *keypoints* annotation file")
    for key in ("id", "file_name"):
        if not all(isinstance(im, dict) and key in im for im in data["images"]):
            raise ValueError(f"{path}: every entry of 'images' needs '{key}': pass a COCO annotation file")
    return data


def gt_boxes(coco: dict) -> dict[int, list[tuple[np.ndarray, float]]]:
    """Person boxes of the annotations (x1 y1 x2 y2, score 1) by image id; crowd and empty ones skipped."""
    out: dict[int, list[tuple[np.ndarray, float]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        if ann.get("category_id", PERSON) != PERSON or ann.get("iscrowd", 0) or max(ann.get("keypoints", [0]) or [0]) == 0:
            continue
        x, y, w, h = ann["bbox"]
        if w > 0 and h > 0:
            out.setdefault(ann["image_id"], []).append((np.array([x, y, x + w, y + h], np.float32), 1.0))
    return out


def detection_boxes(path: str | Path, min_score: float = 0.0) -> dict[int, list[tuple[np.ndarray, float]]]:
    """Person boxes from a COCO detection-results JSON (list of {image_id, category_id, bbox, score})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detections file {path} not found: pass a COCO results JSON or --boxes gt")
    try:
        dets = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not JSON ({exc}): pass a COCO detection results file") from None
    if not isinstance(dets, list) or not all(isinstance(d, dict) and {"image_id", "bbox"} <= set(d) for d in dets):
        raise ValueError(f"{path} is not a COCO detection results file (a list of {{image_id, bbox, score}}): pass one, or --boxes gt")
    out: dict[int, list[tuple[np.ndarray, float]]] = {}
    for d in dets:
        if d.get("category_id", PERSON) != PERSON or d.get("score", 1.0) < min_score:
            continue
        x, y, w, h = d["bbox"]
        out.setdefault(d["image_id"], []).append((np.array([x, y, x + w, y + h], np.float32), float(d.get("score", 1.0))))
    return out


def oks_matrix(kpts: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """(P, K, 2) keypoints, (P,) areas -> (P, P) OKS of each pair (all keypoints counted)."""
    d2 = ((kpts[:, None] - kpts[None]) ** 2).sum(-1)  # (P, P, K)
    var = (2 * OKS_SIGMAS[: kpts.shape[1]]) ** 2
    area = (areas[:, None] + areas[None]) * 0.5
    return np.exp(-d2 / (2 * np.maximum(area, 1e-6)[..., None] * var)).mean(-1)


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = 0.9) -> list[int]:
    """Indices kept by greedy OKS non-maximum suppression, best first."""
    order = list(np.argsort(-scores))
    sim = oks_matrix(kpts, areas)
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if sim[i, j] <= threshold]
    return keep


def predict(estimator: TopDownEstimator, coco: dict, images_dir: str | Path, boxes: str = "gt",
            nms_threshold: float = 0.9) -> tuple[list[dict], int]:
    """COCO keypoint results for every image of ``coco``; returns (results, people estimated)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} not found: pass --images DIR holding the annotation file's images")
    by_image = gt_boxes(coco) if boxes == "gt" else detection_boxes(boxes)
    results: list[dict] = []
    people = 0
    for im in coco["images"]:
        entries = by_image.get(im["id"], [])
        if not entries:
            continue
        path = images_dir / im["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path} (missing or not an image): check --images points at the "
                             f"folder of {im['file_name']}")
        box_array = np.stack([b for b, _ in entries])
        box_scores = np.array([s for _, s in entries], np.float32)
        poses = estimator.estimate(image, box_array)
        people += len(poses)
        kpts = np.stack([p.keypoints for p in poses])
        kscores = np.stack([p.scores for p in poses])
        person_scores = box_scores * kscores.mean(axis=1)
        areas = (box_array[:, 2] - box_array[:, 0]) * (box_array[:, 3] - box_array[:, 1])
        keep = oks_nms(kpts, person_scores, areas, nms_threshold) if boxes != "gt" else range(len(poses))
        for i in keep:
            flat = np.concatenate([kpts[i], kscores[i][:, None]], axis=1).reshape(-1)
            results.append({"image_id": im["id"], "category_id": PERSON, "keypoints": [round(float(v), 3) for v in flat],
                            "score": float(person_scores[i])})
    return results, people


def coco_metrics(annotations: str | Path, results: list[dict]) -> dict[str, float]:
    """pycocotools keypoint metrics for ``results`` against the annotation file."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise RuntimeError("pycocotools is not installed: pip install 'avatar-bridge[eval]'") from None
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        gt = COCO(str(annotations))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}


def evaluate(estimator: TopDownEstimator, annotations: str | Path, images_dir: str | Path, boxes: str = "gt") -> EvalResult:
    """Python API: run ``estimator`` on an annotation file's images and score it with pycocotools."""
    coco = load_coco(annotations)
    started = time.perf_counter()
    results, people = predict(estimator, coco, images_dir, boxes)
    seconds = time.perf_counter() - started
    return EvalResult(coco_metrics(annotations, results), results, people, len(coco["images"]), seconds)


# --- CLI ------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--annotations", required=True, help="COCO keypoints annotation JSON")
    parser.add_argument("--images", required=True, help="folder holding the annotation file's images")
    parser.add_argument("--boxes", default="gt", help="gt (ground-truth boxes) or a COCO detection results JSON")
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop")
    parser.add_argument("--decode", choices=("argmax", "quarter", "dark"), default=None, help="heatmap decoder")
    parser.add_argument("--model", default=None, help="registry name, .pth or .onnx (default: config's pose.model)")
    parser.add_argument("--arch", default=None, help="architecture of a .pth checkpoint (resnet50, mobilenetv2, ...)")
    parser.add_argument("--config", default=None, help="preset name or TOML file for the [pose] section")
    parser.add_argument("--device", default=None, help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (0 = library default)")
    parser.add_argument("--out", default=None, help="write the keypoint results JSON here")


def run_command(args: argparse.Namespace) -> int:
    from .config import load_config, validate_section
    from .pose import load_estimator

    pose = load_config(args.config).pose
    for key in ("model", "arch", "device", "threads", "decode"):
        if getattr(args, key) is not None:
            setattr(pose, key, getattr(args, key))
    if args.flip:
        pose.flip_test = True
    validate_section(pose, "pose")
    estimator = load_estimator(pose)
    outcome = evaluate(estimator, args.annotations, args.images, args.boxes)
    print(f"model {pose.model or pose.arch}  boxes {args.boxes}  flip {pose.flip_test}  decode {pose.decode}  "
          f"people {outcome.people}  images {outcome.images}  {outcome.seconds:.2f} s")
    print("  ".join(f"{name} {outcome.metrics[name]:.3f}" for name in ("AP", "AP50", "AP75", "AR")))
    if args.out:
        Path(args.out).write_text(json.dumps(outcome.results), encoding="utf-8")
        print(f"results: {args.out}")
    return 0
