"""A pinhole camera for projecting 3D joints (canonical frame: metres, Y up) to image pixels.

Used by the keypoint-only sources (BVH mocap, synthetic performer) and their benchmarks, so the
2D ground truth comes from an exact, distortion-free projection. Image axes: x right, y down,
origin at the top-left pixel corner, principal point at the image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PinholeCamera:
    """A camera at ``position`` looking at ``target`` with the world +Y axis as "up" in the image."""

    focal_px: float = 900.0
    width: int = 1280
    height: int = 720
    position: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 3.0]))
    target: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float64).reshape(3)
        self.target = np.asarray(self.target, dtype=np.float64).reshape(3)
        if not (self.focal_px > 0 and math.isfinite(self.focal_px)):
            raise ValueError(f"camera focal_px must be a positive number of pixels, got {self.focal_px}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"camera image size must be positive, got {self.width}x{self.height}")
        forward = self.target - self.position
        norm = np.linalg.norm(forward)
        if norm < 1e-9:
            raise ValueError("camera position and target are the same point: move the target in front of the camera")
        forward = forward / norm
        right = np.cross(forward, [0.0, 1.0, 0.0])
        if np.linalg.norm(right) < 1e-6:
            raise ValueError("camera looks straight up or down: the world Y axis cannot be the image's up direction")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        # Rows are the camera axes (x right, y down, z forward) in world coordinates.
        self.rotation = np.stack([right, down, forward])

    @classmethod
    def orbit(
        cls,
        azimuth_deg: float = 0.0,
        distance: float = 3.0,
        height: float = 1.0,
        focal_px: float = 900.0,
        width: int = 1280,
        height_px: int = 720,
        center: tuple[float, float] = (0.0, 0.0),
    ) -> "PinholeCamera":
        """A camera ``distance`` metres from ``center`` (x, z) at ``height``, looking horizontally at it.

        Azimuth 0 puts it on the +Z axis (in front of a performer facing +Z); positive azimuth moves
        it towards +X (the performer's left), e.g. 45 for a three-quarter view.
        """
        a = math.radians(azimuth_deg)
        cx, cz = center
        position = np.array([cx + distance * math.sin(a), height, cz + distance * math.cos(a)])
        target = np.array([cx, height, cz])
        return cls(focal_px=focal_px, width=width, height=height_px, position=position, target=target)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) to camera coordinates (..., 3): x right, y down, z depth in metres."""
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation.T

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Distance along the viewing axis (..., ); <= 0 means behind the camera."""
        return self.to_camera(points)[..., 2]

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) to pixel coordinates (..., 2). Points behind the camera give NaN."""
        cam = self.to_camera(points)
        z = cam[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = self.focal_px * cam[..., :2] / z + np.array([self.width / 2.0, self.height / 2.0])
        return np.where(z > 1e-6, uv, np.nan)

    def project_with_depth(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (..., 2) and depth (...,) in one pass."""
        return self.project(points), self.depth(points)


def fit_camera(
    points: np.ndarray,
    azimuth_deg: float = 0.0,
    distance: float | None = None,
    height: float | None = None,
    focal_px: float = 900.0,
    width: int = 1280,
    height_px: int = 720,
    margin: float = 0.05,
    max_distance: float = 40.0,
) -> PinholeCamera:
    """An orbit camera (:meth:`PinholeCamera.orbit`) placed for a whole clip.

    ``points``: world keypoints of every frame (N, K, 3), metres, Y up. The camera looks
    horizontally at the centre of the clip's horizontal extent (x, z bounding-box middle),
    ``azimuth_deg`` around it (0 = on +Z). ``height`` (metres) defaults to the middle of the clip's
    vertical extent; ``distance`` (metres from the centre) defaults to the smallest, in 0.05 m steps,
    at which every point of every frame is in front of the camera (0.3 m or more) and inside the image
    with ``margin`` (a share of each side) to spare. Raises ValueError for an empty or non-finite
    clip, or when no distance up to ``max_distance`` fits (a clip spanning tens of metres).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise ValueError("fit_camera: need a non-empty, finite set of points")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = ((lo[0] + hi[0]) / 2.0, (lo[2] + hi[2]) / 2.0)
    eye = (lo[1] + hi[1]) / 2.0 if height is None else float(height)

    def make(d: float) -> PinholeCamera:
        return PinholeCamera.orbit(azimuth_deg, distance=d, height=eye, focal_px=focal_px, width=width, height_px=height_px, center=center)

    if distance is not None:
        if not distance > 0:
            raise ValueError(f"camera distance must be positive, got {distance}")
        return make(float(distance))
    mx, my = margin * width, margin * height_px
    for d in np.arange(0.5, max_distance + 1e-9, 0.05):
        cam = make(float(d))
        uv, depth = cam.project_with_depth(pts)
        if np.all(depth > 0.3) and np.all((uv[:, 0] >= mx) & (uv[:, 0] <= width - mx) & (uv[:, 1] >= my) & (uv[:, 1] <= height_px - my)):
            return cam
    raise ValueError(f"fit_camera: no distance up to {max_distance} m keeps the whole clip in frame; pass a distance")
