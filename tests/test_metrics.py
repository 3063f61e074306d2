"""Rolling metrics: bounded memory, percentiles over the newest samples, rates from frame times."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_bridge.metrics import PipelineMetrics, RollingStats


def test_rolling_stats_keep_only_the_newest_window():
    stats = RollingStats(size=100)
    for v in range(1000):
        stats.add(float(v))
    assert stats.count == 1000
    values = stats.values()
    assert values.size == 100 and values.min() == 900 and values.max() == 999
    p50, p95 = stats.percentiles()
    assert p50 == pytest.approx(np.percentile(np.arange(900, 1000), 50))
    assert p95 == pytest.approx(np.percentile(np.arange(900, 1000), 95))


def test_empty_stats_are_nan_not_errors():
    assert all(np.isnan(v) for v in RollingStats().percentiles())
    assert PipelineMetrics().fps() == 0.0


def test_pipeline_metrics_rates_and_snapshot():
    m = PipelineMetrics(window=50)
    for i in range(11):  # 10 intervals of 0.1 s, two people each frame, one dropped frame in all
        m.frame_done(2, dropped=1 if i == 5 else 0, now=100.0 + 0.1 * i)
        m.add_stage("pose", 5.0 + i)
        m.add_latency("capture_to_keypoints", 10.0)
    assert m.fps() == pytest.approx(10.0)
    assert m.updates_per_second() == pytest.approx(20.0)
    snap = m.snapshot()
    assert snap["frames"] == 11 and snap["updates"] == 22 and snap["dropped"] == 1
    assert snap["stages_ms"]["pose"]["p50"] == pytest.approx(10.0)
    assert snap["latency_ms"]["capture_to_keypoints"]["p95"] == pytest.approx(10.0)
    line = m.status_line()
    assert "10.0 fps" in line and "dropped 1" in line and "pose 10.0" in line
