"""Shared test helpers: where the third-party fixtures are, and a skip when they are absent."""

from __future__ import annotations

import os
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


def need(path: Path) -> Path:
    """Skip the calling test with a reason when a fixture file is missing."""
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (../shared/fixtures is provided in CI)")
    return path
