"""BVH writer: hierarchy, channels, exact round trip through the BVH reader, resampling, CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar_bridge import cli, quat, skeleton
from avatar_bridge.bvh import (
    BvhRecorder,
    bvh_bone_names,
    load_bvh,
    quaternions_to_bvh_euler,
    resample_motion,
    rig_poses_to_arrays,
    write_bvh,
)
from avatar_bridge.record import RecordingWriter
from avatar_bridge.types import FramePoses, RigPose

B = len(skeleton.BONES)


def random_motion(n: int, seed: int = 0, spread: float = 0.6):
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(n, B, 3))
    angles = rng.uniform(-np.pi, np.pi, size=(n, B)) * spread
    rotations = quat.from_axis_angle(axes, angles)
    hips = np.array([0.0, 0.95, 0.0]) + rng.normal(size=(n, 3)) * 0.3
    times = 100.0 + np.arange(n) / 30.0
    return times, hips, rotations


def fk_positions(rotations_row: np.ndarray, hips: np.ndarray, offsets=None) -> np.ndarray:
    rot = {name: rotations_row[i] for i, name in enumerate(skeleton.BONE_NAMES)}
    return skeleton.forward_kinematics(rot, hips, offsets)[0]


@pytest.mark.parametrize("bones,units", [("body", "cm"), ("full", "m")])
def test_bvh_reader_reproduces_forward_kinematics(tmp_path, bones, units):
    times, hips, rotations = random_motion(12)
    path = tmp_path / "motion.bvh"
    export = write_bvh(path, times, hips, rotations, bones=bones, units=units, resample=False)
    motion = load_bvh(path)
    scale = {"cm": 100.0, "m": 1.0}[units]
    assert export.frames == motion.num_frames == 12
    assert motion.frame_time == pytest.approx(1 / 30)
    world = motion.world_positions() / scale
    names = bvh_bone_names(bones)
    for f in range(12):
        ours = fk_positions(rotations[f], hips[f])
        for name in names:
            np.testing.assert_allclose(world[f, motion.index(name)], ours[skeleton.BONE_INDEX[name]], atol=2e-5)


def test_hierarchy_channels_offsets_and_end_sites(tmp_path):
    times, hips, rotations = random_motion(3)
    path = tmp_path / "motion.bvh"
    write_bvh(path, times, hips, rotations, resample=False)
    text = path.read_text()
    motion = load_bvh(path)
    joints = [n for n, end in zip(motion.names, motion.is_end_site) if not end]
    assert joints[0] == "hips" and sorted(joints) == sorted(skeleton.BODY_BONES)
    assert motion.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
    assert all(motion.channels[motion.index(n)] == ("Zrotation", "Xrotation", "Yrotation") for n in joints[1:])
    np.testing.assert_array_equal(motion.offsets[0], 0.0)  # root placement comes from the channels only
    for name in joints[1:]:
        np.testing.assert_allclose(motion.offsets[motion.index(name)], 100 * skeleton.REST_OFFSETS[skeleton.BONE_INDEX[name]], atol=1e-6)
        assert motion.names[motion.parents[motion.index(name)]] == skeleton.BONES[skeleton.BONE_INDEX[name]].parent
    # every leaf (no child joint) ends in an End Site with a non-zero length, and only leaves do
    has_child = {motion.names[p] for p, end in zip(motion.parents, motion.is_end_site) if p >= 0 and not end}
    ends = {motion.names[p] for p, end in zip(motion.parents, motion.is_end_site) if end}
    assert ends == set(joints) - has_child == {"head", "leftHand", "rightHand", "leftToes", "rightToes"}
    assert np.all(np.linalg.norm(motion.offsets[motion.is_end_site], axis=1) > 1.0)  # > 1 cm
    assert text.startswith("HIERARCHY\nROOT hips\n") and "MOTION\nFrames: 3\nFrame Time: 0.03333333\n" in text


def test_rest_pose_is_the_t_pose(tmp_path):
    path = tmp_path / "rest.bvh"
    write_bvh(path, [0.0], [[0.0, 0.95, 0.0]], np.tile(quat.IDENTITY, (1, B, 1)), units="m")
    motion = load_bvh(path)
    np.testing.assert_allclose(motion.motion[0, 3:], 0.0, atol=1e-9)
    world = motion.world_positions()[0]
    left_hand = world[motion.index("leftHand")]
    np.testing.assert_allclose(left_hand, fk_positions(np.tile(quat.IDENTITY, (B, 1)), np.array([0, 0.95, 0]))[skeleton.BONE_INDEX["leftHand"]], atol=1e-6)
    assert left_hand[0] > 0.5  # the left arm points to +X


def test_resampling_follows_constant_angular_velocity():
    """Jittered capture times, resampled to 30 fps: slerp is exact for a steady spin about one axis."""
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.02, 0.05, size=80)) + 10.0
    omega = 2.0  # rad/s about a fixed axis
    axis = np.array([0.3, 1.0, -0.2])
    rotations = np.tile(quat.IDENTITY, (80, B, 1))
    rotations[:, skeleton.BONE_INDEX["spine"]] = quat.from_axis_angle(axis, omega * (times - times[0]))
    hips = np.stack([times, np.zeros(80), -2 * times], axis=1)
    out_t, out_hips, out_rot = resample_motion(times, hips, rotations, 30.0)
    assert out_t[0] == times[0] and out_t[-1] <= times[-1] and times[-1] - out_t[-1] < 1 / 30
    np.testing.assert_allclose(np.diff(out_t), 1 / 30, atol=1e-9)
    expected = quat.from_axis_angle(axis, omega * (out_t - times[0]))
    assert np.max(quat.angle_between(out_rot[:, skeleton.BONE_INDEX["spine"]], expected)) < 1e-6
    np.testing.assert_allclose(out_hips[:, 0], out_t, atol=1e-9)
    np.testing.assert_allclose(out_hips[:, 2], -2 * out_t, atol=1e-9)
    np.testing.assert_allclose(out_rot[:, skeleton.BONE_INDEX["head"]], np.tile(quat.IDENTITY, (len(out_t), 1)), atol=1e-12)


def test_euler_channels_have_no_360_degree_jumps():
    """A spin of several turns: angles unwrap (continuous) while the rotation stays exact."""
    t = np.linspace(0, 1, 200)
    q = quat.from_axis_angle(np.array([0.0, 1.0, 0.1]), 6 * np.pi * t)[:, None, :]
    angles = quaternions_to_bvh_euler(q)[:, 0]
    assert np.max(np.abs(np.diff(angles, axis=0))) < 20.0
    assert np.ptp(angles[:, 2]) > 720.0  # Y kept turning past +-180


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(lambda v: np.linalg.norm(v) > 0.1))
def test_euler_zxy_reproduces_the_quaternion(values):
    q = quat.normalize(np.array(values))
    z, x, y = np.radians(quaternions_to_bvh_euler(q[None, None, :])[0, 0])
    qz = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), z)
    qx = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), x)
    qy = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), y)
    assert quat.angle_between(quat.mul(quat.mul(qz, qx), qy), q) < 1e-6  # R = Rz @ Rx @ Ry


def test_bad_input_errors(tmp_path):
    times, hips, rotations = random_motion(2)
    with pytest.raises(ValueError, match="units 'inch' are unknown: choose one of m, cm"):
        write_bvh(tmp_path / "a.bvh", times, hips, rotations, units="inch")
    with pytest.raises(ValueError, match="bone set 'arms' is unknown"):
        write_bvh(tmp_path / "a.bvh", times, hips, rotations, bones="arms")
    with pytest.raises(ValueError, match="no motion to write"):
        write_bvh(tmp_path / "a.bvh", times[:0], hips[:0], rotations[:0])
    rotations[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_bvh(tmp_path / "a.bvh", times, hips, rotations)
    with pytest.raises(ValueError, match="go backwards"):
        resample_motion(times[::-1], hips, rotations, 30.0)
    with pytest.raises(ValueError, match="unknown bone 'tail'"):
        rig_poses_to_arrays([RigPose(0.0, 1, np.zeros(3), {"tail": quat.IDENTITY})])


def test_bvh_recorder_follows_one_person(tmp_path, caplog):
    times, hips, rotations = random_motion(20, seed=5)
    path = tmp_path / "live.bvh"
    recorder = BvhRecorder(path, fps=30.0, units="m")
    for i in range(20):
        ours = RigPose(times[i], 4, hips[i], {n: rotations[i, k] for k, n in enumerate(skeleton.BONE_NAMES)})
        other = RigPose(times[i], 9, hips[i] + 5, {})
        recorder.add([ours, other] if i else [ours])
    export = recorder.close()
    assert recorder.track_id == 4 and export.frames == 20
    with caplog.at_level(logging.WARNING):
        assert recorder.close() is export  # closing again neither rewrites nor warns
    assert "no person" not in caplog.text
    with pytest.raises(ValueError, match="unknown bone 'tail'"):
        BvhRecorder(tmp_path / "y.bvh").add(RigPose(0.0, 1, np.zeros(3), {"tail": quat.IDENTITY}))
    motion = load_bvh(path)
    for f in (0, 7, 19):
        ours = fk_positions(rotations[f], hips[f])
        np.testing.assert_allclose(motion.world_positions(f)[0, motion.index("leftHand")], ours[skeleton.BONE_INDEX["leftHand"]], atol=2e-5)
    empty = BvhRecorder(tmp_path / "none.bvh")
    with caplog.at_level(logging.WARNING):
        assert empty.close() is None
    assert not (tmp_path / "none.bvh").exists() and "no person was tracked" in caplog.text
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BvhRecorder(tmp_path / "missing" / "x.bvh")


def test_export_bvh_command_picks_the_track_and_resamples(tmp_path, capsys):
    times, hips, rotations = random_motion(60, seed=9, spread=0.3)
    take = tmp_path / "take.abrec"
    with RecordingWriter(take) as writer:
        for i in range(60):
            t = 50.0 + i / 25.0  # recorded at 25 fps
            main = RigPose(t, 3, hips[i], {n: rotations[i, k] for k, n in enumerate(skeleton.BODY_BONES)})
            extra = [RigPose(t, 8, hips[i], {})] if i % 4 == 0 else []
            writer.write(FramePoses(i, t, 640, 480, []), [main] + extra)
    out = tmp_path / "take.bvh"
    assert cli.main(["export-bvh", str(take), "-o", str(out), "--fps", "50", "--units", "m"]) == 0
    assert "track 3, 119 frames at 50 fps" in capsys.readouterr().out
    motion = load_bvh(out)
    assert motion.num_frames == 119 and motion.frame_time == pytest.approx(0.02)
    # Every second output frame falls on a recorded frame: positions match FK there exactly.
    for f in (0, 40, 118):
        i = f // 2
        row = np.tile(quat.IDENTITY, (B, 1))
        for k, n in enumerate(skeleton.BODY_BONES):
            row[skeleton.BONE_INDEX[n]] = rotations[i, k]
        ours = fk_positions(row, hips[i])
        world = motion.world_positions(f)[0]
        for name in ("head", "leftHand", "rightFoot"):
            np.testing.assert_allclose(world[motion.index(name)], ours[skeleton.BONE_INDEX[name]], atol=1e-4)
    assert cli.main(["export-bvh", str(take), "-o", str(out), "--track", "8", "--overwrite"]) == 0
    assert "track 8, " in capsys.readouterr().out


# --- issue #7 item 5: mocap -> retarget -> record -> BVH -> re-import ------------------------------


def mocap_take(tmp_path, frames: int = 120):
    """CMU walk through the mocap source and the retargeter, recorded; returns (take, live RigPoses)."""
    from conftest import MOCAP, need

    from avatar_bridge.config import RetargetConfig
    from avatar_bridge.mocap import MocapSource
    from avatar_bridge.retarget import Retargeter

    take = tmp_path / "cmu.abrec"
    live = []
    retargeter = Retargeter(RetargetConfig())
    with MocapSource(need(MOCAP), fps=30.0) as source, RecordingWriter(take) as writer:
        for _ in range(frames):
            frame = source.read()
            if frame is None:
                break
            person = frame.truth.people[0]
            rig = retargeter.solve(person.keypoints, person.scores, frame.timestamp, (frame.width, frame.height), person.track_id)
            writer.write(FramePoses(frame.index, frame.timestamp, frame.width, frame.height, [person]), [rig])
            live.append(rig)
    return take, live


def bone_directions(positions: np.ndarray, names) -> np.ndarray:
    """Unit vectors parent joint -> joint for every named bone except the root, (..., len-1, 3)."""
    child = [skeleton.BONE_INDEX[n] for n in names if n != "hips"]
    parent = [skeleton.PARENT_INDEX[i] for i in child]
    d = positions[..., child, :] - positions[..., parent, :]
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_mocap_round_trip_keeps_bone_directions(tmp_path):
    take, live = mocap_take(tmp_path)
    out = tmp_path / "cmu.bvh"
    assert cli.main(["export-bvh", str(take), "-o", str(out), "--fps", "30"]) == 0
    motion = load_bvh(out)
    assert motion.num_frames == len(live)  # same rate as the take: frames line up one to one
    world = motion.world_positions() / 100.0
    names = skeleton.BODY_BONES
    columns = [motion.index(n) for n in names]
    bvh_positions = np.zeros((len(live), len(skeleton.BONES), 3))
    bvh_positions[:, [skeleton.BONE_INDEX[n] for n in names]] = world[:, columns]
    live_positions = np.stack([skeleton.forward_kinematics(r.rotations, r.hips_position)[0] for r in live])
    a, b = bone_directions(bvh_positions, names), bone_directions(live_positions, names)
    angle = np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))
    print(f"\nCMU round trip: {len(live)} frames, max bone-direction error {angle.max():.5f} deg")
    assert angle.max() < 0.01
    np.testing.assert_allclose(world[:, motion.index("hips")], np.stack([r.hips_position for r in live]), atol=1e-5)
    moved = np.degrees(np.arccos(np.clip(np.sum(b[0] * b, axis=-1), -1, 1))).max()
    assert moved > 20.0  # the take really moves (a walk), so the comparison means something


def test_write_bvh_takes_rig_poses_in_any_order(tmp_path):
    """The pipeline's `run --bvh` passes the driver's RigPoses; late output ticks are put in order."""
    times, hips, rotations = random_motion(10, seed=2)
    poses = [RigPose(times[i], 1, hips[i], {n: rotations[i, k] for k, n in enumerate(skeleton.BONE_NAMES)}) for i in range(10)]
    poses[3], poses[4] = poses[4], poses[3]
    export = write_bvh(tmp_path / "live.bvh", poses, fps=30.0, units="m")
    assert export.frames == 10
    motion = load_bvh(tmp_path / "live.bvh")
    for f in (3, 4, 9):
        ours = fk_positions(rotations[f], hips[f])
        np.testing.assert_allclose(motion.world_positions(f)[0, motion.index("rightFoot")], ours[skeleton.BONE_INDEX["rightFoot"]], atol=2e-5)
    with pytest.raises(ValueError, match="or a list of RigPoses alone"):
        write_bvh(tmp_path / "x.bvh", times, hips)


def test_bvh_recorder_from_the_record_config(tmp_path):
    from avatar_bridge.config import RecordConfig

    config = RecordConfig(bvh=str(tmp_path / "run.bvh"), bvh_fps=60.0, bvh_track=5, bvh_bones="full", bvh_units="m")
    recorder = BvhRecorder.from_config(config)
    assert (recorder.track_id, recorder.fps, recorder.bones, recorder.units) == (5, 60.0, "full", "m")
    times, hips, rotations = random_motion(4, seed=1)
    for i in range(4):
        recorder.add([RigPose(times[i], 4, hips[i], {}), RigPose(times[i], 5, hips[i], {"head": rotations[i, 5]})])
    export = recorder.close()
    assert export.frames == 7 and export.joints == len(skeleton.BONES)  # 0.1 s at 60 fps
    with pytest.raises(FileExistsError, match="already exists"):
        BvhRecorder.from_config(config)
    config.overwrite = True
    assert BvhRecorder.from_config(config).track_id == 5
    with pytest.raises(ValueError, match="record.bvh is empty"):
        BvhRecorder.from_config(RecordConfig())


def test_export_keeps_the_performers_sides_for_old_mirrored_takes(tmp_path):
    """A take whose header says it stored the mirror image (older takes) exports mirrored back, so
    every BVH has the performer's own sides; --mirror writes the selfie image of a new take."""
    from avatar_bridge.bvh import load_bvh
    from avatar_bridge.commands.export_bvh import export_bvh
    from avatar_bridge.record import RecordingHeader

    lifted = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), np.radians(50))  # one arm raised
    rig = lambda t: RigPose(t, 1, np.array([0.1, 0.95, 0.0]), {"leftUpperArm": lifted})
    mirrored = lambda t: RigPose(t, 1, np.array([-0.1, 0.95, 0.0]), skeleton.mirror_rotations({"leftUpperArm": lifted}))
    takes = {}
    for name, handedness, make in (("new", "performer", rig), ("old", "mirrored", mirrored)):
        takes[name] = tmp_path / f"{name}.abrec"
        with RecordingWriter(takes[name], RecordingHeader(handedness=handedness)) as writer:
            for i in range(5):
                writer.write(FramePoses(i, i / 30, 640, 480, []), [make(i / 30)])
    out = {}
    for name, mirror in (("new", False), ("old", False), ("new", True)):
        path = tmp_path / f"{name}{int(mirror)}.bvh"
        export_bvh(takes[name], path, fps=30, mirror=mirror)
        out[(name, mirror)] = load_bvh(path).world_positions()
    new, old, selfie = out[("new", False)], out[("old", False)], out[("new", True)]
    np.testing.assert_allclose(old, new, atol=1e-4)  # the old take comes out with the performer's sides
    bvh = load_bvh(tmp_path / "new0.bvh")
    hand_l, hand_r = bvh.index("leftLowerArm"), bvh.index("rightLowerArm")
    assert new[0, hand_l, 1] > new[0, hand_r, 1] + 0.1  # the performer's left arm is the raised one
    assert selfie[0, hand_r, 1] > selfie[0, hand_l, 1] + 0.1  # --mirror: the avatar's right one
