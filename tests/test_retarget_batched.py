"""The fast retargeter (issue #19) against straightforward references.

``solve_rotations`` and the lifter work in plain floats (one loop over the limbs, 9-tuple matrices);
here they are checked against a per-bone reference (the loop they replaced, kept below) on
random poses, and against lifter outputs recorded from the per-limb implementation (inline values);
the pooled calibration period against recalibrating from scratch.
No timing here: speed is measured by benchmarks/bench_retarget_speed.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatar_bridge import quat
from avatar_bridge.camera import PinholeCamera
from avatar_bridge.config import RetargetConfig
from avatar_bridge.retarget import (
    CALIBRATION_BEND_DEG,
    CALIBRATION_FEET_LEVEL,
    CALIBRATION_MAX_TURN_DEG,
    CALIBRATION_MIN_FRAMES,
    CANONICAL_LENGTHS,
    FACE,
    FACE_TEMPLATE,
    SEGMENTS,
    CalibrationPool,
    ForeshorteningLifter,
    Limits,
    Retargeter,
    calibration_from_frames,
    calibration_measurement,
    calibration_pose_bend,
    fit_face_rotation,
    fit_face_rotation_seen,
    joints_from_rig,
    solve_rotations,
)
from avatar_bridge.skeleton import BODY_BONES

L_SH, R_SH, L_EL, R_EL, L_WR, R_WR = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = 11, 12, 13, 14, 15, 16


# --- Reference: the per-bone solver the batched one replaced (one limb at a time, numpy 3-vectors) ---

def _ref_axis_angle(axis, angle):
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _ref_matrix_axis_angle(m):
    v = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    sin2 = np.linalg.norm(v)
    cos = (np.trace(m) - 1.0) / 2.0
    angle = math.atan2(sin2 / 2.0, cos)
    if sin2 > 1e-9:
        return v / sin2, angle
    if cos > 0:
        return np.array([1.0, 0.0, 0.0]), 0.0
    b = m + np.eye(3)
    col = b[:, int(np.argmax(np.linalg.norm(b, axis=0)))]
    return col / np.linalg.norm(col), math.pi


def _ref_scaled(m, fraction, max_angle):
    axis, angle = _ref_matrix_axis_angle(m)
    return _ref_axis_angle(axis, min(angle, max_angle) * fraction)


def _ref_frame(x_axis, y_hint):
    x = x_axis / max(np.linalg.norm(x_axis), 1e-12)
    z = np.cross(x, y_hint)
    if np.linalg.norm(z) < 1e-6:
        return None
    z = z / np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z], axis=-1)


def _ref_two_vectors(a, b):
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        perp = np.cross(a, helper)
        return _ref_axis_angle(perp / np.linalg.norm(perp), math.pi)
    return _ref_axis_angle(axis / s, math.atan2(s, c))


def _ref_kabsch(rest, observed):
    a, b = rest - rest.mean(axis=0), observed - observed.mean(axis=0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = 1.0 if np.linalg.det(vt.T @ u.T) >= 0 else -1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


_REF_LIMBS = {
    "leftUpperArm": (L_SH, L_EL, L_WR, np.array([1.0, 0, 0]), np.array([0, -1.0, 0]), "leftLowerArm"),
    "rightUpperArm": (R_SH, R_EL, R_WR, np.array([-1.0, 0, 0]), np.array([0, 1.0, 0]), "rightLowerArm"),
    "leftUpperLeg": (L_HIP, L_KN, L_AN, np.array([0, -1.0, 0]), np.array([1.0, 0, 0]), "leftLowerLeg"),
    "rightUpperLeg": (R_HIP, R_KN, R_AN, np.array([0, -1.0, 0]), np.array([1.0, 0, 0]), "rightLowerLeg"),
}


def reference_solve(joints, limits):
    j = np.asarray(joints, dtype=np.float64)
    known = np.all(np.isfinite(j), axis=-1)
    local, world = {}, {}
    up = np.array([0.0, 1.0, 0.0])
    torso_up = None
    if known[L_HIP] and known[R_HIP] and known[L_SH] and known[R_SH]:
        v = (j[L_SH] + j[R_SH] - j[L_HIP] - j[R_HIP]) / 2
        torso_up = v / max(np.linalg.norm(v), 1e-12)
    hips_m = np.eye(3)
    if known[L_HIP] and known[R_HIP]:
        m = _ref_frame(j[L_HIP] - j[R_HIP], up + torso_up if torso_up is not None else up)
        if m is not None:
            hips_m = local["hips"] = m
    world["hips"] = chest_m = hips_m
    if known[L_SH] and known[R_SH]:
        m = _ref_frame(j[L_SH] - j[R_SH], torso_up if torso_up is not None else up)
        if m is not None:
            share = _ref_scaled(hips_m.T @ m, 1 / 3, math.radians(limits.spine_max_deg))
            local["spine"] = local["chest"] = local["upperChest"] = share
            chest_m = hips_m @ share @ share @ share
    world["upperChest"] = chest_m
    if np.all(known[list(FACE)]):
        half = _ref_scaled(chest_m.T @ _ref_kabsch(FACE_TEMPLATE, j[list(FACE)]), 0.5, math.radians(limits.neck_max_deg))
        local["neck"] = local["head"] = half
    for upper, (a, b, c, rest_dir, rest_normal, lower) in _REF_LIMBS.items():
        is_arm = "Arm" in upper
        parent_m = world["upperChest"] if is_arm else world["hips"]
        if not (known[a] and known[b]) or np.linalg.norm(j[b] - j[a]) < 1e-9:
            continue
        d1 = (j[b] - j[a]) / np.linalg.norm(j[b] - j[a])
        swing = _ref_two_vectors(parent_m @ rest_dir, d1) @ parent_m
        upper_m, d2 = swing, None
        if known[c] and np.linalg.norm(j[c] - j[b]) > 1e-9:
            d2 = (j[c] - j[b]) / np.linalg.norm(j[c] - j[b])
            normal = np.cross(d1, d2)
            sin_bend = np.linalg.norm(normal)
            bend_w = min(max((sin_bend - 0.17) / 0.25, 0.0), 1.0)
            if bend_w > 0:
                n = normal / sin_bend
                plane = np.stack([d1, n, np.cross(d1, n)], -1) @ np.stack([rest_dir, rest_normal, np.cross(rest_dir, rest_normal)], -1).T
                rel = plane @ swing.T
                v = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
                tau = math.atan2(float(v @ d1) / 2.0, (np.trace(rel) - 1.0) / 2.0)
                max_twist = math.radians(120.0 if is_arm else 90.0)
                limit_w = min(abs(abs(tau) - max_twist) / math.radians(30.0), 1.0)  # fades out at the limit
                if abs(tau) > max_twist:
                    tau -= math.copysign(math.pi, tau)
                upper_m = _ref_axis_angle(d1, bend_w * limit_w * tau) @ swing
        local[upper] = parent_m.T @ upper_m
        world[upper] = upper_m
        if d2 is None:
            continue
        target = upper_m.T @ d2
        perp = target - (target @ rest_normal) * rest_normal
        flex = math.atan2(float(np.cross(rest_dir, perp) @ rest_normal), float(rest_dir @ perp))
        flex = min(max(flex, 0.0), math.radians(limits.elbow_max_deg if is_arm else limits.knee_max_deg))
        local[lower] = _ref_axis_angle(rest_normal, flex)
        world[lower] = upper_m @ local[lower]
    yaw = math.atan2(hips_m[0, 2], hips_m[2, 2])
    foot_world = _ref_axis_angle(np.array([0.0, 1.0, 0.0]), yaw)
    for side in ("left", "right"):
        if f"{side}LowerLeg" in world:
            local[f"{side}Foot"] = world[f"{side}LowerLeg"].T @ foot_world
    return {name: quat.from_matrix(m) for name, m in local.items()}


def random_joints(rng, hide=0.0):
    """COCO-17 joints of the canonical skeleton in a random pose (up to ~100 degrees per bone), some
    rows NaN (``hide``: the chance of each), sometimes a straight limb or one folded past its limit."""
    rotations = {b: quat.from_axis_angle(rng.normal(size=3), rng.uniform(0, 1.8)) for b in BODY_BONES if rng.random() < 0.8}
    if rng.random() < 0.2:
        rotations["leftLowerArm"] = quat.IDENTITY  # straight: no bend plane
    if rng.random() < 0.2:
        # Folded past the knee limit (an exact half turn is left out: there the hinge angle is +-pi by
        # rounding, and either clamp is right).
        rotations["rightLowerLeg"] = quat.from_axis_angle(np.array([1.0, 0, 0]), 2.9)
    joints = joints_from_rig(rotations, rng.normal(0, 0.3, 3))
    joints[rng.random(17) < hide] = np.nan
    return joints


@pytest.mark.parametrize("hide", [0.0, 0.15])
def test_solve_rotations_matches_the_per_bone_reference(hide):
    rng = np.random.default_rng(19)
    limits = Limits(elbow_max_deg=140.0, knee_max_deg=150.0, spine_max_deg=50.0, neck_max_deg=70.0)
    compared = 0
    for _ in range(150):
        joints = random_joints(rng, hide)
        got, solved = solve_rotations(joints, limits)
        want = reference_solve(joints, limits)
        assert set(got) == solved == set(want)
        for name, q in want.items():
            assert np.allclose(got[name], q, atol=1e-9), (name, got[name], q)
            compared += 1
    assert compared > 1000  # most bones were solved and compared


def test_face_fit_with_precomputed_pseudo_inverse_matches_least_squares():
    rng = np.random.default_rng(3)
    for _ in range(50):
        rot = quat.to_matrix(quat.from_axis_angle(rng.normal(size=3), rng.uniform(0, 1.2)))
        face = (FACE_TEMPLATE @ rot.T)[:, :2] * rng.uniform(200, 900) + rng.uniform(0, 600, 2) + rng.normal(0, 0.5, (5, 2))
        for seen in [tuple(FACE)] + [tuple(i for i in FACE if i != skip) for skip in FACE]:
            want = fit_face_rotation(face[list(seen)], FACE_TEMPLATE[list(seen)])
            got = fit_face_rotation_seen(face[list(seen)], seen)
            assert (want is None) == (got is None)
            if want is not None:
                assert np.allclose(got, want, atol=1e-9)


# --- Lifter: outputs recorded from the per-limb implementation (commit d54bc44) on a fixed sequence ---

CAMERA = PinholeCamera()


def lifter_sequence():
    """12 frames 1/30 s apart: a standing pose, then random arm / leg swings (continuity between
    frames), an elbow and an ankle hidden on some frames."""
    rng = np.random.default_rng(7)
    frames = []
    rotations = {"leftUpperArm": quat.from_axis_angle(np.array([0, 0, 1.0]), -1.2),
                 "rightUpperArm": quat.from_axis_angle(np.array([0, 0, 1.0]), 1.2)}
    for i in range(12):
        if i:
            for bone in ("leftUpperArm", "rightUpperArm", "leftLowerArm", "rightLowerArm", "leftUpperLeg",
                         "rightUpperLeg", "leftLowerLeg", "rightLowerLeg", "spine", "head"):
                step = quat.from_axis_angle(rng.normal(size=3), rng.uniform(0.05, 0.35))
                rotations[bone] = quat.mul(step, rotations.get(bone, quat.IDENTITY))
        joints = joints_from_rig(rotations, np.array([0.1 * i, 0.95, -0.5]))
        kp, _ = CAMERA.project_with_depth(joints)
        scores = np.ones(17)
        if i in (4, 5):
            scores[L_EL] = 0.0
        if i in (8,):
            scores[R_AN] = 0.0
        frames.append((kp, scores, i / 30.0))
    return frames


# Per frame: z (metres, towards the camera) of elbows, wrists, knees, ankles (NaN: not placed), and
# the sum of every placed coordinate.
LIFTED = [
    [-0.0, -0.014186328478, 0.0, 0.000285907166, 0.0, 0.001080469527, 0.0, 0.000611745638, 2.509985907581],
    [0.003276398863, -0.022712859466, 0.01974332178, 0.050015674132, 0.10173226884, 0.09576470603, 0.126091310011, 0.083004703428, 2.785638181344],
    [-0.167719907301, -0.157855839594, -0.136435036294, -0.148662209143, 0.063510768715, 0.057575267392, 0.069811314783, 0.097878443446, 1.604748420402],
    [-0.022146376008, -0.068226851729, 0.014319798858, -0.013919570048, 0.048880112756, 0.050319948636, -0.067102768678, 0.064264037389, 2.666996348213],
    [math.nan, -0.10930706002, math.nan, -0.065234927923, 0.212314464852, 0.188176723459, -0.018137973711, 0.266201693453, 2.219914561332],
    [math.nan, -0.087570772183, math.nan, -0.042445071128, 0.099608136954, 0.183831384295, 0.005316579869, 0.241891918457, 2.21028188287],
    [-0.055974718581, -0.161665090577, -0.011870588949, -0.090803196561, 0.115860990908, 0.202815037199, -0.081374602704, 0.242587284096, 2.462223306817],
    [-0.050037283009, -0.143535614305, -0.038912966532, -0.089817622361, 0.077741897855, 0.176074988656, -0.126630713643, 0.187021104625, 1.976424811574],
    [-0.061288023511, -0.181427815336, -0.005048960611, -0.167227106664, 0.017962918775, 0.180922928431, -0.248501806725, math.nan, 3.048379050081],
    [-0.199896052064, -0.314118797772, -0.171469088849, -0.314870982886, 0.040302094453, -0.102357988166, -0.2628358321, -0.097158833855, 1.190252690423],
    [-0.242422133813, -0.293402672039, -0.169067659302, -0.311253819913, 0.061001417204, -0.205110744061, -0.190995806204, -0.227628166937, 1.372127417529],
    [-0.218268882913, -0.335939938781, -0.12063362088, -0.342993619384, 0.035208368997, -0.166346152959, -0.19305410375, -0.209928755753, 1.524715428202],
]


def lifted_summary():
    frames = lifter_sequence()
    calibration = calibration_from_frames([(kp, sc) for kp, sc, _ in frames[:1]], (CAMERA.width, CAMERA.height))
    lifter = ForeshorteningLifter(calibration, focal_px=CAMERA.focal_px)
    out = []
    for kp, sc, t in frames:
        joints = lifter.lift(kp, sc, t)
        out.append([*joints[[L_EL, R_EL, L_WR, R_WR, L_KN, R_KN, L_AN, R_AN], 2], float(np.nansum(joints))])
    return np.array(out)


def test_lifter_matches_the_per_limb_implementation():
    got = lifted_summary()
    assert np.allclose(got, np.array(LIFTED), atol=1e-9, equal_nan=True)
    assert np.isnan(got[4, 0]) and np.isnan(got[8, 7])  # hidden joints are not placed
    depths = got[:, :8][np.isfinite(got[:, :8])]
    assert (depths > 0.05).any() and (depths < -0.05).any()  # joints on both sides of the hips: signs were chosen


def test_unseen_policy_holds_then_eases_per_bone():
    """The batched policy: a bone unseen holds its last rotation for hold_seconds (confidence halved),
    then eases to the rest pose; the others keep tracking."""
    retargeter = Retargeter()
    frames = lifter_sequence()
    for kp, sc, t in frames[:3]:
        retargeter.update(kp, sc, t, (CAMERA.width, CAMERA.height))
        last = retargeter.solve(kp, sc, t, (CAMERA.width, CAMERA.height), advance=False)
    kp, sc, _ = frames[3]
    sc = sc.copy()
    sc[[L_WR]] = 0.0
    hold, ease = retargeter.config.hold_seconds, retargeter.config.ease_seconds
    held = retargeter.solve(kp, sc, 0.1 + hold / 2, (CAMERA.width, CAMERA.height), advance=False)
    assert np.allclose(held.rotations["leftLowerArm"], last.rotations["leftLowerArm"])
    assert held.confidence["leftLowerArm"] == pytest.approx(last.confidence["leftLowerArm"] * 0.5)
    assert held.confidence["rightLowerArm"] > 0.5
    eased = retargeter.solve(kp, sc, 0.1 + hold + ease + 1.0, (CAMERA.width, CAMERA.height), advance=False)
    assert np.allclose(np.abs(eased.rotations["leftLowerArm"]), quat.IDENTITY, atol=1e-9)
    assert eased.confidence["leftLowerArm"] == 0.0
    assert len(eased.rotations) == 22 and eased.tracking


# --- Calibration: the pooled, per-frame-measured calibration against the straightforward one ---

_REF_SEGMENTS = {
    "shoulders": (L_SH, R_SH), "hips": (L_HIP, R_HIP),
    "left_upper_arm": (L_SH, L_EL), "left_lower_arm": (L_EL, L_WR), "right_upper_arm": (R_SH, R_EL),
    "right_lower_arm": (R_EL, R_WR), "left_upper_leg": (L_HIP, L_KN), "left_lower_leg": (L_KN, L_AN),
    "right_upper_leg": (R_HIP, R_KN), "right_lower_leg": (R_KN, R_AN),
}


def reference_face_turn(kp, ok):
    """Sine of the face's turn from the camera: np.linalg.lstsq fit of the face template."""
    seen = [i for i, j in enumerate(FACE) if ok[j]]
    if len(seen) < 4:
        return None
    t = FACE_TEMPLATE[seen] - FACE_TEMPLATE[seen].mean(axis=0)
    o = kp[list(np.array(FACE)[seen])] * np.array([1.0, -1.0])  # image y down -> up
    a, *_ = np.linalg.lstsq(t, o - o.mean(axis=0), rcond=None)
    return a[2, 0] / np.linalg.norm(a[:, 0])


