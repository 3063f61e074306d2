"""COCO keypoint evaluation with real pycocotools on the fixture sample, plus its error handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar_bridge.cli import main as cli_main
from avatar_bridge.config import PoseConfig
from avatar_bridge.evaluate import evaluate, load_coco, oks_nms, parse_keypoints, parse_sigmas, person_score
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
    # 0.594 measured with MMPose's person score (mean of keypoint scores above 0.2); 0.606 with the mean of all
    assert outcome.metrics["AP"] >= 0.58, outcome.metrics


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
    with pytest.raises(ValueError, match=r"cannot read any of the 4 images .*\.jpg: check --images"):
        evaluate(estimator, ANNOTATIONS, tmp_path, "gt")


def test_oks_nms_drops_duplicates_of_one_person():
    rng = np.random.default_rng(0)
    person = rng.uniform(0, 100, (17, 2)).astype(np.float32)
    other = person + 300
    kpts = np.stack([person, person + 0.5, other])
    keep = oks_nms(kpts, np.array([0.5, 0.9, 0.7]), np.full(3, 100.0 * 100.0))
    assert keep == [1, 2]


@pytest.fixture(scope="module")
def onnx_estimator():
    need(POSE_ONNX)
    need(ANNOTATIONS)
    return load_estimator(PoseConfig(model=str(POSE_ONNX), threads=1))


def test_missing_area_is_computed_from_the_box(tmp_path, onnx_estimator):
    data = json.loads(ANNOTATIONS.read_text())
    for ann in data["annotations"]:
        ann.pop("area")
    path = tmp_path / "no_area.json"
    path.write_text(json.dumps(data))
    loaded = load_coco(path)
    assert loaded["_areas_computed"] == len(data["annotations"])
    for ann in loaded["annotations"]:
        assert ann["area"] == pytest.approx(max(0.53 * ann["bbox"][2] * ann["bbox"][3], 1.0))
    outcome = evaluate(onnx_estimator, path, COCO_DIR, "gt")
    assert outcome.areas_computed == len(data["annotations"]) and outcome.metrics["AP"] > 0.3
    for ann in data["annotations"]:  # the same areas written explicitly give the same AP
        ann["area"] = max(0.53 * ann["bbox"][2] * ann["bbox"][3], 1.0)
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps(data))
    assert evaluate(onnx_estimator, explicit, COCO_DIR, "gt").metrics == outcome.metrics


def test_area_from_keypoints_without_box_and_error_without_either(tmp_path):
    data = json.loads(ANNOTATIONS.read_text()) if ANNOTATIONS.exists() else None
    if data is None:
        pytest.skip(f"fixture {ANNOTATIONS} is absent")
    ann = next(a for a in data["annotations"] if a["num_keypoints"] >= 2)
    ann.pop("area")
    ann.pop("bbox")
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    kp = np.asarray(ann["keypoints"], float).reshape(-1, 3)
    kp = kp[kp[:, 2] > 0, :2]
    expected = 0.53 * np.prod(kp.max(0) - kp.min(0))
    got = next(a for a in load_coco(path)["annotations"] if a["id"] == ann["id"])
    assert got["area"] == pytest.approx(expected)
    ann["keypoints"] = [0] * 51
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"annotation #\\d+ \\(id {ann['id']}\\) has no area, no bbox"):
        load_coco(path)


def test_missing_images_are_skipped_counted_and_left_out(tmp_path, onnx_estimator, capsys):
    data = json.loads(ANNOTATIONS.read_text())
    gone = data["images"][0]["file_name"]
    for im in data["images"][1:]:
        (tmp_path / im["file_name"]).write_bytes((COCO_DIR / im["file_name"]).read_bytes())
    outcome = evaluate(onnx_estimator, ANNOTATIONS, tmp_path, "gt")
    assert outcome.skipped == [gone] and outcome.images == len(data["images"]) - 1
    # the same as evaluating an annotation file without that image at all
    kept = dict(data, images=data["images"][1:],
                annotations=[a for a in data["annotations"] if a["image_id"] != data["images"][0]["id"]])
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    assert evaluate(onnx_estimator, tmp_path / "kept.json", tmp_path, "gt").metrics == outcome.metrics
    assert cli_main(["eval", "--annotations", str(ANNOTATIONS), "--images", str(tmp_path), "--model", str(POSE_ONNX),
                     "--threads", "1"]) == 0
    assert f"skipped 1 missing or unreadable images (not evaluated): {gone}" in capsys.readouterr().out


def test_keypoint_subset_and_sigmas(onnx_estimator, capsys):
    full = evaluate(onnx_estimator, ANNOTATIONS, COCO_DIR, "gt")
    assert evaluate(onnx_estimator, ANNOTATIONS, COCO_DIR, "gt", keypoints=list(range(17))).metrics == full.metrics
    body = evaluate(onnx_estimator, ANNOTATIONS, COCO_DIR, "gt", keypoints=parse_keypoints("5-16", 17))
    assert body.metrics["AP"] != full.metrics["AP"]
    coco = evaluate(onnx_estimator, ANNOTATIONS, COCO_DIR, "gt", sigmas=parse_sigmas(
        "0.026,0.025,0.025,0.035,0.035,0.079,0.079,0.072,0.072,0.062,0.062,0.107,0.107,0.087,0.087,0.089,0.089", 17))
    assert coco.metrics == pytest.approx(full.metrics)
    loose = evaluate(onnx_estimator, ANNOTATIONS, COCO_DIR, "gt", sigmas=np.full(17, 0.2))
    assert loose.metrics["AP"] > full.metrics["AP"]  # wider OKS tolerance: higher AP
    assert parse_keypoints("left_wrist,right_wrist,0", 17) == [0, 9, 10]
    code = cli_main(["eval", "--annotations", str(ANNOTATIONS), "--images", str(COCO_DIR), "--model", str(POSE_ONNX),
                     "--threads", "1", "--keypoints", "left_shoulder,right_shoulder,5-6", "--sigmas", ",".join(["0.1"] * 17)])
    assert code == 0 and "keypoints 5,6" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value,message", [
    ("--keypoints", "elbow", "--keypoints 'elbow': 'elbow' is neither"),
    ("--keypoints", "3-17", "indices must be within 0..16"),
    ("--sigmas", "0.1,0.2", "--sigmas: 2 values given, the annotation file has 17 keypoints"),
    ("--sigmas", "a,b", "give 17 comma-separated numbers"),
])
def test_bad_subset_or_sigmas_are_one_line_errors(flag, value, message, capsys):
    need(POSE_ONNX)
    code = cli_main(["eval", "--annotations", str(ANNOTATIONS), "--images", str(COCO_DIR), "--model", str(POSE_ONNX),
                     flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_bad_annotation_entries_are_one_line_errors(tmp_path):
    base = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "keypoints": ["nose"]}]}
    for ann, message in (({"id": 7}, "annotation #0 has no image_id"),
                         ({"id": 7, "image_id": 1, "bbox": [1, 2]}, r"annotation #0 \(id 7\) has bbox \[1, 2\]"),
                         ({"id": 7, "image_id": 1, "bbox": [0, 0, 5, 5], "keypoints": [1, 2]}, "not x, y, v triples")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(dict(base, annotations=[ann])))
        with pytest.raises(ValueError, match=message):
            load_coco(path)


def test_person_score_is_mmposes_bbox_keypoint_rescoring():
    assert person_score(0.5, np.array([0.9, 0.1, 0.3, 1.5])) == pytest.approx(0.5 * (0.9 + 0.3 + 1.5) / 3)
    assert person_score(0.9, np.array([0.1, 0.2])) == 0.0  # no keypoint above 0.2


def test_missing_pycocotools_is_said_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """Found by a new user: without the eval extra the model loaded (8 s for a checkpoint) and only
    then the run said pycocotools was missing. A model path that does not exist shows the order:
    the pycocotools line comes first. (``sys.modules[name] = None`` makes the import fail, as when
    the package is not installed.)"""
    import sys

    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    annotations = tmp_path / "a.json"
    annotations.write_text("{}")
    assert cli_main(["eval", "--annotations", str(annotations), "--images", str(tmp_path),
                     "--model", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pycocotools is not installed: pip install 'avatar-bridge[eval]'" in err and "missing.onnx" not in err, err
