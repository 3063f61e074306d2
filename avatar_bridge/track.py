"""Person tracking between detections, and the choice of the person who drives the avatar.

Why: a detector on every frame is far too slow for a live CPU loop. As in SimpleBaseline's tracking,
each person's next crop comes from their current keypoints (an expanded box, shifted by their
recent motion), and the detector runs only when needed: every N frames (someone may have entered),
when a track's keypoint confidence drops, or when a track is lost. Poses are matched to tracks by
OKS with the Hungarian algorithm so ids stay stable; two crops that converge on the same person are
merged, and a lost track is kept for a short while so the person gets their id back.

Identity through occlusion (issue #16): a track remembers a cheap appearance descriptor (an HSV colour
histogram of its torso, compared with the Bhattacharyya coefficient) and a robust velocity (median of
its recent confident box-centre steps). A hidden track's box is extrapolated with that velocity for up
to ``max_missed`` frames, and a pose is given to a track by the Hungarian algorithm on a score that
mixes OKS (live tracks) or box IoU (hidden tracks) with appearance similarity; a pose whose torso
colours clearly differ from a track's cannot continue it. So a person who reappears gets their id back
and an id does not jump onto the person in front.

Per frame the pipeline does::

    boxes = tracker.boxes(frame_index, detect=lambda: detector.detect(image))
    poses = estimator.estimate(image, boxes)
    people = tracker.update(poses, frame_index, image=image, timestamp=t)  # Pose2D with track_id set
    driver = tracker.driver                          # track id driving the avatar, or None

The boxes of a frame are remembered by its index until its ``update``, so a pipeline may ask for the
next frame's boxes before it updates this one (the pose net working on one frame while the previous
is tracked): those boxes then come from the tracks as they were one frame earlier, led by their
motion over two frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .keypoints import OKS_SIGMAS
from .types import Detection, Pose2D


MAX_EXTRAPOLATED_FRAMES = 3
# OKS is defined with the person's segmented area; a track box (keypoints plus margins) is larger.
OKS_AREA_OF_BOX = 0.6
HISTORY = 10  # confident box centres kept per track for its velocity
HIST_BINS = (8, 4, 4)  # HSV histogram bins of the torso descriptor
ASSUMED_FPS = 30.0  # frame rate used for the driver's hold time when no timestamps are given


@dataclass
class TrackerSettings:
    every_n_frames: int = 30  # run the detector at least this often (new people may have entered)
    max_people: int = 4  # people tracked at most; when more are seen the largest, most confident are kept
    redetect_below: float = 0.35  # a track whose mean keypoint score falls below this asks for a detection
    keypoint_threshold: float = 0.2  # keypoints above this score define a track's next box
    box_margin: float = 0.15  # keypoint box grown by this fraction of its size on each side
    match_oks: float = 0.3  # minimum OKS to continue a track with a pose
    duplicate_oks: float = 0.7  # two poses this similar are the same person
    new_track_score: float = 0.3  # a pose from a detection needs this mean score to start a track
    max_missed: int = 60  # frames a track survives without a matching pose (its box is motion-predicted)
    appearance_weight: float = 0.4  # share of torso colour similarity in the match score (0 = OKS/IoU only)
    min_appearance: float = 0.5  # Bhattacharyya coefficient below which a pose cannot continue a track
    reid_iou: float = 0.1  # minimum IoU of a pose with a hidden track's predicted box to take its id back
    driver_policy: str = "largest"  # largest (tallest on screen: nearest) | central | fixed
    driver_id: int = 0  # the track for driver_policy "fixed"
    driver_switch_ratio: float = 1.25  # another person must score this much better than the driver...
    driver_switch_frames: int = 20  # ...for this many consecutive frames before the driver changes
    driver_hold_seconds: float = 2.0  # a hidden driver keeps the role this long before another person takes it
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
    appearance: np.ndarray | None = None  # torso HSV histogram (sums to 1), see torso_histogram
    history: list = field(default_factory=list)  # [(frame, centre (2,), width, height)] of confident poses
    last_time: float = 0.0  # seconds, when the track last had a pose

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


def torso_histogram(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> np.ndarray | None:
    """Appearance descriptor: HSV colour histogram of a person's torso.

    ``image`` (H, W, 3) BGR uint8; ``keypoints`` (17, 2) COCO-17 pixels; ``scores`` (17,). The region is
    the box of the confident shoulders (5, 6) and hips (11, 12), shrunk by 15 % of its width on each
    side so background and arms stay out; without confident hips it reaches 1.2 shoulder widths below
    the shoulders. Returns a flat histogram of ``HIST_BINS`` (H x S x V) bins that sums to 1, or None
    when both shoulders are not confident or the region is under 4 x 4 pixels. Colour histograms as a
    cue for re-identification: Swain & Ballard, "Color indexing", IJCV 1991.
    """
    if image is None or keypoints.shape[0] < 13 or not (scores[5] > threshold and scores[6] > threshold):
        return None
    shoulders = keypoints[[5, 6]]
    hips_ok = scores[11] > threshold and scores[12] > threshold
    width = max(float(np.abs(shoulders[0, 0] - shoulders[1, 0])), 4.0)
    if hips_ok:
        pts = keypoints[[5, 6, 11, 12]]
        x1, x2 = pts[:, 0].min(), pts[:, 0].max()
        y1, y2 = shoulders[:, 1].min(), keypoints[[11, 12], 1].max()
    else:
        x1, x2 = shoulders[:, 0].min(), shoulders[:, 0].max()
        y1 = shoulders[:, 1].min()
        y2 = y1 + 1.2 * width
    dx = 0.15 * (x2 - x1)
    h, w = image.shape[:2]
    x1, x2 = int(max(x1 + dx, 0)), int(min(x2 - dx, w))
    y1, y2 = int(max(y1 + 0.05 * (y2 - y1), 0)), int(min(y2, h))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    hsv = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    total = float(hist.sum())
    return (hist / total).astype(np.float32) if total > 0 else None


def appearance_similarity(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Bhattacharyya coefficient of two normalized histograms: 1 = same colours, 0 = disjoint; None
    when either is unknown."""
    if a is None or b is None:
        return None
    return float(np.sum(np.sqrt(np.maximum(a, 0) * np.maximum(b, 0))))


