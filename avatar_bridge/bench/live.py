"""``avatar-bridge bench``: run the live pipeline over a source and report fps and per-stage percentiles.

It uses exactly the code of ``run`` (:class:`avatar_bridge.pipeline.Pipeline`), minus windows and
sockets: files are read as fast as possible (``--realtime`` to pace them like a camera; keypoint
sources are paced unless ``--fast``, their timestamps being their time in the performance) and each
frame is processed (as ``run --fast`` does, the pose network of one frame overlapping the tracking
of the previous; ``--sequential`` one frame at a time, as ``run`` does for a camera), while an :class:`~avatar_bridge.stream.OutputClock` samples the pipeline at the output
rate on its own thread (prediction + retargeting), as ``run`` does, with a sink that discards the
frames. So the figures include the CPU the output thread takes. The first ``--warmup`` frames (model
initialisation, first allocations) are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from ..metrics import PipelineMetrics, median_p95, peak_rss_mb, thread_cpu_seconds
from ..commands.options import add_source_arguments, apply_source_arguments
from ..pipeline import Pipeline, is_keypoint_source, open_config_source, overlaps

SAMPLE_EVERY = 10  # every 10th measured frame is kept for the inference costs...
MAX_SAMPLES = 20  # ...up to 20 of them (20 x 1080p BGR = 124 MB at most)
STAGE_ORDER = ("grab", "detect", "crop_boxes", "pose", "track", "smooth", "predict", "retarget")


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    add_source_arguments(parser)
    parser.add_argument("--warmup", type=int, default=3, metavar="N", help="frames left out of the figures (default 3)")
    parser.add_argument("--output-rate", type=float, metavar="HZ",
                        help="rate of the output thread that predicts and retargets (default websocket.rate, 60)")
    parser.add_argument("--no-outputs", action="store_true", help="no output thread: time only capture to keypoints")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--sequential", action="store_true",
                        help="one frame at a time (Pipeline.process), as for a camera; default for files read as fast "
                             "as possible: the pose network of one frame runs while the previous one is tracked")
    group = parser.add_argument_group("MediaPipe comparison")
    group.add_argument("--compare-mediapipe", action="store_true",
                       help="time our pipeline (here) and MediaPipe Pose (in its own venv) on the same decoded frames, "
                            "in interleaved runs, and report their frames/s ratio per run")
    group.add_argument("--mediapipe-python", metavar="PATH",
                       help="the python of a venv with mediapipe (default $AVATAR_BRIDGE_MEDIAPIPE_PYTHON, else "
                            ".venv-mediapipe/bin/python here or in the checkout); create it with: python3 -m venv "
                            ".venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==0.10.14")
    group.add_argument("--runs", type=int, default=5, metavar="N", help="interleaved runs per side (default 5)")
    group.add_argument("--repeats", type=int, default=2, metavar="N",
                       help="passes over the frames per side per run (default 2)")


def run_bench(config, max_frames: int | None = None, duration: float | None = None, warmup: int = 3,
              outputs: bool = True, output_rate: float | None = None, overlap: bool | None = None) -> dict:
    """Process the configured source; returns the results as a JSON-ready dict.

    ``overlap``: :meth:`Pipeline.process_overlapped` (the pose network of one frame runs while the
    previous one is tracked and smoothed) instead of :meth:`Pipeline.process`; default: where ``run``
    uses it (:func:`~avatar_bridge.pipeline.overlaps`: files and image folders read as fast as possible).
    """
    from ..stream import OutputClock

    rate = output_rate or config.websocket.rate
    if not 1.0 <= rate <= 1000.0:
        raise ValueError(f"--output-rate {rate} is out of range: use 1 to 1000 Hz")
    load_before = os.getloadavg()[0]
    pipeline = Pipeline(config, PipelineMetrics(window=100000))
    pipeline.prepare(images=not is_keypoint_source(config.source.source))
    clock = OutputClock(pipeline.sample, [(_discard, rate)]) if outputs else None
    source = open_config_source(config)
    if overlap is None:
        overlap = overlaps(source, config)
    samples: list[tuple] = []  # (image, crop boxes) of some measured frames, for the inference costs
    frames = 0
    started = None
    cpu_before: dict[str, float] = {}
    try:
        while True:
            t0 = time.perf_counter()
            frame = source.read()
            grab_ms = (time.perf_counter() - t0) * 1000.0
            if frame is None:
                break
            # Fresh figures from here on; overlapped, the call that reads a frame finishes the one before
            # it, so the window opens one read later and holds as many finished frames.
            if frames == warmup + overlap:
                pipeline.metrics = PipelineMetrics(window=100000)
                started = time.monotonic()
                cpu_before = thread_cpu_seconds()
                if clock is not None:
                    clock.start()
            pipeline.metrics.add_stage("grab", grab_ms)
            if overlap:
                done = pipeline.process_overlapped(frame)  # the frame before this one, now finished
            else:
                done = (frame, pipeline.process(frame))
            if done is not None:
                _sample(done, started, clock, samples, pipeline.metrics)
            frames += 1
            if max_frames and frames >= max_frames + warmup:
                break
            if duration and started is not None and time.monotonic() - started >= duration:
                break
        if overlap:
            done = pipeline.process_overlapped(None)  # the last frame begun
            if done is not None:
                _sample(done, started, clock, samples, pipeline.metrics)
        cpu_after = thread_cpu_seconds()  # before the clock and the decoder stop (their threads end)
        ended = time.monotonic()
        ticks = clock.stats().ticks if clock is not None else 0  # the clock's ticks over the same span
    finally:
        if clock is not None:
            clock.stop()
        pipeline.close()
        source.close()
    if started is None:
        raise RuntimeError(
            f"source {config.source.source} gave only {frames} frames, not more than --warmup {warmup}: "
            "use a longer source, --loop, or a smaller --warmup"
        )
    elapsed = ended - started
    snap = pipeline.metrics.snapshot()
    measured = snap["frames"]
    tracker = pipeline.tracker
    fps = measured / elapsed if elapsed > 0 else 0.0
    inference = inference_costs(pipeline, samples, tracker.detections_run / max(frames, 1), fps)
    return {
        "source": str(config.source.source),
        "resize": config.source.resize or None,
        "image_size": [source.width, source.height],
        "pose_model": config.pose.model or None,
        "detector": config.detector.name,
        "people_mode": config.detector.people,
        "frames": measured,
        "seconds": round(elapsed, 3),
        # frames / wall time of the measured part: includes decoding and everything else
        "fps": round(measured / elapsed, 2) if elapsed > 0 else 0.0,
        "updates": snap["updates"],
        "updates_per_s": round(snap["updates"] / elapsed, 2) if elapsed > 0 else 0.0,
        "dropped": snap["dropped"],
        "detector_runs": tracker.detections_run,
        "frames_total": frames,
        "overlapped": overlap,
        "stages_ms": {k: snap["stages_ms"][k] for k in STAGE_ORDER if k in snap["stages_ms"]},
        "latency_ms": snap["latency_ms"],
        "inference": inference,
        # CPU seconds per thread over the measured part, every thread (clock ticks: 0.01 s steps)
        "thread_cpu_s": {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after},
        "outputs": _clock_summary(clock, rate, ticks / elapsed if elapsed > 0 else 0.0),
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine_info(load_before),
    }


def _sample(done: tuple, started: float | None, clock, samples: list[tuple], metrics: PipelineMetrics) -> None:
    """After a frame is processed: send it at once (as ``run`` does) and keep every
    ``SAMPLE_EVERY``-th measured frame (image, crop boxes) for the inference costs."""
    frame, poses = done
    if started is None:
        return
    if clock is not None:
        clock.nudge()  # as run does: a new pose update leaves at once
    measured = metrics.frames - 1  # this frame's place among the measured ones (frame_done counted it)
    if frame.image is not None and measured % SAMPLE_EVERY == 0 and len(samples) < MAX_SAMPLES:
        samples.append((frame.image, [p.box for p in poses.people if p.box is not None]))


def inference_costs(pipeline: Pipeline, samples: list[tuple], detector_share: float, fps: float,
                    repeats: int = 3) -> dict | None:
    """The models alone on frames of this run, in this process: the bound the pipeline is measured against.

    ``samples``: (BGR image, crop boxes) of measured frames. Per sample, the detector's ``detect`` and
    the pose network's forward pass on that frame's crops (``TopDownEstimator.preprocess`` then the
    backend, no decoding) are timed ``repeats`` times (best kept: the model's own cost, not the
    machine's noise). Model-bound ms per frame = detector median x ``detector_share`` (its runs per
    frame in the run) + pose forward median; overhead = the run's ms per frame / bound - 1 (decoding,
    cropping, tracking, smoothing, retargeting and the output thread, all above the models; overlapped,
    that work runs beside the network, so the figure can fall below zero).
    None for keypoint sources (no models ran).
    """
    if not samples or pipeline.estimator is None:
        return None
    detect_ms, pose_ms, crops = [], [], 0

    def best_ms(call, arg) -> float:
        """The fastest of ``repeats`` timed calls, in ms."""
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            call(arg)
            best = min(best, time.perf_counter() - t)
        return best * 1000.0

    for image, boxes in samples:
        if pipeline.detector is not None and detector_share > 0:
            detect_ms.append(best_ms(pipeline.detector.detect, image))
        if boxes:
            batch = pipeline.estimator.preprocess(image, np.asarray(boxes, np.float32).reshape(-1, 4))[0]
            pose_ms.append(best_ms(pipeline.estimator.backend, batch))
            crops += len(boxes)
    detect = median_p95(detect_ms)[0] if detect_ms else 0.0
    pose = median_p95(pose_ms)[0] if pose_ms else 0.0
    bound = detect * detector_share + pose
    frame_ms = 1000.0 / fps if fps > 0 else float("nan")
    return {
        "samples": len(samples), "crops_per_frame": round(crops / len(samples), 2),
        "detect_ms_per_run": round(detect, 3), "detector_runs_per_frame": round(detector_share, 3),
        "pose_forward_ms_per_frame": round(pose, 3), "model_bound_ms_per_frame": round(bound, 3),
        "pipeline_ms_per_frame": round(frame_ms, 3),
        "overhead": round(frame_ms / bound - 1.0, 3) if bound > 0 else None,
    }


def _discard(frame) -> None:
    """The bench's output sink: the frame was produced (and timed); nothing is sent."""


