"""The COCO-17 keypoint set: names, left/right pairs, limbs and OKS sigmas."""

from __future__ import annotations

import numpy as np

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)
KEYPOINT_INDEX = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

# Index pairs swapped by a horizontal flip (flip test, mirror mode).
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_permutation(num_keypoints: int = NUM_KEYPOINTS) -> np.ndarray:
    """Index array that swaps left and right keypoints."""
    perm = np.arange(num_keypoints)
    for a, b in FLIP_PAIRS:
        if a < num_keypoints and b < num_keypoints:
            perm[a], perm[b] = b, a
    return perm


# Lines drawn for a skeleton overlay.
SKELETON_EDGES: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# Per-keypoint OKS constants from the COCO keypoint evaluation.
OKS_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
     0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float32,
)


def oks(a: np.ndarray, b: np.ndarray, area: float, visible: np.ndarray | None = None) -> float:
    """Object keypoint similarity between keypoint sets ``a`` and ``b`` (K, 2) for a person of ``area`` px^2."""
    d2 = np.sum((a - b) ** 2, axis=-1)
    var = (2 * OKS_SIGMAS[: a.shape[0]]) ** 2
    e = d2 / (2 * max(area, 1e-6) * var)
    mask = np.ones(a.shape[0], bool) if visible is None else visible.astype(bool)
    return float(np.exp(-e)[mask].mean()) if mask.any() else 0.0
