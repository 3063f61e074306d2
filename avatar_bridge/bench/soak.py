"""``avatar-bridge bench-soak``: the whole live service under load for minutes, on loopback only.

What runs is what ``avatar-bridge run`` runs (the same :class:`Pipeline` and outputs): the synthetic
performer at 30 fps, the output clock at ``--rate`` (60 Hz) feeding two VMC targets (real UDP
receivers), the WebSocket server with ``--clients`` clients of which ``--stuck`` never read (raw
TCP connections with a tiny receive buffer), and a recording. What it reports:

- memory: the process RSS sampled every ``--sample-every`` seconds, and its growth from the first
  sample after warm-up to the last (the clients' own buffers are in the same process; their
  measurements are preallocated so they do not grow);
- latency: capture -> send (from the frames three probe clients received) and send -> receive,
  median/p95 in the first and the last third of the run, plus the output clock's p95 at each sample;
- frame rate: frames/s received by each healthy client, the VMC receivers' frames/s, and how many
  frames the stuck clients were skipped (newest-frame-only queues: they never slow the others);
- the recording: complete, frames against the expected count, the largest gap between frames.

Why these: a streamer runs the service for hours; a slow leak, a queue that grows behind a stuck
viewer or latency that creeps up show in minutes of this as trends between the first and last third.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import timing_summary

MAX_DURATION_S = 600.0
WARMUP_S = 3.0  # RSS growth is measured from the first sample after this (imports, first allocations)
_HEAD = re.compile(rb'"seq":(\d+),"capture_time":([-0-9.e]+),"send_time":([-0-9.e]+)')


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class _UdpCounter:
    """A real VMC receiver: counts datagrams and frames (one /VMC/Ext/T per frame) on a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.datagrams = 0
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-vmc-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.datagrams += 1
            if b"/VMC/Ext/T\x00" in data:
                self.frames += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class _ClientStats:
    """One healthy client's counters; probes also keep (receive time, capture->send, send->receive)."""

    def __init__(self, capacity: int, probe: bool) -> None:
        self.frames = 0
        self.seq_gaps = 0  # frames skipped between two received ones (server-side newest-only)
        self.last_seq = None
        self.first_time = None
        self.last_time = None
        self.samples = np.full((capacity, 3), np.nan) if probe else None  # touched now: no growth later
        self.n = 0

    def add(self, now: float, seq: int, capture_time: float, send_time: float) -> None:
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.seq_gaps += seq - self.last_seq - 1
        self.last_seq = seq
        self.frames += 1
        self.first_time = now if self.first_time is None else self.first_time
        self.last_time = now
        if self.samples is not None and self.n < len(self.samples):
            self.samples[self.n] = (now, (send_time - capture_time) * 1000.0, (now - send_time) * 1000.0)
            self.n += 1


async def _client(url: str, stats: _ClientStats, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=30, max_size=None, compression=None) as ws:
        await ws.recv()  # hello
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(ws.recv(decode=False), timeout=0.5)
            except asyncio.TimeoutError:
                continue
            head = _HEAD.search(data[:200])
            if head is not None:
                stats.add(time.monotonic(), int(head[1]), float(head[2]), float(head[3]))


class _Clients:
    """The healthy WebSocket clients, all on one asyncio loop thread (cheap: no thread per client)."""

    def __init__(self, url: str, count: int, capacity: int, probes: int = 3) -> None:
        self.stats = [_ClientStats(capacity, probe=i < probes) for i in range(count)]
        self._url = url
        self._ready = threading.Event()
        self._loop = None
        self._stop = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="soak-clients", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await asyncio.gather(*(_client(self._url, s, self._stop) for s in self.stats))

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported in the result, not swallowed
            self.error = exc
            self._ready.set()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        self._thread.join(10)


