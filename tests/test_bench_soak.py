"""The soak benchmark, short: its report has every figure, memory stays bounded, nothing is lost.

Speed is not asserted here (the machine is shared); `avatar-bridge bench-soak` prints the figures.
"""

from __future__ import annotations

import json

import pytest

from avatar_bridge import cli
from avatar_bridge.bench.soak import SoakReport, format_report, run_soak
from avatar_bridge.record import read_recording


@pytest.mark.slow  # a real avatar-bridge process / seconds of real time
def test_short_soak_reports_every_figure_with_bounded_memory(tmp_path):
    take = tmp_path / "soak.abrec"
    report = run_soak(duration=8.0, clients=6, stuck=2, rate=60.0, sample_every=1.0, record_path=take)
    assert isinstance(report, SoakReport) and not report.errors
    assert len(report.rss_samples) >= 8 and all(mb > 0 for _, mb in report.rss_samples)
    assert abs(report.rss_growth_mb) < 40.0, report.rss_samples  # a leak of a frame per tick would show
    assert len(report.client_fps) == 4 and all(fps > 0 for fps in report.client_fps)
    assert len(report.stuck_dropped) == 2  # the two silent clients are still connected at the end
    assert len(report.vmc_fps) == 2 and all(fps > 0 for fps in report.vmc_fps)
    for block in (report.latency_first_third, report.latency_last_third,
                  report.delivery_first_third, report.delivery_last_third):
        assert block["n"] > 0 and block["median_ms"] <= block["p95_ms"] <= block["max_ms"]
    assert report.clock["sink_errors"] and not any(report.clock["sink_errors"].values())
    assert report.recording_complete and report.recording_frames > 0
    recording = read_recording(take)  # kept where asked, and the report describes it
    assert recording.complete and len(recording) == report.recording_frames
    text = format_report(report)
    for word in ("memory", "latency", "clients", "vmc", "record"):
        assert word in text


@pytest.mark.parametrize("argv,fragment", [
    (["--duration", "601"], "--duration 601 is out of range: use 1 to 600"),
    (["--duration", "5", "--clients", "2", "--stuck", "3"], "--clients 2 / --stuck 3: need"),
    (["--duration", "5", "--rate", "0"], "--rate 0 is out of range"),
])
def test_bad_arguments_are_one_line(argv, fragment, capsys):
    assert cli.main(["bench-soak", *argv]) == 2
    err = capsys.readouterr().err
    assert f"avatar-bridge bench-soak: error: {fragment}" in err and "Traceback" not in err


def test_existing_record_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "keep.abrec"
    existing.write_bytes(b"keep")
    assert cli.main(["bench-soak", "--duration", "2", "--record", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep"


def test_json_report_round_trips(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert cli.main(["bench-soak", "--duration", "3", "--clients", "3", "--stuck", "1", "--sample-every", "1",
                     "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["clients"] == 3 and data["stuck_clients"] == 1 and data["recording_complete"] is True
    assert "soak 3 s" in capsys.readouterr().out
