"""Pinhole camera and the BVH mocap frame source (CMU walk fixture)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import MOCAP, check_clock_starts_at_first_read, need

from avatar_bridge.bvh import load_bvh
from avatar_bridge.camera import PinholeCamera
from avatar_bridge.keypoints import KEYPOINT_INDEX as K
from avatar_bridge.mocap import MocapSource, coco17_world, facing_yaw


def test_camera_projects_known_points():
    cam = PinholeCamera()  # 900 px, 1280x720, at (0, 1, 3) looking at (0, 1, 0)
    uv = cam.project(np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 4.0]]))
    np.testing.assert_allclose(uv[0], [640, 360])
    np.testing.assert_allclose(uv[1], [640 + 300, 360])  # +X (a performer's left) is image right
    np.testing.assert_allclose(uv[2], [640, 360 - 300])  # up is image up
    assert np.all(np.isnan(uv[3]))  # behind the camera
    np.testing.assert_allclose(cam.depth(np.array([0.0, 5.0, 0.0])), 3.0)


def test_camera_at_45_degrees():
    cam = PinholeCamera.orbit(45.0, distance=3.0, height=1.0)
    np.testing.assert_allclose(cam.position, [3 / np.sqrt(2), 1.0, 3 / np.sqrt(2)])
    np.testing.assert_allclose(cam.project(np.array([0.0, 1.0, 0.0])), [640, 360], atol=1e-9)
    # A point on the camera's right axis (perpendicular to the view, horizontal) lands right of centre.
    right = np.array([1.0, 0.0, -1.0]) / np.sqrt(2)
    uv = cam.project(np.array([0.0, 1.0, 0.0]) + right)
    np.testing.assert_allclose(uv, [640 + 300, 360], atol=1e-9)


def test_camera_rejects_bad_setup():
    with pytest.raises(ValueError, match="same point"):
        PinholeCamera(position=[0, 1, 0], target=[0, 1, 0])
    with pytest.raises(ValueError, match="straight up or down"):
        PinholeCamera(position=[0, 3, 0], target=[0, 0, 0])
    with pytest.raises(ValueError, match="focal_px"):
        PinholeCamera(focal_px=0)


def test_coco17_world_canonical_frame():
    motion = load_bvh(need(MOCAP))
    world = coco17_world(motion, fps=30)
    assert world.shape == (249, 17, 3)  # 995 frames at 120 fps = 8.28 s -> 249 frames at 30 fps
    # Resampling at 30 fps from 120 fps takes every 4th source frame here.
    full = coco17_world(motion, fps=120)
    np.testing.assert_allclose(world, full[::4], atol=1e-9)
    # Performer faces +Z at the start, left side towards +X, Y up, metres.
    assert abs(facing_yaw(world[0])) < 1e-9
    assert world[0, K["left_hip"], 0] > world[0, K["right_hip"], 0]
    assert world[0, K["nose"], 1] > world[0, K["left_shoulder"], 1] > world[0, K["left_hip"], 1] > world[0, K["left_ankle"], 1]
    assert 1.3 < world[0, K["nose"], 1] < 1.7 and 0.0 < world[0, K["left_ankle"], 1] < 0.2
    # Face points sit in front of the head (the nose ahead of the ears along the facing direction).
    ears = (world[:, K["left_ear"]] + world[:, K["right_ear"]]) / 2
    yaw = np.array([facing_yaw(w) for w in world])
    forward = np.stack([np.sin(yaw), np.zeros_like(yaw), np.cos(yaw)], axis=-1)
    ahead = np.sum((world[:, K["nose"]] - ears) * forward, axis=-1)
    assert np.all(ahead > 0) and np.median(ahead) > 0.09  # less while the performer bends down (~3 s)
    # Segment lengths of rigid bones stay constant over the clip (thigh, shin, upper arm, forearm).
    for a, b in [("left_hip", "left_knee"), ("right_knee", "right_ankle"), ("left_shoulder", "left_elbow"), ("right_elbow", "right_wrist")]:
        length = np.linalg.norm(world[:, K[a]] - world[:, K[b]], axis=-1)
        assert np.ptp(length) < 1e-3, (a, b)
    # The performer walks towards +Z (the default camera).
    assert world[-1, K["left_hip"], 2] - world[0, K["left_hip"], 2] > 2.0


def test_mocap_source_frames_and_projection():
    with MocapSource(need(MOCAP), fps=30) as source:
        assert (source.width, source.height, source.fps) == (1280, 720, 30.0)
        frames = list(source)
        assert len(frames) == 249 and source.read() is None
    first = frames[0]
    assert first.image is None and first.index == 0 and first.truth.joints3d.shape == (17, 3)
    np.testing.assert_allclose(np.diff([f.timestamp for f in frames[:5]]), 1 / 30, atol=1e-9)
    person = first.truth.people[0]
    assert person.keypoints.shape == (17, 2) and person.scores.shape == (17,)
    # The 2D truth is the camera's projection of the 3D joints.
    np.testing.assert_allclose(person.keypoints, PinholeCamera().project(first.truth.joints3d), atol=1e-3)
    # Facing the camera: the performer's left shoulder is on the image's right, head above feet.
    kp = person.keypoints
    assert kp[K["left_shoulder"], 0] > kp[K["right_shoulder"], 0]
    assert kp[K["nose"], 1] < kp[K["left_hip"], 1] < kp[K["left_ankle"], 1]
    assert np.all(person.scores == 1.0)
    x1, y1, x2, y2 = person.box
    assert x1 < kp[:, 0].min() and x2 > kp[:, 0].max() and y1 < kp[:, 1].min() and y2 > kp[:, 1].max()
    # Walking towards the camera makes the person bigger in the image.
    height = lambda f: f.truth.people[0].keypoints[K["left_ankle"], 1] - f.truth.people[0].keypoints[K["nose"], 1]
    assert height(frames[200]) > 1.5 * height(frames[0])
    # Out-of-image keypoints (the feet near the end) are reported with score 0, never NaN.
    assert all(np.all(np.isfinite(f.truth.people[0].keypoints)) for f in frames)
    for f in frames:
        off = (f.truth.people[0].keypoints[:, 1] >= 720) | (f.truth.people[0].keypoints[:, 0] < 0)
        assert np.all(f.truth.people[0].scores[off] == 0)


def test_mocap_source_side_camera_and_loop():
    cam = PinholeCamera.orbit(45.0)
    source = MocapSource(need(MOCAP), fps=10, camera=cam, loop=True)
    frames = [source.read() for _ in range(len(source) + 3)]
    assert frames[-1].index == len(source) + 2
    np.testing.assert_allclose(frames[len(source)].truth.people[0].keypoints, frames[0].truth.people[0].keypoints)
    # From 45 degrees to the performer's left, the left shoulder is nearer the camera than the right.
    j = frames[0].truth.joints3d
    assert cam.depth(j[K["left_shoulder"]]) < cam.depth(j[K["right_shoulder"]])
    source.close()
    assert source.read() is None


def test_mocap_source_realtime_paces_frames():
    source = MocapSource(need(MOCAP), fps=50, realtime=True)
    start = time.monotonic()
    for _ in range(6):
        frame = source.read()
    assert time.monotonic() - start >= 0.09  # frame 5 is due 0.1 s after the first read
    assert frame.timestamp <= time.monotonic()


def test_mocap_source_clock_starts_at_the_first_read_not_at_open():
    with MocapSource(need(MOCAP), fps=20, realtime=True) as source:
        check_clock_starts_at_first_read(source, fps=20)


def test_mocap_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bvh"):
        MocapSource(tmp_path / "missing.bvh")
    bvh = tmp_path / "arm.bvh"
    bvh.write_text("HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n}\nMOTION\nFrames: 1\nFrame Time: 0.1\n0 1 0\n")
    with pytest.raises(ValueError, match="no joint for COCO keypoint"):
        MocapSource(bvh)
