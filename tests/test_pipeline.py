"""`avatar-bridge run` and the Pipeline behind it, with real models, real sockets and real signals."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_bridge import cli
from avatar_bridge.capture import open_source
from avatar_bridge.config import AppConfig
from avatar_bridge.overlay import draw_overlay
from avatar_bridge.pipeline import Pipeline
from avatar_bridge.types import GroundTruth, Pose2D
from conftest import FIXTURES, MOCAP, POSE_ONNX, VIDEO, need

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def video_config() -> AppConfig:
    config = AppConfig()
    config.source.source = str(need(VIDEO))
    config.source.realtime = False
    config.pose.model = str(need(POSE_ONNX))
    config.pose.threads = 1
    config.detector.name = "yolox-nano"
    config.detector.model_dir = str(FIXTURES / "models")
    return config


def test_pipeline_on_the_fixture_video_gives_two_rigged_people():
    config = video_config()
    pipeline = Pipeline(config)
    pipeline.prepare(images=True)
    counts = []
    with open_source(config.source.source, realtime=False) as source:
        for _ in range(20):
            poses = pipeline.process(source.read())
            counts.append(len(poses.people))
            assert all(p.keypoints.shape == (17, 2) and p.track_id > 0 for p in poses.people)
    assert counts.count(2) >= 19
    out = pipeline.sample(time.monotonic())
    assert out is not None and (out.width, out.height) == (1920, 1080)
    assert sorted(p.track_id for p in out.people) == [1, 2]
    assert out.driver in (1, 2)
    for person in out.people:
        assert person.tracking and person.rig is not None
        assert person.rig.track_id == person.track_id
        assert all(np.all(np.isfinite(q)) for q in person.rig.rotations.values())
    snap = pipeline.metrics.snapshot()
    assert snap["frames"] == 20 and snap["updates"] == sum(counts)
    assert {"detect", "pose", "track", "smooth", "retarget"} <= set(snap["stages_ms"])
    assert snap["stages_ms"]["detect"]["n"] < 5  # detection is rare
    assert snap["latency_ms"]["capture_to_keypoints"]["p50"] > 0


def test_overlapped_pipeline_finds_the_same_people_with_the_same_ids():
    """estimate_overlapped against estimate on the fixture video: a frame comes out one call after it
    went in, every frame comes out once and in order, the same two people keep the same ids, and
    their keypoints agree with the sequential ones (the crops come from one frame older tracks)."""
    config = video_config()
    frames = []
    with open_source(config.source.source, realtime=False) as source:
        for _ in range(30):
            frames.append(source.read())
    sequential = Pipeline(config)
    expected = [sequential.estimate(f) for f in frames]
    overlapped = Pipeline(config)
    out = []
    try:
        for i, frame in enumerate(frames):
            done = overlapped.estimate_overlapped(frame)
            assert (done is None) == (i == 0)  # the first call only begins
            if done is not None:
                out.append(done)
        out.append(overlapped.estimate_overlapped(None))
        assert overlapped.estimate_overlapped(None) is None  # nothing pending any more
    finally:
        overlapped.close()
    assert [f.index for f, _ in out] == [f.index for f in frames]
    for (frame, got), want in zip(out, expected):
        assert sorted(p.track_id for p in got.poses.people) == sorted(p.track_id for p in want.poses.people) == [1, 2]
        for person in got.poses.people:
            same = next(p for p in want.poses.people if p.track_id == person.track_id)
            height = float(np.ptp(same.keypoints[:, 1]))
            seen = (person.scores > 0.5) & (same.scores > 0.5)
            # the same joints, within 3% of the person's height (the crops differ by one frame of motion)
            assert np.median(np.linalg.norm(person.keypoints[seen] - same.keypoints[seen], axis=1)) < 0.03 * height
    assert overlapped.tracker.detections_run == sequential.tracker.detections_run  # frame 1 re-crops frame 0's


def test_overlapped_processing_advances_people_and_stops_its_worker():
    config = video_config()
    pipeline = Pipeline(config)
    with open_source(config.source.source, realtime=False) as source:
        first = source.read()
        assert pipeline.process_overlapped(first) is None
        worker = pipeline._pose_worker
        frame, poses = pipeline.process_overlapped(source.read())
    assert frame is first and len(poses.people) == 2
    assert pipeline.sample(time.monotonic()) is not None  # people advanced: the outputs have them
    pipeline.close()  # drops the second frame, begun and not finished
    assert pipeline._pose_worker is None and worker._shutdown
    assert pipeline.process_overlapped(None) is None


def test_driver_only_mode_estimates_one_person():
    config = video_config()
    config.detector.people = "driver"
    pipeline = Pipeline(config)
    with open_source(config.source.source, realtime=False) as source:
        people = [len(pipeline.process(source.read()).people) for _ in range(10)]
    assert people == [1] * 10
    out = pipeline.sample(time.monotonic())
    assert [p.track_id for p in out.people] == [out.driver]
    pipeline.select_driver(5)
    assert pipeline.tracker.driver_selector.policy == "fixed"


def test_keypoint_source_skips_detection_and_pose():
    config = AppConfig()
    pipeline = Pipeline(config)
    with open_source(str(need(MOCAP)), realtime=False) as source:
        for _ in range(10):
            pipeline.process(source.read())
    assert pipeline.estimator is None and pipeline.detector is None
    out = pipeline.sample(time.monotonic())
    assert [p.track_id for p in out.people] == [1] and out.driver == 1
    assert "leftUpperArm" in out.people[0].rig.rotations
    pipeline.paused = True
    assert pipeline.sample(time.monotonic()) is None


def test_overlay_draws_skeleton_and_label():
    canvas = np.zeros((360, 640, 3), np.uint8)
    kp = np.stack([np.linspace(200, 400, 17), np.linspace(60, 320, 17)], axis=1).astype(np.float32)
    draw_overlay(canvas, [Pose2D(kp, np.ones(17, np.float32), track_id=3)], driver=3, text="12 fps")
    assert canvas[int(kp[5, 1]), int(kp[5, 0])].any()  # a joint was drawn
    assert canvas[:40, :120].any()  # the status text


def test_run_video_writes_overlay_and_recording(tmp_path, capsys):
    overlay = tmp_path / "overlay.mp4"
    take = tmp_path / "take.abrec"
    common = ["run", "--source", str(need(VIDEO)), "--model", str(need(POSE_ONNX)), "--detector", "light-person-detector",
              "--detector-dir", str(FIXTURES / "models"), "--threads", "1", "--max-frames", "8", "--headless",
              "--quiet", "--no-ws", "--no-vmc"]
    assert cli.main([*common, "--fast", "--save-overlay", str(overlay)]) == 0
    err = capsys.readouterr().err
    assert "stopped (max frames): 8 frames, 16 pose updates" in err
    # A recording runs paced like a camera (--fast with --record is refused, see test_convert.py).
    assert cli.main([*common, "--record", str(take)]) == 0
    assert "stopped (max frames): 8 frames" in capsys.readouterr().err
    cap = cv2.VideoCapture(str(overlay))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 8
    from avatar_bridge.record import read_recording

    recording = read_recording(take)
    assert recording.complete and len(recording) >= 1
    assert recording.header.source["width"] == 1920
    # frame indices are positions in the video (gaps where pacing dropped frames), never backwards
    indices = recording.frame_table["index"]
    assert indices.max() < 72 and (np.diff(indices.astype(int)) >= 0).all()


def test_run_with_missing_camera_is_one_clear_line(capsys):
    assert cli.main(["run", "--source", "/dev/video99", "--headless", "--no-ws", "--no-vmc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--source synthetic" in err[0] and "--source FILE" in err[0]


def test_run_with_missing_file_fails_before_announcing_a_viewer(tmp_path, capsys):
    """With the WebSocket server on, a missing source is still one line, and no "web viewer: URL" comes
    before it (a new user read that line as the run having started)."""
    missing = tmp_path / "nosuch.mp4"
    assert cli.main(["run", "--source", str(missing), "--headless", "--ws-port", "0", "--no-vmc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0], err
    assert not any("web viewer" in line for line in err)


def test_run_with_bad_settings_names_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[detector]\nevery_n_frames = 0\n")
    assert cli.main(["run", "--config", str(bad), "--headless"]) == 2
    assert "detector.every_n_frames" in capsys.readouterr().err
    assert cli.main(["run", "--every", "0", "--headless"]) == 2
    assert "every_n_frames" in capsys.readouterr().err
    assert cli.main(["run", "--resize", "big", "--headless", "--source", str(need(MOCAP))]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    missing = tmp_path / "no" / "overlay.mp4"
    assert cli.main(["run", "--headless", "--source", str(MOCAP), "--save-overlay", str(missing)]) == 2
    assert f"folder for --save-overlay {missing} does not exist" in capsys.readouterr().err
    existing = tmp_path / "overlay.mp4"
    existing.write_bytes(b"keep me")
    assert cli.main(["run", "--headless", "--source", "synthetic", "--save-overlay", str(existing)]) == 2
    assert f"overlay video {existing} already exists: choose another name or pass --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


def test_every_writer_shares_one_overwrite_rule(tmp_path):
    """Recording, BVH and the commands' outputs all refuse through files.refuse_existing: same words."""
    from avatar_bridge.bvh import BvhRecorder
    from avatar_bridge.config import RecordConfig
    from avatar_bridge.files import refuse_existing
    from avatar_bridge.record import RecordingWriter

    take, motion = tmp_path / "take.abrec", tmp_path / "take.bvh"
    for path in (take, motion):
        path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"^recording .*take\.abrec already exists: choose another name or pass --overwrite$"):
        RecordingWriter(take)
    with pytest.raises(FileExistsError, match=r"^BVH file .*take\.bvh already exists: choose another name or pass --overwrite$"):
        BvhRecorder.from_config(RecordConfig(bvh=str(motion)))
    with pytest.raises(FileExistsError, match=r"^.*take\.bvh already exists: choose another name or pass --overwrite$"):
        refuse_existing(motion, False)
    refuse_existing(motion, True)  # allowed: nothing raised, nothing touched
    assert take.read_bytes() == b"old" and motion.read_bytes() == b"old"


