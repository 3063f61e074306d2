"""Retargeting: COCO-17 2D keypoints -> humanoid bone rotations (:class:`~avatar_bridge.types.RigPose`).

Three steps, each replaceable on its own:

1. **Calibration** (:class:`Calibration`): the 2D length of every body segment and the apparent body
   size while the user stands facing the camera, gathered automatically over the first confident
   ``calibration_seconds`` (or again on demand with :meth:`Retargeter.calibrate`), saved/loaded as JSON.
2. **Lifting** (a :class:`Lifter`): 2D keypoints -> 3D joints in the *camera-aligned canonical
   frame* (metres, X = image right, Y = up, Z = towards the camera; a user facing the camera faces
   +Z with their left on +X, exactly like the avatar). :class:`ForeshorteningLifter` recovers each
   segment's depth from its foreshortening against the calibrated length - with a pinhole camera
   (``fov_deg``) the child joint lies on its viewing ray at that distance from its parent, the
   perspective form of |dz| = sqrt(max(L^2 - l^2, 0)) - and picks the nearer or farther solution
   from anatomy (knees bend backwards, elbows towards the biceps, arms stay on their side, the nose
   says which way the body is turned) and temporal continuity (a segment keeps the side of the
   image plane it was on unless its signed depth, extrapolated, crosses zero). A learned 2D-to-3D
   lifter can replace it: anything with ``lift(keypoints, scores, timestamp) -> (17, 3)``.
3. **Rotation solving** (:func:`solve_rotations`): per bone the world rotation that takes its rest
   direction to the observed one, with the twist from the limb plane (elbow/knee hinge) or the torso,
   converted to parent-local quaternions; then joint limits, the unseen-bone policy (hold, then ease
   to rest with the arms down), quaternion continuity and mirror mode.

All rotations are in the canonical frame of :mod:`avatar_bridge.skeleton` (identity = T-pose).
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from . import quat
from .config import RetargetConfig
from .depth_prior import DepthSignPrior, log_prob_at, weights_path
from .files import write_text_atomic
from .keypoints import NUM_KEYPOINTS
from .skeleton import BONE_INDEX, BONE_NAMES, LEG_BONES, PARENT_INDEX, REST_OFFSETS, mirror_rotations
from .types import RigPose

log = logging.getLogger(__name__)

NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = 11, 12, 13, 14, 15, 16
FACE = (NOSE, L_EYE, R_EYE, L_EAR, R_EAR)

# Face points in the head bone's rest frame (metres from the head bone origin at the top of the neck).
# The synthetic performer draws its face with these; the lifter fits them to estimate head rotation.
FACE_TEMPLATE = np.array(
    [
        [0.0, 0.03, 0.10],  # nose
        [0.032, 0.06, 0.085],  # left eye
        [-0.032, 0.06, 0.085],  # right eye
        [0.075, 0.04, -0.01],  # left ear
        [-0.075, 0.04, -0.01],  # right ear
    ]
)

log = logging.getLogger(__name__)

# Segments whose 2D length is calibrated: name -> (parent keypoint, child keypoint).
LIMB_SEGMENTS: dict[str, tuple[int, int]] = {
    "left_upper_arm": (L_SH, L_EL),
    "left_lower_arm": (L_EL, L_WR),
    "right_upper_arm": (R_SH, R_EL),
    "right_lower_arm": (R_EL, R_WR),
    "left_upper_leg": (L_HIP, L_KN),
    "left_lower_leg": (L_KN, L_AN),
    "right_upper_leg": (R_HIP, R_KN),
    "right_lower_leg": (R_KN, R_AN),
}
SEGMENTS: tuple[str, ...] = ("shoulders", "hips", "torso") + tuple(LIMB_SEGMENTS)

# Canonical segment lengths (metres), read off the skeleton's rest offsets (the one place the body's
# proportions are written), used for missing calibration and proportions.
def _rest_length(bone: str) -> float:
    return float(np.linalg.norm(REST_OFFSETS[BONE_INDEX[bone]]))


def _rest_position(bone: str) -> np.ndarray:
    """Rest position relative to the hips bone (sum of the offsets below it)."""
    position = np.zeros(3)
    index = BONE_INDEX[bone]
    while index >= 0 and BONE_NAMES[index] != "hips":
        position += REST_OFFSETS[index]
        index = PARENT_INDEX[index]
    return position


_SHOULDER_Y = float(_rest_position("leftUpperArm")[1])  # hips bone -> shoulder joints
CANONICAL_LENGTHS: dict[str, float] = {
    "shoulders": float(_rest_position("leftUpperArm")[0] - _rest_position("rightUpperArm")[0]),
    "hips": float(_rest_position("leftUpperLeg")[0] - _rest_position("rightUpperLeg")[0]),
    "torso": _SHOULDER_Y - float(_rest_position("leftUpperLeg")[1]),  # hip joints centre -> shoulder joints centre
    **{f"{side}_{segment}": _rest_length(f"{side}{child}")
       for side in ("left", "right")
       for segment, child in (("upper_arm", "LowerArm"), ("lower_arm", "Hand"), ("upper_leg", "LowerLeg"), ("lower_leg", "Foot"))},
}
# The "body size" used for scale and metres per pixel: torso + one leg (hip centre to ankle).
CANONICAL_BODY_M = CANONICAL_LENGTHS["torso"] + CANONICAL_LENGTHS["left_upper_leg"] + CANONICAL_LENGTHS["left_lower_leg"]


def _hips_rest_height() -> float:
    return float(REST_OFFSETS[BONE_INDEX["hips"]][1])


_RIG_LEG_M = CANONICAL_LENGTHS["left_upper_leg"] + CANONICAL_LENGTHS["left_lower_leg"]
# The most of its leg length the hips may stand lower while calibrating (soft knees, a leg angled):
# frames that read lower are more likely a stride that passed the standing check (recalibrating
# mid-walk on the CMU walk read 6-16 cm) than a crouch, and the drop holds for the whole take.
STANDING_DROP_MAX_SHARE = 0.1


# --------------------------------------------------------------------------------------------------
# Skeleton <-> COCO-17


# Bones whose world transform the COCO-17 joints and the body directions need (ancestors first).
_FK_BONES = tuple(
    b for b in BONE_NAMES
    if b in ("hips", "spine", "chest", "upperChest", "neck", "head")
    or any(b == f"{side}{part}" for side in ("left", "right")
           for part in ("Shoulder", "UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot"))
)


def body_transforms(rotations: dict[str, np.ndarray], hips_position: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """World positions and world rotation matrices of the body bones (the 22 COCO-17 needs).

    Same result as :func:`avatar_bridge.skeleton.forward_kinematics` for those bones, with 3x3
    matrices instead of per-bone quaternion calls: about 50 times faster, which matters at 60 Hz per
    person and in the benchmarks.
    """
    names = list(_FK_BONES)
    local = np.tile(quat.IDENTITY, (len(names), 1))
    for i, name in enumerate(names):
        if name in rotations:
            local[i] = rotations[name]
    mats = quat.to_matrix(local)
    pos: dict[str, np.ndarray] = {}
    rot: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        parent_index = PARENT_INDEX[BONE_INDEX[name]]
        if parent_index < 0:
            rot[name] = mats[i]
            pos[name] = REST_OFFSETS[BONE_INDEX[name]] if hips_position is None else np.asarray(hips_position, np.float64)
        else:
            parent = BONE_NAMES[parent_index]
            rot[name] = rot[parent] @ mats[i]
            pos[name] = pos[parent] + rot[parent] @ REST_OFFSETS[BONE_INDEX[name]]
    return pos, rot


def joints_from_rig(rotations: dict[str, np.ndarray], hips_position: np.ndarray | None = None) -> np.ndarray:
    """COCO-17 joint positions (17, 3) of the canonical skeleton posed with ``rotations``.

    This is the forward model the solver inverts: shoulders/elbows/wrists at the upper arm, lower arm
    and hand bones, hips/knees/ankles at the upper leg, lower leg and foot bones, face points from
    :data:`FACE_TEMPLATE` in the head bone's frame.
    """
    pos, rot = body_transforms(rotations, hips_position)
    out = np.zeros((NUM_KEYPOINTS, 3))
    for side, sign in (("left", 0), ("right", 1)):
        out[L_SH + sign] = pos[f"{side}UpperArm"]
        out[L_EL + sign] = pos[f"{side}LowerArm"]
        out[L_WR + sign] = pos[f"{side}Hand"]
        out[L_HIP + sign] = pos[f"{side}UpperLeg"]
        out[L_KN + sign] = pos[f"{side}LowerLeg"]
        out[L_AN + sign] = pos[f"{side}Foot"]
    out[list(FACE)] = pos["head"] + FACE_TEMPLATE @ rot["head"].T
    return out


# --------------------------------------------------------------------------------------------------
# Calibration


@dataclass
class Calibration:
    """What the retargeter knows about the user's body, measured in pixels while they stood.

    ``segments`` are 2D segment lengths at calibration scale; ``body_px`` is torso + leg length (the
    reference for the apparent-size scale); ``hip_center`` the 2D hip centre at calibration;
    ``turn_deg`` how far the face was turned from the camera while calibrating (degrees, signed,
    +- ``CALIBRATION_MAX_TURN_DEG`` at most): the shoulder and hip widths are already divided by its
    cosine (see :meth:`CalibrationPool.calibration`); ``standing_drop_m`` how far below its
    straight-leg height the hips stood while calibrating (metres on the canonical body, 0 to its leg
    length 0.81: knees bent or a leg angled; the median over the frames of the standing leg's
    shortfall of its hip-to-ankle extent along the body from its calibrated length), which the hips
    position subtracts so that the avatar's feet stay on the floor.
    """

    segments: dict[str, float]
    body_px: float
    hip_center: tuple[float, float]
    image_size: tuple[int, int]
    frames: int = 0
    measured: list[str] = field(default_factory=list)  # segments seen (others come from proportions)
    turn_deg: float = 0.0
    standing_drop_m: float = 0.0

    def save(self, path: str | Path) -> None:
        """Write the calibration as JSON through a temporary file (readers never see half a file, a
        failed write leaves none): OSError (:class:`avatar_bridge.files.OutputWriteError`) when it cannot."""
        data = {"format": "avatar-bridge-calibration", "version": 1, **asdict(self)}
        write_text_atomic(Path(path), json.dumps(data, indent=2), "calibration file")

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path} not found: calibrate first: run with --calibration FILE.json writes it after calibrating")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"calibration file {path} is not valid JSON ({exc}): delete it and calibrate again") from None
        if not isinstance(data, dict) or data.get("format") != "avatar-bridge-calibration":
            raise ValueError(f"calibration file {path} is not an avatar-bridge calibration (missing \"format\": "
                             "\"avatar-bridge-calibration\"): pass the file a run wrote with --calibration, or a new path to calibrate into")
        raw = data.get("segments")
        if not isinstance(raw, dict):
            raise ValueError(f"calibration file {path}: segments must be an object of lengths in pixels, got {raw!r}: "
                             "delete it and calibrate again")
        for name, value in raw.items():
            if not _is_number(value):
                raise ValueError(f"calibration file {path}: segments.{name} must be a length in pixels, got {value!r}: "
                                 "delete it and calibrate again")
        drop = data.get("standing_drop_m", 0.0)  # files written before it: 0
        if not (_is_number(drop) and 0.0 <= drop <= _RIG_LEG_M):
            raise ValueError(f"calibration file {path}: standing_drop_m must be a number of metres from 0 to {_RIG_LEG_M:.2f}, "
                             f"got {drop!r}: delete it and calibrate again")
        try:
            segments = {str(k): float(v) for k, v in raw.items()}
            calib = cls(
                segments=segments,
                body_px=float(data["body_px"]),
                hip_center=(float(data["hip_center"][0]), float(data["hip_center"][1])),
                image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
                frames=int(data.get("frames", 0)),
                measured=[str(s) for s in data.get("measured", [])],
                turn_deg=float(data.get("turn_deg", 0.0)),
                standing_drop_m=float(drop),
            )
        except KeyError as exc:
            raise ValueError(f"calibration file {path} lacks {exc.args[0]!r}: delete it and calibrate again") from None
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"calibration file {path} is incomplete or malformed ({exc}): delete it and calibrate again") from None
        missing = [s for s in SEGMENTS if s not in segments]
        if missing:
            raise ValueError(f"calibration file {path} lacks segment {missing[0]!r}: delete it and calibrate again")
        bad = [k for k, v in segments.items() if not (math.isfinite(v) and v > 0)]
        if bad or not (math.isfinite(calib.body_px) and calib.body_px > 0):
            key = bad[0] if bad else "body_px"
            raise ValueError(f"calibration file {path}: {key} must be a positive length in pixels: delete it and calibrate again")
        if not (all(math.isfinite(v) for v in calib.hip_center) and min(calib.image_size) > 0):
            raise ValueError(f"calibration file {path}: hip_center must be finite pixels and image_size positive, got "
                             f"{list(calib.hip_center)} and {list(calib.image_size)}: delete it and calibrate again")
        return calib


def _is_number(value: object) -> bool:
    """A JSON number (JSON's true/false parse as bool, which Python counts as int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# One frame's calibration measurement (see calibration_measurement).
CalibrationMeasurement = tuple[dict[str, float], tuple[float, float] | None, float | None, tuple[float | None, float | None]]


def calibration_measurement(kp: np.ndarray, sc: np.ndarray, min_score: float = 0.3) -> CalibrationMeasurement:
    """The per-frame part of :func:`calibration_from_frames`, for keypoints (17, 2) pixels and scores (17,).

    Returns the 2D length (pixels) of every segment of ``SEGMENTS`` whose end points are confident
    (only finite, positive lengths), the frame's hip centre (the shoulder centre without both hips;
    None without either), the sine of the face's turn away from the camera (:func:`face_turn_sine`;
    None with fewer than four face points) and each leg's (left, right) extent from hip to ankle
    along the body's downward axis in the image (shoulder centre -> hip centre; image down without
    the torso), pixels, None where not seen (for :attr:`Calibration.standing_drop_m`). Plain floats:
    the calibration period measures every pose update once."""
    k = np.asarray(kp, dtype=np.float64).tolist()
    ok = [s >= min_score for s in np.asarray(sc, dtype=np.float64).reshape(-1).tolist()]
    lengths: dict[str, float] = {}

    def put(name: str, dx: float, dy: float) -> None:
        length = math.sqrt(dx * dx + dy * dy)
        if math.isfinite(length) and length > 0:
            lengths[name] = length

    (lsx, lsy), (rsx, rsy), (lhx, lhy), (rhx, rhy) = k[L_SH], k[R_SH], k[L_HIP], k[R_HIP]
    if ok[L_SH] and ok[R_SH]:
        put("shoulders", lsx - rsx, lsy - rsy)
    if ok[L_HIP] and ok[R_HIP]:
        put("hips", lhx - rhx, lhy - rhy)
    if ok[L_SH] and ok[R_SH] and ok[L_HIP] and ok[R_HIP]:
        put("torso", (lsx + rsx) / 2 - (lhx + rhx) / 2, (lsy + rsy) / 2 - (lhy + rhy) / 2)
    for name, (a, b) in LIMB_SEGMENTS.items():
        if ok[a] and ok[b]:
            put(name, k[a][0] - k[b][0], k[a][1] - k[b][1])
    center = None
    if ok[L_HIP] and ok[R_HIP]:
        center = ((lhx + rhx) / 2, (lhy + rhy) / 2)
    elif ok[L_SH] and ok[R_SH]:
        center = ((lsx + rsx) / 2, (lsy + rsy) / 2)
    down_x, down_y = 0.0, 1.0
    torso = lengths.get("torso")
    if torso is not None:
        down_x, down_y = ((lhx + rhx) / 2 - (lsx + rsx) / 2) / torso, ((lhy + rhy) / 2 - (lsy + rsy) / 2) / torso
    legs = tuple((k[ankle][0] - k[hip][0]) * down_x + (k[ankle][1] - k[hip][1]) * down_y if ok[hip] and ok[ankle] else None
                 for hip, ankle in ((L_HIP, L_AN), (R_HIP, R_AN)))
    return lengths, center, face_turn_sine(k, ok), legs


def face_turn_sine(k: list[list[float]], ok: list[bool]) -> float | None:
    """Sine of the face's yaw away from the camera (signed; 0 facing it) from the weak-perspective
    fit of ``FACE_TEMPLATE`` (:func:`face_rotation_rows`): the depth component of the fitted image
    x axis. ``k`` (17, 2) pixels as lists, ``ok`` (17,) confident; None with fewer than four face
    points or a degenerate fit."""
    seen = tuple(i for i in FACE if ok[i] and math.isfinite(k[i][0]) and math.isfinite(k[i][1]))  # as the lift's
    if len(seen) < 4:
        return None
    rows = face_rotation_rows([(k[i][0], -k[i][1]) for i in seen], seen)  # y up
    return None if rows is None else rows[0][2]


def _percentile(values: list[float], q: float) -> float:
    """``np.percentile(values, q)`` of a sorted, non-empty list (numpy's default linear method,
    with its interpolation written the same way)."""
    n = len(values)
    index = (n - 1) * q / 100.0
    if index >= n - 1:
        return values[-1]
    lo = math.floor(index)
    gamma = index - lo
    a, b = values[lo], values[lo + 1]
    diff = b - a
    return a + diff * gamma if gamma < 0.5 else b - diff * (1 - gamma)


def _median(values: list[float]) -> float:
    """``np.median`` of a non-empty list."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class CalibrationPool:
    """The :func:`calibration_measurement` of a changing set of frames, kept ready to calibrate from.

    Per segment its lengths stay sorted (the 90th percentile is then a look-up), so adding or removing
    a frame costs a few insertions and :meth:`calibration` does not revisit every frame: the
    retargeter recalibrates on every pose update of the calibration period, over a set of frames
    that grows (and, for the straighter half of the standing frames, changes) by a frame or two.
    ``key`` identifies a frame (any hashable, unique in the pool).
    """

    def __init__(self) -> None:
        self._lengths: dict[str, list[float]] = {s: [] for s in SEGMENTS}
        self._centers: dict[object, tuple[float, float]] = {}
        self._turns: list[float] = []  # face_turn_sine of the frames that have one, sorted
        self._legs: dict[object, tuple[float | None, float | None]] = {}  # leg extents of the frames that show a leg
        self._keys: set = set()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    @staticmethod
    def _pooled_lengths(lengths: dict[str, float], turn: float | None) -> dict[str, float]:
        """The lengths a frame adds: its shoulder and hip widths divided by the cosine of its own
        face turn (up to ``CALIBRATION_MAX_TURN_DEG``), every other length as measured."""
        if turn is None:
            return lengths
        sine = min(max(turn, -CALIBRATION_MAX_TURN_SINE), CALIBRATION_MAX_TURN_SINE)
        cosine = math.sqrt(1.0 - sine * sine)
        return {name: length / cosine if name in WIDTH_SEGMENTS else length for name, length in lengths.items()}

    def add(self, key: object, measurement: CalibrationMeasurement) -> None:
        lengths, center, turn, legs = measurement
        for name, length in self._pooled_lengths(lengths, turn).items():
            bisect.insort(self._lengths[name], length)
        if center is not None:
            self._centers[key] = center
        if turn is not None:
            bisect.insort(self._turns, turn)
        if legs != (None, None):
            self._legs[key] = legs
        self._keys.add(key)

    def remove(self, key: object, measurement: CalibrationMeasurement) -> None:
        """Take out a frame added with this ``key`` and ``measurement``."""
        lengths, _, turn, _ = measurement
        for name, length in self._pooled_lengths(lengths, turn).items():
            values = self._lengths[name]
            del values[bisect.bisect_left(values, length)]
        if turn is not None:
            del self._turns[bisect.bisect_left(self._turns, turn)]
        self._centers.pop(key, None)
        self._legs.pop(key, None)
        self._keys.remove(key)

    def hold(self, keys: set, measurements: list) -> None:
        """Make the pool hold exactly the frames ``keys`` (indices into ``measurements``): only the
        difference from what it holds now is added or removed."""
        for key in keys - self._keys:
            self.add(key, measurements[key])
        for key in self._keys - keys:
            self.remove(key, measurements[key])

    def calibration(self, image_size: tuple[int, int]) -> Calibration:
        """:func:`calibration_from_frames` of the frames in the pool."""
        if not self._keys:
            raise ValueError("calibration needs at least one frame with the torso visible: stand facing the camera")
        measured = {s: _percentile(v, WIDTH_PERCENTILE if s in WIDTH_SEGMENTS else 90.0) for s, v in self._lengths.items() if v}
        # Left and right bones match in people, and each side's percentile is a lower bound on its
        # length (foreshortening only shortens): both sides take the longer one. An arm held bent
        # all through the period (a run, a hand on a mouse) then gets the straight arm's length
        # instead of reading as short, which made the lifter flatten it into the image plane; a side
        # never seen borrows the other side's.
        for limb in ("upper_arm", "lower_arm", "upper_leg", "lower_leg"):
            sides = [measured[name] for name in (f"left_{limb}", f"right_{limb}") if name in measured]
            if sides:
                measured[f"left_{limb}"] = measured[f"right_{limb}"] = max(sides)
        if not measured:
            raise ValueError("calibration saw no body segment with confident end points: stand facing the camera, whole torso in view")
        # The widths were undone frame by frame for the turn each frame's face shows (_pooled_lengths);
        # the median turn is what the calibration reports.
        turn = 0.0
        if self._turns:
            sine = min(max(_median(self._turns), -CALIBRATION_MAX_TURN_SINE), CALIBRATION_MAX_TURN_SINE)
            turn = math.degrees(math.asin(sine))
        # Shoulder and hip widths no narrower than WIDTH_FLOOR_SHARE of the canonical proportions
        # (width / torso): a user calibrating side-on shows them at a fraction of their length.
        if "torso" in measured:
            for name in WIDTH_SEGMENTS:
                if name in measured:
                    measured[name] = max(measured[name], width_floor(measured, name))
        # Pixels per metre from what was seen (median over segments), used to fill in the rest.
        ppm = _median([measured[s] / CANONICAL_LENGTHS[s] for s in measured])
        segments = {s: measured.get(s, CANONICAL_LENGTHS[s] * ppm) for s in SEGMENTS}
        body_px = segments["torso"] + (segments["left_upper_leg"] + segments["left_lower_leg"])
        # How low the hips stood: per frame the standing leg's (the more extended one's) shortfall
        # of its extent along the body from its calibrated length, the median over the frames, on the
        # avatar's leg length, at most STANDING_DROP_MAX_SHARE of it. A leg whose ankle is not seen
        # does not count.
        drops = []
        for extents in self._legs.values():
            shortfalls = [1.0 - extent / (segments[f"{side}_upper_leg"] + segments[f"{side}_lower_leg"])
                          for side, extent in zip(("left", "right"), extents) if extent is not None]
            if shortfalls:
                drops.append(min(max(0.0, min(shortfalls)), 1.0))
        standing_drop_m = min(_median(drops), STANDING_DROP_MAX_SHARE) * _RIG_LEG_M if drops else 0.0
        if self._centers:
            n = len(self._centers)
            center = (math.fsum(c[0] for c in self._centers.values()) / n, math.fsum(c[1] for c in self._centers.values()) / n)
        else:
            center = (image_size[0] / 2, image_size[1] / 2)
        return Calibration(
            segments=segments,
            body_px=float(body_px),
            hip_center=(float(center[0]), float(center[1])),
            image_size=(int(image_size[0]), int(image_size[1])),
            frames=len(self._keys),
            measured=sorted(measured),
            turn_deg=float(turn),
            standing_drop_m=float(standing_drop_m),
        )


# A calibration frame must show a standing pose. Its "bend" is the larger of: the most bent visible
# knee or elbow in the image (180 - the hip-knee-ankle / shoulder-elbow-wrist angle, degrees, over
# CALIBRATION_BEND_DEG) and the ankles' height difference (share of the 2D leg length, over
# CALIBRATION_FEET_LEVEL); above 1 the frame is rejected. The limits leave room for the slight knee
# and elbow flexion of a relaxed stance seen from 45 degrees (20-30 degrees in the image); among the
# accepted frames the straighter half is used.
CALIBRATION_BEND_DEG = 45.0
CALIBRATION_FEET_LEVEL = 0.15
CALIBRATION_MIN_FRAMES = 5  # accepted frames a calibration period needs
CALIBRATION_PATIENCE = 10.0  # periods to wait for them before calibrating from every frame
# Hips this close to the frame's bottom edge (share of its height) count as cut off while
# calibrating, so a user framed chest-up gets upper-body mode (found by a new user: the hips sat on
# the edge at score 0.5 and the legs swung 110 degrees).
BOTTOM_EDGE_SHARE = 0.015
# The largest turn from the camera the calibration corrects the shoulder/hip widths for: beyond it
# the far ear is hidden and the face fit too uncertain to divide by its cosine.
CALIBRATION_MAX_TURN_DEG = 60.0
CALIBRATION_MAX_TURN_SINE = math.sin(math.radians(CALIBRATION_MAX_TURN_DEG))
# Shoulder and hip widths: a user turned away shows them shortened by the cosine of the turn (the
# other segments hang roughly in the image plane), so each frame's width is divided by the cosine of
# the turn its own face shows, and the calibration takes the 60th percentile of those: noise on a
# 28-35 px hip line lifts its 90th percentile by about 10% (a frontal torso then reads as turned
# 25 degrees), and a face-turn error still leaves some frames short. Chosen over 50/60/75/85/90 by
# the retargeting floors met on six clips, leave-one-clip-out (docs/retarget.md).
WIDTH_SEGMENTS = ("shoulders", "hips")
WIDTH_PERCENTILE = 60.0
# A width below this share of the canonical body's (relative to the calibrated torso) is taken as a
# calibration seen side-on (beyond the face turn's 60-degree reach) and raised to it. The canonical
# widths are on the narrow side of people's (COCO's shoulder points on the VRM skeleton's upper-arm
# joints), so a share under 1 leaves a frontal calibration alone. The AMP cartwheel calibrates
# standing side-on: hips 0.21 of the torso against 0.355 true, shoulders 0.30 against 0.77
# (docs/retarget.md, "Calibrated side-on").
WIDTH_FLOOR_SHARE = 0.85


def width_floor(segments: dict[str, float], name: str) -> float:
    """The narrowest shoulder or hip width (``name``) a calibration keeps, pixels: ``WIDTH_FLOOR_SHARE``
    of the canonical width / torso proportion times ``segments["torso"]``."""
    return WIDTH_FLOOR_SHARE * CANONICAL_LENGTHS[name] / CANONICAL_LENGTHS["torso"] * segments["torso"]


def calibration_pose_bend(kp: np.ndarray, sc: np.ndarray, min_score: float = 0.3) -> float:
    """How far one frame (keypoints (17, 2) pixels, scores (17,)) is from a standing pose: 0 = every
    visible limb straight and both feet level, 1 = at the rejection limit (see above). Limbs not seen
    are not judged. Plain floats (it runs on every pose update of a calibration period)."""
    k = np.asarray(kp, dtype=np.float64).tolist()
    ok = [s >= min_score for s in np.asarray(sc, dtype=np.float64).reshape(-1).tolist()]
    worst = 0.0
    for a, b, c in ((L_HIP, L_KN, L_AN), (R_HIP, R_KN, R_AN), (L_SH, L_EL, L_WR), (R_SH, R_EL, R_WR)):
        if not (ok[a] and ok[b] and ok[c]):
            continue
        ux, uy = k[a][0] - k[b][0], k[a][1] - k[b][1]
        vx, vy = k[c][0] - k[b][0], k[c][1] - k[b][1]
        nu, nv = math.sqrt(ux * ux + uy * uy), math.sqrt(vx * vx + vy * vy)
        if nu < 1e-6 or nv < 1e-6:
            continue
        angle = math.degrees(math.acos(min(max((ux * vx + uy * vy) / (nu * nv), -1.0), 1.0)))
        worst = max(worst, (180.0 - angle) / CALIBRATION_BEND_DEG)
    if ok[L_AN] and ok[R_AN] and ok[L_HIP] and ok[R_HIP]:
        left = math.sqrt((k[L_HIP][0] - k[L_AN][0]) ** 2 + (k[L_HIP][1] - k[L_AN][1]) ** 2)
        right = math.sqrt((k[R_HIP][0] - k[R_AN][0]) ** 2 + (k[R_HIP][1] - k[R_AN][1]) ** 2)
        leg = (left + right) / 2
        worst = max(worst, abs(k[L_AN][1] - k[R_AN][1]) / max(leg, 1e-6) / CALIBRATION_FEET_LEVEL)
    return float(worst)


def calibration_pose_ok(kp: np.ndarray, sc: np.ndarray, min_score: float = 0.3) -> bool:
    """Whether one frame may calibrate: no visible knee or elbow bent more than
    ``CALIBRATION_BEND_DEG`` in the image, and no foot raised (ankle heights apart by more than
    ``CALIBRATION_FEET_LEVEL`` of the 2D leg length). Such frames would set segment lengths and the
    hip centre from a pose the lifter then takes as "standing"."""
    return calibration_pose_bend(kp, sc, min_score) <= 1.0


def calibration_from_frames(
    frames: list[tuple[np.ndarray, np.ndarray]], image_size: tuple[int, int], min_score: float = 0.3
) -> Calibration:
    """Calibrate from (keypoints, scores) frames of a user standing and facing the camera.

    A segment's length is the 90th percentile of its 2D length (foreshortening only shortens, noise
    goes both ways), averaged over left and right; a segment never seen is filled in from the
    canonical proportions, scaled by the segments that were seen; the hip centre is the mean over
    the frames that show it (see :func:`calibration_measurement`).
    """
    if not frames:
        raise ValueError("calibration needs at least one frame with the torso visible: stand facing the camera")
    pool = CalibrationPool()
    for i, (kp, sc) in enumerate(frames):
        pool.add(i, calibration_measurement(kp, sc, min_score))
    return pool.calibration(image_size)


# --------------------------------------------------------------------------------------------------
# Lifting 2D -> 3D


class Lifter(Protocol):
    """Turns one person's 2D keypoints into 3D joints (17, 3) in the camera-aligned canonical frame.

    Metres, hip centre at the origin, X = image right, Y = up, Z = towards the camera; NaN rows mark
    joints it could not place. Stateful lifters use ``timestamp`` for temporal continuity.
    """

    def lift(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float) -> np.ndarray: ...


# Small-vector helpers. A numpy call costs 1-4 us on a tiny array, mostly call overhead, while a few
# float operations cost tens of nanoseconds: the lifter and the rotation solver run per person on every
# pose update and output tick on 3-vectors and four limbs, so they work in plain Python floats
# (3-vectors as tuples, 3x3 matrices as row-major 9-tuples).


def _on_ray(parent: tuple[float, float, float], ray: tuple[float, float, float], length: float, planar: bool):
    """Nearer and farther points (camera coordinates, metres, float tuples) on the viewing ``ray`` at
    ``length`` from ``parent`` (the closest point twice if none reaches). ``planar``: the point at the
    parent's depth, twice. The root is taken from |ray x parent|, not b^2 - a c: no cancellation at
    long range."""
    rx, ry, rz = ray
    px, py, pz = parent
    if planar:
        k = pz / rz
        return (rx * k, ry * k, rz * k), (rx * k, ry * k, rz * k)
    a = rx * rx + ry * ry + rz * rz
    b = rx * px + ry * py + rz * pz
    ox, oy, oz = ry * pz - rz * py, rz * px - rx * pz, rx * py - ry * px
    disc = a * length * length - (ox * ox + oy * oy + oz * oz)
    root = math.sqrt(0.0 if disc < 0.0 else disc)  # max(disc, 0.0) without the call (hot path)
    near, far = (b - root) / a, (b + root) / a
    return (rx * near, ry * near, rz * near), (rx * far, ry * far, rz * far)


def _unit3(x: float, y: float, z: float) -> tuple[float, float, float]:
    """Unit vector along a float 3-vector (the zero vector stays zero)."""
    n = math.sqrt(x * x + y * y + z * z)
    if n < 1e-12:  # max(n, 1e-12) without the call (hot path)
        n = 1e-12
    return x / n, y / n, z / n


# Segments with a signed-depth continuity state, in the lifter's state list: the torso, then the limbs.
_SIGN_SEGMENTS: tuple[str, ...] = ("torso",) + tuple(LIMB_SEGMENTS)
_TORSO_SLOT = 0

# The four two-segment limbs the lifter places: left arm, left leg, right arm, right leg.
_LIFT_LIMBS = (
    ("left_upper_arm", "left_lower_arm", L_SH, L_EL, L_WR, True, 1.0),
    ("left_upper_leg", "left_lower_leg", L_HIP, L_KN, L_AN, False, 1.0),
    ("right_upper_arm", "right_lower_arm", R_SH, R_EL, R_WR, True, -1.0),
    ("right_upper_leg", "right_lower_leg", R_HIP, R_KN, R_AN, False, -1.0),
)
# The same as one row per limb for the lifter's loop: parent / middle / end keypoint, the upper and
# lower segment's index in LIMB_SEGMENTS and slot in _SIGN_SEGMENTS, arm or leg, the side (+1 left:
# its outward direction is the body's left axis) and the bend sign (elbows bend towards the front
# (alt: up), knees towards the back (alt: down)).
_LIFT_LIMB_ROWS = tuple(
    (a, b, c, list(LIMB_SEGMENTS).index(upper), list(LIMB_SEGMENTS).index(lower),
     _SIGN_SEGMENTS.index(upper), _SIGN_SEGMENTS.index(lower), arm, side, 1.0 if arm else -1.0)
    for upper, lower, a, b, c, arm, side in _LIFT_LIMBS
)


@dataclass(frozen=True)
class LifterTuning:
    """Weights of the depth-sign choice (tuned on the CMU walk and the synthetic performer; see
    docs/retarget.md). Costs are in units of (signed depth / segment length)^2."""

    prior_gain: float = 0.05  # scale of every anatomy term against continuity
    rate_keep: float = 0.5  # smoothing of the signed-depth rate (0 = last frame only)
    degenerate_trust_keep: float = 0.6  # continuity trust kept per frame a segment looks over-long
    arm_neutral_hang: float = 0.6  # cos of the angle from straight down where the elbow prior flips
    arm_weight: float = 40.0  # weight of the upper-arm priors below
    arm_own_side: float = 2.0  # preference for an upper arm on its own side of the body (not across it)
    thigh_forward: float = 1.0  # preference for the knee in front of the hip
    elbow_weight: float = 150.0  # forearm bends towards the biceps side (almost a hard rule)
    knee_weight: float = 40.0  # the knee bends backwards (almost a hard rule)
    upper_plane_weight: float = 10.0  # plane preference of upper arms / thighs relative to the rest
    torso_weight: float = 4.0  # the torso leans forwards rather than backwards
    plane: float = 3.0  # preference for the solution nearer the image plane
    reach: float = 2.0  # penalty per unit of missing length when a segment cannot reach its ray
    limb_scale_share: float = 0.9  # third largest limb ratio counts this much against the torso's
    learned_weight: float = 3.0  # weight of the learned depth prior's log-probabilities (depth_prior.py)


# The limb segments' 2D ends (LIMB_SEGMENTS order).
_LIMB_ENDS = tuple(LIMB_SEGMENTS.values())
_NAN3 = (math.nan, math.nan, math.nan)
# A segment's continuity state: (signed depth dz / L, its rate per second, when it was set (-inf:
# never, no continuity), how much its extrapolation is believed (lowered by degenerate frames)).
_NO_SIGN = (0.0, 0.0, -math.inf, 1.0)


class ForeshorteningLifter:
    """Depth from foreshortening against the calibrated segment lengths, sign from anatomy + continuity.

    Works with a pinhole model when the focal length is known (``focal_px``, from the configured
    field of view): each child joint lies on its pixel's viewing ray at the calibrated distance from
    its parent, which has two solutions (nearer / farther than the parent) - the perspective form of
    |dz| = sqrt(L^2 - l^2). The absolute distance comes from the apparent size, assuming the user has
    the canonical body size (only the strength of the perspective correction depends on that).

    It runs per person on every pose update and output tick on 3-vectors, so it works in plain
    Python floats (numpy's per-call overhead would dominate); only the output is an array.
    """

    def __init__(self, calibration: Calibration, min_score: float = 0.3, planar: bool = False,
                 continuity_seconds: float = 0.5, focal_px: float = 0.0, image_size: tuple[int, int] | None = None,
                 tuning: LifterTuning | None = None, depth_prior: "DepthSignPrior | None" = None) -> None:
        self.calibration = calibration
        self.depth_prior = depth_prior  # learned depth-class log-probabilities per limb segment (None: anatomy rules only)
        self.tuning = tuning or LifterTuning()
        self.min_score = min_score
        self.planar = planar  # depth 0 everywhere: the naive baseline
        self.continuity_seconds = continuity_seconds
        self.focal_px = focal_px  # 0 = orthographic
        self.image_size = image_size or calibration.image_size
        self.scale = 0.0  # current apparent size / calibration size
        self._scale_time = -math.inf
        self._scale_frozen = False  # a fork keeps the scale of the update it was taken after
        self._signs = self._no_signs()

    @staticmethod
    def _no_signs() -> list[tuple[float, float, float, float]]:
        """Signed-depth state, one ``_NO_SIGN``-shaped tuple per segment of ``_SIGN_SEGMENTS``. The
        tuples are replaced, never changed in place, so a fork only copies the list."""
        return [_NO_SIGN] * len(_SIGN_SEGMENTS)

    def reset(self) -> None:
        self.scale = 0.0
        self._scale_time = -math.inf
        self._signs = self._no_signs()

    def fork(self) -> "ForeshorteningLifter":
        """A copy whose depth signs can advance without touching this one, at this one's scale.

        The output clock lifts the pose predicted for each send time on a fork, so how often outputs
        tick never changes how depth is resolved; only pose updates advance the real state. The
        apparent size stays as the last pose update left it: the fork's ticks re-smoothing it towards
        held keypoints (a camera gone quiet) moved the depth solutions and snapped an arm 13-42 degrees
        between two ticks (tests/test_faults.py, lost camera).
        """
        twin = copy.copy(self)
        twin._signs = list(self._signs)
        twin._scale_frozen = self.scale > 0
        return twin

    # -- scale ---------------------------------------------------------------------------------------
    def _update_scale(self, limb_ratios: list[float], torso_ratio: float, timestamp: float) -> float:
        """Apparent size relative to calibration, from the 2D / calibrated length ratios of the limb
        segments (NaN: not seen) and of the torso.

        Every segment's 2D length is at most its true length, so each ratio l / L is a lower bound on
        the scale. The torso is rarely foreshortened much; the third largest limb ratio guards against
        a bent-over torso while ignoring one or two limbs magnified by perspective or noise.
        """
        if self._scale_frozen:
            return self.scale
        limbs = sorted((r for r in limb_ratios if math.isfinite(r)), reverse=True)
        torso = torso_ratio if math.isfinite(torso_ratio) else 0.0
        observed = max(torso, self.tuning.limb_scale_share * (limbs[2] if len(limbs) > 2 else 0.0))
        if observed <= 0:
            observed = limbs[0] if limbs else 0.0
        if observed <= 0:
            return self.scale if self.scale > 0 else 1.0
        if self.scale <= 0 or timestamp - self._scale_time > 2.0:
            self.scale = observed
        else:
            dt = max(timestamp - self._scale_time, 1e-3)
            self.scale += (1.0 - math.exp(-dt / 0.1)) * (observed - self.scale)
        self._scale_time = timestamp
        return self.scale

    # -- sign choice ---------------------------------------------------------------------------------
    def _extrapolation(self, timestamp: float) -> tuple[list[float], list[float]]:
        """Per segment of ``_SIGN_SEGMENTS``: the weight of continuity (how recent and trusted its
        state is; 0 without a recent one) and its signed depth extrapolated to ``timestamp``. A
        candidate signed depth ``v`` costs ``weight * (v - extrapolated) ** 2``."""
        span = self.continuity_seconds
        weight, extrapolated = [], []
        for value, rate, time, trust in self._signs:
            age = timestamp - time
            if 0 <= age <= span:
                weight.append((1.0 - age / span) * trust)
                extrapolated.append(value + rate * age)
            else:  # never set (-inf), stale or in the future: no continuity
                weight.append(0.0)
                extrapolated.append(value)
        return weight, extrapolated

    def _commit(self, chosen: list[tuple[int, float, bool]], timestamp: float) -> None:
        """Remember segments' chosen signed depths, ``(slot in _SIGN_SEGMENTS, value, degenerate)``,
        and update their rates (not from degenerate frames, where the segment looked longer than
        calibrated and its depth is just the closest point)."""
        span = self.continuity_seconds
        keep = self.tuning.rate_keep
        signs = self._signs
        for slot, new, degenerate in chosen:
            value, rate, time, trust = signs[slot]
            age = timestamp - time
            if not 0 < age <= span:  # fresh start
                rate, trust = 0.0, 1.0
            elif degenerate:
                # Near the image plane a crossing and a turn back look alike: a degenerate frame holds
                # the rate but trusts the extrapolation less with every such frame, so anatomy decides
                # where it comes out.
                trust = trust * self.tuning.degenerate_trust_keep
            else:
                rate = keep * rate + (1 - keep) * (new - value) / age
                trust = min(1.0, trust + 0.25)
            signs[slot] = (new, rate, timestamp, trust)

    # -- lifting -------------------------------------------------------------------------------------
    def lift(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float) -> np.ndarray:
        k = np.asarray(keypoints, dtype=np.float64).tolist()
        min_score = self.min_score
        seen = [s >= min_score and math.isfinite(p[0]) and math.isfinite(p[1])
                for p, s in zip(k, np.asarray(scores, dtype=np.float64).tolist())]
        cal = self.calibration
        segments = cal.segments
        limb_cal = [segments[s] for s in LIMB_SEGMENTS]
        limb_ratios = []
        for (a, b), length in zip(_LIMB_ENDS, limb_cal):
            if seen[a] and seen[b]:
                dx, dy = k[a][0] - k[b][0], k[a][1] - k[b][1]
                limb_ratios.append(math.sqrt(dx * dx + dy * dy) / length)
            else:
                limb_ratios.append(math.nan)
        have_hips = seen[L_HIP] and seen[R_HIP]
        have_shoulders = seen[L_SH] and seen[R_SH]
        torso_px = math.nan
        if have_hips and have_shoulders:
            dx = (k[L_SH][0] + k[R_SH][0]) / 2 - (k[L_HIP][0] + k[R_HIP][0]) / 2
            dy = (k[L_SH][1] + k[R_SH][1]) / 2 - (k[L_HIP][1] + k[R_HIP][1]) / 2
            torso_px = math.sqrt(dx * dx + dy * dy)
        scale = self._update_scale(limb_ratios, torso_px / segments["torso"], timestamp)
        if not (have_hips or have_shoulders):
            return np.full((NUM_KEYPOINTS, 3), np.nan)
        tune = self.tuning
        planar = self.planar

        # Viewing rays of the seen keypoints (x right, y up, depth away from the camera). Orthographic:
        # parallel rays, the image is taken as seen from a very distant camera with the same pixel scale.
        width, height = self.image_size
        ortho = self.focal_px <= 0
        focal = 1e6 if ortho else self.focal_px
        half_w, half_h = width / 2, height / 2
        ray = [((p[0] - half_w) / focal, -(p[1] - half_h) / focal, 1.0) if s else None for p, s in zip(k, seen)]
        dist_cal = focal * CANONICAL_BODY_M / cal.body_px  # metres to the user at calibration
        dist = dist_cal / scale
        pts: list[tuple[float, float, float] | None] = [None] * NUM_KEYPOINTS  # camera coordinates, metres
        weight, extrapolated = self._extrapolation(timestamp)

        # Which way the body is turned: cos from the shoulder/hip line widths (signed: + facing the
        # camera), sin's sign from the nose relative to the ears (or the eyes, or the shoulders). Both
        # are measured along the body's own left-right axis in the image, perpendicular to the
        # hips-to-shoulders line (image x for an upright body), so that a body upside down (a
        # cartwheel, a handstand) or lying is not read as turned away.
        across_x, across_y = 1.0, 0.0
        if have_hips and have_shoulders and torso_px > 0.5 * segments["torso"] * scale:
            across_x, across_y = -dy / torso_px, dx / torso_px
        cos_terms = []
        if have_shoulders:
            width = (k[L_SH][0] - k[R_SH][0]) * across_x + (k[L_SH][1] - k[R_SH][1]) * across_y
            cos_terms.append(width / (segments["shoulders"] * scale))
        if have_hips:
            width = (k[L_HIP][0] - k[R_HIP][0]) * across_x + (k[L_HIP][1] - k[R_HIP][1]) * across_y
            cos_terms.append(width / (segments["hips"] * scale))
        cos_yaw = min(max(sum(cos_terms) / len(cos_terms), -1.0), 1.0)
        nose_side = 0.0
        for a, b in ((L_EAR, R_EAR), (L_EYE, R_EYE), (L_SH, R_SH)):
            if seen[NOSE] and seen[a] and seen[b]:
                nose_side = ((k[NOSE][0] - (k[a][0] + k[b][0]) / 2) * across_x
                             + (k[NOSE][1] - (k[a][1] + k[b][1]) / 2) * across_y)
                break
        sin_sign = 1.0 if nose_side >= 0 else -1.0
        sin_yaw = sin_sign * math.sqrt(max(1.0 - cos_yaw**2, 0.0))
        facing = (sin_yaw, 0.0, cos_yaw)  # horizontal forward of the body, canonical axes

        def across(seg: str, left: int, right: int, center: tuple[float, float, float]) -> None:
            """Both ends of a line across the body; the far end is the side the body turned away from
            (decided by the face every frame: the head rarely turns against the torso for long)."""
            half = segments[seg] * dist_cal / focal / 2
            left_near, left_far = _on_ray(center, ray[left], half, planar)
            right_near, right_far = _on_ray(center, ray[right], half, planar)
            pts[left] = left_far if sin_sign > 0 else left_near
            pts[right] = right_near if sin_sign > 0 else right_far

        chosen = []  # (sign slot, signed depth, degenerate) to commit at the end
        torso_m = segments["torso"] * dist_cal / focal
        if have_hips:
            hip_center = tuple((ray[L_HIP][i] + ray[R_HIP][i]) / 2 * dist for i in range(3))
            across("hips", L_HIP, R_HIP, hip_center)
        if have_shoulders:
            sh_ray = tuple((ray[L_SH][i] + ray[R_SH][i]) / 2 for i in range(3))
            if have_hips:
                # Torso lean: towards the facing direction more often than away, and rarely far.
                best = None
                w, e = weight[_TORSO_SLOT], extrapolated[_TORSO_SLOT]
                for candidate in _on_ray(hip_center, sh_ray, torso_m, planar):
                    value = (hip_center[2] - candidate[2]) / max(torso_m, 1e-9)
                    lx, ly, lz = _unit3(candidate[0] - hip_center[0], candidate[1] - hip_center[1], hip_center[2] - candidate[2])
                    lean = lx * facing[0] + ly * facing[1] + lz * facing[2]
                    cost = w * (value - e) ** 2 + tune.prior_gain * tune.torso_weight * (tune.plane * abs(value) - lean)
                    if best is None or cost < best[0]:
                        best = (cost, candidate, value)
                _, sh_center, value = best
                chosen.append((_TORSO_SLOT, value, False))
            else:
                sh_center = tuple(v * dist for v in sh_ray)
                hip_center = (sh_center[0], sh_center[1] - torso_m, sh_center[2])
            across("shoulders", L_SH, R_SH, sh_center)

        # Body frame (canonical axes) for the limb priors.
        ls, rs, lh, rh = pts[L_SH], pts[R_SH], pts[L_HIP], pts[R_HIP]
        if have_shoulders and have_hips:
            left_axis = _unit3(*[ls[i] - rs[i] + lh[i] - rh[i] for i in range(3)])
            up = _unit3(sh_center[0] - hip_center[0], sh_center[1] - hip_center[1], sh_center[2] - hip_center[2])
        elif have_shoulders:
            left_axis, up = _unit3(*[ls[i] - rs[i] for i in range(3)]), (0.0, 1.0, 0.0)
        else:
            left_axis, up = _unit3(*[lh[i] - rh[i] for i in range(3)]), (0.0, 1.0, 0.0)
        left_axis = (left_axis[0], left_axis[1], -left_axis[2])  # canonical axes (Z towards the camera)
        if have_shoulders and have_hips:
            up = (up[0], up[1], -up[2])
        forward = (left_axis[1] * up[2] - left_axis[2] * up[1], left_axis[2] * up[0] - left_axis[0] * up[2],
                   left_axis[0] * up[1] - left_axis[1] * up[0])
        forward = _unit3(*forward) if math.sqrt(sum(f * f for f in forward)) > 1e-6 else facing

        metres = [length * dist_cal / focal for length in limb_cal]
        learned = None
        if self.depth_prior is not None and not planar:
            learned = self.depth_prior.log_probs_one(k, seen, [r / scale for r in limb_ratios])  # ratio NaN: unseen
        self._place_limbs(pts, ray, seen, metres, (forward, up, left_axis), weight, extrapolated, chosen, learned)
        if chosen:
            self._commit(chosen, timestamp)

        # Face: fit the template's rotation to the 2D face points (weak perspective, affine fit), and
        # place the face points around the head at the depth that rotation gives them.
        face_seen = tuple(i for i in FACE if seen[i])
        if len(face_seen) >= 4 and have_shoulders:
            rot = face_rotation_rows([(k[i][0], -k[i][1]) for i in face_seen], face_seen)
            if rot is not None:
                (r0x, r0y, r0z), (r1x, r1y, r1z), (r2x, r2y, r2z) = rot
                # FACE_TEMPLATE @ rot.T (canonical axes, metres), centred on the seen points' mean.
                offsets = [(tx * r0x + ty * r0y + tz * r0z, tx * r1x + ty * r1y + tz * r1z, tx * r2x + ty * r2y + tz * r2z)
                           for tx, ty, tz in _FACE_TEMPLATE_ROWS]
                n = len(face_seen)
                mx, my, mz = (sum(offsets[i][c] for i in face_seen) / n for c in range(3))
                z = sum(ray[i][2] for i in face_seen) / n * sh_center[2]
                cx = sum(ray[i][0] for i in face_seen) / n * sh_center[2]
                cy = sum(ray[i][1] for i in face_seen) / n * sh_center[2]
                for i in FACE:
                    ox, oy, oz = offsets[i][0] - mx, offsets[i][1] - my, offsets[i][2] - mz
                    depth = z - oz
                    pts[i] = (ray[i][0] * depth, ray[i][1] * depth, depth) if seen[i] else (cx + ox, cy + oy, depth)

        hx, hy, hz = hip_center  # canonical axes, hip centre at the origin; rows never placed stay NaN
        return np.array([_NAN3 if p is None else (p[0] - hx, p[1] - hy, -(p[2] - hz)) for p in pts])

    def _place_limbs(self, pts: list, ray: list, seen: list[bool], metres: list[float], frame: tuple,
                     weight: list[float], extrapolated: list[float], chosen: list[tuple[int, float, bool]],
                     learned: list[list[float]] | None = None) -> None:
        """Place the arms and legs (elbows, wrists, knees, ankles into ``pts``), one limb at a time.

        A limb whose parent joint is placed and whose middle joint is seen picks the nearer/farther
        solution of both segments together. Cost per configuration: continuity of each segment's
        signed depth, anatomy scores (weighted: the elbow/knee hinge is nearly a hard rule), a mild
        preference for solutions close to the image plane (with perspective the two differ; the
        smaller out-of-plane angle is likelier), and a penalty when the lower segment cannot reach its
        end point's viewing ray (its parent joint is then in the wrong place). Arms: a raised elbow
        tends to be in front, a hanging one slightly behind (arm swing), the upper arm stays on its own
        side, the forearm bends towards the biceps side. Legs: the knee tends to be in front and only
        bends backwards (a hinge). An unseen end joint leaves the upper segment's choice alone.

        ``pts``: camera-coordinate points per keypoint (None: not placed); ``ray``: viewing rays of
        the seen keypoints; ``metres``: limb segment lengths (LIMB_SEGMENTS order); ``frame``: the
        body's forward, up and left axes (canonical). Appends (sign slot, signed depth, degenerate)
        of every placed segment to ``chosen``.
        """
        tune = self.tuning
        planar = self.planar
        gain, plane, reach_weight = tune.prior_gain, tune.plane, tune.reach
        upper_plane = tune.plane * tune.upper_plane_weight
        learned_weight = tune.learned_weight
        # (max(x, c) is written as a conditional below: the builtin call costs more than the math.)
        (fx, fy, fz), (ux, uy, uz), (lx, ly, lz) = frame
        for a, b, c, upper_limb, lower_limb, upper_slot, lower_slot, arm, side, bend_sign in _LIFT_LIMB_ROWS:
            parent = pts[a]
            if parent is None or not seen[b]:
                continue
            px, py, pz = parent
            len_u, len_l = metres[upper_limb], metres[lower_limb]
            depth_u = 1e-9 if len_u < 1e-9 else len_u  # divisors of the signed depths
            depth_l = 1e-9 if len_l < 1e-9 else len_l
            w_u, e_u = weight[upper_slot], extrapolated[upper_slot]
            has_end = seen[c]
            if has_end:
                w_l, e_l = weight[lower_slot], extrapolated[lower_slot]
                hinge_gain = gain * (tune.elbow_weight if arm else tune.knee_weight)
            # Every configuration in order (upper nearer / farther, then lower nearer / farther): the
            # first of equal costs wins.
            best = None
            upper = _on_ray(parent, ray[b], len_u, planar)
            for iu, (x, y, z) in enumerate(upper):
                su = (pz - z) / depth_u
                dx, dy, dz = _unit3(x - px, y - py, -(z - pz))  # upper direction, canonical axes
                along = dx * fx + dy * fy + dz * fz
                if arm:
                    rise = dx * ux + dy * uy + dz * uz
                    outward = dx * lx + dy * ly + dz * lz
                    score = tune.arm_weight * (along * (tune.arm_neutral_hang + rise) + tune.arm_own_side * (outward * side))
                else:
                    score = tune.thigh_forward * along
                cost_u = w_u * (su - e_u) ** 2 + gain * (upper_plane * abs(su) - score)
                if learned is not None:
                    cost_u -= learned_weight * log_prob_at(learned[upper_limb], su)
                if not has_end:
                    if best is None or cost_u < best[0]:
                        best = (cost_u, iu, su, None, 0.0)
                    continue
                # Hinge: how much the lower segment bends towards the bend direction, which is
                # perpendicular to the upper segment (forward for elbows, backward for knees; up /
                # down blended in when parallel).
                blend = along * bend_sign
                blend = 0.0 if blend < 0.0 else blend
                bx = fx * bend_sign + blend * (ux * bend_sign)
                by = fy * bend_sign + blend * (uy * bend_sign)
                bz = fz * bend_sign + blend * (uz * bend_sign)
                t = bx * dx + by * dy + bz * dz
                bx, by, bz = _unit3(bx - t * dx, by - t * dy, bz - t * dz)
                for point in _on_ray((x, y, z), ray[c], len_l, planar):
                    sx, sy, sz = point[0] - x, point[1] - y, point[2] - z
                    sl = (z - point[2]) / depth_l
                    reach = math.sqrt(sx * sx + sy * sy + sz * sz)
                    r = 1e-12 if reach < 1e-12 else reach
                    ex, ey, ez = sx / r, sy / r, -sz / r  # lower direction, canonical axes
                    t = ex * dx + ey * dy + ez * dz
                    hinge = (ex - t * dx) * bx + (ey - t * dy) * by + (ez - t * dz) * bz
                    excess = reach - len_l
                    shortfall = (0.0 if excess < 0.0 else excess) / len_l
                    cost = (cost_u + w_l * (sl - e_l) ** 2 + reach_weight * shortfall
                            + hinge_gain * (plane * abs(sl) - hinge))
                    if learned is not None:
                        cost -= learned_weight * log_prob_at(learned[lower_limb], sl)
                    if best is None or cost < best[0]:
                        best = (cost, iu, su, point, sl)
            _, iu, su, lower_point, sl = best
            pts[b] = upper[iu]
            near, far = upper
            degenerate = all(abs(n - f) <= 1e-8 + 1e-5 * abs(f) for n, f in zip(near, far))  # np.allclose
            chosen.append((upper_slot, su, degenerate))
            if lower_point is not None:
                pts[c] = lower_point
                chosen.append((lower_slot, sl, False))


# Face fit: the pseudo-inverse of the centred template for every set of seen face points (4 or 5 of
# them), computed once (as float rows): the affine fit per frame is then one small product.
_FACE_PINV = {
    seen: np.linalg.pinv(FACE_TEMPLATE[list(seen)] - FACE_TEMPLATE[list(seen)].mean(axis=0)).tolist()
    for seen in [tuple(FACE)] + [tuple(i for i in FACE if i != skip) for skip in FACE]
}
_FACE_TEMPLATE_ROWS = [tuple(row) for row in FACE_TEMPLATE.tolist()]


def face_rotation_rows(points2d: list[tuple[float, float]], seen: tuple[int, ...]) -> tuple | None:
    """The rows of :func:`fit_face_rotation_seen`'s matrix as float tuples (None where it returns
    None): 2D points (x, y up) of the face points ``seen`` (indices into ``FACE``; 4 or 5). Floats
    because the lifter calls it on every frame, where numpy's per-call cost would dominate."""
    n = len(points2d)
    mx = sum(p[0] for p in points2d) / n
    my = sum(p[1] for p in points2d) / n
    pinv = _FACE_PINV[seen]  # (3, n): o ~ t @ a, a = pinv @ o
    r1x, r1y, r1z = (sum(w * (p[0] - mx) for w, p in zip(row, points2d)) for row in pinv)
    r2x, r2y, r2z = (sum(w * (p[1] - my) for w, p in zip(row, points2d)) for row in pinv)
    n1 = math.sqrt(r1x * r1x + r1y * r1y + r1z * r1z)
    if n1 < 1e-9 or math.sqrt(r2x * r2x + r2y * r2y + r2z * r2z) < 1e-9:
        return None
    r1x, r1y, r1z = r1x / n1, r1y / n1, r1z / n1
    d = r2x * r1x + r2y * r1y + r2z * r1z
    r2x, r2y, r2z = r2x - d * r1x, r2y - d * r1y, r2z - d * r1z
    n2 = math.sqrt(r2x * r2x + r2y * r2y + r2z * r2z)
    if n2 < 1e-9:
        return None
    r2x, r2y, r2z = r2x / n2, r2y / n2, r2z / n2
    return ((r1x, r1y, r1z), (r2x, r2y, r2z),
            (r1y * r2z - r1z * r2y, r1z * r2x - r1x * r2z, r1x * r2y - r1y * r2x))


