"""``avatar-bridge bench-convert --clip VIDEO``: ``convert``'s throughput against the model-bound limit.

Measured in the same run, round-robin over ``--repeats`` (medians reported, with the load average):

- **model bound**, ms per frame = decode (every frame decoded and resized alone, sequentially) +
  the detector runs amortized over the frames (its runs in the conversion x its cost per run) +
  the pose crops (the conversion's ``pose`` stage per frame). No conversion can beat it on one
  core without a faster model or decoder.
- **convert**, ms per frame = wall clock of :func:`avatar_bridge.convert.convert_source` after its
  setup (source opened, models loaded), divided by the frames; its per-stage costs beside it.
- overhead = convert / bound - 1 (floor: at most 25%).
- **workers**: ``--copies`` copies of the clip converted by a pool of 1 and of 2 worker processes
  (:class:`concurrent.futures.ProcessPoolExecutor`, spawned afresh each time, each worker with one
  inference thread), frames per second of the whole batch including the pool's start and each
  worker's setup (floor: 2 workers at least 1.6x one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ..capture import VideoFileSource, parse_size
from ..config import load_config
from ..convert import ConvertOptions, convert_source
from ..metrics import median_p95

OVERHEAD_FLOOR = 0.25
WORKERS_FLOOR = 1.6


def configure_parser(parser: argparse.ArgumentParser, command: str = "bench-convert") -> None:
    parser.add_argument("--clip", required=True, help="video file to convert")
    parser.add_argument("--model", required=True, help="pose model (.onnx file or registry name)")
    parser.add_argument("--detector", default="light-person-detector", help="person detector (default light-person-detector)")
    parser.add_argument("--detector-dir", metavar="DIR", default=None, help="folder with the named ONNX detectors")
    parser.add_argument("--config", default="default", help="preset or TOML file for the other settings")
    parser.add_argument("--resize", metavar="WxH", default=None, help="resize decoded frames, e.g. 640x360")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1: the bound is per core)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement (medians reported)")
    parser.add_argument("--copies", type=int, default=4, help="copies of the clip for the workers comparison (0 = skip)")
    parser.add_argument("--formats", default="jsonl,abrec,bvh", help="outputs each conversion writes")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")


def decode_ms_per_frame(clip: str, resize) -> tuple[float, int]:
    """Every frame decoded (and resized) with nothing else running: ms per frame, frames."""
    started = time.perf_counter()
    frames = 0
    with VideoFileSource(clip, realtime=False, resize=resize) as source:
        for _ in source:
            frames += 1
    return (time.perf_counter() - started) * 1000.0 / max(frames, 1), frames


def run_benchmark(args: argparse.Namespace) -> dict:
    from ..commands.convert import Job, Progress, run_jobs_in_processes

    resize = parse_size(args.resize)
    config = load_config(args.config)
    config.pose.model = args.model
    config.pose.threads = args.threads
    config.detector.name = args.detector
    if args.detector_dir:
        config.detector.model_dir = args.detector_dir
    config.source.resize = args.resize or ""
    config.validate()
    kinds = [k.strip() for k in args.formats.split(",") if k.strip()]
    load_before = os.getloadavg()[0]
    decode, convert, bound, stages = [], [], [], []
    result = None
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        out = Path(tmp)
        for repeat in range(args.repeats):
            decode_ms, frames = decode_ms_per_frame(args.clip, resize)
            options = ConvertOptions(outputs={k: out / f"r{repeat}.{'overlay.mp4' if k == 'overlay' else k}" for k in kinds})
            result = convert_source(args.clip, config, options)
            per_frame = {k: v / result.frames for k, v in result.stage_ms.items() if k != "setup"}
            model_ms = decode_ms + per_frame.get("detect", 0.0) + per_frame.get("pose", 0.0)
            decode.append(decode_ms)
            convert.append(result.ms_per_frame)
            bound.append(model_ms)
            stages.append(per_frame)
        workers = {}
        if args.copies > 0:
            clips = []
            for i in range(args.copies):
                link = out / f"copy{i}{Path(args.clip).suffix}"
                os.symlink(Path(args.clip).resolve(), link)
                clips.append(link)
            for count in (1, 2):
                rates = []
                for repeat in range(args.repeats):
                    jobs = [Job(str(c), config, ConvertOptions(outputs={k: out / f"w{count}-{repeat}-{c.stem}.{k}" for k in kinds
                                                                        if k != "overlay"}))
                            for c in clips]
                    progress = Progress(None, quiet=True)
                    started = time.perf_counter()
                    # both in a fresh process pool (spawn, imports, models per worker), as a command run pays them
                    done = run_jobs_in_processes(jobs, count, progress)
                    wall = time.perf_counter() - started
                    failed = [r.error for r in done if r.error]
                    if failed:
                        raise RuntimeError(f"bench-convert: a conversion failed: {failed[0]}")
                    rates.append(sum(r.frames for r in done) / wall)
                workers[count] = median_p95(rates)[0]
    median = lambda values: median_p95(values)[0]
    stage_names = sorted({k for s in stages for k in s})
    figures = {
        "clip": args.clip, "frames": result.frames if result else 0, "resize": args.resize, "threads": args.threads,
        "repeats": args.repeats, "cpu_count": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()[0],
        "decode_ms": median(decode), "bound_ms": median(bound), "convert_ms": median(convert),
        "stage_ms": {k: median([s.get(k, 0.0) for s in stages]) for k in stage_names},
    }
    figures["bound_fps"] = 1000.0 / figures["bound_ms"]
    figures["convert_fps"] = 1000.0 / figures["convert_ms"]
    figures["overhead"] = figures["convert_ms"] / figures["bound_ms"] - 1.0
    figures["overhead_ok"] = figures["overhead"] <= OVERHEAD_FLOOR
    if workers:
        figures["workers_fps"] = {str(k): v for k, v in workers.items()}
        figures["workers_speedup"] = workers[2] / workers[1]
        figures["workers_ok"] = figures["workers_speedup"] >= WORKERS_FLOOR
    return figures


def format_report(f: dict) -> str:
    lines = [
        f"clip {f['clip']}: {f['frames']} frames{', resized to ' + f['resize'] if f['resize'] else ''}, "
        f"{f['threads']} inference thread(s), {f['repeats']} repeats (medians), {f['cpu_count']} CPUs, "
        f"load {f['load_before']:.1f} before / {f['load_after']:.1f} after",
        f"model bound: {f['bound_ms']:.2f} ms/frame ({f['bound_fps']:.1f} frames/s) = decode {f['decode_ms']:.2f} "
        f"+ detect (amortized) {f['stage_ms'].get('detect', 0.0):.2f} + pose {f['stage_ms'].get('pose', 0.0):.2f}",
        f"convert:     {f['convert_ms']:.2f} ms/frame ({f['convert_fps']:.1f} frames/s), overhead {100 * f['overhead']:+.0f}% "
        f"(floor +{100 * OVERHEAD_FLOOR:.0f}%: {'PASS' if f['overhead_ok'] else 'FAIL'})",
        "convert stages, ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in f["stage_ms"].items()),
    ]
    if "workers_fps" in f:
        w = f["workers_fps"]
        lines.append(f"workers: 1 -> {w['1']:.1f} frames/s, 2 -> {w['2']:.1f} frames/s: {f['workers_speedup']:.2f}x "
                     f"(floor {WORKERS_FLOOR}x: {'PASS' if f['workers_ok'] else 'FAIL'})")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    if not Path(args.clip).is_file():
        raise FileNotFoundError(f"--clip {args.clip} not found: pass a video file")
    figures = run_benchmark(args)
    print(format_report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0
