"""Test harness for the clients: the product's WebSocketServer publishing a known motion.

Why: a client test must show that what the client put on its avatar equals what was sent. The
harness runs the real :class:`avatar_bridge.server.WebSocketServer` on loopback (a free port; it
also serves the built viewer over HTTP) and publishes a deterministic waving motion at a fixed rate,
remembering each published pose by its ``seq`` (the server numbers frames 1, 2, 3, ... in publish
order). The end-to-end test against ``avatar-bridge run --source synthetic`` is in the test files.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from avatar_bridge import quat
from avatar_bridge.config import WebSocketConfig
from avatar_bridge.server import WebSocketServer
from avatar_bridge.skeleton import BODY_BONES, REST_OFFSETS
from avatar_bridge.types import OutputFrame, OutputPerson
from avatar_bridge.types import Pose2D, RigPose


def pose_at(t: float) -> dict[str, np.ndarray]:
    """A clearly visible motion: arms waving, elbows and knees bending, head turning, spine leaning.
    Every body bone gets a non-trivial rotation."""
    s = np.sin(2 * np.pi * 0.5 * t)
    c = np.cos(2 * np.pi * 0.5 * t)
    axis_angle = {
        "hips": ((0, 1, 0), 0.3 * s),
        "spine": ((0, 0, 1), 0.10 * s),
        "chest": ((1, 0, 0), 0.10 * c),
        "upperChest": ((0, 1, 0), 0.15 * s),
        "neck": ((1, 0, 0), 0.10 * s),
        "head": ((0, 1, 0), 0.5 * s),
        "leftShoulder": ((0, 0, 1), 0.1 + 0.05 * s),
        "rightShoulder": ((0, 0, 1), -0.1 - 0.05 * s),
        # The left arm points +X at rest: a rotation about -Z lowers it.
        "leftUpperArm": ((0.2, 0.3, -1.0), 0.9 + 0.5 * s),
        "leftLowerArm": ((0, 1, 0), 0.8 + 0.4 * c),
        "leftHand": ((1, 0, 0), 0.3 * s),
        "rightUpperArm": ((0.2, -0.3, 1.0), 0.9 - 0.5 * s),
        "rightLowerArm": ((0, -1, 0), 0.8 - 0.4 * c),
        "rightHand": ((1, 0, 0), -0.3 * s),
        "leftUpperLeg": ((1, 0, 0.1), -0.4 * max(s, 0.0) - 0.05),
        "leftLowerLeg": ((1, 0, 0), 0.7 * max(s, 0.0) + 0.05),
        "leftFoot": ((1, 0, 0), -0.2 * s),
        "leftToes": ((1, 0, 0), 0.1),
        "rightUpperLeg": ((1, 0, -0.1), -0.4 * max(-s, 0.0) - 0.05),
        "rightLowerLeg": ((1, 0, 0), 0.7 * max(-s, 0.0) + 0.05),
        "rightFoot": ((1, 0, 0), 0.2 * s),
        "rightToes": ((1, 0, 0), 0.1),
    }
    assert set(axis_angle) == set(BODY_BONES)
    return {name: quat.from_axis_angle(np.array(axis), angle) for name, (axis, angle) in axis_angle.items()}


def output_frame(t: float, capture_time: float, people: int = 1, driver: int = 1) -> OutputFrame:
    """``people`` performers (track ids 1, 2, ...; person k moves like person 1 delayed by k-1 s)."""
    persons = [_person(t - k, capture_time, k + 1) for k in range(people)]
    return OutputFrame(capture_time=capture_time, width=1280, height=720, people=persons, driver=driver)


def _person(t: float, capture_time: float, track_id: int) -> OutputPerson:
    rotations = pose_at(t)
    hips = REST_OFFSETS[0] + np.array([0.15 * np.sin(t), -0.05 * abs(np.sin(2 * t)), 0.0])
    # A stick figure for the keypoint panel, in pixels of a 1280x720 image.
    base = np.array([[0.5, 0.2], [0.51, 0.19], [0.49, 0.19], [0.52, 0.2], [0.48, 0.2], [0.56, 0.3],
                     [0.44, 0.3], [0.6, 0.42], [0.4, 0.42], [0.62, 0.52], [0.38, 0.52], [0.54, 0.55],
                     [0.46, 0.55], [0.55, 0.72], [0.45, 0.72], [0.55, 0.9], [0.45, 0.9]])
    base[:, 0] += 0.05 * np.sin(t) + 0.25 * (track_id - 1)
    pose2d = Pose2D(keypoints=(base * [1280, 720]).astype(np.float32), scores=np.full(17, 0.9, np.float32),
                    track_id=track_id)
    rig = RigPose(timestamp=capture_time, track_id=track_id, hips_position=hips, rotations=rotations,
                  confidence={name: 0.9 for name in rotations})
    return OutputPerson(track_id=track_id, pose2d=pose2d, rig=rig)


class PublishingServer:
    """WebSocketServer on 127.0.0.1 publishing :func:`output_frame` at ``rate``.

    ``sent[seq]`` is the driving person's RigPose of each frame; a client's ``select`` changes the
    driver, as the pipeline does.
    """

    def __init__(self, rate: float = 30.0, port: int = 0, people: int = 1, token: str = ""):
        self.rate = rate
        self.people = people
        self.driver = 1
        self.controls: list = []
        self.sent: dict[int, RigPose] = {}
        self.server = WebSocketServer(WebSocketConfig(port=port, rate=rate, token=token), on_control=self._on_control)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, daemon=True)
        self._t0 = time.monotonic()

    def _on_control(self, control) -> None:
        self.controls.append(control)
        if control.type == "select":
            self.driver = control.id

    @property
    def port(self) -> int:
        return self.server.port

    def __enter__(self) -> "PublishingServer":
        self.server.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.stop()

    def control_types(self) -> list[str]:
        return [c.type for c in self.controls]

    def _publish(self) -> None:
        seq = 0
        while not self._stop.is_set():
            now = time.monotonic()
            frame = output_frame(now - self._t0, now, self.people, self.driver)
            seq += 1
            self.sent[seq] = frame.driving_person().rig
            self.server.publish(frame)
            self._stop.wait(1.0 / self.rate)


# --- the real pipeline: `avatar-bridge run --source synthetic --headless` --------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_available() -> str | None:
    """None when `avatar-bridge run --source synthetic` can run here, else the reason it cannot."""
    import importlib.util

    for module in ("avatar_bridge.pipeline", "avatar_bridge.synthetic", "avatar_bridge.server"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not there yet"
    return None


class RunningPipeline:
    """`avatar-bridge run --source synthetic --headless --no-vmc` on a free port, as a subprocess."""

    def __init__(self, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.args = ["--source", "synthetic", "--headless", "--no-vmc", "--quiet", "--ws-port", str(self.port),
                     "--duration", "120", *extra_args]
        self.proc = None

    def __enter__(self) -> "RunningPipeline":
        import socket
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "avatar_bridge", "run", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"avatar-bridge run exited with {self.proc.returncode}:\n{self.proc.stdout.read()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("avatar-bridge run did not open its WebSocket port within 30 s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)


class FrameRecorder:
    """A plain `websockets` client that keeps every frame it receives by seq (what the server sent)."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.frames: dict[int, dict] = {}
        self.hello: dict | None = None
        self._ws = connect(url)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import json

        try:
            for text in self._ws:
                msg = json.loads(text)
                if msg.get("type") == "hello":
                    self.hello = msg
                elif msg.get("type") == "frame":
                    self.frames[msg["seq"]] = msg
        except Exception:
            pass

    def driving_pose(self, seq: int) -> dict | None:
        msg = self.frames.get(seq)
        if msg is None:
            return None
        people = msg["people"]
        person = next((p for p in people if p["id"] == msg["driver"]), people[0] if people else None)
        return None if person is None else person["pose"]

    def close(self) -> None:
        self._ws.close()
        self._thread.join(5)