def run_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avatar_bridge", "run", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_run_streams_vmc_and_websocket_and_stops_on_sigterm(tmp_path):
    """The BVH source through the whole loop to a real UDP socket and a real WebSocket client,
    then SIGTERM: clean exit, recording finished."""
    from websockets.sync.client import connect

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(20)
    ws_port = free_port()
    take = tmp_path / "take.abrec"
    bvh = tmp_path / "take.bvh"
    proc = run_cli("--source", str(need(MOCAP)), "--loop", "--headless", "--quiet", "--vmc",
                   f"127.0.0.1:{udp.getsockname()[1]}", "--ws-port", str(ws_port), "--record", str(take), "--bvh", str(bvh))
    try:
        datagram, _ = udp.recvfrom(65536)
        assert b"/VMC/Ext/" in datagram
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{ws_port}/", open_timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "WebSocket server did not come up"
                time.sleep(0.2)
        with ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello"
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "frame" and frame["people"] and frame["people"][0]["id"] == 1
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        udp.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopped (SIGTERM)" in out
    from avatar_bridge.record import read_recording

    recording = read_recording(take)
    assert recording.complete and len(recording) > 0
    from avatar_bridge.bvh import load_bvh

    motion = load_bvh(bvh)  # the driver's motion, written at the end
    assert motion.world_positions().shape[0] > 0


