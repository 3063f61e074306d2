"""The live loop on real people (issue #16): command-line flags and pipeline-level behaviour."""

from __future__ import annotations

import argparse

import pytest

from avatar_bridge.config import ConfigError, load_config
from avatar_bridge.commands.options import add_source_arguments, apply_source_arguments
from avatar_bridge.pipeline import tracker_settings


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    return apply_source_arguments(parser.parse_args(list(argv)), load_config("default"))


def test_max_people_flag_sets_the_tracker_cap():
    config = parse("--max-people", "7", "--detector", "yolox-nano")
    assert config.detector.max_people == 7
    assert tracker_settings(config.detector).max_people == 7
    assert tracker_settings(config.detector).driver_hold_seconds == 2.0
    with pytest.raises(ConfigError, match=r"detector\.max_people = 0 is out of range"):
        parse("--max-people", "0")


# --- camera orientation: --rotate / --flip and the implausible-pose warning -------------------------

import logging  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from avatar_bridge.capture import orient_frame, orient_points  # noqa: E402
from avatar_bridge.track import OrientationMonitor  # noqa: E402
from avatar_bridge.types import Frame, GroundTruth, Pose2D  # noqa: E402
from conftest import FIXTURES, POSE_ONNX, VIDEO, need  # noqa: E402


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
@pytest.mark.parametrize("flip", [False, True])
def test_orient_frame_moves_image_and_keypoints_together(rotate, flip):
    image = np.zeros((40, 60, 3), np.uint8)
    image[7, 11] = (255, 255, 255)  # the marked pixel: x = 11, y = 7
    person = Pose2D(np.array([[11.0, 7.0]] * 17, np.float32), np.ones(17, np.float32), np.array([11, 7, 11, 7], np.float32))
    frame = orient_frame(Frame(0, 0.0, 60, 40, image=image, truth=GroundTruth(people=[person])), rotate, flip)
    ys, xs = np.nonzero(frame.image[..., 0])
    assert (frame.width, frame.height) == (frame.image.shape[1], frame.image.shape[0])
    assert (frame.width, frame.height) == ((40, 60) if rotate in (90, 270) else (60, 40))
    np.testing.assert_allclose(frame.truth.people[0].keypoints[0], [xs[0], ys[0]])
    np.testing.assert_allclose(frame.truth.people[0].box, [xs[0], ys[0], xs[0], ys[0]])
    np.testing.assert_allclose(orient_points(np.array([11.0, 7.0]), (60, 40), rotate, flip), [xs[0], ys[0]])


def test_rotate_and_flip_flags():
    config = parse("--rotate", "270", "--flip")
    assert config.source.rotate == 270 and config.source.flip is True
    config = parse()
    assert config.source.rotate == 0 and config.source.flip is False
    with pytest.raises(SystemExit):
        parse("--rotate", "45")
    config.source.rotate = 45
    with pytest.raises(ConfigError, match=r"source\.rotate = 45 is not allowed"):
        config.validate()


def standing(x: float, turn: int = 0) -> Pose2D:
    """A standing person's COCO-17 keypoints (pixels), optionally as seen by a camera turned ``turn``."""
    from test_track import TEMPLATE

    kp = TEMPLATE + np.array([x, 100], np.float32)
    person = Pose2D(kp, np.full(17, 0.9, np.float32))
    if turn:
        person.keypoints = orient_points(kp, (1280, 720), turn, False)
    return person


@pytest.mark.parametrize("turn, fix", [(180, "--rotate 180"), (90, "--rotate 270"), (270, "--rotate 90")])
def test_orientation_monitor_names_the_fix(turn, fix):
    monitor = OrientationMonitor(warn_after=2.0)
    messages = [monitor.update(i / 10, 1, [standing(300, turn)]) for i in range(40)]
    said = [m for m in messages if m]
    assert len(said) == 1 and fix in said[0]
    assert messages.index(said[0]) == 20  # after 2 s, once
    # upright people never warn, and one upright frame resets the clock
    monitor = OrientationMonitor(warn_after=2.0)
    assert not any(monitor.update(i / 10, 1, [standing(300, 180 if i % 15 else 0)]) for i in range(60))


