"""Mocap as a frame source: BVH joints -> COCO-17 in the canonical frame -> pinhole projection.

This gives every stage after pose estimation (smoothing, retargeting, outputs) an exact ground
truth: :class:`MocapSource` yields Frames with no image, the projected 2D keypoints in ``truth``
and the 3D keypoints in ``joints3d``.

Canonical frame: metres, Y up, right-handed; the world is turned about the vertical axis through
the origin so the performer faces +Z on the first frame (their left towards +X). The file's
horizontal origin is kept (a mocap room's origin is the middle of its capture volume), so the
default camera, 3 m along +Z at 1 m height, sees the CMU walk fixture from about 4.9 m away at
the start and 2.3 m at the end.

BVH files do not mark the face, so nose, eyes and ears are fixed offsets in the head joint's frame
(the BVH rest pose faces +Z, like the canonical frame).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import skeleton
from .amp import AmpMotion, load_amp, load_deepmimic
from .bvh import BvhMotion, load_bvh
from .camera import PinholeCamera, fit_camera
from .keypoints import KEYPOINT_INDEX, NUM_KEYPOINTS
from .types import Frame, FrameSourceBase, GroundTruth, Pose2D

log = logging.getLogger(__name__)

# COCO body keypoint -> BVH joint, per naming convention. Names are compared by
# :func:`normalize_joint_name` (case-insensitive, without a "mixamorig:"-style namespace, a 3ds Max
# "Bip01 " prefix, spaces, underscores or hyphens). The conventions disagree on "shoulder": in CMU
# (ASF export) LeftShoulder is the shoulder joint and LeftCollar the collarbone, while in Mixamo,
# MotionBuilder/cgspeed CMU and VRM (spec: VRM 0.x / 1.0 humanoid bones) LeftShoulder / leftShoulder
# is the collarbone and LeftArm / leftUpperArm the shoulder joint. So a file is read with the first
# table that names all 12 body joints and the head, never a mix.
_SIDES = ("left", "right")


def _table(shoulder: str, elbow: str, wrist: str, hip: str, knee: str, ankle: str, head: str,
           side: tuple[str, str] = ("Left", "Right")) -> dict[str, str]:
    table = {"head": head}
    for coco_side, prefix in zip(_SIDES, side):
        for joint, name in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip), ("knee", knee),
                            ("ankle", ankle)):
            table[f"{coco_side}_{joint}"] = prefix + name
    return table


NAME_TABLES: dict[str, dict[str, str]] = {
    # CMU mocap database BVH (ASF/AMC converted, e.g. the bvh11 files): LeftCollar is the collarbone.
    "cmu": _table("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Head"),
    # Mixamo (mixamorig:LeftArm), also the MotionBuilder-friendly CMU conversion by cgspeed.
    "mixamo": _table("Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "Head"),
    # VRM humanoid bone names (avatar-bridge's own BVH export): leftShoulder is the collarbone.
    "vrm": _table("UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot", "head", side=("left", "right")),
    # 3ds Max Biped: "Bip01 L UpperArm", "Bip01 L Forearm", "Bip01 L Thigh", "Bip01 L Calf".
    "biped": _table(" UpperArm", " Forearm", " Hand", " Thigh", " Calf", " Foot", "Head", side=("L", "R")),
    # Microsoft Rocketbox avatars are Biped rigs ("Bip01 L UpperArm"); some exports use "Bip01 L Clavicle"
    # for the collarbone and name the arm joints like Biped, so the table is Biped's.
    "rocketbox": _table(" UpperArm", " Forearm", " Hand", " Thigh", " Calf", " Foot", "Head", side=("L", "R")),
}


# Torso joints per convention (VRM bone -> the convention's name): where a partial skeleton's
# missing keypoints are attached (see :func:`joint_map`), and hints to name the closest convention.
TORSO_TABLES: dict[str, dict[str, str]] = {
    "cmu": {"hips": "Hips", "spine": "lowerback", "chest": "Chest", "upperChest": "Chest2", "neck": "Neck"},
    "mixamo": {"hips": "Hips", "spine": "Spine", "chest": "Spine1", "upperChest": "Spine2", "neck": "Neck"},
    "vrm": {"hips": "hips", "spine": "spine", "chest": "chest", "upperChest": "upperChest", "neck": "neck"},
    "biped": {"hips": "Pelvis", "spine": "Spine", "chest": "Spine1", "upperChest": "Spine2", "neck": "Neck"},
    "rocketbox": {"hips": "Pelvis", "spine": "Spine", "chest": "Spine1", "upperChest": "Spine2", "neck": "Neck"},
}

# The VRM bone whose joint each COCO body keypoint is (the head bone carries the face points).
KEYPOINT_BONES: dict[str, str] = {
    "left_shoulder": "leftUpperArm", "right_shoulder": "rightUpperArm", "left_elbow": "leftLowerArm",
    "right_elbow": "rightLowerArm", "left_wrist": "leftHand", "right_wrist": "rightHand",
    "left_hip": "leftUpperLeg", "right_hip": "rightUpperLeg", "left_knee": "leftLowerLeg",
    "right_knee": "rightLowerLeg", "left_ankle": "leftFoot", "right_ankle": "rightFoot", "head": "head",
}


def normalize_joint_name(name: str) -> str:
    """A joint name as the tables compare it: ``"mixamorig:LeftArm"`` -> ``"leftarm"``,
    ``"Bip01 L UpperArm"`` -> ``"lupperarm"``, ``"leftUpperArm"`` -> ``"leftupperarm"``."""
    bare = name.split(":")[-1].strip().lower()
    bare = re.sub(r"^bip\d*[\s_]+", "", bare)
    return re.sub(r"[\s_\-]+", "", bare)



# Face points in the head joint's rest frame (metres; +X = performer's left, +Y up, +Z forward),
# measured from the head joint, which sits at the base of the skull (CMU, Mixamo).
FACE_OFFSETS: dict[str, tuple[float, float, float]] = {
    "nose": (0.0, 0.0, 0.10),
    "left_eye": (0.032, 0.035, 0.085),
    "right_eye": (-0.032, 0.035, 0.085),
    "left_ear": (0.075, 0.01, -0.01),
    "right_ear": (-0.075, 0.01, -0.01),
}


def _joint_index(motion: BvhMotion) -> dict[str, int]:
    """Normalized joint name -> first BVH joint of that name (end sites left out)."""
    index: dict[str, int] = {}
    for j, name in enumerate(motion.names):
        if not motion.is_end_site[j]:
            index.setdefault(normalize_joint_name(name), j)
    return index


def _named_bones(index: dict[str, int], convention: str) -> dict[str, int]:
    """VRM bone -> BVH joint index for the bones of ``convention`` that the file has (``index``:
    :func:`_joint_index` of the file)."""
    names = {**TORSO_TABLES[convention], **{KEYPOINT_BONES[k]: n for k, n in NAME_TABLES[convention].items()}}
    return {bone: index[normalize_joint_name(n)] for bone, n in names.items() if normalize_joint_name(n) in index}


def _closest_convention(bare: set[str]) -> str:
    """The convention naming most of the file's joints (``bare``: normalized names), limbs and torso."""
    return max(NAME_TABLES, key=lambda c: sum(normalize_joint_name(n) in bare
                                              for n in (*NAME_TABLES[c].values(), *TORSO_TABLES[c].values())))


