"""clients/python/print_stream.py against the real WebSocketServer on loopback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from client_harness import PublishingServer, free_port

SCRIPT = Path(__file__).resolve().parent.parent / "clients" / "python" / "print_stream.py"


def test_example_client_prints_rate_latency_and_angles():
    with PublishingServer(rate=30.0) as server:
        proc = subprocess.run([sys.executable, str(SCRIPT), f"ws://127.0.0.1:{server.port}/", "--seconds", "2.6"],
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("connected: 55 bones, server rate 30.0 Hz"), lines
    stats = [line for line in lines[1:] if "fps" in line]
    assert len(stats) >= 2, lines
    fps = [float(re.match(r"\s*([\d.]+) fps", line).group(1)) for line in stats]
    assert all(5 <= f <= 40 for f in fps), fps  # the harness publishes 30 frames/s (fewer arrive when busy)
    assert "rtt" in stats[-1] and "people 1" in stats[-1]
    # The harness's elbow bends by 0.8 +- 0.4 rad: the printed angle must be in that range (23..69 deg).
    elbow = int(re.search(r"leftLowerArm=(\d+)", stats[-1]).group(1))
    assert 22 <= elbow <= 70, stats[-1]


def test_example_client_says_when_no_server_runs():
    proc = subprocess.run([sys.executable, str(SCRIPT), f"ws://127.0.0.1:{free_port()}/", "--seconds", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "is `avatar-bridge run` running?" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
