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

from avatar_bridge import quat, skeleton
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
    """``"host:port"`` / ``"[::1]:port"`` / ``"host"`` (port 39539) / ``"port"`` (a receiver on this
    machine, 127.0.0.1: a bare number is never meant as a host, which the resolver would read as an
    IPv4 address, 39540 -> 0.0.154.116) -> (host, port). ValueError (one line) otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"VMC target {text!r} is empty: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    text = text.strip()
    if text.isdigit():
        if not 1 <= int(text) <= 65535:
            raise ValueError(f"VMC target {text!r} has port {text!r}: use a number from 1 to 65535")
        return "127.0.0.1", int(text)
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


class _Address:
    """One resolved address of a target: a connected non-blocking UDP socket (so ICMP errors are
    reported) and its state."""

    def __init__(self, family: int, kind: int, proto: int, address: tuple):
        self.address = address
        self.text = f"[{address[0]}]:{address[1]}" if family == socket.AF_INET6 else f"{address[0]}:{address[1]}"
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)
        try:
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        self.failing = False
        self.last_error_time = -float("inf")
        self.working_since: float | None = None


class _Target:
    """One receiver (``HOST:PORT``): every address the host name resolves to (``socket.getaddrinfo``:
    ``localhost`` may give ``::1`` before ``127.0.0.1``) is tried, since a receiver may listen on only
    one of them. Frames go to all of them until one has worked for ``RECOVERED_AFTER_S``; then only to
    that one (a dual-stack receiver must not get every frame twice), until it fails."""

    def __init__(self, spec: str, resolve: Callable = socket.getaddrinfo):
        self.label = spec
        host, port = parse_target(spec)
        try:
            infos = resolve(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ValueError(f"VMC target {spec!r}: cannot resolve host {host!r} ({exc.strerror}); check the name or use an IP address") from None
        self.addresses: list[_Address] = []
        problems = []
        for family, kind, proto, _, address in infos:
            if any(a.address == address for a in self.addresses):
                continue
            try:
                self.addresses.append(_Address(family, kind, proto, address))
            except OSError as exc:
                problems.append(f"{address[0]}:{address[1]} ({exc.strerror})")
        if not self.addresses:
            raise ValueError(f"VMC target {spec!r}: cannot send to {', '.join(problems) or host}")
        self.address = self.addresses[0].address
        self.preferred: _Address | None = None
        self.datagrams = 0
        self.bytes = 0
        self.errors = 0
        self.failing = False  # every address fails

    def send(self, datagrams: list[bytes], now: float) -> None:
        targets = [self.preferred] if self.preferred is not None else self.addresses
        delivered = False
        for entry in targets:
            if self._send_to(entry, datagrams, now):
                delivered = True
        if self.preferred is not None and self.preferred.failing:
            self.preferred = None  # it stopped working: try every address again
        elif self.preferred is None:
            for entry in self.addresses:
                if not entry.failing and entry.working_since is not None and now - entry.working_since >= RECOVERED_AFTER_S:
                    self.preferred = entry
                    for other in self.addresses:
                        if other is not entry:
                            other.working_since = None  # not sent to now: it must prove itself again
                    break
        if delivered:
            self.datagrams += len(datagrams)
            self.bytes += sum(len(d) for d in datagrams)
        all_failing = all(a.failing for a in self.addresses)
        if all_failing and not self.failing:
            self.failing = True
        elif self.failing and not all_failing:
            self.failing = False
            log.info("VMC target %s: sending works again", self.label)

    def _send_to(self, entry: _Address, datagrams: list[bytes], now: float) -> bool:
        for datagram in datagrams:
            try:
                entry.sock.send(datagram)
            except BlockingIOError:
                self.errors += 1  # socket buffer full: drop the rest of this frame, the next one replaces it
                return False
            except OSError as exc:
                self.errors += 1
                entry.last_error_time = now
                entry.working_since = None
                if not entry.failing:
                    entry.failing = True
                    reason = exc.strerror or str(exc)
                    if exc.errno == errno.ECONNREFUSED:
                        reason += " (nothing listens on that address and port)"
                    others = [a.text for a in self.addresses if a is not entry and not a.failing]
                    also = f"; also sending to {', '.join(others)}" if others else "; still sending, not logged again until it works"
                    log.warning("VMC target %s: address %s failed: %s%s", self.label, entry.text, reason, also)
                return False
        if entry.failing and now - entry.last_error_time >= RECOVERED_AFTER_S:
            entry.failing = False
        if entry.working_since is None:
            entry.working_since = now
        return not entry.failing

    def close(self) -> None:
        for entry in self.addresses:
            entry.sock.close()


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

    def __init__(self, config: VmcConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 resolve: Callable = socket.getaddrinfo):
        """``resolve``: the name lookup of the targets (``socket.getaddrinfo``'s signature)."""
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
        self._model = None
        self._hips_scale, self._hips_rest = self._fit_hips()
        rest = skeleton.REST_OFFSETS[self._bone_index] * self._hips_scale  # a uniformly scaled skeleton
        if self._model is not None:
            # The receiver's own bone offsets, so receivers that apply positions keep its proportions.
            for row, name in enumerate(self.bones):
                up = self._model.parents.get(name)
                if up is not None:
                    rest[row] = self._model.rest_positions[name] - self._model.rest_positions[up]
        rest = skeleton.to_unity_position(rest)
        if self.config.positions == "hips_only":
            rest = np.zeros_like(rest)
        self._rest_unity = rest
        self._targets: list[_Target] = []
        try:
            for spec in self.config.targets:
                self._targets.append(_Target(str(spec), resolve=resolve))
        except Exception:
            self.close()
            raise
        self.frames = 0

    def _fit_hips(self) -> tuple[float, np.ndarray]:
        """(scale, subtracted rest position) of the hips position for ``vmc.hips``."""
        c = self.config
        if c.hips not in ("absolute", "scaled", "offset"):
            raise ValueError(f"vmc.hips = {c.hips!r}: choose absolute, scaled or offset")
        ours = float(skeleton.REST_OFFSETS[skeleton.BONE_INDEX["hips"]][1])
        height = float(c.hip_height or 0.0)
        if c.avatar:
            from .vrm import read_vrm_humanoid

            self._model = model = read_vrm_humanoid(c.avatar)
            height = height or model.hip_height
            log.info("VMC: receiver avatar %s: hips %.3f m above the floor%s", c.avatar, height,
                     "" if "upperChest" in model.bones else ", no upperChest bone")
            if "upperChest" not in model.bones and not c.fold_upper_chest:
                log.warning("VMC: %s has no upperChest bone: set vmc.fold_upper_chest = true or its arms turn "
                            "by the upper chest's bend less", c.avatar)
        if c.hips == "absolute":
            return 1.0, np.zeros(3)
        if not height:
            height = ours
            if c.hips == "scaled":
                log.info("VMC: hips sent for a %.2f m hip height (ours); set vmc.avatar = the receiver's .vrm or "
                         "vmc.hip_height so a shorter or taller avatar keeps its feet on the floor", ours)
        rest = skeleton.REST_OFFSETS[skeleton.BONE_INDEX["hips"]] if c.hips == "offset" else np.zeros(3)
        return height / ours, np.asarray(rest, dtype=np.float64)

    def hips_position(self, hips: np.ndarray) -> np.ndarray:
        """The hips position to send (canonical frame, metres) for our rig's ``hips`` (3,), per
        ``vmc.hips``: absolute = as is; scaled = x hip_height / 0.95; offset = (hips - rest) x that."""
        return (np.asarray(hips, dtype=np.float64) - self._hips_rest) * self._hips_scale

    @staticmethod
    def fold_upper_chest(rotations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """chest := chest x upperChest and upperChest := identity (local rotations, x y z w).

        The world rotation of everything above the upper chest is unchanged, so a receiver whose model
        has no upperChest bone (it drops that message; VMC receivers do not fold a missing bone into
        its children the way the VRM pose-compatibility guide says) still turns neck, head and arms
        right. A model that has the bone bends at the chest only.
        """
        upper = rotations.get("upperChest")
        if upper is None:
            return rotations
        out = dict(rotations)
        chest = np.asarray(rotations.get("chest", quat.IDENTITY), dtype=np.float64)
        out["chest"] = quat.normalize(quat.mul(chest, np.asarray(upper, dtype=np.float64)))
        out["upperChest"] = np.array(quat.IDENTITY, dtype=np.float64)
        return out

    # --- building ----------------------------------------------------------------------------------

    def messages(self, rig: RigPose | None, tracking: bool, t: float) -> list[bytes]:
        """Encoded OSC messages for one frame, in send order (Root, bones, OK, T)."""
        out: list[bytes] = []
        if rig is not None:
            rotations = rig.rotations
            if self.config.fold_upper_chest:
                rotations = self.fold_upper_chest(rotations)
            hips_position = self.hips_position(np.asarray(rig.hips_position, dtype=np.float64).reshape(3))
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
