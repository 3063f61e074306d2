"""``avatar-bridge bench-retarget``: the error measure and the command, on the CMU fixture."""

from __future__ import annotations

import json

import numpy as np
from conftest import MOCAP, need

from avatar_bridge import cli
from avatar_bridge.bench.retarget import (
    LIMB_BONES,
    SCENARIOS,
    camera_to_world,
    format_table,
    recovered_directions,
    run_scenario,
    summarize,
    true_directions,
)
from avatar_bridge.camera import PinholeCamera
from avatar_bridge.synthetic import SyntheticSource


def test_error_measure_is_zero_for_the_true_rig():
    """Directions from a rig's rotations (what the bench reads from a RigPose) match its joints."""
    source = SyntheticSource(duration=4.0, realtime=False, seed=5)
    for frame in source:
        got = recovered_directions(frame.truth.rigs[0].rotations, np.eye(3))
        truth = true_directions(frame.truth.joints3d.astype(np.float64))
        for bone in LIMB_BONES:
            a, b = got[bone], truth[bone] / np.linalg.norm(truth[bone])
            assert float(a @ b) > np.cos(np.radians(0.01)), bone


def test_camera_to_world_turns_camera_axes_into_world_axes():
    camera = PinholeCamera.orbit(45.0, distance=3.0, height=1.0)
    m = camera_to_world(camera)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    # "Towards the camera" in the retargeter's frame is the direction from the target to the camera.
    toward = (camera.position - camera.target) / np.linalg.norm(camera.position - camera.target)
    np.testing.assert_allclose(m @ np.array([0.0, 0.0, 1.0]), toward, atol=1e-12)
    np.testing.assert_allclose(m @ np.array([0.0, 1.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-12)


def test_frontal_clean_meets_the_issue_floors_and_beats_planar():
    path = need(MOCAP)
    ours = summarize(run_scenario(path, SCENARIOS[0], "foreshortening"))
    planar = summarize(run_scenario(path, SCENARIOS[0], "planar"))
    print(f"limbs ours {ours['limbs']['median']:.1f}/{ours['limbs']['p90']:.1f} planar {planar['limbs']['median']:.1f}/{planar['limbs']['p90']:.1f}")
    assert ours["limbs"]["median"] <= 10.0 and ours["limbs"]["p90"] <= 35.0
    assert ours["limbs"]["median"] < planar["limbs"]["median"] - 5.0
    assert set(ours) == set(LIMB_BONES) | {"limbs", "hips", "shoulders", "spine"}


def test_command_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench-retarget", "--clip", str(need(MOCAP)), "--quick", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| cmu_131_01_walk | frontal, clean | 0 | foreshortening |" in table and "| frontal, clean | 0 | planar |" in table
    assert "floor frontal, clean limbs median <= 10" in table and "camera yaw 0 deg, distance fitted" in table
    results = json.loads(out.read_text())
    assert [r["depth"] for r in results] == ["foreshortening", "planar"]
    assert results[0]["frames"] > 200 and results[0]["in_frame_frames"] == results[0]["frames"]  # fitted camera
    assert results[0]["out_of_frame"] is None
    limbs = results[0]["bones"]["limbs"]
    row = next(line for line in table.splitlines() if line.startswith("| cmu_131_01_walk | frontal, clean | 0 | foreshortening |"))
    assert f"| {limbs['median']:.1f} / {limbs['p90']:.1f} |" in row  # the table shows the JSON's numbers


def test_many_clips_camera_placement_and_the_out_of_frame_split(tmp_path, capsys):
    """Two clips, a close camera that loses the legs, two seeds, a 60-frame slice: every clip gets its
    rows, noisy scenarios one per seed, and in-frame and out-of-frame frames are counted apart."""
    from test_amp import write_amp

    npy = write_amp(tmp_path / "walk.npy", frames=120, walk=2.0)
    out = tmp_path / "r.json"
    assert cli.main(["bench-retarget", "--clip", str(need(MOCAP)), str(npy), "--frames", "60", "--camera-distance", "2.0",
                     "--camera-height", "1.5", "--camera-yaw", "10", "--seeds", "0", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert {r["clip"] for r in results} == {str(need(MOCAP)), str(npy)}
    assert "camera yaw 10 deg, distance 2 m, height 1.5 m" in table
    noisy = [r for r in results if r["noise_px"] > 0]
    assert sorted({r["seed"] for r in noisy}) == [0, 1] and {r["seed"] for r in results if r["noise_px"] == 0} == {0}
    assert len(results) == 2 * (2 + 2 * 2) * 2
    cmu = [r for r in results if r["clip"] == str(need(MOCAP))]
    assert all(r["frames"] == 60 for r in cmu)
    # At 2 m from the middle of the walk the legs leave the image: both splits are populated.
    assert any(0 < r["in_frame_frames"] < r["frames"] and r["out_of_frame"] is not None for r in results)
    for r in results:
        if r["in_frame_frames"] == 0:
            assert r["bones"] is None and "| - |" in table
    assert "| walk | 45 deg, noise 3 px + stabilizer | 1 | foreshortening |" in table


def test_command_reports_a_missing_file_in_one_line(tmp_path, capsys):
    assert cli.main(["bench-retarget", "--clip", str(tmp_path / "none.bvh")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.bvh not found" in err and "--clip" in err and "\n" not in err


def test_format_table_marks_unmet_floors():
    bones = {b: {"median": 20.0, "p90": 50.0} for b in list(LIMB_BONES) + ["limbs", "hips", "shoulders", "spine"]}
    text = format_table([{"clip": "x.bvh", "seed": 0, "scenario": "frontal, clean", "depth": "foreshortening", "frames": 10,
                          "in_frame_frames": 10, "bones": bones, "out_of_frame": None}])
    assert "NOT MET" in text
    bones["hips"] = {"median": 10.0, "p90": 20.0}
    text = format_table([{"clip": "x.bvh", "seed": 0, "scenario": "frontal, clean", "depth": "foreshortening", "frames": 10,
                          "in_frame_frames": 10, "bones": bones, "out_of_frame": None}])
    assert "floor frontal, clean hips median <= 15: worst 10.0 (x, seed 0) met" in text
    assert "floor frontal, clean limbs median <= 10: worst 20.0 (x, seed 0) NOT MET" in text
