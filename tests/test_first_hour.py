"""What a new user meets first: the test script, overwrite rules, summaries, help texts, hints."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_bridge import cli
from avatar_bridge.capture import VideoFileSource

ROOT = Path(__file__).resolve().parent.parent


def test_ci_script_leaves_the_users_venv_alone(tmp_path):
    """`bash .ci/run` builds its own environment; the `.venv` the README's run command made survives.

    The copy's Python is a stand-in that fails, so the script stops at its first venv step: the old
    script had already deleted `.venv` by then.
    """
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    marker = tmp_path / ".venv" / "bin" / "keep-me"
    marker.parent.mkdir(parents=True)
    marker.write_text("user's install")
    env = {**os.environ, "PYTHON": "false", "AVATAR_BRIDGE_CI_APT": "0"}
    env.pop("AVATAR_BRIDGE_CI_VENV", None)
    done = subprocess.run(["bash", ".ci/run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0  # the stand-in Python cannot make a venv
    assert "python venv for the tests: .venv-ci" in done.stdout
    assert marker.read_text() == "user's install"


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    path = tmp_path_factory.mktemp("take") / "take.abrec"
    assert cli.main(["record", "-o", str(path), "--source", "synthetic", "--headless", "--no-vmc", "--no-ws",
                     "--max-frames", "30", "--quiet"]) == 0
    return path


def test_record_says_what_it_wrote_and_refuses_to_overwrite(take, capsys, tmp_path):
    again = tmp_path / "again.abrec"
    assert cli.main(["record", "-o", str(again), "--source", "synthetic", "--headless", "--no-vmc", "--no-ws",
                     "--max-frames", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {again}: " in out and " frames, " in out and " MB" in out and "people (rig frames) #" in out
    before = again.read_bytes()
    assert cli.main(["record", "-o", str(again), "--source", "synthetic", "--headless", "--no-vmc", "--no-ws",
                     "--max-frames", "5", "--quiet"]) == 2
    assert "already exists: choose another name or pass --overwrite" in capsys.readouterr().err
    assert again.read_bytes() == before  # nothing touched
    # --overwrite with a source that cannot be opened: the old take survives the failed run
    assert cli.main(["record", "-o", str(again), "--source", str(tmp_path / "missing.mp4"), "--headless", "--no-vmc",
                     "--no-ws", "--max-frames", "5", "--quiet", "--overwrite"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert again.read_bytes() == before
    # ...and a run that records replaces it
    assert cli.main(["record", "-o", str(again), "--source", "synthetic", "--headless", "--no-vmc", "--no-ws",
                     "--max-frames", "5", "--quiet", "--overwrite"]) == 0
    assert again.read_bytes() != before


def test_export_bvh_refuses_an_existing_file_unless_overwrite(take, tmp_path, capsys):
    out = tmp_path / "take.bvh"
    out.write_text("someone's BVH")
    assert cli.main(["export-bvh", str(take), "-o", str(out)]) == 2
    assert "already exists: choose another name or pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "someone's BVH"
    assert cli.main(["export-bvh", str(take), "-o", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("HIERARCHY")
    assert f"wrote {out}: track " in capsys.readouterr().out


def test_run_help_states_the_default_source_and_what_fast_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "'synthetic' in the default preset" in help_text
    assert "refused with --record/--bvh, which would be stretched in time: use avatar-bridge convert" in help_text
    assert "frames the CPU cannot keep up with are dropped" in help_text


@pytest.mark.parametrize("command", ["bench-smoothing", "bench-retarget"])
def test_motion_benchmarks_name_the_flag_when_no_clip_is_given(command, capsys):
    assert cli.main([command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --clip FILE.bvh" in err


def write_clip(path: Path, fps: float, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    for i in range(frames):
        writer.write(np.full((120, 160, 3), i, np.uint8))
    writer.release()
    return path


def test_a_paced_video_that_drops_frames_says_how_to_process_every_frame(tmp_path, caplog):
    path = write_clip(tmp_path / "clip.avi", 30.0, 90)
    with caplog.at_level(logging.WARNING, logger="avatar_bridge.capture"):
        with VideoFileSource(path, realtime=True) as source:
            while source.read() is not None:
                time.sleep(0.1)  # a consumer at 10 frames/s against a 30 fps file
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "avatar-bridge convert" in warnings[0] and "clip.avi" in warnings[0]


def test_a_paced_video_that_keeps_up_says_nothing(tmp_path, caplog):
    path = write_clip(tmp_path / "slow.avi", 10.0, 40)
    with caplog.at_level(logging.WARNING, logger="avatar_bridge.capture"):
        with VideoFileSource(path, realtime=True) as source:
            frames = sum(1 for _ in source)
    assert frames >= 38
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
