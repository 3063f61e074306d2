"""Person detectors: YOLOX-family ONNX decoding against COCO ground truth, `none`, and clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from avatar_bridge.detect import WholeFrameDetector, YoloxDetector, load_detector, nms
from avatar_bridge.track import iou_matrix
from conftest import COCO_DIR, FIXTURES, LIGHT_DETECTOR, POSE_ONNX, VIDEO, YOLOX_NANO, need


def coco_people(min_keypoints: int = 5) -> dict[str, np.ndarray]:
    """Ground-truth person boxes (x1y1x2y2) per image file of the COCO sample."""
    data = json.loads((need(COCO_DIR) / "test_coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out: dict[str, list] = {}
    for ann in data["annotations"]:
        if ann.get("num_keypoints", 0) >= min_keypoints and not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            out.setdefault(files[ann["image_id"]], []).append([x, y, x + w, y + h])
    return {k: np.array(v, np.float32) for k, v in out.items()}


@pytest.mark.parametrize("model, min_found", [(YOLOX_NANO, 10), (LIGHT_DETECTOR, 11)])
def test_yolox_models_find_the_coco_people(model, min_found):
    detector = YoloxDetector(need(model), score_threshold=0.3, max_people=20, threads=1)
    truth = coco_people()
    assert sum(len(b) for b in truth.values()) == 12
    found = 0
    for name, boxes in truth.items():
        image = cv2.imread(str(COCO_DIR / name))
        detections = detector.detect(image)
        assert all(d.box.dtype == np.float32 and 0.3 <= d.score <= 1.0 for d in detections)
        if detections:
            pred = np.stack([d.box for d in detections])
            h, w = image.shape[:2]
            assert np.all(pred[:, [0, 2]] >= 0) and np.all(pred[:, [0, 2]] <= w)
            assert np.all(pred[:, [1, 3]] >= 0) and np.all(pred[:, [1, 3]] <= h)
            found += int((iou_matrix(boxes, pred).max(1) >= 0.5).sum())
    assert found >= min_found


def test_named_detector_on_the_video_finds_the_two_walkers():
    need(VIDEO)
    detector = load_detector("yolox-nano", model_dir=FIXTURES / "models", threads=1)
    cap = cv2.VideoCapture(str(VIDEO))
    ok, image = cap.read()
    cap.release()
    assert ok
    detections = detector.detect(image)
    assert len(detections) == 2
    centres = sorted(float(d.box[[0, 2]].mean()) for d in detections)
    # the two people stand in the middle of the frame, side by side, full height
    assert 600 < centres[0] < 900 < centres[1] < 1200
    assert all(d.box[3] - d.box[1] > 500 for d in detections)


def test_max_people_and_threshold_limit_the_output():
    image = cv2.imread(str(need(COCO_DIR) / "000000196141.jpg"))
    many = YoloxDetector(need(YOLOX_NANO), score_threshold=0.2, max_people=20, threads=1).detect(image)
    assert len(many) >= 2
    few = YoloxDetector(YOLOX_NANO, score_threshold=0.2, max_people=1, threads=1).detect(image)
    assert len(few) == 1 and few[0].score == pytest.approx(max(d.score for d in many))
    none = YoloxDetector(YOLOX_NANO, score_threshold=0.999, threads=1).detect(image)
    assert none == []


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.5, 0.9, 0.8, 0.4], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0, 3]


def test_none_detector_is_the_whole_frame():
    detector = load_detector("none")
    assert isinstance(detector, WholeFrameDetector)
    (det,) = detector.detect(np.zeros((48, 64, 3), np.uint8))
    assert det.box.tolist() == [0, 0, 64, 48] and det.score == 1.0


def test_unknown_and_missing_detectors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="light-person-detector"):
        load_detector("yolo9000")
    with pytest.raises(FileNotFoundError, match="yolox_nano_416x416.onnx"):
        load_detector("yolox-nano", model_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        load_detector(f"yolox:{tmp_path / 'nothere.onnx'}")


def test_corrupt_and_wrong_onnx_models_are_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="junk.onnx"):
        load_detector(str(junk))
    # the pose network is a valid ONNX model, but not a detector: its output is heatmaps
    with pytest.raises(ValueError, match="YOLOX"):
        load_detector(f"yolox:{need(POSE_ONNX)}")


def test_torchvision_detector_offline_error(tmp_path, monkeypatch):
    """No network here: the weights download fails, and the error says where to put the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(RuntimeError) as info:
        load_detector("ssdlite")
    message = str(info.value)
    assert "ssdlite320_mobilenet_v3_large" in message  # the weights file name (from the URL)
    assert str(tmp_path / "torch") in message  # where to place it
    assert "--detector" in message and "\n" not in message


def test_torchvision_detector_code_path_with_random_weights():
    """The real torchvision network (random weights: nothing to download) through our detect(); its
    class head is biased towards "person" so the person filtering, ordering and limits are exercised."""
    import torch

    from avatar_bridge.detect import TorchvisionDetector

    torch.manual_seed(0)
    torch.set_num_threads(1)
    detector = TorchvisionDetector("ssdlite", score_threshold=0.05, max_people=3, pretrained=False)
    # SSD class logits are laid out anchor-major, class-minor; label 1 = person in torchvision's COCO
    last_convs = [[m for m in level.modules() if isinstance(m, torch.nn.Conv2d)][-1]
                  for level in detector.model.head.classification_head.module_list]
    with torch.no_grad():
        for conv in last_convs:
            conv.bias.view(-1, 91)[:, 1] += 8.0
    image = cv2.imread(str(need(COCO_DIR) / "000000196141.jpg"))
    detections = detector.detect(image)
    assert len(detections) == 3  # capped by max_people
    h, w = image.shape[:2]
    for d in detections:
        assert d.box.shape == (4,) and d.box.dtype == np.float32
        assert 0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    with torch.no_grad():
        for conv in last_convs:
            conv.bias.view(-1, 91)[:, 1] -= 40.0  # now nobody is a person
    assert detector.detect(image) == []