@pytest.mark.parametrize("applied, turn, fix", [(180, 180, "--rotate 0 (source.rotate = 0) instead of 180"),
                                                (90, 180, "--rotate 270 (source.rotate = 270) instead of 90")])
def test_orientation_advice_counts_the_turn_already_applied(applied, turn, fix):
    """The frames reach the monitor after --rotate: the advice is the total turn (found by a new user:
    an upright video run with --rotate 180 was told to pass --rotate 180)."""
    monitor = OrientationMonitor(warn_after=2.0, rotate=applied)
    said = [m for m in (monitor.update(i / 10, 1, [standing(300, turn)]) for i in range(40)) if m]
    assert len(said) == 1 and fix in said[0], said


def test_orientation_monitor_uses_rotated_detection_probes():
    monitor = OrientationMonitor(warn_after=1.0, probe_every=0.5)
    said = []
    for i in range(30):
        t = i / 10
        if monitor.should_probe(t, []):
            monitor.probe_result(t, 90, 0)
            monitor.probe_result(t, 180, 2)
        said.append(monitor.update(t, 0, []))
    assert [m for m in said if m] and "--rotate 180" in [m for m in said if m][0]
    # an empty room: probes find nobody, no warning
    monitor = OrientationMonitor(warn_after=1.0, probe_every=0.5)
    for i in range(30):
        if monitor.should_probe(i / 10, []):
            monitor.probe_result(i / 10, 180, 0)
        assert monitor.update(i / 10, 0, []) is None


@pytest.mark.parametrize("detector_name", ["light-person-detector", "yolox-nano"])
def test_upside_down_clip_tracks_with_rotate_180(tmp_path, caplog, detector_name):
    """The two-walkers clip turned 180 degrees (an upside-down camera), as an image folder: with
    --rotate 180 it tracks at least as many frames as the upright clip; without, far fewer and a
    warning names --rotate 180."""
    from avatar_bridge.capture import VideoFileSource
    from avatar_bridge.pipeline import Pipeline, open_config_source

    upright_dir, turned_dir = tmp_path / "upright", tmp_path / "turned"
    upright_dir.mkdir()
    turned_dir.mkdir()
    with VideoFileSource(need(VIDEO), realtime=False, resize=(640, 360)) as source:
        while (frame := source.read()) is not None:
            cv2.imwrite(str(upright_dir / f"{frame.index:03d}.png"), frame.image)
            cv2.imwrite(str(turned_dir / f"{frame.index:03d}.png"), cv2.rotate(frame.image, cv2.ROTATE_180))

    def tracked(folder, *flags):
        config = parse("--source", str(folder), "--fast", "--model", str(need(POSE_ONNX)), "--threads", "1",
                       "--detector", detector_name, "--detector-dir", str(FIXTURES / "models"), *flags)
        pipeline = Pipeline(config)
        pipeline.orientation.warn_after, pipeline.orientation.probe_every = 1.0, 0.5
        count = 0
        with open_config_source(config) as source:
            for i in range(1000):
                frame = source.read()
                if frame is None:
                    break
                frame.timestamp = i / 28.0  # the clip's own clock (28 fps), whatever the CPU speed
                count += bool(pipeline.process(frame).people)
        return count

    caplog.set_level(logging.WARNING)
    upright = tracked(upright_dir)
    assert not [r for r in caplog.records if "upright" in r.getMessage()]
    turned = tracked(turned_dir)
    warnings = [r.getMessage() for r in caplog.records if "upright" in r.getMessage()]
    fixed = tracked(turned_dir, "--rotate", "180")
    print(f"\n{detector_name}: frames with a tracked person: upright {upright}, upside down {turned}, "
          f"upside down with --rotate 180 {fixed} (of 72)")
    assert fixed >= upright >= 70
    assert turned < upright / 2
    assert len(warnings) == 1 and "--rotate 180" in warnings[0]


