"""The Blender add-on (clients/blender) end to end in real Blender (bpy 4.5 in .venv-blender).

The add-on is installed from its zip into a fresh bpy process, connects to a live server on
loopback, drives the VRM add-on's humanoid armature, and records. The test compares the armature's
world bone directions with the frame the server sent and checks the recorded keyframes replay it.
The network and OSC parsing code (no bpy) is also tested here against real servers/senders.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avatar_bridge import quat
from avatar_bridge.skeleton import BONE_INDEX, forward_kinematics

ROOT = Path(__file__).resolve().parent.parent
BLENDER_PY = Path(os.environ.get("AVATAR_BRIDGE_BPY_PYTHON", ROOT / ".venv-blender" / "bin" / "python"))
SCRIPT = Path(__file__).resolve().parent / "blender_live_link.py"
ADDON = ROOT / "clients" / "blender" / "avatar_bridge_blender"


def _load(name: str):
    """Import one bpy-free module of the add-on by path (the package's __init__ needs bpy)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"avatar_bridge_blender_{name}", ADDON / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


net = _load("net")
mapping = _load("mapping")

# Canonical (Y up, faces +Z) -> Blender armature space (Z up, faces -Y): (x, y, z) -> (x, -z, y).
TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def need_bpy() -> None:
    if not BLENDER_PY.exists():
        pytest.skip(f"no bpy venv at {BLENDER_PY}: python3.11 -m venv .venv-blender && "
                    ".venv-blender/bin/pip install -r clients/blender/requirements-test.txt")
    code = ("import importlib.util, os; "
            "os._exit(0 if all(importlib.util.find_spec(m) for m in ('bpy', 'io_scene_vrm')) else 3)")
    probe = subprocess.run([str(BLENDER_PY), "-c", code], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("the bpy venv lacks bpy or bpy-vrm-format: "
                    ".venv-blender/bin/pip install -r clients/blender/requirements-test.txt")


def run_blender(tmp_path: Path, config: dict, timeout: float = 120, start_server=None) -> dict:
    """Run blender_live_link.py in the bpy venv and return its JSON result.

    ``start_server``: a function returning a context manager with ``.port``, entered only once
    Blender is set up (the VRM armature takes seconds and a running pipeline would slow it down).
    """
    import contextlib

    sys.path.insert(0, str(ROOT / "clients" / "blender"))
    from build_zip import build

    config = dict(config, zip=str(build(tmp_path / "dist")), out=str(tmp_path / "result.json"))
    if start_server is not None:
        config["url"] = "stdin"
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"),
               BLENDER_USER_SCRIPTS=str(tmp_path / "blender-user" / "scripts"))
    proc = subprocess.Popen([str(BLENDER_PY), str(SCRIPT), str(tmp_path / "config.json")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    with contextlib.ExitStack() as stack:
        try:
            if start_server is not None:
                for line in proc.stdout:
                    if line.strip() == "READY":
                        break
                server = stack.enter_context(start_server())
                proc.stdin.write(f"ws://127.0.0.1:{server.port}/\n")
                proc.stdin.flush()
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    out = tmp_path / "result.json"
    assert out.exists(), f"blender script wrote nothing (rc {proc.returncode}):\n{output[-4000:]}"
    result = json.loads(out.read_text())
    assert result["ok"], result.get("error", "") + output[-2000:]
    return result


def angle_deg(a, b) -> float:
    a = np.asarray(a) / np.linalg.norm(a)
    b = np.asarray(b) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))))


def expected_directions(rotations: dict, result: dict, to_blender: np.ndarray = TO_BLENDER) -> dict[str, np.ndarray]:
    """Each mapped bone's rest direction turned by its streamed world rotation (numpy FK of the frame)."""
    _, world = forward_kinematics(rotations)
    out = {}
    for vrm, arm in result["map"].items():
        rest = np.array(result["rest"][arm])
        canonical = to_blender.T @ rest
        out[arm] = to_blender @ quat.rotate(world[BONE_INDEX[vrm]], canonical)
    return out