def _clock_summary(clock, rate: float, achieved: float) -> dict | None:
    """The output clock's figures; ``achieved`` (Hz) = its ticks over the measured wall time (floor:
    within 5% of ``rate_hz``)."""
    if clock is None:
        return None
    stats = clock.stats()
    r = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {
        "rate_hz": rate,
        "achieved_hz": round(achieved, 2),
        "frames": stats.frames,
        "ticks": stats.ticks,
        "late_ticks": stats.late_ticks,
        "capture_to_output_ms": {"p50": r(stats.latency_ms_median), "p95": r(stats.latency_ms_p95)},
        "capture_to_first_send_ms": {"p50": r(stats.fresh_latency_ms_median), "p95": r(stats.fresh_latency_ms_p95)},
        "interval_ms": {"p50": r(stats.interval_ms_median), "p95": r(stats.interval_ms_p95)},
    }


VERSIONED = ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "onnxruntime-gpu", "torch", "filterpy")


def machine_info(load_before: float) -> dict:
    """CPUs, 1-minute load average before and after the run, Python and the installed versions of the
    packages that set the speed (figures are only comparable between equal installs)."""
    from importlib import metadata

    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpus": _cpu_count(), "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "platform": platform.platform(), "packages": versions}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 0


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"source {result['source']}  {result['image_size'][0]}x{result['image_size'][1]}  detector {result['detector']}  "
        f"people {result['people_mode']}  pose {result['pose_model']}  "
        + ("overlapped (network of one frame while the previous is tracked)" if result["overlapped"] else "sequential"),
        f"{result['frames']} frames in {result['seconds']:.2f} s: {result['fps']:.1f} fps, "
        f"{result['updates_per_s']:.1f} pose updates/s, detector ran on {result['detector_runs']} of "
        f"{result['frames_total']} frames, dropped {result['dropped']}, peak RSS {result['peak_rss_mb']} MB",
        f"machine: {m['cpus']} CPUs, load {m['load_before']:.2f} before / {m['load_after']:.2f} after, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "",
        f"{'stage':<22}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'n':>8}",
    ]
    for group in ("stages_ms", "latency_ms"):
        for name, v in result[group].items():
            lines.append(f"{name:<22}{v['p50']:>10.2f}{v['p95']:>10.2f}{v['mean']:>10.2f}{v['n']:>8}")
    inf = result.get("inference")
    if inf:
        over = "n/a" if inf["overhead"] is None else f"{100 * inf['overhead']:+.0f}%"
        lines.insert(2, f"models alone (same process, {inf['samples']} frames of this run): detector "
                        f"{inf['detect_ms_per_run']:.2f} ms x {inf['detector_runs_per_frame']:.2f} runs/frame + pose forward "
                        f"{inf['pose_forward_ms_per_frame']:.2f} ms ({inf['crops_per_frame']:.1f} crops/frame) = "
                        f"{inf['model_bound_ms_per_frame']:.2f} ms/frame bound; pipeline {inf['pipeline_ms_per_frame']:.2f} "
                        f"ms/frame: overhead {over}")
    busy = {name: cpu for name, cpu in result.get("thread_cpu_s", {}).items() if cpu >= 0.01}  # idle threads left out
    if busy:
        seconds = result["seconds"] or 1.0
        lines.insert(3, "CPU by thread over the run: " + ", ".join(
            f"{name} {cpu:.2f} s ({100 * cpu / seconds:.0f}% of a core)" for name, cpu in busy.items()))
    out = result.get("outputs")
    if out and out["capture_to_output_ms"]["p50"] is not None:
        lat = out["capture_to_output_ms"]
        lines.append(f"{'capture_to_output':<22}{lat['p50']:>10.2f}{lat['p95']:>10.2f}{'':>10}{out['frames']:>8}"
                     f"   (output clock {out['achieved_hz']:.1f} of {out['rate_hz']:g} Hz, {out['late_ticks']} late ticks)")
        first = out["capture_to_first_send_ms"]
        if first["p50"] is not None:
            lines.append(f"{'capture_to_first_send':<22}{first['p50']:>10.2f}{first['p95']:>10.2f}"
                         "   (each capture's first output)")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    from ..config import load_config

    config = apply_source_arguments(args, load_config(args.config))
    if args.realtime is None:
        # Files as fast as possible unless asked. Keypoint sources (synthetic, BVH, recordings) stamp
        # frames with their time in the performance, so they must be paced for latencies to mean anything.
        config.source.realtime = is_keypoint_source(config.source.source)
    # VMC/WebSocket are not part of a bench; a synthetic source needs no duration limit of its own.
    if args.max_frames is None and not config.source.duration and config.source.source == "synthetic":
        args.max_frames = 300
    if args.compare_mediapipe:
        from . import mediapipe_compare

        result = mediapipe_compare.compare(config, python=args.mediapipe_python, max_frames=args.max_frames,
                                           runs=args.runs, repeats=args.repeats, warmup=max(args.warmup, 0))
        print(json.dumps(result, indent=2) if args.json else mediapipe_compare.format_comparison(result))
        return 0
    result = run_bench(config, max_frames=args.max_frames, duration=config.source.duration or None,
                       warmup=max(args.warmup, 0), outputs=not args.no_outputs, output_rate=args.output_rate,
                       overlap=False if args.sequential else None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0

