"""``avatar-bridge bench-retarget``: bone-direction error of the retargeter against mocap ground truth.

Each clip (BVH or AMP ``.npy``, one or many) goes through :class:`~avatar_bridge.mocap.MocapSource`
(pinhole camera placed per clip, see :mod:`.clips`: fitted so the whole body stays in frame unless
a distance is given, in front of the performer and 45 degrees round), clean and
with Gaussian pixel noise through the stabilizer, into :class:`~avatar_bridge.retarget.Retargeter`
(mirror off, calibrated automatically from the clip's first ``calibration_seconds``, when the
performer stands). For every frame and bone the angle between the recovered world bone direction
(forward kinematics of the output RigPose, turned from the camera-aligned frame to the world with the
camera's known orientation) and the true one is measured, for our depth recovery and for the naive
planar solution (depth 0). Frames with every keypoint in the image ("in frame") and the others are
summarized apart; the floors are judged on in-frame frames.
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
from ..depth_prior import DepthSignPrior
from ..depth_prior_training import train_on_clips
from ..retarget import Retargeter, body_transforms, load_depth_prior
from .clips import Placement, add_clip_arguments, check_clip_arguments, clip_name


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
                 fov_deg: float | None = None, placement: Placement | None = None,
                 frames: int | None = None, depth_prior: DepthSignPrior | None = None) -> dict[str, np.ndarray]:
    """Per-bone angle errors (degrees, one per frame) for one camera / noise setting and depth method.

    The camera stands at ``placement`` (default: fitted to the clip, see :mod:`.clips`) turned
    ``scenario.azimuth_deg`` further. Besides one array per bone, the result holds ``solve_ms`` and
    ``in_frame`` (bool per frame: every COCO keypoint projects inside the image). ``depth_prior``:
    the learned depth-sign prior the retargeter uses (None: anatomy rules alone).
    """
    from ..mocap import MocapSource, coco17_world, load_motion

    placement = placement or Placement()
    camera = placement.camera(coco17_world(load_motion(mocap_path), fps=fps), scenario.azimuth_deg)
    source = MocapSource(mocap_path, fps=fps, camera=camera, realtime=False)
    # The retargeter is told the camera's field of view, as a user sets their webcam's (fov_deg).
    fov = math.degrees(2 * math.atan(camera.width / 2 / camera.focal_px)) if fov_deg is None else fov_deg
    config = RetargetConfig(mirror=False, depth=depth, calibration_seconds=calibration_seconds, fov_deg=fov, depth_prior="")
    retargeter = Retargeter(config, depth_prior=depth_prior)
    stabilizer = None
    if scenario.noise_px > 0:
        from ..smooth import make_stabilizer

        stabilizer = make_stabilizer(smoothing or SmoothingConfig())
    rng = np.random.default_rng(seed)
    to_world = camera_to_world(camera)
    errors: dict[str, list[float]] = {}
    solve_ms: list[float] = []
    in_frame: list[bool] = []
    with source:
        while (frame := source.read()) is not None:
            if frames is not None and frame.index >= frames:
                break
            person = frame.truth.people[0]
            kp, sc = person.keypoints.astype(np.float64), person.scores.astype(np.float64)
            in_frame.append(bool(np.all(sc > 0)))
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
    out["in_frame"] = np.asarray(in_frame, dtype=bool)
    return out


def summarize(errors: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, dict[str, float]] | None:
    """Median and p90 (degrees) per bone and over all limbs, on the frames ``mask`` selects (None:
    all); None when it selects no frame."""
    errors = {bone: e for bone, e in errors.items() if bone not in ("solve_ms", "in_frame")}
    if mask is not None:
        if not np.any(mask):
            return None
        errors = {bone: e[mask] for bone, e in errors.items()}
    out = {bone: {"median": float(np.median(e)), "p90": float(np.percentile(e, 90))} for bone, e in errors.items()}
    limbs = np.concatenate([errors[b] for b in LIMB_BONES])
    out["limbs"] = {"median": float(np.median(limbs)), "p90": float(np.percentile(limbs, 90))}
    return out


def run_benchmark(mocap_path: Path | list[Path], scenarios=SCENARIOS, fps: float = 30.0, seed: int | list[int] = 0,
                  calibration_seconds: float = 1.0, fov_deg: float | None = None, placement: Placement | None = None,
                  frames: int | None = None, depths: tuple[str, ...] = ("foreshortening", "planar"),
                  depth_prior: str = "default", progress: bool = False) -> list[dict]:
    """One result row per clip, scenario, depth method and seed (clean scenarios: the first seed only,
    they have no noise). ``bones`` summarizes the in-frame frames, ``out_of_frame`` the others (None
    when there are none), ``all_frames`` both.

    ``depth_prior``: the retargeter's learned depth-sign prior, as ``retarget.depth_prior`` takes it
    (``"default"``, ``""`` for none, or a weights path), or ``"loco"``: leave-one-clip-out, each clip
    scored with a prior trained (:func:`avatar_bridge.depth_prior.train_on_clips`, shipped settings)
    on the other clips given. Raises ValueError for ``"loco"`` with fewer than two clips.
    """
    clips = [Path(mocap_path)] if isinstance(mocap_path, (str, Path)) else [Path(p) for p in mocap_path]
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if depth_prior == "loco" and len(clips) < 2:
        raise ValueError("--depth-prior loco trains on the other clips: give at least two clips")
    fixed = None if depth_prior == "loco" else load_depth_prior(depth_prior)
    results = []
    for clip in clips:
        prior = fixed
        if depth_prior == "loco":
            prior = train_on_clips([c for c in clips if c != clip], progress=progress, label=f"depth prior without {clip_name(clip)}")
        for scenario in scenarios:
            for s in (seeds if scenario.noise_px > 0 else seeds[:1]):
                for depth in depths:
                    start = time.perf_counter()
                    errors = run_scenario(clip, scenario, depth, fps=fps, seed=s, calibration_seconds=calibration_seconds,
                                          fov_deg=fov_deg, placement=placement, frames=frames, depth_prior=prior)
                    solve_ms, inside = errors["solve_ms"], errors["in_frame"]
                    results.append({
                        "clip": str(clip), "seed": s,
                        "scenario": scenario.name, "azimuth_deg": scenario.azimuth_deg, "noise_px": scenario.noise_px,
                        "depth": depth, "depth_prior": depth_prior or "none", "frames": len(solve_ms), "in_frame_frames": int(inside.sum()),
                        "seconds": time.perf_counter() - start,
                        "solve_ms": dict(zip(("median", "p95"), median_p95(solve_ms))),
                        "bones": summarize(errors, inside),
                        "out_of_frame": summarize(errors, ~inside),
                        "all_frames": summarize(errors),
                    })
    return results


# Floors from issue #17, on in-frame frames of every clip, every scenario (frontal and 45 degrees,
# clean and with 3 px noise through the stabilizer): median and p90 limb error, hip-line median.
FLOORS = {("limbs", "median"): 10.0, ("limbs", "p90"): 30.0, ("hips", "median"): 15.0}


def check_floors(result: dict) -> list[tuple[str, float, float, bool]]:
    """(name, value, floor, met) for one foreshortening result row; in-frame frames only."""
    out = []
    for (bone, stat), floor in FLOORS.items():
        value = float("nan") if result["bones"] is None else result["bones"][bone][stat]
        out.append((f"{bone} {stat}", value, floor, bool(value <= floor)))
    return out


def format_table(results: list[dict]) -> str:
    bones = list(LIMB_BONES) + ["limbs"] + list(TORSO_BONES)
    lines = ["| clip | scenario | seed | depth | frames in / out | " + " | ".join(bones) + " | limbs out of frame |",
             "|---|---|---|---|---|" + "---|" * (len(bones) + 1)]
    for r in results:
        inside = r["bones"]
        cells = [f"{inside[b]['median']:.1f} / {inside[b]['p90']:.1f}" if inside else "-" for b in bones]
        out = r.get("out_of_frame")
        out_cell = f"{out['limbs']['median']:.1f} / {out['limbs']['p90']:.1f}" if out else "-"
        frames = f"{r.get('in_frame_frames', r['frames'])} / {r['frames'] - r.get('in_frame_frames', r['frames'])}"
        lines.append(f"| {clip_name(r.get('clip', '-'))} | {r['scenario']} | {r.get('seed', 0)} | {r['depth']} | {frames} | "
                     + " | ".join(cells) + f" | {out_cell} |")
    lines.append("")
    lines.append("cells: median / p90 angle (degrees) between recovered and true bone direction, in-frame frames "
                 "(every keypoint inside the image); the last column: limbs on the out-of-frame frames")
    timed = [r for r in results if "solve_ms" in r and r["depth"] == "foreshortening"]
    if timed:
        ms = np.concatenate([[r["solve_ms"]["median"]] for r in timed])
        lines.append(f"Retargeter.solve: median {np.median(ms):.2f} ms per frame (p95 of the slowest scenario "
                     f"{max(r['solve_ms']['p95'] for r in timed):.2f} ms), one CPU thread, wall clock")
    ours = [r for r in results if r["depth"] == "foreshortening"]
    if ours:
        lines.append("")
        lines.append("floors (issue #17, in-frame frames, our depth recovery), worst over clips and seeds per scenario:")
        for scenario in dict.fromkeys(r["scenario"] for r in ours):
            rows = [r for r in ours if r["scenario"] == scenario]
            for i, (name, _, floor, _) in enumerate(check_floors(rows[0])):
                values = [(check_floors(r)[i][1], r) for r in rows]
                worst, where = max(values, key=lambda v: -np.inf if np.isnan(v[0]) else v[0])
                met = all(v <= floor for v, _ in values)
                lines.append(f"floor {scenario} {name} <= {floor:g}: worst {worst:.1f} ({clip_name(where.get('clip', '-'))}, seed "
                             f"{where.get('seed', 0)}) {'met' if met else 'NOT MET'}")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser, command: str = "bench-retarget") -> None:
    add_clip_arguments(parser)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate the clip is resampled to")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames of each clip (quick runs)")
    parser.add_argument("--calibration-seconds", type=float, default=1.0, help="automatic calibration period at the clip's start")
    parser.add_argument("--fov", type=float, default=None,
                        help="horizontal field of view the retargeter assumes (default: the benchmark camera's, 70.8 degrees)")
    parser.add_argument("--depth-prior", default="default", metavar="default|none|loco|PATH",
                        help="learned depth-sign prior of the retargeter: the shipped one (default), none, loco (each clip "
                             "with a prior trained on the other clips: held-out figures) or a weights file")
    parser.add_argument("--quick", action="store_true", help="only the clean frontal scenario")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout only)")


def run_command(args: argparse.Namespace) -> int:
    clips, placement = check_clip_arguments(args, "bench-retarget")
    if not args.fps > 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if not args.calibration_seconds > 0:
        raise ValueError(f"--calibration-seconds must be positive, got {args.calibration_seconds}")
    if args.fov is not None and not 10.0 <= args.fov <= 170.0:
        raise ValueError(f"--fov must be between 10 and 170 degrees, got {args.fov}")
    if args.frames is not None and args.frames < 10:
        raise ValueError(f"--frames {args.frames} is too short: use at least 10 frames")
    prior = "" if args.depth_prior == "none" else args.depth_prior
    if prior not in ("", "default", "loco") and not Path(prior).is_file():
        raise FileNotFoundError(f"--depth-prior {prior}: no such weights file; use default, none, loco or a file from "
                                "`avatar-bridge train-depth-prior`")
    scenarios = SCENARIOS[:1] if args.quick else SCENARIOS
    results = run_benchmark(clips, scenarios, fps=args.fps, seed=args.seeds, calibration_seconds=args.calibration_seconds,
                            fov_deg=args.fov, placement=placement, frames=args.frames, depth_prior=prior,
                            progress=args.json != "-")
    if args.json == "-":
        print(json.dumps(results, indent=2))
        return 0
    print(placement.describe())
    print({"": "depth prior: none (anatomy rules alone)", "default": "depth prior: the shipped one",
           "loco": "depth prior: leave-one-clip-out (each clip with a prior trained on the other clips)"}.get(
        prior, f"depth prior: {prior}"))
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0
