"""BVH files from other tools as sources (issue #16): names with spaces, naming conventions, and
avatar-bridge's own export read back."""

from __future__ import annotations

import re

import numpy as np
import pytest

from avatar_bridge import quat, skeleton
from avatar_bridge.bvh import load_bvh, parse_bvh, write_bvh
from avatar_bridge.keypoints import KEYPOINT_INDEX
from avatar_bridge.mocap import (
    MocapSource,
    coco17_world,
    facing_yaw,
    naming_convention,
    normalize_joint_name,
    yaw_matrix,
)
from conftest import FIXTURES, need

BIPED = FIXTURES / "cases" / "biped.bvh"

# COCO keypoint -> the VRM bone whose joint it is (VRM's leftShoulder is the collarbone: not used).
COCO_BONES = {
    "left_shoulder": "leftUpperArm", "right_shoulder": "rightUpperArm", "left_elbow": "leftLowerArm",
    "right_elbow": "rightLowerArm", "left_wrist": "leftHand", "right_wrist": "rightHand",
    "left_hip": "leftUpperLeg", "right_hip": "rightUpperLeg", "left_knee": "leftLowerLeg",
    "right_knee": "rightLowerLeg", "left_ankle": "leftFoot", "right_ankle": "rightFoot",
}

# Our VRM names -> another tool's names, collarbones included (the trap: "LeftShoulder" is the
# shoulder joint in CMU but the collarbone in Mixamo and VRM).
RENAMES = {
    "mixamo": {"hips": "mixamorig:Hips", "leftShoulder": "mixamorig:LeftShoulder", "rightShoulder": "mixamorig:RightShoulder",
               "leftUpperArm": "mixamorig:LeftArm", "rightUpperArm": "mixamorig:RightArm",
               "leftLowerArm": "mixamorig:LeftForeArm", "rightLowerArm": "mixamorig:RightForeArm",
               "leftHand": "mixamorig:LeftHand", "rightHand": "mixamorig:RightHand",
               "leftUpperLeg": "mixamorig:LeftUpLeg", "rightUpperLeg": "mixamorig:RightUpLeg",
               "leftLowerLeg": "mixamorig:LeftLeg", "rightLowerLeg": "mixamorig:RightLeg",
               "leftFoot": "mixamorig:LeftFoot", "rightFoot": "mixamorig:RightFoot", "head": "mixamorig:Head"},
    "cmu": {"leftShoulder": "LeftCollar", "rightShoulder": "RightCollar", "leftUpperArm": "LeftShoulder",
            "rightUpperArm": "RightShoulder", "leftLowerArm": "LeftElbow", "rightLowerArm": "RightElbow",
            "leftHand": "LeftWrist", "rightHand": "RightWrist", "leftUpperLeg": "LeftHip", "rightUpperLeg": "RightHip",
            "leftLowerLeg": "LeftKnee", "rightLowerLeg": "RightKnee", "leftFoot": "LeftAnkle", "rightFoot": "RightAnkle",
            "head": "Head"},
    "biped": {"hips": "Bip01 Pelvis", "spine": "Bip01 Spine", "leftShoulder": "Bip01 L Clavicle",
              "rightShoulder": "Bip01 R Clavicle", "leftUpperArm": "Bip01 L UpperArm", "rightUpperArm": "Bip01 R UpperArm",
              "leftLowerArm": "Bip01 L Forearm", "rightLowerArm": "Bip01 R Forearm", "leftHand": "Bip01 L Hand",
              "rightHand": "Bip01 R Hand", "leftUpperLeg": "Bip01 L Thigh", "rightUpperLeg": "Bip01 R Thigh",
              "leftLowerLeg": "Bip01 L Calf", "rightLowerLeg": "Bip01 R Calf", "leftFoot": "Bip01 L Foot",
              "rightFoot": "Bip01 R Foot", "head": "Bip01 Head"},
}
RENAMES["uppercase-mixamo"] = {k: v.upper() for k, v in RENAMES["mixamo"].items()}


