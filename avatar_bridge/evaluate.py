"""COCO keypoint evaluation of a pose model: AP, AP50, AP75, AR with pycocotools.

The protocol is the usual top-down one (as in the SimpleBaseline paper and MMPose): run the model
on every ground-truth person box (``boxes="gt"``) or on every detection of a COCO results file;
keypoint scores are the raw heatmap maxima (:meth:`TopDownEstimator.predict`, not clipped); each
person scores box score x the mean of its keypoint scores above 0.2 (MMPose's ``CocoMetric``
``score_mode='bbox_keypoint'``, ``keypoint_score_thr=0.2``); duplicates of the same person are
suppressed with OKS-NMS at 0.9 (detections overlap; ground-truth boxes do not); ``COCOeval`` scores
the results.

Annotation files without ``area`` (the OKS scale): it is computed as 0.53 x the box area (as MMPose's
``BaseCocoStyleDataset`` does for datasets without one), or from the extent of the labelled
keypoints when there is no box. Missing or unreadable images are skipped, counted, and left out of
the evaluated image set. ``keypoints`` evaluates a subset of the keypoints (OKS over those only)
and ``sigmas`` replaces the COCO per-keypoint OKS constants.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .keypoints import COCO_KEYPOINTS, OKS_SIGMAS
from .pose import TopDownEstimator

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
PERSON = 1
AREA_FROM_BOX = 0.53  # person area / box area when the file has no segmentation area (MMPose's convention)
KEYPOINT_SCORE_THRESHOLD = 0.2  # keypoints counted in the person score (MMPose CocoMetric keypoint_score_thr)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    results: list[dict] = field(default_factory=list)  # COCO keypoint results format
    people: int = 0
    images: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # images missing or unreadable, not evaluated
    areas_computed: int = 0  # annotations whose missing area was computed


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
    data["_areas_computed"] = 0
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ValueError(f"{path}: annotation #{i} has no image_id: pass a COCO annotation file")
        bbox = ann.get("bbox")
        if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"{path}: annotation #{i} (id {ann.get('id')}) has bbox {bbox!r}: expected [x, y, width, height]")
        kpts = ann.get("keypoints")
        if kpts is not None and (not isinstance(kpts, list) or len(kpts) % 3):
            raise ValueError(f"{path}: annotation #{i} (id {ann.get('id')}) has keypoints that are not x, y, v triples")
        if "area" not in ann:
            ann["area"] = _area(ann)
            if ann["area"] is None:
                raise ValueError(f"{path}: annotation #{i} (id {ann.get('id')}) has no area, no bbox and no labelled "
                                 "keypoints to compute one from: add 'area' (pixels^2) or 'bbox'")
            data["_areas_computed"] += 1
    return data


def _area(ann: dict) -> float | None:
    """0.53 x box area; without a box, 0.53 x the area of the labelled keypoints' bounding box."""
    if ann.get("bbox"):
        w, h = ann["bbox"][2:4]
        return max(AREA_FROM_BOX * float(w) * float(h), 1.0)
    kpts = np.asarray(ann.get("keypoints") or [], np.float64).reshape(-1, 3)
    labelled = kpts[kpts[:, 2] > 0, :2]
    if len(labelled) < 2:
        return None
    w, h = labelled.max(0) - labelled.min(0)
    return max(AREA_FROM_BOX * float(w) * float(h), 1.0)


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


def person_score(box_score: float, keypoint_scores: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD) -> float:
    """Box score x the mean of the (K,) raw keypoint scores above ``threshold`` (0 when none is): MMPose 1.x
    ``CocoMetric`` with ``score_mode='bbox_keypoint'``, ``keypoint_score_thr=0.2`` (mmpose/evaluation/metrics/coco_metric.py)."""
    good = keypoint_scores[keypoint_scores > threshold]
    return float(box_score * good.mean()) if good.size else 0.0


