"""``avatar-bridge bench-retarget``: bone-direction error of the retargeter against mocap ground truth.

The CMU walk fixture goes through :class:`~avatar_bridge.mocap.MocapSource` (pinhole camera 3 m
from the capture-volume origin at 1 m height, in front of the performer and at 45 degrees), clean and
with Gaussian pixel noise through the stabilizer, into :class:`~avatar_bridge.retarget.Retargeter`
(mirror off, calibrated automatically from the clip's first ``calibration_seconds``, when the
performer stands). For every frame and bone the angle between the recovered world bone direction
(forward kinematics of the output RigPose, turned from the camera-aligned frame to the world with the
camera's known orientation) and the true one is measured, for our depth recovery and for the naive
planar solution (depth 0).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..camera import PinholeCamera
from ..config import RetargetConfig, SmoothingConfig
from ..keypoints import KEYPOINT_INDEX as K
from ..metrics import median_p95
from ..retarget import Retargeter, body_transforms


# Reported bone -> (true direction from the 3D keypoints, the bone's own axis in its rest frame).
LIMB_BONES: dict[str, tuple[tuple[int, int], tuple[float, float, float]]] = {
    "leftUpperArm": ((K["left_shoulder"], K["left_elbow"]), (1.0, 0.0, 0.0)),
    "leftLowerArm": ((K["left_elbow"], K["left_wrist"]), (1.0, 0.0, 0.0)),
    "rightUpperArm": ((K["right_shoulder"], K["right_elbow"]), (-1.0, 0.0, 0.0)),
    "rightLowerArm": ((K["right_elbow"], K["right_wrist"]), (-1.0, 0.0, 0.0)),
    "leftUpperLeg": ((K["left_hip"], K["left_knee"]), (0.0, -1.0, 0.0)),
    "leftLowerLeg": ((K["left_knee"], K["left_ankle"]), (0.0, -1.0, 0.0)),
    "rightUpperLeg": ((K["right_hip"], K["right_knee"]), (0.0, -1.0, 0.0)),
    "rightLowerLeg": ((K["right_knee"], K["right_ankle"]), (0.0, -1.0, 0.0)),
}
# Torso directions: bone whose axis is compared, the axis, and how the truth is built.
TORSO_BONES = ("hips", "shoulders", "spine")


@dataclass(frozen=True)
class Scenario:
    name: str
    azimuth_deg: float
    noise_px: float


SCENARIOS = (
    Scenario("frontal, clean", 0.0, 0.0),
    Scenario("45 deg, clean", 45.0, 0.0),
    Scenario("frontal, noise 3 px + stabilizer", 0.0, 3.0),
    Scenario("45 deg, noise 3 px + stabilizer", 45.0, 3.0),
)


def camera_to_world(camera: PinholeCamera) -> np.ndarray:
    """Matrix taking the retargeter's camera-aligned frame (x right, y up, z to the camera) to the world."""
    right, down, forward = camera.rotation
    return np.stack([right, -down, -forward], axis=-1)


def recovered_directions(rotations: dict[str, np.ndarray], to_world: np.ndarray) -> dict[str, np.ndarray]:
    """World direction of each reported bone from the RigPose rotations (forward kinematics)."""
    _, world_rot = body_transforms(rotations)
    out = {bone: to_world @ (world_rot[bone] @ np.array(axis)) for bone, (_, axis) in LIMB_BONES.items()}
    out["hips"] = to_world @ world_rot["hips"][:, 0]
    out["shoulders"] = to_world @ world_rot["upperChest"][:, 0]
    out["spine"] = to_world @ world_rot["upperChest"][:, 1]
    return out


def true_directions(joints: np.ndarray) -> dict[str, np.ndarray]:
    out = {bone: joints[b] - joints[a] for bone, ((a, b), _) in LIMB_BONES.items()}
    out["hips"] = joints[K["left_hip"]] - joints[K["right_hip"]]
    out["shoulders"] = joints[K["left_shoulder"]] - joints[K["right_shoulder"]]
    across = out["shoulders"] / np.linalg.norm(out["shoulders"])
    up = (joints[K["left_shoulder"]] + joints[K["right_shoulder"]] - joints[K["left_hip"]] - joints[K["right_hip"]]) / 2
    out["spine"] = up - (up @ across) * across  # the part of the torso axis a rotation can show
    return out


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    return math.degrees(math.acos(float(np.clip(a @ b, -1.0, 1.0))))


def run_scenario(mocap_path: Path, scenario: Scenario, depth: str, fps: float = 30.0, seed: int = 0,
                 calibration_seconds: float = 1.0, smoothing: SmoothingConfig | None = None,
                 fov_deg: float | None = None) -> dict[str, np.ndarray]:
    """Per-bone angle errors (degrees, one per frame) for one camera / noise setting and depth method."""
    from ..mocap import MocapSource

    camera = PinholeCamera.orbit(scenario.azimuth_deg, distance=3.0, height=1.0)
    source = MocapSource(mocap_path, fps=fps, camera=camera, realtime=False)
    # The retargeter is told the camera's field of view, as a user sets their webcam's (fov_deg).
    fov = math.degrees(2 * math.atan(camera.width / 2 / camera.focal_px)) if fov_deg is None else fov_deg
    config = RetargetConfig(mirror=False, depth=depth, calibration_seconds=calibration_seconds, fov_deg=fov)
    retargeter = Retargeter(config)
    stabilizer = None
    if scenario.noise_px > 0:
        from ..smooth import make_stabilizer

        stabilizer = make_stabilizer(smoothing or SmoothingConfig())
    rng = np.random.default_rng(seed)
    to_world = camera_to_world(camera)
    errors: dict[str, list[float]] = {}
    solve_ms: list[float] = []
    with source:
        while (frame := source.read()) is not None:
            person = frame.truth.people[0]
            kp, sc = person.keypoints.astype(np.float64), person.scores.astype(np.float64)
            if scenario.noise_px > 0:
                kp = kp + rng.normal(0.0, scenario.noise_px, kp.shape)
                kp, sc = stabilizer.update(kp, sc, frame.timestamp)
            start = time.perf_counter()
            pose = retargeter.solve(kp, sc, frame.timestamp, (frame.width, frame.height))
            solve_ms.append((time.perf_counter() - start) * 1000.0)
            got = recovered_directions(pose.rotations, to_world)
            truth = true_directions(np.asarray(frame.truth.joints3d, dtype=np.float64))
            for bone, direction in truth.items():
                errors.setdefault(bone, []).append(_angle_deg(got[bone], direction))
    out = {bone: np.asarray(v) for bone, v in errors.items()}
    out["solve_ms"] = np.asarray(solve_ms)
    return out


