"""Output clock: drives the streaming sinks (VMC, WebSocket, ...) at their own fixed rates.

Why a separate clock: the pose loop runs at whatever the camera and the network allow (often 15-30
fps, jittery), while avatar receivers want a steady 60 Hz. So the sinks are not fed by the pose loop;
a thread ticks at each sink's rate and asks the pipeline for the pose *at the send time*. The
pipeline implements ``sample(t)`` with the stabilizer's ``predict(t)`` (latency compensation) and the
retargeter, and returns an :class:`OutputFrame` (or None when there is nothing to send).

Usage (what ``avatar-bridge run`` does)::

    clock = OutputClock(sample, [(vmc.send, 60.0), (server.publish, 60.0)])
    clock.start()
    ...
    clock.stop()
    print(clock.stats())   # ticks, frames, sink errors, latency median/p95

A sink is any callable ``sink(frame: OutputFrame) -> None``. It runs on the clock thread, so it must
return quickly (VmcSender sends UDP datagrams, WebSocketServer.publish only hands the frame to its own
event loop). An exception in a sink is logged (at most once per 5 s per sink) and never stops the other
sinks or the clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from avatar_bridge.metrics import median_p95
from avatar_bridge.types import OutputFrame

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 5.0


Sample = Callable[[float], "OutputFrame | None"]
Sink = Callable[[OutputFrame], None]


@dataclass
class ClockStats:
    ticks: int  # times the clock woke up and called sample()
    frames: int  # ticks where sample() returned a frame
    late_ticks: int  # schedule slots skipped because the thread woke up more than a period late
    sample_errors: int
    sink_errors: dict[str, int]
    sends: dict[str, int]  # frames handed to each sink
    latency_ms_median: float | None  # send time - capture time, every frame sent (last 1000)
    latency_ms_p95: float | None
    interval_ms_median: float | None  # time between consecutive ticks
    interval_ms_p95: float | None
    # Capture to the FIRST send that carries that capture: how long new motion takes to leave. The
    # latency figures above also count the ticks that re-send (extrapolate) an older capture between frames.
    fresh_latency_ms_median: float | None = None
    fresh_latency_ms_p95: float | None = None


class SinkSlot:
    """One sink with its own schedule and error counters."""

    def __init__(self, sink: Sink, rate: float, name: str):
        if not callable(sink):
            raise TypeError(f"output sink {sink!r} is not callable: pass a function taking an OutputFrame")
        if not (rate > 0 and np.isfinite(rate)):
            raise ValueError(f"output rate for sink {name} is {rate!r}: use a positive number of Hz, e.g. 60")
        self.sink = sink
        self.period = 1.0 / float(rate)
        self.name = name
        self.next_due = 0.0
        self.last_sent = -float("inf")  # clock time of this sink's last tick
        self.resume: float | None = None  # after a moved (fresh) tick: where the schedule goes on
        self.sends = 0
        self.errors = 0
        self.suppressed = 0
        self.last_log = -float("inf")


def _sink_name(sink: Sink) -> str:
    owner = getattr(sink, "__self__", None)
    if owner is not None:
        return f"{type(owner).__name__}.{getattr(sink, '__name__', 'call')}"
    return getattr(sink, "__name__", type(sink).__name__)


# A fresh send comes at least this share of a sink's period after its last tick. A quarter: the wait
# for a pose that lands just after a tick is at most 4.2 ms at 60 Hz (a half cost the camera-paced
# capture-to-first-send p95 about 2 ms more in interleaved runs, docs/profile.md).
FRESH_MIN_GAP = 0.25


def pull_forward(slots: list[SinkSlot], now: float, min_gap: float = FRESH_MIN_GAP) -> None:
    """Reschedule the sinks for a pose update that arrived at ``now`` (:meth:`OutputClock.nudge`).

    A fresh pose should leave at once, not wait up to a period for the next tick; but the sinks'
    rates are promises to receivers. So the fresh send *replaces* each sink's next tick: it moves to
    the earliest time allowed, ``max(now, last tick + min_gap periods)``, and the tick after it stays
    where the schedule had it (``resume``), so the long-run rate is unchanged and intervals stay
    between min_gap and two periods. A sink already due, with a tick already moved, or whose
    next tick is more than a period away (its slot was the one sent early) is left alone: pose
    updates faster than the sink's rate never raise it.
    """
    for slot in slots:
        if slot.resume is not None or slot.next_due <= now + 1e-4:
            continue
        if slot.next_due - now > slot.period + 1e-4:
            continue  # that tick's slot was already sent early: sends never run ahead of the schedule
        earliest = max(now, slot.last_sent + min_gap * slot.period)
        if earliest < slot.next_due - 1e-4:
            slot.resume = slot.next_due + slot.period
            slot.next_due = earliest


class OutputClock:
    """A thread that calls ``sample(t)`` on each sink's schedule and hands the frame to the due sinks.

    ``sinks`` is a list of ``(callable, rate_hz)`` pairs (or bare callables, which use ``rate``).
    When several sinks are due at the same tick, ``sample`` is called once and all of them get the
    same frame. If the thread falls behind (machine overloaded) it skips the missed slots instead of
    bursting, and counts them in ``late_ticks``. :meth:`nudge` (a new pose update) moves each sink's
    next tick to now, or a quarter period after its last one (:func:`pull_forward`), so new motion
    leaves without waiting for the schedule while the rates stay what they are.
    """

    def __init__(
        self,
        sample: Sample,
        sinks: Sequence[Sink | tuple[Sink, float]],
        rate: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not callable(sample):
            raise TypeError("OutputClock needs sample(t) -> OutputFrame | None as its first argument")
        self._sample = sample
        self._clock = clock
        self._slots: list[SinkSlot] = []
        for item in sinks:
            sink, sink_rate = item if isinstance(item, tuple) else (item, rate)
            name = _sink_name(sink)
            if any(slot.name == name for slot in self._slots):
                name = f"{name}#{len(self._slots)}"
            self._slots.append(SinkSlot(sink, sink_rate, name))
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and nudge(): the loop re-plans at once
        self._nudged = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ticks = 0
        self._frames = 0
        self._late = 0
        self._sample_errors = 0
        self._sample_last_log = -float("inf")
        self._latency_ms: deque = deque(maxlen=1000)
        self._fresh_latency_ms: deque = deque(maxlen=1000)
        self._last_capture: float | None = None
        self._interval_ms: deque = deque(maxlen=1000)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "OutputClock":
        if self._thread is not None:
            raise RuntimeError("OutputClock.start() called twice")
        now = self._clock()
        for slot in self._slots:
            slot.next_due = now
        self._thread = threading.Thread(target=self._run, name="avatar-bridge-output-clock", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "OutputClock":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def nudge(self) -> None:
        """A new pose update is ready: send it as soon as each sink's rate allows, in place of its next
        tick (thread-safe)."""
        with self._lock:
            self._nudged = True
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        last_tick = None
        while not self._stop.is_set():
            if not self._slots:
                self._stop.wait(0.1)
                continue
            due_at = min(slot.next_due for slot in self._slots)
            delay = due_at - self._clock()
            if delay > 0:
                self._wake.wait(delay)
            if self._stop.is_set():
                break
            self._wake.clear()
            now = self._clock()
            with self._lock:
                nudged, self._nudged = self._nudged, False
            if nudged:
                pull_forward(self._slots, now)
            due = [slot for slot in self._slots if slot.next_due <= now + 1e-4]
            if not due:
                continue
            for slot in due:
                slot.last_sent = now
                if slot.resume is not None:  # a fresh send in place of a tick: the schedule goes on
                    slot.next_due, slot.resume = slot.resume, None
                    continue
                slot.next_due += slot.period
                if slot.next_due < now - slot.period:  # woke up far too late: skip, don't burst
                    missed = int((now - slot.next_due) / slot.period)
                    slot.next_due += missed * slot.period
                    with self._lock:
                        self._late += missed
            if last_tick is not None:
                with self._lock:
                    self._interval_ms.append((now - last_tick) * 1000.0)
            last_tick = now
            self.tick(now, due)

    def tick(self, t: float, slots: list[SinkSlot] | None = None) -> OutputFrame | None:
        """One output step at time ``t``: sample, then send to ``slots`` (default: every sink).

        Public so a caller without a thread (tests, offline rendering) can drive the sinks itself.
        """
        slots = self._slots if slots is None else slots
        with self._lock:
            self._ticks += 1
        try:
            frame = self._sample(t)
        except Exception:  # the pipeline's problem must not kill the output thread
            with self._lock:
                self._sample_errors += 1
            if t - self._sample_last_log >= ERROR_LOG_INTERVAL_S:
                self._sample_last_log = t
                log.exception("output sample(t) failed (%d times so far); outputs skip this tick", self._sample_errors)
            return None
        if frame is None:
            return None
        if frame.sample_time is None:
            frame.sample_time = t
        with self._lock:
            self._frames += 1
            if isinstance(frame.capture_time, (int, float)):
                latency = (self._clock() - frame.capture_time) * 1000.0
                self._latency_ms.append(latency)
                if frame.capture_time != self._last_capture:
                    self._fresh_latency_ms.append(latency)
                    self._last_capture = frame.capture_time
        for slot in slots:
            try:
                slot.sink(frame)
                slot.sends += 1
            except Exception:
                slot.errors += 1
                now = self._clock()
                if now - slot.last_log >= ERROR_LOG_INTERVAL_S:
                    log.exception(
                        "output %s failed (%d errors, %d not logged since the last report); other outputs continue",
                        slot.name, slot.errors, slot.suppressed,
                    )
                    slot.last_log = now
                    slot.suppressed = 0
                else:
                    slot.suppressed += 1
        return frame

    def stats(self) -> ClockStats:
        with self._lock:
            lat_med, lat_p95 = median_p95(self._latency_ms)
            int_med, int_p95 = median_p95(self._interval_ms)
            fresh_med, fresh_p95 = median_p95(self._fresh_latency_ms)
            return ClockStats(
                ticks=self._ticks,
                frames=self._frames,
                late_ticks=self._late,
                sample_errors=self._sample_errors,
                sink_errors={s.name: s.errors for s in self._slots},
                sends={s.name: s.sends for s in self._slots},
                latency_ms_median=lat_med,
                latency_ms_p95=lat_p95,
                interval_ms_median=int_med,
                interval_ms_p95=int_p95,
                fresh_latency_ms_median=fresh_med,
                fresh_latency_ms_p95=fresh_p95,
            )