def predict(estimator: TopDownEstimator, coco: dict, images_dir: str | Path, boxes: str = "gt",
            nms_threshold: float = 0.9, skipped: list[str] | None = None) -> tuple[list[dict], int]:
    """COCO keypoint results for every image of ``coco``; returns (results, people estimated).

    Images that are missing or unreadable are appended to ``skipped`` (file names) and left out;
    ``ValueError`` when no image with boxes could be read.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} not found: pass --images DIR holding the annotation file's images")
    by_image = gt_boxes(coco) if boxes == "gt" else detection_boxes(boxes)
    skipped = [] if skipped is None else skipped
    results: list[dict] = []
    people = tried = 0
    for im in coco["images"]:
        entries = by_image.get(im["id"], [])
        if not entries:
            continue
        tried += 1
        path = images_dir / im["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if image is None:
            skipped.append(str(im["file_name"]))
            continue
        box_array = np.stack([b for b, _ in entries])
        box_scores = np.array([s for _, s in entries], np.float32)
        kpts, kscores = estimator.predict(image, box_array)  # raw (unclipped) keypoint scores
        people += len(kpts)
        person_scores = np.array([person_score(b, k) for b, k in zip(box_scores, kscores)], np.float32)
        areas = (box_array[:, 2] - box_array[:, 0]) * (box_array[:, 3] - box_array[:, 1])
        keep = oks_nms(kpts, person_scores, areas, nms_threshold) if boxes != "gt" else range(len(kpts))
        for i in keep:
            flat = np.concatenate([kpts[i], kscores[i][:, None]], axis=1).reshape(-1)
            results.append({"image_id": im["id"], "category_id": PERSON, "keypoints": [round(float(v), 3) for v in flat],
                            "score": float(person_scores[i])})
    if tried and len(skipped) == tried:
        raise ValueError(f"cannot read any of the {tried} images (missing or not images), e.g. {images_dir / skipped[0]}: "
                         "check --images points at the annotation file's image folder")
    return results, people


def parse_keypoints(text: str, num_keypoints: int, names: tuple[str, ...] = COCO_KEYPOINTS) -> list[int]:
    """``"5-16"``, ``"5,6,11,12"`` or ``"left_shoulder,right_shoulder"`` -> sorted keypoint indices."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            if part in names[:num_keypoints]:
                out.add(names.index(part))
            elif "-" in part:
                a, b = (int(v) for v in part.split("-"))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"--keypoints {text!r}: {part!r} is neither a keypoint index, a range a-b, nor a name "
                             f"({', '.join(names[:num_keypoints])})") from None
    if not out or min(out) < 0 or max(out) >= num_keypoints:
        raise ValueError(f"--keypoints {text!r}: indices must be within 0..{num_keypoints - 1}")
    return sorted(out)


def parse_sigmas(text: str, num_keypoints: int) -> np.ndarray:
    """Comma-separated per-keypoint OKS sigmas, one per keypoint of the annotation file, each > 0."""
    try:
        sigmas = np.array([float(v) for v in text.split(",")], np.float64)
    except ValueError:
        raise ValueError(f"--sigmas {text!r}: give {num_keypoints} comma-separated numbers") from None
    if len(sigmas) != num_keypoints or not np.all(sigmas > 0):
        raise ValueError(f"--sigmas: {len(sigmas)} values given, the annotation file has {num_keypoints} keypoints; "
                         "give one positive sigma per keypoint")
    return sigmas


def _subset(keypoints: list, index: list[int]) -> list:
    return np.asarray(keypoints, np.float64).reshape(-1, 3)[index].reshape(-1).tolist()


def coco_metrics(annotations: str | Path | dict, results: list[dict], keypoints: list[int] | None = None,
                 sigmas: np.ndarray | None = None, image_ids: list[int] | None = None) -> dict[str, float]:
    """pycocotools keypoint metrics for ``results`` against an annotation file (path or loaded dict).

    ``keypoints``: indices to evaluate (gt and results cut to them, OKS over them only);
    ``sigmas``: per-keypoint OKS sigmas of the full keypoint set (COCO's by default);
    ``image_ids``: the images to evaluate (default: all).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise RuntimeError("pycocotools is not installed: pip install 'avatar-bridge[eval]'") from None
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    data = load_coco(annotations) if not isinstance(annotations, dict) else annotations
    num = len(results[0]["keypoints"]) // 3
    sigmas = np.asarray(OKS_SIGMAS if sigmas is None else sigmas, np.float64)
    if len(sigmas) != num:
        raise ValueError(f"the model gives {num} keypoints but there are {len(sigmas)} OKS sigmas: pass --sigmas "
                         f"with {num} values")
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    if keypoints is not None:
        data["annotations"] = [dict(a, keypoints=_subset(a["keypoints"], keypoints),
                                    num_keypoints=int((np.asarray(_subset(a["keypoints"], keypoints)).reshape(-1, 3)[:, 2] > 0).sum()))
                               if a.get("keypoints") else a for a in data["annotations"]]
        results = [dict(r, keypoints=_subset(r["keypoints"], keypoints)) for r in results]
        sigmas = sigmas[keypoints]
    for ann in data["annotations"]:
        if ann.get("keypoints") and len(ann["keypoints"]) != 3 * len(sigmas):
            raise ValueError(f"annotation id {ann.get('id')} has {len(ann['keypoints']) // 3} keypoints, the model "
                             f"gives {len(sigmas)}: evaluate a model with the annotation file's keypoint set")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        ev.params.kpt_oks_sigmas = sigmas
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}


def evaluate(estimator: TopDownEstimator, annotations: str | Path, images_dir: str | Path, boxes: str = "gt",
             keypoints: list[int] | None = None, sigmas: np.ndarray | None = None) -> EvalResult:
    """Python API: run ``estimator`` on an annotation file's images and score it with pycocotools.

    Skipped (missing/unreadable) images are listed in the result and excluded from the evaluated set.
    """
    coco = load_coco(annotations)
    started = time.perf_counter()
    skipped: list[str] = []
    results, people = predict(estimator, coco, images_dir, boxes, skipped=skipped)
    seconds = time.perf_counter() - started
    missing = set(skipped)
    image_ids = [im["id"] for im in coco["images"] if im["file_name"] not in missing]
    metrics = coco_metrics(coco, results, keypoints, sigmas, image_ids if skipped else None)
    return EvalResult(metrics, results, people, len(coco["images"]) - len(skipped), seconds, skipped,
                      coco["_areas_computed"])


# --- CLI ------------------------------------------------------------------------------------------
