"""Side-by-side speed of our pipeline and MediaPipe Pose on the very same frames, in one process.

Used by ``avatar-bridge bench --compare-mediapipe``. Both sides get the frames already decoded (and
resized) in memory, so the comparison times person finding + pose estimation only, not video decoding.
MediaPipe Pose (BlazePose, ``model_complexity=1``, video mode) tracks one person, so compare it with
``--people driver``. MediaPipe is an optional extra: ``pip install 'avatar-bridge[mediapipe]'``.
"""

from __future__ import annotations

import time

import numpy as np

from ..capture import FrameSource
from ..metrics import median_p95
from ..types import Frame

MEDIAPIPE_VERSION = "0.10.14"


def load_frames(source: FrameSource, max_frames: int | None = None) -> list[Frame]:
    """Read the source to its end (or ``max_frames``) into memory."""
    frames = []
    with source:
        while max_frames is None or len(frames) < max_frames:
            frame = source.read()
            if frame is None:
                break
            if frame.image is None:
                raise ValueError("--compare-mediapipe needs an image source (a video, camera or image folder)")
            frames.append(frame)
    if not frames:
        raise ValueError("the source gave no frames to compare on")
    return frames


def summarize(ms: list[float], warmup: int) -> dict:
    """p50/p95 per frame and frames per second, leaving out the first ``warmup`` frames."""
    kept = np.asarray(ms[warmup:] if len(ms) > warmup else ms, dtype=np.float64)
    return {
        "frames": int(kept.size),
        "ms_p50": round(median_p95(kept)[0], 2),
        "ms_p95": round(median_p95(kept)[1], 2),
        "fps": round(1000.0 * kept.size / float(kept.sum()), 1),
    }


def time_pipeline(pipeline, frames: list[Frame], repeats: int = 1) -> list[float]:
    """Milliseconds of ``pipeline.process`` per frame; frames get fresh capture timestamps."""
    out = []
    index = 0
    for _ in range(repeats):
        for f in frames:
            frame = Frame(index=index, timestamp=time.monotonic(), width=f.width, height=f.height, image=f.image)
            t0 = time.perf_counter()
            pipeline.process(frame)
            out.append((time.perf_counter() - t0) * 1000.0)
            index += 1
    return out


def time_mediapipe(frames: list[Frame], repeats: int = 1, model_complexity: int = 1) -> tuple[list[float], int]:
    """Milliseconds of MediaPipe Pose per frame (BGR->RGB conversion included, as its users must do),
    and on how many frames it found a person."""
    try:
        import cv2
        import mediapipe as mp
    except ImportError as exc:
        raise RuntimeError(
            f"--compare-mediapipe needs mediapipe=={MEDIAPIPE_VERSION}: pip install 'avatar-bridge[mediapipe]' ({exc})"
        ) from None
    out = []
    found = 0
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=model_complexity) as pose:
        for _ in range(repeats):
            for f in frames:
                t0 = time.perf_counter()
                result = pose.process(cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB))
                out.append((time.perf_counter() - t0) * 1000.0)
                found += result.pose_landmarks is not None
    return out, found


def compare(config, max_frames: int | None = None, repeats: int = 3, warmup: int = 5) -> dict:
    """Run both on the configured source's frames; returns a JSON-ready dict."""
    from ..pipeline import Pipeline, open_config_source

    frames = load_frames(open_config_source(config), max_frames)
    pipeline = Pipeline(config)
    pipeline.prepare(images=True)
    ours = time_pipeline(pipeline, frames, repeats)
    theirs, found = time_mediapipe(frames, repeats)
    a, b = summarize(ours, warmup), summarize(theirs, warmup)
    return {
        "frames": len(frames),
        "repeats": repeats,
        "image_size": [frames[0].width, frames[0].height],
        "avatar_bridge": a,
        "mediapipe": {**b, "model_complexity": 1, "person_found_frames": found},
        "speedup_fps": round(a["fps"] / b["fps"], 2) if b["fps"] else None,
    }


def format_comparison(result: dict) -> str:
    a, b = result["avatar_bridge"], result["mediapipe"]
    w, h = result["image_size"]
    return "\n".join([
        f"same {result['frames']} frames x {result['repeats']} at {w}x{h}, decoded in memory, one process",
        f"{'':<22}{'ms p50':>10}{'ms p95':>10}{'fps':>10}",
        f"{'avatar-bridge':<22}{a['ms_p50']:>10.2f}{a['ms_p95']:>10.2f}{a['fps']:>10.1f}",
        f"{'mediapipe pose (c=1)':<22}{b['ms_p50']:>10.2f}{b['ms_p95']:>10.2f}{b['fps']:>10.1f}",
        f"avatar-bridge / mediapipe frames per second: {result['speedup_fps']}x",
    ])
