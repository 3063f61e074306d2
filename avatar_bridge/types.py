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
class GroundTruth:
    """What a keypoint-only source knows exactly about its frame (synthetic performer, mocap, a take).

    ``people`` go straight to the stabilizer in place of detection and pose estimation; the rest is
    for tests, benchmarks and playback.
    """

    people: list["Pose2D"] = field(default_factory=list)  # exact 2D people, pixels
    joints3d: np.ndarray | None = None  # (17, 3) COCO-17 joints, metres, camera-independent world frame
    rigs: list["RigPose"] = field(default_factory=list)  # the posed rigs (synthetic) or recorded ones (playback)
    recorded_timestamp: float | None = None  # playback: the frame's timestamp in the take


@dataclass
class Frame:
    """One captured frame.

    Image sources fill ``image``; keypoint-only sources leave it None and fill ``truth``.
    ``timestamp`` is when the frame was captured (``time.monotonic()`` seconds); ``pts`` is its
    presentation time in the source's own timeline (seconds from the first frame of a video file,
    from the container), None for live cameras.
    """

    index: int
    timestamp: float
    width: int
    height: int
    image: np.ndarray | None = None  # (H, W, 3) uint8 BGR
    truth: GroundTruth | None = None
    dropped: int = 0  # frames the reader discarded since the previous frame handed out
    pts: float | None = None


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


@dataclass
class StabilizedPose:
    """A stabilizer's estimate of one person's keypoints at one time (``update`` and ``predict``).

    Unpacks as ``keypoints, scores = stabilizer.predict(t)``.
    """

    keypoints: np.ndarray  # (K, 2) float32 pixels
    scores: np.ndarray  # (K,) float32 in [0, 1]: measurement confidence decayed while a joint is unseen
    timestamp: float  # the time this estimate is for, monotonic seconds

    def __iter__(self):
        yield self.keypoints
        yield self.scores


@dataclass
class OutputPerson:
    """One tracked person as the outputs see it: 2D keypoints and/or the solved rig."""

    track_id: int
    pose2d: Pose2D | None = None  # keypoints in pixels of the capture image
    rig: RigPose | None = None
    tracking: bool = True  # False while the tracker only extrapolates (person lost)
    seen: bool = True  # False when the newest processed frame had no pose for this person (hidden, left)


@dataclass
class OutputFrame:
    """What the output clock sends on one tick (made by ``Pipeline.sample(t)`` or a playback)."""

    capture_time: float  # monotonic time the newest camera frame behind this pose was captured
    width: int  # capture image size in pixels (keypoints are normalized by it)
    height: int
    people: list[OutputPerson] = field(default_factory=list)
    driver: int | None = None  # track id of the person driving the avatar; None = the first person
    sample_time: float | None = None  # the t the pose was predicted for (filled by OutputClock)
    frame_index: int | None = None  # index of the newest processed source frame behind this pose
    pts: float | None = None  # its presentation time in the source (video files), seconds

    def driving_person(self) -> OutputPerson | None:
        """The person that drives single-avatar outputs (VMC): ``driver`` or else the first one."""
        for person in self.people:
            if person.track_id == self.driver:
                return person
        return self.people[0] if self.people else None


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
