"""The synthetic performer: a procedurally animated humanoid seen through a pinhole camera.

It lets the whole pipeline run, and be tested, with no camera and no model weights: the canonical
skeleton (:mod:`avatar_bridge.skeleton`) is posed with smooth, seed-deterministic bone rotations
(waving arms, stepping legs, a turning torso, head motion), projected to COCO-17 keypoints (face
points from the head bone, as :func:`avatar_bridge.retarget.joints_from_rig` places them), and handed
out as Frames with ``image=None`` (or a drawn stick figure with ``render=True``), the exact 2D
person in ``truth``, the 3D joints in ``joints3d`` and the posed rig in ``truth.rigs[0]``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import quat
from .camera import PinholeCamera
from .keypoints import SKELETON_EDGES
from .mocap import truth_box
from .retarget import joints_from_rig
from .types import Frame, FrameSourceBase, GroundTruth, Pose2D, RigPose

_X, _Y, _Z = np.eye(3)


def _rot(axis: np.ndarray, degrees: float) -> np.ndarray:
    return quat.from_axis_angle(axis, math.radians(degrees))


STANCE_SECONDS = 1.5  # standing still at the start, as a user does for calibration
BLEND_SECONDS = 1.0


class PerformerMotion:
    """Smooth procedural bone rotations as a function of time, drawn from ``seed``.

    Every motion is a sum of two sines with seed-chosen frequencies (0.15-0.8 Hz) and phases, so the
    pose is smooth, never repeats exactly, and the same seed always gives the same performance.
    """

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._freq = rng.uniform(0.15, 0.8, size=(16, 2))
        self._phase = rng.uniform(0.0, 2 * math.pi, size=(16, 2))

    def _wave(self, channel: int, t: float) -> float:
        """Smooth value in [-1, 1] for motion channel ``channel`` at time ``t``."""
        f, p = self._freq[channel], self._phase[channel]
        return float(0.6 * math.sin(2 * math.pi * f[0] * t + p[0]) + 0.4 * math.sin(2 * math.pi * f[1] * t + p[1]))

    def _unit(self, channel: int, t: float) -> float:
        """Smooth value in [0, 1]."""
        return 0.5 + 0.5 * self._wave(channel, t)

    def pose(self, t: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Local bone rotations and the hips position (canonical frame) at time ``t`` seconds.

        The performance starts like a user calibrating: standing still facing the camera, arms
        held 45 degrees down, for ``STANCE_SECONDS``; the motion then fades in over ``BLEND_SECONDS``.
        """
        moving, hips = self._motion(t)
        blend = min(max((t - STANCE_SECONDS) / BLEND_SECONDS, 0.0), 1.0)
        blend = blend * blend * (3 - 2 * blend)
        if blend >= 1.0:
            return moving, hips
        stance = {"leftUpperArm": _rot(_Z, -45.0), "rightUpperArm": _rot(_Z, 45.0)}
        rotations = {}
        for name in set(moving) | set(stance):
            rotations[name] = quat.slerp(stance.get(name, quat.IDENTITY), moving.get(name, quat.IDENTITY), blend)
        rest_hips = np.array([0.0, 0.95, 0.0])
        return rotations, rest_hips + blend * (hips - rest_hips)

    def _motion(self, t: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        w, u = self._wave, self._unit
        r: dict[str, np.ndarray] = {}
        # Torso: turning (yaw), a little lean and twist spread over the spine chain.
        r["hips"] = quat.mul(_rot(_Y, 35 * w(0, t)), _rot(_X, 4 * w(1, t)))
        twist = quat.mul(_rot(_Y, 6 * w(2, t)), _rot(_X, 4 * w(3, t)))
        for bone in ("spine", "chest", "upperChest"):
            r[bone] = twist
        # Head: yaw, pitch and roll, split between neck and head.
        head = quat.mul(quat.mul(_rot(_Y, 20 * w(4, t)), _rot(_X, 8 * w(5, t))), _rot(_Z, 6 * w(6, t)))
        r["neck"] = head
        r["head"] = head
        # Arms: raise between hanging (-70 deg) and above shoulder height (+30), swing forward up to
        # 60 deg, elbows bent 10-110 deg (hinge about the rest bend normal: -Y left, +Y right).
        for side, sign, c in (("left", 1.0, 7), ("right", -1.0, 10)):
            raise_deg = -70 + 100 * u(c, t)
            forward_deg = 60 * u(c + 1, t)
            r[f"{side}UpperArm"] = quat.mul(_rot(_Y, -sign * forward_deg), _rot(_Z, sign * raise_deg))
            r[f"{side}LowerArm"] = _rot(-sign * _Y, 10 + 100 * u(c + 2, t))
        # Legs: stepping in anti-phase, thigh swing -15..+35 deg, knee bending as the thigh swings forward.
        step = w(13, t)
        for side, phase in (("left", 1.0), ("right", -1.0)):
            swing = 10 + 25 * phase * step
            r[f"{side}UpperLeg"] = _rot(_X, -swing)
            r[f"{side}LowerLeg"] = _rot(_X, 5 + 35 * max(phase * step, 0.0))
        hips = np.array([0.05 * w(14, t), 0.95 - 0.03 * abs(step), 0.10 * w(15, t)])
        return r, hips


class SyntheticSource(FrameSourceBase):
    """A FrameSource of the synthetic performer (no camera, no weights, deterministic from ``seed``).

    ``duration`` None (or 0) runs forever; ``realtime`` paces frames at ``fps``. Timestamps are
    ``time.monotonic()`` at the first ``read()`` plus ``index / fps``: the clock starts at the first
    read, not at creation, so models loaded in between do not make the first frames late (rushed).
    The camera stands 3 m in front of the performer at 1 m height (focal length 900 px at 1280 px
    width, scaled with the width). ``render=True`` also draws a stick figure image so the image path
    can be exercised.
    """

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0, seed: int = 0,
                 duration: float | None = None, realtime: bool = True, render: bool = False, track_id: int = 1) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"synthetic source size {width}x{height} is too small: use at least 16x16 pixels")
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"synthetic source fps must be a positive number, got {fps}")
        if duration is not None and duration < 0:
            raise ValueError(f"synthetic source duration must be >= 0 seconds (0 = forever), got {duration}")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.realtime = realtime
        self.render = render
        self.track_id = track_id
        self.motion = PerformerMotion(seed)
        self.camera = PinholeCamera(focal_px=900.0 * self.width / 1280.0, width=self.width, height=self.height,
                                    position=np.array([0.0, 1.0, 3.0]), target=np.array([0.0, 1.0, 0.0]))
        self.frames = None if not duration else int(round(duration * self.fps))
        self._index = 0
        self._start: float | None = None  # the performance clock, started by the first read()
        self._closed = False

    def rig_at(self, t: float, timestamp: float | None = None) -> RigPose:
        """The performer's true pose ``t`` seconds into the performance."""
        rotations, hips = self.motion.pose(t)
        return RigPose(timestamp=t if timestamp is None else timestamp, track_id=self.track_id,
                       hips_position=hips, rotations=rotations)

    def read(self) -> Frame | None:
        """The next frame, or None when ``duration`` has passed or the source is closed."""
        if self._closed or (self.frames is not None and self._index >= self.frames):
            return None
        if self._start is None:
            self._start = time.monotonic()
        index = self._index
        self._index += 1
        t = index / self.fps
        timestamp = self._start + t
        if self.realtime:
            delay = timestamp - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        rig = self.rig_at(t, timestamp)
        joints = joints_from_rig(rig.rotations, rig.hips_position)
        uv, depth = self.camera.project_with_depth(joints)
        inside = (depth > 0) & np.all(np.isfinite(uv), axis=-1)
        inside &= (uv[:, 0] >= 0) & (uv[:, 0] < self.width) & (uv[:, 1] >= 0) & (uv[:, 1] < self.height)
        keypoints = np.nan_to_num(uv, nan=0.0).astype(np.float32)
        scores = inside.astype(np.float32)
        person = Pose2D(keypoints=keypoints, scores=scores, box=truth_box(keypoints, scores), track_id=self.track_id)
        frame = Frame(index=index, timestamp=timestamp, width=self.width, height=self.height,
                      image=self._draw(keypoints, scores) if self.render else None,
                      truth=GroundTruth(people=[person], joints3d=joints.astype(np.float32), rigs=[rig]), pts=t)
        return frame

    def _draw(self, keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """A plain stick figure: thick limbs and a head disc on a grey background (BGR)."""
        import cv2

        image = np.full((self.height, self.width, 3), 90, np.uint8)
        thickness = max(2, self.width // 80)
        for a, b in SKELETON_EDGES:
            if scores[a] > 0 and scores[b] > 0:
                cv2.line(image, tuple(int(v) for v in keypoints[a]), tuple(int(v) for v in keypoints[b]), (200, 170, 140), thickness, cv2.LINE_AA)
        if scores[0] > 0:
            radius = max(3, int(np.linalg.norm(keypoints[3] - keypoints[4]) * 0.7)) if scores[3] > 0 and scores[4] > 0 else thickness * 2
            cv2.circle(image, tuple(int(v) for v in keypoints[0]), radius, (180, 200, 230), -1, cv2.LINE_AA)
        return image

    def close(self) -> None:
        self._closed = True
