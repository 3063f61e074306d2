"""AMP humanoid motion clips (``.npy``) and DeepMimic humanoid3d motions (``.txt``) as mocap: a
15-body skeleton's forward kinematics -> COCO-17.

The format is the one NVIDIA's IsaacGymEnvs ships its AMP reference motions in (``assets/amp/
motions/amp_humanoid_*.npy``, made from CMU motion capture): a NumPy ``.npy`` file holding one pickled
dict with

- ``rotation.arr``: (frames, 15, 4) local joint rotations, quaternions x y z w;
- ``root_translation.arr``: (frames, 3) pelvis position, metres, Z up;
- ``skeleton_tree.node_names`` (15 names), ``skeleton_tree.parent_indices.arr`` (15,),
  ``skeleton_tree.local_translation.arr`` (15, 3) joint offsets from the parent, metres;
- ``fps``: frames per second.

The DeepMimic humanoid3d motions (Peng et al., "DeepMimic", SIGGRAPH 2018; the
``humanoid3d_*.txt`` files, shipped for example in PyPI's ``pybullet`` wheel under
``pybullet_data/data/motions/``) drive the same 15-body humanoid, Y up: a JSON object whose
``"Frames"`` rows are 44 numbers: frame duration (s), root position (3, metres), then quaternions
(w, x, y, z) for the root, chest, neck, right hip, a right knee angle (radians, about the joint's Z
axis), right ankle, right shoulder, a right elbow angle, and the same for the left side.
:func:`load_deepmimic` turns them into an :class:`AmpMotion` (axes turned to Z up, the humanoid's
joint offsets :data:`HUMANOID_OFFSETS`, hands at rest); the AMP backflip is the DeepMimic backflip
retargeted, and the two agree joint for joint (``tests/test_amp.py``).

Reading an AMP clip unpickles only NumPy arrays, dtypes, ``OrderedDict`` and plain containers (a restricted
unpickler): a ``.npy`` given as ``--source`` cannot run code.

The skeleton has bodies, not anatomical landmarks: COCO shoulders, elbows, wrists, hips, knees and
ankles are the origins of the upper arm, lower arm, hand, thigh, shin and foot bodies (their joints).
It has no neck or face, so nose, eyes and ears are FIXED OFFSETS in the head body's frame
(:data:`AMP_FACE_OFFSETS`), placed on the head sphere of the AMP humanoid model (radius about
0.09 m, centred 0.175 m above the head joint at the base of the neck). They follow the head's
rotation exactly but are not measured: face-point errors on these clips say nothing about a face.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import quat
from .keypoints import KEYPOINT_INDEX, NUM_KEYPOINTS

# COCO body keypoint -> AMP body whose origin (joint) it is.
AMP_BODY_JOINTS: dict[str, str] = {
    "left_shoulder": "left_upper_arm",
    "right_shoulder": "right_upper_arm",
    "left_elbow": "left_lower_arm",
    "right_elbow": "right_lower_arm",
    "left_wrist": "left_hand",
    "right_wrist": "right_hand",
    "left_hip": "left_thigh",
    "right_hip": "right_thigh",
    "left_knee": "left_shin",
    "right_knee": "right_shin",
    "left_ankle": "left_foot",
    "right_ankle": "right_foot",
}

# Face points in the head body's frame (metres; AMP axes: +X forward, +Y the performer's left, +Z up),
# from the head joint: the head sphere's centre is 0.175 m above it.
AMP_FACE_OFFSETS: dict[str, tuple[float, float, float]] = {
    "nose": (0.095, 0.0, 0.16),
    "left_eye": (0.08, 0.032, 0.19),
    "right_eye": (0.08, -0.032, 0.19),
    "left_ear": (0.0, 0.08, 0.175),
    "right_ear": (0.0, -0.08, 0.175),
}

# AMP world (X forward, Y left, Z up) -> canonical frame (X left, Y up, Z forward): a cyclic axis
# permutation, so a proper rotation.
_TO_CANONICAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (an AMP clip holds only arrays and dicts)")
        return super().find_class(module, name)


def _read_npy_object(path: Path) -> object:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as exc:
            raise ValueError(f"{path}: not a NumPy .npy file ({exc})") from None
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype != np.dtype(object) or shape != ():
            raise ValueError(f"{path}: expected an AMP motion (one pickled dict), found a {dtype} array of shape {shape}")
        try:
            return _RestrictedUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as exc:
            raise ValueError(f"{path}: cannot read the AMP motion: {exc}") from None


def _arr(value: object, key: str, path: Path) -> np.ndarray:
    if isinstance(value, dict) and "arr" in value:
        value = value["arr"]
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: {key} is not an array")
    return value


@dataclass
class AmpMotion:
    """One AMP clip: local rotations (N, J, 4) xyzw, root positions (N, 3) metres Z up, skeleton."""

    path: Path | None
    names: list[str]
    parents: np.ndarray  # (J,) parent index, -1 for the root
    offsets: np.ndarray  # (J, 3) metres, in the parent's frame
    rotations: np.ndarray  # (N, J, 4)
    root: np.ndarray  # (N, 3)
    frame_time: float  # seconds per frame

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    def world_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (N, J, 4) and positions (N, J, 3) in the file's frame (metres, Z up)."""
        n, j = self.rotations.shape[:2]
        rot = np.empty((n, j, 4))
        pos = np.empty((n, j, 3))
        for i in range(j):
            p = int(self.parents[i])
            local = quat.normalize(self.rotations[:, i])
            if p < 0:
                rot[:, i] = local
                pos[:, i] = self.root
            else:
                rot[:, i] = quat.mul(rot[:, p], local)
                pos[:, i] = pos[:, p] + quat.rotate(rot[:, p], np.broadcast_to(self.offsets[i], (n, 3)))
        return rot, pos

    def coco17_points(self) -> np.ndarray:
        """COCO-17 keypoints (N, 17, 3) at the clip's own frames, metres, Y up (canonical axes,
        not yet turned to face +Z: :func:`avatar_bridge.mocap.coco17_world` does that)."""
        rot, pos = self.world_transforms()
        index = {name: i for i, name in enumerate(self.names)}
        points = np.empty((self.num_frames, NUM_KEYPOINTS, 3))
        for keypoint, body in AMP_BODY_JOINTS.items():
            points[:, KEYPOINT_INDEX[keypoint]] = pos[:, index[body]]
        head = index["head"]
        for keypoint, offset in AMP_FACE_OFFSETS.items():
            points[:, KEYPOINT_INDEX[keypoint]] = pos[:, head] + quat.rotate(rot[:, head], np.broadcast_to(np.asarray(offset), (self.num_frames, 3)))
        return points @ _TO_CANONICAL.T