def naming_convention(motion: BvhMotion) -> str:
    """The key of the first :data:`NAME_TABLES` entry that names every body joint and the head.

    Raises ValueError naming the closest convention and the joints it lacks when none does.
    """
    bare = set(_joint_index(motion))
    for convention, table in NAME_TABLES.items():
        if all(normalize_joint_name(n) in bare for n in table.values()):
            return convention
    best = _closest_convention(bare)
    missing = [n for n in NAME_TABLES[best].values() if normalize_joint_name(n) not in bare]
    raise ValueError(
        f"{motion.path or 'BVH file'}: no joint for COCO keypoint(s) of a humanoid: the closest naming, {best}, "
        f"lacks {', '.join(missing)} (supported namings: {', '.join(NAME_TABLES)}, compared case-insensitively)"
    )


@dataclass(frozen=True)
class JointMap:
    """Where each COCO keypoint of a BVH file comes from.

    ``joints[k]`` is the BVH joint index of keypoint ``k`` (-1 for the face points, which hang off
    ``head``), and ``rest_offsets[k]`` (metres, in that joint's frame) is added to it: zero for a
    joint the file has; for a keypoint whose joint the file lacks (a partial skeleton), the joint is
    its nearest ancestor the file has and the offset is the rest-pose path from it in
    :mod:`avatar_bridge.skeleton`, so the missing part follows that ancestor at rest.
    ``missing`` names the file's convention's joints that were not found.
    """

    convention: str
    joints: np.ndarray  # (17,) int
    rest_offsets: np.ndarray  # (17, 3) metres
    head: int
    head_offset: np.ndarray  # (3,) metres, from the head joint (or its stand-in) to the head
    missing: tuple[str, ...]