# --- seated users: automatic upper-body mode --------------------------------------------------------


def seated_run(auto: bool, caplog, on_edge: bool = False):
    """The synthetic performer with hips, knees and ankles at score 0.1 (hidden by a desk) through the
    real Pipeline; returns (pipeline, rigs solved, arm rotations seen moving). ``on_edge``: instead,
    the frame cut off below the chest, as a heatmap model reports it: hips, knees and ankles on the
    bottom edge at score 0.5."""
    from avatar_bridge.pipeline import Pipeline
    from avatar_bridge.synthetic import SyntheticSource

    config = load_config("default")
    config.retarget.auto_upper_body = auto
    pipeline = Pipeline(config)
    source = SyntheticSource(fps=30, seed=2, duration=4.0, realtime=False)
    caplog.set_level(logging.WARNING, logger="avatar_bridge.retarget")
    rigs = []
    while (frame := source.read()) is not None:
        for person in frame.truth.people:
            if on_edge:
                person.keypoints[11:, 1] = frame.height - 1.0
                person.scores[11:] = 0.5
            else:
                person.scores[11:] = 0.1  # hips, knees, ankles barely seen
        pipeline.process(frame)
        out = pipeline.sample(frame.timestamp)
        if out is not None and out.people and out.people[0].rig is not None:
            rigs.append(out.people[0].rig)
    return pipeline, rigs


@pytest.mark.parametrize("on_edge", [False, True])
def test_seated_user_calibrates_in_upper_body_mode(caplog, on_edge):
    pipeline, rigs = seated_run(True, caplog, on_edge)
    calibrations = pipeline.calibrations()
    assert len(calibrations) == 1
    (person,) = pipeline._people.values()
    assert person.retargeter.upper_body and person.retargeter.auto_upper_body
    lines = [r.getMessage() for r in caplog.records if "upper-body mode" in r.getMessage()]
    assert len(lines) == 1 and "--upper-body" in lines[0] and "calibrate again" in lines[0]
    tracked = [r for r in rigs if r.tracking]
    assert len(tracked) > 30  # the arms drive the avatar
    arm = np.array([r.rotations["leftUpperArm"] for r in tracked])
    assert np.ptp(arm, axis=0).max() > 0.1
    for r in tracked:  # and the legs stay at rest
        for leg in ("leftUpperLeg", "rightLowerLeg"):
            assert abs(abs(float(r.rotations[leg][3])) - 1.0) < 1e-6


def test_seated_user_without_auto_mode_never_calibrates(caplog):
    """The old behaviour, kept behind retarget.auto_upper_body = false: no calibration, no tracking."""
    pipeline, rigs = seated_run(False, caplog)
    assert pipeline.calibrations() == {}
    assert not any(r.tracking for r in rigs)
    assert not [r for r in caplog.records if "upper-body mode" in r.getMessage()]


# --- what a user sees -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(320, 180), (640, 360), (854, 480), (1280, 720), (1920, 1080)])
def test_overlay_status_text_is_readable_at_any_size(size):
    """One copy of the status text, white on a dark box, capitals at least 10 px high, inside the
    image (wrapped when the image is narrow)."""
    from avatar_bridge.overlay import draw_overlay

    w, h = size
    canvas = np.full((h, w, 3), 128, np.uint8)
    draw_overlay(canvas, [], None, "12.3 fps  latency p95 45 ms  dropped 0")
    white = np.all(canvas >= 200, axis=-1)
    ys, xs = np.nonzero(white)
    assert len(xs) > 50
    # the text sits on a dark box: the pixels around the glyphs are dark, not the grey image
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    box = canvas[y1:y2 + 1, x1:x2 + 1]
    around = box[~white[y1:y2 + 1, x1:x2 + 1]]
    assert np.median(around) < 60
    # readable: a line of text (a row band of white pixels) is at least 10 px high
    rows = np.flatnonzero(white.any(axis=1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 2) + 1)
    assert max(len(b) for b in bands) >= 10, [len(b) for b in bands]
    assert x2 < w - 1 and y2 < h - 1
    # one copy: no black glyph strokes (the old outline-plus-fill drawing)
    assert not np.all(canvas <= 10, axis=-1).any()


