"""The engine of ``run``, ``record``, ``bench`` and ``convert``: source frames in, stabilized people out.

Per frame (:meth:`Pipeline.process`, on the capture loop's thread; :meth:`Pipeline.process_overlapped`
for files read as fast as possible, with the pose network on a worker thread): the tracker decides
where people are (the detector every N frames or when a track is lost; crops otherwise come from
each person's keypoints), the pose estimator gives their COCO-17 keypoints, and each person's
stabilizer and retargeter state advance once. Per output tick (:meth:`Pipeline.sample`, on the
output clock's thread, :mod:`avatar_bridge.stream`): every person's keypoints are predicted for the
send time (latency compensation) and solved into rig poses, without advancing any state.

Keypoint-only sources (synthetic performer, mocap, recordings) skip detection and pose: their
``Frame.truth.people`` go straight to the stabilizer. Windows, signals, files and sockets are not
here: see :mod:`avatar_bridge.outputs` and :mod:`avatar_bridge.commands`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .capture import FrameSource, as_bgr_image, open_source, orient_frame, parse_size, rotate_image
from .config import AppConfig, DetectorConfig
from .metrics import PipelineMetrics
from .track import OrientationMonitor, Tracker, TrackerSettings
from .types import Frame, FramePoses, OutputFrame, OutputPerson, Pose2D

if TYPE_CHECKING:  # imported lazily at run time: filterpy and the retargeter take a while to load
    from .retarget import Calibration, Retargeter
    from .smooth import Stabilizer

log = logging.getLogger(__name__)

LOST_AFTER_S = 0.5  # a person not updated for this long is reported as not tracking
FORGET_AFTER_S = 3.0  # ...and dropped from the outputs after this long (they then get frames with no people)


def tracker_settings(config: DetectorConfig, only_driver: bool | None = None) -> TrackerSettings:
    """The tracker options that live in the ``[detector]`` config section (detector ``none``: the
    whole image is one person, so one person is tracked)."""
    return TrackerSettings(
        every_n_frames=config.every_n_frames,
        max_people=1 if config.name == "none" else config.max_people,
        redetect_below=config.redetect_below,
        max_missed=config.max_missed,
        driver_policy=config.driver,
        driver_id=config.driver_id,
        driver_switch_frames=config.driver_switch_frames,
        driver_hold_seconds=config.driver_hold_seconds,
        appearance_weight=config.appearance_weight,
        min_appearance=config.min_appearance,
        only_driver=(config.people == "driver") if only_driver is None else only_driver,
    )


@dataclass
class EstimatedFrame:
    """What :meth:`Pipeline.estimate` found in one frame: its people and the driving person's id."""

    poses: FramePoses
    driver: int | None = None  # track id, None when nobody drives
    skipped: bool = False  # the frame's image was not an image: nothing was estimated


@dataclass
class _BegunFrame:
    """A frame between :meth:`Pipeline._begin_estimate` and :meth:`Pipeline._finish_estimate`."""

    frame: Frame
    timings: dict[str, float]
    skipped: bool = False
    image: np.ndarray | None = None  # the BGR image the crops came from (None: keypoint source)
    request: Any = None  # avatar_bridge.pose.PoseRequest, None for keypoint sources
    pose_ms: float = 0.0  # cropping and starting the network
    detected: int | None = None  # people the detector found, if it ran on this frame


@dataclass
class TrackedPerson:
    """One tracked person's stabilizer, retargeter (its own calibration) and last measurement."""

    track_id: int
    stabilizer: "Stabilizer"
    retargeter: "Retargeter"
    last_update: float
    latest: Pose2D