def joint_map(motion: BvhMotion, partial: bool = False) -> JointMap:
    """Map the COCO body keypoints and the head onto ``motion``'s joints.

    With ``partial=False`` every body joint and the head must be named by one convention (raises
    ValueError naming the closest convention and its missing joints otherwise). With ``partial=True``
    a file that names the hips (``Bip01 Pelvis``, ``Hips``) and one more bone of the closest convention maps
    its missing keypoints onto their nearest present ancestor (see :class:`JointMap`).
    """
    index = _joint_index(motion)
    try:
        convention = naming_convention(motion)
    except ValueError:
        if not partial:
            raise
        convention = _closest_convention(set(index))
        named = _named_bones(index, convention)
        if "hips" not in named or len(named) < 2:
            raise  # a lone root is not a skeleton
    bones = _named_bones(index, convention)
    rest_world = skeleton.forward_kinematics({})[0]  # (B, 3) rest joint positions, metres

    def attach(bone: str) -> tuple[int, np.ndarray]:
        anchor = skeleton.BONE_INDEX[bone]
        while skeleton.BONES[anchor].name not in bones:
            anchor = int(skeleton.PARENT_INDEX[anchor])
        return bones[skeleton.BONES[anchor].name], rest_world[skeleton.BONE_INDEX[bone]] - rest_world[anchor]

    joints = np.full(NUM_KEYPOINTS, -1, dtype=np.int64)
    offsets = np.zeros((NUM_KEYPOINTS, 3))
    for keypoint, bone in KEYPOINT_BONES.items():
        if keypoint != "head":
            joints[KEYPOINT_INDEX[keypoint]], offsets[KEYPOINT_INDEX[keypoint]] = attach(bone)
    head, head_offset = attach("head")
    table = {**TORSO_TABLES[convention], **NAME_TABLES[convention]}
    missing = tuple(n for n in table.values() if normalize_joint_name(n) not in index)
    return JointMap(convention, joints, offsets, head, head_offset, missing)


def unit_scale(motion: BvhMotion) -> float:
    """Metres per file unit: 1 for files in metres, 0.01 for the common centimetre files."""
    positions = motion.world_positions(slice(0, 1))[0]
    extent = float(np.ptp(positions[:, 1]))
    return 0.01 if extent > 10.0 else 1.0


def facing_yaw(world: np.ndarray) -> float:
    """Yaw (radians, about +Y) of the direction COCO-17 points ``world`` (17, 3) face; 0 = +Z."""
    i = KEYPOINT_INDEX
    across = (world[i["left_hip"]] - world[i["right_hip"]]) + (world[i["left_shoulder"]] - world[i["right_shoulder"]])
    forward = np.cross(across, [0.0, 1.0, 0.0])
    return float(np.arctan2(forward[0], forward[2]))


