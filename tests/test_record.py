"""Recording format (.abrec): round trip, crash safety, damaged files, playback timing, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avatar_bridge import cli, quat, skeleton
from avatar_bridge.record import (
    FORMAT_VERSION,
    MAGIC,
    RecordingError,
    RecordingHeader,
    RecordingWriter,
    read_recording,
    summarize_recording,
)
from avatar_bridge.playback import PlaybackSource, play_recording
from avatar_bridge.types import FramePoses, Pose2D, RigPose

ROOT = Path(__file__).resolve().parent.parent
FPS = 30.0
T0 = 5000.0  # monotonic-looking start time


def walk_rig(t: float, track_id: int = 1, phase: float = 0.0) -> RigPose:
    """A smooth, walk-like pose on every body bone (what a retargeter would emit)."""
    rotations = {}
    for k, name in enumerate(skeleton.BODY_BONES):
        axis = np.array([np.sin(k), np.cos(k * 0.7), 0.3 * np.sin(2 * k)])
        angle = 0.4 * np.sin(2 * np.pi * 0.9 * t + k + phase)
        rotations[name] = quat.from_axis_angle(axis, angle)
    hips = np.array([0.3 * np.sin(0.5 * t + phase), 0.95 + 0.02 * np.sin(4 * t), 0.5 * t])
    confidence = {name: 0.5 + 0.4 * np.cos(t + k) ** 2 for k, name in enumerate(skeleton.BODY_BONES)}
    return RigPose(t, track_id, hips, rotations, confidence, tracking=bool(int(t * 3) % 7))


def person(t: float, track_id: int = 1, with_box: bool = True) -> Pose2D:
    base = np.stack([np.linspace(100, 500, 17), np.linspace(50, 650, 17)], axis=1)
    keypoints = (base + 20 * np.sin(t + np.arange(17))[:, None]).astype(np.float32)
    scores = (0.5 + 0.5 * np.cos(t + np.arange(17)) ** 2).astype(np.float32)
    box = np.array([90, 40, 520, 660], np.float32) if with_box else None
    return Pose2D(keypoints, scores, box, track_id)


def frame_at(i: int, people: int = 1, rigs: int | None = None) -> tuple[FramePoses, list[RigPose]]:
    t = T0 + i / FPS
    rigs = people if rigs is None else rigs
    poses = FramePoses(i, t, 1280, 720, [person(t, k + 1, with_box=(i + k) % 3 != 0) for k in range(people)])
    return poses, [walk_rig(t, k + 1, phase=k) for k in range(rigs)]


def write_take(path: Path, frames: int, people: int = 1, **writer_options) -> list[tuple[FramePoses, list[RigPose]]]:
    header = RecordingHeader(source={"spec": "test", "width": 1280, "height": 720, "fps": FPS}, fps=FPS,
                             calibration={"height_m": 1.7, "scale": np.float32(1.5)})
    written = []
    with RecordingWriter(path, header, **writer_options) as writer:
        for i in range(frames):
            item = frame_at(i, people)
            writer.write(*item)
            written.append(item)
    return written


def assert_same_frame(read, expected) -> None:
    poses, rigs = expected
    assert read.poses.frame_index == poses.frame_index
    assert read.poses.timestamp == poses.timestamp  # float64 kept exactly
    assert (read.poses.width, read.poses.height) == (poses.width, poses.height)
    assert len(read.poses.people) == len(poses.people)
    for a, b in zip(read.poses.people, poses.people):
        assert a.track_id == b.track_id
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.scores, b.scores)
        if b.box is None:
            assert a.box is None
        else:
            np.testing.assert_array_equal(a.box, b.box)
    assert len(read.rigs) == len(rigs)
    for a, b in zip(read.rigs, rigs):
        assert (a.track_id, a.timestamp, a.tracking) == (b.track_id, b.timestamp, b.tracking)
        np.testing.assert_allclose(a.hips_position, b.hips_position, atol=1e-6)
        assert set(a.rotations) == set(b.rotations)
        for name, q in b.rotations.items():
            np.testing.assert_allclose(a.rotations[name], q, atol=1e-7)
        assert set(a.confidence) == set(b.confidence)
        for name, c in b.confidence.items():
            assert abs(a.confidence[name] - c) < 1e-3  # float16


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_keeps_every_field(tmp_path, compress):
    path = tmp_path / "take.abrec"
    written = write_take(path, 50, people=2, compress=compress, flush_seconds=0.2)
    recording = read_recording(path)
    assert recording.complete and recording.damage is None
    assert len(recording) == 50
    for read, expected in zip(recording.frames(), written):
        assert_same_frame(read, expected)
    header = recording.header
    assert header.version == FORMAT_VERSION
    assert header.bones == list(skeleton.BONE_NAMES)
    np.testing.assert_array_equal(header.rest_offsets, skeleton.REST_OFFSETS)
    assert header.parents[skeleton.BONE_INDEX["leftHand"]] == "leftLowerArm"
    assert header.coordinates["up"] == "+Y" and header.coordinates["forward"] == "+Z"
    assert header.calibration == {"height_m": 1.7, "scale": 1.5}
    assert header.source["spec"] == "test"
    assert recording.track_counts() == {1: 50, 2: 50}
    track = recording.rig_track(2)
    expected = [rigs[1] for _, rigs in written]
    np.testing.assert_array_equal(track.timestamps, [r.timestamp for r in expected])
    np.testing.assert_allclose(track.hips, [r.hips_position for r in expected], atol=1e-6)
    spine, jaw = skeleton.BONE_INDEX["spine"], skeleton.BONE_INDEX["jaw"]
    np.testing.assert_allclose(track.rotations[:, spine], [r.rotations["spine"] for r in expected], atol=1e-7)
    np.testing.assert_array_equal(track.rotations[:, jaw], np.tile(quat.IDENTITY, (50, 1)))  # not in the pose: rest
    np.testing.assert_allclose(track.confidence[:, spine], [r.confidence["spine"] for r in expected], atol=1e-3)
    assert np.all(np.isnan(track.confidence[:, jaw]))
    assert list(track.tracking) == [r.tracking for r in expected]


def test_compression_makes_files_smaller(tmp_path):
    write_take(tmp_path / "z.abrec", 90, compress=True)
    write_take(tmp_path / "raw.abrec", 90, compress=False)
    assert (tmp_path / "z.abrec").stat().st_size < 0.8 * (tmp_path / "raw.abrec").stat().st_size


def test_one_hour_at_30fps_fits_in_500_mb(tmp_path):
    """Size requirement of issue #7: measure one minute of one person and extrapolate to an hour."""
    path = tmp_path / "minute.abrec"
    write_take(path, int(60 * FPS))
    per_minute = path.stat().st_size
    print(f"\n.abrec size, 1 person, 30 fps, zlib: {per_minute / 1e6:.3f} MB per minute, {per_minute * 60 / 1e6:.1f} MB per hour")
    assert per_minute * 60 < 500e6