@pytest.mark.slow
def test_addon_drives_vrm_armature_from_websocket_and_records(tmp_path):
    need_bpy()
    from client_harness import PublishingServer

    render = ROOT / "docs" / "images" / "blender.png" if os.environ.get("AVATAR_BRIDGE_WRITE_DOCS_IMAGES") else None
    with PublishingServer(rate=30.0) as server:
        result = run_blender(tmp_path, {"url": f"ws://127.0.0.1:{server.port}/", "frames": 20,
                                        "render": str(render) if render else None})
        rig = server.sent[result["seq"]]
    assert "avatar_bridge_blender" in result["installed_from"] and str(tmp_path) in result["installed_from"]
    # The panel's draw code runs (against a stand-in layout: no UI in bpy module mode).
    assert "operator:avatar_bridge.connect:" in result["panel_idle"] and "prop:url" in result["panel_idle"]
    live = result["panel_live"]
    assert any(item.startswith("label:connected: ") for item in live), live
    assert any(item.startswith("operator:avatar_bridge.record:Stop recording") for item in live), live
    # The operators refuse what cannot work, with a message that says what to do.
    assert "choose an armature object" in result["refusals"]["connect_without_armature"]
    assert "connect first" in result["refusals"]["record_before_connect"]
    assert "no-such-map.json' does not exist" in result["refusals"]["missing_custom_map"]
    assert result["calibrate"] is None and "calibrate" in server.control_types()
    # With the VRM add-on's humanoid assignment every humanoid bone of the armature is mapped, fingers too.
    assert {"leftThumbMetacarpal", "rightLittleDistal", "leftEye"} <= set(result["map"])
    check_armature_follows(result, rig)


def check_armature_follows(result: dict, rig, to_blender: np.ndarray = TO_BLENDER) -> None:
    """The live pose matches ``rig`` (a RigPose), really moved the bones, and was recorded."""
    # The map (VRM add-on assignment or bone names) found all the body bones the armature has.
    assert {"hips", "spine", "chest", "neck", "head", "leftUpperArm", "leftLowerArm", "rightUpperLeg",
            "rightLowerLeg", "leftFoot"} <= set(result["map"])
    expected = expected_directions(rig.rotations, result, to_blender)
    errors = {arm: angle_deg(result["live"][arm], expected[arm]) for arm in expected}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 0.5, f"{worst} points {errors[worst]:.2f} deg away from the streamed pose"
    # The pose really moved the bones (not a rest-pose armature that trivially matches): every bone
    # the streamed frame turns more than 10 degrees from rest is turned in Blender too. How many
    # depends on the phase of the harness's motion at the frame the client kept; the arms (upper,
    # lower, hand on each side) always are.
    turned = [arm for arm in expected if angle_deg(result["rest"][arm], expected[arm]) > 10]
    moved = [arm for arm in expected if angle_deg(result["rest"][arm], result["live"][arm]) > 10]
    assert len(turned) >= 6 and set(turned) <= set(moved), (turned, moved)
    # Hips position: displacement from rest, scaled by the hip-height ratio, in Blender axes.
    p = np.asarray(rig.hips_position) - np.array([0.0, 0.95, 0.0])
    scale = result["hips_rest_head"][2] / 0.95
    assert np.allclose(np.array(result["hips_head"]) - result["hips_rest_head"], to_blender @ p * scale, atol=1e-4)
    # Recording: an action with keys for every driven bone, whose last key replays the live pose.
    assert result["action"] is not None
    assert set(result["keyed_bones"]) == set(result["map"].values())
    assert result["frames_recorded"] >= 20 and len(result["keyframes"]) >= 10
    replay_errors = [angle_deg(result["replayed"][a], result["live"][a]) for a in result["live"]]
    assert max(replay_errors) < 0.05


# A Mixamo-named rig: (VRM bone or None, Mixamo bone, parent). "LeftArmTwist" is an extra, unmapped
# bone between the upper and lower arm, as many production rigs have.
MIXAMO_RIG = [
    ("hips", "Hips", None), ("spine", "Spine", "Hips"), ("chest", "Spine1", "Spine"),
    ("upperChest", "Spine2", "Spine1"), ("neck", "Neck", "Spine2"), ("head", "Head", "Neck"),
    ("leftShoulder", "LeftShoulder", "Spine2"), ("leftUpperArm", "LeftArm", "LeftShoulder"),
    (None, "LeftArmTwist", "LeftArm"), ("leftLowerArm", "LeftForeArm", "LeftArmTwist"),
    ("leftHand", "LeftHand", "LeftForeArm"), ("rightShoulder", "RightShoulder", "Spine2"),
    ("rightUpperArm", "RightArm", "RightShoulder"), ("rightLowerArm", "RightForeArm", "RightArm"),
    ("rightHand", "RightHand", "RightForeArm"), ("leftUpperLeg", "LeftUpLeg", "Hips"),
    ("leftLowerLeg", "LeftLeg", "LeftUpLeg"), ("leftFoot", "LeftFoot", "LeftLeg"), ("leftToes", "LeftToeBase", "LeftFoot"),
    ("rightUpperLeg", "RightUpLeg", "Hips"), ("rightLowerLeg", "RightLeg", "RightUpLeg"),
    ("rightFoot", "RightFoot", "RightLeg"), ("rightToes", "RightToeBase", "RightFoot"),
]


