"""Network side of the add-on, on the standard library only (Blender's Python has no `websockets`).

Two receivers, one result: a :class:`PoseFrame` in the stream's canonical frame (right-handed, Y up,
avatar faces +Z, left arm +X; rotations parent-local of the normalized rig, identity = T-pose).
- :class:`WebSocketReceiver`: a minimal RFC 6455 client for the avatar-bridge JSON stream (protocol v1).
- :class:`VmcReceiver`: VMC over UDP (OSC), converted from Unity's left-handed frame.

Each runs on its own daemon thread and keeps only the newest frame (``latest()``): the Blender side
applies poses at its own pace, and an old pose is worth nothing once a newer one has arrived.
No bpy import here, so this module is also tested from the main Python.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class PoseFrame:
    """One pose of the driving person, already in the canonical frame."""

    seq: int
    capture_time: float
    rotations: dict  # VRM 1.0 bone name -> (x, y, z, w)
    hips_position: tuple | None = None  # metres, canonical frame; None = keep rest
    received_at: float = field(default_factory=time.monotonic)


class LatestSlot:
    """Thread-safe holder of the newest frame plus counters for the UI."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: PoseFrame | None = None
        self.frames_received = 0
        self.status = "idle"
        self.error = ""

    def put(self, frame: PoseFrame) -> None:
        with self._lock:
            self._frame = frame
            self.frames_received += 1

    def take(self) -> PoseFrame | None:
        """The newest frame not taken yet, or None."""
        with self._lock:
            frame, self._frame = self._frame, None
            return frame


def frame_from_message(msg: dict) -> PoseFrame | None:
    """PoseFrame of the driving person of a protocol-v1 ``frame`` message (None if nobody is seen)."""
    people = msg.get("people") or []
    if not people:
        return None
    driver = msg.get("driver")
    person = next((p for p in people if p.get("id") == driver), people[0])
    pose = person.get("pose") or {}
    rotations = {name: tuple(float(v) for v in t["rotation"]) for name, t in pose.items() if "rotation" in t}
    hips = pose.get("hips", {}).get("position")
    return PoseFrame(
        seq=int(msg.get("seq", 0)),
        capture_time=float(msg.get("capture_time", time.monotonic())),
        rotations=rotations,
        hips_position=tuple(float(v) for v in hips) if hips else None,
    )


# --- WebSocket (RFC 6455) ----------------------------------------------------------------------------

class WebSocketError(RuntimeError):
    pass