def fit_face_rotation_seen(points2d: np.ndarray, seen: tuple[int, ...]) -> np.ndarray | None:
    """:func:`fit_face_rotation` for the template points ``seen`` (indices into ``FACE``; 4 or 5),
    with the template's pseudo-inverse precomputed: rotation (3, 3) or None."""
    rows = face_rotation_rows([tuple(p) for p in np.asarray(points2d, dtype=np.float64).tolist()], seen)
    return None if rows is None else np.array(rows)


def fit_face_rotation(points2d: np.ndarray, template: np.ndarray) -> np.ndarray | None:
    """Rotation (3, 3) taking template points to the observed face, from a weak-perspective affine fit."""
    t = template - template.mean(axis=0)
    o = points2d - points2d.mean(axis=0)
    a, *_ = np.linalg.lstsq(t, o, rcond=None)  # (3, 2): o ~ t @ a
    r1, r2 = a[:, 0], a[:, 1]
    if np.linalg.norm(r1) < 1e-9 or np.linalg.norm(r2) < 1e-9:
        return None
    r1 = r1 / np.linalg.norm(r1)
    r2 = r2 - (r2 @ r1) * r1
    if np.linalg.norm(r2) < 1e-9:
        return None
    r2 = r2 / np.linalg.norm(r2)
    return np.stack([r1, r2, _cross(r1, r2)])


