"""Tracking: stable ids on the fixture video, rare detection, and a driver that does not hop."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_bridge.capture import VideoFileSource
from avatar_bridge.config import PoseConfig
from avatar_bridge.detect import load_detector
from avatar_bridge.track import DriverSelector, Track, Tracker, TrackerSettings, keypoint_box
from avatar_bridge.types import Detection, Pose2D
from conftest import FIXTURES, POSE_ONNX, VIDEO, need

# A standing person (COCO-17, pixels) 300 px tall, centred on x = 0.
TEMPLATE = np.array(
    [[0, 0], [-5, -5], [5, -5], [-10, 0], [10, 0], [-25, 40], [25, 40], [-30, 90], [30, 90], [-32, 135],
     [32, 135], [-15, 150], [15, 150], [-15, 220], [15, 220], [-15, 290], [15, 290]], np.float32)


def person_at(x: float, y: float = 100.0, score: float = 0.9) -> Pose2D:
    return Pose2D(TEMPLATE + np.array([x, y], np.float32), np.full(17, score, np.float32))


def fake_estimate(truth: list[Pose2D], boxes: np.ndarray) -> list[Pose2D]:
    """What a pose net does with a crop: finds the person whose body is most inside the box."""
    out = []
    for box in boxes:
        inside = []
        for p in truth:
            kp = p.keypoints
            inside.append(np.mean((kp[:, 0] >= box[0]) & (kp[:, 0] <= box[2]) & (kp[:, 1] >= box[1]) & (kp[:, 1] <= box[3])))
        best = int(np.argmax(inside))
        if inside[best] > 0.5:
            out.append(Pose2D(truth[best].keypoints.copy(), truth[best].scores.copy(), box.copy()))
        else:
            out.append(Pose2D(np.tile(box[:2], (17, 1)), np.full(17, 0.05, np.float32), box.copy()))
    return out


def detections_of(truth: list[Pose2D]) -> list[Detection]:
    return [Detection(keypoint_box(p.keypoints, p.scores, 0.2, 0.1), 0.9) for p in truth]


def run_scene(positions: np.ndarray, settings: TrackerSettings) -> tuple[Tracker, list[dict[int, float]]]:
    """positions (T, P) x coordinates; returns per frame {track id: x of the nose}."""
    tracker = Tracker(settings)
    history = []
    for t, xs in enumerate(positions):
        truth = [person_at(x) for x in xs]
        boxes = tracker.boxes(t, lambda: detections_of(truth), (1280, 720))
        people = tracker.update(fake_estimate(truth, boxes), t)
        history.append({p.track_id: float(p.keypoints[0, 0]) for p in people})
    return tracker, history


def test_two_people_walking_apart_keep_their_ids_and_detection_is_rare():
    t = np.arange(90)
    positions = np.stack([300 + 3 * t, 900 - 3 * t], axis=1).astype(np.float32)
    positions[:, 1] = np.maximum(positions[:, 1], positions[:, 0] + 200)  # they stop 200 px apart
    tracker, history = run_scene(positions, TrackerSettings(every_n_frames=30))
    assert all(set(h) == {1, 2} for h in history)
    assert all(h[1] < h[2] for h in history)  # id 1 is the one who started on the left
    assert tracker.detections_run == 3  # frames 0, 30, 60


def test_lost_person_triggers_detection_and_gets_a_new_track():
    tracker = Tracker(TrackerSettings(every_n_frames=1000, max_missed=2))
    one = [person_at(300)]
    for t in range(5):
        tracker.update(fake_estimate(one, tracker.boxes(t, lambda: detections_of(one), (1280, 720))), t)
    assert tracker.detections_run == 1
    # the person jumps far away (e.g. a cut): the crop finds nothing, so the tracker asks the detector
    far = [person_at(1000)]
    for t in range(5, 10):
        people = tracker.update(fake_estimate(far, tracker.boxes(t, lambda: detections_of(far), (1280, 720))), t)
    assert tracker.detections_run >= 2
    assert [p.track_id for p in people] == [2]
    assert [t.id for t in tracker.tracks] == [2]  # the old track was dropped after max_missed frames


def test_low_confidence_asks_for_a_detection():
    tracker = Tracker(TrackerSettings(every_n_frames=1000, redetect_below=0.5))
    truth = [person_at(400)]
    tracker.update(fake_estimate(truth, tracker.boxes(0, lambda: detections_of(truth), (1280, 720))), 0)
    assert not tracker.needs_detection(1)
    weak = [person_at(400, score=0.4)]
    tracker.update(fake_estimate(weak, tracker.boxes(1, lambda: detections_of(weak), (1280, 720))), 1)
    assert tracker.needs_detection(2)


def test_duplicate_crops_on_one_person_are_merged():
    tracker = Tracker()
    a, b = person_at(300), person_at(700)
    tracker.update(fake_estimate([a, b], tracker.boxes(0, lambda: detections_of([a, b]), (1280, 720))), 0)
    # both crops now land on the same person (the other stepped out of view): one pose survives
    same = [person_at(302), person_at(301)]
    people = tracker.update(same, 1)
    assert [p.track_id for p in people] == [1]


def track(tid: int, x: float, height: float) -> Track:
    kp = TEMPLATE * (height / 290.0) + np.array([x, 100], np.float32)
    return Track(tid, kp, np.ones(17, np.float32), np.array([x - 50, 100, x + 50, 100 + height], np.float32))


def test_driver_has_hysteresis_when_people_cross():
    selector = DriverSelector("largest", switch_ratio=1.25, switch_frames=10)
    assert selector.update([track(1, 300, 400), track(2, 600, 380)]) == 1
    # person 2 is briefly much taller (walks past close to the camera): no switch
    for _ in range(9):
        assert selector.update([track(1, 300, 400), track(2, 600, 600)]) == 1
    assert selector.update([track(1, 300, 400), track(2, 600, 380)]) == 1
    # ...but if they stay clearly nearer, the driver changes after switch_frames
    for _ in range(10):
        driver = selector.update([track(1, 300, 400), track(2, 600, 600)])
    assert driver == 2
    # the driver leaving hands over at once
    assert selector.update([track(1, 300, 400)]) == 1


def test_driver_policies_central_and_fixed():
    central = DriverSelector("central", switch_frames=1)
    assert central.update([track(1, 100, 400), track(2, 640, 300)], image_size=(1280, 720)) == 2
    fixed = DriverSelector("fixed", fixed_id=7)
    assert fixed.update([track(1, 100, 400)]) is None
    assert fixed.update([track(1, 100, 400), track(7, 600, 100)]) == 7
    largest = DriverSelector()
    largest.update([track(1, 100, 400), track(2, 600, 300)])
    largest.select(2)
    assert largest.update([track(1, 100, 400), track(2, 600, 300)]) == 2
    with pytest.raises(ValueError, match="largest"):
        DriverSelector("loudest")


@pytest.mark.parametrize("detector_name", ["yolox-nano", "light-person-detector"])
def test_fixture_video_two_walkers_keep_their_ids(detector_name):
    """Real decoding, detection and pose on the two-person clip: two ids, never swapped."""
    from avatar_bridge.pose import load_estimator

    estimator = load_estimator(PoseConfig(model=str(need(POSE_ONNX)), threads=1))
    detector = load_detector(detector_name, model_dir=FIXTURES / "models", threads=1)
    tracker = Tracker(TrackerSettings(every_n_frames=30))
    torso_x: dict[int, list[tuple[int, float]]] = {}
    frames = 0
    with VideoFileSource(need(VIDEO), realtime=False) as source:
        while (frame := source.read()) is not None:
            boxes = tracker.boxes(frame.index, lambda: detector.detect(frame.image), (frame.width, frame.height))
            people = tracker.update(estimator.estimate(frame.image, boxes), frame.index)
            for p in people:
                torso_x.setdefault(p.track_id, []).append((frame.index, float(p.keypoints[[5, 6, 11, 12], 0].mean())))
            frames += 1
    assert frames == 72
    assert tracker.detections_run <= 72 // 10  # the detector ran on a few frames only
    assert sorted(torso_x) == [1, 2], f"ids seen: {sorted(torso_x)}"
    for tid, series in torso_x.items():
        assert len(series) >= 70, f"track {tid} present on {len(series)} of 72 frames"
        x = np.array([v for _, v in series])
        # a swap would move an id's torso across to the other person (>100 px) in one frame
        assert np.abs(np.diff(x)).max() < 60, f"track {tid} jumped"
    # who is on which side never flips: the walkers approach but do not pass each other
    first = {tid: dict(series) for tid, series in torso_x.items()}
    common = sorted(set(first[1]) & set(first[2]))
    left_id = 1 if first[1][common[0]] < first[2][common[0]] else 2
    right_id = 3 - left_id
    assert all(first[left_id][i] < first[right_id][i] for i in common)


def test_only_driver_mode_estimates_one_crop_and_keeps_the_others_ids():
    t = np.arange(75)
    positions = np.stack([300 + 1.5 * t, 800 - 1.0 * t], axis=1).astype(np.float32)
    tracker = Tracker(TrackerSettings(every_n_frames=25, only_driver=True))
    crops, ids = [], set()
    for i, xs in enumerate(positions):
        truth = [person_at(x) for x in xs]
        boxes = tracker.boxes(i, lambda: detections_of(truth), (1280, 720))
        crops.append(len(boxes))
        people = tracker.update(fake_estimate(truth, boxes), i)
        ids.update(p.track_id for p in people)
    assert crops[0] == 2 and crops[25] == 2 and crops[50] == 2  # detection frames: everyone
    assert crops[1:25] == [1] * 24  # otherwise the driver only
    assert ids == {1, 2}  # the parked person got their id back at each detection
    assert tracker.detections_run == 3
