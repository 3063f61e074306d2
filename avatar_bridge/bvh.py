"""BVH motion capture files: a reader and vectorized forward kinematics.

A BVH file is a joint hierarchy (OFFSET = rest translation from the parent, CHANNELS = which of
X/Y/Z position and rotation the MOTION lines animate, in which order) followed by one line of
channel values per frame. Rotations are Euler angles in degrees applied in the order the channels
are listed (intrinsic), i.e. ``R = R(first) @ R(second) @ R(third)``; Blender, MotionBuilder and
the CMU conversions all read it that way. Position channels are the joint's absolute local
translation (they replace the OFFSET component, as Blender's importer treats them).

End Sites are kept as channel-less joints named ``<parent>_end`` (``is_end_site`` marks them),
because they carry the tips of the head, hands and feet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ROTATION_AXES = {"Xrotation": 0, "Yrotation": 1, "Zrotation": 2}
_POSITION_AXES = {"Xposition": 0, "Yposition": 1, "Zposition": 2}
VALID_CHANNELS = frozenset(_ROTATION_AXES) | frozenset(_POSITION_AXES)
_HIERARCHY_WORDS = frozenset({"ROOT", "JOINT", "END", "OFFSET", "CHANNELS", "{", "}", "MOTION"})


@dataclass
class BvhMotion:
    """A parsed BVH file. Joints are in file order, so a parent always precedes its children."""

    names: list[str]
    parents: np.ndarray  # (J,) int, -1 for a root
    offsets: np.ndarray  # (J, 3) float64 rest translation from the parent, file units
    channels: list[tuple[str, ...]]  # per joint, in file order (empty for End Sites)
    is_end_site: np.ndarray  # (J,) bool
    frame_time: float  # seconds per frame
    motion: np.ndarray  # (N, C) float64 channel values, C = total channel count
    path: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def duration(self) -> float:
        return self.num_frames * self.frame_time

    def index(self, name: str) -> int:
        """Joint index by exact name; KeyError lists the available names."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"joint {name!r} is not in {self.path or 'the BVH file'}: joints are {', '.join(self.names)}") from None

    def channel_columns(self) -> list[np.ndarray]:
        """Per joint, the column indices of its channels in ``motion``."""
        columns, start = [], 0
        for chans in self.channels:
            columns.append(np.arange(start, start + len(chans)))
            start += len(chans)
        return columns

    def local_transforms(self, frames: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Local rotation matrices (N, J, 3, 3) and translations (N, J, 3) for the chosen frames."""
        values = self.motion if frames is None else self.motion[frames]
        values = np.atleast_2d(values)
        n = values.shape[0]
        rot = np.broadcast_to(np.eye(3), (n, self.num_joints, 3, 3)).copy()
        trans = np.broadcast_to(self.offsets, (n, self.num_joints, 3)).copy()
        for j, (chans, cols) in enumerate(zip(self.channels, self.channel_columns())):
            r = None
            for name, col in zip(chans, cols):
                if name in _POSITION_AXES:
                    trans[:, j, _POSITION_AXES[name]] = values[:, col]
                else:
                    axis_rot = _axis_rotation(_ROTATION_AXES[name], np.radians(values[:, col]))
                    r = axis_rot if r is None else r @ axis_rot
            if r is not None:
                rot[:, j] = r
        return rot, trans

    def world_transforms(self, frames: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World rotation matrices (N, J, 3, 3) and joint positions (N, J, 3) in file units."""
        rot, trans = self.local_transforms(frames)
        world_rot = np.empty_like(rot)
        world_pos = np.empty_like(trans)
        for j, p in enumerate(self.parents):
            if p < 0:
                world_rot[:, j] = rot[:, j]
                world_pos[:, j] = trans[:, j]
            else:
                world_rot[:, j] = world_rot[:, p] @ rot[:, j]
                world_pos[:, j] = world_pos[:, p] + np.einsum("nab,nb->na", world_rot[:, p], trans[:, j])
        return world_rot, world_pos

    def world_positions(self, frames: np.ndarray | slice | None = None) -> np.ndarray:
        """Joint positions (N, J, 3) in file units and axes."""
        return self.world_transforms(frames)[1]

    def world_rotations(self, frames: np.ndarray | slice | None = None) -> np.ndarray:
        """World rotation matrices (N, J, 3, 3): joint-local axes expressed in the file's frame."""
        return self.world_transforms(frames)[0]


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) about one coordinate axis (right-handed, counter-clockwise)."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(angle.shape + (3, 3))
    m[..., axis, axis] = 1.0
    i, k = [(1, 2), (2, 0), (0, 1)][axis]
    m[..., i, i] = c
    m[..., i, k] = -s
    m[..., k, i] = s
    m[..., k, k] = c
    return m