# --------------------------------------------------------------------------------------------------
# Rotation solving


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross costs ~10x more on single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


# The rotation solver works in plain floats: 3-vectors are float tuples and 3x3 matrices are row-major
# 9-tuples (m00, m01, m02, m10, ..., m22). It runs per person on every pose update and output tick on
# single vectors and matrices, where each numpy call (1-4 us) would cost more than its arithmetic.
_I9 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _mm(a: tuple, b: tuple) -> tuple:
    """``a @ b`` of two 9-tuple matrices."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = a
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (a0 * b0 + a1 * b3 + a2 * b6, a0 * b1 + a1 * b4 + a2 * b7, a0 * b2 + a1 * b5 + a2 * b8,
            a3 * b0 + a4 * b3 + a5 * b6, a3 * b1 + a4 * b4 + a5 * b7, a3 * b2 + a4 * b5 + a5 * b8,
            a6 * b0 + a7 * b3 + a8 * b6, a6 * b1 + a7 * b4 + a8 * b7, a6 * b2 + a7 * b5 + a8 * b8)


def _mtm(a: tuple, b: tuple) -> tuple:
    """``a.T @ b`` of two 9-tuple matrices."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = a
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (a0 * b0 + a3 * b3 + a6 * b6, a0 * b1 + a3 * b4 + a6 * b7, a0 * b2 + a3 * b5 + a6 * b8,
            a1 * b0 + a4 * b3 + a7 * b6, a1 * b1 + a4 * b4 + a7 * b7, a1 * b2 + a4 * b5 + a7 * b8,
            a2 * b0 + a5 * b3 + a8 * b6, a2 * b1 + a5 * b4 + a8 * b7, a2 * b2 + a5 * b5 + a8 * b8)


