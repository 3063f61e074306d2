"""VMC protocol performer: sends the driving person's rig as OSC over UDP (python-osc encoding).

Receivers (VSeeFace, VNyan, Warudo, VMagicMirror, EVMC4U in Unity, VMC4UE, VMC4B) expect, per frame:

- ``/VMC/Ext/Root/Pos "root" px py pz qx qy qz qw`` (8 args; 14 with scale 1,1,1 and offset 0,0,0)
- ``/VMC/Ext/Bone/Pos <HumanBodyBones name> px py pz qx qy qz qw`` for every humanoid bone: the LOCAL
  position and rotation in Unity's left-handed frame. Positions are the rest-pose local offsets
  (never zeros, which collapse the skeleton in receivers that apply positions); the hips carry the
  hips position. Rotations are our normalized (identity = T-pose) local rotations, i.e. VRM0 semantics.
- ``/VMC/Ext/OK 1 3 0 <tracking 1|0>`` (4 ints: loaded, calibrated, normal mode, tracking state)
- ``/VMC/Ext/T <seconds since the sender started>`` (float32-safe; exactly one per frame, last)

Messages are packed into bundles of at most ``max_bundle_bytes`` (default 1400) so no datagram is
fragmented. Floats are always Python ``float`` sent as OSC ``f``, ints Python ``int`` as ``i``.

Usage::

    sender = VmcSender(config.vmc)          # targets "host:port", default 127.0.0.1:39539
    sender.send(output_frame)               # an OutputClock sink
    sender.send_rig(rig_pose)               # or directly with a RigPose
    sender.close()

A target that cannot be reached (ICMP port unreachable, no route) is logged once as a warning and then
retried silently every frame; it is logged again when it has worked for a few seconds.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from avatar_bridge import skeleton
from avatar_bridge.config import VmcConfig
from avatar_bridge.types import OutputFrame, RigPose

log = logging.getLogger(__name__)

DEFAULT_PORT = 39539
BUNDLE_HEADER_BYTES = 16  # "#bundle\0" + 8-byte timetag
RECOVERED_AFTER_S = 3.0  # quiet time before a failing target is reported as working again

BONE_MASKS: dict[str, tuple[str, ...]] = {
    "all": skeleton.BONE_NAMES,
    "upper_body": skeleton.UPPER_BODY_BONES,
    "no_legs": tuple(b for b in skeleton.BONE_NAMES if b not in skeleton.LEG_BONES),
    "no_hips": tuple(b for b in skeleton.BONE_NAMES if b != "hips"),
}


def parse_target(text: str) -> tuple[str, int]:
    """``"host:port"`` / ``"[::1]:port"`` / ``"host"`` (port 39539) -> (host, port)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"VMC target {text!r} is empty: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"VMC target {text!r} is not [IPv6]:PORT, e.g. [::1]:{DEFAULT_PORT}")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") == 0:
        host, port_text = text, ""
    else:
        raise ValueError(f"VMC target {text!r}: write IPv6 addresses in brackets, e.g. [::1]:{DEFAULT_PORT}")
    if not host:
        raise ValueError(f"VMC target {text!r} has no host: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not (1 <= int(port_text) <= 65535):
        raise ValueError(f"VMC target {text!r} has port {port_text!r}: use a number from 1 to 65535")
    return host, int(port_text)


class _Target:
    """One receiver: a connected non-blocking UDP socket (so ICMP errors are reported) and its state."""

    def __init__(self, spec: str):
        self.label = spec
        host, port = parse_target(spec)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ValueError(f"VMC target {spec!r}: cannot resolve host {host!r} ({exc.strerror}); check the name or use an IP address") from None
        family, kind, proto, _, address = infos[0]
        self.address = address
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)
        try:
            self.sock.connect(address)
        except OSError as exc:
            self.sock.close()
            raise ValueError(f"VMC target {spec!r}: cannot send to {address[0]}:{address[1]} ({exc.strerror})") from None
        self.datagrams = 0
        self.bytes = 0
        self.errors = 0
        self.failing = False
        self.last_error_time = -float("inf")

    def send(self, datagrams: list[bytes], now: float) -> None:
        for datagram in datagrams:
            try:
                self.sock.send(datagram)
            except BlockingIOError:
                self.errors += 1  # socket buffer full: drop the rest of this frame, the next one replaces it
                return
            except OSError as exc:
                self.errors += 1
                self.last_error_time = now
                if not self.failing:
                    self.failing = True
                    reason = exc.strerror or str(exc)
                    if exc.errno == errno.ECONNREFUSED:
                        reason += " (nothing listens on that port yet)"
                    log.warning("VMC target %s: %s; still sending, not logged again until it works", self.label, reason)
                return
            self.datagrams += 1
            self.bytes += len(datagram)
        if self.failing and now - self.last_error_time >= RECOVERED_AFTER_S:
            self.failing = False
            log.info("VMC target %s: sending works again", self.label)

    def close(self) -> None:
        self.sock.close()


