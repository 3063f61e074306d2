"""WebSocket protocol v1: builds the JSON messages the server sends and validates what clients send.

Pure data in, data out (no sockets, no ``websockets`` import), so clients, recorders and tests can
use it. The full description with examples is ``docs/protocol.md``; keep the two in step.

Server -> client: ``hello`` (once, on connect), ``frame`` (every output tick), ``ack``, ``pong``,
``error``. Client -> server: ``calibrate``, ``select``, ``pause``, ``ping`` (at most 4 KiB each,
strictly validated: unknown types, unknown keys and wrong value types are errors).

Coordinates: the canonical frame of :mod:`avatar_bridge.skeleton` (right-handed, metres, Y up, the
avatar faces +Z, its left arm points to +X), which is exactly three-vrm's normalized-bone frame for a
VRM 1.0 model, so a frame's ``pose`` rotations can be passed to ``vrm.humanoid.setNormalizedPose``
unchanged; the hips ``position`` is absolute, so subtract the rest hips offset (from ``hello``) first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar_bridge import skeleton
from avatar_bridge.keypoints import COCO_KEYPOINTS, SKELETON_EDGES
from avatar_bridge.types import OutputFrame, OutputPerson

PROTOCOL_NAME = "avatar-bridge"
PROTOCOL_VERSION = 1
MAX_CONTROL_BYTES = 4096
MAX_NONCE_CHARS = 128
CONTROL_TYPES: dict[str, tuple[str, ...]] = {  # type -> the keys it may carry besides "type"
    "calibrate": (),
    "select": ("id",),
    "pause": ("paused",),
    "ping": ("nonce",),
}

# Decimal places sent: 1e-6 of a unit quaternion is ~2e-4 degrees; 1e-5 m = 10 micrometres;
# keypoints 1e-5 of the image width is 0.02 px on a 1920 px image.
ROTATION_DECIMALS = 6
POSITION_DECIMALS = 5
KEYPOINT_DECIMALS = 5
SCORE_DECIMALS = 3


class ProtocolError(ValueError):
    """A client message that breaks the protocol; the text is sent back in an ``error`` message."""


@dataclass(frozen=True)
class ControlMessage:
    """A validated client -> server message, handed to the pipeline."""

    type: str  # calibrate | select | pause | ping
    id: int | None = None  # select: track id of the person that should drive the avatar
    paused: bool | None = None  # pause: True = freeze outputs, False = resume
    nonce: str | int | None = None  # ping: echoed in the pong
    client: str = ""  # "host:port" of the sender, for logs


def encode(message: dict) -> str:
    """Compact JSON text; refuses NaN/Infinity (not JSON) instead of sending them."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


# --- server -> client -----------------------------------------------------------------------------


def hello_message(rate: float, server_time: float) -> dict:
    """Sent once per connection: everything a client needs to interpret the frames."""
    bones = [
        {"name": bone.name, "parent": bone.parent, "offset": [float(v) for v in bone.offset]}
        for bone in skeleton.BONES
    ]
    return {
        "type": "hello",
        "protocol": PROTOCOL_NAME,
        "version": PROTOCOL_VERSION,
        "coordinates": dict(skeleton.COORDINATES),
        "bones": bones,
        "keypoints": list(COCO_KEYPOINTS),
        "skeleton_edges": [list(edge) for edge in SKELETON_EDGES],
        "rate": float(rate),
        "server_time": float(server_time),
    }


def _finite_rows(values: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(values), axis=-1)