def _mmt(a: tuple, b: tuple) -> tuple:
    """``a @ b.T`` of two 9-tuple matrices."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = a
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (a0 * b0 + a1 * b1 + a2 * b2, a0 * b3 + a1 * b4 + a2 * b5, a0 * b6 + a1 * b7 + a2 * b8,
            a3 * b0 + a4 * b1 + a5 * b2, a3 * b3 + a4 * b4 + a5 * b5, a3 * b6 + a4 * b7 + a5 * b8,
            a6 * b0 + a7 * b1 + a8 * b2, a6 * b3 + a7 * b4 + a8 * b5, a6 * b6 + a7 * b7 + a8 * b8)


def _mv(m: tuple, v: tuple) -> tuple[float, float, float]:
    """``m @ v`` (9-tuple matrix, 3-tuple vector)."""
    x, y, z = v
    return (m[0] * x + m[1] * y + m[2] * z, m[3] * x + m[4] * y + m[5] * z, m[6] * x + m[7] * y + m[8] * z)


def _mtv(m: tuple, v: tuple) -> tuple[float, float, float]:
    """``m.T @ v`` (9-tuple matrix, 3-tuple vector)."""
    x, y, z = v
    return (m[0] * x + m[3] * y + m[6] * z, m[1] * x + m[4] * y + m[7] * z, m[2] * x + m[5] * y + m[8] * z)


def _cross3(a: tuple, b: tuple) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot3(a: tuple, b: tuple) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _frame(x_axis: tuple, y_hint: tuple) -> tuple | None:
    """Right-handed rotation matrix (9-tuple) whose X column is along ``x_axis`` and Y column closest
    to ``y_hint``; None when they are parallel."""
    x0, x1, x2 = _unit3(*x_axis)
    h0, h1, h2 = y_hint
    z0, z1, z2 = x1 * h2 - x2 * h1, x2 * h0 - x0 * h2, x0 * h1 - x1 * h0
    n = math.sqrt(z0 * z0 + z1 * z1 + z2 * z2)
    if n < 1e-6:
        return None
    z0, z1, z2 = z0 / n, z1 / n, z2 / n
    y0, y1, y2 = z1 * x2 - z2 * x1, z2 * x0 - z0 * x2, z0 * x1 - z1 * x0
    return (x0, y0, z0, x1, y1, z1, x2, y2, z2)


def _rodrigues(axis: tuple, angle: float) -> tuple:
    """Rotation matrix (9-tuple) about unit ``axis`` by ``angle`` radians: I + sin K + (1 - cos) K^2."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    t = 1 - c
    xy, xz, yz = t * (x * y), t * (x * z), t * (y * z)
    return (1.0 + t * (-z * z - y * y), -s * z + xy, s * y + xz,
            s * z + xy, 1.0 + t * (-z * z - x * x), -s * x + yz,
            -s * y + xz, s * x + yz, 1.0 + t * (-y * y - x * x))


