"""Recording benchmark: size per minute, write cost per frame, read and BVH export speed.

    .venv/bin/python benchmarks/bench_record.py [--minutes 1] [--out DIR]

The motion is the CMU walk fixture (../shared/fixtures/mocap) through the mocap source and the
retargeter, looped to the requested length, one person at 30 fps: the same data a live run records
(2D keypoints with scores and boxes, 22 driven bones with confidences). Without the fixture it uses
a synthetic walk. Prints medians and p95s; numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatar_bridge import quat, skeleton  # noqa: E402
from avatar_bridge.bvh import write_bvh  # noqa: E402
from avatar_bridge.record import RecordingWriter, read_recording  # noqa: E402
from avatar_bridge.types import FramePoses, Pose2D, RigPose  # noqa: E402

MOCAP = ROOT.parent / "shared" / "fixtures" / "mocap" / "cmu_131_01_walk.bvh"
FPS = 30.0


def cmu_frames() -> list[tuple[Pose2D, RigPose]]:
    from avatar_bridge.config import RetargetConfig
    from avatar_bridge.mocap import MocapSource
    from avatar_bridge.retarget import Retargeter

    retargeter = Retargeter(RetargetConfig())
    out = []
    with MocapSource(MOCAP, fps=FPS) as source:
        for frame in source:
            person = frame.truth.people[0]
            rig = retargeter.solve(person.keypoints, person.scores, frame.timestamp, (frame.width, frame.height), 1)
            out.append((person, rig))
    return out


def synthetic_frames(n: int = 300) -> list[tuple[Pose2D, RigPose]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = i / FPS
        rotations = {name: quat.from_axis_angle(np.array([1.0, k, 0.5]), 0.5 * np.sin(2 * t + k)) for k, name in enumerate(skeleton.BODY_BONES)}
        confidence = {name: 0.9 for name in skeleton.BODY_BONES}
        kp = (rng.normal(size=(17, 2)) * 3 + 300).astype(np.float32)
        out.append((Pose2D(kp, np.full(17, 0.9, np.float32), np.array([0, 0, 600, 700], np.float32), 1),
                    RigPose(t, 1, np.array([0.0, 0.95, t]), rotations, confidence)))
    return out


def percentile_ms(values: list[float]) -> str:
    arr = np.asarray(values) * 1000.0
    return f"median {np.median(arr):.3f} ms, p95 {np.percentile(arr, 95):.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--out", default=None, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    source_frames = cmu_frames() if MOCAP.exists() else synthetic_frames()
    print(f"data: {'CMU walk retargeted' if MOCAP.exists() else 'synthetic walk'}, {len(source_frames)} distinct frames, "
          f"looped to {args.minutes:g} min at {FPS:g} fps, 1 person")
    count = int(args.minutes * 60 * FPS)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        for compress in (True, False):
            path = folder / f"bench_{'zlib' if compress else 'raw'}.abrec"
            costs = []
            with RecordingWriter(path, compress=compress, overwrite=True) as writer:
                for i in range(count):
                    person, rig = source_frames[i % len(source_frames)]
                    t = 1000.0 + i / FPS
                    rig = RigPose(t, 1, rig.hips_position, rig.rotations, rig.confidence, rig.tracking)
                    start = time.perf_counter()
                    writer.write(FramePoses(i, t, 1280, 720, [person]), [rig])
                    costs.append(time.perf_counter() - start)
            size = path.stat().st_size
            per_minute = size / args.minutes
            print(f"{'zlib' if compress else 'raw '}: {per_minute / 1e6:.3f} MB per minute -> {per_minute * 60 / 1e6:.1f} MB per hour; "
                  f"write() {percentile_ms(costs)} (includes the block flush every 0.5 s)")
            start = time.perf_counter()
            recording = read_recording(path)
            read_s = time.perf_counter() - start
            start = time.perf_counter()
            rig_track = recording.rig_track()
            track_s = time.perf_counter() - start
            start = time.perf_counter()
            frames = sum(1 for _ in recording.frames())
            objects_s = time.perf_counter() - start
            print(f"      read_recording {read_s * 1000:.0f} ms, rig_track {track_s * 1000:.0f} ms, "
                  f"{frames} frames as dataclasses {objects_s * 1000:.0f} ms")
            if compress:
                start = time.perf_counter()
                export = write_bvh(folder / "bench.bvh", rig_track.timestamps, rig_track.hips, rig_track.rotations, fps=30.0)
                bvh_s = time.perf_counter() - start
                print(f"      BVH export of {export.frames} frames: {bvh_s * 1000:.0f} ms, "
                      f"{(folder / 'bench.bvh').stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