# The 15-body humanoid of DeepMimic and AMP: bodies, parents and joint offsets from the parent
# (metres, Z up, X forward, Y left), as the AMP clips store them (the DeepMimic character's joints).
HUMANOID_NAMES = ["pelvis", "torso", "head", "right_upper_arm", "right_lower_arm", "right_hand", "left_upper_arm",
                  "left_lower_arm", "left_hand", "right_thigh", "right_shin", "right_foot", "left_thigh", "left_shin",
                  "left_foot"]
HUMANOID_PARENTS = np.array([-1, 0, 1, 1, 3, 4, 1, 6, 7, 0, 9, 10, 0, 12, 13])
HUMANOID_OFFSETS = np.array([
    [0.0, 0.0, 1.0], [0.0, 0.0, 0.236151], [0.0, 0.0, 0.223894],
    [-0.02405, -0.18311, 0.2435], [0.0, 0.0, -0.274788], [0.0, 0.0, -0.258947],
    [-0.02405, 0.18311, 0.2435], [0.0, 0.0, -0.274788], [0.0, 0.0, -0.258947],
    [0.0, -0.084887, 0.0], [0.0, 0.0, -0.421546], [0.0, 0.0, -0.40987],
    [0.0, 0.084887, 0.0], [0.0, 0.0, -0.421546], [0.0, 0.0, -0.40987],
])
# DeepMimic's row layout after the duration and root position: (body, 4 = quaternion w x y z, 1 = hinge angle).
_DEEPMIMIC_ROW = (("pelvis", 4), ("torso", 4), ("head", 4), ("right_thigh", 4), ("right_shin", 1), ("right_foot", 4),
                  ("right_upper_arm", 4), ("right_lower_arm", 1), ("left_thigh", 4), ("left_shin", 1), ("left_foot", 4),
                  ("left_upper_arm", 4), ("left_lower_arm", 1))
_DEEPMIMIC_WIDTH = 1 + 3 + sum(n for _, n in _DEEPMIMIC_ROW)  # 44
# Y up -> Z up (x, y, z) -> (x, -z, y): a rotation of +90 degrees about X (quaternion x y z w).
_Y_UP_TO_Z_UP = np.array([math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)])


