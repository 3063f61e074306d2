"""The humanoid skeleton every output shares, and its one coordinate convention.

Canonical frame (used by RigPose, recordings, the WebSocket stream and BVH):
right-handed, metres, Y up, the avatar faces +Z, its left arm points to +X. The rest pose is the
VRM T-pose and every bone's rest local rotation is identity: a rotation here is exactly a VRM
"normalized bone" rotation (three-vrm ``getNormalizedBoneNode``, VRM 1.0 models).

Conversions to the other conventions are exact changes of basis (see ``to_unity`` etc.):
- Unity / VMC (left-handed, faces +Z, left arm -X): mirror X.
- three-vrm with a VRM 0.x model (faces -Z before ``VRMUtils.rotateVRM0``): rotate pi about Y.
- three-vrm with a VRM 1.0 model: identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_bridge import quat


# The canonical frame above, as the WebSocket ``hello`` and the recording header state it.
COORDINATES = {
    "handedness": "right",
    "up": "+Y",
    "forward": "+Z",
    "left": "+X",
    "units": "m",
    "rotations": "parent-local, normalized (identity = T-pose), quaternion [x, y, z, w]",
}


@dataclass(frozen=True)
class Bone:
    name: str  # VRM 1.0 humanoid bone name (camelCase)
    parent: str | None
    offset: tuple[float, float, float]  # rest position relative to the parent, metres


def _side(prefix: str, sign: float) -> list[Bone]:
    """Bones of one side; ``sign`` +1 for left (+X), -1 for right."""
    s = sign
    p = prefix
    bones = [
        Bone(f"{p}UpperLeg", "hips", (0.09 * s, -0.06, 0.0)),
        Bone(f"{p}LowerLeg", f"{p}UpperLeg", (0.0, -0.41, 0.0)),
        Bone(f"{p}Foot", f"{p}LowerLeg", (0.0, -0.40, 0.0)),
        Bone(f"{p}Toes", f"{p}Foot", (0.0, -0.06, 0.12)),
        Bone(f"{p}Shoulder", "upperChest", (0.03 * s, 0.10, 0.0)),
        Bone(f"{p}UpperArm", f"{p}Shoulder", (0.10 * s, 0.0, 0.0)),
        Bone(f"{p}LowerArm", f"{p}UpperArm", (0.27 * s, 0.0, 0.0)),
        Bone(f"{p}Hand", f"{p}LowerArm", (0.25 * s, 0.0, 0.0)),
        Bone(f"{p}Eye", "head", (0.03 * s, 0.06, 0.08)),
    ]
    # Fingers stay at rest (COCO-17 does not see them) but are part of the rig receivers expect.
    fingers = {
        "thumb": ((0.02, -0.01, 0.025), ("Metacarpal", "Proximal", "Distal")),
        "index": ((0.08, 0.0, 0.03), ("Proximal", "Intermediate", "Distal")),
        "middle": ((0.085, 0.0, 0.01), ("Proximal", "Intermediate", "Distal")),
        "ring": ((0.08, 0.0, -0.01), ("Proximal", "Intermediate", "Distal")),
        "little": ((0.07, 0.0, -0.03), ("Proximal", "Intermediate", "Distal")),
    }
    for finger, (base, segments) in fingers.items():
        parent = f"{p}Hand"
        for i, segment in enumerate(segments):
            offset = (base[0] * s, base[1], base[2]) if i == 0 else (0.03 * s, 0.0, 0.0)
            name = f"{p}{finger.capitalize()}{segment}"
            bones.append(Bone(name, parent, offset))
            parent = name
    return bones


def _bones() -> tuple[Bone, ...]:
    trunk = [
        Bone("hips", None, (0.0, 0.95, 0.0)),  # offset of the root = rest hips position above the floor
        Bone("spine", "hips", (0.0, 0.10, 0.0)),
        Bone("chest", "spine", (0.0, 0.12, 0.0)),
        Bone("upperChest", "chest", (0.0, 0.12, 0.0)),
        Bone("neck", "upperChest", (0.0, 0.14, 0.0)),
        Bone("head", "neck", (0.0, 0.09, 0.0)),
        Bone("jaw", "head", (0.0, -0.02, 0.05)),
    ]
    return tuple(trunk + _side("left", 1.0) + _side("right", -1.0))


BONES: tuple[Bone, ...] = _bones()
BONE_NAMES: tuple[str, ...] = tuple(b.name for b in BONES)
BONE_INDEX = {name: i for i, name in enumerate(BONE_NAMES)}
PARENT_INDEX = np.array([-1 if b.parent is None else BONE_INDEX[b.parent] for b in BONES])
REST_OFFSETS = np.array([b.offset for b in BONES], dtype=np.float64)

# The bones a COCO-17 pose can drive; the rest stay at their rest (or unseen-policy) rotation.
BODY_BONES: tuple[str, ...] = (
    "hips", "spine", "chest", "upperChest", "neck", "head",
    "leftShoulder", "leftUpperArm", "leftLowerArm", "leftHand",
    "rightShoulder", "rightUpperArm", "rightLowerArm", "rightHand",
    "leftUpperLeg", "leftLowerLeg", "leftFoot", "leftToes",
    "rightUpperLeg", "rightLowerLeg", "rightFoot", "rightToes",
)
LEG_BONES: tuple[str, ...] = tuple(b for b in BONE_NAMES if "Leg" in b or "Foot" in b or "Toes" in b)
UPPER_BODY_BONES: tuple[str, ...] = tuple(b for b in BONE_NAMES if b not in LEG_BONES and b != "hips")

_THUMB_TO_UNITY = {"Metacarpal": "Proximal", "Proximal": "Intermediate", "Distal": "Distal"}


def unity_name(bone: str) -> str:
    """Unity ``HumanBodyBones`` name (as VMC sends it) of a VRM 1.0 bone name."""
    for side in ("left", "right"):
        if bone.startswith(f"{side}Thumb"):
            segment = bone[len(side) + len("Thumb"):]
            return f"{side.capitalize()}Thumb{_THUMB_TO_UNITY[segment]}"
    return bone[0].upper() + bone[1:]


def scaled_offsets(height: float = 1.0) -> np.ndarray:
    """Rest offsets for a body ``height`` times the canonical one (canonical standing height ~1.63 m)."""
    return REST_OFFSETS * float(height)


# --- Conversions ----------------------------------------------------------------------------------
# A change of basis M maps p -> M p and a quaternion's vector part q.xyz -> det(M) M q.xyz.

def to_unity_position(p: np.ndarray) -> np.ndarray:
    """Canonical -> Unity/VMC (left-handed): mirror X."""
    p = np.asarray(p, dtype=np.float64)
    return p * np.array([-1.0, 1.0, 1.0])


def to_unity_rotation(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, 1.0])


def to_three_vrm0_position(p: np.ndarray) -> np.ndarray:
    """Canonical -> three-vrm normalized bones of a VRM 0.x model (faces -Z): rotate pi about Y."""
    return np.asarray(p, dtype=np.float64) * np.array([-1.0, 1.0, -1.0])


def to_three_vrm0_rotation(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * np.array([-1.0, 1.0, -1.0, 1.0])


def mirror_rotations(rotations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mirror a pose across the avatar's sagittal plane: swap left/right bones and reflect X."""
    out = {}
    for name, q in rotations.items():
        if name.startswith("left"):
            other = "right" + name[4:]
        elif name.startswith("right"):
            other = "left" + name[5:]
        else:
            other = name
        out[other] = np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, 1.0])
    return out


