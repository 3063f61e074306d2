"""A/B speed of ``KalmanStabilizer.update`` between two checkouts, interleaved frame by frame.

    .venv/bin/python benchmarks/ab_stabilizer_speed.py OLD_CHECKOUT [NEW_CHECKOUT] [--frames N] [--seeds 0,1]

This machine's speed drifts by up to 2x between runs of the same benchmark, so a change is judged by
the ratio of medians of the two versions timed in one process, alternating which goes first on each
frame (same inputs as ``bench_stabilizer_speed.py``: the CMU walk and three AMP clips with noise,
dropped joints, outliers and jittered timestamps; ``default`` smoothing). NEW_CHECKOUT defaults to
this one. Prints medians and p95 of both, their ratio and the load average.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_stabilizer_speed as bench  # noqa: E402  (its inputs; imports this checkout's avatar_bridge)
from avatar_bridge.metrics import load_average_line, median_p95  # noqa: E402  (this checkout's, before load_version swaps)


def load_version(checkout: Path):
    """``make_stabilizer`` and the default smoothing config of the avatar_bridge in ``checkout``."""
    for name in [m for m in sys.modules if m == "avatar_bridge" or m.startswith("avatar_bridge.")]:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        smooth = importlib.import_module("avatar_bridge.smooth")
        config = importlib.import_module("avatar_bridge.config")
    finally:
        sys.path.remove(str(checkout))
    if not Path(smooth.__file__).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"{checkout}: its avatar_bridge was not the one imported ({smooth.__file__})")
    return smooth.make_stabilizer, config.load_config("default").smoothing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout of the old version (e.g. a git worktree)")
    parser.add_argument("new", type=Path, nargs="?", default=ROOT, help="checkout of the new version (default: this one)")
    parser.add_argument("--frames", type=int, default=400, help="frames per clip and seed (default 400)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated noise seeds (default 0,1)")
    args = parser.parse_args()
    for checkout in (args.old, args.new):
        if not (checkout / "avatar_bridge" / "smooth.py").is_file():
            parser.error(f"{checkout} is not an avatar-bridge checkout (no avatar_bridge/smooth.py)")
    seeds = [int(s) for s in args.seeds.split(",")]
    versions = {"old": load_version(args.old), "new": load_version(args.new)}
    times = {"old": [], "new": []}
    load_before = os.getloadavg()
    for clip in bench.CLIPS:
        for seed in seeds:
            kp, sc, t = bench.inputs(clip, seed, args.frames)
            stabs = {name: make(cfg) for name, (make, cfg) in versions.items()}
            for i in range(len(kp)):
                order = ("old", "new") if i % 2 else ("new", "old")
                for name in order:
                    stab = stabs[name]
                    start = time.perf_counter()
                    stab.update(kp[i], sc[i], float(t[i]))
                    times[name].append(time.perf_counter() - start)
                    stab.predict(float(t[i]) + bench.AHEAD)
                    stab.predict(float(t[i]) + bench.AHEAD + bench.TICK)
    load_after = os.getloadavg()
    medians = {}
    for name in ("old", "new"):
        medians[name], p95 = median_p95(np.array(times[name]) * 1000.0)
        print(f"{name}: update median {medians[name]:.4f} ms, p95 {p95:.4f} ms ({len(times[name])} calls)")
    print(f"new / old (medians): {medians['new'] / medians['old']:.3f}")
    print(load_average_line(load_before, load_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
