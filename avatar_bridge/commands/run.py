"""``avatar-bridge run``: capture, estimate, retarget and stream until stopped (``record`` adds a file)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

import cv2
import numpy as np

from ..metrics import PipelineMetrics, peak_rss_mb
from ..outputs import Outputs
from ..overlay import draw_overlay
from ..pipeline import Pipeline, is_keypoint_source, open_config_source, overlaps
from ..types import FramePoses
from .options import add_run_arguments, build_config, refuse_time_stretched_files
from .shell import StatusLine, StopFlag, has_display, install_signal_handlers, next_frame

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser, command: str = "run") -> None:
    add_run_arguments(parser)


def advance(pipeline: Pipeline, frame, overlap: bool) -> list[tuple]:
    """One frame of the run loop: the (frame, FramePoses) pairs to show now, oldest first.

    One frame at a time: this frame. Overlapped: the frame begun before this one (none for the
    first). Paused: the frame as it is with the last poses, after finishing a frame begun before the
    pause (so it is not finished a pause later, with the pause in its latency and stale state).
    """
    if pipeline.paused:
        shown = []
        if overlap and (begun := pipeline.process_overlapped(None)) is not None:
            shown.append(begun)
        shown.append((frame, pipeline.latest or FramePoses(frame.index, frame.timestamp, frame.width, frame.height)))
        return shown
    if overlap:
        done = pipeline.process_overlapped(frame)
        return [] if done is None else [done]
    return [(frame, pipeline.process(frame))]


def run_command(args: argparse.Namespace) -> int:
    config = build_config(args)
    refuse_time_stretched_files(config)
    headless = args.headless
    if not headless and not has_display():
        log.warning("no display found: running headless (pass --headless to silence this)")
        headless = True
    stop = StopFlag()
    restore_signals = install_signal_handlers(stop)
    metrics = PipelineMetrics()
    pipeline = Pipeline(config, metrics)
    outputs = Outputs(config, pipeline)
    source = None
    writer = None
    status = None
    frames = 0
    try:
        pipeline.prepare(images=False)
        # The source before the network and the models: a missing camera or file is reported at once,
        # before anything announces a viewer. Every source starts its clock at the first read
        # (cameras keep only the newest frame), so loading is not late.
        source = open_config_source(config)
        pipeline.prepare(images=not is_keypoint_source(config.source.source))
        outputs.open_network()
        outputs.open_files(source)
        started = time.monotonic()
        last_overlay = started
        status = StatusLine(sys.stderr, args.quiet, started)
        overlay_text = ""
        # A file read as fast as possible (--fast): the pose network of one frame runs while the
        # frame before it is tracked, smoothed and shown (Pipeline.process_overlapped). A camera or a
        # paced file: one frame at a time, so each frame's motion leaves as soon as it is estimated.
        overlap = overlaps(source, config)

        def show(frame, poses) -> None:
            """The preview window and --save-overlay for a processed frame."""
            nonlocal writer, headless
            if headless and not args.save_overlay:
                return
            canvas = frame.image.copy() if frame.image is not None else np.zeros((frame.height, frame.width, 3), np.uint8)
            draw_overlay(canvas, poses.people, pipeline.driver, overlay_text)
            if args.save_overlay:
                if writer is None:
                    writer = cv2.VideoWriter(args.save_overlay, cv2.VideoWriter_fourcc(*"mp4v"), float(source.fps),
                                             (canvas.shape[1], canvas.shape[0]))
                    if not writer.isOpened():
                        raise RuntimeError(f"cannot write --save-overlay {args.save_overlay}: check the folder exists and the name ends in .mp4")
                writer.write(canvas)
            if not headless:
                try:
                    cv2.imshow("avatar-bridge (q to quit)", canvas)
                    key = cv2.waitKey(1) & 0xFF
                except cv2.error as exc:  # OpenCV built without GUI support, or no usable display
                    log.warning("preview window unavailable (%s): continuing headless", str(exc).strip().splitlines()[-1])
                    headless, key = True, -1
                if key in (ord("q"), 27):
                    stop.set("q pressed")
                elif key == ord("c"):
                    pipeline.calibrate()

        while not stop.event.is_set():
            t_grab = time.perf_counter()
            frame = next_frame(source, stop)
            if frame is None and stop.event.is_set():
                break
            if frame is None:
                stop.set("source ended")
                break
            metrics.add_stage("grab", (time.perf_counter() - t_grab) * 1000.0)
            finished = advance(pipeline, frame, overlap)
            if finished and not pipeline.paused:
                outputs.fresh()  # new motion leaves now, not at the next tick
            frames += 1
            now = time.monotonic()
            if now - last_overlay >= 1.0:  # figures for the overlay, once a second
                last_overlay = now
                latency = metrics.snapshot()["latency_ms"].get("capture_to_keypoints", {})
                overlay_text = f"{metrics.fps():.1f} fps  latency p95 {latency.get('p95', float('nan')):.0f} ms  dropped {metrics.dropped}"
            status.update(now, metrics.status_line)
            for done in finished:
                show(*done)
            if args.max_frames and frames >= args.max_frames:
                stop.set("max frames")
            if config.source.duration and now - started >= config.source.duration:
                stop.set("duration")
        if overlap and (done := pipeline.process_overlapped(None)) is not None:  # the last frame begun
            outputs.fresh()
            show(*done)
    except KeyboardInterrupt:
        stop.set("SIGINT")
    finally:
        restore_signals()
        pipeline.close()
        outputs.close()
        if source is not None:
            source.close()
        if writer is not None:
            writer.release()
        if not headless:
            cv2.destroyAllWindows()
    snap = metrics.snapshot()
    if status is not None:
        status.finish()
    clock_stats = outputs.clock.stats() if outputs.clock is not None else None
    latency = snap["latency_ms"].get("capture_to_keypoints")
    outputs_text = ""
    if clock_stats is not None and clock_stats.latency_ms_p95 is not None:
        outputs_text = (f", outputs sent {clock_stats.frames} frames (capture to send p95 {clock_stats.latency_ms_p95:.0f} ms"
                        f", to first send p95 {clock_stats.fresh_latency_ms_p95 or 0:.0f} ms)")
    print(
        f"stopped ({stop.reason}): {snap['frames']} frames, {snap['updates']} pose updates, "
        f"{snap['fps']:.1f} fps, dropped {snap['dropped']}"
        + (f", capture to keypoints p95 {latency['p95']:.0f} ms" if latency else "")
        + outputs_text
        + f", peak RSS {peak_rss_mb()} MB",
        file=sys.stderr,
    )
    calibration_file = config.retarget.calibration_path()
    if calibration_file is not None and snap["updates"] and not pipeline.calibrations() and not calibration_file.is_file():
        print(f"no calibration saved to {calibration_file}: the run ended before anyone finished calibrating "
              f"(stand facing the camera with straight arms and legs for {config.retarget.calibration_seconds:g} s; "
              "a take without such frames calibrates after 10 times that)", file=sys.stderr)
    if outputs.recorder is not None and outputs.recorder.error is not None:
        raise RuntimeError(outputs.recorder.failure_message())  # a take cut short (disk full) must not exit 0
    if outputs.bvh_error is not None:
        raise RuntimeError(f"{outputs.bvh_error} (the take's motion is lost unless --record kept it)")
    return 0