@dataclass
class VmcStats:
    frames: int
    datagrams: dict[str, int]  # per target label
    bytes: dict[str, int]
    errors: dict[str, int]


def _message(address: str, args: list) -> bytes:
    builder = OscMessageBuilder(address=address)
    for value in args:
        # Explicit types: never let a bool become T/F or a numpy scalar slip through.
        if isinstance(value, str):
            builder.add_arg(value, OscMessageBuilder.ARG_TYPE_STRING)
        elif isinstance(value, int) and not isinstance(value, bool):
            builder.add_arg(value, OscMessageBuilder.ARG_TYPE_INT)
        elif type(value) is float:
            builder.add_arg(value, OscMessageBuilder.ARG_TYPE_FLOAT)
        else:
            raise TypeError(f"VMC argument {value!r} of {address} must be a Python str, int or float")
    return builder.build().dgram


def pack_bundles(messages: list[bytes], max_bytes: int) -> list[bytes]:
    """Greedily pack encoded OSC messages, in order, into bundles of at most ``max_bytes`` each."""
    bundles: list[bytes] = []
    current: list[bytes] = []
    size = BUNDLE_HEADER_BYTES
    for message in messages:
        need = 4 + len(message)
        if BUNDLE_HEADER_BYTES + need > max_bytes:
            raise ValueError(f"an OSC message of {len(message)} bytes cannot fit a {max_bytes}-byte bundle: raise vmc.max_bundle_bytes")
        if current and size + need > max_bytes:
            bundles.append(_bundle(current))
            current, size = [], BUNDLE_HEADER_BYTES
        current.append(message)
        size += need
    if current:
        bundles.append(_bundle(current))
    return bundles


def _bundle(messages: list[bytes]) -> bytes:
    """An OSC bundle with the "immediately" timetag (python-osc's encoders, without re-parsing)."""
    parts = [b"#bundle\x00", osc_types.write_date(IMMEDIATELY)]
    for message in messages:
        parts.append(osc_types.write_int(len(message)))
        parts.append(message)
    return b"".join(parts)