def _stuck_client(port: int) -> socket.socket:
    """A WebSocket connection that completes the handshake and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise RuntimeError("soak: the server closed a stuck client's handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"soak: WebSocket handshake refused: {head.splitlines()[0]!r}")
    return sock


@dataclass
class SoakReport:
    duration_s: float
    rate_hz: float
    clients: int
    stuck_clients: int
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    rss_growth_mb: float = 0.0  # last sample - first sample after warm-up
    rss_growth_mb_per_min: float = 0.0
    clock_p95_samples: list[tuple[float, float | None]] = field(default_factory=list)  # output clock capture->send p95
    latency_first_third: dict = field(default_factory=dict)  # capture->send as received by the probe clients
    latency_last_third: dict = field(default_factory=dict)
    delivery_first_third: dict = field(default_factory=dict)  # send->receive
    delivery_last_third: dict = field(default_factory=dict)
    client_fps: list[float] = field(default_factory=list)  # frames/s received per healthy client
    client_seq_gaps: list[int] = field(default_factory=list)
    stuck_dropped: list[int] = field(default_factory=list)  # frames replaced before a stuck client took them
    vmc_fps: list[float] = field(default_factory=list)
    clock: dict = field(default_factory=dict)
    capture_frames: int = 0
    recording_frames: int = 0
    recording_expected: int = 0
    recording_complete: bool = False
    recording_max_gap_s: float = 0.0
    recording_bytes: int = 0
    errors: list[str] = field(default_factory=list)


def run_soak(duration: float = 60.0, clients: int = 20, stuck: int = 2, rate: float = 60.0,
             sample_every: float = 5.0, record_path: str | Path | None = None, progress=None) -> SoakReport:
    """Run the service under load for ``duration`` seconds and measure it; see the module docstring."""
    if not (1.0 <= duration <= MAX_DURATION_S):
        raise ValueError(f"--duration {duration:g} is out of range: use 1 to {MAX_DURATION_S:g} seconds")
    if not (0 <= stuck <= clients) or clients < 1 or clients > 1000:
        raise ValueError(f"--clients {clients} / --stuck {stuck}: need 1 <= clients <= 1000 and 0 <= stuck <= clients")
    if not (1.0 <= rate <= 240.0):
        raise ValueError(f"--rate {rate:g} is out of range: use 1 to 240 Hz")
    if not (0.5 <= sample_every <= duration):
        raise ValueError(f"--sample-every {sample_every:g} must be between 0.5 s and the duration")
    from ..config import AppConfig
    from ..outputs import Outputs
    from ..pipeline import Pipeline
    from ..record import read_recording
    from ..synthetic import SyntheticSource

    report = SoakReport(duration, rate, clients, stuck)
    with tempfile.TemporaryDirectory(prefix="avatar-bridge-soak-") as tmp:
        take = Path(record_path) if record_path else Path(tmp) / "soak.abrec"
        receivers = [_UdpCounter(), _UdpCounter()]
        config = AppConfig()
        config.vmc.targets = [f"127.0.0.1:{r.port}" for r in receivers]
        config.vmc.rate = rate
        config.websocket.host = "127.0.0.1"
        config.websocket.port = 0
        config.websocket.rate = rate
        config.websocket.max_clients = clients + 4
        config.record.path = str(take)
        pipeline = Pipeline(config)
        pipeline.prepare(images=False)
        outputs = Outputs(config, pipeline)
        healthy = stuck_socks = source = None
        capacity = int(duration * rate * 1.2) + 100
        try:
            outputs.open_network()
            port = outputs.server.port
            stuck_socks = [_stuck_client(port) for _ in range(stuck)]
            stuck_ports = {sock.getsockname()[1] for sock in stuck_socks}
            healthy = _Clients(f"ws://127.0.0.1:{port}/", clients - stuck, capacity)
            deadline = time.monotonic() + 30
            while outputs.server.client_count < clients and time.monotonic() < deadline:
                time.sleep(0.05)
            if outputs.server.client_count < clients:
                raise RuntimeError(f"soak: only {outputs.server.client_count} of {clients} clients connected")
            source = SyntheticSource(realtime=True)
            outputs.open_files(source)
            started = time.monotonic()
            next_sample = started
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    elapsed = now - started
                    report.rss_samples.append((round(elapsed, 2), round(rss_mb(), 2)))
                    p95 = outputs.clock.stats().latency_ms_p95
                    report.clock_p95_samples.append((round(elapsed, 2), None if p95 is None else round(p95, 2)))
                    if progress is not None:
                        progress(elapsed, report.rss_samples[-1][1], p95)
                    next_sample += sample_every
                if now - started >= duration:
                    break
                pipeline.process(source.read())
                outputs.fresh()
                report.capture_frames += 1
            ended = time.monotonic()
            report.clock = asdict(outputs.clock.stats())
            server_stats = outputs.server.client_stats()
        finally:
            if healthy is not None:
                healthy.close()
            outputs.close()
            if source is not None:
                source.close()
            for sock in stuck_socks or []:
                sock.close()
            for r in receivers:
                r.close()
        if healthy.error is not None:
            report.errors.append(f"clients: {healthy.error!r}")
        report.stuck_dropped = [s.dropped for s in server_stats if int(s.address.rsplit(":", 1)[1]) in stuck_ports]
        span = ended - started
        report.client_fps = [round(s.frames / span, 2) for s in healthy.stats]
        report.client_seq_gaps = [s.seq_gaps for s in healthy.stats]
        report.vmc_fps = [round(r.frames / span, 2) for r in receivers]
        samples = np.concatenate([s.samples[: s.n] for s in healthy.stats if s.samples is not None])
        if samples.size:
            first = samples[:, 0] < started + span / 3
            last = samples[:, 0] >= started + 2 * span / 3
            report.latency_first_third = timing_summary(samples[first, 1], digits=2)
            report.latency_last_third = timing_summary(samples[last, 1], digits=2)
            report.delivery_first_third = timing_summary(samples[first, 2], digits=2)
            report.delivery_last_third = timing_summary(samples[last, 2], digits=2)
        after_warmup = [(t, mb) for t, mb in report.rss_samples if t >= min(WARMUP_S, duration / 3)]
        if len(after_warmup) >= 2:
            (t0, m0), (t1, m1) = after_warmup[0], after_warmup[-1]
            report.rss_growth_mb = round(m1 - m0, 2)
            report.rss_growth_mb_per_min = round((m1 - m0) / max(t1 - t0, 1e-9) * 60.0, 2)
        recording = read_recording(take)
        report.recording_bytes = take.stat().st_size
        report.recording_frames = len(recording)
        report.recording_expected = int(round(span * source.fps))
        report.recording_complete = bool(recording.complete and recording.damage is None)
        stamps = recording.frame_table["timestamp"]
        report.recording_max_gap_s = round(float(np.max(np.diff(stamps))), 4) if len(stamps) > 1 else 0.0
    return report


def format_report(r: SoakReport) -> str:
    fps = np.asarray(r.client_fps) if r.client_fps else np.zeros(1)
    lines = [
        f"soak {r.duration_s:g} s: synthetic 30 fps -> outputs at {r.rate_hz:g} Hz, {r.clients} WebSocket clients "
        f"({r.stuck_clients} never read), 2 VMC receivers, recording on (loopback)",
        f"memory  RSS {r.rss_samples[0][1]:.1f} -> {r.rss_samples[-1][1]:.1f} MiB; growth after warm-up "
        f"{r.rss_growth_mb:+.1f} MiB ({r.rss_growth_mb_per_min:+.2f} MiB/min)",
        f"latency capture->send median/p95: first third {r.latency_first_third.get('median_ms')}/{r.latency_first_third.get('p95_ms')} ms, "
        f"last third {r.latency_last_third.get('median_ms')}/{r.latency_last_third.get('p95_ms')} ms",
        f"delivery send->receive median/p95: first third {r.delivery_first_third.get('median_ms')}/{r.delivery_first_third.get('p95_ms')} ms, "
        f"last third {r.delivery_last_third.get('median_ms')}/{r.delivery_last_third.get('p95_ms')} ms",
        f"clients {len(r.client_fps)} healthy: {fps.min():.1f} / {np.median(fps):.1f} / {fps.max():.1f} frames/s (min/median/max); "
        f"stuck clients skipped {r.stuck_dropped} frames",
        f"vmc     {r.vmc_fps} frames/s per receiver; clock ticks late {r.clock.get('late_ticks')}, sink errors {r.clock.get('sink_errors')}",
        f"record  {r.recording_frames} frames of {r.recording_expected} expected, complete={r.recording_complete}, "
        f"largest gap {r.recording_max_gap_s * 1000:.0f} ms, {r.recording_bytes / 1e6:.2f} MB",
    ]
    if r.errors:
        lines.append("errors  " + "; ".join(r.errors))
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help=f"seconds to run (1 to {MAX_DURATION_S:g}; default 60)")
    parser.add_argument("--clients", type=int, default=20, help="WebSocket clients in total (default 20)")
    parser.add_argument("--stuck", type=int, default=2, help="of which never read (default 2)")
    parser.add_argument("--rate", type=float, default=60.0, help="output rate in Hz (default 60)")
    parser.add_argument("--sample-every", type=float, default=5.0, metavar="S", help="RSS / latency sample period (default 5 s)")
    parser.add_argument("--record", metavar="FILE.abrec", help="keep the soak's recording here (default: a temporary file)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the full report as JSON")


def run_command(args: argparse.Namespace) -> int:
    for name in ("websockets", "avatar_bridge.server"):  # 20 connects/disconnects are not news here
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.record and Path(args.record).exists():
        raise FileExistsError(f"--record {args.record} already exists: choose another file name")

    def progress(elapsed: float, mb: float, p95: float | None) -> None:
        p95_text = "-" if p95 is None else f"{p95:.0f} ms"
        print(f"\r{elapsed:6.0f} s  RSS {mb:7.1f} MiB  clock p95 {p95_text}   ", end="", file=sys.stderr, flush=True)

    report = run_soak(args.duration, args.clients, args.stuck, args.rate, args.sample_every, args.record, progress)
    print(file=sys.stderr)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    return 0 if not report.errors else 1