class BvhError(ValueError):
    """A malformed BVH file; the message names the file and the line."""


class _Tokens:
    """Whitespace tokens of ``lines[start:stop]`` as (1-based line, token), with
    :meth:`rest_of_line` for the names of ROOT and JOINT lines, which may contain spaces."""

    def __init__(self, lines: list[str], start: int, stop: int):
        self._items = [(number + 1, token) for number in range(start, stop) for token in lines[number].split()]
        self._pos = 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, str]:
        if self._pos >= len(self._items):
            raise StopIteration
        self._pos += 1
        return self._items[self._pos - 1]

    def rest_of_line(self, line: int) -> list[str]:
        """The tokens after the current one on ``line`` (consumed)."""
        out = []
        while self._pos < len(self._items) and self._items[self._pos][0] == line:
            out.append(self._items[self._pos][1])
            self._pos += 1
        return out

    def push_back(self) -> None:
        self._pos -= 1


def _tokens(lines: list[str], start: int, stop: int) -> _Tokens:
    return _Tokens(lines, start, stop)


def load_bvh(path: str | Path) -> BvhMotion:
    """Read a BVH file; malformed content raises :class:`BvhError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BVH file {path} not found: pass the path of a .bvh motion file")
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_bvh(text, str(path))


def parse_bvh(text: str, source: str = "<bvh>") -> BvhMotion:
    """Parse BVH text (see :func:`load_bvh`)."""
    lines = text.splitlines()

    def fail(line: int, message: str) -> BvhError:
        return BvhError(f"{source} line {line}: {message}")

    motion_line = next((i for i, ln in enumerate(lines) if ln.strip().upper().startswith("MOTION")), None)
    if motion_line is None:
        raise fail(len(lines), "no MOTION section: a BVH file has HIERARCHY then MOTION")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: list[bool] = []
    stack: list[int] = []  # open joint indices
    pending: int | None = None  # a joint declared, waiting for its "{"
    seen_hierarchy = False
    tokens = _tokens(lines, 0, motion_line)
    last_line = 1
    for line, token in tokens:
        last_line = line
        upper = token.upper()
        if upper == "HIERARCHY":
            seen_hierarchy = True
        elif upper in ("ROOT", "JOINT", "END"):
            if not seen_hierarchy:
                raise fail(line, "joint before HIERARCHY")
            if upper == "JOINT" and not stack:
                raise fail(line, "JOINT outside any ROOT block")
            if upper == "ROOT" and stack:
                raise fail(line, "ROOT inside another joint's block: close it with }")
            # The whole rest of a ROOT/JOINT line is the name: 3ds Max Biped and Rocketbox names have
            # spaces ("Bip01 L UpperArm"). A "{" at the end of the line opens the block.
            words = tokens.rest_of_line(line)
            if words and words[-1] == "{":
                words.pop()
                tokens.push_back()
            if not words:  # the name on the next line (unusual, but one token then)
                _, name = next(tokens, (line, None))
            else:
                name = words[0] if upper == "END" else " ".join(words)
                if upper == "END" and len(words) > 1:
                    raise fail(line, f"expected 'End Site', got 'End {' '.join(words)}'")
            if name is None or name == "{":
                raise fail(line, f"{token} without a name")
            is_end = upper == "END"
            if is_end:
                if name.upper() != "SITE":
                    raise fail(line, f"expected 'End Site', got 'End {name}'")
                name = f"{names[stack[-1]]}_end"
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            end_sites.append(is_end)
            pending = len(names) - 1
        elif token == "{":
            if pending is None:
                raise fail(line, "'{' without a ROOT, JOINT or End Site before it")
            stack.append(pending)
            pending = None
        elif token == "}":
            if not stack:
                raise fail(line, "'}' without a matching '{'")
            stack.pop()
        elif upper == "OFFSET":
            if not stack:
                raise fail(line, "OFFSET outside a joint block")
            values = []
            for _ in range(3):
                vline, value = next(tokens, (line, None))
                try:
                    values.append(float(value))
                except (TypeError, ValueError):
                    raise fail(vline, f"OFFSET needs 3 numbers, got {value!r}") from None
            offsets[stack[-1]] = values
        elif upper == "CHANNELS":
            if not stack:
                raise fail(line, "CHANNELS outside a joint block")
            _, count_text = next(tokens, (line, None))
            try:
                count = int(count_text)
            except (TypeError, ValueError):
                raise fail(line, f"CHANNELS needs a count, got {count_text!r}") from None
            if not 0 <= count <= 6:
                raise fail(line, f"CHANNELS count {count} is out of range 0 to 6")
            chans = []
            for _ in range(count):
                cline, chan = next(tokens, (line, None))
                if chan is None or (cline != line and chan.upper() in _HIERARCHY_WORDS):
                    # The count is larger than the names given (the next joint's keyword came instead).
                    raise fail(line, f"CHANNELS {count} names only {len(chans)} channels ({' '.join(chans) or 'none'}): "
                                     "make the count match the channel names")
                if chan not in VALID_CHANNELS:
                    raise fail(cline, f"unknown channel {chan!r}: allowed are {', '.join(sorted(VALID_CHANNELS))}")
                chans.append(chan)
            if end_sites[stack[-1]]:
                raise fail(line, "an End Site cannot have CHANNELS")
            channels[stack[-1]] = tuple(chans)
        else:
            raise fail(line, f"unexpected {token!r} in HIERARCHY")
    if not names:
        raise fail(motion_line + 1, "HIERARCHY has no ROOT joint")
    if stack or pending is not None:
        raise fail(last_line, f"joint {names[stack[-1] if stack else pending]!r} is not closed with }} before MOTION")

    # MOTION: "Frames: N", "Frame Time: dt", then N lines of values.
    header = [(i, lines[i].strip()) for i in range(motion_line + 1, len(lines)) if lines[i].strip()]
    if len(header) < 2:
        raise fail(len(lines), "MOTION needs 'Frames:' and 'Frame Time:' lines")
    (frames_i, frames_text), (time_i, time_text) = header[0], header[1]
    try:
        key, value = frames_text.split(":", 1)
        assert key.strip().lower() == "frames"
        num_frames = int(value)
    except (ValueError, AssertionError):
        raise fail(frames_i + 1, f"expected 'Frames: <count>', got {frames_text!r}") from None
    try:
        key, value = time_text.split(":", 1)
        assert key.strip().lower() == "frame time"
        frame_time = float(value)
    except (ValueError, AssertionError):
        raise fail(time_i + 1, f"expected 'Frame Time: <seconds>', got {time_text!r}") from None
    if not (frame_time > 0 and np.isfinite(frame_time)):
        raise fail(time_i + 1, f"Frame Time must be a positive number of seconds, got {frame_time}")
    if num_frames < 1:
        raise fail(frames_i + 1, f"Frames must be at least 1, got {num_frames}")
    num_channels = sum(len(c) for c in channels)
    rows = header[2:]
    if len(rows) < num_frames:
        last = rows[-1][0] + 1 if rows else time_i + 1
        raise fail(last, f"file ends after {len(rows)} of {num_frames} frames (truncated file?)")
    motion = np.empty((num_frames, num_channels))
    for f, (i, row) in enumerate(rows[:num_frames]):
        parts = row.split()
        if len(parts) != num_channels:
            raise fail(i + 1, f"frame {f} has {len(parts)} values, the hierarchy declares {num_channels} channels")
        try:
            motion[f] = [float(p) for p in parts]
        except ValueError:
            raise fail(i + 1, f"frame {f} has a value that is not a number") from None
    if not np.all(np.isfinite(motion)):
        bad = int(np.argwhere(~np.isfinite(motion))[0, 0])
        raise fail(rows[bad][0] + 1, f"frame {bad} has a NaN or infinite value")
    return BvhMotion(
        names=names,
        parents=np.array(parents, dtype=np.int64),
        offsets=np.array(offsets, dtype=np.float64),
        channels=channels,
        is_end_site=np.array(end_sites, dtype=bool),
        frame_time=frame_time,
        motion=motion,
        path=source,
    )


# ==================================================================================================
# BVH writer (owner: recording engineer). Exports RigPose motion; the reader above is untouched.
#
# What the written file looks like, and why:
# - hierarchy = the humanoid of :mod:`avatar_bridge.skeleton` (body bones, optionally every bone),
#   OFFSETs = its rest offsets, so all-zero rotations are the T-pose; End Sites on the leaves so
#   Blender gives every bone a length;
# - canonical frame as is: right-handed, Y up, the performer faces +Z (Blender: Forward -Z, Up Y);
# - ROOT OFFSET is 0 0 0 and the root position channels carry the absolute hips position, so
#   importers that add OFFSET to the channels and those that replace it (Blender) agree;
# - rotations as ZXY Euler angles in degrees (``CHANNELS ... Zrotation Xrotation Yrotation``,
#   R = Rz @ Rx @ Ry), unwrapped over time so curves have no 360-degree jumps;
# - a fixed frame rate: the timestamps of live capture jitter, so the motion is resampled with
#   slerp (rotations) and linear interpolation (hips position).
# ==================================================================================================

import logging as _logging
import warnings as _warnings

from . import quat as _quat
from . import skeleton as _skeleton
from .files import check_writable, write_text_atomic
from .files import refuse_existing as _refuse_existing

_bvh_log = _logging.getLogger(__name__ + ".writer")

BVH_ROOT_CHANNELS = ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
BVH_JOINT_CHANNELS = ("Zrotation", "Xrotation", "Yrotation")
BVH_UNITS = {"m": 1.0, "cm": 100.0}  # file units per metre
BVH_BONE_SETS = ("body", "full")

# Tips for End Sites where the bone's own offset direction is a poor guess (metres, canonical frame).
_END_SITE_TIPS = {
    "head": (0.0, 0.16, 0.0),
    "leftToes": (0.0, 0.0, 0.06),
    "rightToes": (0.0, 0.0, 0.06),
}


def bvh_bone_names(bone_set: str = "body") -> tuple[str, ...]:
    """Bones a BVH export contains, in skeleton order: ``body`` (what COCO-17 drives) or ``full``."""
    if bone_set == "body":
        return _skeleton.BODY_BONES
    if bone_set == "full":
        return _skeleton.BONE_NAMES
    raise ValueError(f"BVH bone set {bone_set!r} is unknown: choose one of {', '.join(BVH_BONE_SETS)}")


def rig_poses_to_arrays(poses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RigPoses -> timestamps (N,), hips positions (N, 3), local rotations (N, B, 4) in BONES order.

    Bones a pose leaves out are at rest (identity), as :class:`avatar_bridge.types.RigPose` says.
    """
    n = len(poses)
    times = np.empty(n)
    hips = np.empty((n, 3))
    rotations = np.tile(_quat.IDENTITY, (n, len(_skeleton.BONES), 1))
    for i, pose in enumerate(poses):
        times[i] = pose.timestamp
        hips[i] = pose.hips_position
        for name, q in pose.rotations.items():
            index = _skeleton.BONE_INDEX.get(name)
            if index is None:
                raise ValueError(f"RigPose has unknown bone {name!r}: bone names are VRM 1.0 names from skeleton.BONE_NAMES")
            rotations[i, index] = q
    return times, hips, rotations


