"""Playback of ``.abrec`` takes: a frame source at the take's own timing, and the engine ``play`` samples."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from .record import RecordedFrame, RecordingError, ChunkReader, damage_warning, frames_of_block, iter_blocks
from .types import Frame, FrameSourceBase, GroundTruth, OutputFrame, OutputPerson, RigPose


class PlaybackSource(FrameSourceBase):
    """A FrameSource that replays an ``.abrec`` take at its original timing.

    ``speed`` scales time (2.0 = twice as fast), ``loop`` restarts at the end, ``realtime=False``
    hands frames out as fast as they are read (timestamps still follow the take). Like a camera,
    a consumer that falls behind in realtime mode gets the newest due frame, the skipped ones counted
    in ``Frame.dropped``. Frames are streamed block by block, so hour-long takes need little memory.
    """

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False, realtime: bool = True) -> None:
        if not (0.01 <= speed <= 100.0):
            raise ValueError(f"playback speed {speed} is out of range: use 0.01 to 100 (1 = original timing)")
        self.path = Path(path)
        self._reader = ChunkReader(self.path)
        self.header = self._reader.header
        self.speed = float(speed)
        self.loop = loop
        self.realtime = realtime
        self.fps = float(self.header.fps) if self.header.fps > 0 else 30.0
        source = self.header.source
        self.width = int(source.get("width", 0))
        self.height = int(source.get("height", 0))
        self._frames = self._frame_stream()
        self._lookahead: RecordedFrame | None = next(self._frames, None)
        if self._lookahead is None:
            self._reader.close()
            damage = f" ({self._reader.damage})" if self._reader.damage else ""
            raise RecordingError(f"{self.path} has no frames{damage}: nothing to play")
        if not self.width or not self.height:
            self.width, self.height = self._lookahead.poses.width, self._lookahead.poses.height
        self._t0 = self._lookahead.poses.timestamp  # first recorded timestamp
        self._start: float | None = None  # playback clock at the first frame
        self._loop_offset = 0.0  # take time added by completed loops
        self._last_recorded = self._t0
        self._index = 0
        self.loops = 0
        self._paused_at: float | None = None
        self._closed = False

    def _frame_stream(self) -> Iterator[RecordedFrame]:
        count = 0
        for block in iter_blocks(self._reader):
            count += len(block.frames)
            yield from frames_of_block(block, self.header)
        if self._reader.damage and self.loops == 0:
            damage_warning(self.path, self._reader.damage, count)

    def _next_recorded(self) -> tuple[RecordedFrame, float] | None:
        """The next recorded frame and its take time (seconds since the first frame, loops added)."""
        frame = self._lookahead
        if frame is None and self.loop and self._index > 0:
            self._loop_offset += (self._last_recorded - self._t0) + 1.0 / self.fps
            self.loops += 1
            self._reader.rewind()
            self._frames = self._frame_stream()
            frame = next(self._frames, None)
        if frame is None:
            return None
        self._lookahead = next(self._frames, None)
        self._last_recorded = frame.poses.timestamp
        return frame, self._loop_offset + frame.poses.timestamp - self._t0

    def read(self) -> Frame | None:
        if self._closed:
            return None
        if self._paused_at is not None:
            self.pause(False)  # reading again resumes the take
        item = self._next_recorded()
        if item is None:
            return None
        frame, take_time = item
        dropped = frame.dropped
        now = time.monotonic()
        if self._start is None:
            self._start = now
        if self.realtime:
            due = self._start + take_time / self.speed
            # Behind schedule: skip to the newest frame that is already due, as a camera would.
            while self._lookahead is not None and due < now:
                next_time = self._loop_offset + self._lookahead.poses.timestamp - self._t0
                if self._start + next_time / self.speed > now:
                    break
                frame, take_time = self._next_recorded()
                due = self._start + take_time / self.speed
                dropped += 1
            if due > now:
                time.sleep(due - now)
        timestamp = self._start + take_time / self.speed
        shift = timestamp - frame.poses.timestamp
        rigs = [
            RigPose(
                timestamp=frame.poses.timestamp + (rig.timestamp - frame.poses.timestamp) / self.speed + shift,
                track_id=rig.track_id,
                hips_position=rig.hips_position,
                rotations=rig.rotations,
                confidence=rig.confidence,
                tracking=rig.tracking,
            )
            for rig in frame.rigs
        ]
        out = Frame(
            index=self._index,
            timestamp=timestamp,
            width=frame.poses.width,
            height=frame.poses.height,
            truth=GroundTruth(people=frame.poses.people, rigs=rigs, recorded_timestamp=frame.poses.timestamp),
            dropped=dropped,
            pts=take_time,  # seconds since the take's first frame (loops added), before --speed
        )
        self._index += 1
        return out

    def pause(self, paused: bool = True) -> None:
        """Freeze the take's clock while not reading; after resuming nothing is skipped."""
        now = time.monotonic()
        if paused and self._paused_at is None:
            self._paused_at = now
        elif not paused and self._paused_at is not None:
            if self._start is not None:
                self._start += now - self._paused_at
            self._paused_at = None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._reader.close()