def test_calibration_during_take_is_kept(tmp_path):
    path = tmp_path / "calib.abrec"
    with RecordingWriter(path) as writer:
        writer.write(*frame_at(0))
        writer.write_calibration({"arm_length": np.float64(0.6)}, timestamp=T0 + 0.01)
        writer.write(*frame_at(1))
    recording = read_recording(path)
    assert len(recording) == 2
    assert recording.calibrations == [{"timestamp": T0 + 0.01, "calibration": {"arm_length": 0.6}}]


def test_writer_refuses_to_replace_a_take_and_bad_input(tmp_path):
    path = tmp_path / "take.abrec"
    write_take(path, 3)
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        RecordingWriter(path)
    RecordingWriter(path, overwrite=True).close()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RecordingWriter(tmp_path / "missing" / "take.abrec")
    with RecordingWriter(tmp_path / "bad.abrec") as writer:
        poses, rigs = frame_at(0)
        rigs[0].rotations["tail"] = quat.IDENTITY
        with pytest.raises(ValueError, match="'tail' is not in the recording's skeleton"):
            writer.write(poses, rigs)
        poses.people[0].keypoints = np.zeros((5, 2))
        with pytest.raises(ValueError, match=r"shape \(5, 2\).*\(17, 2\)"):
            writer.write(poses, [])


# --- damaged files ----------------------------------------------------------------------------------