def reference_calibration(frames, image_size, min_score=0.3):
    """calibration_from_frames as it was before the pools: every frame revisited, np.percentile,
    np.median and np.mean; each frame's shoulder and hip widths divided by the cosine of its own face
    turn (clamped at CALIBRATION_MAX_TURN_DEG), and the widths' 60th percentile (at least 0.85 of
    the canonical width / torso proportion); each limb pair the longer side's length."""
    per_segment = {s: [] for s in SEGMENTS}
    hip_centers = []
    leg_extents = []  # per frame: (left, right) hip-to-ankle extent along the body's down axis, None unseen
    for kp, sc in frames:
        ok = sc >= min_score
        turn = reference_face_turn(kp, ok)
        lengths = {name: np.linalg.norm(kp[a] - kp[b]) if ok[a] and ok[b] else np.nan for name, (a, b) in _REF_SEGMENTS.items()}
        torso_ok = ok[L_SH] and ok[R_SH] and ok[L_HIP] and ok[R_HIP]
        lengths["torso"] = np.linalg.norm((kp[L_SH] + kp[R_SH]) / 2 - (kp[L_HIP] + kp[R_HIP]) / 2) if torso_ok else np.nan
        if turn is not None:
            limit = math.sin(math.radians(CALIBRATION_MAX_TURN_DEG))
            for width in ("shoulders", "hips"):
                lengths[width] /= math.cos(math.asin(float(np.clip(turn, -limit, limit))))
        for name, length in lengths.items():
            if math.isfinite(length) and length > 0:
                per_segment[name].append(length)
        if ok[L_HIP] and ok[R_HIP]:
            hip_centers.append((kp[L_HIP] + kp[R_HIP]) / 2)
        elif ok[L_SH] and ok[R_SH]:
            hip_centers.append((kp[L_SH] + kp[R_SH]) / 2)
        down = np.array([0.0, 1.0])
        if torso_ok:
            axis = (kp[L_HIP] + kp[R_HIP]) / 2 - (kp[L_SH] + kp[R_SH]) / 2
            down = axis / np.linalg.norm(axis)
        legs = tuple(float((kp[ankle] - kp[hip]) @ down) if ok[hip] and ok[ankle] else None for hip, ankle in ((11, 15), (12, 16)))
        if legs != (None, None):
            leg_extents.append(legs)
    measured = {s: float(np.percentile(v, 60 if s in ("shoulders", "hips") else 90)) for s, v in per_segment.items() if v}
    for limb in ("upper_arm", "lower_arm", "upper_leg", "lower_leg"):  # the longer side, for both
        sides = [measured[n] for n in (f"left_{limb}", f"right_{limb}") if n in measured]
        if sides:
            measured[f"left_{limb}"] = measured[f"right_{limb}"] = max(sides)
    if "torso" in measured:  # widths no narrower than 0.85 of the canonical proportions
        for width in ("shoulders", "hips"):
            if width in measured:
                measured[width] = max(measured[width], 0.85 * CANONICAL_LENGTHS[width] / CANONICAL_LENGTHS["torso"] * measured["torso"])
    ppm = float(np.median([measured[s] / CANONICAL_LENGTHS[s] for s in measured]))
    segments = {s: measured.get(s, CANONICAL_LENGTHS[s] * ppm) for s in SEGMENTS}
    center = np.mean(hip_centers, axis=0) if hip_centers else np.array(image_size, float) / 2
    drops = [float(np.clip(min(1 - e / (segments[f"{side}_upper_leg"] + segments[f"{side}_lower_leg"])
                                for side, e in zip(("left", "right"), legs) if e is not None), 0, 1)) for legs in leg_extents]
    leg = CANONICAL_LENGTHS["left_upper_leg"] + CANONICAL_LENGTHS["left_lower_leg"]
    drop = min(float(np.median(drops)), 0.1) * leg if drops else 0.0  # at most a tenth of the leg
    return segments, segments["torso"] + segments["left_upper_leg"] + segments["left_lower_leg"], tuple(center), sorted(measured), drop


