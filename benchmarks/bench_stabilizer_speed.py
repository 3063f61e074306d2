"""KalmanStabilizer speed benchmark and golden-output recorder (issue #19, smoothing).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_stabilizer_speed.py [--save GOLDEN.npz] [--compare GOLDEN.npz]
        [--frames N] [--profile] [--configs default,cv,coupled,accel]

Plays the CMU walk (``../shared/fixtures/mocap/cmu_131_01_walk.bvh``) and three AMP clips (hop, walk,
cartwheel) through :class:`~avatar_bridge.mocap.MocapSource` (fitted frontal camera) and one
stabilizer per clip, seed (0, 1, 2) and configuration. Inputs are made deterministic from the seed: 3 px
Gaussian noise, random scores (uniform 0.05-1, 5% of joints at 0), 2% of joints thrown 80 px off
(the gate), a group of joints dropped for 15 frames every 60 (lost past ``hold_time``: re-lock with
blend), timestamps i/30 with +-4 ms jitter, one frame in 97 repeating the previous timestamp and one
in 131 arriving 10 ms before it (out of order).

Per frame: ``update(kp, sc, t)`` then ``predict(t + 0.05)`` (latency compensation), ``predict(t + 0.05
+ 1/60)`` (the next 60 Hz output tick before the next pose: timed as "tick") and, every third
frame, ``predict(t - 0.02)`` (Hermite interpolation between earlier updates). Configurations:
``default`` (``load_config("default").smoothing``: the IMM; the only one timed unless ``--time-all``),
``cv`` (the constant-velocity model at the settings it was tuned at), and from it ``coupled``
(``body_coupling = 0.5``) and ``accel`` (``motion_model = "constant_acceleration"``).

Timing: per call ``time.thread_time()`` (CPU time of this thread: less sensitive to other load) and
``time.perf_counter()`` (wall), median and p95, with the load average before and after.
``--save`` writes every output (keypoints and scores of each update and predict) to an .npz;
``--compare`` prints the largest absolute difference against such a file (also of the float64
filter state x and the diagonal of P after each update, which show rounding drift before the float32
outputs do).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatar_bridge.config import load_config, tuned_constant_velocity  # noqa: E402
from avatar_bridge.metrics import load_average_line, median_p95  # noqa: E402
from avatar_bridge.mocap import MocapSource  # noqa: E402
from avatar_bridge.smooth import make_stabilizer  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "mocap"
CLIPS = ("cmu_131_01_walk.bvh", "amp/amp_humanoid_hop.npy", "amp/amp_humanoid_walk.npy", "amp/amp_humanoid_cartwheel.npy")
SEEDS = (0, 1, 2)
FPS = 30.0
AHEAD = 0.05
TICK = 1.0 / 60.0
GROUPS = ((7, 9), (14, 16), (0, 1, 2), (5, 7, 9), (11, 13))


def configs(names: list[str]) -> dict[str, object]:
    base = load_config("default").smoothing
    cv = tuned_constant_velocity(base)
    every = {
        "default": base,
        "cv": cv,
        "coupled": dataclasses.replace(cv, body_coupling=0.5),
        "accel": dataclasses.replace(cv, motion_model="constant_acceleration"),
    }
    return {name: every[name] for name in names}


def inputs(clip: str, seed: int, frames: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = MocapSource(FIXTURES / clip, camera="fit")
    kp = source.keypoints2d.astype(np.float64)
    sc = source.scores.astype(np.float64)
    if frames is not None:
        kp, sc = kp[:frames], sc[:frames]
    n = len(kp)
    rng = np.random.default_rng(seed)
    kp = kp + rng.normal(0.0, 3.0, kp.shape)
    sc = sc * rng.uniform(0.05, 1.0, sc.shape)
    sc[rng.random(sc.shape) < 0.05] = 0.0
    outlier = rng.random(sc.shape) < 0.02
    kp[outlier] += 80.0
    for i in range(n):
        if i % 60 < 15:
            sc[i, list(GROUPS[(i // 60) % len(GROUPS)])] = 0.0
    t = np.arange(n) / FPS + rng.uniform(-0.004, 0.004, n)
    for i in range(1, n):
        if i % 97 == 0:
            t[i] = t[i - 1]
        elif i % 131 == 0:
            t[i] = t[i - 1] - 0.01
    return kp, sc, t


def run(names: list[str], frames: int | None, timed: set[str], profiler=None):
    outputs: dict[str, list[np.ndarray]] = {"update_kp": [], "update_sc": [], "predict_kp": [], "predict_sc": [], "tick_kp": [], "tick_sc": [],
                                            "between_kp": [], "between_sc": []}
    update_s = {"thread": [], "wall": []}
    predict_s = {"thread": [], "wall": []}
    tick_s = {"thread": [], "wall": []}
    cfgs = configs(names)
    for clip in CLIPS:
        for seed in SEEDS:
            kp_all, sc_all, t_all = inputs(clip, seed, frames)
            for name, cfg in cfgs.items():
                stab = make_stabilizer(cfg)
                timing = name in timed
                for i in range(len(kp_all)):
                    kp, sc, t = kp_all[i], sc_all[i], float(t_all[i])
                    if profiler is not None and timing:
                        profiler.enable()
                    c0, w0 = time.thread_time(), time.perf_counter()
                    out = stab.update(kp, sc, t)
                    c1, w1 = time.thread_time(), time.perf_counter()
                    ahead = stab.predict(t + AHEAD)
                    c2, w2 = time.thread_time(), time.perf_counter()
                    tick = stab.predict(t + AHEAD + TICK)
                    c3, w3 = time.thread_time(), time.perf_counter()
                    if profiler is not None and timing:
                        profiler.disable()
                    if timing:
                        update_s["thread"].append(c1 - c0)
                        update_s["wall"].append(w1 - w0)
                        predict_s["thread"].append(c2 - c1)
                        predict_s["wall"].append(w2 - w1)
                        tick_s["thread"].append(c3 - c2)
                        tick_s["wall"].append(w3 - w2)
                    outputs["update_kp"].append(out.keypoints)
                    outputs["update_sc"].append(out.scores)
                    outputs["predict_kp"].append(ahead.keypoints)
                    outputs["predict_sc"].append(ahead.scores)
                    outputs["tick_kp"].append(tick.keypoints)
                    outputs["tick_sc"].append(tick.scores)
                    if i % 3 == 2:
                        between = stab.predict(t - 0.02)
                        outputs["between_kp"].append(between.keypoints)
                        outputs["between_sc"].append(between.scores)
                    # The float64 state as well: the outputs are float32, the state shows drift first.
                    outputs.setdefault(f"state_x_{name}", []).append(stab.filter.x.copy())
                    outputs.setdefault(f"state_p_{name}", []).append(np.diag(stab.filter.P).copy())
    golden = {key: np.array(value, dtype=np.float64) for key, value in outputs.items()}
    return golden, update_s, predict_s, tick_s


def compare(golden: dict[str, np.ndarray], path: Path) -> float:
    ref = np.load(path)
    worst = 0.0
    for key in golden:
        if ref[key].shape != golden[key].shape:
            raise SystemExit(f"{key}: shape differs: {ref[key].shape} vs {golden[key].shape}")
        diff = np.abs(ref[key] - golden[key])
        d = float(np.max(diff)) if diff.size else 0.0
        scale = float(np.max(np.abs(ref[key]))) if ref[key].size else 0.0
        print(f"golden {key}: max abs difference {d:.3g} (largest value {scale:.3g})")
        if not key.startswith("state_"):
            worst = max(worst, d)
    print(f"golden outputs (keypoints px, scores): max abs difference {worst:.3g} ({'OK' if worst <= 1e-9 else 'FAIL'})")
    return worst


def stats(seconds: list[float]) -> str:
    median, p95 = median_p95(np.asarray(seconds) * 1000.0)
    return f"median {median:.4f} ms, p95 {p95:.4f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the outputs to this .npz (the golden)")
    parser.add_argument("--compare", type=Path, help="compare the outputs with this golden .npz")
    parser.add_argument("--frames", type=int, default=300, help="first N frames of each clip (default 300)")
    parser.add_argument("--configs", default="default,cv,coupled,accel", help="comma-separated: default, cv, coupled, accel")
    parser.add_argument("--time-all", action="store_true", help="time every configuration, not only default")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed calls")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    timed = set(names) if args.time_all else {"default"} & set(names)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    load_before = os.getloadavg()
    start = time.perf_counter()
    golden, update_s, predict_s, tick_s = run(names, args.frames, timed, profiler)
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()
    print(f"{load_average_line(load_before, load_after)}; {seconds:.1f} s")
    if update_s["thread"]:
        print(f"timed: {', '.join(sorted(timed))}; {len(update_s['thread'])} calls each")
        print(f"update  thread_time {stats(update_s['thread'])}; wall {stats(update_s['wall'])}")
        print(f"predict thread_time {stats(predict_s['thread'])}; wall {stats(predict_s['wall'])}")
        print(f"tick    thread_time {stats(tick_s['thread'])}; wall {stats(tick_s['wall'])}")
    if args.save:
        np.savez(args.save, **golden)
        print(f"saved {sum(len(v) for v in golden.values())} outputs to {args.save}")
    if args.compare:
        compare(golden, args.compare)
    if profiler is not None:
        import pstats

        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
