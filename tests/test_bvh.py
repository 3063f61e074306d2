"""BVH reader and forward kinematics: hand-written files with known answers, plus the CMU fixture."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MOCAP, need

from avatar_bridge.bvh import BvhError, load_bvh, parse_bvh

TWO_BONES = """HIERARCHY
ROOT Root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Arm
  {
    OFFSET 1 0 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    End Site
    {
      OFFSET 0 2 0
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.04
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 0
0 0 0 0 0 0 90 0 90
"""


def test_parse_structure_and_channels():
    m = parse_bvh(TWO_BONES)
    assert m.names == ["Root", "Arm", "Arm_end"]
    assert m.parents.tolist() == [-1, 0, 1]
    assert m.is_end_site.tolist() == [False, False, True]
    assert m.channels[0][3:] == ("Zrotation", "Xrotation", "Yrotation")
    assert m.channels[2] == ()
    assert m.num_frames == 3 and m.motion.shape == (3, 9)
    assert m.frame_time == pytest.approx(0.04) and m.fps == pytest.approx(25.0)


def test_forward_kinematics_known_values():
    m = parse_bvh(TWO_BONES)
    pos = m.world_positions()
    # Rest pose: offsets only.
    np.testing.assert_allclose(pos[0], [[0, 0, 0], [1, 0, 0], [1, 2, 0]], atol=1e-12)
    # Root moved to (1,2,3) and turned +90 deg about Z: local +X -> +Y, local +Y -> -X.
    np.testing.assert_allclose(pos[1], [[1, 2, 3], [1, 3, 3], [-1, 3, 3]], atol=1e-12)
    # Arm "X then Z" intrinsic (R = Rx @ Rz): End Site (0,2,0) -> Rz: (-2,0,0) -> Rx keeps it (-2,0,0).
    np.testing.assert_allclose(pos[2, 2], [1 - 2, 0, 0], atol=1e-12)
    rot = m.world_rotations(slice(1, 2))[0]
    np.testing.assert_allclose(rot[0] @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_rotation_order_matters():
    """Same angles, opposite channel order give different (and correct) poses."""
    zx = TWO_BONES.replace("CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 3 Zrotation Yrotation Xrotation")
    m = parse_bvh(zx)
    # Arm Z=90 then X=90 intrinsic: R = Rz @ Rx; (0,2,0) -> Rx -> (0,0,2) -> Rz keeps -> (0,0,2).
    # Columns: Z Y X -> values "90 0 90" means Z=90, Y=0, X=90.
    np.testing.assert_allclose(m.world_positions()[2, 2], [1, 0, 2], atol=1e-12)


@pytest.mark.parametrize(
    "broken, words",
    [
        (TWO_BONES.replace("CHANNELS 3 Xrotation", "CHANNELS 3 Wrotation"), ["line 9", "Wrotation"]),
        (TWO_BONES.replace("OFFSET 1 0 0", "OFFSET 1 zero 0"), ["line 8", "OFFSET needs 3 numbers"]),
        (TWO_BONES.replace("Frames: 3", "Frames: 4"), ["truncated"]),
        (TWO_BONES.replace("1 2 3 90 0 0 0 0 0", "1 2 3 90 0 0 0 0"), ["line 20", "8 values", "9 channels"]),
        (TWO_BONES.replace("MOTION", "MOTON"), ["no MOTION"]),
        (TWO_BONES.replace("Frame Time: 0.04", "Frame Time: 0"), ["line 18", "positive"]),
        (TWO_BONES.replace("  }\n}\nMOTION", "  }\nMOTION"), ["not closed"]),
        (TWO_BONES.replace("0 0 0 0 0 0 90 0 90", "0 0 0 0 0 0 90 0 nan"), ["line 21", "NaN"]),
        # A count larger than the names (found by a new user: it blamed the next line's JOINT).
        (TWO_BONES.replace("CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 3 Xrotation Yrotation"),
         ["line 9", "CHANNELS 3 names only 2 channels (Xrotation Yrotation)", "make the count match"]),
    ],
)
def test_malformed_files_name_the_line(broken, words):
    with pytest.raises(BvhError) as info:
        parse_bvh(broken, "bad.bvh")
    message = str(info.value)
    assert message.startswith("bad.bvh line ")
    for word in words:
        assert word in message


def test_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bvh"):
        load_bvh(tmp_path / "nope.bvh")


def test_cmu_fixture_structure_and_rigid_bones():
    m = load_bvh(need(MOCAP))
    assert m.num_frames == 995
    assert m.fps == pytest.approx(120.0, rel=1e-3)
    assert int((~m.is_end_site).sum()) == 31 and int(m.is_end_site.sum()) == 6 + 1  # 7 End Sites incl. head
    assert m.names[0] == "Hips" and m.channels[0][:3] == ("Xposition", "Yposition", "Zposition")
    assert m.channels[m.index("LeftShoulder")] == ("Zrotation", "Xrotation", "Yrotation")
    pos = m.world_positions()
    assert pos.shape == (995, 38, 3)
    # Bone lengths equal the OFFSET lengths in every frame (FK keeps bones rigid).
    child = np.arange(1, m.num_joints)
    lengths = np.linalg.norm(pos[:, child] - pos[:, m.parents[child]], axis=-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(np.linalg.norm(m.offsets[child], axis=-1), lengths.shape), atol=1e-9)
    # World rotations are proper rotations.
    rot = m.world_rotations(slice(0, 50))
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
    # The first frame's root position is the first three motion values.
    np.testing.assert_allclose(pos[0, 0], m.motion[0, :3])
    with pytest.raises(KeyError, match="Spine"):
        m.index("Spine")