def motion_arrays(n: int = 20, seed: int = 3):
    rng = np.random.default_rng(seed)
    b = len(skeleton.BONES)
    rotations = quat.from_axis_angle(rng.normal(size=(n, b, 3)), rng.uniform(-0.5, 0.5, size=(n, b)))
    hips = np.array([0.0, 0.95, 0.0]) + rng.normal(size=(n, 3)) * 0.05
    return 10.0 + np.arange(n) / 30.0, hips, rotations


def fk_coco(rotations: np.ndarray, hips: np.ndarray) -> np.ndarray:
    """COCO body keypoints (N, 17, 3) of our skeleton's FK, turned to face +Z on frame 0 like
    coco17_world (face points left at 0)."""
    out = np.zeros((len(rotations), 17, 3))
    for f in range(len(rotations)):
        pos = skeleton.forward_kinematics({n: rotations[f, i] for i, n in enumerate(skeleton.BONE_NAMES)}, hips[f])[0]
        for keypoint, bone in COCO_BONES.items():
            out[f, KEYPOINT_INDEX[keypoint]] = pos[skeleton.BONE_INDEX[bone]]
    return out @ yaw_matrix(-facing_yaw(out[0])).T


BODY = [KEYPOINT_INDEX[k] for k in COCO_BONES]


def test_joint_names_with_spaces_are_read_whole():
    motion = load_bvh(need(BIPED))
    assert motion.names[:2] == ["Bip01 Pelvis", "Bip01 Spine"]
    np.testing.assert_allclose(motion.world_positions(0)[0, 1], [0, 100, 0])
    # a brace on the name's line still opens the block
    text = "HIERARCHY\nROOT Bip01 Pelvis {\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n}\nMOTION\nFrames: 1\nFrame Time: 0.1\n0 1 0\n"
    assert parse_bvh(text).names == ["Bip01 Pelvis"]
    # two joints only: not a full humanoid; the strict mapping says which Biped joints are missing
    with pytest.raises(ValueError, match=r"closest naming, biped, lacks Head, L UpperArm"):
        coco17_world(motion)


def test_a_partial_skeleton_plays_as_a_source(caplog):
    """biped.bvh (pelvis and spine only) plays: the missing parts follow the pelvis and spine in our
    rest pose, so the pelvis's motion moves the whole body; one warning names what is missing."""
    import logging

    caplog.set_level(logging.WARNING, logger="avatar_bridge.mocap")
    with MocapSource(need(BIPED)) as source:
        frame = source.read()
    assert "L UpperArm" in caplog.text and "nearest parent joint" in caplog.text
    person = frame.truth.people[0]
    assert person.scores.min() == 1.0 and frame.truth.joints3d.shape == (17, 3)
    joints = frame.truth.joints3d.astype(np.float64)
    rest = skeleton.forward_kinematics({})[0]
    i = KEYPOINT_INDEX
    # the rest pose's own shape: hip width, and shoulders above hips by our skeleton's torso
    np.testing.assert_allclose(np.linalg.norm(joints[i["left_hip"]] - joints[i["right_hip"]]),
                               np.linalg.norm(rest[skeleton.BONE_INDEX["leftUpperLeg"]] - rest[skeleton.BONE_INDEX["rightUpperLeg"]]),
                               atol=1e-6)
    assert joints[i["left_shoulder"], 1] > joints[i["left_hip"], 1] + 0.3
    # pelvis at 90 cm: the hip keypoints hang off it by our rest offset from hips to the thighs
    hip_drop = rest[skeleton.BONE_INDEX["leftUpperLeg"], 1] - rest[skeleton.BONE_INDEX["hips"], 1]
    np.testing.assert_allclose(joints[i["left_hip"], 1], 0.90 + hip_drop, atol=1e-6)

    # a pelvis that moves and turns moves everything hanging off it
    text = need(BIPED).read_text().replace("Frames: 1", "Frames: 2").rstrip() + "\n50 90 0 90 0 0 0 0 0\n"
    motion = parse_bvh(text, "biped2.bvh")
    points = coco17_world(motion, fps=1.0 / motion.frame_time, partial=True)
    assert points.shape == (2, 17, 3)
    assert abs(np.linalg.norm(points[1, i["left_hip"]] - points[1, i["right_hip"]])
               - np.linalg.norm(points[0, i["left_hip"]] - points[0, i["right_hip"]])) < 1e-9  # rigid
    assert not np.allclose(points[1], points[0] + (points[1, 0] - points[0, 0]))  # turned, not only moved