def resample_motion(
    timestamps: np.ndarray, hips: np.ndarray, rotations: np.ndarray, fps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample motion sampled at ``timestamps`` to a fixed rate starting at the first sample.

    Rotations (N, B, 4) are slerped between the two samples around each output time, hips (N, 3)
    interpolated linearly. Returns (times (M,), hips (M, 3), rotations (M, B, 4)).
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.ndim != 1 or timestamps.size == 0:
        raise ValueError("resample_motion needs at least one sample")
    if not fps > 0:
        raise ValueError(f"BVH frame rate {fps!r} must be positive (e.g. --fps 30)")
    if np.any(np.diff(timestamps) < 0):
        raise ValueError("motion timestamps go backwards: samples must be in time order")
    hips = np.asarray(hips, dtype=np.float64)
    rotations = _quat.normalize(np.asarray(rotations, dtype=np.float64))
    if timestamps.size == 1:
        return timestamps.copy(), hips.copy(), rotations.copy()
    duration = timestamps[-1] - timestamps[0]
    count = int(np.floor(duration * fps + 1e-6)) + 1
    times = timestamps[0] + np.arange(count) / fps
    # Bracketing samples (duplicate timestamps get a zero-width span: take the later sample).
    upper = np.clip(np.searchsorted(timestamps, times, side="right"), 1, timestamps.size - 1)
    lower = upper - 1
    span = timestamps[upper] - timestamps[lower]
    alpha = np.clip(np.divide(times - timestamps[lower], span, out=np.ones_like(times), where=span > 0), 0.0, 1.0)
    out_hips = hips[lower] + (hips[upper] - hips[lower]) * alpha[:, None]
    alpha_b = np.broadcast_to(alpha[:, None], (count, rotations.shape[1]))
    out_rot = _quat.slerp(rotations[lower], rotations[upper], alpha_b)
    return times, out_hips, out_rot


def quaternions_to_bvh_euler(rotations: np.ndarray) -> np.ndarray:
    """Quaternions (N, B, 4) -> BVH angles (N, B, 3) in degrees, in channel order Z, X, Y.

    Intrinsic ZXY (R = Rz @ Rx @ Ry), unwrapped along time so no channel jumps by 360 degrees.
    """
    from scipy.spatial.transform import Rotation

    rotations = np.asarray(rotations, dtype=np.float64)
    flat = rotations.reshape(-1, 4)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # gimbal lock: still an exact representation
        angles = Rotation.from_quat(flat).as_euler("ZXY", degrees=True)
    angles = angles.reshape(rotations.shape[:-1] + (3,))
    return np.unwrap(angles, period=360.0, axis=0)


def _end_site(name: str, offset: np.ndarray) -> np.ndarray:
    if name in _END_SITE_TIPS:
        return np.array(_END_SITE_TIPS[name])
    length = float(np.linalg.norm(offset))
    return offset / max(length, 1e-9) * float(np.clip(0.5 * length, 0.02, 0.10))


def bvh_hierarchy_text(bone_names, offsets: np.ndarray, scale: float) -> tuple[str, list[str]]:
    """The HIERARCHY section for ``bone_names`` (a connected subset of BONES containing hips).

    Returns the text and the joint names in channel (depth-first declaration) order.
    """
    chosen = set(bone_names)
    children: dict[str, list[str]] = {name: [] for name in chosen}
    for bone in _skeleton.BONES:
        if bone.name in chosen and bone.parent is not None:
            if bone.parent not in chosen:
                raise ValueError(f"BVH bone {bone.name!r} needs its parent {bone.parent!r} in the export")
            children[bone.parent].append(bone.name)
    if "hips" not in chosen:
        raise ValueError("a BVH export needs the hips bone as its root")
    lines = ["HIERARCHY"]
    order: list[str] = []

    def fmt(v) -> str:
        return " ".join(f"{x * scale:.6f}" for x in v)

    def emit(name: str, depth: int) -> None:
        pad = "\t" * depth
        index = _skeleton.BONE_INDEX[name]
        if name == "hips":
            lines.append(f"{pad}ROOT {name}")
            lines.append(f"{pad}{{")
            lines.append(f"{pad}\tOFFSET 0.000000 0.000000 0.000000")
            lines.append(f"{pad}\tCHANNELS 6 {' '.join(BVH_ROOT_CHANNELS)}")
        else:
            lines.append(f"{pad}JOINT {name}")
            lines.append(f"{pad}{{")
            lines.append(f"{pad}\tOFFSET {fmt(offsets[index])}")
            lines.append(f"{pad}\tCHANNELS 3 {' '.join(BVH_JOINT_CHANNELS)}")
        order.append(name)
        for child in children[name]:
            emit(child, depth + 1)
        if not children[name]:
            lines.append(f"{pad}\tEnd Site")
            lines.append(f"{pad}\t{{")
            lines.append(f"{pad}\t\tOFFSET {fmt(_end_site(name, offsets[index]))}")
            lines.append(f"{pad}\t}}")
        lines.append(f"{pad}}}")

    emit("hips", 0)
    return "\n".join(lines) + "\n", order


@dataclass
class BvhExport:
    """What :func:`write_bvh` wrote."""

    path: Path
    frames: int
    fps: float
    joints: int
    units: str

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def write_bvh(
    path: str | Path,
    timestamps,
    hips_positions: np.ndarray | None = None,
    rotations: np.ndarray | None = None,
    *,
    fps: float = 30.0,
    bones: str = "body",
    units: str = "cm",
    offsets: np.ndarray | None = None,
    resample: bool = True,
) -> BvhExport:
    """Write humanoid motion to a BVH file.

    ``timestamps`` (N,) seconds, ``hips_positions`` (N, 3) metres and ``rotations`` (N, B, 4)
    parent-local quaternions (x, y, z, w) in ``skeleton.BONES`` order, canonical frame.
    ``offsets`` (B, 3) metres defaults to ``skeleton.REST_OFFSETS``. With ``resample`` the motion is
    resampled to ``fps`` (frame 0 = the first sample); otherwise samples are written as they are.
    ``write_bvh(path, rig_poses, fps=30)`` (one person's RigPoses, in time order) also works.
    Raises OSError (one line, with the path) when the file cannot be written; the file is written
    under a temporary name and renamed, so a failed write leaves nothing under ``path``.
    """
    if hips_positions is None and rotations is None:
        timestamps, hips_positions, rotations = rig_poses_to_arrays(list(timestamps))
        order = np.argsort(timestamps, kind="stable")  # live output ticks may arrive slightly out of order
        timestamps, hips_positions, rotations = timestamps[order], hips_positions[order], rotations[order]
    elif hips_positions is None or rotations is None:
        raise ValueError("write_bvh needs timestamps, hips_positions and rotations, or a list of RigPoses alone")
    if units not in BVH_UNITS:
        raise ValueError(f"BVH units {units!r} are unknown: choose one of {', '.join(BVH_UNITS)}")
    names = bvh_bone_names(bones)
    offsets = _skeleton.REST_OFFSETS if offsets is None else np.asarray(offsets, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    hips_positions = np.asarray(hips_positions, dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (len(_skeleton.BONES), 4):
        raise ValueError(f"rotations must have shape (N, {len(_skeleton.BONES)}, 4), got {rotations.shape}")
    if hips_positions.shape != (rotations.shape[0], 3) or np.shape(timestamps) != (rotations.shape[0],):
        raise ValueError("timestamps (N,), hips_positions (N, 3) and rotations (N, B, 4) must have the same N")
    if rotations.shape[0] == 0:
        raise ValueError("no motion to write: the take has no pose for this person")
    if not np.all(np.isfinite(rotations)) or not np.all(np.isfinite(hips_positions)):
        raise ValueError("motion has NaN or infinite values: cannot write BVH")
    scale = BVH_UNITS[units]
    hierarchy, order = bvh_hierarchy_text(names, offsets, scale)
    rotations = rotations[:, [_skeleton.BONE_INDEX[name] for name in order]]  # (N, J, 4) in channel order
    if resample:
        _, hips_positions, rotations = resample_motion(timestamps, hips_positions, rotations, fps)
    angles = quaternions_to_bvh_euler(rotations)  # (M, J, 3)
    values = np.concatenate([hips_positions * scale, angles.reshape(angles.shape[0], -1)], axis=1)
    path = Path(path)
    row_format = " ".join(["%.5f"] * values.shape[1])
    rows = "\n".join(row_format % tuple(row) for row in values.tolist())
    text = f"{hierarchy}MOTION\nFrames: {values.shape[0]}\nFrame Time: {1.0 / fps:.8f}\n{rows}\n"
    write_text_atomic(path, text, "BVH file")  # a full disk leaves no cut-off BVH under the real name
    return BvhExport(path=path, frames=int(values.shape[0]), fps=float(fps), joints=len(order), units=units)


class BvhRecorder:
    """Collect one person's RigPoses during a live run and write them as BVH on ``close()``.

    ``track_id=None`` follows the first person that appears. BVH needs its frame count in the
    header, so the file is written at the end; the ``.abrec`` recording is the crash-safe record.
    """

    def __init__(
        self, path: str | Path, track_id: int | None = None, *, fps: float = 30.0, bones: str = "body", units: str = "cm"
    ) -> None:
        if units not in BVH_UNITS:
            raise ValueError(f"BVH units {units!r} are unknown: choose one of {', '.join(BVH_UNITS)}")
        if not fps > 0:
            raise ValueError(f"BVH frame rate {fps!r} must be positive")
        self.path = Path(path)
        check_writable(self.path, "BVH file", "create it, make it writable or change --bvh")  # before the take, not after
        self.track_id = track_id
        self.fps = fps
        self.bones = bones
        self.units = units
        self._columns = {name: row for row, name in enumerate(bvh_bone_names(bones))}
        self._times: list[float] = []
        self._hips: list[np.ndarray] = []
        self._rotations: list[np.ndarray] = []  # (J, 4) float32 per pose, J = exported bones
        self.result: BvhExport | None = None

    @classmethod
    def from_config(cls, config) -> "BvhRecorder":
        """A recorder for ``config.record`` (:class:`avatar_bridge.config.RecordConfig`): ``bvh`` and ``bvh_*``."""
        if not config.bvh:
            raise ValueError("record.bvh is empty: give the BVH file (--bvh OUT.bvh)")
        path = Path(config.bvh).expanduser()
        _refuse_existing(path, config.overwrite, "BVH file")
        track = None if config.bvh_track < 0 else config.bvh_track
        return cls(path, track, fps=config.bvh_fps, bones=config.bvh_bones, units=config.bvh_units)

    def add(self, poses) -> None:
        """Add the RigPoses of one frame (a RigPose or a list); other people are ignored.

        Only the exported bones are kept, as float32 (measured 0.8 KB per pose: about 90 MB per hour at 30 fps).
        """
        if not isinstance(poses, (list, tuple)):
            poses = [poses]
        for pose in poses:
            if self.track_id is None:
                self.track_id = pose.track_id
            if pose.track_id != self.track_id:
                continue
            if self._times and pose.timestamp < self._times[-1]:
                continue  # out-of-order sample: keep the motion monotonic
            rotations = np.tile(_quat.IDENTITY.astype(np.float32), (len(self._columns), 1))
            for name, q in pose.rotations.items():
                row = self._columns.get(name)
                if row is not None:
                    rotations[row] = q
                elif name not in _skeleton.BONE_INDEX:
                    raise ValueError(f"RigPose has unknown bone {name!r}: bone names are VRM 1.0 names from skeleton.BONE_NAMES")
            self._times.append(float(pose.timestamp))
            self._hips.append(np.asarray(pose.hips_position, dtype=np.float64))
            self._rotations.append(rotations)

    def __len__(self) -> int:
        return len(self._times)

    def close(self) -> BvhExport | None:
        """Write the file once; None (and a warning) when no pose of the track arrived."""
        if self.result is not None:
            return self.result
        if not self._times:
            _bvh_log.warning("no person was tracked: BVH file %s not written", self.path)
            return None
        rotations = np.tile(_quat.IDENTITY, (len(self._times), len(_skeleton.BONES), 1))
        rotations[:, [_skeleton.BONE_INDEX[name] for name in self._columns]] = np.stack(self._rotations)
        self.result = write_bvh(
            self.path, np.array(self._times), np.stack(self._hips), rotations, fps=self.fps, bones=self.bones, units=self.units
        )
        self._times, self._hips, self._rotations = [], [], []
        return self.result

    def __enter__(self) -> "BvhRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