def mixamo_rig(to_blender: np.ndarray) -> dict:
    """Bones in the canonical T-pose, put into armature space by ``to_blender``, each with its own roll."""
    rest, _ = forward_kinematics({})
    heads = {}
    for vrm, name, _ in MIXAMO_RIG:
        heads[name] = rest[BONE_INDEX[vrm]] if vrm else None
    heads["LeftArmTwist"] = (heads["LeftArm"] + heads["LeftForeArm"]) / 2
    leaf_direction = {"Head": [0, 0.15, 0], "LeftHand": [0.08, 0, 0], "RightHand": [-0.08, 0, 0],
                      "LeftToeBase": [0, 0, 0.05], "RightToeBase": [0, 0, 0.05]}
    bones = []
    for i, (_, name, parent) in enumerate(MIXAMO_RIG):
        child = next((n for _, n, p in MIXAMO_RIG if p == name and n not in ("LeftShoulder", "RightShoulder", "LeftUpLeg", "RightUpLeg")), None)
        tail = heads[child] if child else heads[name] + np.array(leaf_direction[name])
        bones.append([f"mixamorig:{name}", f"mixamorig:{parent}" if parent else None,
                      list(to_blender @ heads[name]), list(to_blender @ tail), (i * 1.3) % 6.2 - 3.1])
    return {"bones": bones}


@pytest.mark.slow
def test_addon_drives_a_mixamo_rig_facing_plus_y(tmp_path):
    """Another rig: Mixamo names, arbitrary bone rolls, an extra twist bone, built facing +Y."""
    need_bpy()
    from client_harness import PublishingServer

    facing_pos_y = np.diag([-1.0, -1.0, 1.0]) @ TO_BLENDER  # 180 deg about Z after the usual mapping
    config = {"custom_rig": mixamo_rig(facing_pos_y), "bone_map": "MIXAMO", "facing": "POS_Y", "frames": 20}
    with PublishingServer(rate=30.0) as server:
        result = run_blender(tmp_path, dict(config, url=f"ws://127.0.0.1:{server.port}/"))
        rig = server.sent[result["seq"]]
    assert len(result["map"]) == 22 and "mixamorig:LeftArmTwist" not in result["map"].values()
    check_armature_follows(result, rig, facing_pos_y)


@pytest.mark.slow
def test_addon_drives_armature_from_vmc(tmp_path):
    """The VMC path: the product's VmcSender -> UDP -> the add-on's stdlib OSC receiver -> armature."""
    need_bpy()
    import threading

    from avatar_bridge.config import VmcConfig
    from avatar_bridge.vmc import VmcSender
    from client_harness import output_frame

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rig = output_frame(1.3, time.monotonic()).people[0].rig  # one fixed pose, sent over and over
    sender = VmcSender(VmcConfig(targets=[f"127.0.0.1:{port}"]))
    stop = threading.Event()

    def send():
        while not stop.is_set():
            sender.send_rig(rig)
            stop.wait(1 / 30)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        result = run_blender(tmp_path, {"vmc_port": port, "frames": 20, "fast_armature": True})
    finally:
        stop.set()
        thread.join(5)
        sender.close()
    check_armature_follows(result, rig)


@pytest.mark.slow
def test_addon_against_avatar_bridge_run_synthetic(tmp_path):
    """The real product streams (`avatar-bridge run --source synthetic`); the armature follows it."""
    need_bpy()
    from client_harness import FrameRecorder, RunningPipeline, pipeline_available

    reason = pipeline_available()
    if reason:
        pytest.skip(f"avatar-bridge run --source synthetic is not available: {reason}")
    recorders = []

    @contextlib.contextmanager
    def pipeline_with_recorder():
        with RunningPipeline() as run:
            recorders.append(FrameRecorder(f"ws://127.0.0.1:{run.port}/"))
            try:
                yield run
            finally:
                recorders[0].close()

    result = run_blender(tmp_path, {"frames": 30, "timeout": 60, "fast_armature": True},
                         start_server=pipeline_with_recorder)
    recorder = recorders[0]
    matched = [s for s in result["samples"] if recorder.driving_pose(s["seq"]) is not None]
    assert matched, "the recorder saw none of the frames Blender applied"
    moved = 0
    for sample in matched:
        pose = recorder.driving_pose(sample["seq"])
        rotations = {name: np.array(t["rotation"]) for name, t in pose.items()}
        expected = expected_directions(rotations, result)
        for arm, direction in expected.items():
            error = angle_deg(sample["live"][arm], direction)
            assert error < 0.5, f"{arm} is {error:.2f} deg off frame {sample['seq']}"
            moved += angle_deg(result["rest"][arm], sample["live"][arm]) > 5
    assert moved > 0, "the synthetic performer never moved a bone away from rest"
    assert result["frames_recorded"] >= 30 and result["action"] is not None