def test_a_file_without_hips_is_refused():
    text = "HIERARCHY\nROOT Prop\n{\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n}\nMOTION\nFrames: 1\nFrame Time: 0.1\n0 1 0\n"
    with pytest.raises(ValueError, match="no joint for COCO keypoint"):
        coco17_world(parse_bvh(text, "prop.bvh"), partial=True)


def test_name_normalization():
    assert normalize_joint_name("mixamorig:LeftArm") == "leftarm"
    assert normalize_joint_name("Bip01 L UpperArm") == "lupperarm"
    assert normalize_joint_name("Bip001 R Thigh") == "rthigh"
    assert normalize_joint_name("leftUpperArm") == "leftupperarm"


@pytest.mark.parametrize("convention", ["vrm", *RENAMES])
def test_every_naming_convention_reads_the_same_motion(tmp_path, convention):
    """Our export renamed to Mixamo / CMU / Biped names (collarbones too) reads back to the same
    keypoints as our skeleton's forward kinematics: the shoulder keypoint is the upper arm joint in
    every convention, never VRM's leftShoulder (the collarbone)."""
    times, hips, rotations = motion_arrays()
    path = tmp_path / "ours.bvh"
    write_bvh(path, times, hips, rotations, bones="body", units="cm", resample=False)
    text = path.read_text()
    for ours, theirs in RENAMES.get(convention, {}).items():
        text = re.sub(rf"^(\s*(?:ROOT|JOINT)) {ours}$", rf"\1 {theirs}", text, flags=re.MULTILINE)
    motion = parse_bvh(text, f"{convention}.bvh")
    assert naming_convention(motion) == {"uppercase-mixamo": "mixamo"}.get(convention, convention)
    points = coco17_world(motion, fps=1.0 / motion.frame_time)  # the file's own frames
    assert points.shape == (20, 17, 3)
    np.testing.assert_allclose(points[:, BODY], fk_coco(rotations, hips)[:, BODY], atol=1e-4)
    # ...and the file plays as a --source (the way `run --source FILE.bvh` opens it)
    from avatar_bridge.capture import open_source

    renamed = tmp_path / f"{convention}.bvh"
    renamed.write_text(text)
    with open_source(str(renamed), fps=30.0, realtime=False) as source:
        frame = source.read()
    assert frame.truth.joints3d.shape == (17, 3) and frame.truth.people[0].scores[BODY].min() == 1.0


def test_our_own_export_plays_back_as_a_source(tmp_path):
    """CMU walk -> retargeter -> take -> export-bvh -> MocapSource: the source's 3D keypoints are
    those of the exported rig poses (the motion is reproduced), and its 2D keypoints all visible."""
    from test_bvh_export import mocap_take

    from avatar_bridge import cli

    take, live = mocap_take(tmp_path)
    out = tmp_path / "ours.bvh"
    assert cli.main(["export-bvh", str(take), "-o", str(out), "--fps", "30"]) == 0
    with MocapSource(out, fps=1.0 / load_bvh(out).frame_time) as source:  # the file's own frames
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
    assert len(frames) == len(live)
    got = np.stack([f.truth.joints3d for f in frames])
    rotations = np.stack([[r.rotations.get(n, quat.IDENTITY) for n in skeleton.BONE_NAMES] for r in live])
    want = fk_coco(rotations, np.stack([r.hips_position for r in live]))
    error = np.linalg.norm(got[:, BODY] - want[:, BODY], axis=-1)
    print(f"\nown export read back: {len(frames)} frames, max keypoint error {error.max() * 1000:.3f} mm")
    assert error.max() < 1e-3
    travelled = np.linalg.norm(got[-1, BODY].mean(0) - got[0, BODY].mean(0))
    assert travelled > 0.3  # the walk really moves, so the match means something
    assert all(f.truth.people[0].scores[BODY].min() == 1.0 for f in frames)