@pytest.mark.skipif(importlib.util.find_spec("avatar_bridge.synthetic") is None,
                    reason="avatar_bridge.synthetic (the synthetic performer) is not in this checkout yet")
def test_run_synthetic_headless_for_two_seconds():
    proc = run_cli("--source", "synthetic", "--headless", "--duration", "2", "--no-vmc", "--ws-port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped (duration)" in out
    frames = int(out.split("stopped (duration): ")[1].split(" frames")[0])
    assert frames >= 20  # about 60 at 30 fps; far fewer only on a badly overloaded machine


def test_frames_of_the_wrong_type_or_size_do_not_stop_the_loop():
    from avatar_bridge.types import Frame

    config = video_config()
    config.detector.name = "none"
    pipeline = Pipeline(config)
    bad = Frame(0, time.monotonic(), 64, 48, image=np.zeros((48, 64, 3), np.float32))
    assert pipeline.process(bad).people == []
    assert pipeline.metrics.dropped == 1
    grey = Frame(1, time.monotonic(), 1920, 1080, image=np.full((240, 320), 128, np.uint8))  # size differs too
    poses = pipeline.process(grey)
    assert (poses.width, poses.height) == (320, 240)
    assert pipeline.tracker.image_size == (320, 240)  # crops come from the real image size
    # The overlapped path skips them the same way.
    overlapped = Pipeline(config)
    try:
        assert overlapped.process_overlapped(Frame(0, time.monotonic(), 64, 48, image=np.zeros((48, 64, 3), np.float32))) is None
        frame, poses = overlapped.process_overlapped(Frame(1, time.monotonic(), 1920, 1080, image=np.full((240, 320), 128, np.uint8)))
        assert frame.index == 0 and poses.people == [] and overlapped.metrics.dropped == 1
        frame, poses = overlapped.process_overlapped(None)
        assert frame.index == 1 and (poses.width, poses.height) == (320, 240)
    finally:
        overlapped.close()


def test_stop_flag_ends_the_wait_for_an_unplugged_camera(tmp_path):
    import threading

    from avatar_bridge.capture import CameraSource
    from avatar_bridge.commands.shell import StopFlag, next_frame

    path = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    opened = []

    def open_capture(device):  # works once, then the "camera" is gone for good
        opened.append(device)
        return cv2.VideoCapture(device if len(opened) == 1 else str(tmp_path / "gone.avi"))

    camera = CameraSource(str(path), failures_before_reopen=1, backoff=(0.05, 0.1), open_capture=open_capture)
    stop = StopFlag()
    timer = threading.Timer(1.5, stop.set, args=("SIGINT",))
    timer.start()
    try:
        frames = 0
        while next_frame(camera, stop) is not None:  # 3 frames, then the wait for a camera that is gone
            frames += 1
        assert stop.event.is_set() and 1 <= frames <= 3
        assert not camera.connected and len(opened) >= 2  # it was still trying to reconnect
        assert not camera.ended  # only the stop flag ended the wait
    finally:
        timer.cancel()
        camera.close()


def write_image_folder(folder: Path, frames: int) -> None:
    """The fixture video's first ``frames`` frames as 960x540 JPEGs (an image-folder source)."""
    cap = cv2.VideoCapture(str(need(VIDEO)))
    for i in range(frames):
        ok, image = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"frame_{i:02d}.jpg"), cv2.resize(image, (960, 540)))
    cap.release()


