import numpy as np

from avatar_bridge import quat, skeleton


def test_bone_set_matches_unity_humanoid():
    assert len(skeleton.BONES) == 55
    assert len(set(skeleton.BONE_NAMES)) == 55
    unity = {skeleton.unity_name(b) for b in skeleton.BONE_NAMES}
    for name in ("Hips", "UpperChest", "LeftThumbProximal", "RightLittleDistal", "Jaw", "LeftEye"):
        assert name in unity
    assert skeleton.unity_name("leftThumbMetacarpal") == "LeftThumbProximal"
    assert skeleton.unity_name("rightThumbDistal") == "RightThumbDistal"


def test_parents_come_before_children_and_offsets_nonzero():
    for i, p in enumerate(skeleton.PARENT_INDEX):
        assert p < i
        if p >= 0:
            assert np.linalg.norm(skeleton.REST_OFFSETS[i]) > 0.01


def test_rest_pose_fk_left_arm_points_plus_x_and_is_symmetric():
    pos, rot = skeleton.forward_kinematics({})
    i = skeleton.BONE_INDEX
    assert pos[i["leftHand"], 0] > pos[i["leftUpperArm"], 0] > 0
    np.testing.assert_allclose(pos[i["leftHand"]] * [-1, 1, 1], pos[i["rightHand"]])
    assert pos[i["head"], 1] > pos[i["hips"], 1] > pos[i["leftFoot"], 1]
    np.testing.assert_allclose(rot, np.tile(quat.IDENTITY, (55, 1)))


def test_fk_lowering_left_arm():
    q = quat.from_axis_angle([0, 0, 1], -np.pi / 2)  # +X arm rotated down to -Y
    pos, _ = skeleton.forward_kinematics({"leftUpperArm": q})
    i = skeleton.BONE_INDEX
    d = pos[i["leftHand"]] - pos[i["leftUpperArm"]]
    np.testing.assert_allclose(d / np.linalg.norm(d), [0, -1, 0], atol=1e-9)


def test_unity_conversion_is_a_mirror_that_preserves_rotation_action():
    rng = np.random.default_rng(0)
    q = quat.normalize(rng.normal(size=4))
    v = rng.normal(size=3)
    mirrored = skeleton.to_unity_position(quat.rotate(q, v))
    np.testing.assert_allclose(quat.rotate(skeleton.to_unity_rotation(q), skeleton.to_unity_position(v)), mirrored, atol=1e-12)


def test_vrm0_conversion_is_a_half_turn_about_y():
    rng = np.random.default_rng(1)
    q = quat.normalize(rng.normal(size=4))
    v = rng.normal(size=3)
    turned = skeleton.to_three_vrm0_position(quat.rotate(q, v))
    np.testing.assert_allclose(quat.rotate(skeleton.to_three_vrm0_rotation(q), skeleton.to_three_vrm0_position(v)), turned, atol=1e-12)


def test_mirror_rotations_swaps_sides():
    q = quat.from_axis_angle([0, 0, 1], -1.0)
    out = skeleton.mirror_rotations({"leftUpperArm": q, "head": quat.from_axis_angle([0, 1, 0], 0.5)})
    assert set(out) == {"rightUpperArm", "head"}
    pos, _ = skeleton.forward_kinematics(out)
    i = skeleton.BONE_INDEX
    d = pos[i["rightHand"]] - pos[i["rightUpperArm"]]
    assert d[1] < -0.3  # the mirrored arm also goes down
    # head yaw to the avatar's left becomes yaw to its right
    np.testing.assert_allclose(out["head"], quat.from_axis_angle([0, 1, 0], -0.5), atol=1e-12)