def mirror_motion(hips: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mirror_rotations` for motion arrays: hips (N, 3) metres with x negated, rotations
    (N, B, 4) in ``BONES`` order with left and right bones swapped and reflected. Its own inverse."""
    swap = []
    for bone in BONES:
        name = bone.name
        other = "right" + name[4:] if name.startswith("left") else "left" + name[5:] if name.startswith("right") else name
        swap.append(BONE_INDEX.get(other, BONE_INDEX[name]))
    rotations = np.asarray(rotations, dtype=np.float64)[:, swap] * np.array([1.0, -1.0, -1.0, 1.0])
    return np.asarray(hips, dtype=np.float64) * np.array([-1.0, 1.0, 1.0]), rotations


def forward_kinematics(
    rotations: dict[str, np.ndarray],
    hips_position: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """World positions (B, 3) and world rotations (B, 4) of every bone in ``BONES`` order.

    Bones missing from ``rotations`` use identity (rest). ``hips_position`` defaults to the rest one.
    """
    offsets = REST_OFFSETS if offsets is None else offsets
    n = len(BONES)
    world_rot = np.zeros((n, 4))
    world_pos = np.zeros((n, 3))
    local = np.tile(quat.IDENTITY, (n, 1))
    for name, q in rotations.items():
        if name in BONE_INDEX:
            local[BONE_INDEX[name]] = q
    for i, parent in enumerate(PARENT_INDEX):
        if parent < 0:
            world_rot[i] = quat.normalize(local[i])
            world_pos[i] = offsets[i] if hips_position is None else hips_position
        else:
            world_rot[i] = quat.mul(world_rot[parent], local[i])
            world_pos[i] = world_pos[parent] + quat.rotate(world_rot[parent], offsets[i])
    return world_pos, world_rot
