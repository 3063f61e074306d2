"""``avatar-bridge run``: source -> detector/tracker -> pose -> stabilizer -> retarget -> outputs.

Threads and why:
- the capture loop (main thread) takes the newest frame, finds people (detector only every N frames
  or when a track is lost; crops otherwise come from each person's keypoints), estimates their
  keypoints and feeds each person's stabilizer. It never waits for the outputs.
- the output clock (:class:`avatar_bridge.stream.OutputClock`) ticks at the outputs' rate and calls
  :meth:`Pipeline.sample` which predicts every person's keypoints at the send time (latency
  compensation) and retargets them to rig poses. Avatars get a steady 60 Hz even at a 20 fps camera.
- a camera is read on its own thread (:class:`avatar_bridge.capture.CameraSource`).

Keypoint-only sources (synthetic performer, BVH, recordings) skip detection and pose: their
``Frame.truth`` people go straight to the stabilizer.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .capture import CameraSource, FrameSource, as_bgr_image, open_source, orient_frame, parse_size
from .config import AppConfig, ConfigError, DetectorConfig, load_config
from .keypoints import SKELETON_EDGES
from .metrics import PipelineMetrics, peak_rss_mb
from .stream import OutputFrame, OutputPerson
from .track import OrientationMonitor, Tracker, TrackerSettings
from .types import Frame, FramePoses, Pose2D

log = logging.getLogger(__name__)

LOST_AFTER_S = 0.5  # a person not updated for this long is reported as not tracking
FORGET_AFTER_S = 3.0  # ...and dropped from the outputs after this long (they then get frames with no people)
STATUS_INTERVAL_S = 1.0  # status line on a terminal: rewritten in place (\r) this often
STATUS_LOG_INTERVAL_S = 5.0  # stderr not a terminal (log file, pipe): one full line this often


def tracker_settings(config: DetectorConfig, only_driver: bool | None = None) -> TrackerSettings:
    """The tracker options that live in the ``[detector]`` config section."""
    return TrackerSettings(
        every_n_frames=config.every_n_frames,
        max_people=config.max_people,
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
class _Person:
    """One tracked person's stabilizer, retargeter (its own calibration) and last measurement."""

    track_id: int
    stabilizer: Any
    retargeter: Any
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
        self._people: dict[int, _Person] = {}
        self._lock = threading.Lock()  # guards _people between the capture loop and the output clock
        self.driver: int | None = None
        self.latest: FramePoses | None = None
        self._latest_capture: float | None = None  # None until the first frame is processed
        self._size = (0, 0)
        self.paused = False
        self.orientation = OrientationMonitor()  # warns when people are seen but never upright
        self._detected: int | None = None

    # --- stages ----------------------------------------------------------------------------------

    def prepare(self, images: bool) -> None:
        """Load models and modules before the source starts, so the first frames are not late.

        ``images``: build the detector and pose model too (not needed for keypoint-only sources).
        """
        from . import retarget, smooth  # noqa: F401  (imported now: their import takes a while)

        if images and self.estimator is None:
            self._image_stages()

    def _image_stages(self) -> None:
        from .detect import detector_from_config
        from .pose import load_estimator

        self.detector = detector_from_config(self.config.detector, device=self.config.pose.device)
        self.estimator = load_estimator(self.config.pose)

    def _new_person(self, pose: Pose2D, timestamp: float) -> _Person:
        from .retarget import Retargeter
        from .smooth import make_stabilizer

        # body height None: the stabilizer measures it from the keypoints (boxes include padding)
        return _Person(pose.track_id, make_stabilizer(self.config.smoothing), Retargeter(self.config.retarget),
                       timestamp, pose)

    def calibrations(self) -> dict[int, Any]:
        """Each tracked person's finished calibration (:class:`avatar_bridge.retarget.Calibration`)."""
        with self._lock:
            return {tid: p.retargeter.calibration for tid, p in self._people.items() if p.retargeter.calibrated}

    # --- control (WebSocket messages, keys) -------------------------------------------------------

    def select_driver(self, track_id: int) -> None:
        self.tracker.driver_selector.select(track_id)
        self.driver = int(track_id)

    def calibrate(self) -> None:
        """Start a new calibration period for everyone tracked now (they should face the camera)."""
        with self._lock:
            people = list(self._people.values())
        for person in people:
            person.retargeter.calibrate()

    # --- per frame --------------------------------------------------------------------------------

    def process(self, frame: Frame) -> FramePoses:
        """Find and stabilize every person of ``frame``; returns the raw (unsmoothed) poses and timings."""
        timings: dict[str, float] = {}
        perf = time.perf_counter
        orient_frame(frame, self.config.source.rotate, self.config.source.flip)  # --rotate / --flip
        image = None
        if frame.image is not None:
            # A frame of the wrong type is skipped (logged), never allowed to stop the loop.
            image = as_bgr_image(frame.image, f"frame {frame.index}")
            if image is None:
                self.metrics.frame_done(0, frame.dropped + 1)
                return FramePoses(frame.index, frame.timestamp, frame.width, frame.height)
            if (image.shape[1], image.shape[0]) != (frame.width, frame.height):
                frame.width, frame.height = image.shape[1], image.shape[0]
        if image is not None:
            if self.estimator is None:
                self._image_stages()
            detect_ms = [0.0]

            def detect() -> list:
                t = perf()
                found = self.detector.detect(image)
                detect_ms[0] = (perf() - t) * 1000.0
                # The whole-frame "detector" (none) always "finds" one box: no evidence of people.
                self._detected = len(found) if getattr(self.detector, "name", "") != "none" else None
                return found

            t0 = perf()
            self._detected = None
            boxes = self.tracker.boxes(frame.index, detect, (frame.width, frame.height))
            t1 = perf()
            poses = self.estimator.estimate(image, boxes)
            t2 = perf()
            people = self.tracker.update(poses, frame.index, image=image, timestamp=frame.timestamp)
            t3 = perf()
            if detect_ms[0]:
                timings["detect"] = detect_ms[0]
            timings["crop_boxes"] = (t1 - t0) * 1000.0 - detect_ms[0]
            timings["pose"] = (t2 - t1) * 1000.0
            timings["track"] = (t3 - t2) * 1000.0
            driver = self.tracker.driver
            if getattr(self.detector, "name", "") != "none" and self.orientation.should_probe(frame.timestamp, people):
                for turn, code in ((90, cv2.ROTATE_90_CLOCKWISE), (180, cv2.ROTATE_180), (270, cv2.ROTATE_90_COUNTERCLOCKWISE)):
                    self.orientation.probe_result(frame.timestamp, turn, len(self.detector.detect(cv2.rotate(image, code))))
            warning = self.orientation.update(frame.timestamp, self._detected, people)
            if warning:
                log.warning(warning)
            if self.tracker.settings.only_driver and driver is not None:
                people = [p for p in people if p.track_id == driver]
        else:
            people = list(frame.truth or [])
            driver = self._truth_driver(people)
        keypoints_time = time.monotonic()
        self.metrics.add_latency("capture_to_keypoints", (keypoints_time - frame.timestamp) * 1000.0)

        t4 = perf()
        with self._lock:
            for person in people:
                state = self._people.get(person.track_id)
                if state is None:
                    state = self._new_person(person, frame.timestamp)
                    self._people[person.track_id] = state
                state.stabilizer.update(person.keypoints, person.scores, frame.timestamp)
                state.last_update = frame.timestamp
                state.latest = person
            self._forget_unseen(frame.timestamp)
            self.driver = driver
            self._latest_capture = frame.timestamp
            self._size = (frame.width, frame.height)
        timings["smooth"] = (perf() - t4) * 1000.0
        for name, ms in timings.items():
            self.metrics.add_stage(name, ms)
        self.metrics.frame_done(len(people), frame.dropped)
        self.latest = FramePoses(frame.index, frame.timestamp, frame.width, frame.height, people, timings)
        return self.latest

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
            if capture_time is None:
                return None  # no frame processed yet: nothing to describe
            # Also here, not only when the next frame is processed: a vanished camera sends none.
            self._forget_unseen(t)
            if not self._people:
                # Nobody tracked: still a frame every tick, so a client can tell "nobody in view" from a
                # stalled server (capture_time keeps advancing while frames are processed).
                return OutputFrame(capture_time, size[0], size[1], [], None)
            states = list(self._people.values())
            driver = self.driver
            t0 = perf()
            predicted = [(s, *s.stabilizer.predict(t)) for s in states]
        t1 = perf()
        people = []
        for state, keypoints, scores in predicted:
            tracking = (t - state.last_update) < LOST_AFTER_S
            pose = Pose2D(np.asarray(keypoints, np.float32), np.asarray(scores, np.float32), state.latest.box, state.track_id)
            rig = state.retargeter.solve(keypoints, scores, t, image_size=size, track_id=state.track_id)
            if rig is not None and not tracking:
                rig.tracking = False
            people.append(OutputPerson(state.track_id, pose, rig, tracking))
        t2 = perf()
        self.metrics.add_stage("predict", (t1 - t0) * 1000.0)
        self.metrics.add_stage("retarget", (t2 - t1) * 1000.0)
        return OutputFrame(capture_time, size[0], size[1], people, driver)