class DriverSelector:
    """Picks the track that drives the avatar, with hysteresis so it does not hop between people.

    A driver that is hidden (its track has no pose) keeps the role for ``hold_seconds``: the avatar
    holds and then eases to rest (the retargeter's hold/ease), and only then does the best visible
    person take over. ``select`` (the WebSocket control message) moves the role at once.
    """

    def __init__(self, policy: str = "largest", fixed_id: int = 0, switch_ratio: float = 1.25, switch_frames: int = 20,
                 hold_seconds: float = 2.0):
        if policy not in ("largest", "central", "fixed"):
            raise ValueError(f"driver policy {policy!r} is not allowed: choose largest, central or fixed")
        self.policy = policy
        self.fixed_id = fixed_id
        self.switch_ratio = switch_ratio
        self.switch_frames = switch_frames
        self.hold_seconds = hold_seconds
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

    def update(self, tracks: Sequence[Track], image_size: tuple[int, int] | None = None,
               now: float | None = None) -> int | None:
        """The driver after this frame. ``tracks``: every track, hidden ones included (``missed > 0``);
        ``now``: seconds (the frame's timestamp); None = each call is one frame at 30 fps."""
        if now is None:
            self._frames = getattr(self, "_frames", -1) + 1
            now = self._frames / ASSUMED_FPS
        live = {t.id: t for t in tracks if t.missed == 0}
        hidden = {t.id: t for t in tracks if t.missed > 0}

        def held(tid: int | None) -> bool:
            return tid in hidden and now - hidden[tid].last_time < self.hold_seconds

        if self.policy == "fixed":
            self.driver = self.fixed_id if (self.fixed_id in live or held(self.fixed_id)) else None
            return self.driver
        if held(self.driver):
            self._challenger, self._challenger_frames = None, 0
            return self.driver  # hidden driver: hold the role (the avatar holds, then eases)
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
        self.driver_selector = DriverSelector(s.driver_policy, s.driver_id, s.driver_switch_ratio, s.driver_switch_frames,
                                              s.driver_hold_seconds)
        self.detections_run = 0
        self.frames_seen = 0
        self._next_id = 1
        self._last_detect_frame: int | None = None
        self._want_detection = True
        # Per frame index asked for and not yet updated: the track id each of its boxes came from, and
        # the first id of the tracks created after those boxes were made (they had no box there).
        self._box_tracks: dict[int, tuple[list[int | None], int]] = {}
        # The unclaimed detections of the last detector run and its frame index: while that frame is
        # not yet updated (overlapped pipeline), the next frame crops them too (someone just found
        # would miss a frame) and does not run the detector again.
        self._new_detections: tuple[int, list[np.ndarray]] | None = None
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
        """How far (px) a track has probably moved since its last pose.

        A live track: its smoothed velocity over at most ``MAX_EXTRAPOLATED_FRAMES`` frames (the crop
        leads a moving person). A hidden track: the median of its recent confident steps (robust to the
        poses that drift onto the occluder as it disappears), from its last confident position, for as
        long as it is kept.
        """
        if track.missed > 0 and len(track.history) >= 2:
            frames = np.array([h[0] for h in track.history], np.float32)
            centres = np.stack([h[1] for h in track.history])
            steps = np.diff(centres, axis=0) / np.maximum(np.diff(frames), 1)[:, None]
            velocity = np.median(steps, axis=0)
            last_frame, last_centre = track.history[-1][0], track.history[-1][1]
            predicted = last_centre + velocity * max(frame_index - last_frame, 0)
            return (predicted - (track.box[:2] + track.box[2:]) / 2).astype(np.float32)
        return track.velocity * min(max(frame_index - track.last_frame, 1), MAX_EXTRAPOLATED_FRAMES)

    def _predicted_box(self, track: Track, frame_index: int) -> np.ndarray:
        shift = self._lead(track, frame_index)
        return track.box + np.concatenate([shift, shift])

    @staticmethod
    def _merit(box: np.ndarray, score: float) -> float:
        """Who to keep when more people are seen than ``max_people``: box height (nearness) x confidence."""
        return float(max(box[3] - box[1], 1.0)) * float(score)

    def boxes(
        self,
        frame_index: int,
        detect: Callable[[], list[Detection]] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """The crops (N,4) to run the pose net on for this frame; calls ``detect()`` only when needed.

        Live tracks give their motion-led keypoint boxes; hidden tracks (kept ``max_missed`` frames)
        their motion-predicted boxes while those lie in the image; at a detection, the detections that
        are nobody tracked yet, the largest and most confident first.
        """
        s = self.settings
        self.image_size = image_size or self.image_size
        live = [t for t in self.tracks if t.missed == 0]
        # Overlapped pipeline: the last detection's frame is not tracked yet, so its people cannot have
        # tracks; its unclaimed detections are cropped again here instead of running the detector again.
        found = self._new_detections
        self._new_detections = None
        if found is not None and found[0] not in self._box_tracks:
            found = None
        detecting = detect is not None and found is None and self.needs_detection(frame_index)
        if s.only_driver and not detecting and any(t.id == self.driver for t in live):
            live = [t for t in live if t.id == self.driver]
        hidden = [t for t in self.tracks if t.missed > 0 and (not s.only_driver or t.id == self.driver)]
        hidden = [t for t in hidden if self._inside(self._predicted_box(t, frame_index))]
        followed = live + hidden
        track_boxes = [self._predicted_box(t, frame_index) for t in followed]
        owners: list[int | None] = [t.id for t in followed]
        if detecting:
            detections = detect()
            self.detections_run += 1
            self._last_detect_frame = frame_index
            self._want_detection = False
            det_boxes = np.array([d.box for d in detections], np.float32).reshape(-1, 4)
            det_scores = np.array([d.score for d in detections], np.float32)
            # A detection over a followed track is that person. A confident, current track keeps its
            # keypoint box (tighter, and right even when the detector merges two close people into one
            # box); a weak or stale (hidden, or not estimated lately) track takes the detection's box.
            # The other detections are candidate new people.
            taken_dets: set[int] = set()
            if len(track_boxes) and len(det_boxes):
                iou = iou_matrix(np.array(track_boxes), det_boxes)
                rows, cols = linear_sum_assignment(-iou)
                for r, c in zip(rows, cols):
                    if iou[r, c] >= 0.3:
                        taken_dets.add(int(c))
                        stale = frame_index - followed[r].last_frame > 1
                        if stale or (followed[r].score < s.redetect_below and iou[r, c] >= 0.5):
                            track_boxes[r] = det_boxes[c]
                # A detection mostly covered by a tracked person is that person, not someone new.
                covered = iou[: len(live)].max(0) >= 0.5 if live else np.zeros(len(det_boxes), bool)
                taken_dets.update(int(c) for c in np.flatnonzero(covered))
            # Unclaimed detections are estimated too, nearest and most confident first: update() gives
            # each to a hidden track it matches, or starts a new track (or replaces a weaker one).
            free = [c for c in range(len(det_boxes)) if c not in taken_dets]
            free.sort(key=lambda c: -self._merit(det_boxes[c], det_scores[c]))
            room = max(s.max_people - len(live), 0) + 2
            for c in free[:room]:
                track_boxes.append(det_boxes[c])
                owners.append(None)
            self._new_detections = (frame_index, [det_boxes[c] for c in free[:room]])
        elif found is not None:
            track_boxes.extend(found[1])
            owners.extend([None] * len(found[1]))
        if self.image_size is not None and track_boxes:
            w, h = self.image_size
            out = np.array(track_boxes, np.float32).reshape(-1, 4)
            out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
            out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
        else:
            out = np.array(track_boxes, np.float32).reshape(-1, 4)
        keep = (out[:, 2] - out[:, 0] > 4) & (out[:, 3] - out[:, 1] > 4)
        self._box_tracks[frame_index] = ([o for o, k in zip(owners, keep) if k], self._next_id)
        if len(self._box_tracks) > 8:  # frames whose boxes were asked for but never updated
            del self._box_tracks[min(self._box_tracks)]
        return out[keep]

    def _inside(self, box: np.ndarray) -> bool:
        """At least half of ``box`` lies in the image (always true before the image size is known)."""
        if self.image_size is None:
            return True
        w, h = self.image_size
        area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
        ix = max(0.0, min(box[2], w) - max(box[0], 0))
        iy = max(0.0, min(box[3], h) - max(box[1], 0))
        return ix * iy / area >= 0.5

    def update(
        self,
        poses: Sequence[Pose2D],
        frame_index: int,
        image: np.ndarray | None = None,
        timestamp: float | None = None,
    ) -> list[Pose2D]:
        """Assign track ids to the poses of the boxes from :meth:`boxes`; returns the tracked people.

        ``image`` (H, W, 3) BGR: the frame, for the torso colour descriptors (None = motion and OKS
        only); ``timestamp``: the frame's time in seconds, for the driver's hold time (None = frames at
        30 fps).
        """
        s = self.settings
        self.frames_seen += 1
        now = float(timestamp) if timestamp is not None else frame_index / ASSUMED_FPS
        poses = list(poses)
        asked, born_after = self._box_tracks.pop(frame_index, ([], self._next_id))
        owners = asked + [None] * max(0, len(poses) - len(asked))
        owners = owners[: len(poses)]
        descs = [torso_histogram(image, p.keypoints, p.scores) if image is not None else None for p in poses]
        poses, owners, descs = self._merge_duplicates(poses, owners, descs)
        estimated = {o for o in owners if o is not None}

        tracks = self.tracks
        matched_pose: dict[int, int] = {}  # track index -> pose index
        pose_boxes = [keypoint_box(p.keypoints, p.scores, s.keypoint_threshold, s.box_margin) for p in poses]
        if tracks and poses:
            kp_p = np.stack([p.keypoints for p in poses]).astype(np.float32)
            sc_p = np.stack([p.scores for p in poses]).astype(np.float32)
            kp_t = np.stack([t.keypoints + self._lead(t, frame_index) for t in tracks]).astype(np.float32)
            sc_t = np.stack([t.scores for t in tracks]).astype(np.float32)
            areas = np.array([max(float((t.box[2] - t.box[0]) * (t.box[3] - t.box[1])), 1.0) for t in tracks])
            oks = oks_matrix(kp_p, sc_p, kp_t, sc_t, areas * OKS_AREA_OF_BOX, s.keypoint_threshold)  # (P, T)
            pb = np.stack([b if b is not None else np.zeros(4, np.float32) for b in pose_boxes])
            iou = iou_matrix(pb, np.stack([self._predicted_box(t, frame_index) for t in tracks]))
            score = np.full(oks.shape, -1.0)
            w_app = s.appearance_weight
            for pi in range(len(poses)):
                for ti, t in enumerate(tracks):
                    app = appearance_similarity(descs[pi], t.appearance)
                    if app is not None and app < s.min_appearance:
                        continue  # clearly other clothes: never this track, however close
                    if t.missed == 0:
                        motion = float(oks[pi, ti])
                        # A pose from a track's own crop is that track unless the keypoints fit another better.
                        if owners[pi] == t.id and motion > 0:
                            motion = max(motion, s.match_oks) + 0.1
                        if motion < s.match_oks:
                            continue
                    else:
                        motion = max(float(oks[pi, ti]), float(iou[pi, ti]))
                        if iou[pi, ti] < s.reid_iou and oks[pi, ti] < s.match_oks:
                            continue
                    score[pi, ti] = (1 - w_app) * motion + w_app * (app if app is not None else min(motion, 1.0))
            rows, cols = linear_sum_assignment(-score)
            for pi, ti in zip(rows, cols):
                if score[pi, ti] >= 0:
                    matched_pose[int(ti)] = int(pi)

        used = set(matched_pose.values())
        result: list[Pose2D] = []
        for ti, track in enumerate(tracks):
            if ti in matched_pose:
                pi = matched_pose[ti]
                pose = poses[pi]
                self._continue(track, pose, frame_index, now, descs[pi], self._overlapped(pi, pose_boxes))
                pose.track_id = track.id
                result.append(pose)
            elif track.id >= born_after:
                pass  # created after this frame's boxes were made (overlapped pipeline): not looked for here
            elif not s.only_driver or track.id in estimated or track.missed > 0:
                track.missed += 1
                # ask the detector at once, then every 5th frame while the track is kept
                if track.missed <= 15 or track.missed % 5 == 0:
                    self._want_detection = True
            # else: a track not estimated this frame (only_driver) keeps its last pose, unpenalized
        matched_boxes = [pose_boxes[pi] for pi in used if pose_boxes[pi] is not None]

        def ghost(pi: int) -> bool:
            # A weak pose over someone tracked is a crop sliding onto them (a person behind another), not
            # a new person.
            if poses[pi].score >= 0.6 or not matched_boxes:
                return False
            return float(iou_matrix(pose_boxes[pi][None], np.stack(matched_boxes)).max()) > 0.3

        candidates = [pi for pi, pose in enumerate(poses) if pi not in used and pose.score >= s.new_track_score
                      and pose_boxes[pi] is not None and not ghost(pi)]
        candidates.sort(key=lambda pi: -self._merit(pose_boxes[pi], poses[pi].score))
        for pi in candidates:
            pose = poses[pi]
            live = [t for t in self.tracks if t.missed == 0]
            if len(live) >= s.max_people:
                # More people than max_people: keep the largest and most confident.
                weakest = min(live, key=lambda t: self._merit(t.box, t.score))
                if self._merit(pose_boxes[pi], pose.score) <= 1.5 * self._merit(weakest.box, weakest.score):
                    continue
                self.tracks.remove(weakest)
                result = [p for p in result if p.track_id != weakest.id]
            track = Track(self._next_id, pose.keypoints.copy(), pose.scores.copy(), pose_boxes[pi], last_frame=frame_index,
                          last_time=now)
            self._remember(track, pose, frame_index, descs[pi], self._overlapped(pi, pose_boxes))
            self._next_id += 1
            self.tracks.append(track)
            pose.track_id = track.id
            result.append(pose)
        # A track never seen clearly (no appearance yet, few poses) is tentative: dropped when lost.
        self.tracks = [t for t in self.tracks if t.missed <= (s.max_missed if (t.hits >= 3 or t.appearance is not None)
                                                              else min(s.max_missed, 2))]
        if any(t.missed == 0 and t.score < s.redetect_below for t in self.tracks):
            self._want_detection = True
        self.driver_selector.update(self.tracks, self.image_size, now)
        result.sort(key=lambda p: p.track_id)
        return result

    @staticmethod
    def _overlapped(pi: int, boxes: list[np.ndarray | None]) -> bool:
        """Pose ``pi``'s box overlaps another pose's box (its torso colours may be someone else's)."""
        mine = boxes[pi]
        if mine is None:
            return True
        others = [b for j, b in enumerate(boxes) if j != pi and b is not None]
        return bool(others) and float(iou_matrix(mine[None], np.stack(others)).max()) > 0.05

    def _remember(self, track: Track, pose: Pose2D, frame_index: int, desc: np.ndarray | None, overlapped: bool) -> None:
        """Record a confident, unoccluded pose's box centre (velocity) and torso colours (appearance)."""
        if pose.score < 0.5 or track.box is None:
            return
        centre = ((track.box[:2] + track.box[2:]) / 2).astype(np.float32)
        track.history.append((frame_index, centre))
        del track.history[:-HISTORY]
        if desc is not None and not overlapped:
            track.appearance = desc.copy() if track.appearance is None else (0.8 * track.appearance + 0.2 * desc)

    def _continue(self, track: Track, pose: Pose2D, frame_index: int, now: float = 0.0,
                  desc: np.ndarray | None = None, overlapped: bool = False) -> None:
        s = self.settings
        box = keypoint_box(pose.keypoints, pose.scores, s.keypoint_threshold, s.box_margin)
        if box is not None:
            steps = max(frame_index - track.last_frame, 1)
            centre_shift = ((box[:2] + box[2:]) - (track.box[:2] + track.box[2:])) / 2 / steps
            # Smoothed velocity: the crop leads a moving person without amplifying pose jitter.
            if track.missed == 0:
                track.velocity = (0.5 * track.velocity + 0.5 * centre_shift).astype(np.float32)
            track.box = box
        track.keypoints = pose.keypoints.astype(np.float32, copy=True)
        track.scores = pose.scores.astype(np.float32, copy=True)
        track.last_frame = frame_index
        track.last_time = now
        track.missed = 0
        track.hits += 1
        self._remember(track, pose, frame_index, desc, overlapped)

    def _merge_duplicates(
        self, poses: list[Pose2D], owners: list[int | None], descs: list[np.ndarray | None]
    ) -> tuple[list[Pose2D], list[int | None], list[np.ndarray | None]]:
        """Drop poses that land on the same person as a better one (crops converge when people cross).

        Of two duplicates the one whose torso colours match its crop's track best is kept (the crop of
        a person hidden behind another lands on the one in front), then the older track, then the more
        confident pose.
        """
        if len(poses) < 2:
            return poses, owners, descs
        s = self.settings
        kp = np.stack([p.keypoints for p in poses]).astype(np.float32)
        sc = np.stack([p.scores for p in poses]).astype(np.float32)
        boxes = [keypoint_box(p.keypoints, p.scores, s.keypoint_threshold, 0.0) for p in poses]
        areas = np.array([1.0 if b is None else float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes])
        sim = oks_matrix(kp, sc, kp, sc, areas, s.keypoint_threshold)
        by_id = {t.id: t for t in self.tracks}

        def owner_fit(i: int) -> float:
            track = by_id.get(owners[i])
            app = appearance_similarity(descs[i], track.appearance) if track is not None else None
            return 1.0 if app is None else app

        order = sorted(range(len(poses)),
                       key=lambda i: (owners[i] is None, owner_fit(i) < s.min_appearance, owners[i] or 0, -poses[i].score))
        kept: list[int] = []
        for i in order:
            if all(sim[i, j] < s.duplicate_oks for j in kept):
                kept.append(i)
        kept.sort()
        return [poses[i] for i in kept], [owners[i] for i in kept], [descs[i] for i in kept]

    def reset(self) -> None:
        """Forget every track (e.g. after the source jumped)."""
        self.tracks.clear()
        self._box_tracks.clear()
        self._new_detections = None
        self._want_detection = True


def body_up_direction(pose: Pose2D, threshold: float = 0.3) -> np.ndarray | None:
    """Unit image vector (2,) from the hips' centre to the shoulders' centre (or, without confident hips,
    from the shoulders' centre to the nose) of a COCO-17 pose in pixels; None when those keypoints
    are not confident. Upright people give about (0, -1): image y grows downwards."""
    kp, sc = np.asarray(pose.keypoints, np.float64), np.asarray(pose.scores)
    if kp.shape[0] < 13 or not (sc[5] > threshold and sc[6] > threshold):
        return None
    shoulders = kp[[5, 6]].mean(0)
    if sc[11] > threshold and sc[12] > threshold:
        v = shoulders - kp[[11, 12]].mean(0)
    elif sc[0] > threshold:
        v = kp[0] - shoulders
    else:
        return None
    n = float(np.hypot(*v))
    return v / n if n > 1e-6 else None


class OrientationMonitor:
    """Warns once when people are seen but no pose is upright for ``warn_after`` seconds: the camera
    is probably mounted sideways or upside down (or the feed is rotated).

    Evidence is a frame where the detector found people or poses were tracked, none of them upright
    (hips->shoulders pointing up within 45 degrees). A detector may find nobody at all in an upside
    down image, so while nobody is tracked the pipeline also *probes* every ``probe_every`` seconds:
    it runs the detector on the image turned by 90, 180 and 270 degrees and reports what it found
    (:meth:`probe_result`). ``update`` per frame returns the warning text when it is due (else None);
    the text says which ``--rotate`` turns the bodies upright. ``rotate``: the turn already applied
    to the frames (``source.rotate``), so the advice is the total turn, not one more on top of it.
    """

    def __init__(self, warn_after: float = 3.0, probe_every: float = 2.0, rotate: int = 0):
        self.rotate = int(rotate) % 360
        self.warn_after = warn_after
        self.probe_every = probe_every
        self.warned = False
        self._since: float | None = None
        self._last: float | None = None
        self._directions: list[np.ndarray] = []
        self._probe_hits: dict[int, int] = {}
        self._last_probe: float | None = None

    def should_probe(self, timestamp: float, people: Sequence[Pose2D]) -> bool:
        """True when the pipeline should run the rotated-image probe now (nobody upright tracked)."""
        if self.warned or any(self._upright(p) for p in people):
            return False
        if self._last_probe is None:
            self._last_probe = timestamp  # the first probe after probe_every without anyone upright
            return False
        if timestamp - self._last_probe >= self.probe_every:
            self._last_probe = timestamp
            return True
        return False

    def probe_result(self, timestamp: float, rotate: int, found: int) -> None:
        """The detector found ``found`` people in the image turned ``rotate`` degrees clockwise."""
        if found:
            self._evidence(timestamp)
            self._probe_hits[rotate] = self._probe_hits.get(rotate, 0) + found

    @staticmethod
    def _upright(pose: Pose2D) -> bool:
        d = body_up_direction(pose)
        return d is not None and d[1] < 0 and abs(d[1]) >= abs(d[0])

    def _evidence(self, timestamp: float) -> None:
        if self._since is None or (self._last is not None and timestamp - self._last > 2 * self.warn_after):
            self._since, self._directions, self._probe_hits = timestamp, [], {}
        self._last = timestamp

    def update(self, timestamp: float, detected: int | None, people: Sequence[Pose2D]) -> str | None:
        """``detected``: people the detector found this frame (None: it did not run); ``people``: the
        tracked poses (pixels)."""
        if any(self._upright(p) for p in people):
            self._since, self._last, self._directions, self._probe_hits = None, None, [], {}
            return None
        if people or detected:
            self._evidence(timestamp)
            self._directions.extend(d for d in (body_up_direction(p) for p in people) if d is not None)
        if self.warned or self._since is None or timestamp - self._since < self.warn_after:
            return None
        if self._last is None or timestamp - self._last > self.warn_after:
            return None  # the evidence is old: people left
        self.warned = True
        fix = "--rotate 90, 180 or 270 (source.rotate)"
        if self._probe_hits:
            best = max(self._probe_hits, key=self._probe_hits.get)
            fix = f"{self._total_turn(best)}: people were found in the image turned {best} degrees further"
        elif self._directions:
            dx, dy = np.mean(self._directions, axis=0)
            if abs(dy) >= abs(dx):
                fix = self._total_turn(180)
            else:  # head towards +x: turn 270 clockwise; towards -x: 90 clockwise
                fix = self._total_turn(270 if dx > 0 else 90)
        return (f"people are seen but no pose has been upright for {self.warn_after:g} s (head below the hips, "
                f"or sideways): if the camera is mounted sideways or upside down, pass {fix}; --flip mirrors the image")

    def _total_turn(self, more: int) -> str:
        """The ``--rotate`` advice for turning the frames ``more`` degrees beyond what is applied now."""
        total = (self.rotate + more) % 360
        if total == 0:
            return (f"--rotate 0 (source.rotate = 0) instead of {self.rotate}: the camera's own frames are upright, "
                    f"--rotate {self.rotate} turns them over")
        return f"--rotate {total} (source.rotate = {total})" + (f" instead of {self.rotate}" if self.rotate else "")
