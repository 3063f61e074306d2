"""MediaPipe Pose over frames read from a file, in MediaPipe's own interpreter.

The other half of ``avatar-bridge bench --compare-mediapipe``: the parent decodes the frames once,
writes them to a ``.npy`` file and runs this file as a script with the python of a separate virtual
environment that has MediaPipe (MediaPipe pins its own NumPy/OpenCV/protobuf, so it stays out of
avatar-bridge's install). So this file imports only the standard library, numpy and mediapipe
(OpenCV too when present, for the BGR to RGB conversion its users do), never ``avatar_bridge``.

Protocol::

    python mediapipe_runner.py FRAMES.npy [--repeats N] [--warmup N] [--model-complexity C]
    python mediapipe_runner.py --versions

``FRAMES.npy``: uint8 BGR frames shaped (N, H, W, 3), as ``numpy.save`` writes them (memory-mapped,
then copied into memory before any timing). MediaPipe Pose (BlazePose, video mode:
``static_image_mode=False``) is built, processes the first ``--warmup`` frames untimed (its graph loads
its models on the first frame: about half a second), then runs over all the frames ``--repeats`` times
in that same graph. Standard output gets one JSON object: ``versions``, ``startup_ms`` (building the
graph and the warm-up frames, not in ``ms``), ``ms`` (milliseconds per measured frame in order,
conversion to RGB included), ``person_found`` (measured frames with landmarks), ``frames``,
``repeats``, ``warmup``, ``image_size``, ``model_complexity`` and ``bgr_to_rgb``. ``--versions``
prints only ``{"versions": ...}``. Errors: one line on standard error starting with ``ERROR_PREFIX``,
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

ERROR_PREFIX = "mediapipe_runner: error: "
MEDIAPIPE_VERSION = "0.10.14"
VENV_HINT = (f"python3 -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe=={MEDIAPIPE_VERSION}"
             " (then pass --mediapipe-python .venv-mediapipe/bin/python)")


class RunnerError(Exception):
    """Printed as one line on standard error, exit status 2."""


def import_mediapipe():
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise RunnerError(f"numpy is not installed in {sys.executable}: create MediaPipe's venv: {VENV_HINT}") from None
    try:
        import mediapipe
    except ImportError as exc:
        raise RunnerError(f"mediapipe is not installed in {sys.executable} ({exc}): create its venv: {VENV_HINT}") \
            from None
    return mediapipe


def versions() -> dict:
    """Python and the versions of the packages that set MediaPipe's speed, as imported here."""
    mp = import_mediapipe()
    import numpy

    out = {"python": platform.python_version(), "executable": sys.executable,
           "mediapipe": getattr(mp, "__version__", "?"), "numpy": numpy.__version__}
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        pass
    return out


def load_frames(path: str) -> list:
    """The frames of ``path`` as C-contiguous arrays in memory (uint8, (H, W, 3) each)."""
    try:
        import numpy as np
    except ImportError:
        raise RunnerError(f"numpy is not installed in {sys.executable}: create MediaPipe's venv: {VENV_HINT}") from None

    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot read frames from {path}: {exc}") from None
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 \
            or frames.shape[0] == 0:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", None)
        raise RunnerError(f"{path} must hold uint8 BGR frames shaped (N, H, W, 3) with N >= 1, "
                          f"not {dtype} {shape}")
    return [np.ascontiguousarray(f) for f in frames]


def bgr_to_rgb():
    """The conversion MediaPipe's users do on OpenCV frames: cv2.cvtColor when OpenCV is there."""
    try:
        import cv2

        return lambda image: cv2.cvtColor(image, cv2.COLOR_BGR2RGB), "cv2.cvtColor"
    except ImportError:
        import numpy as np

        return lambda image: np.ascontiguousarray(image[:, :, ::-1]), "numpy"


def time_pose(frames: list, repeats: int = 1, warmup: int = 1, model_complexity: int = 1) -> dict:
    """MediaPipe Pose over ``frames``, ``repeats`` times, in one video-mode graph, after ``warmup``
    untimed frames (the first ones of ``frames``)."""
    mp = import_mediapipe()
    convert, conversion = bgr_to_rgb()
    t0 = time.perf_counter()
    pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=model_complexity)
    ms, found = [], 0
    try:
        for i in range(warmup):
            pose.process(convert(frames[i % len(frames)]))
        startup_ms = (time.perf_counter() - t0) * 1000.0
        for _ in range(repeats):
            for image in frames:
                t = time.perf_counter()
                result = pose.process(convert(image))
                ms.append((time.perf_counter() - t) * 1000.0)
                found += result.pose_landmarks is not None
    finally:
        pose.close()
    height, width = frames[0].shape[:2]
    return {"startup_ms": round(startup_ms, 3), "ms": [round(m, 4) for m in ms], "person_found": found,
            "frames": len(frames), "repeats": repeats, "warmup": warmup, "image_size": [int(width), int(height)],
            "model_complexity": model_complexity, "bgr_to_rgb": conversion}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediapipe_runner.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("frames", nargs="?", help="FRAMES.npy: uint8 BGR frames (N, H, W, 3)")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the frames (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed frames first, in the same graph (default 1)")
    parser.add_argument("--model-complexity", type=int, default=1, choices=(0, 1, 2), help="BlazePose model (default 1)")
    parser.add_argument("--versions", action="store_true", help="print the versions only")
    args = parser.parse_args(argv)
    try:
        if args.versions:
            print(json.dumps({"versions": versions()}))
            return 0
        if not args.frames:
            raise RunnerError("give the frames file (FRAMES.npy) or --versions")
        if args.repeats < 1:
            raise RunnerError(f"--repeats must be at least 1, not {args.repeats}")
        if args.warmup < 0:
            raise RunnerError(f"--warmup must be 0 or more, not {args.warmup}")
        frames = load_frames(args.frames)  # needs only numpy
        info = versions()
        result = time_pose(frames, args.repeats, args.warmup, args.model_complexity)
    except RunnerError as exc:
        print(ERROR_PREFIX + str(exc), file=sys.stderr)
        return 2
    print(json.dumps({"versions": info, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
