"""The smallest avatar-bridge client: connect, read the stream, print it once a second.

    pip install websockets
    python clients/python/print_stream.py [ws://127.0.0.1:8765/] [--seconds 10] [--token TOKEN]

Prints the frame rate, the server-reported latency, a ping round trip and a few joint angles of the
driving person. Copy it as the start of your own client: everything the stream carries is in
``frame["people"][i]["pose"]`` (VRM bone name -> {"rotation": [x, y, z, w]}, hips also "position"),
in the frame announced by the ``hello`` message (right-handed, Y up, avatar faces +Z, left arm +X).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time

from websockets.asyncio.client import connect

# Joint angles worth watching: the angle of each bone's rotation away from the T-pose.
WATCH = ("leftUpperArm", "leftLowerArm", "rightUpperArm", "rightLowerArm", "leftLowerLeg", "rightLowerLeg", "head")


def angle_deg(rotation: list[float]) -> float:
    """Rotation angle of a unit quaternion [x, y, z, w], in degrees."""
    return math.degrees(2.0 * math.acos(min(1.0, abs(rotation[3]))))


def driving_person(frame: dict) -> dict | None:
    people = frame.get("people", [])
    return next((p for p in people if p["id"] == frame.get("driver")), people[0] if people else None)


async def run(url: str, seconds: float, token: str | None) -> int:
    if token:
        url += ("&" if "?" in url else "?") + f"token={token}"
    async with connect(url) as ws:
        hello = json.loads(await ws.recv())
        if hello.get("type") != "hello" or hello.get("version") != 1:
            print(f"unexpected first message from {url}: {str(hello)[:200]}", file=sys.stderr)
            return 1
        print(f"connected: {len(hello['bones'])} bones, server rate {hello['rate']} Hz, "
              f"up {hello['coordinates']['up']}, forward {hello['coordinates']['forward']}")
        end = time.monotonic() + seconds
        window_start, frames, latencies, rtt_ms = time.monotonic(), 0, [], None
        await ws.send(json.dumps({"type": "ping", "nonce": str(time.monotonic())}))
        while time.monotonic() < end:
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.05, end - time.monotonic())))
            except asyncio.TimeoutError:
                break
            if msg["type"] == "pong":
                rtt_ms = (time.monotonic() - float(msg["nonce"])) * 1000.0
                continue
            if msg["type"] != "frame":
                continue
            frames += 1
            latencies.append(msg["latency_ms"])
            now = time.monotonic()
            if now - window_start >= 1.0:
                person = driving_person(msg)
                line = f"{frames / (now - window_start):5.1f} fps  latency {statistics.median(latencies):5.1f} ms"
                line += f"  rtt {rtt_ms:.1f} ms" if rtt_ms is not None else ""
                line += f"  people {len(msg['people'])}"
                if person is not None:
                    pose = person["pose"]
                    angles = " ".join(f"{b}={angle_deg(pose[b]['rotation']):.0f}" for b in WATCH if b in pose)
                    hips = pose.get("hips", {}).get("position")
                    line += f"  | {angles}" + (f" hips=({hips[0]:.2f}, {hips[1]:.2f}, {hips[2]:.2f})" if hips else "")
                print(line, flush=True)
                window_start, frames, latencies = now, 0, []
                await ws.send(json.dumps({"type": "ping", "nonce": str(time.monotonic())}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/")
    parser.add_argument("--seconds", type=float, default=float("inf"), help="stop after this long")
    parser.add_argument("--token", help="token of a server bound beyond 127.0.0.1")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.url, args.seconds, args.token))
    except OSError as exc:
        print(f"cannot connect to {args.url}: {exc}; is `avatar-bridge run` running?", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