def load_deepmimic(path: str | Path) -> AmpMotion:
    """Read a DeepMimic humanoid3d motion (see the module docstring) as an :class:`AmpMotion`.

    Raises FileNotFoundError when ``path`` is missing and ValueError (one line, with the fix) when
    it is not such a motion: not JSON, no ``Frames``, rows not 44 numbers, non-finite values, or
    frame durations that are not positive.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepMimic motion {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: not a DeepMimic humanoid3d motion (a JSON object with \"Frames\" rows of "
                         f"{_DEEPMIMIC_WIDTH} numbers): use a humanoid3d_*.txt motion, a .bvh or an AMP .npy clip") from None
    if frames.ndim != 2 or frames.shape[1] != _DEEPMIMIC_WIDTH or frames.shape[0] < 2:
        raise ValueError(f"{path}: DeepMimic frames must be at least 2 rows of {_DEEPMIMIC_WIDTH} numbers (the humanoid3d "
                         f"character), found shape {frames.shape}")
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{path}: DeepMimic frames hold NaN or infinite values")
    durations = frames[:-1, 0]  # the last row's duration is often 0 (the clip's end)
    if not np.all(durations > 0):
        raise ValueError(f"{path}: DeepMimic frame durations must be positive seconds")
    n = frames.shape[0]
    c = np.broadcast_to(_Y_UP_TO_Z_UP, (n, 4))
    c_inv = c * np.array([-1.0, -1.0, -1.0, 1.0])
    rotations = np.tile(quat.IDENTITY, (n, len(HUMANOID_NAMES), 1))
    column = 4
    for body, width in _DEEPMIMIC_ROW:
        values = frames[:, column:column + width]
        column += width
        if width == 4:  # w x y z -> x y z w
            local = np.concatenate([values[:, 1:], values[:, :1]], axis=1)
        else:  # a hinge: an angle about the joint's Z axis
            half = values[:, 0] / 2.0
            local = np.stack([np.zeros(n), np.zeros(n), np.sin(half), np.cos(half)], axis=1)
        rotations[:, HUMANOID_NAMES.index(body)] = quat.mul(quat.mul(c, quat.normalize(local)), c_inv)
    root = frames[:, 1:4] @ np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # (x, y, z) -> (x, -z, y)
    return AmpMotion(path, list(HUMANOID_NAMES), HUMANOID_PARENTS.copy(), HUMANOID_OFFSETS.copy(), rotations, root,
                     float(np.median(durations)))


def load_amp(path: str | Path) -> AmpMotion:
    """Read an AMP humanoid clip (see the module docstring).

    Raises FileNotFoundError when ``path`` is missing and ValueError when it is not an AMP motion
    (wrong layout, missing bodies, inconsistent shapes, fps not positive, or pickled objects other
    than arrays and dicts).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AMP clip {path} not found")
    data = _read_npy_object(path)
    if isinstance(data, np.ndarray) and data.shape == ():
        data = data.item()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of arrays (an AMP motion), found {type(data).__name__}")
    try:
        tree = data["skeleton_tree"]
        names = [str(n) for n in tree["node_names"]]
        parents = _arr(tree["parent_indices"], "skeleton_tree.parent_indices", path).astype(np.int64)
        offsets = _arr(tree["local_translation"], "skeleton_tree.local_translation", path).astype(np.float64)
        rotations = _arr(data["rotation"], "rotation", path).astype(np.float64)
        root = _arr(data["root_translation"], "root_translation", path).astype(np.float64)
        fps = float(np.asarray(data["fps"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an AMP motion (missing {exc})") from None
    j = len(names)
    if parents.shape != (j,) or offsets.shape != (j, 3) or rotations.ndim != 3 or rotations.shape[1:] != (j, 4):
        raise ValueError(f"{path}: inconsistent AMP skeleton: {j} names, parents {parents.shape}, offsets {offsets.shape}, rotations {rotations.shape}")
    if root.shape != (rotations.shape[0], 3) or rotations.shape[0] < 2:
        raise ValueError(f"{path}: root_translation {root.shape} does not match {rotations.shape[0]} frames (need at least 2)")
    if np.any(parents >= np.arange(j)):
        raise ValueError(f"{path}: every AMP body's parent must come before it")
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    missing = [b for b in (*AMP_BODY_JOINTS.values(), "head") if b not in names]
    if missing:
        raise ValueError(f"{path}: AMP skeleton lacks bodies {', '.join(missing)}")
    if not (np.all(np.isfinite(rotations)) and np.all(np.isfinite(root))):
        raise ValueError(f"{path}: non-finite rotations or root positions")
    return AmpMotion(path, names, parents, offsets, rotations, root, 1.0 / fps)