# --- overlay ---------------------------------------------------------------------------------------


def draw_overlay(canvas: np.ndarray, people: list[Pose2D], driver: int | None, text: str) -> np.ndarray:
    """Skeletons, track ids (the driver in green) and a status text drawn onto ``canvas`` in place."""
    scale = max(canvas.shape[0] / 720.0, 0.5)
    thick = max(int(round(2 * scale)), 1)
    for person in people:
        color = (80, 220, 80) if person.track_id == driver else (60, 160, 255)
        kp = person.keypoints
        ok = person.scores > 0.2
        for a, b in SKELETON_EDGES:
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]), color, thick, cv2.LINE_AA)
        for x, y in kp[ok]:
            cv2.circle(canvas, (int(x), int(y)), thick + 1, color, -1, cv2.LINE_AA)
        if ok.any():
            top = kp[ok][np.argmin(kp[ok][:, 1])]
            label = f"#{person.track_id}" + (" driver" if person.track_id == driver else "")
            draw_text_box(canvas, label, (int(top[0]), int(top[1] - 12 * scale)), color, bottom=True)
    if text:
        draw_text_box(canvas, text, (0, 0))
    return canvas


def draw_text_box(canvas: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int] = (255, 255, 255),
                  bottom: bool = False) -> None:
    """``text`` drawn once, in ``color`` on a dark box, readable at any image size.

    The font is 0.7 at 720 p, scaled with the image height but never below 0.5 (capitals about 11 px
    high), and wrapped at double spaces to fit the image width. ``origin`` is the box's top-left
    corner (bottom-left with ``bottom``), moved inside the image.
    """
    h, w = canvas.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.7 * h / 720.0, 0.5)
    thick = max(int(round(scale * 1.6)), 1)
    pad = max(int(round(6 * scale)), 3)
    lines: list[str] = []
    for part in [p.strip() for p in text.split("  ") if p.strip()]:
        joined = f"{lines[-1]}  {part}" if lines else part
        if lines and cv2.getTextSize(joined, font, scale, thick)[0][0] + 2 * pad <= w:
            lines[-1] = joined
        else:
            lines.append(part)
    if not lines:
        return
    sizes = [cv2.getTextSize(line, font, scale, thick) for line in lines]
    line_h = max(sz[1] + sz[0][1] for sz in sizes) + pad
    box_w = max(sz[0][0] for sz in sizes) + 2 * pad
    box_h = line_h * len(lines) + pad
    x = int(min(max(origin[0], 0), max(w - box_w, 0)))
    y = int(origin[1] - box_h if bottom else origin[1])
    y = int(min(max(y, 0), max(h - box_h, 0)))
    cv2.rectangle(canvas, (x, y), (x + box_w, y + box_h), (20, 20, 20), -1)
    for i, (line, (size, baseline)) in enumerate(zip(lines, sizes)):
        cv2.putText(canvas, line, (x + pad, y + pad + i * line_h + size[1]), font, scale, color, thick, cv2.LINE_AA)