def summarize(errors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    errors = {bone: e for bone, e in errors.items() if bone != "solve_ms"}
    out = {bone: {"median": float(np.median(e)), "p90": float(np.percentile(e, 90))} for bone, e in errors.items()}
    limbs = np.concatenate([errors[b] for b in LIMB_BONES])
    out["limbs"] = {"median": float(np.median(limbs)), "p90": float(np.percentile(limbs, 90))}
    return out


def run_benchmark(mocap_path: Path, scenarios=SCENARIOS, fps: float = 30.0, seed: int = 0,
                  calibration_seconds: float = 1.0, fov_deg: float | None = None) -> list[dict]:
    results = []
    for scenario in scenarios:
        for depth in ("foreshortening", "planar"):
            start = time.perf_counter()
            errors = run_scenario(mocap_path, scenario, depth, fps=fps, seed=seed, calibration_seconds=calibration_seconds,
                                  fov_deg=fov_deg)
            solve_ms = errors["solve_ms"]
            results.append({
                "scenario": scenario.name, "azimuth_deg": scenario.azimuth_deg, "noise_px": scenario.noise_px,
                "depth": depth, "frames": len(solve_ms), "seconds": time.perf_counter() - start,
                "solve_ms": dict(zip(("median", "p95"), median_p95(solve_ms))),
                "bones": summarize(errors),
            })
    return results


# Floors from issue #5 (median limb error, and p90 where given).
FLOORS = {("frontal, clean", "median"): 10.0, ("frontal, clean", "p90"): 35.0, ("45 deg, clean", "median"): 14.0,
          ("frontal, noise 3 px + stabilizer", "median"): 13.0}


def format_table(results: list[dict]) -> str:
    bones = list(LIMB_BONES) + ["limbs"] + list(TORSO_BONES)
    lines = ["| scenario | depth | " + " | ".join(bones) + " |", "|---|---|" + "---|" * len(bones)]
    for r in results:
        cells = [f"{r['bones'][b]['median']:.1f} / {r['bones'][b]['p90']:.1f}" for b in bones]
        lines.append(f"| {r['scenario']} | {r['depth']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("cells: median / p90 angle (degrees) between recovered and true bone direction, all frames")
    timed = [r for r in results if "solve_ms" in r and r["depth"] == "foreshortening"]
    if timed:
        ms = np.concatenate([[r["solve_ms"]["median"]] for r in timed])
        lines.append(f"Retargeter.solve: median {np.median(ms):.2f} ms per frame (p95 of the slowest scenario "
                     f"{max(r['solve_ms']['p95'] for r in timed):.2f} ms), one CPU thread, wall clock")
    for r in results:
        if r["depth"] != "foreshortening":
            continue
        for (name, stat), floor in FLOORS.items():
            if name == r["scenario"]:
                value = r["bones"]["limbs"][stat]
                lines.append(f"floor {name} limbs {stat} <= {floor:g}: {value:.1f} {'met' if value <= floor else 'NOT MET'}")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser, command: str = "bench-retarget") -> None:
    parser.add_argument("--clip", "--mocap", dest="clip", metavar="FILE.bvh", default=None,
                        help="motion-capture clip used as ground truth (required; --mocap is the old name)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate the clip is resampled to")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--calibration-seconds", type=float, default=1.0, help="automatic calibration period at the clip's start")
    parser.add_argument("--fov", type=float, default=None,
                        help="horizontal field of view the retargeter assumes (default: the benchmark camera's, 70.8 degrees)")
    parser.add_argument("--quick", action="store_true", help="only the clean frontal scenario")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout only)")


def run_command(args: argparse.Namespace) -> int:
    if args.clip is None:
        raise ValueError("bench-retarget needs a motion-capture clip as ground truth: pass --clip FILE.bvh (any BVH with a humanoid skeleton, e.g. a CMU clip; this repository's CI uses ../shared/fixtures/mocap/cmu_131_01_walk.bvh)")
    path = Path(args.clip)
    if not path.is_file():
        raise FileNotFoundError(f"mocap clip {path} not found: pass --clip FILE.bvh")
    if not args.fps > 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if not args.calibration_seconds > 0:
        raise ValueError(f"--calibration-seconds must be positive, got {args.calibration_seconds}")
    if args.fov is not None and not 10.0 <= args.fov <= 170.0:
        raise ValueError(f"--fov must be between 10 and 170 degrees, got {args.fov}")
    scenarios = SCENARIOS[:1] if args.quick else SCENARIOS
    results = run_benchmark(path, scenarios, fps=args.fps, seed=args.seed, calibration_seconds=args.calibration_seconds,
                            fov_deg=args.fov)
    if args.json == "-":
        print(json.dumps(results, indent=2))
        return 0
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0