class Pipeline:
    """The per-frame work of ``run`` and ``bench``, independent of windows, signals and sockets."""

    def __init__(self, config: AppConfig, metrics: PipelineMetrics | None = None):
        self.config = config
        self.metrics = metrics or PipelineMetrics()
        self.tracker = Tracker(tracker_settings(config.detector))
        self.detector = None  # image stages are built on the first image, so keypoint sources need no models
        self.estimator = None
        self._people: dict[int, TrackedPerson] = {}
        self._lock = threading.Lock()  # guards _people between the capture loop and the output clock
        self.driver: int | None = None
        self.latest: FramePoses | None = None
        self._latest_capture: float | None = None  # None until the first frame is processed
        self._latest_frame: tuple[int, float | None] = (0, None)  # (index, pts) of that frame
        self._size = (0, 0)
        self.paused = False
        self.orientation = OrientationMonitor(rotate=config.source.rotate)  # warns when people are seen but never upright
        self._pose_worker = None  # process_overlapped's network thread, started on first use
        self._pending: _BegunFrame | None = None  # the frame process_overlapped began last
        self._depth_prior = None  # the retargeters' learned depth-sign prior, read once (prepare)
        self._depth_prior_read = False

    # --- stages ----------------------------------------------------------------------------------

    def prepare(self, images: bool) -> None:
        """Load models and modules before the source starts, so the first frames are not late.

        ``images``: build the detector and pose model too (not needed for keypoint-only sources).
        """
        from . import retarget, smooth  # noqa: F401  (imported now: their import takes a while)

        self._read_depth_prior()
        if images and self.estimator is None:
            self._image_stages()

    def _image_stages(self) -> None:
        from .detect import detector_from_config
        from .pose import load_estimator

        self.detector = detector_from_config(self.config.detector, device=self.config.pose.device)
        self.estimator = load_estimator(self.config.pose)

    def _read_depth_prior(self) -> None:
        """Read the learned depth-sign prior once, for every person's retargeter (ValueError for a bad file)."""
        if not self._depth_prior_read:
            from .retarget import load_depth_prior

            self._depth_prior = load_depth_prior(self.config.retarget.depth_prior)
            self._depth_prior_read = True

    def _new_person(self, pose: Pose2D, timestamp: float) -> TrackedPerson:
        from .retarget import Retargeter
        from .smooth import make_stabilizer

        self._read_depth_prior()
        retargeter = Retargeter(self.config.retarget, track_id=pose.track_id, depth_prior=self._depth_prior)
        # body height None: the stabilizer measures it from the keypoints (boxes include padding)
        return TrackedPerson(pose.track_id, make_stabilizer(self.config.smoothing), retargeter, timestamp, pose)

    def calibrations(self) -> dict[int, "Calibration"]:
        """Each tracked person's finished calibration (:class:`avatar_bridge.retarget.Calibration`)."""
        with self._lock:
            return {tid: p.retargeter.calibration for tid, p in self._people.items() if p.retargeter.calibrated}

    # --- control (WebSocket messages, keys) -------------------------------------------------------

    def select_driver(self, track_id: int) -> None:
        self.tracker.driver_selector.select(track_id)
        self.driver = int(track_id)

    def apply_control(self, message: Any) -> None:
        """Apply a validated :class:`avatar_bridge.protocol.ControlMessage` (from a WebSocket client or a key).

        ``calibrate`` starts a calibration period, ``select`` makes a track the driver, ``pause``
        freezes the outputs; other types are ignored.
        """
        if message.type == "calibrate":
            self.calibrate()
        elif message.type == "select" and message.id is not None:
            self.select_driver(message.id)
        elif message.type == "pause" and message.paused is not None:
            self.paused = bool(message.paused)

    def calibrate(self) -> None:
        """Start a new calibration period for everyone tracked now (they should face the camera)."""
        with self._lock:
            people = list(self._people.values())
        for person in people:
            person.retargeter.calibrate()

    # --- per frame --------------------------------------------------------------------------------

    def process(self, frame: Frame) -> FramePoses:
        """Find and stabilize every person of ``frame``; returns the raw (unsmoothed) poses and timings."""
        return self._advance_people(frame, self.estimate(frame))

    def process_overlapped(self, frame: Frame | None) -> tuple[Frame, FramePoses] | None:
        """:meth:`process` with the pose network of one frame running while this thread tracks and
        smooths the frame before it: begins ``frame`` and finishes the frame begun by the previous
        call, which it returns with its poses (None when none was pending; ``frame`` None only
        finishes it: call it so at the end). See :meth:`estimate_overlapped`."""
        done = self.estimate_overlapped(frame)
        if done is None:
            return None
        finished, estimated = done
        return finished, self._advance_people(finished, estimated)

    def estimate_overlapped(self, frame: Frame | None) -> tuple[Frame, "EstimatedFrame"] | None:
        """:meth:`estimate` overlapped: begins ``frame`` (its crops, then the network on a worker
        thread) and finishes the frame begun by the previous call (waits for its network, decodes,
        tracks), returned with what was found in it; None when none was pending. ``frame`` None only
        finishes the pending frame: call it so after the last frame.

        For sources that are not paced (files read as fast as possible: ``bench``, ``run --fast``):
        the backends release the GIL while the network runs, so on two cores the network and the
        Python work around it overlap and frames come out at about the network's own rate.
        (``convert`` stays with :meth:`estimate`: its decoder thread already fills the second core,
        and overlapping measured no faster there.)
        Each frame's crops come from the tracks one frame older than in :meth:`estimate` (the
        tracker leads them by the motion over two frames) and its result comes one call later, so a
        paced source (a camera) should use :meth:`process`. :meth:`close` stops the worker thread.
        """
        begun = None
        if frame is not None:
            if self._pose_worker is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pose_worker = ThreadPoolExecutor(1, thread_name_prefix="avatar-bridge-pose")
            begun = self._begin_estimate(frame, self._pose_worker)
        pending, self._pending = self._pending, begun
        if pending is None:
            return None
        return pending.frame, self._finish_estimate(pending)

    def close(self) -> None:
        """Stop the overlapped path's worker thread, dropping a frame begun and not finished (a no-op
        when :meth:`estimate_overlapped` was not used)."""
        self._pending = None
        if self._pose_worker is not None:
            self._pose_worker.shutdown(wait=True)
            self._pose_worker = None

    def _advance_people(self, frame: Frame, poses: "EstimatedFrame") -> FramePoses:
        """Advance each person's stabilizer and retargeter by one frame's poses (``smooth`` stage)."""
        if poses.skipped:
            return poses.poses
        people, driver, timings = poses.poses.people, poses.driver, poses.poses.timings_ms
        perf = time.perf_counter
        t4 = perf()
        with self._lock:
            for person in people:
                state = self._people.get(person.track_id)
                if state is None:
                    state = self._new_person(person, frame.timestamp)
                    self._people[person.track_id] = state
                stable = state.stabilizer.update(person.keypoints, person.scores, frame.timestamp)
                # Calibration and depth continuity advance once per pose update, never per output tick.
                state.retargeter.update(stable.keypoints, stable.scores, frame.timestamp, (frame.width, frame.height))
                state.last_update = frame.timestamp
                state.latest = person
            self._forget_unseen(frame.timestamp)
            self.driver = driver
            self._latest_capture = frame.timestamp
            self._latest_frame = (frame.index, frame.pts)
            self._size = (frame.width, frame.height)
        timings["smooth"] = (perf() - t4) * 1000.0
        for name, ms in timings.items():
            self.metrics.add_stage(name, ms)
        self.metrics.frame_done(len(people), frame.dropped)
        self.latest = poses.poses
        return self.latest

    def estimate(self, frame: Frame) -> "EstimatedFrame":
        """Detection, pose and tracking of one frame, without the stabilizer or retargeter.

        ``convert`` calls this alone for every frame (its smoothing runs afterwards over whole
        tracks); :meth:`process` adds the causal stabilizer and retargeter updates. Returns the
        frame's people (Pose2D with track ids, pixels; only the driver with ``people = "driver"``),
        the driving person's track id and the stage timings in ms (``detect``, ``crop_boxes``,
        ``pose``, ``track``). A frame whose image is not an image is skipped (logged).
        """
        return self._finish_estimate(self._begin_estimate(frame))

    def _begin_estimate(self, frame: Frame, worker=None) -> "_BegunFrame":
        """The first half of :meth:`estimate`: the frame's crops (detecting if the tracker asks) and the
        network started on them, on ``worker`` (an executor) or at once (None)."""
        timings: dict[str, float] = {}
        perf = time.perf_counter
        orient_frame(frame, self.config.source.rotate, self.config.source.flip)  # --rotate / --flip
        begun = _BegunFrame(frame, timings)
        if frame.image is None:
            return begun
        # A frame of the wrong type is skipped (logged), never allowed to stop the loop.
        image = as_bgr_image(frame.image, f"frame {frame.index}")
        if image is None:
            begun.skipped = True
            return begun
        if (image.shape[1], image.shape[0]) != (frame.width, frame.height):
            frame.width, frame.height = image.shape[1], image.shape[0]
        if self.estimator is None:
            self._image_stages()
        detect_ms = [0.0]
        finds_people = self._detector_finds_people()

        def detect() -> list:
            t = perf()
            found = self.detector.detect(image)
            detect_ms[0] = (perf() - t) * 1000.0
            if finds_people:
                begun.detected = len(found)
            return found

        t0 = perf()
        boxes = self.tracker.boxes(frame.index, detect, (frame.width, frame.height))
        t1 = perf()
        begun.request = self.estimator.begin(image, boxes, worker)
        begun.image = image
        begun.pose_ms = (perf() - t1) * 1000.0
        if detect_ms[0]:
            timings["detect"] = detect_ms[0]
        timings["crop_boxes"] = (t1 - t0) * 1000.0 - detect_ms[0]
        return begun

    def _detector_finds_people(self) -> bool:
        """Whether what the detector returns says where people are: the whole-frame "detector"
        (``none``) always "finds" one box, no evidence of people."""
        return getattr(self.detector, "name", "") != "none"

    def _finish_estimate(self, begun: "_BegunFrame") -> "EstimatedFrame":
        """The second half of :meth:`estimate`: the network's poses (waiting for them), tracking."""
        frame, timings = begun.frame, begun.timings
        if begun.skipped:
            self.metrics.frame_done(0, frame.dropped + 1)
            return EstimatedFrame(FramePoses(frame.index, frame.timestamp, frame.width, frame.height), skipped=True)
        perf = time.perf_counter
        if begun.request is not None:
            image = begun.image
            t1 = perf()
            poses = self.estimator.poses(begun.request)
            t2 = perf()
            people = self.tracker.update(poses, frame.index, image=image, timestamp=frame.timestamp)
            t3 = perf()
            timings["pose"] = begun.pose_ms + (t2 - t1) * 1000.0  # crops + network + decoding (+ any wait)
            timings["track"] = (t3 - t2) * 1000.0
            driver = self.tracker.driver
            if self._detector_finds_people() and self.orientation.should_probe(frame.timestamp, people):
                for turn in (90, 180, 270):
                    self.orientation.probe_result(frame.timestamp, turn, len(self.detector.detect(rotate_image(image, turn))))
            warning = self.orientation.update(frame.timestamp, begun.detected, people)
            if warning:
                log.warning(warning)
            if self.tracker.settings.only_driver and driver is not None:
                people = [p for p in people if p.track_id == driver]
        else:
            people = list(frame.truth.people) if frame.truth is not None else []
            driver = self._truth_driver(people)
        keypoints_time = time.monotonic()
        self.metrics.add_latency("capture_to_keypoints", (keypoints_time - frame.timestamp) * 1000.0)
        return EstimatedFrame(FramePoses(frame.index, frame.timestamp, frame.width, frame.height, people, timings), driver)

    def _forget_unseen(self, now: float) -> None:
        """Drop the people not updated for FORGET_AFTER_S before ``now`` (call with the lock held)."""
        for tid in [tid for tid, s in self._people.items() if now - s.last_update > FORGET_AFTER_S]:
            del self._people[tid]

    def _truth_driver(self, people: list[Pose2D]) -> int | None:
        if not people:
            return None
        selector = self.tracker.driver_selector
        if selector.policy == "fixed":
            return selector.fixed_id if any(p.track_id == selector.fixed_id for p in people) else None
        if self.driver in {p.track_id for p in people}:
            return self.driver
        return people[0].track_id

    def sample(self, t: float) -> OutputFrame | None:
        """Every person's pose predicted at time ``t`` and retargeted (the output clock's callback)."""
        if self.paused:
            return None
        perf = time.perf_counter
        with self._lock:
            capture_time, size = self._latest_capture, self._size
            frame_index, pts = self._latest_frame
            if capture_time is None:
                return None  # no frame processed yet: nothing to describe
            # Also here, not only when the next frame is processed: a vanished camera sends none.
            self._forget_unseen(t)
            if not self._people:
                # Nobody tracked: still a frame every tick, so a client can tell "nobody in view" from a
                # stalled server (capture_time keeps advancing while frames are processed).
                return OutputFrame(capture_time, size[0], size[1], [], None, frame_index=frame_index, pts=pts)
            states = list(self._people.values())
            driver = self.driver
            t0 = perf()
            predicted = [(s, s.stabilizer.predict(t)) for s in states]
        t1 = perf()
        people = []
        for state, estimate in predicted:
            keypoints, scores = estimate.keypoints, estimate.scores
            tracking = (t - state.last_update) < LOST_AFTER_S
            pose = Pose2D(np.asarray(keypoints, np.float32), np.asarray(scores, np.float32), state.latest.box, state.track_id)
            rig = state.retargeter.solve(keypoints, scores, t, size, state.track_id, advance=False)
            if rig is not None and not tracking:
                rig.tracking = False
            # seen: this person had a pose in the newest processed frame (not hidden behind someone, not
            # just gone); tracking turns false only LOST_AFTER_S later, so a short hide does not flicker.
            people.append(OutputPerson(state.track_id, pose, rig, tracking, seen=state.last_update >= capture_time))
        t2 = perf()
        self.metrics.add_stage("predict", (t1 - t0) * 1000.0)
        self.metrics.add_stage("retarget", (t2 - t1) * 1000.0)
        return OutputFrame(capture_time, size[0], size[1], people, driver, frame_index=frame_index, pts=pts)


def overlaps(source: FrameSource, config: AppConfig) -> bool:
    """Whether ``source`` suits :meth:`Pipeline.process_overlapped`: a video file or an image folder
    read as fast as possible (``source.realtime`` false). Cameras, streams and paced files are
    processed one frame at a time (their frames' motion should leave as soon as it is estimated)."""
    from .capture import ImageFolderSource, VideoFileSource

    return not config.source.realtime and isinstance(source, (VideoFileSource, ImageFolderSource))


def is_keypoint_source(spec: str) -> bool:
    """Sources that deliver keypoints, not images: no detector or pose model needed."""
    from .mocap import MOCAP_SUFFIXES

    text = str(spec).strip().lower()
    return text == "synthetic" or text.endswith((*MOCAP_SUFFIXES, ".abrec"))


def open_config_source(config: AppConfig) -> FrameSource:
    s = config.source
    return open_source(
        s.source, width=s.width, height=s.height, fps=s.fps, realtime=s.realtime, loop=s.loop, seed=s.seed,
        resize=parse_size(s.resize),  # the run loop enforces source.duration itself
    )
