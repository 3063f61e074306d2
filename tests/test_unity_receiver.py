"""clients/unity/AvatarBridgeReceiver.cs compiled with Mono against a UnityEngine stand-in and run
against the real WebSocketServer. There is no Unity here: this checks the script's C# (its JSON
reading, reconnect loop, canonical -> Unity conversion and chain math), not Unity itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avatar_bridge.skeleton import BONE_INDEX, BONE_NAMES, forward_kinematics, unity_name
from client_harness import PublishingServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "tests" / "unity_check" / "UnityEngineStub.cs", ROOT / "tests" / "unity_check" / "Harness.cs",
           ROOT / "clients" / "unity" / "AvatarBridgeReceiver.cs"]


def test_unity_receiver_puts_streamed_pose_on_humanoid_bones(tmp_path):
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip("needs Mono to compile the C# receiver (apt-get install mono-mcs)")
    exe = tmp_path / "harness.exe"
    build = subprocess.run([mcs, f"-out:{exe}", *map(str, SOURCES)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    with PublishingServer(rate=30.0) as server:
        run = subprocess.run([mono, str(exe), f"ws://127.0.0.1:{server.port}/", "10"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        rig = server.sent[result["seq"]]
    assert result["status"] == "connected" and result["applied"] >= 10
    # Expected: world rotation away from the T-pose of each bone, mirrored into Unity's left-handed frame.
    _, world = forward_kinematics(rig.rotations)
    unity_world = world * np.array([1.0, -1.0, -1.0, 1.0])
    checked = 0
    for bone in BONE_NAMES:
        name = unity_name(bone)
        if name not in result["rotations"]:
            continue  # the test model has no UpperChest: its rotation lives on in its children
        got = np.array(result["rotations"][name])
        want = unity_world[BONE_INDEX[bone]]
        assert abs(abs(np.dot(got, want)) - 1.0) < 1e-5, f"{name}: {got} != {want}"
        checked += 1
    assert checked == 54
    p = np.asarray(rig.hips_position)
    expected_hips = np.array([0.0, 0.9, 0.0]) + np.array([-p[0], p[1] - 0.95, p[2]]) * (0.9 / 0.95)
    assert np.allclose(result["hips"], expected_hips, atol=1e-5)
