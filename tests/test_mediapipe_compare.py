"""The MediaPipe comparison: frames loading and the frames file, our timing loop, the runner's protocol
through real subprocesses, and MediaPipe itself when its venv is there.

MediaPipe runs in its own venv (``.venv-mediapipe``, or $AVATAR_BRIDGE_MEDIAPIPE_PYTHON); CI has none,
so the runner is run with this interpreter, where it must fail with its one-line errors, and the tests
that need MediaPipe skip with the reason.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar_bridge.bench import mediapipe_compare as mpc
from avatar_bridge.bench import mediapipe_runner
from avatar_bridge.capture import open_source
from avatar_bridge.config import AppConfig
from avatar_bridge.types import Frame
from conftest import LIGHT_DETECTOR, POSE_ONNX, VIDEO, need

HERE_HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


def mediapipe_python() -> Path:
    """MediaPipe's venv python, or a skip saying why there is none."""
    try:
        return mpc.find_mediapipe_python()
    except RuntimeError as exc:
        pytest.skip(f"no MediaPipe venv: {exc}")


def run_runner_here(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    """The runner as the parent runs it: a script under ``python``, isolated."""
    return subprocess.run([python, "-I", str(mpc.RUNNER), *args], capture_output=True, text=True, timeout=120)


def tiny_frames(n: int = 3, h: int = 8, w: int = 12) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [Frame(index=i, timestamp=0.0, width=w, height=h, image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for i in range(n)]


def video_config() -> AppConfig:
    need(VIDEO), need(POSE_ONNX), need(LIGHT_DETECTOR)
    config = AppConfig()
    config.source.source = str(VIDEO)
    config.source.resize = "640x360"
    config.pose.model = str(POSE_ONNX)
    config.detector.name = f"yolox:{LIGHT_DETECTOR}"
    config.detector.people = "driver"
    return config


def test_summarize_computes_fps_from_the_frame_times():
    s = mpc.summarize([10.0, 10.0, 20.0])
    assert s["frames"] == 3
    assert s["ms_p50"] == 10.0
    assert s["fps"] == pytest.approx(1000 * 3 / 40, abs=0.1)


def test_load_frames_rejects_keypoint_sources():
    with pytest.raises(ValueError, match="image source"):
        mpc.load_frames(open_source("synthetic", duration=1.0, realtime=False), max_frames=3)


def test_frames_file_round_trip_through_the_runners_loader(tmp_path):
    frames = tiny_frames()
    path = mpc.write_frames(frames, tmp_path / "frames.npy")
    on_disk = np.load(path, mmap_mode="r")
    assert on_disk.shape == (3, 8, 12, 3) and on_disk.dtype == np.uint8
    loaded = mediapipe_runner.load_frames(str(path))  # the runner's own reading (numpy only)
    assert len(loaded) == 3
    for frame, image in zip(frames, loaded):
        assert image.flags.c_contiguous and not isinstance(image, np.memmap)
        np.testing.assert_array_equal(image, frame.image)


def test_write_frames_needs_one_size(tmp_path):
    frames = tiny_frames(2) + tiny_frames(1, h=10)
    with pytest.raises(ValueError, match="--resize"):
        mpc.write_frames(frames, tmp_path / "frames.npy")


def test_runner_imports_only_stdlib_numpy_and_mediapipe():
    """It runs under MediaPipe's python, where avatar_bridge and its dependencies are not installed."""
    import ast

    tree = ast.parse(mpc.RUNNER.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the runner is run as a script"
            imported.add(node.module.split(".")[0])
    allowed = {"numpy", "mediapipe", "cv2"} | set(sys.stdlib_module_names)
    assert imported <= allowed, imported - allowed


@pytest.mark.skipif(HERE_HAS_MEDIAPIPE, reason="mediapipe is installed in this interpreter")
def test_runner_under_a_python_without_mediapipe_says_so_in_one_line(tmp_path):
    path = mpc.write_frames(tiny_frames(), tmp_path / "frames.npy")
    for args in ([str(path)], ["--versions"]):
        done = run_runner_here(*args)
        assert done.returncode == 2 and done.stdout == ""
        err = done.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(mediapipe_runner.ERROR_PREFIX)
        assert f"mediapipe is not installed in {sys.executable}" in err[0]
        assert "python3 -m venv .venv-mediapipe" in err[0] and "pip install mediapipe==" in err[0]
    # the parent turns it into its own one-line error
    with pytest.raises(RuntimeError, match=r"the MediaPipe runner failed: mediapipe is not installed in "):
        mpc.run_runner(Path(sys.executable), str(path), "--repeats", "1")


@pytest.mark.parametrize("content, why", [
    (None, "cannot read frames from"),
    (b"not a numpy file", "cannot read frames from"),
    (np.zeros((2, 8, 8), np.uint8), r"must hold uint8 BGR frames shaped \(N, H, W, 3\)"),
    (np.zeros((2, 8, 8, 3), np.float32), r"must hold uint8 BGR frames .* not float32"),
    (np.zeros((0, 8, 8, 3), np.uint8), "N >= 1"),
])
def test_runner_rejects_a_bad_frames_file_in_one_line(tmp_path, content, why):
    path = tmp_path / "frames.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    done = run_runner_here(str(path))
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(mediapipe_runner.ERROR_PREFIX)
    assert re.search(why, err[0]), err[0]


def test_missing_mediapipe_python_says_how_to_create_it(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "bin" / "python"
    with pytest.raises(RuntimeError, match=r"--mediapipe-python .* does not exist: .*python3 -m venv .venv-mediapipe"):
        mpc.find_mediapipe_python(missing)
    monkeypatch.setenv(mpc.PYTHON_ENV, str(missing))
    with pytest.raises(RuntimeError, match=rf"\${mpc.PYTHON_ENV} .* does not exist"):
        mpc.find_mediapipe_python()
    with pytest.raises(RuntimeError, match="cannot run|not an executable"):
        mpc.run_runner(tmp_path, "--versions")  # a folder, not a python


def test_default_mediapipe_python_is_the_venv_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(mpc.PYTHON_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    root = mpc.project_root()
    if root is not None and (root / mpc.VENV_NAME).exists():
        pytest.skip(f"the checkout has its own {root / mpc.VENV_NAME}")
    with pytest.raises(RuntimeError, match=r"found none .*\.venv-mediapipe.*: create it: python3 -m venv"):
        mpc.find_mediapipe_python()
    python = tmp_path / mpc.VENV_NAME / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    assert mpc.find_mediapipe_python() == python


def test_time_pipeline_on_real_frames():
    config = video_config()
    frames = mpc.load_frames(open_source(str(VIDEO), resize=(640, 360), realtime=False), max_frames=6)
    assert len(frames) == 6 and frames[0].image.shape == (360, 640, 3)
    from avatar_bridge.pipeline import Pipeline

    prepared = Pipeline(config)
    prepared.prepare(images=True)
    pipeline = mpc.fresh_pipeline(config, prepared)
    assert pipeline.estimator is prepared.estimator and pipeline is not prepared
    ms, found, startup = mpc.time_pipeline(pipeline, frames, repeats=2, warmup=2)
    assert len(ms) == 12 and all(m > 0 for m in ms) and startup > 0
    assert found >= 10 and pipeline.latest is not None and len(pipeline.latest.people) >= 1
    overlapped = mpc.fresh_pipeline(config, prepared)
    fps, found = mpc.time_pipeline_overlapped(overlapped, frames, repeats=2, warmup=2)
    assert fps > 0 and found >= 10  # every measured frame finished, most with the person
    assert overlapped.metrics.frames == 2 + 12 and overlapped._pose_worker is None  # warm-up + measured; worker stopped


def test_compare_without_a_mediapipe_venv_fails_before_any_work(tmp_path):
    config = AppConfig()
    config.source.source = str(tmp_path / "no-such-video.mp4")  # never opened: the venv is checked first
    with pytest.raises(RuntimeError, match="does not exist: create MediaPipe's venv"):
        mpc.compare(config, python=tmp_path / "no-python")


# --- with MediaPipe's venv ---------------------------------------------------------------------------


def test_runner_runs_mediapipe_in_its_venv_on_the_frames_file(tmp_path):
    python = mediapipe_python()
    need(VIDEO)
    frames = mpc.load_frames(open_source(str(VIDEO), resize=(640, 360), realtime=False), max_frames=8)
    path = mpc.write_frames(frames, tmp_path / "frames.npy")
    result = mpc.run_runner(python, str(path), "--repeats", "2", "--warmup", "2")
    assert result["versions"]["mediapipe"] and result["versions"]["numpy"]
    assert result["frames"] == 8 and result["repeats"] == 2 and result["image_size"] == [640, 360]
    assert len(result["ms"]) == 16 and all(m > 0 for m in result["ms"]) and result["startup_ms"] > 0
    assert result["person_found"] >= 12


def test_compare_interleaves_runs_and_reports_each_ratio():
    python = mediapipe_python()
    result = mpc.compare(video_config(), python=python, max_frames=8, runs=2, repeats=1, warmup=1)
    assert [r["run"] for r in result["runs"]] == [1, 2]
    for run in result["runs"]:
        a, b = run["avatar_bridge"], run["mediapipe"]
        assert a["frames"] == b["frames"] == 8
        assert run["ratio_fps"] == pytest.approx(a["fps"] / b["fps"], abs=0.01)
        assert run["ratio_fps_overlapped"] == pytest.approx(run["avatar_bridge_overlapped"]["fps"] / b["fps"], abs=0.01)
    assert result["median_ratio_fps"] > 0 and result["median_ratio_fps_overlapped"] > 0
    assert os.path.samefile(result["versions"]["mediapipe"]["executable"], python)
    assert "numpy" in result["versions"]["avatar_bridge"] and len(result["machine"]["load_before"]) == 3
    text = mpc.format_comparison(result)
    assert "median" in text and "load average" in text
    json.dumps(result)  # JSON-ready
