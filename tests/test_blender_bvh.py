"""Blender's own BVH importer (bpy 4.5.15 in .venv-blender) reads our export with < 1 mm error.

bpy runs in a subprocess with a timeout (it can hang at exit; the script leaves via os._exit).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from avatar_bridge import cli, quat, skeleton
from avatar_bridge.bvh import bvh_bone_names, resample_motion
from avatar_bridge.record import RecordingWriter, read_recording
from avatar_bridge.types import FramePoses, RigPose

ROOT = Path(__file__).resolve().parent.parent
BLENDER_PYTHON = ROOT / ".venv-blender" / "bin" / "python"
SCRIPT = Path(__file__).resolve().parent / "blender_import_bvh.py"

pytestmark = pytest.mark.slow


def blender_heads(bvh_path: Path, frames: list[int], tmp_path: Path, user_axes: bool = False) -> dict:
    if not BLENDER_PYTHON.exists():
        pytest.skip(f"{BLENDER_PYTHON} is absent: create it with `python3 -m venv .venv-blender && "
                    ".venv-blender/bin/pip install -r clients/blender/requirements-test.txt` (CI does)")
    out = tmp_path / "heads.json"
    started = time.monotonic()
    proc = subprocess.run(
        [str(BLENDER_PYTHON), str(SCRIPT), str(bvh_path), str(out), *(["--user-axes"] if user_axes else []), *map(str, frames)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nBlender import of {bvh_path.name}: {time.monotonic() - started:.2f} s")
    return json.loads(out.read_text())


def walk_take(path: Path, frames: int = 90, fps: float = 30.0, track_id: int = 2) -> None:
    """A take with jittered timestamps and large, varied rotations on every body bone."""
    rng = np.random.default_rng(11)
    times = 200.0 + np.cumsum(rng.uniform(0.6, 1.4, size=frames)) / fps
    with RecordingWriter(path) as writer:
        for i, t in enumerate(times):
            rotations = {}
            for k, name in enumerate(skeleton.BONE_NAMES):
                axis = np.array([np.sin(k + 1), np.cos(0.7 * k), np.sin(0.3 * k + 2)])
                rotations[name] = quat.from_axis_angle(axis, 1.2 * np.sin(2.1 * t + k))
            hips = np.array([0.4 * np.sin(t), 0.9 + 0.05 * np.cos(3 * t), 0.6 * t - 120.0])
            writer.write(FramePoses(i, t, 1280, 720, []), [RigPose(t, track_id, hips, rotations)])


@pytest.mark.parametrize("bones,units,scale", [("body", "cm", 0.01), ("full", "m", 1.0)])
def test_blender_imports_our_bvh_within_a_millimetre(tmp_path, bones, units, scale):
    take = tmp_path / "take.abrec"
    walk_take(take)
    bvh_path = tmp_path / "take.bvh"
    assert cli.main(["export-bvh", str(take), "-o", str(bvh_path), "--bones", bones, "--units", units]) == 0

    # What our skeleton computes for the same resampled frames.
    rig = read_recording(take).rig_track()
    _, hips, rotations = resample_motion(rig.timestamps, rig.hips, rig.rotations, 30.0)
    frames = [0, 1, 17, 45, len(hips) - 1]
    info = blender_heads(bvh_path, frames, tmp_path)
    assert info["blender"].startswith("4.5")
    names = bvh_bone_names(bones)
    assert sorted(info["bones"]) == sorted(names)
    worst = 0.0
    for f in frames:
        local = {name: rotations[f, i] for i, name in enumerate(skeleton.BONE_NAMES)}
        ours, _ = skeleton.forward_kinematics(local, hips[f], rig.rest_offsets)
        heads = info["heads"][str(f)]
        for name in names:
            error = np.linalg.norm(np.array(heads[name]) * scale - ours[skeleton.BONE_INDEX[name]])
            worst = max(worst, error)
    print(f"max joint error Blender vs forward_kinematics ({bones}, {units}): {worst * 1000:.4f} mm")
    assert worst < 1e-3


def test_blender_round_trip_of_retargeted_mocap(tmp_path):
    """Issue #7 item 5: CMU walk -> retargeter -> recording -> BVH -> Blender: same bone directions."""
    from test_bvh_export import bone_directions, mocap_take

    take, live = mocap_take(tmp_path, frames=90)
    bvh_path = tmp_path / "cmu.bvh"
    assert cli.main(["export-bvh", str(take), "-o", str(bvh_path), "--fps", "30"]) == 0
    frames = [0, 30, 61, 89]
    info = blender_heads(bvh_path, frames, tmp_path)
    names = skeleton.BODY_BONES
    worst = 0.0
    for f in frames:
        blender = np.zeros((len(skeleton.BONES), 3))
        for name in names:
            blender[skeleton.BONE_INDEX[name]] = np.array(info["heads"][str(f)][name]) * 0.01
        ours = skeleton.forward_kinematics(live[f].rotations, live[f].hips_position)[0]
        a, b = bone_directions(blender, names), bone_directions(ours, names)
        worst = max(worst, float(np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1, 1))).max()))
        np.testing.assert_allclose(blender[0], live[f].hips_position, atol=1e-3)
    print(f"CMU -> Blender round trip: max bone-direction error {worst:.4f} deg")
    assert worst < 0.05


def test_blender_default_import_stands_upright_facing_the_front_view(tmp_path):
    """With Blender's default import axes (Forward -Z, Up Y) and scale 0.01, as docs/recording.md says:
    the T-pose stands on the floor, faces -Y (the Front view) and has its left hand on +X."""
    from avatar_bridge.bvh import write_bvh

    path = tmp_path / "rest.bvh"
    write_bvh(path, [0.0], [[0.0, 0.95, 0.0]], np.tile(quat.IDENTITY, (1, len(skeleton.BONES), 1)))
    info = blender_heads(path, [0], tmp_path, user_axes=True)
    heads, tails = info["heads"]["0"], info["heads"]["0_tails"]
    assert abs(heads["hips"][2] - 0.95) < 1e-4 and heads["head"][2] > heads["neck"][2] > heads["hips"][2]
    assert heads["leftHand"][0] > 0.5 and heads["rightHand"][0] < -0.5
    assert tails["leftToes"][1] < heads["leftToes"][1] - 0.03  # toes point to -Y
    assert min(tails["leftToes"][2], tails["rightToes"][2]) > -0.01  # feet on the floor, not below it
