"""A learned prior on which way each limb segment points in depth, from one frame's 2D keypoints.

Monocular lifting leaves every limb segment two solutions, towards and away from the camera, that
project to the same pixels (docs/retarget.md, "Depth recovery"). The foreshortening lifter picks
between them with continuity and hand-written anatomy rules; with the true choice (an oracle) its
limb error on the six mocap clips falls to within issue #17's floors on almost every clip, so the
choice is what limits it. This module learns the choice from mocap: a small multilayer perceptron
reads the whole body's 2D pose and each limb segment's foreshortening (its image length over its
calibrated length) and gives, per limb segment, the log-probabilities of three classes
of its signed depth s (the far end's (elbow, wrist, knee, ankle) depth towards the camera relative
to the near end, over the segment's length): pointing away (s < -0.25), close to the image plane
(|s| <= 0.25) and pointing towards the camera (s > 0.25). The lifter adds that as one more term of
its sign cost (the log-probability at each candidate's s, interpolated between the class centres
-0.5, 0, 0.5); it does not replace the geometry. The middle class matters: a straight leg of a
standing user lies near the image plane, and a two-class prior trained on walking and jumping
(knees mostly ahead of the hips) pulled it to the bent solution the geometry also offers.

Training (:mod:`avatar_bridge.depth_prior_training`) uses mocap clips and random poses seen from
random cameras. The shipped weights (``avatar_bridge/data/depth_prior.npz``) were trained on the six
fixture clips and 4,000 random poses; ``avatar-bridge train-depth-prior`` retrains on any clips (benchmarks hold one clip
out: README, retargeting table).

Inference is plain numpy on one frame (three small matrix products, about 20 us): the lifter runs per
person on every pose update.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .keypoints import KEYPOINT_INDEX as K
from .keypoints import NUM_KEYPOINTS

# The limb segments the prior judges, in the retargeter's LIMB_SEGMENTS order: (near end, far end).
PRIOR_SEGMENTS: tuple[tuple[str, int, int], ...] = (
    ("left_upper_arm", K["left_shoulder"], K["left_elbow"]),
    ("left_lower_arm", K["left_elbow"], K["left_wrist"]),
    ("right_upper_arm", K["right_shoulder"], K["right_elbow"]),
    ("right_lower_arm", K["right_elbow"], K["right_wrist"]),
    ("left_upper_leg", K["left_hip"], K["left_knee"]),
    ("left_lower_leg", K["left_knee"], K["left_ankle"]),
    ("right_upper_leg", K["right_hip"], K["right_knee"]),
    ("right_lower_leg", K["right_knee"], K["right_ankle"]),
)
# COCO-17 index of each keypoint's mirror image (left <-> right), for the mirrored training copies.
MIRROR_INDEX = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
# Segment order after mirroring (left <-> right).
MIRROR_SEGMENTS = np.array([2, 3, 0, 1, 6, 7, 4, 5])
HIPS = (K["left_hip"], K["right_hip"])
SHOULDERS = (K["left_shoulder"], K["right_shoulder"])
_TORSO = HIPS + SHOULDERS
FEATURES = 3 * NUM_KEYPOINTS + 8  # x, y (normalized) and seen per keypoint, then each limb segment's length ratio
DEFAULT_WEIGHTS = Path(__file__).with_name("data") / "depth_prior.npz"
PLANE_EDGE = 0.25  # |signed depth| up to this is the "close to the image plane" class
CLASSES = 3  # away, close to the image plane, towards the camera


def pose_features(keypoints: np.ndarray, seen: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Network input for poses (..., 17, 2) in pixels (y down) with ``seen`` (..., 17) booleans and
    ``ratios`` (..., 8): each limb segment's (``PRIOR_SEGMENTS``) length in the image over its
    calibrated length at the person's current distance (1: in the image plane; NaN: unknown).

    Returns (..., 59) float32: per keypoint x, y (y up) relative to the centre of the seen hips and
    shoulders, divided by the root mean square distance of the seen keypoints from that centre (so
    the size of the person in the image and the camera's resolution do not matter), then the seen
    flags, then the ratios clipped to [0, 1.3] (unknown: 0). The ratios tell how far out of the image
    plane each segment points, which the normalized pose alone cannot (a straight leg and one swung
    20 degrees forwards look alike); the network then only has to choose the side. Unseen keypoints
    are zeros. Fewer than two seen keypoints give all zeros.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    mask = np.asarray(seen, dtype=bool) & np.all(np.isfinite(kp), axis=-1)
    kp = np.where(mask[..., None], kp, 0.0)
    torso = np.zeros(mask.shape, dtype=bool)
    torso[..., list(_TORSO)] = True
    anchor = mask & torso
    anchor = np.where(np.any(anchor, axis=-1, keepdims=True), anchor, mask)
    count = np.maximum(anchor.sum(axis=-1, keepdims=True), 1)
    center = (kp * anchor[..., None]).sum(axis=-2) / count
    rel = (kp - center[..., None, :]) * mask[..., None]
    n_seen = np.maximum(mask.sum(axis=-1), 1)
    rms = np.sqrt((rel**2).sum(axis=(-1, -2)) / n_seen)
    usable = (mask.sum(axis=-1) >= 2) & (rms > 1e-9)
    rel = rel / np.where(usable, rms, 1.0)[..., None, None]
    rel[..., 1] *= -1.0
    ratios = np.clip(np.nan_to_num(np.asarray(ratios, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.3)
    out = np.concatenate([rel.reshape(*rel.shape[:-2], 2 * NUM_KEYPOINTS), mask.astype(np.float64), ratios], axis=-1)
    return np.where(usable[..., None], out, 0.0).astype(np.float32)


@dataclass(frozen=True)
class DepthSignPrior:
    """The trained network: ``FEATURES`` -> hidden -> hidden -> 8 x 3 logits, ReLU between.

    ``layers``: ((weight (in, out), bias (out,)), ...) float64. :meth:`log_probs` gives, per segment
    of ``PRIOR_SEGMENTS``, the log-probabilities of its signed depth pointing away, lying close to
    the image plane and pointing towards the camera (module docstring), floored at log(0.002).
    """

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(..., 8, 3) logits for features (..., 59) from :func:`pose_features`."""
        x = np.asarray(features, dtype=np.float64)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                np.maximum(x, 0.0, out=x)
        return x.reshape(*x.shape[:-1], len(PRIOR_SEGMENTS), CLASSES)

    def log_probs(self, keypoints: np.ndarray, seen: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """(8, 3) float64 for one pose (17, 2) pixels with ``seen`` (17,) booleans and segment
        length ``ratios`` (8,) (:func:`pose_features`); or (N, 8, 3) for (N, 17, 2)."""
        return _floored_log_softmax(self.logits(pose_features(keypoints, seen, ratios)))

    def log_probs_one(self, keypoints: list, seen: list[bool], ratios: list[float]) -> list[list[float]]:
        """:meth:`log_probs` of one pose given as plain Python lists (17 [x, y] pixel pairs, 17 seen
        flags, 8 ratios, NaN for unknown), as 8 lists of 3 floats: the lifter's per-update path, where
        numpy's per-call cost on 17 points would be most of the work. Same values as
        :meth:`log_probs` to float rounding (tests/test_depth_prior.py)."""
        mask = [bool(v) and math.isfinite(p[0]) and math.isfinite(p[1]) for p, v in zip(keypoints, seen)]
        anchor = [i for i in _TORSO if mask[i]] or [i for i in range(NUM_KEYPOINTS) if mask[i]]
        n_seen = sum(mask)
        features = [0.0] * FEATURES
        if n_seen >= 2:
            cx = sum(keypoints[i][0] for i in anchor) / len(anchor)
            cy = sum(keypoints[i][1] for i in anchor) / len(anchor)
            rel = [(p[0] - cx, p[1] - cy) if m else (0.0, 0.0) for p, m in zip(keypoints, mask)]
            rms = math.sqrt(sum(x * x + y * y for x, y in rel) / n_seen)
            if rms > 1e-9:
                for i, (x, y) in enumerate(rel):
                    features[2 * i] = x / rms
                    features[2 * i + 1] = -y / rms
                    features[2 * NUM_KEYPOINTS + i] = 1.0 if mask[i] else 0.0
                for j, r in enumerate(ratios):
                    features[3 * NUM_KEYPOINTS + j] = 0.0 if not math.isfinite(r) else 0.0 if r < 0.0 else 1.3 if r > 1.3 else r
        # float32 like the batch path's features
        return _floored_log_softmax(self.logits(np.array(features, dtype=np.float32))).tolist()

    def save(self, path: str | Path) -> None:
        arrays = {}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_WEIGHTS) -> "DepthSignPrior":
        """Read weights saved by :meth:`save`. Raises ValueError naming the file when it is missing,
        unreadable or its shapes do not chain from ``FEATURES`` inputs to 8 x 3 outputs."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not depth-prior weights: give the .npz file `avatar-bridge train-depth-prior` wrote")
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):  # a plain .npy array
                raise ValueError("a single array, not an .npz archive")
            with data:
                count = sum(1 for k in data.files if k.startswith("w"))
                layers = tuple((np.asarray(data[f"w{i}"], dtype=np.float64), np.asarray(data[f"b{i}"], dtype=np.float64))
                               for i in range(count))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such depth-prior weights file; train one with `avatar-bridge train-depth-prior` "
                             "or run without one (retarget.depth_prior = \"\")") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise ValueError(f"{path} is not depth-prior weights (the .npz file `avatar-bridge train-depth-prior` writes); "
                             "retrain, or run without one (retarget.depth_prior = \"\")") from None
        width = FEATURES
        for w, b in layers:
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError(f"{path}: depth-prior layer shapes do not chain from {FEATURES} inputs; "
                                 "retrain with `avatar-bridge train-depth-prior`")
            width = w.shape[1]
        if not layers or width != len(PRIOR_SEGMENTS) * CLASSES:
            raise ValueError(f"{path}: a depth prior needs {len(PRIOR_SEGMENTS) * CLASSES} outputs, this file has "
                             f"{width if layers else 0}; retrain with `avatar-bridge train-depth-prior`")
        return cls(layers)


def weights_path(setting: str) -> Path | None:
    """The weights file a ``retarget.depth_prior`` setting names: None for ``""`` or ``"none"``, the
    shipped weights for ``"default"``, else the path (relative to the current folder, ``~``
    expanded). Raises ValueError (one line) when that path is a folder or does not exist."""
    if not setting or setting == "none":
        return None
    if setting == "default":
        return DEFAULT_WEIGHTS
    path = Path(setting).expanduser()
    if path.is_dir():
        raise ValueError(f"{setting} is a folder; give the .npz file `avatar-bridge train-depth-prior` wrote")
    if not path.is_file():
        raise ValueError(f"{setting} does not exist (a relative path starts from the current folder); give weights saved by "
                         "`avatar-bridge train-depth-prior`, \"default\" for the shipped ones, or \"\" for none")
    return path


def _floored_log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis of ``logits``, floored at log(0.002) so that one
    confident class never forbids a candidate outright."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return np.maximum(z - np.log(np.exp(z).sum(axis=-1, keepdims=True)), math.log(0.002))


def log_prob_at(log_probs: list[float], signed: float) -> float:
    """The prior's log-probability for one segment (``log_probs``: away, close to the image plane,
    towards the camera, as :meth:`DepthSignPrior.log_probs` gives them) at signed depth ``signed``:
    linear between the classes' centres -0.5, 0 and 0.5, held beyond them. Plain floats: the lifter
    calls it for every candidate of every limb on every update."""
    away, plane, towards = log_probs
    if signed >= 0.0:
        t = 1.0 if signed >= 0.5 else signed / 0.5
        return plane + t * (towards - plane)
    t = 1.0 if signed <= -0.5 else -signed / 0.5
    return plane + t * (away - plane)
