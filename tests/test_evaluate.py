"""COCO keypoint evaluation with real pycocotools on the fixture sample, plus its error handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar_bridge.cli import main as cli_main
from avatar_bridge.config import PoseConfig
from avatar_bridge.evaluate import evaluate, load_coco, oks_nms
from avatar_bridge.pose import load_estimator
from conftest import COCO_DIR, POSE_ONNX, need

ANNOTATIONS = COCO_DIR / "test_coco.json"
DETECTIONS = COCO_DIR / "test_coco_det_AP_H_56.json"


@pytest.fixture(scope="module")
def fixture_ap():
    """AP of the ultralight fixture model for each (boxes, flip) setting, computed once."""
    need(POSE_ONNX)
    need(ANNOTATIONS)
    results = {}
    for flip in (False, True):
        estimator = load_estimator(PoseConfig(model=str(POSE_ONNX), flip_test=flip, threads=1))
        for boxes in ("gt", str(DETECTIONS)):
            results[("gt" if boxes == "gt" else "det", flip)] = evaluate(estimator, ANNOTATIONS, COCO_DIR, boxes)
    return results


def test_ap_floor_with_ground_truth_boxes(fixture_ap):
    outcome = fixture_ap[("gt", False)]
    assert outcome.people == 12  # every non-crowd person with labelled keypoints
    assert outcome.metrics["AP"] >= 0.60, outcome.metrics


def test_ap_floor_with_detector_boxes(fixture_ap):
    assert fixture_ap[("det", False)].metrics["AP"] >= 0.65, fixture_ap[("det", False)].metrics


@pytest.mark.parametrize("boxes", ["gt", "det"])
def test_flip_test_does_not_lower_ap(fixture_ap, boxes):
    assert fixture_ap[(boxes, True)].metrics["AP"] >= fixture_ap[(boxes, False)].metrics["AP"]


def test_dark_decoding_with_flip_beats_the_floors():
    need(POSE_ONNX)
    estimator = load_estimator(PoseConfig(model=str(POSE_ONNX), flip_test=True, decode="dark", threads=1))
    assert evaluate(estimator, ANNOTATIONS, COCO_DIR, "gt").metrics["AP"] > 0.60
    assert evaluate(estimator, ANNOTATIONS, COCO_DIR, str(DETECTIONS)).metrics["AP"] > 0.65


def test_cli_prints_metrics_and_writes_results(tmp_path, capsys):
    need(POSE_ONNX)
    out = tmp_path / "results.json"
    code = cli_main(["eval", "--annotations", str(ANNOTATIONS), "--images", str(COCO_DIR), "--boxes", str(DETECTIONS),
                     "--model", str(POSE_ONNX), "--threads", "1", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "AP " in text and "AP50" in text and "AP75" in text and "AR " in text
    results = json.loads(out.read_text())
    assert results and all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)


def test_not_coco_annotation_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps({"people": []}))
    with pytest.raises(ValueError, match="labels.json is not a COCO annotation file"):
        load_coco(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json is not JSON"):
        load_coco(broken)
    code = cli_main(["eval", "--annotations", str(bad), "--images", str(tmp_path), "--model", "random", "--arch", "resnet18"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "labels.json is not a COCO annotation file" in err


def test_unreadable_image_is_a_clear_error(tmp_path):
    need(ANNOTATIONS)
    data = json.loads(ANNOTATIONS.read_text())
    for im in data["images"]:
        (tmp_path / im["file_name"]).write_bytes(b"not a jpeg")
    estimator = load_estimator(PoseConfig(model="random", arch="resnet18", input_size=[64, 48], threads=1))
    with pytest.raises(ValueError, match=r"cannot read image .*\.jpg .*check --images"):
        evaluate(estimator, ANNOTATIONS, tmp_path, "gt")


def test_oks_nms_drops_duplicates_of_one_person():
    rng = np.random.default_rng(0)
    person = rng.uniform(0, 100, (17, 2)).astype(np.float32)
    other = person + 300
    kpts = np.stack([person, person + 0.5, other])
    keep = oks_nms(kpts, np.array([0.5, 0.9, 0.7]), np.full(3, 100.0 * 100.0))
    assert keep == [1, 2]