@pytest.mark.slow
def test_zip_installs_as_a_blender_extension(tmp_path):
    """The same zip also installs through Blender 4.2+'s extension system (blender_manifest.toml)."""
    need_bpy()
    sys.path.insert(0, str(ROOT / "clients" / "blender"))
    from build_zip import build

    code = (
        "import os, sys, json, bpy\n"
        "try:\n"
        "    r = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo='user_default', enable_on_install=True)\n"
        "    out = {'result': sorted(r), 'addons': [m for m in bpy.context.preferences.addons.keys() if 'avatar' in m],\n"
        "           'panel': hasattr(bpy.types, 'AVATARBRIDGE_PT_panel'), 'settings': hasattr(bpy.types.Scene, 'avatar_bridge')}\n"
        "    print('RESULT ' + json.dumps(out))\n"
        "finally:\n"
        "    sys.stdout.flush(); os._exit(0)\n"
    )
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    proc = subprocess.run([str(BLENDER_PY), "-c", code, str(build(tmp_path / "dist"))], capture_output=True,
                          text=True, timeout=120, env=env)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(line[7:])
    assert out == {"result": ["FINISHED"], "addons": ["bl_ext.user_default.avatar_bridge_blender"],
                   "panel": True, "settings": True}


def test_websocket_client_reads_protocol_frames():
    """The add-on's stdlib RFC 6455 client against a real `websockets` server (no bpy needed)."""
    from client_harness import PublishingServer

    with PublishingServer(rate=60.0) as server:
        receiver = net.WebSocketReceiver(f"ws://127.0.0.1:{server.port}/").start()
        try:
            deadline = time.monotonic() + 10
            frame = None
            while receiver.slot.frames_received < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            frame = receiver.latest()
            assert frame is not None, receiver.slot.error
            sent = server.sent[frame.seq]
            assert set(frame.rotations) == set(sent.rotations)
            for name, q in sent.rotations.items():
                assert np.allclose(frame.rotations[name], q, atol=1e-6)
            assert np.allclose(frame.hips_position, sent.hips_position, atol=1e-5)
            assert receiver.hello["version"] == 1 and len(receiver.hello["bones"]) == 55
            assert receiver.send({"type": "calibrate"})
            while "calibrate" not in server.control_types() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "calibrate" in server.control_types()
        finally:
            receiver.stop()
        assert receiver.slot.status == "stopped"


def test_websocket_client_sends_the_token_from_the_url():
    from client_harness import PublishingServer

    token = "tok-" + "y" * 28
    with PublishingServer(rate=60.0, token=token) as server:
        with pytest.raises(net.WebSocketError, match="refused the WebSocket upgrade: HTTP/1.1 401"):
            net.WebSocketConnection(f"ws://127.0.0.1:{server.port}/")
        conn = net.WebSocketConnection(f"ws://127.0.0.1:{server.port}/?token={token}")
        try:
            assert json.loads(conn.receive_text())["type"] == "hello"
        finally:
            conn.close()


def test_websocket_client_reconnects_after_server_restart():
    from client_harness import PublishingServer

    first = PublishingServer(rate=60.0).__enter__()
    receiver = net.WebSocketReceiver(f"ws://127.0.0.1:{first.port}/").start()
    try:
        deadline = time.monotonic() + 10
        while receiver.slot.frames_received < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.stop()
        with PublishingServer(rate=60.0, port=first.port):
            count = receiver.slot.frames_received
            while receiver.slot.frames_received < count + 5 and time.monotonic() < deadline + 10:
                time.sleep(0.02)
            assert receiver.connects == 2
            assert receiver.slot.frames_received >= count + 5
    finally:
        receiver.stop()


def test_websocket_client_rejects_bad_address():
    with pytest.raises(net.WebSocketError, match="ws://HOST:PORT"):
        net.WebSocketConnection("http://127.0.0.1:1/")