class VmcSender:
    """Sends RigPoses to one or more VMC receivers; see the module docstring for the message layout."""

    def __init__(self, config: VmcConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config if config is not None else VmcConfig()
        if self.config.bones not in BONE_MASKS:
            raise ValueError(f"vmc.bones = {self.config.bones!r}: choose one of {', '.join(BONE_MASKS)}")
        if self.config.positions not in ("rest", "hips_only"):
            raise ValueError(f"vmc.positions = {self.config.positions!r}: choose rest or hips_only")
        if not self.config.targets:
            raise ValueError("vmc.targets is empty: give at least one HOST:PORT (e.g. --vmc 127.0.0.1:39539) or disable VMC with --no-vmc")
        self._clock = clock
        self._start = clock()
        self.bones = BONE_MASKS[self.config.bones]
        self._bone_index = np.array([skeleton.BONE_INDEX[b] for b in self.bones], dtype=np.int64)
        self._unity_names = [skeleton.unity_name(b) for b in self.bones]
        self.send_root = "hips" in self.bones  # masks without the hips leave the placement to the receiver
        rest = skeleton.to_unity_position(skeleton.REST_OFFSETS[self._bone_index])
        if self.config.positions == "hips_only":
            rest = np.zeros_like(rest)
        self._rest_unity = rest
        self._targets: list[_Target] = []
        try:
            for spec in self.config.targets:
                self._targets.append(_Target(str(spec)))
        except Exception:
            self.close()
            raise
        self.frames = 0

    # --- building ----------------------------------------------------------------------------------

    def messages(self, rig: RigPose | None, tracking: bool, t: float) -> list[bytes]:
        """Encoded OSC messages for one frame, in send order (Root, bones, OK, T)."""
        out: list[bytes] = []
        if rig is not None:
            rotations = rig.rotations
            hips_position = np.asarray(rig.hips_position, dtype=np.float64).reshape(3)
            if self.config.mirror:
                rotations = skeleton.mirror_rotations(rotations)
                hips_position = hips_position * np.array([-1.0, 1.0, 1.0])
            local = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (len(self.bones), 1))
            for row, name in enumerate(self.bones):
                q = rotations.get(name)
                if q is not None:
                    q = np.asarray(q, dtype=np.float64)
                    if q.shape == (4,) and np.all(np.isfinite(q)):
                        local[row] = q / max(np.linalg.norm(q), 1e-12)
            positions = self._rest_unity.copy()
            if self.bones[0] == "hips" and np.all(np.isfinite(hips_position)):
                positions[0] = skeleton.to_unity_position(hips_position)
            values = (np.concatenate([positions, skeleton.to_unity_rotation(local)], axis=1) + 0.0).tolist()  # no -0.0
            if self.send_root:
                root = ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
                if self.config.root_scale_offset:
                    root += [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
                out.append(_message("/VMC/Ext/Root/Pos", root))
            for name, row in zip(self._unity_names, values):
                out.append(_message("/VMC/Ext/Bone/Pos", [name, *row]))
        out.append(_message("/VMC/Ext/OK", [1, 3, 0, 1 if (rig is not None and tracking) else 0]))
        out.append(_message("/VMC/Ext/T", [float(t)]))
        return out

    def datagrams(self, rig: RigPose | None, tracking: bool = True, t: float | None = None) -> list[bytes]:
        """The UDP payloads of one frame (bundles of at most ``max_bundle_bytes``)."""
        t = self._clock() - self._start if t is None else t
        return pack_bundles(self.messages(rig, tracking, t), self.config.max_bundle_bytes)

    # --- sending -----------------------------------------------------------------------------------

    def send_rig(self, rig: RigPose | None, tracking: bool | None = None) -> None:
        """Send one frame. ``rig=None`` (nobody tracked) sends only OK with tracking 0 and T, so
        receivers keep the last pose instead of snapping to a T-pose."""
        if tracking is None:
            tracking = rig.tracking if rig is not None else False
        now = self._clock()
        payloads = self.datagrams(rig, tracking, now - self._start)
        for target in self._targets:
            target.send(payloads, now)
        self.frames += 1

    def send(self, frame: OutputFrame) -> None:
        """OutputClock sink: the driving person's rig (VMC carries one avatar)."""
        person = frame.driving_person()
        rig = person.rig if person is not None else None
        tracking = bool(person is not None and person.tracking and rig is not None and rig.tracking)
        self.send_rig(rig, tracking)

    __call__ = send

    def stats(self) -> VmcStats:
        return VmcStats(
            frames=self.frames,
            datagrams={t.label: t.datagrams for t in self._targets},
            bytes={t.label: t.bytes for t in self._targets},
            errors={t.label: t.errors for t in self._targets},
        )

    def close(self) -> None:
        for target in self._targets:
            target.close()
        self._targets = []

    def __enter__(self) -> "VmcSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