def _matrix_axis_angle(m: tuple) -> tuple[tuple[float, float, float], float]:
    """Unit axis and angle in [0, pi] of rotation matrix ``m`` (9-tuple)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    v0, v1, v2 = m21 - m12, m02 - m20, m10 - m01
    sin2 = math.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
    cos = (m00 + m11 + m22 - 1.0) / 2.0
    angle = math.atan2(sin2 / 2.0, cos)
    if sin2 > 1e-9:
        return (v0 / sin2, v1 / sin2, v2 / sin2), angle
    if cos > 0:
        return (1.0, 0.0, 0.0), 0.0
    # Half turn: the axis is the column of (m + I) with the largest norm (the first of equals).
    columns = ((m00 + 1.0, m10, m20), (m01, m11 + 1.0, m21), (m02, m12, m22 + 1.0))
    col = max(columns, key=lambda c: math.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]))
    n = math.sqrt(col[0] * col[0] + col[1] * col[1] + col[2] * col[2])
    return (col[0] / n, col[1] / n, col[2] / n), math.pi


def _scaled_rotation(m: tuple, fraction: float, max_angle: float = math.pi) -> tuple:
    """``fraction`` of rotation ``m`` (9-tuple; same axis), its full angle first limited to ``max_angle``."""
    axis, angle = _matrix_axis_angle(m)
    return _rodrigues(axis, min(angle, max_angle) * fraction)


# The face template centred on its mean, as rows: the fixed side of the head's Kabsch fit.
_FACE_CENTRED = [tuple(row) for row in (FACE_TEMPLATE - FACE_TEMPLATE.sum(axis=0) / len(FACE_TEMPLATE)).tolist()]


def _head_rotation(face: list[tuple[float, float, float]]) -> tuple:
    """Rotation matrix (9-tuple) best taking the centred face template onto the centred observed face
    points (Kabsch): H = sum over points of template (x) observed, H = U S Vt, R = V diag(1, 1, d) Ut
    with d the sign that makes R a rotation. Floats but the SVD."""
    n = len(face)
    mx, my, mz = (sum(p[c] for p in face) / n for c in range(3))
    h00 = h01 = h02 = h10 = h11 = h12 = h20 = h21 = h22 = 0.0
    for (ax, ay, az), (bx, by, bz) in zip(_FACE_CENTRED, face):
        bx, by, bz = bx - mx, by - my, bz - mz
        h00, h01, h02 = h00 + ax * bx, h01 + ax * by, h02 + ax * bz
        h10, h11, h12 = h10 + ay * bx, h11 + ay * by, h12 + ay * bz
        h20, h21, h22 = h20 + az * bx, h21 + az * by, h22 + az * bz
    u, _, vt = np.linalg.svd(np.array([[h00, h01, h02], [h10, h11, h12], [h20, h21, h22]]))
    u, vt = tuple(u.ravel().tolist()), tuple(vt.ravel().tolist())
    r = _mtm(vt, (u[0], u[3], u[6], u[1], u[4], u[7], u[2], u[5], u[8]))  # vt.T @ u.T
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r
    if r00 * (r11 * r22 - r12 * r21) - r01 * (r10 * r22 - r12 * r20) + r02 * (r10 * r21 - r11 * r20) < 0:
        # A reflection: flip the weakest axis (the last row of vt).
        r = _mtm(vt[:6] + (-vt[6], -vt[7], -vt[8]), (u[0], u[3], u[6], u[1], u[4], u[7], u[2], u[5], u[8]))
    return r


# Rest direction of each limb bone and the normal of its bend plane at rest (rest_dir x bend_dir).
_LIMBS = {
    # bone: (parent joint, child joint, grandchild joint, rest direction, rest bend normal)
    "leftUpperArm": (L_SH, L_EL, L_WR, np.array([1.0, 0, 0]), np.array([0, -1.0, 0])),
    "rightUpperArm": (R_SH, R_EL, R_WR, np.array([-1.0, 0, 0]), np.array([0, 1.0, 0])),
    "leftUpperLeg": (L_HIP, L_KN, L_AN, np.array([0, -1.0, 0]), np.array([1.0, 0, 0])),
    "rightUpperLeg": (R_HIP, R_KN, R_AN, np.array([0, -1.0, 0]), np.array([1.0, 0, 0])),
}
_LOWER = {"leftUpperArm": "leftLowerArm", "rightUpperArm": "rightLowerArm", "leftUpperLeg": "leftLowerLeg", "rightUpperLeg": "rightLowerLeg"}
ARMS_DOWN_DEG = 70.0  # the rest pose unseen arms ease to: upper arms rotated this far down from the T-pose
MAX_TWIST_DEG = {"arm": 120.0, "leg": 90.0}  # how far a shoulder / hip may twist the limb about its axis
# Within this many degrees of that limit the plane could be either one (the observed or the mirror one):
# the twist fades to none at the limit from both sides, so the choice never snaps the limb half a turn.
TWIST_LIMIT_FADE = math.radians(30.0)


def rest_pose_rotations() -> dict[str, np.ndarray]:
    """The pose unseen bones ease to: T-pose with the upper arms down."""
    a = math.radians(ARMS_DOWN_DEG)
    return {
        "leftUpperArm": quat.from_axis_angle(np.array([0, 0, 1.0]), -a),
        "rightUpperArm": quat.from_axis_angle(np.array([0, 0, 1.0]), a),
    }


@dataclass
class Limits:
    elbow_max_deg: float = 150.0
    knee_max_deg: float = 150.0
    spine_max_deg: float = 60.0
    neck_max_deg: float = 70.0


# The bones solve_rotations can drive, in the order of its arrays (the unseen policy's order too).
_SOLVED_BONES: tuple[str, ...] = (
    "hips", "spine", "chest", "upperChest", "neck", "head",
    "leftUpperArm", "leftLowerArm", "rightUpperArm", "rightLowerArm",
    "leftUpperLeg", "leftLowerLeg", "leftFoot", "rightUpperLeg", "rightLowerLeg", "rightFoot",
)
_SOLVED_INDEX = {name: i for i, name in enumerate(_SOLVED_BONES)}
# solve_rotations' dict order (hips, spine chain, neck, head, each limb's upper then lower bone, feet).
_SOLVE_DICT_ORDER = np.array([_SOLVED_INDEX[name] for name in (
    "hips", "spine", "chest", "upperChest", "neck", "head",
    "leftUpperArm", "leftLowerArm", "rightUpperArm", "rightLowerArm",
    "leftUpperLeg", "leftLowerLeg", "rightUpperLeg", "rightLowerLeg", "leftFoot", "rightFoot")])
# One row per limb (_LIMBS order) for the solver's loop: parent / middle / end joint, rest direction and
# rest bend normal (float tuples), the rest frame they span (9-tuple, columns: direction, normal,
# direction x normal), arm or leg, the twist limit (radians) and the _SOLVED_BONES rows of its upper
# bone, lower bone and foot (None for arms).
_SOLVE_LIMB_ROWS = tuple(
    (a, b, c, tuple(d.tolist()), tuple(n.tolist()),
     tuple(np.stack([d, n, _cross(d, n)], -1).ravel().tolist()),
     "Arm" in name, math.radians(MAX_TWIST_DEG["arm" if "Arm" in name else "leg"]),
     _SOLVED_INDEX[name], _SOLVED_INDEX[_LOWER[name]],
     None if "Arm" in name else _SOLVED_INDEX[_LOWER[name].replace("LowerLeg", "Foot")])
    for name, (a, b, c, d, n) in _LIMBS.items()
)


def _two_vectors_rotation(a: tuple, b: tuple) -> tuple:
    """Shortest-arc rotation matrix (9-tuple) taking unit vector ``a`` to unit vector ``b``."""
    axis = _cross3(a, b)
    s = math.sqrt(_dot3(axis, axis))
    c = _dot3(a, b)
    if s >= 1e-9:
        return _rodrigues((axis[0] / s, axis[1] / s, axis[2] / s), math.atan2(s, c))
    # Parallel: identity (angle 0); opposite: a half turn about an axis perpendicular to a.
    perp = _cross3(a, (1.0, 0.0, 0.0) if abs(a[0]) < 0.9 else (0.0, 1.0, 0.0))
    n = math.sqrt(_dot3(perp, perp))
    return _rodrigues((perp[0] / n, perp[1] / n, perp[2] / n), 0.0 if c > 0 else math.pi)


def _solve_matrices(joints: np.ndarray, limits: Limits) -> tuple[list[tuple], list[bool]]:
    """:func:`solve_rotations` as lists over ``_SOLVED_BONES``: parent-local rotation matrices
    (row-major 9-tuples; identity where not solved) and which were solved."""
    j = [tuple(p) for p in np.asarray(joints, dtype=np.float64).tolist()]
    known = [math.isfinite(p[0]) and math.isfinite(p[1]) and math.isfinite(p[2]) for p in j]
    local = [_I9] * len(_SOLVED_BONES)
    solved = [False] * len(_SOLVED_BONES)

    have_hips = known[L_HIP] and known[R_HIP]
    have_sh = known[L_SH] and known[R_SH]
    world_up = (0.0, 1.0, 0.0)
    torso_up = None
    if have_hips and have_sh:
        torso_up = _unit3(*[(j[L_SH][i] + j[R_SH][i] - j[L_HIP][i] - j[R_HIP][i]) / 2 for i in range(3)])

    # Hips: hip line + half the torso lean (the spine chain carries the other half and the twist).
    hips_m = _I9
    if have_hips:
        hint = (torso_up[0], 1.0 + torso_up[1], torso_up[2]) if torso_up is not None else world_up
        m = _frame(tuple(j[L_HIP][i] - j[R_HIP][i] for i in range(3)), hint)
        if m is not None:
            hips_m = m
            local[0], solved[0] = m, True

    # Spine, chest, upperChest: equal shares of the rotation from the hips to the shoulder frame.
    chest_m = hips_m
    if have_sh:
        m = _frame(tuple(j[L_SH][i] - j[R_SH][i] for i in range(3)), torso_up if torso_up is not None else world_up)
        if m is not None:
            share = _scaled_rotation(_mtm(hips_m, m), 1.0 / 3.0, math.radians(limits.spine_max_deg))
            local[1] = local[2] = local[3] = share
            solved[1] = solved[2] = solved[3] = True
            chest_m = _mm(_mm(_mm(hips_m, share), share), share)

    # Neck + head: face points fitted to the template (Kabsch), split between neck and head.
    if all(known[i] for i in FACE):
        head_world = _head_rotation([j[i] for i in FACE])
        local[4] = local[5] = _scaled_rotation(_mtm(chest_m, head_world), 0.5, math.radians(limits.neck_max_deg))
        solved[4] = solved[5] = True

    # Limbs: aim at the observed direction; twist from the bend plane when bent, else from the parent.
    foot_world = None
    for a, b, c, rest_dir, rest_normal, rest_frame, arm, max_twist, upper, lower, foot in _SOLVE_LIMB_ROWS:
        if not (known[a] and known[b]):
            continue
        ja, jb = j[a], j[b]
        ux, uy, uz = jb[0] - ja[0], jb[1] - ja[1], jb[2] - ja[2]
        upper_len = math.sqrt(ux * ux + uy * uy + uz * uz)
        if upper_len < 1e-9:
            continue
        parent_m = chest_m if arm else hips_m
        d1 = (ux / upper_len, uy / upper_len, uz / upper_len)
        swing = _mm(_two_vectors_rotation(_mv(parent_m, rest_dir), d1), parent_m)
        bent = False
        if known[c]:
            jc = j[c]
            lx, ly, lz = jc[0] - jb[0], jc[1] - jb[1], jc[2] - jb[2]
            lower_len = math.sqrt(lx * lx + ly * ly + lz * lz)
            bent = lower_len > 1e-9
        upper_m = swing
        if bent:
            d2 = (lx / lower_len, ly / lower_len, lz / lower_len)
            normal = _cross3(d1, d2)
            sin_bend = math.sqrt(_dot3(normal, normal))
            bend_w = min(max((sin_bend - 0.17) / 0.25, 0.0), 1.0)  # plane trusted from ~10 to ~25 degrees
            if bend_w > 0:
                # Twist about the bone so its rest bend normal lands on the observed plane normal,
                # limited to what a shoulder / hip can rotate (beyond it the hinge clamps instead).
                n = (normal[0] / sin_bend, normal[1] / sin_bend, normal[2] / sin_bend)
                e = _cross3(d1, n)
                plane = _mmt((d1[0], n[0], e[0], d1[1], n[1], e[1], d1[2], n[2], e[2]), rest_frame)
                r00, r01, r02, r10, r11, r12, r20, r21, r22 = _mmt(plane, swing)  # a rotation about d1
                v = (r21 - r12, r02 - r20, r10 - r01)
                tau = math.atan2(_dot3(v, d1) / 2.0, (r00 + r11 + r22 - 1.0) / 2.0)
                # Beyond what the shoulder / hip can twist, the plane is the mirror one: a hinge bent
                # the wrong way. Keep the plane with the half-turn-reduced twist; the flexion then clamps.
                # Near the limit either plane may be the true one: the twist fades to none there (from
                # both sides), so crossing it is continuous instead of a half-turn snap times bend_w.
                limit_w = min(abs(abs(tau) - max_twist) / TWIST_LIMIT_FADE, 1.0)
                if abs(tau) > max_twist:
                    tau = tau - math.copysign(math.pi, tau)
                upper_m = _mm(_rodrigues(d1, bend_w * limit_w * tau), swing)
        local[upper] = _mtm(parent_m, upper_m)
        solved[upper] = True
        if not bent:
            continue
        # Lower limb: a hinge about the rest bend normal (same in the upper bone's frame), flexion in
        # [0, max]: the angle of d2 about the hinge axis, measured from the upper bone's direction.
        target = _mtv(upper_m, d2)
        t = _dot3(target, rest_normal)
        perp = (target[0] - t * rest_normal[0], target[1] - t * rest_normal[1], target[2] - t * rest_normal[2])
        flex = math.atan2(_dot3(_cross3(rest_dir, perp), rest_normal), _dot3(rest_dir, perp))
        max_flex = math.radians(limits.elbow_max_deg if arm else limits.knee_max_deg)
        lower_m = _rodrigues(rest_normal, min(max(flex, 0.0), max_flex))
        local[lower] = lower_m
        solved[lower] = True
        if foot is not None:
            # Feet stay level with the ground, facing where the hips face (COCO-17 does not see them).
            if foot_world is None:
                foot_world = _rodrigues((0.0, 1.0, 0.0), math.atan2(hips_m[2], hips_m[8]))
            local[foot] = _mtm(_mm(upper_m, lower_m), foot_world)
            solved[foot] = True
    return local, solved


_IDENTITY_Q = (0.0, 0.0, 0.0, 1.0)


def _quaternion(m: tuple) -> tuple[float, float, float, float]:
    """:func:`avatar_bridge.quat.from_matrix` of one rotation matrix (9-tuple), in floats: (x, y, z, w)
    with w >= 0. Of four candidates (4 * |component| times the quaternion, one per component) the
    longest is the best conditioned (the first of equals, like numpy's argmax)."""
    if m is _I9:  # a bone left unsolved
        return _IDENTITY_Q
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    t = m00 + m11 + m22
    d21, d02, d10 = m21 - m12, m02 - m20, m10 - m01
    s01, s02, s12 = m01 + m10, m02 + m20, m12 + m21
    best, best_norm = None, -math.inf
    for q in ((d21, d02, d10, 1 + t), (1 + m00 - m11 - m22, s01, s02, d21),
              (s01, 1 + m11 - m00 - m22, s12, d02), (s02, s12, 1 + m22 - m00 - m11, d10)):
        n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
        if best is None or n > best_norm:
            best, best_norm = q, n
    if not best_norm > 1e-12:  # not a rotation (NaN): identity, as quat.normalize gives
        return _IDENTITY_Q
    if best[3] < 0:
        best_norm = -best_norm
    return (best[0] / best_norm, best[1] / best_norm, best[2] / best_norm, best[3] / best_norm)


def _solve_quaternion_rows(joints: np.ndarray, limits: Limits) -> tuple[list[tuple], list[bool]]:
    """:func:`solve_rotations` as lists over ``_SOLVED_BONES``: quaternions (x, y, z, w) (identity
    where not solved) and which were solved."""
    local, solved = _solve_matrices(joints, limits)
    return [_quaternion(m) for m in local], solved


def _solve_quaternions(joints: np.ndarray, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """:func:`solve_rotations` as arrays: quaternions (16, 4) of ``_SOLVED_BONES`` (identity where not
    solved) and which were solved (16,) bool."""
    local, solved = _solve_quaternion_rows(joints, limits)
    return np.array(local), np.array(solved)


def solve_rotations(joints: np.ndarray, limits: Limits | None = None) -> tuple[dict[str, np.ndarray], set[str]]:
    """Parent-local rotations of the body bones from COCO-17 3D joints (17, 3) in the canonical frame.

    Each bone's world rotation takes its rest direction to the observed one, with the twist from the
    bend plane (elbow / knee hinge) or the torso. NaN rows are unknown joints; bones that need them
    are left out (the caller's unseen policy decides those). Joint limits are applied here: elbows
    and knees are hinges within [0, max] flexion, the spine chain and the neck are limited in angle,
    shoulders and hips in twist.
    """
    quats, solved = _solve_quaternions(joints, limits or Limits())
    order = _SOLVE_DICT_ORDER[solved[_SOLVE_DICT_ORDER]]
    return {_SOLVED_BONES[i]: quats[i] for i in order}, {_SOLVED_BONES[i] for i in order}


# --------------------------------------------------------------------------------------------------
# Bone groups for visibility / confidence

_BONE_KEYPOINTS: dict[str, tuple[int, ...]] = {
    "hips": (L_HIP, R_HIP),
    "spine": (L_SH, R_SH), "chest": (L_SH, R_SH), "upperChest": (L_SH, R_SH),
    "neck": FACE, "head": FACE,
    "leftUpperArm": (L_SH, L_EL), "leftLowerArm": (L_EL, L_WR),
    "rightUpperArm": (R_SH, R_EL), "rightLowerArm": (R_EL, R_WR),
    "leftUpperLeg": (L_HIP, L_KN), "leftLowerLeg": (L_KN, L_AN), "leftFoot": (L_KN, L_AN),
    "rightUpperLeg": (R_HIP, R_KN), "rightLowerLeg": (R_KN, R_AN), "rightFoot": (R_KN, R_AN),
}


assert tuple(_BONE_KEYPOINTS) == _SOLVED_BONES  # the policy works on the solver's arrays
_BONE_KEYPOINT_TUPLES = tuple(_BONE_KEYPOINTS.values())  # per _SOLVED_BONES row
_SOLVED_LEGS = tuple(name in LEG_BONES for name in _SOLVED_BONES)
# Bones every RigPose carries at rest (COCO-17 does not see them), after the solved ones.
_REST_BONES = ("leftToes", "rightToes", "leftHand", "rightHand", "leftShoulder", "rightShoulder")
_OUTPUT_BONES = _SOLVED_BONES + _REST_BONES
# What unseen bones ease to, per _SOLVED_BONES row (x, y, z, w).
_REST_ROTATIONS = tuple(tuple(rest_pose_rotations().get(name, quat.IDENTITY).tolist()) for name in _SOLVED_BONES)


def _normalized(q: tuple) -> tuple[float, float, float, float]:
    """:func:`avatar_bridge.quat.normalize` of one quaternion (float tuple)."""
    x, y, z, w = q
    n = math.sqrt(x * x + y * y + z * z + w * w)
    return (x / n, y / n, z / n, w / n) if n > 1e-12 else _IDENTITY_Q


def _qmul(a: tuple, b: tuple) -> tuple[float, float, float, float]:
    """:func:`avatar_bridge.quat.mul` of two quaternions (float tuples, x y z w): ``b`` first, then ``a``."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def _twist_part(q: tuple, axis: tuple) -> tuple[float, float, float, float]:
    """The twist of ``q`` about unit ``axis`` in its swing-twist decomposition ``q = swing * twist``
    (the projection of the vector part on the axis, normalized; identity for a pure swing)."""
    x, y, z, w = q
    p = x * axis[0] + y * axis[1] + z * axis[2]
    return _normalized((p * axis[0], p * axis[1], p * axis[2], w))


def _held_then_eased(held: tuple, rest: tuple, unseen_for: float, hold: float, ease: float) -> tuple:
    """The unseen policy's schedule: ``held`` for ``hold`` seconds, then a smoothstep slerp to
    ``rest`` over ``ease`` seconds (quaternion float tuples; times in seconds)."""
    if unseen_for <= hold:
        return held
    t = min((unseen_for - hold) / ease, 1.0)
    return _slerp(held, rest, t * t * (3 - 2 * t))


# Per _SOLVED_BONES row of an upper arm / thigh: its lower bone's row and its rest direction (the axis
# its twist is about, in the parent-local frame the solver's rotations are in).
_UPPER_LIMB_ROWS = {upper: (lower, rest_dir) for _, _, _, rest_dir, _, _, _, _, upper, lower, _ in _SOLVE_LIMB_ROWS}


def _slerp(a: tuple, b: tuple, t: float) -> tuple[float, float, float, float]:
    """:func:`avatar_bridge.quat.slerp` of two quaternions (float tuples), the shorter way round."""
    a, b = _normalized(a), _normalized(b)
    d = a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
    if d < 0:
        b, d = (-b[0], -b[1], -b[2], -b[3]), -d
    theta = math.acos(min(max(d, -1.0), 1.0))
    s = math.sin(theta)
    if s < 1e-6:
        wa, wb = 1.0 - t, t
    else:
        wa, wb = math.sin((1.0 - t) * theta) / s, math.sin(t * theta) / s
    return _normalized(tuple(wa * p + wb * q for p, q in zip(a, b)))


def load_depth_prior(setting: str) -> DepthSignPrior | None:
    """The learned depth-sign prior a ``retarget.depth_prior`` setting names: ``""`` or ``"none"`` none,
    ``"default"`` the shipped weights, anything else a path (relative to the current folder, ``~``
    expanded) to weights saved by ``train-depth-prior``. Raises ValueError (one line, naming the file)
    when the file is missing, a folder or not such weights."""
    try:
        path = weights_path(setting)
    except ValueError as exc:
        raise ValueError(f"retarget.depth_prior: {exc}") from None
    return None if path is None else DepthSignPrior.load(path)


class Retargeter:
    """Per-person retargeting: 2D keypoints in, :class:`RigPose` out (one instance per track id).

    ``solve`` calibrates itself from the first ``calibration_seconds`` of confident frames (a
    provisional calibration from the frames so far is used meanwhile); ``calibrate()`` starts a new
    calibration period; ``save``/``load`` keep it in a JSON file. ``lifter`` replaces the
    foreshortening lifter (e.g. a learned 2D-to-3D model).
    """

    def __init__(self, config: RetargetConfig | None = None, lifter: Lifter | None = None, track_id: int = 0,
                 depth_prior: DepthSignPrior | None = None) -> None:
        self.config = config or RetargetConfig()
        # The learned depth-sign prior (depth_prior.py): given, or read from config.depth_prior.
        if depth_prior is None and self.config.depth_prior:
            depth_prior = load_depth_prior(self.config.depth_prior)
        self.depth_prior = depth_prior
        self.limits = Limits(self.config.elbow_max_deg, self.config.knee_max_deg, self.config.spine_max_deg, self.config.neck_max_deg)
        self.calibration: Calibration | None = None
        self._custom_lifter = lifter
        self._lifter: Lifter | None = lifter
        self._reset_calibration_period()
        self._calib_start: float | None = None
        self._calibrating = True
        # Unseen-bone memory per _SOLVED_BONES row: (last solved rotation, its confidence, its time),
        # None before the bone was ever solved.
        self._memory: list[tuple[tuple, float, float] | None] = [None] * len(_SOLVED_BONES)
        # Per upper-limb row: (its twist about the bone, the time it was last seen). The twist is only
        # seen with the limb's end (wrist / ankle): without it the bone is solved as a pure swing, and
        # this twist holds, then eases to none, like an unseen bone (no roll snap when a wrist is lost).
        self._twist_memory: list[tuple[tuple, float] | None] = [None] * len(_SOLVED_BONES)
        self._previous: list[tuple] | None = None  # last output quaternions (_OUTPUT_BONES rows), for continuity
        self._image_size: tuple[int, int] | None = None
        self._previous_hips: np.ndarray | None = None
        # update() runs on the capture loop and solve(advance=False) on the output clock: the lifter's
        # continuity state is advanced and forked under this lock.
        self._state_lock = threading.Lock()
        # The output clock's lifter: a fork of the real one, made at the first tick after each pose
        # update and advanced by the ticks until the next update replaces it (continuity between updates).
        self._output_lifter: Lifter | None = None
        # Upper-body mode: from the config (--upper-body), or switched on automatically when the hips
        # are never seen while calibrating (a seated user at a desk camera).
        self.upper_body = bool(self.config.upper_body)
        self.auto_upper_body = False  # True once switched on automatically
        self._hipless_since: float | None = None
        self.track_id = track_id  # for log lines
        self._loaded_from: Path | None = None  # a calibration file not yet checked against the frames' size
        path = self.config.calibration_path()
        if path is not None:
            if path.is_file():
                self.set_calibration(Calibration.load(path))
                self._loaded_from = path  # checked against the first frame's size (_observe)
                log.info("person %d: calibration loaded from %s (delete it, press c or send 'calibrate' to "
                         "calibrate again)", self.track_id, path)

    # -- calibration ---------------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        """True once a full calibration period has been measured (or loaded)."""
        return self.calibration is not None and not self._calibrating

    def calibrate(self) -> None:
        """Start a new calibration period from the next confident frames (user stands facing the camera)."""
        self._reset_calibration_period()
        self._calib_start = None
        self._calibrating = True
        self.upper_body = bool(self.config.upper_body)  # a new calibration may see the hips again
        self.auto_upper_body = False
        self._hipless_since = None

    def set_calibration(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self._calibrating = False
        self._reset_calibration_period()
        if self._custom_lifter is None:
            self._lifter = self._make_lifter(calibration)
        self._output_lifter = None

    def _reset_calibration_period(self) -> None:
        """Forget the calibration period's frames. Each pose update of the period is measured once
        (:func:`calibration_measurement`, by its index in the period) and kept in two pools: every
        frame, and the straighter half of the standing ones (the frames the calibration uses)."""
        self._calib_measurements: list[CalibrationMeasurement] = []
        self._calib_all = CalibrationPool()  # every frame of the period
        self._calib_ranked: list[tuple[float, int]] = []  # (bend, index) of the accepted frames, straightest first
        self._calib_best = CalibrationPool()  # the straighter half of the accepted frames (updated lazily)

    def _make_lifter(self, calibration: Calibration) -> ForeshorteningLifter:
        width = calibration.image_size[0]
        focal = (width / 2) / math.tan(math.radians(self.config.fov_deg) / 2)
        return ForeshorteningLifter(calibration, self.config.min_score, planar=self.config.depth == "planar", focal_px=focal,
                                    depth_prior=self.depth_prior)

    def save(self, path: str | Path) -> None:
        if self.calibration is None:
            raise RuntimeError("nothing to save: the retargeter has not been calibrated yet (solve some frames or load a calibration)")
        self.calibration.save(path)

    def load(self, path: str | Path) -> None:
        self.set_calibration(Calibration.load(path))
        self._loaded_from = Path(path)

    def _calibration_frame(self, kp: np.ndarray, sc: np.ndarray, timestamp: float, image_size: tuple[int, int]) -> None:
        """Add one pose update to the calibration period.

        Frames with a bent knee or elbow or a raised foot (:func:`calibration_pose_ok`) are kept
        apart: the calibration uses the straighter half of the accepted frames, and the period goes on past
        ``calibration_seconds`` until it has ``CALIBRATION_MIN_FRAMES`` of them (a take that starts
        mid-stride is calibrated from its first standing moments, not its first second). Until then
        a provisional calibration from every frame so far is used; if no standing frames come within
        ``CALIBRATION_PATIENCE`` periods, the period ends with every frame (as before)."""
        ok = sc >= self.config.min_score
        shoulders, hips = bool(ok[[L_SH, R_SH]].all()), bool(ok[[L_HIP, R_HIP]].all())
        # Hips on the frame's bottom edge are cut off by it, not seen: a heatmap model puts a joint
        # below the frame on the edge, often at a middling score (a user at a desk, framed chest-up).
        hips = hips and not bool(np.all(kp[[L_HIP, R_HIP], 1] >= image_size[1] * (1.0 - BOTTOM_EDGE_SHARE)))
        if shoulders and not hips and not self.upper_body and not self._calib_ranked and self.config.auto_upper_body:
            # Shoulders seen but never the hips: after calibration_seconds of that, calibrate the
            # upper body alone rather than never (the avatar would stay at rest all run).
            if self._hipless_since is None:
                self._hipless_since = timestamp
            if timestamp - self._hipless_since >= self.config.calibration_seconds:
                self.upper_body = self.auto_upper_body = True
                log.warning(
                    "person %d: hips not seen for %.1f s while calibrating (seated?): upper-body mode, legs at rest. "
                    "To track the legs, step back until the hips are in view and calibrate again (c key, or the "
                    "'calibrate' control message); --upper-body starts in this mode, retarget.auto_upper_body = false "
                    "turns this off", self.track_id, timestamp - self._hipless_since)
        torso = shoulders and (hips or self.upper_body)
        if not torso:
            return
        if self._calib_start is None:
            self._calib_start = timestamp
            self._reset_calibration_period()
        index = len(self._calib_measurements)
        measurement = calibration_measurement(kp, sc, self.config.min_score)
        self._calib_measurements.append(measurement)
        self._calib_all.add(index, measurement)
        judged = sc
        if self.upper_body:  # seated: bent knees and hidden feet are expected, judge the arms only
            judged = sc.copy()
            judged[[L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN]] = 0.0
        bend = calibration_pose_bend(kp, judged, self.config.min_score)
        if bend <= 1.0:
            bisect.insort(self._calib_ranked, (bend, index))  # ties stay in arrival order
        accepted = len(self._calib_ranked)
        elapsed = timestamp - self._calib_start
        enough = accepted >= CALIBRATION_MIN_FRAMES
        done = elapsed >= self.config.calibration_seconds and enough
        pool = self._calib_all
        if accepted and (enough or accepted >= len(self._calib_all) / 2):
            # The straighter half of the accepted frames (at least CALIBRATION_MIN_FRAMES of them).
            pool = self._calib_best
            pool.hold({i for _, i in self._calib_ranked[: max(CALIBRATION_MIN_FRAMES, (accepted + 1) // 2)]},
                      self._calib_measurements)
        if not done and elapsed >= CALIBRATION_PATIENCE * self.config.calibration_seconds:
            done, pool = True, self._calib_all
        calibration = pool.calibration(image_size)
        if self.upper_body:  # seated: the legs say nothing about the hips' height
            calibration = replace(calibration, standing_drop_m=0.0)
        if done:
            standing = pool is self._calib_best  # (set_calibration starts a new period's pools)
            self.set_calibration(calibration)
            log.info("person %d: calibrated from %d frames%s%s", self.track_id, calibration.frames,
                     f", saving to {self.config.calibration_path()}" if self.config.calibration_file else "",
                     "" if standing else " (nobody stood still with straight limbs: every frame used)")
            floored = [name for name in WIDTH_SEGMENTS if "torso" in calibration.measured and name in calibration.measured
                       and calibration.segments[name] <= width_floor(calibration.segments, name) * (1 + 1e-9)]
            if floored:
                log.info("person %d: %s too narrow for a body facing the camera (calibrated side-on?): taken from the body's "
                         "proportions; stand facing the camera and recalibrate for your own", self.track_id, " and ".join(floored))
            elif abs(calibration.turn_deg) >= 15.0:
                log.info("person %d: calibrated while turned %.0f degrees from the camera (shoulder and hip widths "
                         "corrected for it)", self.track_id, calibration.turn_deg)
            if self.config.calibration_file:
                # Once per calibration period, on a thread of its own: never on the output clock.
                threading.Thread(target=self._save_calibration, args=(calibration, self.config.calibration_path()),
                                 name="calibration-save", daemon=False).start()
        else:
            # Provisional: keep the lifter's state (scale, depth signs) but use the newest lengths.
            self.calibration = calibration
            if self._custom_lifter is None:
                if isinstance(self._lifter, ForeshorteningLifter):
                    self._lifter.calibration = calibration
                else:
                    self._lifter = self._make_lifter(calibration)

    @staticmethod
    def _save_calibration(calibration: Calibration, path: Path) -> None:
        try:
            calibration.save(path)
        except OSError as exc:
            log.warning("%s (this run keeps using the calibration)", exc)  # names the file, the reason and the fix

    @staticmethod
    def _clean(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (17, 2) and scores (17,) as float64 with non-finite rows zeroed (score 0 = unseen)
        and scores clipped to [0, 1]. The keypoints may be the caller's own array: read them only."""
        kp = np.asarray(keypoints, dtype=np.float64)
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        if kp.ndim != 2 or kp.shape[1] != 2 or kp.shape[0] != NUM_KEYPOINTS or sc.shape[0] != NUM_KEYPOINTS:
            raise ValueError(f"retarget expects COCO-17 keypoints (17, 2) and scores (17,), got {kp.shape} and {sc.shape}")
        if np.isfinite(kp).all() and np.isfinite(sc).all():  # the usual case: four numpy calls, not ten
            return kp, np.minimum(np.maximum(sc, 0.0), 1.0)
        bad = ~np.all(np.isfinite(kp), axis=-1) | ~np.isfinite(sc)
        return np.where(bad[:, None], 0.0, kp), np.where(bad, 0.0, np.clip(sc, 0.0, 1.0))

    def _observe(self, kp: np.ndarray, sc: np.ndarray, timestamp: float, image_size: tuple[int, int]) -> None:
        self._image_size = (int(image_size[0]), int(image_size[1]))
        if self._loaded_from is not None:
            if self.calibration is not None and tuple(self.calibration.image_size) != self._image_size:
                # Pixel lengths from another resolution (or --resize) put the hips metres off.
                log.warning("person %d: calibration file %s was made on %dx%d frames, these are %dx%d: calibrating "
                            "again (stand facing the camera)", self.track_id, self._loaded_from,
                            *self.calibration.image_size, *self._image_size)
                self.calibrate()
            self._loaded_from = None
        if self._calibrating:
            self._calibration_frame(kp, sc, timestamp, self._image_size)

    # -- solving -------------------------------------------------------------------------------------
    def update(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float, image_size: tuple[int, int]) -> None:
        """Advance this person's state with one pose update: calibration and the lifter's continuity.

        The live pipeline calls this once per processed frame (with the stabilized keypoints at the
        frame's time) and :meth:`solve` with ``advance=False`` on every output tick, so the output
        rate never changes calibration or depth resolution. Shapes and errors as for :meth:`solve`.
        """
        kp, sc = self._clean(keypoints, scores)
        with self._state_lock:
            self._observe(kp, sc, timestamp, image_size)
            if self._lifter is not None:
                self._lifter.lift(kp, sc, timestamp)
            self._output_lifter = None

    def solve(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float, image_size: tuple[int, int],
              track_id: int = 0, *, advance: bool = True) -> RigPose:
        """Humanoid bone rotations for one person's COCO-17 keypoints.

        Args:
            keypoints: (17, 2) pixels, COCO-17 order (non-finite rows count as unseen).
            scores: (17,) confidences; below ``config.min_score`` a joint is unseen.
            timestamp: seconds (monotonic or video time); drives hold/ease of unseen bones.
            image_size: (width, height) in pixels of the image the keypoints are in.
            track_id: copied into the result.
            advance: True (one call per pose update, e.g. offline) also does :meth:`update`'s work;
                False (the output clock) leaves calibration and the lifter alone: it solves on a fork
                of the lifter taken after the last update, which the ticks until the next update share
                (so depth stays continuous between updates, e.g. while a lost person eases to rest).

        Returns:
            :class:`RigPose`: parent-local quaternions (x, y, z, w) per VRM bone in the canonical frame
            of :mod:`avatar_bridge.skeleton`, hips position in metres, per-bone confidence.

        Raises:
            ValueError: keypoints or scores of the wrong shape, or a lifter returning the wrong shape.

        Method: foreshortening lifting against the calibrated segment lengths (Taylor, CVIU 2000,
        "Reconstruction of articulated objects from point correspondences in a single image"), then
        swing-twist bone rotations under joint limits; see docs/retarget.md.
        """
        kp, sc = self._clean(keypoints, scores)
        lifter = self._lifter
        if advance:
            self._observe(kp, sc, timestamp, image_size)
        else:
            self._image_size = (int(image_size[0]), int(image_size[1]))
            with self._state_lock:
                if self._output_lifter is None and self._lifter is not None:
                    lifter = self._lifter
                    self._output_lifter = lifter.fork() if isinstance(lifter, ForeshorteningLifter) else copy.deepcopy(lifter)
                lifter = self._output_lifter
        joints = None
        if lifter is not None:
            joints = np.asarray(lifter.lift(kp, sc, timestamp), dtype=np.float64)
            if joints.shape != (NUM_KEYPOINTS, 3):
                raise ValueError(f"lifter returned shape {joints.shape}, expected (17, 3)")
        if joints is not None:
            local, solved = _solve_quaternion_rows(joints, self.limits)
        else:
            local, solved = [_IDENTITY_Q] * len(_SOLVED_BONES), [False] * len(_SOLVED_BONES)
        if self.upper_body:
            solved = [s and not leg for s, leg in zip(solved, _SOLVED_LEGS)]
        rotations, confidence = self._apply_unseen_policy(local, solved, sc.tolist(), timestamp)
        hips_position = self._hips_position(kp, sc)
        # No mirroring here: a RigPose keeps the performer's own left and right (takes, BVH, JSON
        # Lines). The selfie mirror (config.mirror) is a view option: see mirror_rig and
        # avatar_bridge.outputs, which apply it to the viewer and VMC only.
        # Continuity: never let a quaternion flip sign between frames.
        rotations = [_normalized(q) for q in rotations]
        if self._previous is not None:
            rotations = [(-x, -y, -z, -w) if x * px + y * py + z * pz + w * pw < 0 else (x, y, z, w)
                         for (x, y, z, w), (px, py, pz, pw) in zip(rotations, self._previous)]
        self._previous = rotations
        return RigPose(timestamp=float(timestamp), track_id=int(track_id), hips_position=hips_position,
                       rotations=dict(zip(_OUTPUT_BONES, np.array(rotations))),
                       confidence=dict(zip(_SOLVED_BONES, confidence)), tracking=any(solved))

    def _apply_unseen_policy(self, local: list[tuple], solved: list[bool], sc: list[float],
                             timestamp: float) -> tuple[list[tuple], list[float]]:
        """Seen bones take the solved rotation; unseen ones hold, then ease to the rest pose.

        ``local`` (quaternion tuples) and ``solved`` are per ``_SOLVED_BONES`` row, ``sc`` the 17
        keypoint scores; returns the rotations of ``_OUTPUT_BONES`` (the bones COCO-17 does not see
        at rest after the solved ones) and the confidences of ``_SOLVED_BONES``. A loop over floats:
        this runs per person on every output tick, on 16 bones.
        """
        hold, ease = self.config.hold_seconds, self.config.ease_seconds
        memory, twist_memory = self._memory, self._twist_memory
        rotations, confidence = [], []
        for i, (rotation, seen, keypoints) in enumerate(zip(local, solved, _BONE_KEYPOINT_TUPLES)):
            if seen:
                limb = _UPPER_LIMB_ROWS.get(i)
                if limb is not None:
                    lower, axis = limb
                    if solved[lower]:  # the end joint is seen: so is the twist
                        twist_memory[i] = (_twist_part(rotation, axis), timestamp)
                    elif twist_memory[i] is not None:  # a pure swing: the twist holds, then eases
                        twist, when = twist_memory[i]
                        rotation = _qmul(rotation, _held_then_eased(twist, _IDENTITY_Q, timestamp - when, hold, ease))
                bone_conf = min([sc[k] for k in keypoints])
                memory[i] = (rotation, bone_conf, timestamp)
                rotations.append(rotation)
                confidence.append(bone_conf)
                continue
            # Unseen: at rest without a memory (or a leg in upper-body mode), held for hold_seconds, then eased.
            if memory[i] is None or (self.upper_body and _SOLVED_LEGS[i]):
                rotations.append(_REST_ROTATIONS[i])
                confidence.append(0.0)
                continue
            held, held_conf, when = memory[i]
            unseen_for = timestamp - when
            rotations.append(_held_then_eased(held, _REST_ROTATIONS[i], unseen_for, hold, ease))
            confidence.append(held_conf * 0.5 if unseen_for <= hold else 0.0)
        rotations.extend([_IDENTITY_Q] * len(_REST_BONES))
        return rotations, confidence

    def _hips_position(self, kp: np.ndarray, sc: np.ndarray) -> np.ndarray:
        """Hips position (metres, canonical, not mirrored) from the 2D hip centre and apparent size.
        Plain floats (a handful of scalars, on every output tick)."""
        rest_y = _hips_rest_height()
        cal = self.calibration
        if cal is None:
            return np.array([0.0, rest_y, 0.0])
        min_score = self.config.min_score
        if sc[L_HIP] >= min_score and sc[R_HIP] >= min_score and not self.upper_body:
            (lx, ly), (rx, ry) = kp[L_HIP].tolist(), kp[R_HIP].tolist()
            cx, cy = (lx + rx) / 2, (ly + ry) / 2
        elif sc[L_SH] >= min_score and sc[R_SH] >= min_score:
            (lx, ly), (rx, ry) = kp[L_SH].tolist(), kp[R_SH].tolist()
            cx, cy = (lx + rx) / 2 + 0.0, (ly + ry) / 2 + cal.segments["torso"]
        else:
            return np.array([0.0, rest_y, 0.0]) if self._previous_hips is None else self._previous_hips
        scale = self._lifter.scale if isinstance(self._lifter, ForeshorteningLifter) and self._lifter.scale > 0 else 1.0
        px_per_m_cal = cal.body_px / CANONICAL_BODY_M
        px_per_m = px_per_m_cal * scale
        width = cal.image_size[0]
        focal = (width / 2) / math.tan(math.radians(self.config.fov_deg) / 2)
        depth_cal = focal / px_per_m_cal  # metres from the camera at calibration
        x = (cx - width / 2) / px_per_m - (cal.hip_center[0] - width / 2) / px_per_m_cal
        y = -((cy - cal.image_size[1] / 2) / px_per_m - (cal.hip_center[1] - cal.image_size[1] / 2) / px_per_m_cal)
        z = depth_cal * (1.0 - 1.0 / scale)
        y -= cal.standing_drop_m  # hips at the height they stood at while calibrating (0: straight legs)
        if self.upper_body:
            y = 0.0
        pos = np.array([0.0 + x, rest_y + y, 0.0 + z])
        self._previous_hips = pos
        return pos


def mirror_rig(rig: RigPose) -> RigPose:
    """The mirror image of a pose (the selfie view): left and right bones and confidences swapped,
    rotations reflected across the avatar's sagittal (YZ) plane, hips x negated (metres).

    Applied where motion is shown or streamed live (viewer, VMC; ``retarget.mirror``) and by
    ``export-bvh --mirror`` / ``convert --mirror``; never by :meth:`Retargeter.solve`. Its own inverse.
    """
    return RigPose(
        timestamp=rig.timestamp, track_id=rig.track_id,
        hips_position=np.asarray(rig.hips_position, dtype=np.float64) * np.array([-1.0, 1.0, 1.0]),
        rotations=mirror_rotations(rig.rotations),
        confidence={_mirror_name(k): v for k, v in rig.confidence.items()},
        tracking=rig.tracking,
    )


def _mirror_name(name: str) -> str:
    if name.startswith("left"):
        return "right" + name[4:]
    if name.startswith("right"):
        return "left" + name[5:]
    return name