def test_osc_parser_and_vmc_assembler_read_python_osc_packets():
    """Packets built by python-osc (bundles, nested bundles, every VMC type) through the stdlib parser."""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    def message(address, *args):
        b = OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(a)
        return b.build()

    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(message("/VMC/Ext/Bone/Pos", "LeftUpperArm", 0.1, 1.4, 0.0, 0.0, 0.0, 0.382683, 0.92388))
    inner.add_content(message("/VMC/Ext/Bone/Pos", "LeftThumbProximal", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(message("/VMC/Ext/OK", 1, 3, 0, 1))
    outer.add_content(message("/VMC/Ext/Bone/Pos", "Hips", 0.2, 0.9, 0.1, 0.0, 0.0, 0.0, 1.0))
    outer.add_content(inner.build())
    outer.add_content(message("/VMC/Ext/T", 12.5))
    parsed = net.parse_osc(outer.build().dgram)
    assert [a for a, _ in parsed] == ["/VMC/Ext/OK", "/VMC/Ext/Bone/Pos", "/VMC/Ext/Bone/Pos",
                                      "/VMC/Ext/Bone/Pos", "/VMC/Ext/T"]
    assert parsed[0][1] == [1, 3, 0, 1]
    assert parsed[2][1][0] == "LeftUpperArm" and parsed[2][1][7] == pytest.approx(0.92388, abs=1e-6)
    assert parsed[4][1] == [pytest.approx(12.5)]

    assembler = net.VmcAssembler()
    frames = [f for a, args in parsed if (f := assembler.feed(a, args)) is not None]
    assert len(frames) == 1
    frame = frames[0]
    # Unity (left-handed) -> canonical: mirror X, so q -> (x, -y, -z, w) and p -> (-x, y, z).
    assert np.allclose(frame.rotations["leftUpperArm"], (0.0, -0.0, -0.382683, 0.92388), atol=1e-6)
    assert np.allclose(frame.hips_position, (-0.2, 0.9, 0.1), atol=1e-6)
    assert "leftThumbMetacarpal" in frame.rotations  # Unity ThumbProximal = VRM 1.0 thumbMetacarpal
    with pytest.raises(ValueError, match="not an OSC message"):
        net.parse_osc(b"hello\0\0\0")


def test_vmc_receiver_over_udp():
    from pythonosc.udp_client import SimpleUDPClient

    receiver = net.VmcReceiver("127.0.0.1", 0).start()
    try:
        client = SimpleUDPClient("127.0.0.1", receiver.port)
        deadline = time.monotonic() + 5
        while receiver.slot.frames_received < 3 and time.monotonic() < deadline:
            client.send_message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.1, 0.0, 0.0, 0.7071068, 0.0, 0.7071068])
            client.send_message("/VMC/Ext/T", 1.0)
            time.sleep(0.02)
        frame = receiver.latest()
        assert frame is not None and np.allclose(frame.rotations["head"], (0, -0.7071068, 0, 0.7071068), atol=1e-6)
    finally:
        receiver.stop()
    # A port already in use gives a clear error.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="cannot listen for VMC"):
            net.VmcReceiver("127.0.0.1", busy.getsockname()[1])


def test_bone_maps_resolve_known_rigs(tmp_path):
    mixamo = ["mixamorig1:Hips", "mixamorig1:Spine", "mixamorig1:LeftArm", "mixamorig1:LeftForeArm", "Camera"]
    assert mapping.resolve("MIXAMO", mixamo) == {"hips": "mixamorig1:Hips", "spine": "mixamorig1:Spine",
                                                 "leftUpperArm": "mixamorig1:LeftArm",
                                                 "leftLowerArm": "mixamorig1:LeftForeArm"}
    rigify = ["DEF-spine", "DEF-spine.001", "DEF-upper_arm.L", "DEF-thigh.R"]
    assert mapping.resolve("RIGIFY", rigify) == {"hips": "DEF-spine", "spine": "DEF-spine.001",
                                                 "leftUpperArm": "DEF-upper_arm.L", "rightUpperLeg": "DEF-thigh.R"}
    vroid = ["J_Bip_C_Hips", "J_Bip_L_UpperArm", "J_Bip_R_ToeBase"]
    assert mapping.resolve("VRM", vroid) == {"hips": "J_Bip_C_Hips", "leftUpperArm": "J_Bip_L_UpperArm",
                                             "rightToes": "J_Bip_R_ToeBase"}
    custom = tmp_path / "map.json"
    custom.write_text(json.dumps({"leftUpperArm": "Arm.L", "hips": "Root"}))
    assert mapping.resolve("CUSTOM", ["Arm.L", "Root", "Other"], mapping.load_custom_map(str(custom))) == {
        "leftUpperArm": "Arm.L", "hips": "Root"}
    custom.write_text(json.dumps({"LeftArm": "Arm.L"}))
    with pytest.raises(ValueError, match="LeftArm are not VRM humanoid bone names"):
        mapping.load_custom_map(str(custom))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mapping.load_custom_map(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="unknown bone map"):
        mapping.resolve("MAYA", [])