def test_truncated_file_yields_every_complete_block(tmp_path):
    path = tmp_path / "take.abrec"
    write_take(path, 60, flush_seconds=0.25)  # a block every 9 frames (8 periods = 0.267 s >= 0.25 s)
    data = path.read_bytes()
    full = read_recording(path)
    assert full.complete and len(full) == 60
    header_end = data.index(b"FRMZ")  # the first frame block starts here
    assert read_recording_bytes(tmp_path, data[:header_end]).damage is None  # header only: empty, intact
    counts = []
    for cut in range(header_end + 1, len(data), len(data) // 40):  # never an error once the header is in
        cut_rec = read_recording_bytes(tmp_path, data[:cut])
        assert (len(cut_rec) % 9 == 0 or len(cut_rec) == 60) and not cut_rec.complete  # whole blocks only
        assert "cut short" in cut_rec.damage
        last = None
        for last in cut_rec.frames():
            pass
        if last is not None:
            assert_same_frame(last, frame_at(last.poses.frame_index))
        counts.append(len(cut_rec))
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] >= 54
    # Cut inside the END chunk: every frame is there, the take is just not marked complete.
    end_cut = read_recording_bytes(tmp_path, data[:-3])
    assert len(end_cut) == 60 and not end_cut.complete


def read_recording_bytes(tmp_path: Path, data: bytes):
    path = tmp_path / "cut.abrec"
    path.write_bytes(data)
    return read_recording(path)


def test_corrupt_block_stops_reading_there(tmp_path, caplog):
    path = tmp_path / "take.abrec"
    write_take(path, 40, flush_seconds=0.25, compress=False)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte in a middle block
    path.write_bytes(bytes(data))
    recording = read_recording(path)
    assert 0 < len(recording) < 40
    assert "CRC" in recording.damage
    assert any("CRC" in r.getMessage() and "read the" in r.getMessage() for r in caplog.records)


def test_not_a_recording_newer_version_and_header_damage(tmp_path):
    text = tmp_path / "notes.abrec"
    text.write_text("hello\n")
    with pytest.raises(RecordingError, match="is not an avatar-bridge recording"):
        read_recording(text)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_recording(tmp_path / "nope.abrec")
    path = tmp_path / "take.abrec"
    write_take(path, 5)
    data = path.read_bytes()
    newer = data[:8] + struct.pack("<H", FORMAT_VERSION + 1) + data[10:]
    (tmp_path / "newer.abrec").write_bytes(newer)
    with pytest.raises(RecordingError, match=f"version {FORMAT_VERSION + 1}, newer .* upgrade avatar-bridge"):
        read_recording(tmp_path / "newer.abrec")
    (tmp_path / "stub.abrec").write_bytes(data[:40])
    with pytest.raises(RecordingError, match="before its header ends"):
        read_recording(tmp_path / "stub.abrec")
    with pytest.raises(RecordingError, match="before its header ends"):
        PlaybackSource(tmp_path / "stub.abrec")


def test_no_person_and_unknown_track_errors(tmp_path):
    empty = tmp_path / "empty.abrec"
    with RecordingWriter(empty) as writer:
        for i in range(10):
            writer.write(FramePoses(i, T0 + i / FPS, 640, 480, []), [])
    recording = read_recording(empty)
    assert len(recording) == 10
    with pytest.raises(RecordingError, match="has no person in it"):
        recording.rig_track()
    with pytest.raises(RecordingError, match="has no person in it"):
        summarize_recording(empty).require_person()
    path = tmp_path / "two.abrec"
    write_take(path, 10, people=2)
    with pytest.raises(RecordingError, match=r"track 7 is not in .*: its tracks are 1 \(10 frames\), 2 \(10 frames\); pass --track"):
        read_recording(path).rig_track(7)


CRASH_WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, sys.argv[3])
from test_record import frame_at
from avatar_bridge.record import RecordingWriter
writer = RecordingWriter(sys.argv[1], flush_seconds=0.25)
flushed = 0
for i in range(100000):
    writer.write(*frame_at(i))
    if writer.frames_flushed != flushed:
        flushed = writer.frames_flushed
        print(flushed, flush=True)
    time.sleep(0.002)
