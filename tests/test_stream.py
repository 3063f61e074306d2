"""OutputClock: per-sink rates, one sample per tick, sink/sample failures isolated, latency measured."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from avatar_bridge.stream import OutputClock
from avatar_bridge.types import OutputFrame, OutputPerson


class Recorder:
    """A sink that records the frames it gets (thread-safe)."""

    def __init__(self):
        self.frames: list[OutputFrame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: OutputFrame) -> None:
        with self.lock:
            self.frames.append(frame)


def run_for(clock: OutputClock, seconds: float) -> None:
    clock.start()
    time.sleep(seconds)
    clock.stop()
    assert not clock.running


def test_sinks_run_at_their_own_rates_from_one_sample_per_tick():
    samples = []

    def sample(t: float) -> OutputFrame:
        samples.append(t)
        return OutputFrame(capture_time=t - 0.05, width=640, height=480, people=[OutputPerson(1)])

    fast, slow = Recorder(), Recorder()
    clock = OutputClock(sample, [(fast, 40.0), (slow, 20.0)])
    run_for(clock, 1.0)
    stats = clock.stats()
    # 20 Hz slots coincide with every other 40 Hz slot: sample() runs once per 40 Hz tick, not per sink.
    assert len(samples) == stats.ticks
    assert len(fast.frames) <= stats.ticks < len(fast.frames) + len(slow.frames)
    assert 0.4 <= len(slow.frames) / len(fast.frames) <= 0.6
    assert len(fast.frames) >= 10
    # Both sinks got the very same frame objects when due together, stamped with the tick time.
    slow_ids = {id(f) for f in slow.frames}
    assert slow_ids <= {id(f) for f in fast.frames}
    assert all(f.sample_time is not None for f in fast.frames)
    times = [f.sample_time for f in fast.frames]
    assert times == sorted(times)
    # capture_time is 50 ms before the sample time, so the measured latency is at least 50 ms.
    assert stats.latency_ms_median >= 50.0 and stats.latency_ms_p95 >= stats.latency_ms_median
    assert stats.sends == {"Recorder": len(fast.frames), "Recorder#1": len(slow.frames)}


def test_failing_sink_is_logged_once_and_does_not_stop_the_others(caplog):
    good = Recorder()

    def broken(frame: OutputFrame) -> None:
        raise RuntimeError("receiver exploded")

    clock = OutputClock(lambda t: OutputFrame(t, 10, 10), [(broken, 50.0), (good, 50.0)])
    with caplog.at_level(logging.ERROR, logger="avatar_bridge.stream"):
        run_for(clock, 0.6)
    stats = clock.stats()
    assert stats.sink_errors["broken"] >= 10
    assert stats.sends["Recorder"] == len(good.frames) == stats.frames >= 10
    logged = [r for r in caplog.records if "output broken failed" in r.getMessage()]
    assert len(logged) == 1  # rate-limited: once per 5 s
    assert "receiver exploded" in caplog.text


def test_failing_or_empty_sample_skips_the_tick_and_keeps_ticking(caplog):
    calls = []

    def sample(t: float):
        calls.append(t)
        if len(calls) % 3 == 0:
            raise ValueError("stabilizer not ready")
        if len(calls) % 3 == 1:
            return None
        return OutputFrame(t, 10, 10)

    sink = Recorder()
    clock = OutputClock(sample, [sink], rate=60.0)
    with caplog.at_level(logging.ERROR, logger="avatar_bridge.stream"):
        run_for(clock, 0.5)
    stats = clock.stats()
    assert stats.ticks == len(calls) >= 9
    assert stats.sample_errors == len(calls) // 3
    assert stats.frames == len(sink.frames) == sum(1 for i in range(1, len(calls) + 1) if i % 3 == 2)
    assert len([r for r in caplog.records if "sample(t) failed" in r.getMessage()]) == 1


def test_tick_drives_sinks_without_a_thread():
    sink = Recorder()
    clock = OutputClock(lambda t: OutputFrame(t - 0.01, 10, 10), [sink])
    frame = clock.tick(123.0)
    assert frame is sink.frames[0] and frame.sample_time == 123.0


def test_driving_person_prefers_driver_then_first():
    people = [OutputPerson(4), OutputPerson(9)]
    assert OutputFrame(0, 1, 1, people, driver=9).driving_person().track_id == 9
    assert OutputFrame(0, 1, 1, people, driver=None).driving_person().track_id == 4
    assert OutputFrame(0, 1, 1, people, driver=77).driving_person().track_id == 4
    assert OutputFrame(0, 1, 1, [], driver=1).driving_person() is None


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="positive number of Hz"):
        OutputClock(lambda t: None, [(Recorder(), 0.0)])
    with pytest.raises(TypeError, match="not callable"):
        OutputClock(lambda t: None, ["vmc"])
    clock = OutputClock(lambda t: None, [])
    clock.start()
    with pytest.raises(RuntimeError, match="twice"):
        clock.start()
    clock.stop()


def test_stop_is_prompt_even_at_a_low_rate():
    clock = OutputClock(lambda t: None, [(Recorder(), 1.0)]).start()
    time.sleep(0.05)
    started = time.monotonic()
    clock.stop()
    assert time.monotonic() - started < 0.5 and not clock.running


def test_bench_stream_command_runs_and_reports(capsys):
    from avatar_bridge import cli

    code = cli.main(["bench-stream", "--frames", "5", "--seconds", "0.4", "--clients", "2", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    result = __import__("json").loads(out[out.index("{"):])
    assert result["vmc"]["datagrams_per_frame"] >= 4 and result["vmc"]["largest_datagram"] <= 1400
    assert set(result["publish_json"]) == {"1 people", "2 people", "4 people", "16 people"}
    runs = result["delivery"]
    assert [(r["clients"], r["stuck_client"]) for r in runs] == [(2, False), (2, True)]
    assert all(r["published"] > 0 and r["delay"]["n"] > 0 for r in runs)
    assert len(runs[1]["dropped_per_client"]) == 3  # two readers and the stuck one
    with __import__("pytest").raises(ValueError, match="must be positive"):
        cli.main(["-v", "bench-stream", "--clients", "0"])


def test_first_send_latency_counts_each_capture_once():
    """Ticks that re-send an older capture count in the age figures, not in the first-send ones."""
    now = [0.0]
    captures = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.050}  # tick -> capture time of the newest frame
    tick_index = [0]

    def sample(t):
        frame = OutputFrame(captures[tick_index[0]], 10, 10)
        tick_index[0] += 1
        return frame

    clock = OutputClock(sample, [Recorder()], clock=lambda: now[0])
    for t in (0.010, 0.026, 0.043, 0.060):
        now[0] = t
        clock.tick(t)
    stats = clock.stats()
    # every send: ages 10, 26, 43 (capture 0) and 10 ms (capture 0.050)
    assert stats.latency_ms_median == pytest.approx((10 + 26) / 2)
    # first sends only: capture 0 at 10 ms, capture 0.050 at 10 ms
    assert stats.fresh_latency_ms_median == pytest.approx(10.0)
    assert stats.fresh_latency_ms_p95 == pytest.approx(10.0)


# --- fresh sends: a new pose update leaves at once, in place of the next tick --------------------------


def make_slot(rate: float, next_due: float, last_sent: float):
    from avatar_bridge.stream import SinkSlot

    slot = SinkSlot(lambda frame: None, rate, "sink")
    slot.next_due, slot.last_sent = next_due, last_sent
    return slot


def test_pull_forward_moves_the_next_tick_and_keeps_the_schedule():
    from avatar_bridge.stream import FRESH_MIN_GAP, pull_forward

    period = 1 / 60
    assert 0 < FRESH_MIN_GAP * period < 0.010
    # last tick 10 ms ago (more than the minimum gap), next one 6.7 ms away: it moves to now, the one
    # after stays where the schedule had it
    slot = make_slot(60.0, next_due=1.0 + period, last_sent=1.0)
    pull_forward([slot], now=1.010)
    assert slot.next_due == pytest.approx(1.010) and slot.resume == pytest.approx(1.0 + 2 * period)
    # last tick 1 ms ago: the fresh send waits until the minimum gap after it, still before the tick
    slot = make_slot(60.0, next_due=1.0 + period, last_sent=1.0)
    pull_forward([slot], now=1.001)
    assert slot.next_due == pytest.approx(1.0 + FRESH_MIN_GAP * period) and slot.resume == pytest.approx(1.0 + 2 * period)
    # already due, or a tick already moved: left alone
    slot = make_slot(60.0, next_due=1.0, last_sent=1.0 - period)
    pull_forward([slot], now=1.0)
    assert slot.next_due == 1.0 and slot.resume is None
    slot = make_slot(60.0, next_due=1.005, last_sent=1.0)
    slot.resume = 1.04
    pull_forward([slot], now=1.003)
    assert slot.next_due == 1.005 and slot.resume == 1.04


@pytest.mark.parametrize("fps", [28.05, 30.0, 62.5, 90.0])
def test_fresh_sends_simulated_camera_keep_60_hz_and_cut_the_wait(fps):
    """Cameras slower and faster than the sink (poses ready 15 ms after capture), a 60 Hz sink, the
    clock's own rescheduling (pull_forward + resume) replayed without a thread: the rate stays 60 Hz
    (faster pose updates never raise it), intervals stay between FRESH_MIN_GAP (a quarter) of a period
    and two, and below 60 fps no pose waits more than that minimum gap."""
    from avatar_bridge.stream import FRESH_MIN_GAP, pull_forward

    period, seconds = 1 / 60, 20.0
    slot = make_slot(60.0, next_due=0.0, last_sent=-1.0)
    updates = [i / fps + 0.015 for i in range(int(seconds * fps))]
    sends, waits, pending = [], [], []
    u = 0
    while slot.next_due < seconds:
        if u < len(updates) and updates[u] < slot.next_due:  # a pose update before the next tick
            pull_forward([slot], updates[u])
            pending.append(updates[u])
            u += 1
            continue
        now = slot.next_due  # the tick (moved or regular)
        sends.append(now)
        waits.extend(now - p for p in pending)
        pending.clear()
        slot.last_sent = now
        if slot.resume is not None:
            slot.next_due, slot.resume = slot.resume, None
        else:
            slot.next_due += period
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    assert abs(len(sends) / seconds - 60.0) / 60.0 < 0.01
    assert min(gaps) >= FRESH_MIN_GAP * period - 1e-9 and max(gaps) <= 2 * period + 1e-9
    if fps < 60:
        assert max(waits) <= FRESH_MIN_GAP * period + 1e-9  # without fresh sends the wait reaches a whole period


def test_nudge_sends_before_the_scheduled_tick():
    """The real thread at 1 Hz: a nudge 0.3 s after the first tick is sent well before the next tick
    (due at 1 s), and the tick after it keeps the 1 s schedule."""
    sink = Recorder()
    clock = OutputClock(lambda t: OutputFrame(capture_time=t, width=1, height=1, people=[]), [(sink, 1.0)])
    started = time.monotonic()
    clock.start()
    try:
        while not sink.frames and time.monotonic() - started < 5:
            time.sleep(0.005)
        time.sleep(max(0.0, started + 0.6 - time.monotonic()))
        clock.nudge()
        while len(sink.frames) < 2 and time.monotonic() - started < 5:
            time.sleep(0.005)
        first, fresh = sink.frames[0].sample_time, sink.frames[1].sample_time
        assert fresh - first < 0.99  # sent on the nudge, not at the regular tick one period on
    finally:
        clock.stop()
