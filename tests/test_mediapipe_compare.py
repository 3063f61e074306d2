"""The MediaPipe comparison: frames loading, summaries, our timing loop, and MediaPipe when installed."""

import importlib.util

import numpy as np
import pytest

from avatar_bridge.bench import mediapipe_compare as mpc
from avatar_bridge.capture import open_source
from avatar_bridge.config import AppConfig
from conftest import LIGHT_DETECTOR, POSE_ONNX, VIDEO, need


def test_summarize_leaves_out_warmup_and_computes_fps():
    s = mpc.summarize([100.0, 100.0, 10.0, 10.0, 20.0], warmup=2)
    assert s["frames"] == 3
    assert s["ms_p50"] == 10.0
    assert s["fps"] == pytest.approx(1000 * 3 / 40, abs=0.1)


def test_load_frames_rejects_keypoint_sources():
    with pytest.raises(ValueError, match="image source"):
        mpc.load_frames(open_source("synthetic", duration=1.0, realtime=False), max_frames=3)


def test_time_pipeline_on_real_frames():
    need(VIDEO), need(POSE_ONNX), need(LIGHT_DETECTOR)
    config = AppConfig()
    config.source.source = str(VIDEO)
    config.pose.model = str(POSE_ONNX)
    config.detector.name = f"yolox:{LIGHT_DETECTOR}"
    frames = mpc.load_frames(open_source(str(VIDEO), resize=(640, 360), realtime=False), max_frames=6)
    assert len(frames) == 6 and frames[0].image.shape == (360, 640, 3)
    from avatar_bridge.pipeline import Pipeline

    pipeline = Pipeline(config)
    pipeline.prepare(images=True)
    ms = mpc.time_pipeline(pipeline, frames)
    assert len(ms) == 6 and all(m > 0 for m in ms)
    assert pipeline.latest is not None and len(pipeline.latest.people) >= 1


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
def test_missing_mediapipe_says_how_to_install():
    frame = mpc.Frame(index=0, timestamp=0.0, width=8, height=8, image=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RuntimeError, match=r"avatar-bridge\[mediapipe\]"):
        mpc.time_mediapipe([frame])


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="optional extra mediapipe not installed")
def test_mediapipe_runs_on_the_same_frames():
    need(VIDEO)
    frames = mpc.load_frames(open_source(str(VIDEO), resize=(640, 360), realtime=False), max_frames=10)
    ms, found = mpc.time_mediapipe(frames)
    assert len(ms) == 10 and found >= 5
