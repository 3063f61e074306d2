"""Client benchmark: what the web viewer and the Blender add-on keep up with.

    .venv/bin/python benchmarks/bench_clients.py [--source pipeline|harness] [--seconds 10] [--no-blender]

Web viewer (headless Chromium, SwiftShader software WebGL): frames received and applied per second,
render loop rate, the server-reported latency (capture -> send) and the page's ping round trip.
Blender add-on (bpy 4.5, VRM add-on armature, recording on): milliseconds per timer call that
applies a frame. ``--source pipeline`` streams from ``avatar-bridge run --source synthetic``;
``harness`` from the WebSocketServer publishing a fixed motion at 60 Hz. Prints medians and p95s;
numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from client_harness import PublishingServer, RunningPipeline  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_web(port: int, seconds: float) -> None:
    from playwright.sync_api import sync_playwright
    from test_web_client import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.avatarBridge && avatarBridge.framesApplied > 10", timeout=60000)
        time.sleep(1.0)
        counters = "[avatarBridge.framesReceived, avatarBridge.framesApplied, avatarBridge.renders]"
        start = page.evaluate(counters)
        t0 = time.monotonic()
        latency, rtt = [], []
        while time.monotonic() - t0 < seconds:
            frame_latency, page_rtt = page.evaluate("[avatarBridge.lastFrame.latency_ms, avatarBridge.rttMs]")
            latency.append(frame_latency)
            if page_rtt is not None:
                rtt.append(page_rtt)
            time.sleep(0.1)
        end = page.evaluate(counters)
        elapsed = time.monotonic() - t0
        browser.close()
    received, applied, renders = ((b - a) / elapsed for a, b in zip(start, end))
    print(f"web viewer over {elapsed:.1f} s: received {received:.1f} frames/s, applied {applied:.1f}/s, "
          f"rendered {renders:.1f}/s")
    print(f"  server latency (capture->send) median {statistics.median(latency):.1f} ms, p95 {pct(latency, 0.95):.1f} ms")
    if rtt:
        print(f"  page ping round trip median {statistics.median(rtt):.1f} ms, p95 {pct(rtt, 0.95):.1f} ms "
              f"({len(set(rtt))} pings)")


def bench_blender(port: int, frames: int) -> None:
    import subprocess

    from test_blender_addon import BLENDER_PY, SCRIPT

    sys.path.insert(0, str(ROOT / "clients" / "blender"))
    from build_zip import build

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {"url": f"ws://127.0.0.1:{port}/", "frames": frames, "timeout": 120,
                  "zip": str(build(tmp / "dist")), "out": str(tmp / "result.json")}
        (tmp / "config.json").write_text(json.dumps(config))
        env = {"BLENDER_USER_RESOURCES": str(tmp / "user"), "BLENDER_USER_SCRIPTS": str(tmp / "user" / "scripts"),
               "PATH": "/usr/bin:/bin"}
        subprocess.run([str(BLENDER_PY), str(SCRIPT), str(tmp / "config.json")], capture_output=True,
                       timeout=300, env=env, cwd=tmp)
        result = json.loads((tmp / "result.json").read_text())
    if not result.get("ok"):
        print("blender run failed:", result.get("error", "")[-1500:])
        return
    ms = result["apply_ms"]
    print(f"blender add-on: {len(ms)} frames applied to a {len(result['map'])}-bone VRM armature with recording on: "
          f"median {statistics.median(ms):.2f} ms, p95 {pct(ms, 0.95):.2f} ms per timer call")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("pipeline", "harness"), default="pipeline")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--blender-frames", type=int, default=300)
    parser.add_argument("--no-blender", action="store_true")
    args = parser.parse_args()
    source = RunningPipeline() if args.source == "pipeline" else PublishingServer(rate=60.0)
    with source as server:
        print(f"source: {args.source} on port {server.port}")
        bench_web(server.port, args.seconds)
        if not args.no_blender:
            bench_blender(server.port, args.blender_frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