def test_missing_camera_error_is_not_buried_under_opencv_warnings():
    """`run --source 7` on a machine without that camera: our one line, no OpenCV log lines; with
    --verbose OpenCV's own warnings are shown."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    cmd = [sys.executable, "-m", "avatar_bridge"]
    args = ["run", "--source", "7", "--headless", "--no-vmc", "--no-ws"]
    quiet = subprocess.run(cmd + args, capture_output=True, text=True, timeout=120, env=env)
    assert quiet.returncode == 2
    lines = [ln for ln in quiet.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("avatar-bridge run: error: camera 7"), quiet.stderr
    verbose = subprocess.run(cmd + ["--verbose"] + args, capture_output=True, text=True, timeout=120, env=env)
    assert "WARN" in verbose.stderr or "ERROR:" in verbose.stderr, verbose.stderr


def test_viewer_page_requests_log_one_line_per_client(caplog):
    """websockets logs every HTTP request at INFO ("HTTP response sent", "connection closed"): only
    our one line per client remains."""
    import urllib.request

    from avatar_bridge.config import WebSocketConfig
    from avatar_bridge.server import WebSocketServer

    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="avatar_bridge.server")
    server = WebSocketServer(WebSocketConfig(port=0)).start()
    try:
        for path in ("/", "/app.js", "/style.css", "/", "/index.html"):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
                assert response.status == 200
    finally:
        server.stop()
    access = [r.getMessage() for r in caplog.records if "HTTP" in r.getMessage() or "requested" in r.getMessage()
              or "connection closed" in r.getMessage()]
    assert access == ["viewer page requested by 127.0.0.1 (/); later requests from there are not logged"], access


def test_no_orientation_warning_for_an_empty_room_without_a_detector(caplog):
    """detector = none boxes the whole frame every time: that is no evidence of people, so an empty
    room (or one nobody upright walks through) does not warn."""
    from avatar_bridge.pipeline import Pipeline

    config = parse("--model", str(need(POSE_ONNX)), "--threads", "1", "--detector", "none")
    pipeline = Pipeline(config)
    pipeline.orientation.warn_after, pipeline.orientation.probe_every = 0.5, 0.2
    caplog.set_level(logging.WARNING)
    empty = np.full((360, 640, 3), 90, np.uint8)
    for i in range(40):
        pipeline.process(Frame(i, i / 10, 640, 360, image=empty.copy()))
    assert not [r for r in caplog.records if "upright" in r.getMessage()]


def test_orient_frame_turns_keypoint_sources_too():
    person = Pose2D(np.array([[10.0, 20.0]] * 17, np.float32), np.ones(17, np.float32), np.array([5, 15, 10, 20], np.float32))
    frame = orient_frame(Frame(0, 0.0, 640, 480, image=None, truth=GroundTruth(people=[person])), 90, False)
    assert (frame.width, frame.height) == (480, 640)
    np.testing.assert_allclose(frame.truth.people[0].keypoints[0], [479 - 20, 10])
    np.testing.assert_allclose(frame.truth.people[0].box, [479 - 20, 5, 479 - 15, 10])
    with pytest.raises(ValueError, match="0, 90, 180 or 270"):
        orient_frame(Frame(0, 0.0, 640, 480), 45)


def test_whole_image_detector_tracks_one_person():
    """Detector ``none`` makes the whole image one person: one track, whatever --max-people says
    (else a changing image folder would get a second, stale keypoint box estimated as a person)."""
    from avatar_bridge.config import DetectorConfig

    assert tracker_settings(DetectorConfig(name="none", max_people=4)).max_people == 1
    assert tracker_settings(DetectorConfig(name="yolox-nano", max_people=4)).max_people == 4