class WebSocketConnection:
    """A blocking RFC 6455 client connection: text messages in, masked text frames out."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "ws" or not parsed.hostname:
            raise WebSocketError(f"server address {url!r} must look like ws://HOST:PORT/ (wss is not supported)")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")  # ?token=...
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self._send_lock = threading.Lock()
        self._buffer = b""
        self._handshake()

    def _handshake(self) -> None:
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketError(f"{self.host}:{self.port} closed the connection during the handshake")
            self._buffer += chunk
            if len(self._buffer) > 65536:
                raise WebSocketError("handshake response too long: is this an avatar-bridge server?")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise WebSocketError(f"server refused the WebSocket upgrade: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise WebSocketError("bad Sec-WebSocket-Accept in the server's handshake")

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise WebSocketError("connection closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header += struct.pack("!BH", 0x80 | 126, n)
        else:
            header += struct.pack("!BQ", 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self._send_lock:
            self.sock.sendall(bytes(header) + mask + masked)

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def receive_text(self) -> str | None:
        """The next text message; None when the server closed the connection."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read_exact(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            if n > MAX_MESSAGE_BYTES:
                raise WebSocketError(f"message of {n} bytes is larger than the {MAX_MESSAGE_BYTES} limit")
            mask = self._read_exact(4) if b1 & 0x80 else None
            payload = self._read_exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:  # close: answer it, then report the end
                try:
                    self._send_frame(0x8, payload[:2])
                except OSError:
                    pass
                return None
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode in (0x1, 0x2, 0x0):
                parts.append(payload)
                if fin:
                    data = b"".join(parts)
                    return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class WebSocketReceiver:
    """Background thread: connect, read hello + frames into ``slot``, reconnect with backoff."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slot = LatestSlot()
        self.hello: dict | None = None
        self.connects = 0
        self._conn: WebSocketConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avatar-bridge-ws", daemon=True)

    def start(self) -> "WebSocketReceiver":
        self._thread.start()
        return self

    def latest(self) -> PoseFrame | None:
        return self.slot.take()

    def send(self, msg: dict) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.send_text(json.dumps(msg))
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._thread.join(2.0)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            self.slot.status = "connecting"
            try:
                conn = WebSocketConnection(self.url)
                conn.sock.settimeout(None)
                self._conn = conn
                self.connects += 1
                self.slot.status, self.slot.error = "connected", ""
                delay = 0.5
                while not self._stop.is_set():
                    text = conn.receive_text()
                    if text is None:
                        break
                    self._handle(text)
            except (OSError, WebSocketError, ValueError) as exc:
                self.slot.error = str(exc)
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            if self._stop.is_set():
                break
            self.slot.status = f"reconnecting in {delay:.1f} s"
            self._stop.wait(delay)
            delay = min(delay * 2, 8.0)
        self.slot.status = "stopped"

    def _handle(self, text: str) -> None:
        msg = json.loads(text)
        kind = msg.get("type")
        if kind == "hello":
            if msg.get("protocol") != "avatar-bridge" or msg.get("version") != 1:
                raise ValueError(f"server speaks {msg.get('protocol')} v{msg.get('version')}; this add-on needs avatar-bridge v1")
            self.hello = msg
        elif kind == "frame":
            frame = frame_from_message(msg)
            if frame is not None:
                self.slot.put(frame)
        elif kind == "error":
            self.slot.error = f"server: {msg.get('message')}"


# --- VMC over UDP (OSC) ------------------------------------------------------------------------------

def _osc_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    text = data[pos:end].decode("utf-8", errors="replace")
    return text, pos + ((end - pos) // 4 + 1) * 4


def parse_osc(data: bytes) -> list[tuple[str, list]]:
    """Every (address, arguments) in an OSC packet, bundles (also nested) flattened in order."""
    if data.startswith(b"#bundle\0"):
        messages = []
        pos = 16  # "#bundle\0" + 8-byte time tag
        while pos + 4 <= len(data):
            size = struct.unpack(">i", data[pos:pos + 4])[0]
            pos += 4
            if size < 0 or pos + size > len(data):
                raise ValueError("OSC bundle element runs past the end of the packet")
            messages += parse_osc(data[pos:pos + size])
            pos += size
        return messages
    address, pos = _osc_string(data, 0)
    if not address.startswith("/"):
        raise ValueError(f"not an OSC message (address {address!r})")
    if pos >= len(data):
        return [(address, [])]
    tags, pos = _osc_string(data, pos)
    args: list = []
    for tag in tags[1:]:
        if tag == "f":
            args.append(struct.unpack(">f", data[pos:pos + 4])[0])
            pos += 4
        elif tag == "i":
            args.append(struct.unpack(">i", data[pos:pos + 4])[0])
            pos += 4
        elif tag == "d":
            args.append(struct.unpack(">d", data[pos:pos + 8])[0])
            pos += 8
        elif tag == "h":
            args.append(struct.unpack(">q", data[pos:pos + 8])[0])
            pos += 8
        elif tag == "s":
            text, pos = _osc_string(data, pos)
            args.append(text)
        elif tag == "b":
            n = struct.unpack(">i", data[pos:pos + 4])[0]
            args.append(data[pos + 4:pos + 4 + n])
            pos += 4 + ((n + 3) // 4) * 4
        elif tag in "TF":
            args.append(tag == "T")
        elif tag == "N":
            args.append(None)
        else:
            raise ValueError(f"unsupported OSC type tag {tag!r} in {address}")
    return [(address, args)]


_UNITY_THUMB = {"Proximal": "Metacarpal", "Intermediate": "Proximal", "Distal": "Distal"}


def vrm_name(unity_bone: str) -> str:
    """VRM 1.0 name of a Unity ``HumanBodyBones`` name (thumb segments are renamed, see VRM spec)."""
    for side in ("Left", "Right"):
        if unity_bone.startswith(side + "Thumb"):
            return side.lower() + "Thumb" + _UNITY_THUMB.get(unity_bone[len(side) + 5:], unity_bone[len(side) + 5:])
    return unity_bone[:1].lower() + unity_bone[1:]


class VmcAssembler:
    """Collects /VMC/Ext/Bone/Pos messages and emits one PoseFrame per /VMC/Ext/T (the frame marker).

    Unity is left-handed (X mirrored against the canonical frame), so q -> (x, -y, -z, w), p -> (-x, y, z).
    """

    def __init__(self) -> None:
        self._rotations: dict = {}
        self._hips: tuple | None = None
        self._seq = 0

    def feed(self, address: str, args: list) -> PoseFrame | None:
        if address == "/VMC/Ext/Bone/Pos" and len(args) >= 8 and isinstance(args[0], str):
            x, y, z, qx, qy, qz, qw = (float(v) for v in args[1:8])
            name = vrm_name(args[0])
            self._rotations[name] = (qx, -qy, -qz, qw)
            if name == "hips":
                self._hips = (-x, y, z)
        elif address == "/VMC/Ext/T" and self._rotations:
            self._seq += 1
            frame = PoseFrame(self._seq, time.monotonic(), self._rotations, self._hips)
            self._rotations, self._hips = {}, None
            return frame
        return None


class VmcReceiver:
    """Background thread: VMC/OSC datagrams on a UDP port into ``slot``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 39539) -> None:
        self.slot = LatestSlot()
        self.hello = None
        self.connects = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(f"cannot listen for VMC on {host}:{port} ({exc}); is another receiver using the port?") from exc
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.assembler = VmcAssembler()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avatar-bridge-vmc", daemon=True)

    def start(self) -> "VmcReceiver":
        self.slot.status = f"listening on UDP {self.port}"
        self._thread.start()
        return self

    def latest(self) -> PoseFrame | None:
        return self.slot.take()

    def send(self, msg: dict) -> bool:
        return False  # VMC is one-way

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                for address, args in parse_osc(data):
                    frame = self.assembler.feed(address, args)
                    if frame is not None:
                        self.slot.put(frame)
            except (ValueError, struct.error, IndexError) as exc:
                self.slot.error = f"bad OSC packet: {exc}"
