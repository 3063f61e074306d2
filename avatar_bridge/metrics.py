"""Rolling per-stage timings, update rate and latency percentiles of the live loop.

Why rolling windows: a live service runs for hours; what matters is how it behaves now (the last
few hundred frames), and a fixed ring buffer keeps memory flat. The loop thread writes, the outputs
and the status line read a snapshot, so reads and writes share one small lock.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np


def load_average_line(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """``load average before 1.00 0.90 0.80, after 1.10 0.95 0.81 (2 CPUs)``: the speed scripts' line
    for the machine's load (``os.getloadavg()`` taken before and after the timed work)."""
    return (f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
            f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} ({os.cpu_count()} CPUs)")


def median_p95(values) -> tuple[float | None, float | None]:
    """(median, 95th percentile) of a sequence of numbers; (None, None) when it is empty.

    The one place the benchmarks and the output clock turn timings into their headline figures.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None, None
    median, p95 = np.percentile(arr, (50.0, 95.0))
    return float(median), float(p95)


def timing_summary(values_ms, digits: int | None = None) -> dict:
    """``{"n", "median_ms", "p95_ms", "max_ms"}`` of timings in milliseconds (``{"n": 0}`` when empty).

    ``digits`` rounds the figures for printed reports; non-finite samples are left out.
    """
    arr = np.asarray(values_ms, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"n": 0}
    median, p95 = median_p95(arr)
    out = {"n": int(arr.size), "median_ms": median, "p95_ms": p95, "max_ms": float(arr.max())}
    if digits is not None:
        out.update({k: round(v, digits) for k, v in out.items() if k != "n"})
    return out


class RollingStats:
    """The last ``size`` samples of one quantity, in a preallocated ring buffer."""

    def __init__(self, size: int = 300):
        self._values = np.zeros(size, np.float64)
        self._count = 0  # total samples ever added

    def add(self, value: float) -> None:
        self._values[self._count % self._values.size] = value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def values(self) -> np.ndarray:
        n = min(self._count, self._values.size)
        return self._values[:n].copy()

    def percentiles(self, qs: tuple[float, ...] = (50.0, 95.0)) -> tuple[float, ...]:
        values = self.values()
        if values.size == 0:
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) for v in np.percentile(values, qs))

    def mean(self) -> float:
        values = self.values()
        return float(values.mean()) if values.size else float("nan")


class PipelineMetrics:
    """Per-stage milliseconds, update rate (pose updates per second) and latencies, all rolling.

    Stage names used by the pipeline: grab, detect, crop, forward, decode, pose (crop+forward+decode
    when the estimator does not split them), track, smooth, retarget, send. Latencies:
    ``capture_to_keypoints`` and ``capture_to_output`` (ms from the frame's capture timestamp).
    """

    def __init__(self, window: int = 300):
        self.window = window
        self._lock = threading.Lock()
        self._stages: dict[str, RollingStats] = {}
        self._latency: dict[str, RollingStats] = {}
        self._frame_times = RollingStats(window)  # monotonic time each processed frame finished
        self._update_times = RollingStats(window)
        self._updates_in_frame = RollingStats(window)  # people updated per frame
        self.frames = 0
        self.updates = 0
        self.dropped = 0
        self.started = time.monotonic()

    def add_stage(self, name: str, ms: float) -> None:
        with self._lock:
            stats = self._stages.get(name)
            if stats is None:
                stats = self._stages[name] = RollingStats(self.window)
            stats.add(ms)

    def add_latency(self, name: str, ms: float) -> None:
        with self._lock:
            stats = self._latency.get(name)
            if stats is None:
                stats = self._latency[name] = RollingStats(self.window)
            stats.add(ms)

    def frame_done(self, people_updated: int, dropped: int = 0, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.frames += 1
            self.updates += people_updated
            self.dropped += dropped
            self._frame_times.add(now)
            self._updates_in_frame.add(people_updated)

    def _rate(self, per_frame: np.ndarray | None = None) -> float:
        times = self._frame_times.values()
        if times.size < 2:
            return 0.0
        order = np.argsort(times)
        span = times[order[-1]] - times[order[0]]
        if span <= 0:
            return 0.0
        if per_frame is None:
            return (times.size - 1) / span
        return float(per_frame[order[1:]].sum()) / span

    def fps(self) -> float:
        with self._lock:
            return self._rate()

    def updates_per_second(self) -> float:
        with self._lock:
            return self._rate(self._updates_in_frame.values())

    def snapshot(self) -> dict:
        """Everything as plain numbers (JSON-ready): rates, totals, and p50/p95/mean per stage."""
        with self._lock:
            def table(group: dict[str, RollingStats]) -> dict:
                out = {}
                for name, stats in group.items():
                    p50, p95 = stats.percentiles()
                    out[name] = {"p50": round(p50, 3), "p95": round(p95, 3), "mean": round(stats.mean(), 3), "n": stats.count}
                return out

            return {
                "fps": round(self._rate(), 2),
                "updates_per_s": round(self._rate(self._updates_in_frame.values()), 2),
                "frames": self.frames,
                "updates": self.updates,
                "dropped": self.dropped,
                "stages_ms": table(self._stages),
                "latency_ms": table(self._latency),
            }

    def status_line(self) -> str:
        """One terminal line: fps, updates/s, dropped frames, per-stage p50 ms, latency p95."""
        snap = self.snapshot()
        stages = " ".join(f"{name} {v['p50']:.1f}" for name, v in snap["stages_ms"].items())
        latency = " ".join(f"{name} p95 {v['p95']:.0f}ms" for name, v in snap["latency_ms"].items())
        return (
            f"{snap['fps']:5.1f} fps  {snap['updates_per_s']:5.1f} poses/s  dropped {snap['dropped']}  "
            f"| ms: {stages} | {latency}"
        )


def peak_rss_mb() -> float | None:
    """The process's peak resident memory in MiB (Linux/macOS), None where unknown."""
    try:
        import resource
        import sys
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each thread of this process has used so far, by thread name.

    Python threads are named by ``threading`` (``MainThread``, ``avatar-bridge-output-clock``, the
    video decoder); native threads by the kernel's thread name (FFmpeg's ``av:h264:df0``), and those
    that never named themselves (ONNX Runtime's and OpenCV's pools) as ``native pools``; threads of
    one name summed. Read from ``/proc/self/task/*/stat`` (Linux; ``{}`` elsewhere), fields 14-15
    in clock ticks (proc(5)).
    """
    import os
    from pathlib import Path

    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return {}
    python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    try:
        process_comm = Path("/proc/self/comm").read_text().strip()
    except OSError:
        process_comm = ""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 onwards
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15
        # native pool threads that never named themselves carry the process's name
        name = python_names.get(int(task.name), "native pools" if comm == process_comm else comm)
        totals[name] = totals.get(name, 0.0) + cpu
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))