def test_run_on_an_image_folder(tmp_path, capsys):
    write_image_folder(tmp_path, 6)
    argv = ["run", "--source", str(tmp_path), "--model", str(need(POSE_ONNX)), "--detector", "yolox-nano",
            "--detector-dir", str(FIXTURES / "models"), "--threads", "1", "--headless", "--quiet", "--no-ws", "--no-vmc"]
    assert cli.main(argv) == 0
    assert "stopped (source ended): 6 frames, 12 pose updates" in capsys.readouterr().err


def test_run_fast_overlaps_frames_and_still_shows_and_counts_each_once(tmp_path, capsys, monkeypatch):
    """run --fast on a file: the overlapped path (network of one frame while the previous is
    tracked); every frame is still estimated, drawn on its own image and written once."""
    calls = []
    original = Pipeline.process_overlapped

    def counted(self, frame):
        calls.append(None if frame is None else frame.index)
        return original(self, frame)

    monkeypatch.setattr(Pipeline, "process_overlapped", counted)
    write_image_folder(tmp_path, 6)
    overlay = tmp_path / "overlay.mp4"
    argv = ["run", "--source", str(tmp_path), "--fast", "--model", str(need(POSE_ONNX)), "--detector", "yolox-nano",
            "--detector-dir", str(FIXTURES / "models"), "--threads", "1", "--headless", "--quiet", "--no-ws", "--no-vmc",
            "--save-overlay", str(overlay)]
    assert cli.main(argv) == 0
    assert "stopped (source ended): 6 frames, 12 pose updates" in capsys.readouterr().err
    assert calls == [0, 1, 2, 3, 4, 5, None]  # each frame begun once, then the last one finished
    written = cv2.VideoCapture(str(overlay))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    written.release()