def keypoints_payload(person: OutputPerson, width: int, height: int) -> list[list[float]]:
    """``[[x/width, y/height, score], ...]``; unmeasured or non-finite points become ``[0, 0, 0]``."""
    pose = person.pose2d
    if pose is None:
        return []
    points = np.asarray(pose.keypoints, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(pose.scores, dtype=np.float64).reshape(-1)
    table = np.zeros((points.shape[0], 3))
    table[:, 0] = np.round(points[:, 0] / float(width), KEYPOINT_DECIMALS)
    table[:, 1] = np.round(points[:, 1] / float(height), KEYPOINT_DECIMALS)
    table[:, 2] = np.round(np.clip(scores, 0.0, 1.0), SCORE_DECIMALS)
    bad = ~_finite_rows(table)
    table[bad] = 0.0
    return table.tolist()


def pose_payload(person: OutputPerson) -> tuple[dict, dict]:
    """three-vrm ``VRMPose`` (hips position + rotation, other bones rotation) and per-bone confidence.

    Bones the rig does not carry are left out (the client keeps them at rest); a non-finite rotation is
    left out too rather than sent as garbage.
    """
    rig = person.rig
    if rig is None:
        return {}, {}
    pose: dict[str, dict[str, list[float]]] = {}
    for name, q in rig.rotations.items():
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            continue
        pose[name] = {"rotation": (np.round(q, ROTATION_DECIMALS) + 0.0).tolist()}  # + 0.0: no "-0.0"
    hips = pose.setdefault("hips", {"rotation": [0.0, 0.0, 0.0, 1.0]})
    position = np.asarray(rig.hips_position, dtype=np.float64).reshape(-1)
    if position.shape == (3,) and np.all(np.isfinite(position)):
        hips["position"] = (np.round(position, POSITION_DECIMALS) + 0.0).tolist()
    confidence = {
        name: round(float(value), SCORE_DECIMALS)
        for name, value in rig.confidence.items()
        if math.isfinite(float(value))
    }
    return pose, confidence


def frame_message(frame: OutputFrame, seq: int, send_time: float) -> dict:
    """One output tick: every person's normalized keypoints and rig pose."""
    people = []
    for person in frame.people:
        pose, confidence = pose_payload(person)
        tracking = bool(person.tracking and (person.rig.tracking if person.rig is not None else True))
        people.append(
            {
                "id": int(person.track_id),
                "tracking": tracking,
                "seen": bool(person.seen),
                "keypoints": keypoints_payload(person, frame.width, frame.height),
                "pose": pose,
                "confidence": confidence,
            }
        )
    driver = frame.driving_person()
    return {
        "type": "frame",
        "seq": int(seq),
        "capture_time": round(float(frame.capture_time), 6),
        "send_time": round(float(send_time), 6),
        "latency_ms": round((float(send_time) - float(frame.capture_time)) * 1000.0, 3),
        "image": {"width": int(frame.width), "height": int(frame.height)},
        "driver": None if driver is None else int(driver.track_id),
        "people": people,
    }


def ack_message(request: str) -> dict:
    return {"type": "ack", "request": request}


def pong_message(nonce: Any, server_time: float) -> dict:
    """``server_time`` lets a client estimate the clock offset and round trip (NTP-style)."""
    return {"type": "pong", "nonce": nonce, "server_time": float(server_time)}


def error_message(message: str, request: str | None = None) -> dict:
    out = {"type": "error", "message": message}
    if request is not None:
        out["request"] = request
    return out


# --- client -> server -----------------------------------------------------------------------------


def parse_control(data: str | bytes, client: str = "") -> ControlMessage:
    """Validate one client message; raise :class:`ProtocolError` with a message fit to send back."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("binary messages are not accepted: send control messages as JSON text")
    size = len(data.encode("utf-8", errors="surrogatepass"))
    if size > MAX_CONTROL_BYTES:
        raise ProtocolError(f"message is {size} bytes: control messages are limited to {MAX_CONTROL_BYTES} bytes")
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    except RecursionError:  # "[[[[...": 4 KiB of brackets is deeper than json's recursion limit
        raise ProtocolError("malformed JSON: nested too deeply; a control message is one flat JSON object") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"a control message must be a JSON object like {{\"type\": \"ping\"}}, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing \"type\": expected one of " + ", ".join(CONTROL_TYPES))
    if kind not in CONTROL_TYPES:
        raise ProtocolError(f"unknown message type {kind[:40]!r}: expected one of " + ", ".join(CONTROL_TYPES))
    allowed = CONTROL_TYPES[kind]
    for key in obj:
        if key != "type" and key not in allowed:
            keys = ", ".join(("type",) + allowed)
            raise ProtocolError(f"unexpected key {key[:40]!r} in a {kind} message: allowed keys are {keys}")
    if kind == "select":
        value = obj.get("id")
        if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value < 2**31):
            raise ProtocolError(f"select needs \"id\": a person's track id (integer >= 0), got {value!r}")
        return ControlMessage("select", id=value, client=client)
    if kind == "pause":
        value = obj.get("paused")
        if not isinstance(value, bool):
            raise ProtocolError(f"pause needs \"paused\": true or false, got {value!r}")
        return ControlMessage("pause", paused=value, client=client)
    if kind == "ping":
        if "nonce" not in obj:  # optional: the pong then carries "nonce": null
            return ControlMessage("ping", client=client)
        value = obj["nonce"]
        valid_int = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53
        valid_str = isinstance(value, str) and len(value) <= MAX_NONCE_CHARS
        if not (valid_int or valid_str):
            raise ProtocolError(
                f"ping needs \"nonce\": a string of at most {MAX_NONCE_CHARS} characters or an integer, got {str(value)[:40]!r}"
            )
        return ControlMessage("ping", nonce=value, client=client)
    return ControlMessage(kind, client=client)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