def reference_pose_bend(kp, sc, min_score=0.3):
    ok = sc >= min_score
    worst = 0.0
    for a, b, c in ((L_HIP, L_KN, L_AN), (R_HIP, R_KN, R_AN), (L_SH, L_EL, L_WR), (R_SH, R_EL, R_WR)):
        if ok[a] and ok[b] and ok[c]:
            u, v = kp[a] - kp[b], kp[c] - kp[b]
            if np.linalg.norm(u) >= 1e-6 and np.linalg.norm(v) >= 1e-6:
                angle = math.degrees(math.acos(float(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))
                worst = max(worst, (180.0 - angle) / CALIBRATION_BEND_DEG)
    if ok[L_AN] and ok[R_AN] and ok[L_HIP] and ok[R_HIP]:
        leg = (np.linalg.norm(kp[L_HIP] - kp[L_AN]) + np.linalg.norm(kp[R_HIP] - kp[R_AN])) / 2
        worst = max(worst, abs(kp[L_AN][1] - kp[R_AN][1]) / max(leg, 1e-6) / CALIBRATION_FEET_LEVEL)
    return worst


def random_frame(rng):
    """A standing-ish COCO-17 frame in pixels with jitter (sometimes a bent limb), some joints unseen."""
    rotations = {b: quat.from_axis_angle(rng.normal(size=3), rng.uniform(0, 0.5 if rng.random() < 0.6 else 1.5))
                 for b in ("leftLowerArm", "rightLowerArm", "leftLowerLeg", "rightLowerLeg", "spine", "head")}
    rotations["leftUpperArm"] = quat.from_axis_angle(np.array([0, 0, 1.0]), -1.2)
    rotations["rightUpperArm"] = quat.from_axis_angle(np.array([0, 0, 1.0]), 1.2)
    kp, _ = CAMERA.project_with_depth(joints_from_rig(rotations, np.array([rng.normal(0, 0.2), 0.95, -0.5])))
    kp = kp + rng.normal(0, 2.0, kp.shape)
    scores = np.where(rng.random(17) < 0.12, 0.1, 0.9)
    return kp, scores


def assert_calibration_equal(got, want):
    segments, body_px, center, measured, drop = want
    assert set(got.segments) == set(segments)
    for name, value in segments.items():
        assert got.segments[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert got.body_px == pytest.approx(body_px, rel=1e-12)
    assert np.allclose(got.hip_center, center, rtol=1e-12, atol=1e-9)
    assert got.measured == measured
    assert got.standing_drop_m == pytest.approx(drop, rel=1e-9, abs=1e-12)


def test_calibration_from_frames_matches_the_reference():
    rng = np.random.default_rng(5)
    size = (CAMERA.width, CAMERA.height)
    for n in (1, 2, 3, 7, 10, 11, 31):
        frames = [random_frame(rng) for _ in range(n)]
        assert_calibration_equal(calibration_from_frames(frames, size), reference_calibration(frames, size))
    for _ in range(200):
        kp, sc = random_frame(rng)
        assert calibration_pose_bend(kp, sc) == pytest.approx(reference_pose_bend(kp, sc), rel=1e-12, abs=1e-12)


def test_calibration_pool_add_and_remove_match_a_fresh_pool():
    rng = np.random.default_rng(11)
    size = (CAMERA.width, CAMERA.height)
    frames = [random_frame(rng) for _ in range(40)]
    measurements = [calibration_measurement(kp, sc) for kp, sc in frames]
    pool = CalibrationPool()
    for _ in range(30):
        keys = {int(i) for i in rng.choice(40, size=rng.integers(1, 25), replace=False)}
        pool.hold(keys, measurements)
        assert len(pool) == len(keys)
        assert_calibration_equal(pool.calibration(size), reference_calibration([frames[i] for i in sorted(keys)], size))


def test_calibration_period_matches_recalibrating_from_the_chosen_frames():
    """The retargeter's pooled calibration period against the straightforward one: on every update
    of the period, calibrate from scratch from the straighter half of the standing frames (at least
    CALIBRATION_MIN_FRAMES; every frame while too few stand)."""
    rng = np.random.default_rng(23)
    size = (CAMERA.width, CAMERA.height)
    retargeter = Retargeter(RetargetConfig(calibration_seconds=0.5))
    every, accepted = [], []
    for i in range(40):
        kp, sc = random_frame(rng)
        sc[[L_SH, R_SH, L_HIP, R_HIP]] = 0.9  # the torso is seen: every frame counts
        retargeter.update(kp, sc, i / 30.0, size)
        every.append((kp, sc))
        bend = reference_pose_bend(kp, sc)
        if bend <= 1.0:
            accepted.append((kp, sc, bend))
        if len(accepted) >= CALIBRATION_MIN_FRAMES or (accepted and len(accepted) >= len(every) / 2):
            ranked = sorted(accepted, key=lambda f: f[2])
            frames = [(k, s) for k, s, _ in ranked[: max(CALIBRATION_MIN_FRAMES, (len(ranked) + 1) // 2)]]
        else:
            frames = every
        assert retargeter.calibration.frames == len(frames)
        assert_calibration_equal(retargeter.calibration, reference_calibration(frames, size))
        if retargeter.calibrated:
            break
    assert retargeter.calibrated and 5 <= len(accepted) < len(every)  # some frames were rejected
