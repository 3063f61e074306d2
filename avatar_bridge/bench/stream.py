"""``avatar-bridge bench-stream``: what the outputs cost and how late they deliver, on loopback.

Measures, with synthetic RigPoses (no camera, no model):
- VMC: time to encode one frame (python-osc), datagrams and bytes per frame, send time to one target;
- WebSocket: publish() cost (JSON) by people per frame, and delivery delay (frame ``send_time`` to a
  client's receive time; same monotonic clock) with N clients at the output rate, optionally with one
  client that never reads;
- OutputClock: tick interval jitter at the output rate.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import numpy as np

from avatar_bridge import quat, skeleton
from avatar_bridge.config import VmcConfig, WebSocketConfig
from avatar_bridge.stream import OutputClock
from avatar_bridge.types import OutputFrame, OutputPerson
from avatar_bridge.metrics import timing_summary
from avatar_bridge.types import Pose2D, RigPose


def synthetic_frame(people: int, seed: int = 0, t: float | None = None) -> OutputFrame:
    rng = np.random.default_rng(seed)
    out = []
    for track_id in range(1, people + 1):
        rotations = {b: quat.normalize(rng.normal(size=4)) for b in skeleton.BODY_BONES}
        rig = RigPose(0.0, track_id, np.array([0.0, 0.95, 0.0]), rotations, {b: 0.9 for b in rotations})
        pose = Pose2D(rng.uniform(0, 1280, (17, 2)).astype(np.float32), np.full(17, 0.8, np.float32), track_id=track_id)
        out.append(OutputPerson(track_id, pose, rig))
    return OutputFrame(time.monotonic() if t is None else t, 1280, 720, out, driver=1)


def bench_vmc(frames: int) -> dict:
    from avatar_bridge.vmc import VmcSender

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rig = synthetic_frame(1).people[0].rig
    encode_ms, send_ms = [], []
    with VmcSender(VmcConfig(targets=[f"127.0.0.1:{receiver.getsockname()[1]}"])) as sender:
        for i in range(frames):
            t0 = time.perf_counter()
            datagrams = sender.datagrams(rig, True, i / 60.0)
            encode_ms.append((time.perf_counter() - t0) * 1000.0)
            t0 = time.perf_counter()
            sender.send_rig(rig)
            send_ms.append((time.perf_counter() - t0) * 1000.0)
    receiver.close()
    return {"encode": timing_summary(encode_ms), "send_rig (encode + 1 target)": timing_summary(send_ms),
            "datagrams_per_frame": len(datagrams), "bytes_per_frame": sum(map(len, datagrams)),
            "largest_datagram": max(map(len, datagrams))}


def bench_publish(people_counts: list[int], frames: int) -> dict:
    from avatar_bridge import protocol

    out = {}
    for people in people_counts:
        frame = synthetic_frame(people)
        times = []
        for seq in range(frames):
            t0 = time.perf_counter()
            text = protocol.encode(protocol.frame_message(frame, seq, time.monotonic()))
            times.append((time.perf_counter() - t0) * 1000.0)
        out[f"{people} people"] = {**timing_summary(times), "bytes": len(text)}
    return out


def bench_delivery(clients: int, stuck: bool, rate: float, seconds: float, people: int) -> dict:
    from websockets.sync.client import connect

    from avatar_bridge.server import WebSocketServer

    delays: list[list[float]] = [[] for _ in range(clients)]
    stop = threading.Event()
    with WebSocketServer(WebSocketConfig(port=0, rate=rate, max_clients=clients + 2)) as server:
        stuck_sock = None
        if stuck:  # a bare TCP handshake, then never read
            stuck_sock = socket.create_connection(("127.0.0.1", server.port))
            stuck_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck_sock.sendall(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )

        def client(index: int) -> None:
            with connect(server.ws_url) as ws:
                ws.recv(timeout=10)  # hello
                while not stop.is_set():
                    try:
                        text = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    now = time.monotonic()
                    delays[index].append((now - json.loads(text)["send_time"]) * 1000.0)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while server.client_count < clients + int(stuck) and time.monotonic() < deadline:
            time.sleep(0.01)
        if stuck:  # fill the stuck client's socket buffers first, so its writer really is blocked
            big = synthetic_frame(24)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and max(c.dropped for c in server.client_stats()) < 3:
                server.publish(big)
                time.sleep(0.002)
            time.sleep(0.3)
            for per_client in delays:
                per_client.clear()
        base = synthetic_frame(people)
        clock = OutputClock(lambda t: OutputFrame(t, base.width, base.height, base.people, 1), [(server.publish, rate)])
        clock.start()
        time.sleep(seconds)
        clock.stop()
        time.sleep(0.3)
        stats = clock.stats()
        dropped = [s.dropped for s in server.client_stats()]
        stop.set()
        for thread in threads:
            thread.join(5)
        if stuck_sock is not None:
            stuck_sock.close()
    published = stats.frames
    received = [len(d) for d in delays]
    return {
        "clients": clients, "stuck_client": stuck, "published": published,
        "received_min": min(received), "received_fraction_min": min(received) / max(published, 1),
        "delay": timing_summary([d for per in delays for d in per]),
        "dropped_per_client": dropped,
        "clock_interval_median_ms": stats.interval_ms_median, "clock_interval_p95_ms": stats.interval_ms_p95,
    }


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--frames", type=int, default=600, help="frames for the encode timings")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each delivery run")
    parser.add_argument("--rate", type=float, default=60.0, help="output rate (Hz)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="client counts to try")
    parser.add_argument("--people", type=int, default=1, help="people per frame in the delivery runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_command(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.seconds <= 0 or args.rate <= 0 or min(args.clients) < 1 or args.people < 1:
        raise ValueError("--frames, --seconds, --rate, --clients and --people must be positive")
    result = {
        "vmc": bench_vmc(args.frames),
        "publish_json": bench_publish([1, 2, 4, 16], args.frames),
        "delivery": [bench_delivery(n, False, args.rate, args.seconds, args.people) for n in args.clients]
        + [bench_delivery(args.clients[0], True, args.rate, args.seconds, args.people)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    v = result["vmc"]
    print(f"VMC frame (55 bones): encode median {v['encode']['median_ms']:.3f} ms p95 {v['encode']['p95_ms']:.3f} ms; "
          f"encode+send median {v['send_rig (encode + 1 target)']['median_ms']:.3f} ms; "
          f"{v['datagrams_per_frame']} datagrams, {v['bytes_per_frame']} bytes, largest {v['largest_datagram']}")
    for name, s in result["publish_json"].items():
        print(f"frame JSON, {name:>10}: median {s['median_ms']:.3f} ms p95 {s['p95_ms']:.3f} ms, {s['bytes']} bytes")
    print(f"{'clients':>7} {'stuck':>5} {'published':>9} {'min recv %':>10} {'delay p50':>9} {'p95':>7} {'max':>7} {'tick p50':>8} {'p95':>6}")
    for d in result["delivery"]:
        s = d["delay"]
        print(f"{d['clients']:>7} {str(d['stuck_client']):>5} {d['published']:>9} {100 * d['received_fraction_min']:>9.1f}% "
              f"{s.get('median_ms', float('nan')):>8.2f}ms {s.get('p95_ms', float('nan')):>5.2f}ms {s.get('max_ms', float('nan')):>5.1f}ms "
              f"{d['clock_interval_median_ms']:>6.2f}ms {d['clock_interval_p95_ms']:>5.2f}ms")
    return 0