"""


def test_take_survives_sigkill(tmp_path):
    """A writer killed mid-take leaves a file that reads back with every frame it flushed."""
    path = tmp_path / "killed.abrec"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(path), str(ROOT), str(ROOT / "tests")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        reported = 0
        deadline = time.monotonic() + 60
        while reported < 60 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reported = int(line)
        assert reported >= 60, proc.stderr.read() if proc.poll() is not None else "writer too slow"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    recording = read_recording(path)
    assert not recording.complete
    assert len(recording) >= reported  # every frame reported as flushed is there
    assert len(recording) % 9 == 0  # whole blocks of 9 frames (see above), nothing partial
    for read in recording.frames():
        assert_same_frame(read, frame_at(read.poses.frame_index))
    assert [f.poses.frame_index for f in recording.frames()] == list(range(len(recording)))


# --- playback ---------------------------------------------------------------------------------------


def test_playback_keeps_the_original_timing(tmp_path):
    path = tmp_path / "take.abrec"
    written = write_take(path, 30)  # 0.967 s
    with PlaybackSource(path, speed=2.0) as source:
        assert (source.width, source.height, source.fps) == (1280, 720, FPS)
        frames, arrival = [], []
        start = time.monotonic()
        while (frame := source.read()) is not None:
            frames.append(frame)
            arrival.append(time.monotonic())
    elapsed = arrival[-1] - start
    assert len(frames) + sum(f.dropped for f in frames) == 30
    assert 0.40 <= elapsed <= 0.9, elapsed  # 29 frame periods at double speed = 0.483 s (1x would be 0.967 s)
    ts = np.array([f.timestamp for f in frames])
    recorded = np.array([f.truth.recorded_timestamp for f in frames])
    np.testing.assert_allclose(ts - ts[0], (recorded - recorded[0]) / 2.0, atol=1e-9)
    assert np.all(ts <= np.array(arrival) + 1e-6)  # never handed out before its time
    for frame in frames:
        expected_poses, expected_rigs = written[int(round((frame.truth.recorded_timestamp - T0) * FPS))]
        assert frame.truth.rigs[0].timestamp == pytest.approx(frame.timestamp)
        for name, q in expected_rigs[0].rotations.items():
            np.testing.assert_allclose(frame.truth.rigs[0].rotations[name], q, atol=1e-7)
        np.testing.assert_array_equal(frame.truth.people[0].keypoints, expected_poses.people[0].keypoints)


def test_playback_loops_and_skips_when_consumer_is_slow(tmp_path):
    path = tmp_path / "take.abrec"
    write_take(path, 10)
    with PlaybackSource(path, loop=True, realtime=False) as source:
        frames = [source.read() for _ in range(25)]
    assert source.loops == 2
    ts = np.array([f.timestamp for f in frames])
    np.testing.assert_allclose(np.diff(ts), 1.0 / FPS, atol=1e-9)  # the loop seam keeps the frame rate
    assert [f.index for f in frames] == list(range(25))
    with PlaybackSource(path) as source:
        first = source.read()
        time.sleep(0.2)  # six frame periods late
        late = source.read()
        rest = []
        while (frame := source.read()) is not None:
            rest.append(frame)
    assert late.dropped >= 4
    assert 1 + 1 + late.dropped + len(rest) + sum(f.dropped for f in rest) == 10
    assert first.truth.recorded_timestamp == T0


def test_play_through_vmc_over_loopback(tmp_path):
    """`avatar-bridge play` sends the take's rig to a real UDP VMC receiver."""
    path = tmp_path / "take.abrec"
    write_take(path, 20)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5.0)
    port = receiver.getsockname()[1]
    try:
        rc = cli.main(["play", str(path), "--vmc", f"127.0.0.1:{port}", "--no-ws", "--speed", "4"])
        assert rc == 0
        datagrams = []
        receiver.settimeout(0.5)
        while True:
            try:
                datagrams.append(receiver.recv(65536))
            except socket.timeout:
                break
    finally:
        receiver.close()
    payload = b"".join(datagrams)
    assert b"/VMC/Ext/Bone/Pos" in payload and b"LeftUpperArm" in payload and b"/VMC/Ext/T" in payload