def yaw_matrix(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about +Y (up), right-handed: turns points about the vertical."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


MOCAP_SUFFIXES = (".bvh", ".npy", ".txt")


def load_motion(path: str | Path) -> BvhMotion | AmpMotion:
    """A mocap clip by its suffix: ``.bvh`` (:func:`avatar_bridge.bvh.load_bvh`), an AMP humanoid
    ``.npy`` (:func:`avatar_bridge.amp.load_amp`) or a DeepMimic humanoid3d ``.txt``
    (:func:`avatar_bridge.amp.load_deepmimic`). Raises ValueError for any other suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        return load_bvh(path)
    if suffix == ".npy":
        return load_amp(path)
    if suffix == ".txt":
        return load_deepmimic(path)
    raise ValueError(f"{path}: not a mocap clip: use a .bvh file, an AMP humanoid .npy clip or a DeepMimic humanoid3d .txt motion")


def coco17_world(motion: BvhMotion | AmpMotion, fps: float = 30.0, scale: float | None = None,
                 partial: "bool | JointMap" = False) -> np.ndarray:
    """COCO-17 keypoints (N, 17, 3) in the canonical frame, resampled to ``fps`` (linear in time).

    ``motion``: a BVH motion or an AMP clip (:mod:`avatar_bridge.amp`, already in metres; its face
    points are fixed offsets from the head body). ``scale`` is metres per file unit for BVH (None:
    detect metres or centimetres). ``partial`` (BVH): see :func:`joint_map` (or a :class:`JointMap`
    already made). Raises ValueError for fps <= 0 or a BVH file whose joints no naming convention maps.
    """
    if not fps > 0:
        raise ValueError(f"mocap fps must be positive, got {fps}")
    if isinstance(motion, AmpMotion):
        points = motion.coco17_points()
    else:
        points = _bvh_points(motion, scale, joint_map(motion, partial=partial) if isinstance(partial, bool) else partial)
    points = points @ yaw_matrix(-facing_yaw(points[0])).T

    # Resample: output frame k is at time k / fps from the first source frame.
    src_times = np.arange(motion.num_frames) * motion.frame_time
    out_times = np.arange(0.0, src_times[-1] + 1e-9, 1.0 / fps)
    pos = out_times / motion.frame_time
    lo = np.clip(np.floor(pos).astype(np.int64), 0, motion.num_frames - 1)
    hi = np.minimum(lo + 1, motion.num_frames - 1)
    w = (pos - lo)[:, None, None]
    return (1.0 - w) * points[lo] + w * points[hi]


def _bvh_points(motion: BvhMotion, scale: float | None, mapping: JointMap) -> np.ndarray:
    """COCO-17 points (N, 17, 3) in metres of a BVH motion, in the file's own world frame."""
    scale = unit_scale(motion) if scale is None else float(scale)
    world_rot, world_pos = motion.world_transforms()
    points = np.empty((motion.num_frames, NUM_KEYPOINTS, 3))
    has_body = mapping.joints >= 0
    body = mapping.joints[has_body]
    # joint position (file units -> metres) plus the rest offset of a missing part, turned with the joint
    points[:, has_body] = world_pos[:, body] * scale + np.einsum("fkij,kj->fki", world_rot[:, body],
                                                                   mapping.rest_offsets[has_body])
    head = mapping.head
    for name, offset in FACE_OFFSETS.items():
        points[:, KEYPOINT_INDEX[name]] = (world_pos[:, head] * scale
                                           + world_rot[:, head] @ (mapping.head_offset + np.asarray(offset)))
    return points


def truth_box(keypoints: np.ndarray, scores: np.ndarray, pad: float = 0.15) -> np.ndarray | None:
    """Box x1 y1 x2 y2 around the visible keypoints, padded by ``pad`` of its size on each side."""
    visible = keypoints[scores > 0]
    if len(visible) == 0:
        return None
    lo, hi = visible.min(axis=0), visible.max(axis=0)
    margin = pad * (hi - lo).max()
    return np.concatenate([lo - margin, hi + margin]).astype(np.float32)


class MocapSource(FrameSourceBase):
    """Plays a mocap clip (BVH, or an AMP humanoid ``.npy``) as a frame source of projected COCO-17 keypoints (no images).

    Timestamps are ``time.monotonic()`` at the first ``read()`` plus ``index / fps``; ``realtime``
    sleeps until then. The clock starts at the first read, not at open, so models loaded in between do
    not make the first frames late (rushed through at once).
    A keypoint outside the image or behind the camera has score 0 (its pixel position is still given
    when it is in front of the camera, 0 otherwise).

    ``camera``: a :class:`PinholeCamera`, None for the default one (3 m along +Z at 1 m height), or
    ``"fit"`` for a frontal camera fitted so the whole clip stays in frame
    (:func:`avatar_bridge.camera.fit_camera`).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 30.0,
        camera: PinholeCamera | str | None = None,
        realtime: bool = False,
        loop: bool = False,
        track_id: int = 1,
    ) -> None:
        self.path = Path(path)
        self.motion = load_motion(self.path)
        self.fps = float(fps)
        mapping: JointMap | bool = False
        if isinstance(self.motion, BvhMotion):
            mapping = joint_map(self.motion, partial=True)
            if mapping.missing:
                log.warning("%s: %d joints of the %s naming are not in the file (%s): the keypoints there follow "
                            "their nearest parent joint in its rest pose", self.path.name, len(mapping.missing),
                            mapping.convention, ", ".join(mapping.missing))
        self.joints3d = coco17_world(self.motion, fps=self.fps, partial=mapping)
        if isinstance(camera, str):
            if camera != "fit":
                raise ValueError(f"mocap camera must be a PinholeCamera, None or 'fit', got {camera!r}")
            camera = fit_camera(self.joints3d)
        self.camera = camera or PinholeCamera()
        self.width = int(self.camera.width)
        self.height = int(self.camera.height)
        self.realtime = realtime
        self.loop = loop
        self.track_id = track_id
        uv, depth = self.camera.project_with_depth(self.joints3d)
        inside = (depth > 0) & np.all(np.isfinite(uv), axis=-1)
        inside &= (uv[..., 0] >= 0) & (uv[..., 0] < self.width) & (uv[..., 1] >= 0) & (uv[..., 1] < self.height)
        self.keypoints2d = np.nan_to_num(uv, nan=0.0).astype(np.float32)  # (N, 17, 2)
        self.scores = inside.astype(np.float32)  # (N, 17)
        self._index = 0
        self._start: float | None = None  # the playback clock, started by the first read()
        self._closed = False

    def __len__(self) -> int:
        return len(self.joints3d)

    def read(self) -> Frame | None:
        """The next frame, or None when the clip has ended (never with ``loop``) or the source is closed."""
        if self._closed:
            return None
        n = len(self.joints3d)
        if self._index >= n and not self.loop:
            return None
        if self._start is None:
            self._start = time.monotonic()
        index = self._index
        k = index % n
        timestamp = self._start + index / self.fps
        if self.realtime:
            delay = timestamp - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._index += 1
        keypoints, scores = self.keypoints2d[k].copy(), self.scores[k].copy()
        person = Pose2D(keypoints=keypoints, scores=scores, box=truth_box(keypoints, scores), track_id=self.track_id)
        return Frame(
            index=index,
            timestamp=timestamp,
            width=self.width,
            height=self.height,
            image=None,
            truth=GroundTruth(people=[person], joints3d=self.joints3d[k].astype(np.float32)),
            pts=index / self.fps,  # the clip's own time (frame k of the BVH at its frame rate)
        )

    def close(self) -> None:
        self._closed = True