# --- command line ----------------------------------------------------------------------------------


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``bench``: config, source, models."""
    parser.add_argument("--config", metavar="NAME|PATH", help="preset name (cpu-fast, cpu-balanced, gpu-accurate, default) or a TOML file")
    parser.add_argument("--source", help="camera index (0), /dev/videoN, video file, image folder, synthetic, FILE.bvh or FILE.abrec")
    parser.add_argument("--model", help="pose model: .onnx file, .pth checkpoint or registry name (pose.model)")
    parser.add_argument("--detector", help="none, yolox-nano, light-person-detector, yolox:PATH.onnx, "
                        "fasterrcnn_resnet50_fpn, fasterrcnn_mobilenet_v3_large_fpn or ssdlite (detector.name)")
    parser.add_argument("--detector-dir", metavar="DIR", help="folder with the named ONNX detectors (detector.model_dir)")
    parser.add_argument("--device", help="cpu or cuda (pose.device)")
    parser.add_argument("--threads", type=int, help="onnxruntime/torch threads for the pose model (pose.threads)")
    parser.add_argument("--resize", metavar="WxH", help="resize decoded images, e.g. 640x360 (source.resize)")
    parser.add_argument("--rotate", type=int, choices=(0, 90, 180, 270),
                        help="turn every frame this many degrees clockwise before detection (source.rotate)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="mirror every frame left-right before detection (source.flip)")
    parser.add_argument("--people", choices=("all", "driver"), help="estimate every person or only the driving one")
    parser.add_argument("--every", type=int, metavar="N", help="run the detector at least every N frames")
    parser.add_argument("--max-people", type=int, metavar="N",
                        help="track at most N people, the largest and most confident (detector.max_people)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=None, help="pace files at their frame rate")
    pace.add_argument("--fast", dest="realtime", action="store_false", help="process files as fast as possible")
    parser.add_argument("--loop", action="store_true", default=None, help="restart files at their end")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    rig = parser.add_argument_group("retargeting")
    rig.add_argument("--upper-body", dest="upper_body", action="store_true", default=None,
                     help="lock the legs at rest, for seated streamers (retarget.upper_body)")
    mirror = rig.add_mutually_exclusive_group()
    mirror.add_argument("--mirror", dest="mirror", action="store_true", default=None,
                        help="the avatar moves like your mirror image (retarget.mirror, the default)")
    mirror.add_argument("--no-mirror", dest="mirror", action="store_false", help="the avatar's left arm is your left arm")
    rig.add_argument("--calibration", metavar="FILE.json",
                     help="load the body calibration from FILE if it exists, save it there after calibrating")


def apply_source_arguments(args: argparse.Namespace, config: AppConfig) -> AppConfig:
    """CLI overrides on top of the config file; validated again so the errors name the key."""
    overrides = {
        ("source", "source"): args.source,
        ("pose", "model"): args.model,
        ("detector", "name"): args.detector,
        ("detector", "model_dir"): args.detector_dir,
        ("pose", "device"): args.device,
        ("pose", "threads"): args.threads,
        ("source", "resize"): args.resize,
        ("source", "rotate"): getattr(args, "rotate", None),
        ("source", "flip"): getattr(args, "flip", None),
        ("detector", "people"): args.people,
        ("detector", "every_n_frames"): args.every,
        ("detector", "max_people"): getattr(args, "max_people", None),
        ("source", "realtime"): args.realtime,
        ("source", "loop"): args.loop,
        ("source", "duration"): args.duration,
        ("retarget", "upper_body"): args.upper_body,
        ("retarget", "mirror"): args.mirror,
        ("retarget", "calibration_file"): args.calibration,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    config.validate()
    parse_size(config.source.resize)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames {args.max_frames} must be at least 1")
    return config


def is_keypoint_source(spec: str) -> bool:
    """Sources that deliver keypoints, not images: no detector or pose model needed."""
    text = str(spec).strip().lower()
    return text == "synthetic" or text.endswith((".bvh", ".abrec"))


def open_config_source(config: AppConfig) -> FrameSource:
    s = config.source
    return open_source(
        s.source, width=s.width, height=s.height, fps=s.fps, realtime=s.realtime, loop=s.loop, seed=s.seed,
        resize=parse_size(s.resize),  # the run loop enforces source.duration itself
    )


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    add_source_arguments(parser)
    from .vmc import add_arguments as add_vmc_arguments

    add_vmc_arguments(parser)
    from .server import add_arguments as add_ws_arguments

    add_ws_arguments(parser)
    out = parser.add_argument_group("preview and files")
    out.add_argument("--headless", action="store_true", help="no preview window")
    out.add_argument("--save-overlay", metavar="OUT.mp4", help="write the preview (skeleton overlay) to a video file")
    out.add_argument("--record", metavar="FILE.abrec", help="record the take")
    out.add_argument("--bvh", metavar="OUT.bvh", help="write the driving person's motion as BVH at the end")
    out.add_argument("--overwrite", action="store_true", default=None,
                     help="replace an existing recording (--record, or -o of record) and --bvh file instead of refusing (record.overwrite)")
    out.add_argument("--quiet", action="store_true", help="no status line")


def build_config(args: argparse.Namespace) -> AppConfig:
    name = args.config
    if name is None and (Path(__file__).resolve().parent.parent / "configs" / "default.toml").is_file():
        name = "default"
    config = load_config(name)
    apply_source_arguments(args, config)
    from .vmc import apply_arguments as apply_vmc_arguments

    apply_vmc_arguments(args, config.vmc)
    from .server import apply_arguments as apply_ws_arguments

    apply_ws_arguments(args, config.websocket)
    overlay = getattr(args, "save_overlay", None)
    if overlay and not Path(overlay).expanduser().resolve().parent.is_dir():
        raise FileNotFoundError(f"folder for --save-overlay {overlay} does not exist: create it or choose another path")
    if getattr(args, "record", None):
        config.record.path = args.record
    if getattr(args, "bvh", None):
        config.record.bvh = args.bvh
    if getattr(args, "overwrite", None) is not None:
        config.record.overwrite = args.overwrite
    config.validate()
    return config


class _StopFlag:
    """Set by SIGTERM/SIGINT, the q key, or the end of the run budget."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


