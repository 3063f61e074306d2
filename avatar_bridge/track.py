"""Person tracking between detections, and the choice of the person who drives the avatar.

Why: a detector on every frame is far too slow for a live CPU loop. As in SimpleBaseline's tracking,
each person's next crop comes from their current keypoints (an expanded box, shifted by their
recent motion), and the detector runs only when needed: every N frames (someone may have entered),
when a track's keypoint confidence drops, or when a track is lost. Poses are matched to tracks by
OKS with the Hungarian algorithm so ids stay stable; two crops that converge on the same person are
merged, and a lost track is kept for a short while so the person gets their id back.

Per frame the pipeline does::

    boxes = tracker.boxes(frame_index, detect=lambda: detector.detect(image))
    poses = estimator.estimate(image, boxes)
    people = tracker.update(poses, frame_index)      # Pose2D with track_id set
    driver = tracker.driver                          # track id driving the avatar, or None
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .keypoints import OKS_SIGMAS
from .types import Detection, Pose2D


MAX_EXTRAPOLATED_FRAMES = 3
# OKS is defined with the person's segmented area; a track box (keypoints plus margins) is larger.
OKS_AREA_OF_BOX = 0.6


@dataclass
class TrackerSettings:
    every_n_frames: int = 30  # run the detector at least this often (new people may have entered)
    max_people: int = 4
    redetect_below: float = 0.35  # a track whose mean keypoint score falls below this asks for a detection
    keypoint_threshold: float = 0.2  # keypoints above this score define a track's next box
    box_margin: float = 0.15  # keypoint box grown by this fraction of its size on each side
    match_oks: float = 0.3  # minimum OKS to continue a track with a pose
    duplicate_oks: float = 0.7  # two poses this similar are the same person
    new_track_score: float = 0.3  # a pose from a detection needs this mean score to start a track
    max_missed: int = 15  # frames a track survives without a matching pose
    driver_policy: str = "largest"  # largest (tallest on screen: nearest) | central | fixed
    driver_id: int = 0  # the track for driver_policy "fixed"
    driver_switch_ratio: float = 1.25  # another person must score this much better than the driver...
    driver_switch_frames: int = 20  # ...for this many consecutive frames before the driver changes
    only_driver: bool = False  # between detections estimate only the driving person (faster)


@dataclass
class Track:
    id: int
    keypoints: np.ndarray  # (K, 2) latest pose
    scores: np.ndarray  # (K,)
    box: np.ndarray  # (4,) box of the latest pose (from keypoints)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # px/frame of the box centre
    last_frame: int = 0
    missed: int = 0
    hits: int = 1

    @property
    def score(self) -> float:
        return float(self.scores.mean()) if self.scores.size else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N,4) with every box in ``b`` (M,4), x1y1x2y2."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def oks_matrix(
    kp_a: np.ndarray, sc_a: np.ndarray, kp_b: np.ndarray, sc_b: np.ndarray, areas: np.ndarray, threshold: float
) -> np.ndarray:
    """OKS of every pose in ``a`` (N,K,2) with every pose in ``b`` (M,K,2), over joints confident in both.

    ``areas`` (M,) is the object scale of each ``b`` pose. Pairs with fewer than 3 shared confident
    joints get 0.
    """
    k = kp_a.shape[1]
    d2 = np.sum((kp_a[:, None] - kp_b[None]) ** 2, axis=-1)  # (N, M, K)
    var = (2 * OKS_SIGMAS[:k]) ** 2
    e = np.exp(-d2 / (2 * np.maximum(areas, 1.0)[None, :, None] * var))
    mask = (sc_a[:, None] > threshold) & (sc_b[None] > threshold)
    count = mask.sum(-1)
    return np.where(count >= 3, (e * mask).sum(-1) / np.maximum(count, 1), 0.0)


def keypoint_box(keypoints: np.ndarray, scores: np.ndarray, threshold: float, margin: float) -> np.ndarray | None:
    """Box around the confident keypoints, grown by ``margin`` of its size on each side (more above the head)."""
    good = scores > threshold
    if good.sum() < 3:
        return None
    pts = keypoints[good]
    lo, hi = pts.min(0), pts.max(0)
    size = np.maximum(hi - lo, 8.0)
    # The keypoints stop at the eyes and ankles: the head top and the feet lie outside them.
    return np.array(
        [lo[0] - margin * size[0], lo[1] - 1.5 * margin * size[1], hi[0] + margin * size[0], hi[1] + margin * size[1]],
        np.float32,
    )


class DriverSelector:
    """Picks the track that drives the avatar, with hysteresis so it does not hop between people."""

    def __init__(self, policy: str = "largest", fixed_id: int = 0, switch_ratio: float = 1.25, switch_frames: int = 20):
        if policy not in ("largest", "central", "fixed"):
            raise ValueError(f"driver policy {policy!r} is not allowed: choose largest, central or fixed")
        self.policy = policy
        self.fixed_id = fixed_id
        self.switch_ratio = switch_ratio
        self.switch_frames = switch_frames
        self.driver: int | None = None
        self._challenger: int | None = None
        self._challenger_frames = 0

    def select(self, track_id: int) -> None:
        """Fix the driver to ``track_id`` (the WebSocket ``select`` message)."""
        self.policy, self.fixed_id = "fixed", int(track_id)

    def _merit(self, track: Track, image_size: tuple[int, int] | None) -> float:
        x1, y1, x2, y2 = track.box
        if self.policy == "central" and image_size is not None:
            w, h = image_size
            cx, cy = (x1 + x2) / 2 / w - 0.5, (y1 + y2) / 2 / h - 0.5
            return 1.0 / (0.05 + float(np.hypot(cx, cy)))
        # Height, not area: an arm stretched out for a handshake must not make someone "larger".
        return float(max(y2 - y1, 1.0))

    def update(self, tracks: Sequence[Track], image_size: tuple[int, int] | None = None) -> int | None:
        live = {t.id: t for t in tracks if t.missed == 0}
        if self.policy == "fixed":
            self.driver = self.fixed_id if self.fixed_id in live else None
            return self.driver
        if not live:
            self.driver = None
            return None
        merit = {tid: self._merit(t, image_size) for tid, t in live.items()}
        best = max(merit, key=merit.get)
        if self.driver not in live:
            self.driver, self._challenger, self._challenger_frames = best, None, 0
        elif best != self.driver and merit[best] > self.switch_ratio * merit[self.driver]:
            self._challenger_frames = self._challenger_frames + 1 if self._challenger == best else 1
            self._challenger = best
            if self._challenger_frames >= self.switch_frames:
                self.driver, self._challenger, self._challenger_frames = best, None, 0
        else:
            self._challenger, self._challenger_frames = None, 0
        return self.driver


class Tracker:
    """Keypoint-propagated person tracks with stable ids (see the module docstring)."""

    def __init__(self, settings: TrackerSettings | None = None):
        self.settings = s = settings or TrackerSettings()
        self.tracks: list[Track] = []
        self.driver_selector = DriverSelector(s.driver_policy, s.driver_id, s.driver_switch_ratio, s.driver_switch_frames)
        self.detections_run = 0
        self.frames_seen = 0
        self._next_id = 1
        self._last_detect_frame: int | None = None
        self._want_detection = True
        self._box_track: list[int | None] = []  # track id each box of the last ``boxes()`` call came from
        self.image_size: tuple[int, int] | None = None

    @property
    def driver(self) -> int | None:
        return self.driver_selector.driver

    def needs_detection(self, frame_index: int) -> bool:
        s = self.settings
        if self._want_detection or self._last_detect_frame is None:
            return True
        if frame_index - self._last_detect_frame >= s.every_n_frames:
            return True
        return not any(t.missed == 0 for t in self.tracks)

    @staticmethod
    def _lead(track: Track, frame_index: int) -> np.ndarray:
        """How far (px) a track has probably moved since its last pose; capped, as motion is not linear for long."""
        return track.velocity * min(max(frame_index - track.last_frame, 1), MAX_EXTRAPOLATED_FRAMES)

    def _predicted_box(self, track: Track, frame_index: int) -> np.ndarray:
        shift = self._lead(track, frame_index)
        return track.box + np.concatenate([shift, shift])

    def boxes(
        self,
        frame_index: int,
        detect: Callable[[], list[Detection]] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """The crops (N,4) to run the pose net on for this frame; calls ``detect()`` only when needed."""
        s = self.settings
        self.image_size = image_size or self.image_size
        live = [t for t in self.tracks if t.missed == 0]
        detecting = detect is not None and self.needs_detection(frame_index)
        if s.only_driver and not detecting and any(t.id == self.driver for t in live):
            live = [t for t in live if t.id == self.driver]
        track_boxes = [self._predicted_box(t, frame_index) for t in live]
        owners: list[int | None] = [t.id for t in live]
        if detecting:
            detections = detect()
            self.detections_run += 1
            self._last_detect_frame = frame_index
            self._want_detection = False
            det_boxes = np.array([d.box for d in detections], np.float32).reshape(-1, 4)
            # A detection over a live track is that person. A confident, current track keeps its
            # keypoint box (tighter, and right even when the detector merges two close people into one
            # box); a weak or stale (not estimated lately) track takes the detection's box. The other
            # detections are candidate new people.
            taken_dets: set[int] = set()
            if len(track_boxes) and len(det_boxes):
                iou = iou_matrix(np.array(track_boxes), det_boxes)
                rows, cols = linear_sum_assignment(-iou)
                for r, c in zip(rows, cols):
                    if iou[r, c] >= 0.3:
                        taken_dets.add(int(c))
                        stale = frame_index - live[r].last_frame > 1
                        if stale or (live[r].score < s.redetect_below and iou[r, c] >= 0.5):
                            track_boxes[r] = det_boxes[c]
                # A detection mostly covered by a tracked person is that person, not someone new.
                covered = iou.max(0) >= 0.5
                taken_dets.update(int(c) for c in np.flatnonzero(covered))
            # Unclaimed detections are estimated too: update() gives each to a lost track whose
            # keypoints it matches, or starts a new track.
            for c, box in enumerate(det_boxes):
                if c not in taken_dets and len(track_boxes) < s.max_people + 1:
                    track_boxes.append(box)
                    owners.append(None)
        if self.image_size is not None and track_boxes:
            w, h = self.image_size
            out = np.array(track_boxes, np.float32).reshape(-1, 4)
            out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
            out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
        else:
            out = np.array(track_boxes, np.float32).reshape(-1, 4)
        keep = (out[:, 2] - out[:, 0] > 4) & (out[:, 3] - out[:, 1] > 4)
        self._box_track = [o for o, k in zip(owners, keep) if k]
        return out[keep]

    def update(self, poses: Sequence[Pose2D], frame_index: int) -> list[Pose2D]:
        """Assign track ids to the poses of the boxes from :meth:`boxes`; returns the tracked people."""
        s = self.settings
        self.frames_seen += 1
        poses = list(poses)
        owners = list(self._box_track) + [None] * max(0, len(poses) - len(self._box_track))
        estimated = {o for o in owners if o is not None}
        poses, owners = self._merge_duplicates(poses, owners)

        tracks = self.tracks
        matched_pose: dict[int, int] = {}  # track index -> pose index
        if tracks and poses:
            kp_p = np.stack([p.keypoints for p in poses]).astype(np.float32)
            sc_p = np.stack([p.scores for p in poses]).astype(np.float32)
            kp_t = np.stack([t.keypoints + self._lead(t, frame_index) for t in tracks]).astype(np.float32)
            sc_t = np.stack([t.scores for t in tracks]).astype(np.float32)
            areas = np.array([max(float((t.box[2] - t.box[0]) * (t.box[3] - t.box[1])), 1.0) for t in tracks])
            sim = oks_matrix(kp_p, sc_p, kp_t, sc_t, areas * OKS_AREA_OF_BOX, s.keypoint_threshold)  # (P, T)
            # A pose from a track's own crop is that track unless the keypoints fit another better.
            for pi, owner in enumerate(owners):
                for ti, t in enumerate(tracks):
                    if owner == t.id and sim[pi, ti] > 0:
                        sim[pi, ti] = max(sim[pi, ti], s.match_oks) + 0.1
            rows, cols = linear_sum_assignment(-sim)
            for pi, ti in zip(rows, cols):
                if sim[pi, ti] >= s.match_oks:
                    matched_pose[int(ti)] = int(pi)

        used = set(matched_pose.values())
        result: list[Pose2D] = []
        for ti, track in enumerate(tracks):
            if ti in matched_pose:
                pose = poses[matched_pose[ti]]
                self._continue(track, pose, frame_index)
                pose.track_id = track.id
                result.append(pose)
            elif not s.only_driver or track.id in estimated or track.missed > 0:
                track.missed += 1
                self._want_detection = True
            # else: a track not estimated this frame (only_driver) keeps its last pose, unpenalized
        for pi, pose in enumerate(poses):
            if pi in used or pose.score < s.new_track_score:
                continue
            live = sum(1 for t in self.tracks if t.missed == 0)
            if live >= s.max_people:
                break
            box = keypoint_box(pose.keypoints, pose.scores, s.keypoint_threshold, s.box_margin)
            if box is None:
                continue
            track = Track(self._next_id, pose.keypoints.copy(), pose.scores.copy(), box, last_frame=frame_index)
            self._next_id += 1
            self.tracks.append(track)
            pose.track_id = track.id
            result.append(pose)
        self.tracks = [t for t in self.tracks if t.missed <= s.max_missed]
        if any(t.missed == 0 and t.score < s.redetect_below for t in self.tracks):
            self._want_detection = True
        self.driver_selector.update(self.tracks, self.image_size)
        result.sort(key=lambda p: p.track_id)
        return result

    def _continue(self, track: Track, pose: Pose2D, frame_index: int) -> None:
        s = self.settings
        box = keypoint_box(pose.keypoints, pose.scores, s.keypoint_threshold, s.box_margin)
        if box is not None:
            steps = max(frame_index - track.last_frame, 1)
            centre_shift = ((box[:2] + box[2:]) - (track.box[:2] + track.box[2:])) / 2 / steps
            # Smoothed velocity: the crop leads a moving person without amplifying pose jitter.
            track.velocity = (0.5 * track.velocity + 0.5 * centre_shift).astype(np.float32)
            track.box = box
        track.keypoints = pose.keypoints.astype(np.float32, copy=True)
        track.scores = pose.scores.astype(np.float32, copy=True)
        track.last_frame = frame_index
        track.missed = 0
        track.hits += 1

    def _merge_duplicates(self, poses: list[Pose2D], owners: list[int | None]) -> tuple[list[Pose2D], list[int | None]]:
        """Drop poses that land on the same person as a better one (crops converge when people cross)."""
        if len(poses) < 2:
            return poses, owners
        s = self.settings
        kp = np.stack([p.keypoints for p in poses]).astype(np.float32)
        sc = np.stack([p.scores for p in poses]).astype(np.float32)
        boxes = [keypoint_box(p.keypoints, p.scores, s.keypoint_threshold, 0.0) for p in poses]
        areas = np.array([1.0 if b is None else float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes])
        sim = oks_matrix(kp, sc, kp, sc, areas, s.keypoint_threshold)
        # Prefer poses from established tracks (older id first), then the more confident pose.
        order = sorted(range(len(poses)), key=lambda i: (owners[i] is None, owners[i] or 0, -poses[i].score))
        kept: list[int] = []
        for i in order:
            if all(sim[i, j] < s.duplicate_oks for j in kept):
                kept.append(i)
        kept.sort()
        return [poses[i] for i in kept], [owners[i] for i in kept]

    def reset(self) -> None:
        """Forget every track (e.g. after the source jumped)."""
        self.tracks.clear()
        self._want_detection = True
