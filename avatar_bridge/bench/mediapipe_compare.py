"""Speed of our pipeline against MediaPipe Pose on the very same frames, each in its own install.

Used by ``avatar-bridge bench --compare-mediapipe``. MediaPipe pins its own NumPy, OpenCV and protobuf,
so it runs in a separate virtual environment (``--mediapipe-python``) through
:mod:`avatar_bridge.bench.mediapipe_runner`, a script that needs only numpy and mediapipe, while our
pipeline runs here, in the install users get. The frames are decoded (and resized) once, here, and
handed to MediaPipe as a ``.npy`` file, so both sides time person finding + pose estimation on the same
in-memory frames, not video decoding.

Runs are interleaved: per run, our pipeline (fresh tracking state, the models loaded once) processes
the frames, then the MediaPipe runner does in its own process while this one waits, so the two never
share the CPU at once and a change in the machine's load hits both sides of a run alike. Each side
first processes ``warmup`` frames untimed (start-up, reported apart), then all the frames ``repeats``
times. Reported per run: both frame rates (measured frames / sum of their times) and their ratio;
then the median ratio, the load average and both installs' versions. MediaPipe Pose (BlazePose,
``model_complexity=1``, video mode) tracks one person, so compare it with ``--people driver``.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..capture import FrameSource
from ..metrics import median_p95
from ..types import Frame
from . import mediapipe_runner

RUNNER = Path(mediapipe_runner.__file__)
MEDIAPIPE_VERSION = mediapipe_runner.MEDIAPIPE_VERSION
PYTHON_ENV = "AVATAR_BRIDGE_MEDIAPIPE_PYTHON"
VENV_NAME = ".venv-mediapipe"
HOW_TO_CREATE = mediapipe_runner.VENV_HINT


def load_frames(source: FrameSource, max_frames: int | None = None) -> list[Frame]:
    """Read the source to its end (or ``max_frames``) into memory."""
    frames = []
    with source:
        while max_frames is None or len(frames) < max_frames:
            frame = source.read()
            if frame is None:
                break
            if frame.image is None:
                raise ValueError("--compare-mediapipe needs an image source (a video, camera or image folder)")
            frames.append(frame)
    if not frames:
        raise ValueError("the source gave no frames to compare on")
    return frames


def write_frames(frames: list[Frame], path: Path) -> Path:
    """The frames' BGR images as one uint8 (N, H, W, 3) ``.npy`` file, the runner's input."""
    shapes = {f.image.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"--compare-mediapipe needs frames of one size, got {sorted(shapes)}: use --resize WxH")
    images = np.stack([np.asarray(f.image, dtype=np.uint8) for f in frames])
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"--compare-mediapipe needs BGR color frames, got {images.shape[1:]}")
    np.save(path, images, allow_pickle=False)
    return path


def project_root() -> Path | None:
    """The checkout this package runs from (the folder with pyproject.toml above it), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def find_mediapipe_python(path: str | os.PathLike | None = None) -> Path:
    """The python of MediaPipe's venv: ``path``, else $AVATAR_BRIDGE_MEDIAPIPE_PYTHON, else
    ``.venv-mediapipe/bin/python`` in the current folder or the project's checkout."""
    given = path or os.environ.get(PYTHON_ENV)
    if given:
        python = Path(given).expanduser()
        origin = "--mediapipe-python" if path else f"${PYTHON_ENV}"
        if not python.exists():
            raise RuntimeError(f"{origin} {python} does not exist: create MediaPipe's venv: {HOW_TO_CREATE}")
        if python.is_dir() or not os.access(python, os.X_OK):
            raise RuntimeError(f"{origin} {python} is not an executable python: give the python of MediaPipe's venv, "
                               f"e.g. {VENV_NAME}/bin/python")
        return python
    folders = [Path.cwd()] + [r for r in [project_root()] if r is not None]
    for folder in folders:
        python = folder / VENV_NAME / "bin" / "python"
        if python.exists():
            return python
    where = " or ".join(str(f / VENV_NAME) for f in dict.fromkeys(folders))
    raise RuntimeError(f"--compare-mediapipe runs MediaPipe in its own venv and found none ({where}): "
                       f"create it: {HOW_TO_CREATE}, or set ${PYTHON_ENV}")


