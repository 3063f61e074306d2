"""Training data and training for the learned depth prior (:mod:`avatar_bridge.depth_prior`).

Mocap clips (BVH or AMP ``.npy``) and random poses, seen from random pinhole cameras around the
performer (every yaw, camera heights and fields of view of webcams), mirrored, with pixel noise,
dropped keypoints, varied body proportions and calibration errors, as the lifter meets them after the
stabilizer; then a small network fitted with torch. Apart from :mod:`~avatar_bridge.depth_prior` so
that the retargeter, which runs the network, never imports torch or the mocap readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .depth_prior import (
    CLASSES,
    FEATURES,
    HIPS,
    MIRROR_INDEX,
    MIRROR_SEGMENTS,
    PLANE_EDGE,
    PRIOR_SEGMENTS,
    SHOULDERS,
    DepthSignPrior,
    pose_features,
)
from .keypoints import KEYPOINT_INDEX as K
from .keypoints import NUM_KEYPOINTS


@dataclass(frozen=True)
class ViewSampling:
    """Random cameras for training views: yaw all round, camera height and distance from the
    performer's hips, horizontal field of view (degrees) over a 1280-pixel-wide image, the noise the
    lifter sees (pixel sigma relative to the body's height in the image, share of keypoints dropped),
    and random body proportions."""

    height_m: tuple[float, float] = (0.4, 2.2)
    distance_m: tuple[float, float] = (2.0, 6.0)
    fov_deg: tuple[float, float] = (50.0, 90.0)
    noise_share: tuple[float, float] = (0.0, 0.012)
    drop: float = 0.03
    proportions: float = 0.15  # limb segments and the torso scaled by up to +-15% (other people's bodies)
    calibration_error: float = 0.04  # sigma of the calibrated lengths' relative error, per person and per segment


# Limb segments for varying proportions, from the body outwards: (parent, child, the scale factor's
# name; left and right share it, jittered a little per side).
_CHAINS = (
    (K["left_shoulder"], K["left_elbow"], "upper_arm"), (K["left_elbow"], K["left_wrist"], "lower_arm"),
    (K["right_shoulder"], K["right_elbow"], "upper_arm"), (K["right_elbow"], K["right_wrist"], "lower_arm"),
    (K["left_hip"], K["left_knee"], "upper_leg"), (K["left_knee"], K["left_ankle"], "lower_leg"),
    (K["right_hip"], K["right_knee"], "upper_leg"), (K["right_knee"], K["right_ankle"], "lower_leg"),
)


def _vary_proportions(pose: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Poses (M, 17, 3) with each limb segment and the torso lengthened or shortened by a random
    factor in 1 +- ``spread`` (the same for both sides up to a 3% jitter), keeping every joint angle:
    children move along their segment and carry everything beyond them."""
    if spread <= 0:
        return pose
    out = pose.copy()
    m = len(pose)
    hips = out[:, list(HIPS)].mean(axis=1)
    shoulders = out[:, list(SHOULDERS)].mean(axis=1)
    upper = [i for i in range(NUM_KEYPOINTS) if i not in (K["left_hip"], K["right_hip"], K["left_knee"],
                                                           K["right_knee"], K["left_ankle"], K["right_ankle"])]
    torso = rng.uniform(-spread, spread, (m, 1))
    out[:, upper] += ((shoulders - hips) * torso)[:, None, :]  # shoulders, arms and head ride on the torso
    factors = {name: rng.uniform(1 - spread, 1 + spread, m) for name in ("upper_arm", "lower_arm", "upper_leg", "lower_leg")}
    for parent, child, name in _CHAINS:
        f = factors[name] * rng.uniform(0.97, 1.03, m)
        shift = (out[:, child] - out[:, parent]) * (f - 1)[:, None]
        moved = [child]
        if child in (K["left_elbow"], K["right_elbow"], K["left_knee"], K["right_knee"]):
            moved.append(child + 2)  # the wrist / ankle beyond it
        out[:, moved] += shift[:, None, :]
    return out


def training_views(joints3d: np.ndarray, views_per_frame: int, rng: np.random.Generator,
                   sampling: ViewSampling = ViewSampling()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random camera views of mocap poses, as training samples for :func:`train`.

    ``joints3d``: (N, 17, 3) COCO-17 world points, metres, Y up (:func:`avatar_bridge.mocap.coco17_world`).
    Returns features (M, 59) float32, labels (M, 8) int64 (the class of each segment's signed depth:
    0 away, 1 close to the image plane, 2 towards the camera) and a mask (M, 8) float32 (1 where both
    ends of the segment are seen), M = 2 N ``views_per_frame`` (every view also mirrored). Each
    view's camera looks at that frame's hip centre.
    """
    joints3d = np.asarray(joints3d, dtype=np.float64)
    n = len(joints3d)
    pose = _vary_proportions(np.repeat(joints3d, views_per_frame, axis=0), rng, sampling.proportions)  # (M, 17, 3)
    m = len(pose)
    hips = pose[:, list(HIPS)].mean(axis=1)
    yaw = rng.uniform(0, 2 * math.pi, m)
    dist = rng.uniform(*sampling.distance_m, m)
    cam = hips + np.stack([np.sin(yaw) * dist, np.zeros(m), np.cos(yaw) * dist], axis=1)
    cam[:, 1] = rng.uniform(*sampling.height_m, m)
    forward = hips - cam
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)
    rel = pose - cam[:, None, :]
    x, y, z = (np.einsum("mkc,mc->mk", rel, axis) for axis in (right, down, forward))
    focal = 640.0 / np.tan(np.radians(rng.uniform(*sampling.fov_deg, m)) / 2)
    px = np.stack([x / z, y / z], axis=-1) * focal[:, None, None]
    body = px[..., 1].max(axis=1) - px[..., 1].min(axis=1)
    sigma = rng.uniform(*sampling.noise_share, m) * body
    px = px + rng.normal(size=px.shape) * sigma[:, None, None]
    seen = rng.random((m, NUM_KEYPOINTS)) >= sampling.drop
    near = np.array([a for _, a, _ in PRIOR_SEGMENTS])
    far = np.array([b for _, _, b in PRIOR_SEGMENTS])
    length = np.linalg.norm(pose[:, far] - pose[:, near], axis=-1)
    # Length ratios as the lifter measures them: image length over the calibrated length at the hips'
    # distance, the calibration off by a few percent per person and per segment.
    hip_depth = z[:, list(HIPS)].mean(axis=1)
    expected = length * (focal / hip_depth)[:, None]
    expected *= rng.normal(1.0, sampling.calibration_error, (m, 1)) * rng.normal(1.0, sampling.calibration_error, length.shape)
    ratios = np.linalg.norm(px[:, far] - px[:, near], axis=-1) / np.maximum(expected, 1e-9)
    ratios[~(seen[:, near] & seen[:, far])] = np.nan
    signed = (z[:, near] - z[:, far]) / np.maximum(length, 1e-9)  # + : far end nearer the camera
    labels = np.where(signed > PLANE_EDGE, 2, np.where(signed < -PLANE_EDGE, 0, 1)).astype(np.int64)
    weights = (seen[:, near] & seen[:, far]).astype(np.float32)
    mirrored = px[:, MIRROR_INDEX] * np.array([-1.0, 1.0])
    features = np.concatenate([pose_features(px, seen, ratios),
                               pose_features(mirrored, seen[:, MIRROR_INDEX], ratios[:, MIRROR_SEGMENTS])])
    labels = np.concatenate([labels, labels[:, MIRROR_SEGMENTS]])
    weights = np.concatenate([weights, weights[:, MIRROR_SEGMENTS]])
    assert len(features) == 2 * n * views_per_frame
    return features, labels, weights


@dataclass(frozen=True)
class TrainingSettings:
    """How a prior is trained from clips; the defaults made the shipped weights. ``fps``: the rate
    clips are resampled to (poses per second of motion), ``views``: random cameras per pose.
    ``random_poses`` poses with random joint angles (:func:`random_poses`) join the clips."""

    views: int = 32
    epochs: int = 20
    hidden: int = 128
    fps: float = 30.0
    seed: int = 0
    random_poses: int = 4000  # poses with random joint angles added to the clips (0: none)
    tumbling: float = 0.33  # share of the random poses turned to a random whole-body orientation


def pool_samples(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The features, labels and masks of several :func:`training_views` results, concatenated."""
    return tuple(np.concatenate([sample[i] for sample in samples]) for i in range(3))


def train(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, settings: TrainingSettings = TrainingSettings(),
          progress: bool = False, label: str = "training depth prior") -> DepthSignPrior:
    """Fit the network (``settings.hidden`` wide, ``settings.epochs`` passes, ``settings.seed``) with
    masked cross-entropy over the three classes per segment (AdamW, learning rate 1e-3 with cosine
    decay, batches of 512, weight decay 1e-4) on samples from :func:`training_views`. Deterministic for
    a seed on one machine. Needs torch (a dependency of the pose stage)."""
    hidden, epochs, seed = settings.hidden, settings.epochs, settings.seed
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, len(PRIOR_SEGMENTS) * CLASSES))
    batch = 512
    steps = epochs * max(1, math.ceil(len(x) / batch))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    for _ in tqdm(range(epochs), desc=label, unit="epoch", disable=not progress):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            logits = net(x[idx]).reshape(-1, CLASSES)
            loss = (loss_fn(logits, y[idx].reshape(-1)) * w[idx].reshape(-1)).sum() / w[idx].sum().clamp(min=1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    linear = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    return DepthSignPrior(tuple((layer.weight.detach().numpy().T.astype(np.float64).copy(),
                                 layer.bias.detach().numpy().astype(np.float64).copy()) for layer in linear))


def sign_accuracy(prior: DepthSignPrior, features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Share of seen segments pointing clearly away or towards the camera (labels 0 or 2, samples
    from :func:`training_views`) whose side the prior gets right (towards more likely than away, or
    the reverse): the choice the geometry leaves open."""
    z = prior.logits(features)
    towards = z[..., 2] > z[..., 0]
    counted = (labels != 1) & (weights > 0)
    right = towards == (labels == 2)
    return float((right & counted).sum() / max(counted.sum(), 1))


def random_poses(count: int, rng: np.random.Generator, tumbling: float = 0.0) -> np.ndarray:
    """COCO-17 world points (``count``, 17, 3), metres, of poses with independent random joint angles
    within a human range: torso turn +-45 and lean +-15 degrees, upper arms raised -80..+90 and
    swung -40..+90 forwards, elbows bent 0-140, thighs swung -30..+80 forwards and +-15 sideways, knees
    bent 0-120 (a third of the poses stand: thighs -5..+10, knees 0-10). Straight limbs, arms held out
    and standing legs are what mocap of walks and jumps barely has, and what a webcam user does most.
    A share ``tumbling`` of the poses turns the whole body to a uniformly random orientation (upside
    down, lying, mid-flip)."""
    from .quat import from_axis_angle, mul
    from .retarget import joints_from_rig

    x_axis, y_axis, z_axis = np.eye(3)

    def rot(axis: np.ndarray, degrees: float) -> np.ndarray:
        return from_axis_angle(axis, math.radians(degrees))

    poses = []
    for _ in range(count):
        u = rng.uniform
        r = {"hips": mul(rot(y_axis, u(-45, 45)), rot(x_axis, u(-15, 15)))}
        if u() < tumbling:
            q = rng.normal(size=4)  # uniform over rotations: a normalized 4D Gaussian
            r["hips"] = mul(q / np.linalg.norm(q), r["hips"])
        standing = u() < 1 / 3
        for side, sign in (("left", 1.0), ("right", -1.0)):
            r[f"{side}UpperArm"] = mul(rot(y_axis, -sign * u(-40, 90)), rot(z_axis, sign * u(-80, 90)))
            r[f"{side}LowerArm"] = rot(-sign * y_axis, u(0, 140))
            swing, knee = (u(-5, 10), u(0, 10)) if standing else (u(-30, 80), u(0, 120))
            r[f"{side}UpperLeg"] = mul(rot(z_axis, u(-15, 15)), rot(x_axis, -swing))
            r[f"{side}LowerLeg"] = rot(x_axis, knee)
        poses.append(joints_from_rig(r, np.array([0.0, 0.95, 0.0])))
    return np.asarray(poses, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)


def clip_samples(paths: list[Path], settings: TrainingSettings = TrainingSettings(),
                 random: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`training_views` of each mocap clip (BVH or AMP ``.npy``), one tuple per clip, then
    (``random``, when ``settings.random_poses`` > 0) one of :func:`random_poses` with one view each.
    The views of clip ``i`` come from seed ``(settings.seed, i)``, the random poses and their views
    from ``(settings.seed, 2**31)``. Raises what :func:`avatar_bridge.mocap.load_motion` raises for a file
    that is not a mocap clip."""
    from .mocap import coco17_world, load_motion

    out = []
    for i, path in enumerate(paths):
        joints = coco17_world(load_motion(path), fps=settings.fps)
        out.append(training_views(joints, settings.views, np.random.default_rng((settings.seed, i))))
    if random and settings.random_poses > 0:
        rng = np.random.default_rng((settings.seed, 2**31))
        out.append(training_views(random_poses(settings.random_poses, rng, settings.tumbling), 1, rng))
    return out


def train_on_clips(paths: list[Path], settings: TrainingSettings = TrainingSettings(), progress: bool = False,
                   label: str = "training depth prior") -> DepthSignPrior:
    """A prior trained on mocap clips and random poses (:func:`clip_samples` then :func:`train`)."""
    return train(*pool_samples(clip_samples(paths, settings, random=True)), settings, progress=progress, label=label)
