"""``avatar-bridge run`` streams to both outputs at once; real receivers see the avatar's bones move.

The CLI runs as a subprocess (exactly what a user types); VMC goes to oscdump (liblo) and to a raw UDP
socket, the WebSocket stream to a real ``websockets`` client.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import MOCAP, need

from avatar_bridge import quat, skeleton

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def source_spec(name: str) -> str:
    if name == "synthetic":
        if importlib.util.find_spec("avatar_bridge.synthetic") is None:
            pytest.skip("avatar_bridge.synthetic (the synthetic performer) is not in this checkout yet")
        return "synthetic"
    return str(need(MOCAP))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["synthetic", "mocap"])
def test_run_streams_moving_bones_to_vmc_and_websocket(source):
    spec = source_spec(source)
    oscdump = shutil.which("oscdump")
    if oscdump is None:
        pytest.skip("oscdump is not installed (apt-get install liblo-tools; .ci/run does it)")
    osc_port = free_port(socket.SOCK_DGRAM)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(0.2)
    ws_port = free_port(socket.SOCK_STREAM)
    dump = subprocess.Popen(["stdbuf", "-oL", oscdump, "-L", str(osc_port)], stdout=subprocess.PIPE, text=True)
    dump_lines: list[str] = []
    threading.Thread(target=lambda: dump_lines.extend(dump.stdout), daemon=True).start()
    time.sleep(0.3)  # oscdump binds right after start; the run needs longer than that to start sending
    cmd = [sys.executable, "-m", "avatar_bridge", "run", "--source", spec, "--headless", "--quiet", "--duration", "4",
           "--vmc", f"127.0.0.1:{osc_port}", "--vmc", f"127.0.0.1:{raw.getsockname()[1]}", "--ws-port", str(ws_port)]
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    datagrams: list[bytes] = []
    stop = threading.Event()

    def collect():
        while not stop.is_set():
            try:
                datagrams.append(raw.recv(65535))
            except socket.timeout:
                pass

    collector = threading.Thread(target=collect)
    collector.start()
    frames = []
    try:
        deadline = time.monotonic() + 60
        ws = None
        while ws is None and time.monotonic() < deadline and run.poll() is None:
            try:
                ws = connect(f"ws://127.0.0.1:{ws_port}/", open_timeout=2)
            except OSError:
                time.sleep(0.1)
        assert ws is not None, f"the WebSocket server never came up: {run.communicate(timeout=30)}"
        with ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello" and hello["version"] == 1
            while True:  # the whole run: the retargeter may hold a calibration pose for the first seconds
                try:
                    message = json.loads(ws.recv(timeout=5))
                except (TimeoutError, ConnectionClosed):
                    break
                if message["type"] == "frame" and message["people"]:
                    frames.append(message)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        stop.set()
        collector.join()
        raw.close()
        time.sleep(0.2)
        dump.terminate()
        dump.wait(5)
    assert run.returncode == 0, err[-2000:]

    # WebSocket: frames in order, bones rotate over time, keypoints normalized.
    assert len(frames) >= 30, f"only {len(frames)} frames with people"
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs)
    person = frames[0]["people"][0]
    assert len(person["keypoints"]) == 17 and "hips" in person["pose"]
    moved = {}
    for bone in ("leftUpperArm", "rightUpperArm", "leftUpperLeg", "rightUpperLeg", "spine", "hips"):
        series = [f["people"][0]["pose"][bone]["rotation"] for f in frames if bone in f["people"][0]["pose"]]
        if len(series) >= 2:
            moved[bone] = float(np.degrees(quat.angle_between(np.array(series[0]), np.array(series[1:])).max()))
    assert max(moved.values()) > 5.0, moved

    # VMC via oscdump: full skeleton with type tags, bones move between frames.
    bone_lines = [line.split() for line in dump_lines if "/VMC/Ext/Bone/Pos" in line]
    assert bone_lines, "oscdump received no bones"
    assert all(fields[2] == "sfffffff" for fields in bone_lines)
    assert {fields[3].strip('"') for fields in bone_lines} == {skeleton.unity_name(b) for b in skeleton.BONE_NAMES}
    assert sum("/VMC/Ext/T " in line for line in dump_lines) >= 30
    vmc_moved = 0.0
    for name in ("LeftUpperArm", "RightUpperArm", "LeftUpperLeg", "RightUpperLeg", "Spine"):
        rotations = np.array([[float(v) for v in f[7:11]] for f in bone_lines if f[3] == f'"{name}"'])
        vmc_moved = max(vmc_moved, float(np.degrees(quat.angle_between(rotations[0], rotations[1:]).max())))
    assert vmc_moved > 5.0

    # VMC via a raw socket (second target at the same time): bundles under the size limit.
    assert datagrams and max(len(d) for d in datagrams) <= 1400
    assert all(OscBundle.dgram_is_bundle(d) for d in datagrams)
