"""Dataclasses passed between the pipeline stages.

Conventions used everywhere:
- Image coordinates are pixels, x right, y down, origin at the top-left pixel corner.
- Keypoints are COCO-17 (see :mod:`avatar_bridge.keypoints`), arrays of shape (K, 2) float32,
  with scores (K,) float32 in [0, 1]; a score of 0 means "not measured".
- Timestamps are ``time.monotonic()`` seconds.
- Quaternions are numpy arrays (x, y, z, w), unit length.
- 3D positions are metres in the canonical frame of :mod:`avatar_bridge.skeleton`
  (right-handed, Y up, the avatar faces +Z, its left arm points to +X).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One captured frame.

    Image sources fill ``image``; keypoint-only sources (synthetic performer, BVH) leave it None
    and put their exact 2D people in ``truth`` (and BVH its 3D joints in ``joints3d``).
    """

    index: int
    timestamp: float
    width: int
    height: int
    image: np.ndarray | None = None  # (H, W, 3) uint8 BGR
    truth: list["Pose2D"] | None = None
    joints3d: np.ndarray | None = None  # (K, 3) metres, camera-independent world frame
    dropped: int = 0  # frames the reader discarded since the previous frame handed out


@dataclass
class Detection:
    """A person box from a detector, x1 y1 x2 y2 in pixels."""

    box: np.ndarray  # (4,) float32
    score: float


@dataclass
class Pose2D:
    """One person's 2D keypoints in one frame."""

    keypoints: np.ndarray  # (K, 2) float32 pixels
    scores: np.ndarray  # (K,) float32
    box: np.ndarray | None = None  # (4,) x1 y1 x2 y2 the crop came from
    track_id: int = 0

    @property
    def score(self) -> float:
        """Mean keypoint score: the person's overall confidence."""
        return float(self.scores.mean()) if self.scores.size else 0.0


@dataclass
class FramePoses:
    """Every person found in one frame, plus how long each stage took (ms)."""

    frame_index: int
    timestamp: float
    width: int
    height: int
    people: list[Pose2D] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class RigPose:
    """Humanoid pose for one person: what every output (WebSocket, VMC, recording, BVH) consumes.

    ``rotations`` holds parent-local rotations of the normalized rig (identity = T-pose) in the
    canonical frame; bones that are absent keep their rest rotation.
    """

    timestamp: float
    track_id: int
    hips_position: np.ndarray  # (3,) metres, canonical frame
    rotations: dict[str, np.ndarray]  # bone name (VRM 1.0 camelCase) -> (4,) quaternion xyzw
    confidence: dict[str, float] = field(default_factory=dict)
    tracking: bool = True


class FrameSourceBase:
    """What every frame source shares: ``with source:`` closes it, ``for frame in source:`` reads to the end.

    Subclasses define ``read() -> Frame | None`` and ``close()``.
    """

    def read(self) -> Frame | None:  # pragma: no cover - always overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - always overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame
