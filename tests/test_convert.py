"""convert: every frame in video time, outputs with the source's frame count, the overwrite rule,
bad inputs, handedness of the exported motion, workers and Ray, progress and the summary."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LIGHT_DETECTOR, MOCAP, POSE_ONNX, ROOT, VFR_VIDEO, VIDEO, need, vfr_container_times

from avatar_bridge.bvh import load_bvh
from avatar_bridge.capture import VideoFileSource
from avatar_bridge.cli import main
from avatar_bridge.commands.convert import Progress, plan_outputs
from avatar_bridge.convert import uneven_frame_rate
from avatar_bridge.record import read_recording


def model_args() -> list[str]:
    need(LIGHT_DETECTOR)
    return ["--model", str(need(POSE_ONNX)), "--detector", "light-person-detector",
            "--detector-dir", str(LIGHT_DETECTOR.parent.parent)]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def no_partials(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".partial-" in p.name], "a temporary file was left behind"


def test_vfr_video_every_frame_in_container_time(tmp_path, capsys):
    """cases/vfr.mp4: 48 JSON Lines whose PTS are the container's times (1 ms), a 48-frame take in
    video time, and the BVH resampled to 30 fps lasts the video's 3.0 s."""
    out = tmp_path / "vfr.bvh"
    assert main(["convert", str(need(VFR_VIDEO)), "-o", str(out), "--formats", "bvh,jsonl,abrec", "--fps", "30",
                 "--json", *model_args()]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = jsonl(tmp_path / "vfr.jsonl")
    assert len(lines) == 48 and [line["frame"] for line in lines] == list(range(48))
    pts = [line["pts"] for line in lines]
    with VideoFileSource(VFR_VIDEO, realtime=False) as source:  # the container's own times
        container = [frame.pts for frame in source]
    assert np.max(np.abs(np.array(pts) - container)) < 0.001
    assert pts[:29] == pytest.approx(vfr_container_times(), abs=0.001)
    person = lines[30]["people"][0]
    assert len(person["keypoints"]) == 17 and len(person["keypoints"][0]) == 3 and len(person["box"]) == 4
    assert "hips" in person and len(person["rotations"]["leftUpperLeg"]) == 4
    bvh = load_bvh(out)
    assert bvh.num_frames == 90 and bvh.fps == pytest.approx(30.0) and bvh.duration == pytest.approx(3.0, abs=1e-4)
    take = read_recording(tmp_path / "vfr.abrec")
    assert len(take) == 48 and take.header.timeline == "video" and take.header.handedness == "performer"
    assert take.frame_table["timestamp"] == pytest.approx(container, abs=1e-6)
    result = summary["results"][0]
    assert result["frames"] == 48 and result["expected_frames"] == 48 and result["duration"] == pytest.approx(3.0, abs=0.002)
    assert set(result["ms_per_frame"]) >= {"decode", "pose", "smooth", "retarget", "write"}
    assert summary["total"]["failed"] == 0
    no_partials(tmp_path)


def test_fixture_video_outputs_have_the_source_frame_count(tmp_path, capsys):
    """Two people, 72 frames: JSON Lines, take and overlay video have 72 frames. Its frames are 1/30 s
    apart with one 0.2 s gap, so the BVH per track (no --fps) is resampled in video time at 30 fps:
    77 frames over its 2.533 s from first to last frame (it used to hold 72 frames at the average
    28.05 fps, which played the frames around the gap at the wrong speed)."""
    assert main(["convert", str(need(VIDEO)), "-o", str(tmp_path), "--formats", "jsonl,abrec,bvh,overlay",
                 "--track", "all", "--resize", "640x360", *model_args()]) == 0
    text = capsys.readouterr().out
    assert "converted" in text and "72 of 72 frames" in text and "ms per frame" in text
    stem = VIDEO.stem
    assert len(jsonl(tmp_path / f"{stem}.jsonl")) == 72
    assert len(read_recording(tmp_path / f"{stem}.abrec")) == 72
    cap = cv2.VideoCapture(str(tmp_path / f"{stem}.overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 72
    tracks = sorted(tmp_path.glob(f"{stem}.track*.bvh"))
    assert len(tracks) >= 2  # two people
    for path in tracks:
        bvh = load_bvh(path)
        assert bvh.num_frames == 77 and bvh.fps == pytest.approx(30.0)
    no_partials(tmp_path)


def take_from_mocap(tmp_path: Path, name: str = "walk.abrec", frames: int = 90) -> Path:
    """A small camera-less input: the CMU walk's first frames converted to a take (no models)."""
    clip = tmp_path / name
    assert main(["convert", str(need(MOCAP)), "-o", str(clip), "--smoother", "none"]) == 0
    return clip


def test_overwrite_rule_and_camera_less_sources(tmp_path, capsys):
    """A .bvh mocap clip and an .abrec take convert without models; an existing output is refused
    (untouched) until --overwrite; the take converts on with every frame and its times."""
    take = take_from_mocap(tmp_path)
    source_frames = len(read_recording(take))
    out = tmp_path / "again.jsonl"
    assert main(["convert", str(take), "-o", str(out)]) == 0
    lines = jsonl(out)
    assert len(lines) == source_frames
    assert lines[3]["pts"] == pytest.approx(3 / 30.0, abs=1e-6)
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["convert", str(take), "-o", str(out)]) == 2
    assert "already exists: choose another name or pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["convert", str(take), "-o", str(out), "--overwrite"]) == 0
    no_partials(tmp_path)


def test_track_all_refuses_to_replace_per_track_bvh_files(tmp_path, capsys):
    """``--track all`` names its BVH files after the tracks it finds (NAME.trackID.bvh); an earlier
    run's files are refused, untouched, until --overwrite, like every other output."""
    take = take_from_mocap(tmp_path)
    out = tmp_path / "motion.bvh"
    assert main(["convert", str(take), "-o", str(out), "--track", "all", "--formats", "bvh"]) == 0
    assert ", 1 person, " in capsys.readouterr().out  # one person in the take (not "1 people")
    written = sorted(tmp_path.glob("motion.track*.bvh"))
    assert written and not out.exists()
    before = {f: f.read_bytes() for f in written}
    capsys.readouterr()
    assert main(["convert", str(take), "-o", str(out), "--track", "all", "--formats", "bvh"]) == 2
    err = capsys.readouterr().err
    assert f"{written[0]} already exists: choose another name or pass --overwrite" in err
    assert {f: f.read_bytes() for f in written} == before
    # Names that only look alike are not ours: motion.trackX.bvh is left out of the rule.
    (tmp_path / "motion.trackX.bvh").write_text("someone else's")
    assert main(["convert", str(take), "-o", str(out), "--track", "all", "--formats", "bvh", "--overwrite"]) == 0
    assert (tmp_path / "motion.trackX.bvh").read_text() == "someone else's"
    no_partials(tmp_path)


def test_bad_inputs_fail_cleanly_and_others_still_convert(tmp_path, capsys):
    """Not a video, a video cut in half, a folder with both: one line each, no file left that looks
    complete, the good input converts, exit status 1 says some failed; a re-run skips what is complete."""
    folder = tmp_path / "in"
    folder.mkdir()
    take_from_mocap(folder, "good.abrec")
    (folder / "junk.mp4").write_bytes(b"this is not a video" * 100)
    data = need(VFR_VIDEO).read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    capsys.readouterr()
    status = main(["convert", str(folder), "-o", str(out), "--formats", "jsonl,bvh", "--workers", "1", *model_args()])
    text = capsys.readouterr().out
    assert status == 1
    assert "FAILED" in text and "junk.mp4" in text and "cut.mp4" in text and "1 converted" in text and "2 failed" in text
    failed_lines = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert len(failed_lines) == 2
    assert sorted(p.name for p in out.iterdir()) == ["good.bvh", "good.jsonl"]
    # A re-run: the complete input is skipped, the bad ones fail again.
    status = main(["convert", str(folder), "-o", str(out), "--formats", "jsonl,bvh", "--workers", "1", *model_args()])
    assert status == 1 and "skipped" in capsys.readouterr().out
    # One input alone: its failure is the command's one-line error (exit 2).
    assert main(["convert", str(folder / "junk.mp4"), "-o", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be opened" in err[0]
    no_partials(out)


def thigh_elevation(positions: np.ndarray, hip: int, knee: int) -> np.ndarray:
    """Angle (radians) between a thigh (hip to knee) and straight down (Y up): how far it is lifted,
    whatever way the body faces."""
    d = positions[:, knee] - positions[:, hip]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.arccos(np.clip(-d[:, 1], -1.0, 1.0))


def test_vfr_video_without_fps_is_resampled_in_video_time(tmp_path, caplog):
    """Without --fps a BVH used to get one frame per video frame at the average rate, so a
    variable-frame-rate video (here 100 ms apart, then 25 ms) played its first half too fast and its
    second too slow, silently (found by a new user). Now the BVH is resampled by presentation time at
    the rate of the fast part, and a warning says so and names --fps."""
    out = tmp_path / "vfr.bvh"
    with caplog.at_level("WARNING", logger="avatar_bridge.convert"):
        assert main(["convert", str(need(VFR_VIDEO)), "-o", str(out), "--formats", "bvh,jsonl", *model_args()]) == 0
    pts = [line["pts"] for line in jsonl(tmp_path / "vfr.jsonl")]
    bvh = load_bvh(out)
    assert bvh.fps == pytest.approx(41.0)  # 1 / the shortest tenth of the intervals (24.4 ms), rounded
    assert (bvh.num_frames - 1) / bvh.fps == pytest.approx(pts[-1] - pts[0], abs=1.0 / bvh.fps)
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and "unevenly spaced" in warning[0] and "41 fps" in warning[0] and "--fps" in warning[0]
    no_partials(tmp_path)


def test_uneven_frame_rate_rule():
    assert uneven_frame_rate(np.arange(30) / 30.0) is None  # even: one BVH frame per video frame
    assert uneven_frame_rate(np.arange(30) / 30.0 + np.random.default_rng(0).uniform(-0.003, 0.003, 30)) is None
    dropped = np.delete(np.arange(60) / 30.0, [20, 40])  # two dropped frames of a 30 fps video
    assert uneven_frame_rate(dropped) == 30.0
    assert uneven_frame_rate(np.concatenate([np.arange(10) * 0.1, 1.0 + np.arange(1, 20) * 0.025])) == 40.0
    assert uneven_frame_rate(np.array([0.0, 1.0])) is None


def test_first_bvh_frame_is_the_performers_pose_not_the_rest_pose(tmp_path):
    """Live, the retargeter solves the first frames while it is still calibrating and the very first
    at rest; offline, convert measures the calibration over the track first and then solves every
    frame with it. (A new user saw every converted BVH start with one rest-pose frame: the avatar
    jumped from an A-pose in Blender.) Consecutive frames at 30 fps differ by a few degrees."""
    out = tmp_path / "walk.bvh"
    assert main(["convert", str(need(MOCAP)), "-o", str(out)]) == 0
    angles = load_bvh(out).motion[:, 3:]  # rotation channels, degrees (the root's position left out)
    step = lambda a, b: np.abs((a - b + 180.0) % 360.0 - 180.0).max()  # noqa: E731 (wrapped angle difference)
    first, typical = step(angles[0], angles[1]), np.median([step(angles[i], angles[i + 1]) for i in range(1, 60)])
    assert first < 3 * typical + 2.0, (first, typical)  # was over 50 degrees: the rest pose's arms


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc/self (a folder nobody can write into)")
def test_output_folder_that_cannot_be_written_is_refused_before_decoding(tmp_path, capsys):
    """Found by a new user: ``-o`` in a read-only folder failed only after the whole video was
    decoded, naming the temporary file. Now it is refused at once, naming the folder."""
    assert main(["convert", str(need(MOCAP)), "-o", "/proc/self/out.bvh"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "folder /proc/self for output out.bvh is not writable" in err[0], err


def test_cmu_walk_exported_with_defaults_keeps_the_performers_sides(tmp_path):
    """The BVH's left thigh moves with the performer's left thigh (the mirror is a view option);
    --mirror gives the selfie image, whose left thigh follows the performer's right."""
    mocap = load_bvh(need(MOCAP))
    performer = mocap.world_positions()
    left_in = thigh_elevation(performer, mocap.index("LeftHip"), mocap.index("LeftKnee"))
    right_in = thigh_elevation(performer, mocap.index("RightHip"), mocap.index("RightKnee"))
    times_in = np.arange(mocap.num_frames) / mocap.fps
    correlations = {}
    for mirror in (False, True):
        out = tmp_path / f"walk{int(mirror)}.bvh"
        assert main(["convert", str(MOCAP), "-o", str(out), *(["--mirror"] if mirror else [])]) == 0
        bvh = load_bvh(out)
        left_out = thigh_elevation(bvh.world_positions(), bvh.index("leftUpperLeg"), bvh.index("leftLowerLeg"))
        times_out = np.arange(bvh.num_frames) / bvh.fps
        correlations[mirror] = tuple(float(np.corrcoef(left_out, np.interp(times_out, times_in, x))[0, 1])
                                     for x in (left_in, right_in))
    with_left, with_right = correlations[False]
    assert with_left > 0.6 and with_left > with_right + 0.5, correlations
    mirror_left, mirror_right = correlations[True]
    assert mirror_right > 0.6 and mirror_right > mirror_left + 0.5, correlations


def test_workers_convert_files_in_parallel_processes(tmp_path, capsys):
    """--workers 2 on two takes (camera-less, no models): both converted, identical to one worker."""
    folder = tmp_path / "in"
    folder.mkdir()
    first = take_from_mocap(folder, "a.abrec")
    shutil.copy(first, folder / "b.abrec")
    capsys.readouterr()
    assert main(["convert", str(folder), "-o", str(tmp_path / "w2"), "--formats", "jsonl", "--workers", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"]["converted"] == 2 and summary["total"]["workers"] == 2
    assert main(["convert", str(folder), "-o", str(tmp_path / "w1"), "--formats", "jsonl", "--workers", "1"]) == 0
    for name in ("a.jsonl", "b.jsonl"):
        assert (tmp_path / "w2" / name).read_text() == (tmp_path / "w1" / name).read_text()


def test_ray_runs_the_same_jobs_on_a_local_runtime(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'avatar-bridge[ray]'")
    folder = tmp_path / "in"
    folder.mkdir()
    first = take_from_mocap(folder, "a.abrec")
    shutil.copy(first, folder / "b.abrec")
    (folder / "bad.bvh").write_text("HIERARCHY\nnot a bvh\n")
    capsys.readouterr()
    status = main(["convert", str(folder), "-o", str(tmp_path / "out"), "--formats", "jsonl", "--ray", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 1 and summary["total"]["converted"] == 2 and summary["total"]["failed"] == 1
    assert main(["convert", str(folder), "-o", str(tmp_path / "w1"), "--formats", "jsonl", "--workers", "1"]) == 1
    assert (tmp_path / "out" / "a.jsonl").read_text() == (tmp_path / "w1" / "a.jsonl").read_text()


def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'avatar-bridge[ray]'")
    take = take_from_mocap(tmp_path)
    capsys.readouterr()
    assert main(["convert", str(take), "-o", str(tmp_path / "x.jsonl"), "--ray", "ray://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "cannot reach the Ray cluster at ray://127.0.0.1:1" in err[-1]
    assert not (tmp_path / "x.jsonl").exists()


def test_progress_lines_when_not_a_terminal(monkeypatch):
    from avatar_bridge.commands import convert as convert_command

    monkeypatch.setattr(convert_command, "PROGRESS_LOG_INTERVAL_S", 0.0)
    stream = io.StringIO()
    progress = Progress(200, quiet=False, stream=stream)
    progress.add(50)
    progress.add(50)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("convert: 100/200 frames (50%)") and "frames/s, ETA" in lines[1]
    quiet = io.StringIO()
    Progress(10, quiet=True, stream=quiet).add(5)
    assert quiet.getvalue() == ""


def test_output_plan(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    plan = plan_outputs([a], str(tmp_path / "x.bvh"), "bvh,jsonl,overlay")
    assert plan[a] == {"bvh": tmp_path / "x.bvh", "jsonl": tmp_path / "x.jsonl", "overlay": tmp_path / "x.overlay.mp4"}
    with pytest.raises(ValueError, match="pass -o FOLDER"):
        plan_outputs([a, b], str(tmp_path / "x.bvh"), None)
    with pytest.raises(ValueError, match="unknown"):
        plan_outputs([a], str(tmp_path / "out"), "fbx")
    folder = plan_outputs([a, b], str(tmp_path / "out"), None)
    assert folder[b] == {k: tmp_path / "out" / f"b.{k}" for k in ("jsonl", "abrec", "bvh")}


def test_module_entry_point_with_progress_lines(tmp_path):
    """`python -m avatar_bridge convert` in a subprocess (stderr a pipe): summary on stdout."""
    take = take_from_mocap(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "avatar_bridge", "convert", str(take), "-o", str(tmp_path / "t.bvh"),
                           "--fps", "60"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "converted" in proc.stdout and "t.bvh" in proc.stdout
    assert load_bvh(tmp_path / "t.bvh").fps == pytest.approx(60.0)


@pytest.mark.parametrize("command", [["run", "--bvh", "{tmp}/x.bvh"], ["run", "--record", "{tmp}/x.abrec"],
                                     ["record", "-o", "{tmp}/x.abrec"]])
def test_fast_never_writes_time_stretched_files(tmp_path, capsys, command):
    """`run --fast --bvh` wrote 13 s of slow motion for a 3.4 s video; now it is refused with the
    route that writes video time (convert), and nothing is written."""
    argv = [part.format(tmp=tmp_path) for part in command]
    assert main([*argv, "--source", str(need(VFR_VIDEO)), "--fast", "--headless", "--no-vmc", "--no-ws"]) == 2
    err = capsys.readouterr().err
    assert "stretched in time" in err and "avatar-bridge convert" in err
    assert list(tmp_path.iterdir()) == []


def test_bench_convert_reports_bound_overhead_and_workers(tmp_path, capsys):
    """bench-convert on the VFR clip: every figure present and finite (speed is never asserted)."""
    out = tmp_path / "bench.json"
    args = model_args()
    assert main(["bench-convert", "--clip", str(need(VFR_VIDEO)), "--model", args[1], "--detector-dir", args[5],
                 "--repeats", "1", "--copies", "2", "--formats", "jsonl", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model bound:" in text and "overhead" in text and "workers: 1 ->" in text and "load" in text
    figures = json.loads(out.read_text())
    assert figures["frames"] == 48
    for key in ("decode_ms", "bound_ms", "convert_ms", "overhead", "workers_speedup"):
        assert np.isfinite(figures[key]), key
    assert figures["bound_ms"] >= figures["decode_ms"] > 0 and set(figures["stage_ms"]) >= {"pose", "retarget", "smooth"}


def test_video_that_ends_early_writes_nothing(tmp_path, capsys):
    """An AVI cut in half decodes its first frames, then ends before the frame count its container
    announces: one line naming the fix, and no output (nor temporary file) left behind."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(40):
        writer.write(np.full((120, 160, 3), 6 * i, np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(cut), "-o", str(out / "cut.jsonl"), "--formats", "jsonl,bvh,overlay", *model_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "ended after" in err[-1] and "of the 40 frames its container announces" in err[-1] and "re-encode" in err[-1]
    assert list(out.iterdir()) == []


def test_chunks_join_tracks_over_the_overlap():
    """merge_chunks: a later chunk's own track ids are matched to the earlier chunk's over the
    overlap frames (here swapped: its 1 is the earlier 2), a new person gets a new id."""
    from avatar_bridge.convert import EstimatedFrames, FrameRecord, merge_chunks, plan_chunks
    from avatar_bridge.types import Pose2D

    assert plan_chunks(72, 28, 10) == [(0, 0, 28), (18, 28, 56), (46, 56, 72)]

    def person(x: float, track: int) -> Pose2D:
        kp = np.stack([np.full(17, x), np.linspace(100.0, 400.0, 17)], axis=-1).astype(np.float32)
        return Pose2D(kp, np.ones(17, np.float32), None, track)

    a = EstimatedFrames([FrameRecord(i, i / 30, [person(100 + i, 1), person(500 - i, 2)], 1) for i in range(10)],
                        640, 480, 30.0, 15, {"pose": 10.0})
    b_records = [FrameRecord(i, i / 30, [person(500 - i, 1), person(100 + i, 2)] + ([person(300, 7)] if i >= 12 else []), 2)
                 for i in range(5, 15)]
    b = EstimatedFrames(b_records, 640, 480, 30.0, 15, {"pose": 5.0}, first_frame=10)
    merged = merge_chunks([a, b])
    assert [r.index for r in merged.records] == list(range(15))
    assert merged.stage_ms["pose"] == 15.0
    late = merged.records[13]
    ids = {round(float(p.keypoints[0, 0])): p.track_id for p in late.people}
    assert ids == {113: 1, 487: 2, 300: 3} and late.driver == 1  # chunk b's driver 2 is track 1


def test_ray_chunks_of_one_video_match_the_whole(tmp_path, capsys):
    """--ray --chunk-seconds 1 on the fixture video: 3 chunk tasks, joined into the same 72 frames,
    times and two continuous tracks as converting it whole."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'avatar-bridge[ray]'")
    common = ["--formats", "jsonl,bvh", "--track", "all", "--resize", "640x360", *model_args()]
    assert main(["convert", str(need(VIDEO)), "-o", str(tmp_path / "whole"), *common]) == 0
    assert main(["convert", str(VIDEO), "-o", str(tmp_path / "chunks"), "--ray", "--chunk-seconds", "1",
                 "--overlap", "10", *common]) == 0
    whole, chunks = (jsonl(tmp_path / d / f"{VIDEO.stem}.jsonl") for d in ("whole", "chunks"))
    assert len(chunks) == 72 and [c["pts"] for c in chunks] == [w["pts"] for w in whole]
    assert [c["frame"] for c in chunks] == list(range(72))
    ids = lambda lines: sorted({p["track_id"] for line in lines for p in line["people"]})
    assert len(ids(chunks)) == len(ids(whole)) == 2
    assert [len(c["people"]) for c in chunks] == [len(w["people"]) for w in whole]
    assert len(list((tmp_path / "chunks").glob("*.bvh"))) == 2