def test_pausing_an_overlapped_run_finishes_the_frame_begun_before_it():
    """run's loop step (commands.run.advance): overlapped, each call shows the frame before; a pause
    finishes the pending frame at once (not a pause later) and shows frames with the last poses; on
    resume nothing stale is pending."""
    from avatar_bridge.commands.run import advance

    config = video_config()
    pipeline = Pipeline(config)
    try:
        with open_source(config.source.source, realtime=False) as source:
            frames = [source.read() for _ in range(5)]
        assert advance(pipeline, frames[0], overlap=True) == []
        [(shown, poses)] = advance(pipeline, frames[1], overlap=True)
        assert shown is frames[0] and len(poses.people) == 2
        pipeline.paused = True
        shown = advance(pipeline, frames[2], overlap=True)
        assert [f.index for f, _ in shown] == [1, 2]  # frame 1 finished now, frame 2 shown with its poses
        assert shown[1][1] is shown[0][1]  # ... the last poses, frame 2 itself not estimated
        assert pipeline.process_overlapped(None) is None  # nothing pending during the pause
        assert [f.index for f, _ in advance(pipeline, frames[3], overlap=True)] == [3]
        pipeline.paused = False
        assert advance(pipeline, frames[4], overlap=True) == []  # begins frame 4; nothing stale to finish
        shown, _ = pipeline.process_overlapped(None)  # the end of the source: the last frame begun
        assert shown is frames[4]
        # One frame at a time: each frame shown with its own poses.
        [(shown, poses)] = advance(pipeline, frames[0], overlap=False)
        assert shown is frames[0] and len(poses.people) == 2
    finally:
        pipeline.close()


def test_retarget_flags_override_the_config(tmp_path):
    import argparse

    from avatar_bridge.config import load_config
    from avatar_bridge.commands.options import add_source_arguments, apply_source_arguments

    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    calibration = tmp_path / "me.json"
    config = apply_source_arguments(
        parser.parse_args(["--upper-body", "--no-mirror", "--calibration", str(calibration)]), load_config("default"))
    assert config.retarget.upper_body is True
    assert config.retarget.mirror is False
    assert config.retarget.calibration_file == str(calibration)
    # no flag: the config's values stay
    config = apply_source_arguments(parser.parse_args([]), load_config("default"))
    assert config.retarget.mirror is True and config.retarget.upper_body is False


def test_upper_body_run_keeps_the_legs_at_rest():
    """--upper-body through the real pipeline: the synthetic performer steps, the avatar's legs do not."""
    import numpy as np

    from avatar_bridge.config import load_config
    from avatar_bridge.pipeline import Pipeline
    from avatar_bridge.synthetic import SyntheticSource

    config = load_config("default")
    config.retarget.upper_body = True
    pipeline = Pipeline(config)
    source = SyntheticSource(fps=30, seed=1, duration=4.0, realtime=False)
    moved, solved = [], 0
    while (frame := source.read()) is not None:
        truth_leg = frame.truth.rigs[0].rotations.get("leftUpperLeg")
        if truth_leg is not None:
            moved.append(abs(float(truth_leg[3])) < 0.999)  # the performer's own leg is bent
        pipeline.process(frame)
        out = pipeline.sample(frame.timestamp)
        if out is not None and out.people and out.people[0].rig is not None:
            rig = out.people[0].rig
            solved += 1
            for leg in ("leftUpperLeg", "rightUpperLeg", "leftLowerLeg", "rightLowerLeg"):
                q = rig.rotations.get(leg, np.array([0, 0, 0, 1.0]))
                assert abs(abs(float(q[3])) - 1.0) < 1e-6, (leg, q)
    assert solved > 30 and any(moved)  # rigs were produced while the performer's legs moved