class PlaybackSampler:
    """The newest played-back frame, handed from the reading loop to the output clock thread.

    The :class:`avatar_bridge.outputs.OutputEngine` of ``play``: ``sample(t)`` for the clock,
    ``apply_control`` for WebSocket control messages.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frame: Frame | None = None
        self.driver: int | None = None
        self.paused = False

    def set(self, frame: Frame) -> None:
        with self._lock:
            self.frame = frame

    def sample(self, t: float):
        """OutputClock ``sample(t)``: the newest frame as an OutputFrame (None before the first)."""
        with self._lock:
            frame, driver = self.frame, self.driver
        if frame is None:
            return None
        truth = frame.truth or GroundTruth()
        rigs = {rig.track_id: rig for rig in truth.rigs}
        people = []
        for pose in truth.people:
            rig = rigs.pop(pose.track_id, None)
            people.append(OutputPerson(pose.track_id, pose2d=pose, rig=rig, tracking=rig.tracking if rig else True))
        for track_id, rig in rigs.items():
            people.append(OutputPerson(track_id, rig=rig, tracking=rig.tracking))
        return OutputFrame(capture_time=frame.timestamp, width=frame.width, height=frame.height, people=people, driver=driver)

    def calibrations(self) -> dict:
        """A take carries its calibrations in the file; playback measures none."""
        return {}

    def apply_control(self, message) -> None:
        """WebSocket control messages: ``select`` picks the driver, ``pause`` freezes the outputs."""
        if message.type == "select":
            self.driver = message.id
        elif message.type == "pause":
            self.paused = bool(message.paused)


def play_recording(
    path: str | Path,
    sinks: Sequence,
    *,
    speed: float = 1.0,
    loop: bool = False,
    rate: float = 60.0,
    duration: float | None = None,
    latest: PlaybackSampler | None = None,
) -> dict:
    """Play a take through output sinks (``sink(OutputFrame)`` callables or ``(sink, rate)`` pairs).

    The take is read on this thread at its original timing; an :class:`OutputClock` thread hands the
    newest frame to the sinks at their own rates, exactly as a live run does. Returns counts.
    """
    from .stream import OutputClock

    latest = latest or PlaybackSampler()
    played = dropped = 0
    started = time.monotonic()
    with PlaybackSource(path, speed=speed, loop=loop) as source:
        clock = OutputClock(latest.sample, list(sinks), rate=rate)
        clock.start()
        try:
            while duration is None or time.monotonic() - started < duration:
                if latest.paused:  # a WebSocket client paused: hold the take where it is
                    source.pause(True)
                    time.sleep(0.02)
                    continue
                frame = source.read()
                if frame is None:
                    break
                latest.set(frame)
                clock.nudge()  # the new frame leaves now, in place of the next tick
                played += 1
                dropped += frame.dropped
            clock.tick(time.monotonic())  # the final pose reaches every sink before the outputs close
        finally:
            clock.stop()
        stats = clock.stats()
    return {"frames": played, "dropped": dropped, "loops": source.loops, "seconds": time.monotonic() - started,
            "output_frames": stats.frames, "sends": stats.sends}
