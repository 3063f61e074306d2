"""Shared test helpers: where the third-party fixtures are, and a skip when they are absent."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("AVATAR_BRIDGE_FIXTURES", ROOT.parent / "shared" / "fixtures"))

POSE_ONNX = FIXTURES / "models" / "ultralight-nano-simplepose" / "deploy.onnx"
YOLOX_NANO = FIXTURES / "models" / "yolox-nano" / "yolox_nano_416x416.onnx"
LIGHT_DETECTOR = FIXTURES / "models" / "light-person-detector" / "light_person_detector_192.onnx"
COCO_DIR = FIXTURES / "coco-sample"
VIDEO = FIXTURES / "video" / "two_people_walking_1080p.mp4"
MOCAP = FIXTURES / "mocap" / "cmu_131_01_walk.bvh"
MMPOSE1_CHECKPOINT = FIXTURES / "parity" / "mobilenetv2_coco_256x192-mmpose1.pth"
MMPOSE_REFERENCE = FIXTURES / "parity" / "mmpose_reference_mobilenetv2_256x192.npz"
VFR_VIDEO = FIXTURES / "cases" / "vfr.mp4"  # 48 frames: 0-23 100 ms apart, 24-47 25 ms apart


def vfr_container_times() -> list[float]:
    """The presentation times the fixture README lists for cases/vfr.mp4 (seconds), frames 0-28."""
    return [0.1 * i for i in range(24)] + [2.400, 2.424, 2.449, 2.475, 2.500]


def need(path: Path) -> Path:
    """Skip the calling test with a reason when a fixture file is missing."""
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (../shared/fixtures is provided in CI)")
    return path


def check_clock_starts_at_first_read(source, fps: float) -> None:
    """A paced source built a while before it is read (models loading in between) starts its clock
    at the first read: frame 0 is stamped then, and frame 1 waits its 1/fps, not rushed out."""
    time.sleep(0.3)
    before = time.monotonic()
    first, second = source.read(), source.read()
    after = time.monotonic()
    assert first.index == 0 and first.timestamp >= before
    assert second.timestamp == pytest.approx(first.timestamp + 1.0 / fps)
    assert after - before >= 0.9 / fps