def test_outputs_keep_sending_empty_frames_while_nobody_is_tracked():
    """Once the person is forgotten (FORGET_AFTER_S) a real WebSocket client keeps getting frames with
    ``people: []`` at the output rate, and a real UDP socket keeps getting VMC OK with tracking 0."""
    from pythonosc.osc_bundle import OscBundle
    from websockets.sync.client import connect

    from avatar_bridge.config import VmcConfig, WebSocketConfig
    from avatar_bridge.pipeline import FORGET_AFTER_S
    from avatar_bridge.server import WebSocketServer
    from avatar_bridge.stream import OutputClock
    from avatar_bridge.synthetic import SyntheticSource
    from avatar_bridge.types import Frame
    from avatar_bridge.vmc import VmcSender

    pipeline = Pipeline(AppConfig())
    assert pipeline.sample(time.monotonic()) is None  # nothing processed yet: nothing to describe
    source = SyntheticSource(width=640, height=480, realtime=False)
    index = 0
    for index in range(10):  # the performer, seen a while ago
        frame = source.read()
        frame.timestamp -= FORGET_AFTER_S + 2.0
        pipeline.process(frame)
    seen = frame.timestamp
    held = pipeline.sample(seen + 1.0).people  # lost, not yet forgotten: held, not tracking
    assert len(held) == 1 and not held[0].tracking
    # No frame since (a camera that vanished): forgotten by time alone, no new frame needed.
    assert pipeline.sample(seen + FORGET_AFTER_S + 0.5).people == []
    pipeline.process(Frame(index + 1, time.monotonic(), 640, 480, truth=GroundTruth()))  # now: nobody in view
    assert pipeline.sample(time.monotonic()).people == []

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    server = WebSocketServer(WebSocketConfig(port=0, rate=30.0)).start()
    vmc = VmcSender(VmcConfig(targets=[f"127.0.0.1:{udp.getsockname()[1]}"], rate=30.0))
    clock = OutputClock(pipeline.sample, [(server.publish, 30.0), (vmc.send, 30.0)]).start()
    try:
        with connect(server.ws_url, open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            frames = [json.loads(ws.recv(timeout=2)) for _ in range(10)]  # before: nothing ever came
        assert all(f["type"] == "frame" and f["people"] == [] and f["driver"] is None for f in frames)
        assert all(f["image"] == {"width": 640, "height": 480} for f in frames)
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10
        ok = []
        while len(ok) < 5:
            for message in OscBundle(udp.recvfrom(65536)[0]):
                assert not message.address.startswith("/VMC/Ext/Bone/")  # no pose while nobody is tracked
                if message.address == "/VMC/Ext/OK":
                    ok.append(message.params)
        assert all(params[-1] == 0 for params in ok)  # tracking 0
    finally:
        clock.stop()
        vmc.close()
        server.stop()
        udp.close()


def test_run_overwrite_replaces_an_existing_recording_and_bvh(tmp_path, capsys):
    """Without --overwrite, run refuses existing --record / --bvh files naming the flag (files untouched);
    with it, both are replaced by the new take."""
    from avatar_bridge.bvh import load_bvh
    from avatar_bridge.record import read_recording

    take, bvh = tmp_path / "take.abrec", tmp_path / "take.bvh"
    take.write_bytes(b"an old take")
    bvh.write_text("an old bvh")
    base = ["run", "--source", "synthetic", "--headless", "--quiet", "--no-ws", "--no-vmc", "--duration", "1.5"]
    assert cli.main(base + ["--record", str(take)]) == 2
    err = capsys.readouterr().err
    assert "take.abrec already exists" in err and "--overwrite" in err
    assert cli.main(base + ["--bvh", str(bvh)]) == 2
    err = capsys.readouterr().err
    assert "take.bvh already exists" in err and "--overwrite" in err
    assert take.read_bytes() == b"an old take" and bvh.read_text() == "an old bvh"

    assert cli.main(base + ["--record", str(take), "--bvh", str(bvh), "--overwrite"]) == 0
    recording = read_recording(take)
    assert recording.complete and len(recording) > 0
    assert load_bvh(bvh).world_positions().shape[0] > 0


def test_status_line_is_one_line_every_5_s_when_stderr_is_a_pipe():
    """``run ... 2> log.txt``: no carriage returns gluing the updates together, full lines instead."""
    proc = subprocess.run([sys.executable, "-m", "avatar_bridge", "run", "--source", "synthetic", "--headless",
                           "--no-ws", "--no-vmc", "--duration", "6"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    err = proc.stderr.decode()  # bytes: text mode would turn every \r into \n and hide the bug
    assert proc.returncode == 0, err
    assert "\r" not in err
    lines = err.split("\n")[:-1]
    assert err.endswith("\n")
    status = [line for line in lines if "poses/s" in line]
    assert 1 <= len(status) <= 2, lines  # at 5 s (about 6 at the terminal's once a second)
    assert all(line.lstrip()[0].isdigit() and "fps" in line for line in status)  # one status per line
    assert lines[-1].startswith("stopped (duration)")


def test_status_line_is_rewritten_in_place_on_a_terminal():
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "avatar_bridge", "run", "--source", "synthetic", "--headless",
                             "--no-ws", "--no-vmc", "--duration", "2.5"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal itself turns \n into \r\n
    assert err.count("\r") >= 2 and "poses/s" in err  # rewritten in place about once a second
    assert err.rstrip("\n").split("\n")[-1].startswith("stopped (duration)")  # the summary on its own line
