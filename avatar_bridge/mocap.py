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

import time
from pathlib import Path

import numpy as np

from .amp import AmpMotion, load_amp
from .bvh import BvhMotion, load_bvh
from .camera import PinholeCamera, fit_camera
from .keypoints import KEYPOINT_INDEX, NUM_KEYPOINTS
from .types import Frame, FrameSourceBase, GroundTruth, Pose2D

# COCO body keypoint -> BVH joint names to try, first match wins. Mixamo/cgspeed names come first
# because there "LeftShoulder" is the collar bone and "LeftArm" the shoulder joint.
BODY_JOINTS: dict[str, tuple[str, ...]] = {
    "left_shoulder": ("LeftArm", "LeftShoulder", "LeftUpperArm"),
    "right_shoulder": ("RightArm", "RightShoulder", "RightUpperArm"),
    "left_elbow": ("LeftForeArm", "LeftElbow", "LeftLowerArm"),
    "right_elbow": ("RightForeArm", "RightElbow", "RightLowerArm"),
    "left_wrist": ("LeftWrist", "LeftHand"),
    "right_wrist": ("RightWrist", "RightHand"),
    "left_hip": ("LeftUpLeg", "LeftHip", "LeftThigh", "LeftUpperLeg"),
    "right_hip": ("RightUpLeg", "RightHip", "RightThigh", "RightUpperLeg"),
    "left_knee": ("LeftLeg", "LeftKnee", "LeftShin", "LeftLowerLeg"),
    "right_knee": ("RightLeg", "RightKnee", "RightShin", "RightLowerLeg"),
    "left_ankle": ("LeftFoot", "LeftAnkle"),
    "right_ankle": ("RightFoot", "RightAnkle"),
}
HEAD_JOINTS = ("Head",)

# Face points in the head joint's rest frame (metres; +X = performer's left, +Y up, +Z forward),
# measured from the head joint, which sits at the base of the skull (CMU, Mixamo).
FACE_OFFSETS: dict[str, tuple[float, float, float]] = {
    "nose": (0.0, 0.0, 0.10),
    "left_eye": (0.032, 0.035, 0.085),
    "right_eye": (-0.032, 0.035, 0.085),
    "left_ear": (0.075, 0.01, -0.01),
    "right_ear": (-0.075, 0.01, -0.01),
}


def _find_joint(motion: BvhMotion, candidates: tuple[str, ...], keypoint: str) -> int:
    # Match without a namespace prefix such as "mixamorig:".
    bare = [name.split(":")[-1] for name in motion.names]
    for candidate in candidates:
        for j, name in enumerate(bare):
            if name == candidate and not motion.is_end_site[j]:
                return j
    raise ValueError(
        f"{motion.path or 'BVH file'}: no joint for COCO keypoint {keypoint!r} (looked for {', '.join(candidates)}); "
        "the file needs a humanoid skeleton with CMU or Mixamo joint names"
    )


def joint_map(motion: BvhMotion) -> tuple[np.ndarray, int]:
    """BVH joint index for each COCO body keypoint (-1 for the face points) and the head joint."""
    indices = np.full(NUM_KEYPOINTS, -1, dtype=np.int64)
    for name, candidates in BODY_JOINTS.items():
        indices[KEYPOINT_INDEX[name]] = _find_joint(motion, candidates, name)
    return indices, _find_joint(motion, HEAD_JOINTS, "nose (head joint)")


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


def _yaw_matrix(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


MOCAP_SUFFIXES = (".bvh", ".npy")


def load_motion(path: str | Path) -> BvhMotion | AmpMotion:
    """A mocap clip by its suffix: ``.bvh`` (:func:`avatar_bridge.bvh.load_bvh`) or an AMP humanoid
    ``.npy`` (:func:`avatar_bridge.amp.load_amp`). Raises ValueError for any other suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        return load_bvh(path)
    if suffix == ".npy":
        return load_amp(path)
    raise ValueError(f"{path}: not a mocap clip: use a .bvh file or an AMP humanoid .npy clip")


def coco17_world(motion: BvhMotion | AmpMotion, fps: float = 30.0, scale: float | None = None) -> np.ndarray:
    """COCO-17 keypoints (N, 17, 3) in the canonical frame, resampled to ``fps`` (linear in time).

    ``motion``: a BVH motion or an AMP clip (:mod:`avatar_bridge.amp`, already in metres; its face
    points are fixed offsets from the head body). ``scale`` is metres per file unit for BVH (None:
    detect metres or centimetres).
    """
    if not fps > 0:
        raise ValueError(f"mocap fps must be positive, got {fps}")
    if isinstance(motion, AmpMotion):
        points = motion.coco17_points()
    else:
        points = _bvh_points(motion, scale)
    points = points @ _yaw_matrix(-facing_yaw(points[0])).T

    # Resample: output frame k is at time k / fps from the first source frame.
    src_times = np.arange(motion.num_frames) * motion.frame_time
    out_times = np.arange(0.0, src_times[-1] + 1e-9, 1.0 / fps)
    pos = out_times / motion.frame_time
    lo = np.clip(np.floor(pos).astype(np.int64), 0, motion.num_frames - 1)
    hi = np.minimum(lo + 1, motion.num_frames - 1)
    w = (pos - lo)[:, None, None]
    return (1.0 - w) * points[lo] + w * points[hi]


def _bvh_points(motion: BvhMotion, scale: float | None) -> np.ndarray:
    body, head = joint_map(motion)
    scale = unit_scale(motion) if scale is None else float(scale)
    world_rot, world_pos = motion.world_transforms()
    points = np.empty((motion.num_frames, NUM_KEYPOINTS, 3))
    has_body = body >= 0
    points[:, has_body] = world_pos[:, body[has_body]] * scale
    for name, offset in FACE_OFFSETS.items():
        points[:, KEYPOINT_INDEX[name]] = world_pos[:, head] * scale + world_rot[:, head] @ np.asarray(offset)
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
        self.joints3d = coco17_world(self.motion, fps=self.fps)
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
        )

    def close(self) -> None:
        self._closed = True
