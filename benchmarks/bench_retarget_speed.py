"""Retargeter speed benchmark and golden-output recorder (issue #19).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_retarget_speed.py [--save GOLDEN.npz] [--compare GOLDEN.npz]
        [--frames N] [--profile] [--stabilizer] [--depth-prior default|""|PATH]

Plays the CMU walk (``../shared/fixtures/mocap/cmu_131_01_walk.bvh``) and the AMP clips
(``../shared/fixtures/mocap/amp/*.npy``) through :class:`~avatar_bridge.mocap.MocapSource` and one
:class:`~avatar_bridge.retarget.Retargeter` per clip and scenario, the way the live pipeline drives
it: per pose update ``Retargeter.update`` then two output ticks ``Retargeter.solve(..., advance=False)``
(at the update's time and 1/60 s later, 60 Hz output over 30 fps poses). Scenarios: fitted frontal
camera clean; 3 px Gaussian noise through the default stabilizer; 45 degrees round with noise and
occlusions (an arm, a leg or the face unseen for stretches, so the unseen-bone policy holds and eases);
and the offline path (``solve(advance=True)``) on the clean frames.

Timestamps are the clip's own time (frame index / fps), so every run sees the same inputs.

Prints median and p95 milliseconds per ``update`` and per ``solve`` call (single thread, wall clock)
with the load average (``os.getloadavg``) before and after: timings depend on the machine's load.
``--save`` writes every output RigPose (rotations in sorted bone order, hips position, confidence,
tracking) to an .npz; ``--compare`` reports the largest absolute difference against such a file
(quaternion components, hips metres, confidences; the sign of a quaternion counts: the output's
sign is part of its continuity contract). ``--stabilizer`` also times ``KalmanStabilizer.update``
per person per frame. ``--profile`` prints the cProfile top functions of the solve and update calls.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatar_bridge.camera import fit_camera  # noqa: E402
from avatar_bridge.config import RetargetConfig, SmoothingConfig  # noqa: E402
from avatar_bridge.metrics import load_average_line, median_p95  # noqa: E402
from avatar_bridge.mocap import MocapSource, coco17_world, load_motion  # noqa: E402
from avatar_bridge.retarget import Retargeter  # noqa: E402
from avatar_bridge.smooth import make_stabilizer  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "mocap"
FPS = 30.0
TICK = 1.0 / 60.0
# name, camera yaw (degrees), noise (px), occlusions, advance on every solve (offline path)
SCENARIOS = (
    ("frontal clean", 0.0, 0.0, False, False),
    ("frontal noise 3 px", 0.0, 3.0, False, False),
    ("45 deg noise 3 px + occlusion", 45.0, 3.0, True, False),
    ("frontal clean offline", 0.0, 0.0, False, True),
)
# Keypoint groups hidden for stretches in the occlusion scenario (score 0).
OCCLUDE = ((7, 9), (14, 16), (0, 1, 2, 3, 4), (5, 7, 9), (11, 12))


def clips() -> list[Path]:
    return [FIXTURES / "cmu_131_01_walk.bvh"] + [Path(p) for p in sorted(glob.glob(str(FIXTURES / "amp" / "*.npy")))]


def occlusion(index: int) -> tuple[int, ...]:
    """Keypoints hidden at frame ``index``: one group for 25 frames (long enough to ease), then 15 seen."""
    period = index // 40
    if index % 40 >= 25:
        return ()
    return OCCLUDE[period % len(OCCLUDE)]


def run(frames: int | None, profiler=None, stabilizer_ms: list[float] | None = None, depth_prior: str = "default") -> tuple[dict[str, np.ndarray], list[float], list[float]]:
    rot, hips, conf, tracking = [], [], [], []
    bone_names: list[str] | None = None
    conf_names: list[str] | None = None
    update_ms: list[float] = []
    solve_ms: list[float] = []
    for clip in clips():
        world = coco17_world(load_motion(clip), fps=FPS)
        for name, yaw, noise, occlude, advance in SCENARIOS:
            source = MocapSource(clip, fps=FPS, camera=fit_camera(world, yaw), realtime=False)
            fov = float(np.degrees(2 * np.arctan(source.camera.width / 2 / source.camera.focal_px)))
            retargeter = Retargeter(RetargetConfig(mirror=False, fov_deg=fov, depth_prior=depth_prior))
            stabilizer = make_stabilizer(SmoothingConfig()) if noise > 0 else None
            rng = np.random.default_rng(0)
            size = (source.width, source.height)
            with source:
                while (frame := source.read()) is not None:
                    if frames is not None and frame.index >= frames:
                        break
                    t = frame.index / FPS
                    person = frame.truth.people[0]
                    kp, sc = person.keypoints.astype(np.float64), person.scores.astype(np.float64)
                    if occlude:
                        sc[list(occlusion(frame.index))] = 0.0
                    if stabilizer is not None:
                        kp = kp + rng.normal(0.0, noise, kp.shape)
                        start = time.perf_counter()
                        kp, sc = stabilizer.update(kp, sc, t)
                        if stabilizer_ms is not None:
                            stabilizer_ms.append((time.perf_counter() - start) * 1000.0)
                    if advance:
                        ticks = [(t, True)]
                    else:
                        start = time.perf_counter()
                        if profiler is not None:
                            profiler.enable()
                        retargeter.update(kp, sc, t, size)
                        if profiler is not None:
                            profiler.disable()
                        update_ms.append((time.perf_counter() - start) * 1000.0)
                        ticks = [(t, False), (t + TICK, False)]
                    for when, adv in ticks:
                        start = time.perf_counter()
                        if profiler is not None:
                            profiler.enable()
                        pose = retargeter.solve(kp, sc, when, size, 1, advance=adv)
                        if profiler is not None:
                            profiler.disable()
                        solve_ms.append((time.perf_counter() - start) * 1000.0)
                        names = sorted(pose.rotations)
                        if bone_names is None:
                            bone_names, conf_names = names, sorted(pose.confidence)
                        if names != bone_names or sorted(pose.confidence) != conf_names:
                            raise RuntimeError(f"bone set changed at {clip.name} {name} frame {frame.index}")
                        rot.append(np.stack([pose.rotations[b] for b in bone_names]))
                        hips.append(np.asarray(pose.hips_position, dtype=np.float64))
                        conf.append(np.array([pose.confidence[b] for b in conf_names]))
                        tracking.append(pose.tracking)
    golden = {"rotations": np.array(rot), "hips": np.array(hips), "confidence": np.array(conf),
              "tracking": np.array(tracking), "bones": np.array(bone_names), "confidence_bones": np.array(conf_names)}
    return golden, update_ms, solve_ms


def compare(golden: dict[str, np.ndarray], path: Path) -> float:
    ref = np.load(path)
    for key in ("bones", "confidence_bones"):
        if list(ref[key]) != list(golden[key]):
            raise SystemExit(f"{key} differ: {list(ref[key])} vs {list(golden[key])}")
    if ref["rotations"].shape != golden["rotations"].shape:
        raise SystemExit(f"shape differs: {ref['rotations'].shape} vs {golden['rotations'].shape}")
    worst = 0.0
    for key in ("rotations", "hips", "confidence"):
        diff = float(np.max(np.abs(ref[key] - golden[key])))
        where = np.unravel_index(int(np.argmax(np.abs(ref[key] - golden[key]))), ref[key].shape)
        print(f"golden {key}: max abs difference {diff:.3g} at {tuple(int(i) for i in where)}")
        worst = max(worst, diff)
    flips = int(np.sum(ref["tracking"] != golden["tracking"]))
    print(f"golden tracking: {flips} differ")
    print(f"golden: max abs difference {worst:.3g} over {len(ref['hips'])} poses ({'OK' if worst <= 1e-6 and not flips else 'FAIL'})")
    return worst


def stats(ms: list[float]) -> str:
    median, p95 = median_p95(ms)
    return f"median {median:.3f} ms, p95 {p95:.3f} ms ({len(ms)} calls)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the outputs to this .npz (the golden)")
    parser.add_argument("--compare", type=Path, help="compare the outputs with this golden .npz")
    parser.add_argument("--frames", type=int, default=None, help="first N frames of each clip only")
    parser.add_argument("--profile", action="store_true", help="cProfile the update and solve calls")
    parser.add_argument("--stabilizer", action="store_true", help="also time KalmanStabilizer.update")
    parser.add_argument("--depth-prior", default="default", help='retarget.depth_prior: "default", "" (none) or a weights file')
    args = parser.parse_args(argv)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    load_before = os.getloadavg()
    stab_ms: list[float] | None = [] if args.stabilizer else None
    start = time.perf_counter()
    golden, update_ms, solve_ms = run(args.frames, profiler, stab_ms, args.depth_prior)
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()
    print(f"{load_average_line(load_before, load_after)}; {seconds:.1f} s")
    print(f"Retargeter.update: {stats(update_ms)}")
    print(f"Retargeter.solve:  {stats(solve_ms)}")
    if stab_ms:
        print(f"KalmanStabilizer.update: {stats(stab_ms)}")
    if args.save:
        np.savez(args.save, **golden)
        print(f"saved {len(golden['hips'])} poses to {args.save}")
    if args.compare:
        compare(golden, args.compare)
    if profiler is not None:
        import pstats

        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