def run_runner(python: Path, *args: str, timeout: float = 600.0) -> dict:
    """Run :mod:`mediapipe_runner` under ``python`` (isolated: no PYTHONPATH, no user site) and return
    its JSON; its one-line error as a RuntimeError."""
    try:
        done = subprocess.run([str(python), "-I", str(RUNNER), *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the MediaPipe runner ({python}) took more than {timeout:.0f} s") from None
    except OSError as exc:
        raise RuntimeError(f"cannot run {python}: {exc}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        errors = [ln[len(mediapipe_runner.ERROR_PREFIX):] for ln in lines if ln.startswith(mediapipe_runner.ERROR_PREFIX)]
        why = errors[-1] if errors else (lines[-1] if lines else f"exit status {done.returncode}")
        raise RuntimeError(f"the MediaPipe runner failed: {why}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"the MediaPipe runner ({python}) printed no result: {done.stdout[-200:]!r}") from None


def summarize(ms: list[float]) -> dict:
    """p50/p95 per frame and frames per second (frames / the sum of their times)."""
    kept = np.asarray(ms, dtype=np.float64)
    p50, p95 = median_p95(kept)
    return {"frames": int(kept.size), "ms_p50": round(p50, 2), "ms_p95": round(p95, 2),
            "fps": round(1000.0 * kept.size / float(kept.sum()), 1) if kept.sum() > 0 else 0.0}


def _restamper():
    """A function giving each frame passed to it as a copy numbered from 0 and stamped with the time
    now: the passes over the same frames look like one capture to the pipeline."""
    count = itertools.count()

    def restamp(f: Frame) -> Frame:
        return Frame(index=next(count), timestamp=time.monotonic(), width=f.width, height=f.height, image=f.image)

    return restamp


def time_pipeline(pipeline, frames: list[Frame], repeats: int = 1, warmup: int = 0) -> tuple[list[float], int, float]:
    """Milliseconds of ``pipeline.process`` per frame, ``repeats`` passes over ``frames`` after ``warmup``
    untimed frames (the first ones); frames get fresh capture timestamps. Returns (ms, measured frames
    with at least one person, start-up ms of the warm-up frames)."""
    restamp = _restamper()

    def process(f: Frame):
        return pipeline.process(restamp(f))

    t0 = time.perf_counter()
    for i in range(warmup):
        process(frames[i % len(frames)])
    startup_ms = (time.perf_counter() - t0) * 1000.0
    out, found = [], 0
    for _ in range(repeats):
        for f in frames:
            t = time.perf_counter()
            poses = process(f)
            out.append((time.perf_counter() - t) * 1000.0)
            found += bool(poses.people)
    return out, found, startup_ms


def time_pipeline_overlapped(pipeline, frames: list[Frame], repeats: int = 1, warmup: int = 0) -> tuple[float, int]:
    """Frames per second of ``pipeline.process_overlapped`` (the pose network of one frame while the
    previous one is tracked, as ``bench`` and ``run --fast`` do for a file), ``repeats`` passes over
    ``frames`` after ``warmup`` untimed frames: the wall time from the first measured frame begun to
    the last finished. No per-frame times: a frame's result comes out during the next one's call.
    Returns (frames per second, measured frames with at least one person)."""
    restamp = _restamper()

    def begin(f: Frame | None):
        return pipeline.process_overlapped(None if f is None else restamp(f))

    try:
        for i in range(warmup):
            begin(frames[i % len(frames)])
        begin(None)  # the warm-up's last frame, finished untimed
        found = 0
        t0 = time.perf_counter()
        for _ in range(repeats):
            for f in frames:
                done = begin(f)
                found += done is not None and bool(done[1].people)
        done = begin(None)
        seconds = time.perf_counter() - t0
        found += done is not None and bool(done[1].people)
    finally:
        pipeline.close()
    return len(frames) * repeats / seconds, found


def fresh_pipeline(config, prepared):
    """A pipeline with new tracking state that reuses ``prepared``'s loaded models."""
    from ..pipeline import Pipeline

    pipeline = Pipeline(config)
    pipeline.detector, pipeline.estimator = prepared.detector, prepared.estimator
    return pipeline


def our_versions() -> dict:
    """Python and the versions of the packages that set our speed, as imported in this process."""
    import cv2

    out = {"python": platform.python_version(), "executable": sys.executable, "numpy": np.__version__,
           "opencv": cv2.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


def compare(config, python: str | os.PathLike | None = None, max_frames: int | None = None, runs: int = 5,
            repeats: int = 2, warmup: int = 3) -> dict:
    """Interleaved runs of both on the configured source's frames; returns a JSON-ready dict."""
    from ..pipeline import Pipeline, open_config_source

    if runs < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"--runs and --repeats must be at least 1 and --warmup at least 0 (got {runs}, {repeats}, "
                         f"{warmup})")
    if config.source.loop and not max_frames:
        raise ValueError("--compare-mediapipe reads the source into memory: with --loop, give --max-frames")
    mp_python = find_mediapipe_python(python)
    theirs_versions = run_runner(mp_python, "--versions", timeout=120)["versions"]  # fails early, before any work
    load_before = os.getloadavg()
    frames = load_frames(open_config_source(config), max_frames)
    t0 = time.perf_counter()
    prepared = Pipeline(config)
    prepared.prepare(images=True)
    models_ms = (time.perf_counter() - t0) * 1000.0
    per_run = []
    with tempfile.TemporaryDirectory(prefix="avatar-bridge-mediapipe-") as tmp:
        path = write_frames(frames, Path(tmp) / "frames.npy")
        timeout = 120.0 + 2.0 * len(frames) * repeats  # start-up, then 2 s a frame at most
        for run in range(1, runs + 1):
            load = os.getloadavg()[0]
            ours, our_found, our_startup = time_pipeline(fresh_pipeline(config, prepared), frames, repeats, warmup)
            overlapped_fps, overlapped_found = time_pipeline_overlapped(fresh_pipeline(config, prepared), frames, repeats,
                                                                        warmup)
            theirs = run_runner(mp_python, str(path), "--repeats", str(repeats), "--warmup", str(warmup),
                                timeout=timeout)
            a, b = summarize(ours), summarize(theirs["ms"])
            per_run.append({
                "run": run, "load_1min": round(load, 2),
                "avatar_bridge": {**a, "startup_ms": round(our_startup, 1), "person_found_frames": our_found},
                "mediapipe": {**b, "startup_ms": round(theirs["startup_ms"], 1),
                              "person_found_frames": theirs["person_found"]},
                "ratio_fps": round(a["fps"] / b["fps"], 2) if b["fps"] else None,
                # frames/s with the network of one frame overlapping the tracking of the previous
                # (MediaPipe's Python API gives each frame's result before it takes the next)
                "avatar_bridge_overlapped": {"fps": round(overlapped_fps, 1), "person_found_frames": overlapped_found},
                "ratio_fps_overlapped": round(overlapped_fps / b["fps"], 2) if b["fps"] else None,
            })
    ratios = [r["ratio_fps"] for r in per_run if r["ratio_fps"] is not None]
    overlapped_ratios = [r["ratio_fps_overlapped"] for r in per_run if r["ratio_fps_overlapped"] is not None]
    load_after = os.getloadavg()
    return {
        "frames": len(frames),
        "repeats": repeats,
        "warmup": warmup,
        "runs": per_run,
        "image_size": [frames[0].width, frames[0].height],
        "median_ratio_fps": round(statistics.median(ratios), 2) if ratios else None,
        "median_ratio_fps_overlapped": round(statistics.median(overlapped_ratios), 2) if overlapped_ratios else None,
        "avatar_bridge_models_ms": round(models_ms, 1),
        "mediapipe": {"model_complexity": theirs["model_complexity"], "static_image_mode": False,
                      "bgr_to_rgb": theirs["bgr_to_rgb"]},
        "versions": {"avatar_bridge": our_versions(), "mediapipe": theirs_versions},
        "machine": {"cpus": _cpu_count(), "load_before": [round(v, 2) for v in load_before],
                    "load_after": [round(v, 2) for v in load_after], "platform": platform.platform()},
    }


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 0


def format_comparison(result: dict) -> str:
    w, h = result["image_size"]
    ours, theirs = result["versions"]["avatar_bridge"], result["versions"]["mediapipe"]
    m = result["machine"]
    ratios = [r["ratio_fps"] for r in result["runs"] if r["ratio_fps"] is not None]
    lines = [
        f"same {result['frames']} frames at {w}x{h}, decoded in memory, x{result['repeats']} per side per run after "
        f"{result['warmup']} untimed warm-up frames; runs interleaved: avatar-bridge in this process, then MediaPipe "
        f"Pose (model_complexity {result['mediapipe']['model_complexity']}, video mode) in its own",
        f"{'run':<5}{'load 1m':>8}{'ours fps':>11}{'ms p50':>8}{'ms p95':>8}{'mediapipe fps':>15}{'ms p50':>8}"
        f"{'ms p95':>8}{'ratio':>8}{'ours overlapped fps':>21}{'ratio':>8}",
    ]
    for r in result["runs"]:
        a, b = r["avatar_bridge"], r["mediapipe"]
        ratio = "n/a" if r["ratio_fps"] is None else f"{r['ratio_fps']:.2f}x"
        overlapped = "n/a" if r["ratio_fps_overlapped"] is None else f"{r['ratio_fps_overlapped']:.2f}x"
        lines.append(f"{r['run']:<5}{r['load_1min']:>8.2f}{a['fps']:>11.1f}{a['ms_p50']:>8.2f}{a['ms_p95']:>8.2f}"
                     f"{b['fps']:>15.1f}{b['ms_p50']:>8.2f}{b['ms_p95']:>8.2f}{ratio:>8}"
                     f"{r['avatar_bridge_overlapped']['fps']:>21.1f}{overlapped:>8}")
    if ratios:
        lines.append(f"avatar-bridge / mediapipe frames per second, one frame at a time (as run with a camera): median "
                     f"{result['median_ratio_fps']:.2f}x over {len(ratios)} runs (min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
    overlapped_ratios = [r["ratio_fps_overlapped"] for r in result["runs"] if r["ratio_fps_overlapped"] is not None]
    if overlapped_ratios:
        lines.append(f"... overlapped (as bench and run --fast on a file): median {result['median_ratio_fps_overlapped']:.2f}x "
                     f"(min {min(overlapped_ratios):.2f}x, max {max(overlapped_ratios):.2f}x)")
    starts = [r["mediapipe"]["startup_ms"] for r in result["runs"]]
    ours_starts = [r["avatar_bridge"]["startup_ms"] for r in result["runs"]]
    found = result["runs"][-1]
    lines += [
        f"start-up, left out: avatar-bridge models {result['avatar_bridge_models_ms']:.0f} ms once, then warm-up "
        f"{min(ours_starts):.0f}-{max(ours_starts):.0f} ms per run; MediaPipe graph + warm-up "
        f"{min(starts):.0f}-{max(starts):.0f} ms per run",
        f"person found on the measured frames (last run): avatar-bridge {found['avatar_bridge']['person_found_frames']} "
        f"of {found['avatar_bridge']['frames']}, mediapipe {found['mediapipe']['person_found_frames']} of "
        f"{found['mediapipe']['frames']}",
        "avatar-bridge: " + _versions_line(ours),
        "mediapipe:     " + _versions_line(theirs),
        f"machine: {m['cpus']} CPUs, load average (1/5/15 min) {'/'.join(f'{v:.2f}' for v in m['load_before'])} "
        f"before, {'/'.join(f'{v:.2f}' for v in m['load_after'])} after",
    ]
    return "\n".join(lines)


def _versions_line(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items() if k != "executable") + f" ({versions.get('executable')})"