def test_cli_errors_are_one_line(tmp_path, capsys):
    bogus = tmp_path / "bogus.abrec"
    bogus.write_bytes(b"RIFF....")
    assert cli.main(["export-bvh", str(bogus), "-o", str(tmp_path / "x.bvh")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not an avatar-bridge recording" in err
    path = tmp_path / "take.abrec"
    write_take(path, 5)
    assert cli.main(["export-bvh", str(path), "-o", str(tmp_path / "x.bvh"), "--track", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "track 9 is not in" in err
    assert cli.main(["play", str(path), "--no-vmc", "--no-ws"]) == 2
    assert "every output is disabled" in capsys.readouterr().err


def test_pause_holds_the_take_without_skipping(tmp_path):
    path = tmp_path / "take.abrec"
    write_take(path, 12)
    with PlaybackSource(path) as source:
        frames = [source.read() for _ in range(4)]
        source.pause(True)
        time.sleep(0.3)  # nine frame periods
        source.pause(False)
        while (frame := source.read()) is not None:
            frames.append(frame)
    assert len(frames) == 12 and sum(f.dropped for f in frames) == 0
    gap = frames[4].timestamp - frames[3].timestamp
    assert gap > 0.3  # output timestamps follow the wall clock through the pause


@pytest.mark.slow
def test_play_through_websocket_to_a_real_client(tmp_path):
    """`avatar-bridge play` serves the take over WebSocket protocol v1; a real client receives it."""
    from websockets.sync.client import connect

    path = tmp_path / "take.abrec"
    written = write_take(path, 30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "avatar_bridge", "play", str(path), "--no-vmc", "--ws-port", "0", "--loop", "--duration", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("web viewer: "):
                url = "ws" + line.split("web viewer: ", 1)[1].strip()[4:]
                break
        assert url, "play did not print the viewer URL"
        with connect(url, open_timeout=10) as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello" and hello["version"] == 1
            frames = [json.loads(ws.recv(timeout=10)) for _ in range(10)]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    # The take keeps the performer's own sides; the viewer gets the selfie mirror (retarget.mirror,
    # on by default): its leftUpperArm is the recorded rightUpperArm reflected across the YZ plane.
    recorded = np.array([r.rotations["rightUpperArm"] * [1.0, -1.0, -1.0, 1.0] for _, rigs in written for r in rigs])
    for message in frames:
        assert message["type"] == "frame" and message["image"] == {"width": 1280, "height": 720}
        person = message["people"][0]
        assert person["id"] == 1 and len(person["keypoints"]) == 17
        q = np.array(person["pose"]["leftUpperArm"]["rotation"])
        assert np.min(np.abs(recorded - q).max(axis=1)) < 2e-6  # a recorded rotation, sent unchanged (6 decimals)


def test_record_command_runs_the_pipeline(tmp_path, capsys):
    """`record -o` = `run --record`: the synthetic performer through the whole pipeline into a take."""
    take = tmp_path / "walk.abrec"
    argv = ["record", "-o", str(take), "--source", "synthetic", "--max-frames", "40",
            "--headless", "--quiet", "--no-ws", "--no-vmc"]
    assert cli.main(argv) == 0
    recording = read_recording(take)
    assert recording.complete and len(recording) >= 3  # the pipeline records at its output clock (30 Hz)
    assert recording.track_counts() and recording.header.source["spec"] == "synthetic"
    rig = next(f for f in recording.frames() if f.rigs).rigs[0]
    assert "leftUpperArm" in rig.rotations and np.all(np.isfinite(rig.hips_position))
    assert cli.main(["export-bvh", str(take), "-o", str(tmp_path / "walk.bvh")]) == 0
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    short = argv[:argv.index("40")] + ["3"] + argv[argv.index("40") + 1:]
    assert cli.main(short + ["--overwrite"]) == 0
    assert read_recording(take).complete  # a new take replaced the old one
    assert cli.main(["record", "-o", str(tmp_path / "walk.mp4"), "--source", "synthetic"]) == 2
    assert "must end in .abrec" in capsys.readouterr().err


def test_writer_from_the_record_config(tmp_path):
    from avatar_bridge.config import RecordConfig

    config = RecordConfig(path=str(tmp_path / "cfg.abrec"), compress=False, flush_seconds=0.0, fsync=True)
    writer = RecordingWriter.from_config(config)
    writer.write(*frame_at(0))
    assert writer.frames_flushed == 1  # flush_seconds 0: every frame is its own block
    writer.close()
    assert b"FRMS" in (tmp_path / "cfg.abrec").read_bytes() and b"FRMZ" not in (tmp_path / "cfg.abrec").read_bytes()
    with pytest.raises(FileExistsError):
        RecordingWriter.from_config(config)
    config.overwrite = True
    RecordingWriter.from_config(config).close()
    with pytest.raises(ValueError, match="record.path is empty"):
        RecordingWriter.from_config(RecordConfig())


def test_writer_flushes_when_the_clock_steps_back_and_rejects_nan(tmp_path):
    writer = RecordingWriter(tmp_path / "clock.abrec", flush_seconds=0.5)
    poses, rigs = frame_at(0)
    writer.write(poses, rigs)
    poses.timestamp -= 10.0  # e.g. a source restarted its clock
    writer.write(poses, rigs)
    assert writer.frames_flushed == 2
    poses.timestamp = float("nan")
    with pytest.raises(ValueError, match="timestamp nan: timestamps must be finite"):
        writer.write(poses, rigs)
    writer.close()
    assert len(read_recording(tmp_path / "clock.abrec")) == 2


def test_play_controls_select_the_driver_and_pause(tmp_path):
    """WebSocket control messages (parsed by the real protocol module) steer playback."""
    import threading

    from avatar_bridge.protocol import parse_control
    from avatar_bridge.playback import PlaybackSampler

    path = tmp_path / "two.abrec"
    write_take(path, 45, people=2)  # 1.5 s
    latest = PlaybackSampler()
    latest.apply_control(parse_control('{"type": "select", "id": 2}'))
    sent = []
    done = threading.Event()

    def pause_then_resume():
        time.sleep(0.3)
        latest.apply_control(parse_control('{"type": "pause", "paused": true}'))
        time.sleep(0.5)
        latest.apply_control(parse_control('{"type": "pause", "paused": false}'))
        done.set()

    threading.Thread(target=pause_then_resume, daemon=True).start()
    started = time.monotonic()
    result = play_recording(path, [(sent.append, 30.0)], latest=latest)
    elapsed = time.monotonic() - started
    assert done.is_set() and 1.8 <= elapsed <= 3.5, elapsed  # 1.47 s of take + 0.5 s paused
    assert result["frames"] + result["dropped"] == 45
    assert sent and all(frame.driving_person().track_id == 2 for frame in sent)
    assert {p.track_id for p in sent[-1].people} == {1, 2}
    last_rig = sent[-1].driving_person().rig
    np.testing.assert_allclose(last_rig.rotations["spine"], frame_at(44, people=2)[1][1].rotations["spine"], atol=1e-7)


def test_export_of_a_cut_off_take_exports_what_it_holds(tmp_path, capsys):
    path = tmp_path / "take.abrec"
    write_take(path, 60, flush_seconds=0.25)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])  # lose the end, as a killed writer would
    assert cli.main(["export-bvh", str(path), "-o", str(tmp_path / "cut.bvh")]) == 0
    out = capsys.readouterr().out
    assert "track 1, 54 frames at 30 fps (1.80 s)" in out and "recording damaged: the last chunk is cut short" in out
    summary = summarize_recording(path)
    assert (summary.frames, summary.complete, summary.tracks) == (54, False, {1: 54})


def test_a_calibration_finished_during_the_take_is_recorded(tmp_path):
    """The synthetic performer stands still first: its calibration lands in the take with its track id."""
    take = tmp_path / "calibrated.abrec"
    argv = ["record", "-o", str(take), "--source", "synthetic", "--duration", "3",
            "--headless", "--quiet", "--no-ws", "--no-vmc"]
    assert cli.main(argv) == 0
    calibrations = read_recording(take).calibrations
    assert len(calibrations) == 1
    entry = calibrations[0]["calibration"]
    assert entry["track_id"] >= 0 and entry["segments"]["torso"] > 0 and entry["body_px"] > 0


def test_header_says_which_hand_a_take_keeps(tmp_path):
    """New takes store the performer's own left and right; a header without the key is an older
    take that stored the selfie mirror image (``play`` then shows it as it is)."""
    path = tmp_path / "take.abrec"
    write_take(path, 3)
    header = summarize_recording(path).header
    assert header.handedness == "performer" and header.to_json()["handedness"] == "performer"
    old = header.to_json()
    del old["handedness"], old["timeline"]
    again = RecordingHeader.from_json(old, "old take")
    assert again.handedness == "mirrored" and again.timeline == "clock"