def _install_signal_handlers(stop: _StopFlag) -> Callable[[], None]:
    """SIGTERM and SIGINT set the stop flag (the loop finishes its frame and closes everything)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        stop.set(signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _next_frame(source: FrameSource, stop: _StopFlag) -> Frame | None:
    """``source.read()``, but a live camera is polled so Ctrl-C works while it is unplugged."""
    if isinstance(source, CameraSource):
        while not stop.event.is_set():
            frame = source.read(timeout=0.25)
            if frame is not None or source.ended:
                return frame
        return None
    return source.read()


class _StatusLine:
    """The live status on stderr. On a terminal it is rewritten in place (``\\r``) every second; on a
    log file or pipe (``run ... 2> log.txt``) ``\\r`` would glue every update into one huge line, so
    there it is a full newline-terminated line every ``STATUS_LOG_INTERVAL_S`` instead."""

    def __init__(self, stream: Any, quiet: bool, now: float):
        self.stream = stream
        self.quiet = quiet
        try:
            self.terminal = bool(stream.isatty())
        except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
            self.terminal = False
        self.interval = STATUS_INTERVAL_S if self.terminal else STATUS_LOG_INTERVAL_S
        self.last = now
        self.line_open = False  # a \r line is on screen without its newline yet

    def update(self, now: float, text: Callable[[], str]) -> None:
        if self.quiet or now - self.last < self.interval:
            return
        self.last = now
        if self.terminal:
            print("\r" + text()[:200], end="", file=self.stream, flush=True)
            self.line_open = True
        else:
            print(text(), file=self.stream, flush=True)

    def finish(self) -> None:
        """End the in-place line so the summary starts on a line of its own."""
        if self.line_open:
            print(file=self.stream, flush=True)
            self.line_open = False


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Outputs:
    """The sinks of a run (VMC, WebSocket, recording, BVH) and their clock; closed in reverse order."""

    def __init__(self, config: AppConfig, pipeline: Pipeline):
        self.config = config
        self.pipeline = pipeline
        self.closers: list[Callable[[], None]] = []
        self.sinks: list[tuple[Callable, float]] = []
        self.clock = None
        self.server = None
        self.recorder = None
        self._recorded_calibrations: dict[int, Any] = {}
        self.bvh = None

    def open_network(self) -> None:
        """VMC and WebSocket first: they do not need the source, which starts its clock when opened."""
        config = self.config
        if config.vmc.enabled:
            from .vmc import VmcSender

            vmc = VmcSender(config.vmc)
            self.closers.append(vmc.close)
            self.sinks.append((vmc.send, config.vmc.rate))
        if config.websocket.enabled:
            from .server import WebSocketServer

            self.server = WebSocketServer(config.websocket, on_control=self._on_control)
            self.server.start()
            self.closers.append(self.server.stop)
            self.sinks.append((self.server.publish, config.websocket.rate))
            print(f"web viewer: {self.server.http_url}", file=sys.stderr, flush=True)

    def open_files(self, source: FrameSource) -> None:
        """Recording and BVH (they describe the source), then start the output clock."""
        config = self.config
        self._source = source
        rec = config.record
        if rec.path:
            from .record import RecordingHeader, RecordingWriter

            source = {"spec": str(config.source.source), "width": self._source.width, "height": self._source.height,
                      "fps": float(self._source.fps)}
            self.recorder = RecordingWriter(
                Path(rec.path).expanduser(), RecordingHeader(source=source, fps=float(self._source.fps)),
                compress=rec.compress, flush_seconds=rec.flush_seconds, fsync=rec.fsync, overwrite=rec.overwrite,
            )
            self.closers.append(self.recorder.close)
            self.sinks.append((self._record, float(self._source.fps)))
        if rec.bvh:
            from .bvh import BvhRecorder

            self.bvh = BvhRecorder.from_config(rec)
            self.closers.append(self._close_bvh)
            self.sinks.append((self._collect_bvh, rec.bvh_fps))
        if self.sinks:
            from .stream import OutputClock

            self.clock = OutputClock(self.pipeline.sample, self.sinks)
            self.clock.start()

    def _on_control(self, message: Any) -> None:
        """A validated :class:`avatar_bridge.protocol.ControlMessage` from a WebSocket client."""
        if message.type == "calibrate":
            self.pipeline.calibrate()
        elif message.type == "select" and message.id is not None:
            self.pipeline.select_driver(message.id)
        elif message.type == "pause" and message.paused is not None:
            self.pipeline.paused = bool(message.paused)

    def _record(self, frame: OutputFrame) -> None:
        if not frame.people:
            return  # nobody tracked: the take keeps a gap (the empty frames are only a liveness signal)
        poses = FramePoses(self.pipeline.latest.frame_index if self.pipeline.latest else 0, frame.sample_time or frame.capture_time,
                           frame.width, frame.height, [p.pose2d for p in frame.people if p.pose2d is not None])
        self.recorder.write(poses, [p.rig for p in frame.people if p.rig is not None])
        # Each finished calibration goes into the take once, so an export knows the body it measured.
        for track_id, calibration in self.pipeline.calibrations().items():
            if self._recorded_calibrations.get(track_id) is not calibration:
                self.recorder.write_calibration({"track_id": track_id, **asdict(calibration)}, poses.timestamp)
                self._recorded_calibrations[track_id] = calibration

    def _collect_bvh(self, frame: OutputFrame) -> None:
        """The driving person (record.bvh_track < 0) or the configured track, one RigPose per tick."""
        if self.config.record.bvh_track < 0:
            person = frame.driving_person()
            if person is not None and person.rig is not None:
                if self.bvh.track_id is None:
                    self.bvh.track_id = person.track_id
                self.bvh.add(person.rig)
        else:
            self.bvh.add([p.rig for p in frame.people if p.rig is not None])

    def _close_bvh(self) -> None:
        result = self.bvh.close()
        if result is not None:
            print(f"wrote {result.path}: {result.frames} frames at {result.fps:g} fps", file=sys.stderr)

    def close(self) -> None:
        if self.clock is not None:
            self.clock.stop()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # one output failing to close must not keep the others open
                log.exception("closing an output failed")


def run_command(args: argparse.Namespace) -> int:
    config = build_config(args)
    headless = args.headless
    if not headless and not _has_display():
        log.warning("no display found: running headless (pass --headless to silence this)")
        headless = True
    stop = _StopFlag()
    restore_signals = _install_signal_handlers(stop)
    metrics = PipelineMetrics()
    pipeline = Pipeline(config, metrics)
    outputs = _Outputs(config, pipeline)
    source = None
    writer = None
    status = None
    frames = 0
    try:
        pipeline.prepare(images=False)
        outputs.open_network()
        # The source before the models: a missing camera is reported at once. Every source starts
        # its clock at the first read (cameras keep only the newest frame), so loading is not late.
        source = open_config_source(config)
        pipeline.prepare(images=not is_keypoint_source(config.source.source))
        outputs.open_files(source)
        started = time.monotonic()
        last_overlay = started
        status = _StatusLine(sys.stderr, args.quiet, started)
        overlay_text = ""
        while not stop.event.is_set():
            t_grab = time.perf_counter()
            frame = _next_frame(source, stop)
            if frame is None and stop.event.is_set():
                break
            if frame is None:
                stop.set("source ended")
                break
            metrics.add_stage("grab", (time.perf_counter() - t_grab) * 1000.0)
            if not pipeline.paused:
                poses = pipeline.process(frame)
            else:
                poses = pipeline.latest or FramePoses(frame.index, frame.timestamp, frame.width, frame.height)
            frames += 1
            now = time.monotonic()
            if now - last_overlay >= 1.0:  # figures for the overlay, once a second
                last_overlay = now
                latency = metrics.snapshot()["latency_ms"].get("capture_to_keypoints", {})
                overlay_text = f"{metrics.fps():.1f} fps  latency p95 {latency.get('p95', float('nan')):.0f} ms  dropped {metrics.dropped}"
            status.update(now, metrics.status_line)
            if not headless or args.save_overlay:
                canvas = frame.image.copy() if frame.image is not None else np.zeros((frame.height, frame.width, 3), np.uint8)
                draw_overlay(canvas, poses.people, pipeline.driver, overlay_text)
                if args.save_overlay:
                    if writer is None:
                        writer = cv2.VideoWriter(args.save_overlay, cv2.VideoWriter_fourcc(*"mp4v"), float(source.fps),
                                                 (canvas.shape[1], canvas.shape[0]))
                        if not writer.isOpened():
                            raise RuntimeError(f"cannot write --save-overlay {args.save_overlay}: check the folder exists and the name ends in .mp4")
                    writer.write(canvas)
                if not headless:
                    try:
                        cv2.imshow("avatar-bridge (q to quit)", canvas)
                        key = cv2.waitKey(1) & 0xFF
                    except cv2.error as exc:  # OpenCV built without GUI support, or no usable display
                        log.warning("preview window unavailable (%s): continuing headless", str(exc).strip().splitlines()[-1])
                        headless, key = True, -1
                    if key in (ord("q"), 27):
                        stop.set("q pressed")
                    elif key == ord("c"):
                        pipeline.calibrate()
            if args.max_frames and frames >= args.max_frames:
                stop.set("max frames")
            if config.source.duration and now - started >= config.source.duration:
                stop.set("duration")
    except KeyboardInterrupt:
        stop.set("SIGINT")
    finally:
        restore_signals()
        outputs.close()
        if source is not None:
            source.close()
        if writer is not None:
            writer.release()
        if not headless:
            cv2.destroyAllWindows()
    snap = metrics.snapshot()
    if status is not None:
        status.finish()
    clock_stats = outputs.clock.stats() if outputs.clock is not None else None
    latency = snap["latency_ms"].get("capture_to_keypoints")
    outputs_text = ""
    if clock_stats is not None and clock_stats.latency_ms_p95 is not None:
        outputs_text = (f", outputs sent {clock_stats.frames} frames (capture to send p95 {clock_stats.latency_ms_p95:.0f} ms"
                        f", to first send p95 {clock_stats.fresh_latency_ms_p95 or 0:.0f} ms)")
    print(
        f"stopped ({stop.reason}): {snap['frames']} frames, {snap['updates']} pose updates, "
        f"{snap['fps']:.1f} fps, dropped {snap['dropped']}"
        + (f", capture to keypoints p95 {latency['p95']:.0f} ms" if latency else "")
        + outputs_text
        + f", peak RSS {peak_rss_mb()} MB",
        file=sys.stderr,
    )
    if outputs.recorder is not None and outputs.recorder.error is not None:
        raise RuntimeError(outputs.recorder.failure_message())  # a take cut short (disk full) must not exit 0
    return 0
