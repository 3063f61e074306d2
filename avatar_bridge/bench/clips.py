"""Shared pieces of the motion benchmarks (``bench-smoothing``, ``bench-retarget``): one or many
mocap clips, where the camera stands for each, and the seeds.

Camera placement: an orbit camera (:func:`avatar_bridge.camera.fit_camera`) around the middle of the
clip's horizontal extent, ``yaw`` degrees from the performer's first-frame facing (0 = in front), at
``height`` metres (default: the middle of the clip's vertical extent), ``distance`` metres away
(default: the nearest that keeps every keypoint of every frame in the 1280x720 image, 900 px focal).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..camera import PinholeCamera, fit_camera
from ..mocap import MOCAP_SUFFIXES

CLIP_HELP = "FILE.bvh|FILE.npy|FILE.txt"


@dataclass(frozen=True)
class Placement:
    """Camera placement for a clip: None = fitted (see the module docstring)."""

    distance: float | None = None
    height: float | None = None
    yaw: float = 0.0

    def camera(self, joints3d: np.ndarray, extra_yaw: float = 0.0) -> PinholeCamera:
        """The camera for a clip's world keypoints (N, 17, 3), turned ``extra_yaw`` degrees further."""
        return fit_camera(joints3d, self.yaw + extra_yaw, distance=self.distance, height=self.height)

    def describe(self) -> str:
        d = "fitted" if self.distance is None else f"{self.distance:g} m"
        h = "fitted" if self.height is None else f"{self.height:g} m"
        return f"camera yaw {self.yaw:g} deg, distance {d}, height {h}"


def clip_name(path: str | Path) -> str:
    """Short name of a clip for tables and plot titles (file name without suffix)."""
    return Path(path).stem


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """--clip (one or many), camera placement and --seeds, the same in both motion benchmarks."""
    parser.add_argument("--clip", "--bvh", "--mocap", dest="clip", type=Path, nargs="+", action="extend", metavar=CLIP_HELP, default=None,
                        help="motion-capture clip(s) used as ground truth: BVH, AMP humanoid .npy or DeepMimic humanoid3d .txt, one or many "
                             "(required; --bvh and --mocap are old names)")
    parser.add_argument("--camera-distance", type=float, default=None,
                        help="camera distance from the middle of the clip, metres (default: fitted so the whole body stays in frame)")
    parser.add_argument("--camera-height", type=float, default=None,
                        help="camera height, metres (default: the middle of the clip's vertical extent)")
    parser.add_argument("--camera-yaw", type=float, default=0.0,
                        help="camera yaw around the performer, degrees from their first-frame facing (default 0: in front)")
    parser.add_argument("--seeds", "--seed", dest="seeds", type=int, nargs="+", default=[0],
                        help="noise seeds, one run each (default: 0)")


def check_clip_paths(paths: list[Path] | None, flag: str = "--clip") -> list[Path]:
    """``paths`` (None: none) as a list, after checking each is an existing BVH or AMP ``.npy`` file;
    FileNotFoundError / ValueError name the file and ``flag``."""
    clips = [Path(p) for p in paths or []]
    for path in clips:
        if not path.is_file():
            raise FileNotFoundError(f"mocap clip {path} not found: pass {flag} {CLIP_HELP}")
        if path.suffix.lower() not in MOCAP_SUFFIXES:
            raise ValueError(f"{path} is not a mocap clip: pass {flag} {CLIP_HELP}")
    return clips


def check_clip_arguments(args: argparse.Namespace, command: str) -> tuple[list[Path], Placement]:
    """The clip paths and placement from parsed arguments; ValueError/FileNotFoundError name the fix."""
    if not args.clip:
        raise ValueError(f"{command} needs a motion-capture clip as ground truth: pass --clip FILE.bvh or FILE.npy, one or many "
                         "(any BVH with a humanoid skeleton or an AMP humanoid clip; this repository's CI uses "
                         "../shared/fixtures/mocap/cmu_131_01_walk.bvh and ../shared/fixtures/mocap/amp/*.npy)")
    clips = check_clip_paths(args.clip)
    if args.camera_distance is not None and not 0.5 <= args.camera_distance <= 100.0:
        raise ValueError(f"--camera-distance must be between 0.5 and 100 metres, got {args.camera_distance}")
    if args.camera_height is not None and not -10.0 <= args.camera_height <= 10.0:
        raise ValueError(f"--camera-height must be between -10 and 10 metres, got {args.camera_height}")
    if not np.isfinite(args.camera_yaw):
        raise ValueError("--camera-yaw must be a finite number of degrees")
    return clips, Placement(args.camera_distance, args.camera_height, args.camera_yaw)
