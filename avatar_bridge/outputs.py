"""What the output clock feeds: VMC targets, the WebSocket server, a recording and a BVH file.

One :class:`Outputs` object assembles the sinks every command uses, so ``run``, ``record``, ``play``
and ``bench-soak`` send exactly the same frames. Each sink runs on the output clock's thread
(:class:`avatar_bridge.stream.OutputClock`) at its own rate.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol

from .capture import FrameSource
from .config import AppConfig
from .types import FramePoses, OutputFrame

log = logging.getLogger(__name__)


class OutputEngine(Protocol):
    """What the outputs need from the engine behind them (a Pipeline or a playback)."""

    def sample(self, t: float) -> OutputFrame | None: ...

    def apply_control(self, message: Any) -> None: ...

    def calibrations(self) -> dict[int, Any]: ...


class Outputs:
    """The sinks of a run (VMC, WebSocket, recording, BVH) and their clock; closed in reverse order.

    Serves ``run``, ``record``, ``play``, ``bench-soak`` and the tests alike. ``engine`` is what the
    clock samples: a :class:`avatar_bridge.pipeline.Pipeline`, or a playback's
    :class:`avatar_bridge.playback.PlaybackSampler`. Use::

        outputs = Outputs(config, engine)
        outputs.open_network()          # VMC targets and the WebSocket server (before the source)
        outputs.open_files(source)      # recording and BVH (they describe the source); starts the clock
        ...
        outputs.close()
    """

    def __init__(self, config: AppConfig, engine: OutputEngine):
        self.config = config
        self.engine = engine
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

            self.server = WebSocketServer(config.websocket, on_control=self.engine.apply_control)
            self.server.start()
            self.closers.append(self.server.stop)
            self.sinks.append((self.server.publish, config.websocket.rate))
            print(f"web viewer: {self.server.http_url}", file=sys.stderr, flush=True)

    def start_clock(self) -> None:
        """Start the output clock over the sinks opened so far (``open_files`` calls it)."""
        if self.sinks and self.clock is None:
            from .stream import OutputClock

            self.clock = OutputClock(self.engine.sample, self.sinks)
            self.clock.start()

    def open_files(self, source: FrameSource) -> None:
        """Recording and BVH (they describe the source), then start the output clock."""
        config = self.config
        rec = config.record
        if rec.path:
            from .record import RecordingHeader, RecordingWriter

            fps = float(source.fps)
            described = {"spec": str(config.source.source), "width": source.width, "height": source.height, "fps": fps}
            self.recorder = RecordingWriter(
                Path(rec.path).expanduser(), RecordingHeader(source=described, fps=fps),
                compress=rec.compress, flush_seconds=rec.flush_seconds, fsync=rec.fsync, overwrite=rec.overwrite,
            )
            self.closers.append(self.recorder.close)
            self.sinks.append((self._record, fps))
        if rec.bvh:
            from .bvh import BvhRecorder

            self.bvh = BvhRecorder.from_config(rec)
            self.closers.append(self._close_bvh)
            self.sinks.append((self._collect_bvh, rec.bvh_fps))
        self.start_clock()

    def _record(self, frame: OutputFrame) -> None:
        if not frame.people:
            return  # nobody tracked: the take keeps a gap (the empty frames are only a liveness signal)
        poses = FramePoses(frame.frame_index or 0, frame.sample_time or frame.capture_time,
                           frame.width, frame.height, [p.pose2d for p in frame.people if p.pose2d is not None])
        self.recorder.write(poses, [p.rig for p in frame.people if p.rig is not None])
        # Each finished calibration goes into the take once, so an export knows the body it measured.
        for track_id, calibration in self.engine.calibrations().items():
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
