"""What the output clock feeds: VMC targets, the WebSocket server, a recording and a BVH file.

One :class:`Outputs` object assembles the sinks every command uses, so ``run``, ``record``, ``play``
and ``bench-soak`` send exactly the same frames. Each sink runs on the output clock's thread
(:class:`avatar_bridge.stream.OutputClock`) at its own rate.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from .capture import FrameSource
from .config import AppConfig
from .types import FramePoses, OutputFrame, OutputPerson

log = logging.getLogger(__name__)


class OutputEngine(Protocol):
    """What the outputs need from the engine behind them (a Pipeline or a playback)."""

    def sample(self, t: float) -> OutputFrame | None: ...

    def apply_control(self, message: Any) -> None: ...

    def calibrations(self) -> dict[int, Any]: ...


def mirror_output_frame(frame: OutputFrame) -> OutputFrame:
    """The selfie view of a frame: every rig mirrored (:func:`avatar_bridge.retarget.mirror_rig`);
    the 2D keypoints stay in image pixels as captured."""
    from .retarget import mirror_rig

    people = [OutputPerson(p.track_id, p.pose2d, None if p.rig is None else mirror_rig(p.rig), p.tracking, p.seen)
              for p in frame.people]
    return replace(frame, people=people)


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

    def __init__(self, config: AppConfig, engine: OutputEngine, view_mirror: bool | None = None):
        """``view_mirror``: show the selfie mirror image on the viewer and VMC (default
        ``config.retarget.mirror``). Recordings and BVH always get the frames as they are (the
        performer's own left and right); ``play`` turns it off for older takes stored mirrored."""
        self.config = config
        self.engine = engine
        self.view_mirror = config.retarget.mirror if view_mirror is None else bool(view_mirror)
        self.closers: list[Callable[[], None]] = []
        self.sinks: list[tuple[Callable, float]] = []
        self.clock = None
        self.server = None
        self.recorder = None
        self._recorded_calibrations: dict[int, Any] = {}
        self.bvh = None
        self.bvh_error: str | None = None  # why the BVH file could not be written at the end (None: it was, or none asked)

    def open_network(self) -> None:
        """VMC and WebSocket senders and the viewer's server (the run command opens them after the source and the
        models, so a missing camera or file is reported before a viewer is announced)."""
        config = self.config
        if config.vmc.enabled:
            from .vmc import VmcSender

            vmc = VmcSender(config.vmc)
            self.closers.append(vmc.close)
            self.sinks.append((self._view(vmc.send), config.vmc.rate))
        if config.websocket.enabled:
            from .server import WebSocketServer

            self.server = WebSocketServer(config.websocket, on_control=self.engine.apply_control)
            self.server.start()
            self.closers.append(self.server.stop)
            self.sinks.append((self._view(self.server.publish), config.websocket.rate))
            needs_token = " (add ?token= and your --ws-token value)" if config.websocket.token else ""
            print(f"web viewer: {self.server.http_url}{needs_token}", file=sys.stderr, flush=True)

    def _view(self, sink: Callable[[OutputFrame], Any]) -> Callable[[OutputFrame], Any]:
        """``sink`` behind the view mirror (when on): where motion is shown or streamed live."""
        if not self.view_mirror:
            return sink

        def mirrored(frame: OutputFrame):
            return sink(mirror_output_frame(frame))

        owner = getattr(sink, "__self__", None)  # keep the sink's name in the clock's statistics
        mirrored.__name__ = f"{type(owner).__name__}.{sink.__name__}" if owner is not None else getattr(sink, "__name__", "sink")
        return mirrored

    def start_clock(self) -> None:
        """Start the output clock over the sinks opened so far (``open_files`` calls it)."""
        if self.sinks and self.clock is None:
            from .stream import OutputClock

            self.clock = OutputClock(self.engine.sample, self.sinks)
            self.clock.start()

    def fresh(self) -> None:
        """A pose update was just processed: the sinks send it now, in place of their next tick
        (:meth:`avatar_bridge.stream.OutputClock.nudge`)."""
        if self.clock is not None:
            self.clock.nudge()

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
        try:
            self.recorder.write(poses, [p.rig for p in frame.people if p.rig is not None])
        except RuntimeError as exc:
            if self.recorder.error is None:
                raise  # not the file: a bug, the output clock logs it with its traceback
            log.error("%s", exc)  # the disk is full: one line now (what is kept), the totals when the run ends
            return
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
        try:
            result = self.bvh.close()
        except OSError as exc:  # written at the end (BVH needs its frame count first): say it, no traceback
            self.bvh_error = str(exc)
            log.error("%s", exc)
            return
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
