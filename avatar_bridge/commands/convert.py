"""``avatar-bridge convert INPUT... -o OUT``: videos, image folders and takes to motion files, every frame, in video time.

The engine is :func:`avatar_bridge.convert.convert_source`; this module plans the output names,
applies the one overwrite rule, runs the files one after another, in worker processes
(``--workers``) or as Ray tasks (``--ray``), shows progress and prints the summary (``--json``).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import DEFAULT_PRESET, AppConfig, load_config
from ..convert import (
    OUTPUT_KINDS, SMOOTHERS, SUFFIXES, ConvertOptions, ConvertResult, convert_source, estimate_frames, merge_chunks, plan_chunks,
)
from ..files import check_writable, refuse_existing

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
TAKE_SUFFIXES = (".abrec", ".bvh")
PROGRESS_LOG_INTERVAL_S = 5.0  # stderr not a terminal: one plain progress line this often
DEFAULT_FORMATS = ("jsonl", "abrec", "bvh")


def configure_parser(parser: argparse.ArgumentParser, command: str = "convert") -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders of videos, an image folder, .abrec takes or .bvh mocap files")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="a file (.jsonl, .abrec, .bvh or .mp4 overlay; one input) or a folder (one set of files per input)")
    parser.add_argument("--formats", metavar="LIST",
                        help=f"outputs to write, comma-separated from {', '.join(OUTPUT_KINDS)} (default: the kind of -o's "
                             f"extension, or {','.join(DEFAULT_FORMATS)} into a folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse; with several "
                        "inputs, an input whose outputs all exist is skipped as complete)")
    parser.add_argument("--fps", type=float, default=None,
                        help="BVH frame rate: resample in video time (default: one BVH frame per source frame)")
    parser.add_argument("--track", default=None, metavar="ID|all",
                        help="BVH of this track id, or all (one file per track, NAME.trackID.bvh); default: the driving person")
    parser.add_argument("--smoother", choices=SMOOTHERS, default="rts",
                        help="rts = forward-backward Kalman over each whole track (default); causal = the live stabilizer; none")
    parser.add_argument("--mirror", action="store_true",
                        help="write the mirror image (selfie view); default: the performer's own left and right")
    parser.add_argument("--bones", choices=("body", "full"), default="body", help="BVH bones (default body)")
    parser.add_argument("--units", choices=("cm", "m"), default="cm", help="BVH length unit (default cm)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="convert N files at once in separate processes (default: one per CPU core, at most one per file)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the per-file jobs as Ray tasks on the cluster at ADDRESS (ray://HOST:10001 or HOST:6379; "
                             "no ADDRESS = a local Ray runtime); needs the ray extra: pip install 'avatar-bridge[ray]'")
    parser.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                        help="with --ray: split each video longer than S seconds into chunks of S seconds, one Ray task each "
                             "(the tracks are joined over the overlap)")
    parser.add_argument("--overlap", type=int, default=30, metavar="FRAMES",
                        help="frames each chunk decodes before its own, to join track ids across chunks (default 30)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    models = parser.add_argument_group("models")
    models.add_argument("--config", metavar="NAME|PATH", help=f"preset or TOML file (default {DEFAULT_PRESET})")
    models.add_argument("--model", help="pose model: .onnx file, .pth checkpoint or registry name (pose.model)")
    models.add_argument("--detector", help="person detector (detector.name), e.g. light-person-detector, yolox-nano, none")
    models.add_argument("--detector-dir", metavar="DIR", help="folder with the named ONNX detectors (detector.model_dir)")
    models.add_argument("--device", help="cpu or cuda (pose.device)")
    models.add_argument("--threads", type=int, help="inference threads per file (pose.threads; default 1 per worker when "
                        "several files run at once)")
    models.add_argument("--resize", metavar="WxH", help="resize decoded images first, e.g. 640x360 (source.resize)")
    models.add_argument("--people", choices=("all", "driver"), help="estimate every person or only the driving one")
    models.add_argument("--every", type=int, metavar="N", help="run the detector at least every N frames")


def build_convert_config(args: argparse.Namespace) -> AppConfig:
    """The preset with the model flags applied; validated so errors name the key."""
    config = load_config(args.config or DEFAULT_PRESET)
    overrides = {
        ("pose", "model"): args.model, ("detector", "name"): args.detector, ("detector", "model_dir"): args.detector_dir,
        ("pose", "device"): args.device, ("pose", "threads"): args.threads, ("source", "resize"): args.resize,
        ("detector", "people"): args.people, ("detector", "every_n_frames"): args.every,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    config.source.realtime = False
    config.validate()
    return config


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; a folder holding videos or takes gives those (name order); any other folder is one image-folder source."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"input {text} not found: pass video files, folders, .abrec takes or .bvh files")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES + TAKE_SUFFIXES)
            found.extend(files if files else [path])
        else:
            found.append(path)
    return found


def plan_outputs(inputs: list[Path], output: str, formats: str | None) -> dict[Path, dict[str, Path]]:
    """Input -> {kind: path}. ``-o`` with a known extension names the file of one input; otherwise
    ``-o`` is a folder (created) holding ``STEM.jsonl``, ``STEM.abrec``, ``STEM.bvh``, ``STEM.overlay.mp4``."""
    out = Path(output).expanduser()
    by_suffix = {suffix: kind for kind, suffix in SUFFIXES.items()}
    kind_of_out = by_suffix.get(out.suffix.lower()) if not out.is_dir() else None
    kinds = [k.strip() for k in formats.split(",") if k.strip()] if formats else (
        [kind_of_out] if kind_of_out else list(DEFAULT_FORMATS))
    for kind in kinds:
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"--formats {kind!r} is unknown: choose from {', '.join(OUTPUT_KINDS)}")
    if not kinds:
        raise ValueError("--formats is empty: name at least one of " + ", ".join(OUTPUT_KINDS))

    def names(base: Path) -> dict[str, Path]:
        return {k: base.with_name(base.name + (".overlay.mp4" if k == "overlay" else SUFFIXES[k])) for k in kinds}

    if kind_of_out:
        if len(inputs) > 1:
            raise ValueError(f"-o {output} names one file but there are {len(inputs)} inputs: pass -o FOLDER")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"folder {out.parent} for {out.name} does not exist: create it or change -o")
        plan = names(out.with_suffix(""))
        plan[kind_of_out] = out if kind_of_out in kinds else plan.get(kind_of_out)
        return {inputs[0]: {k: v for k, v in plan.items() if v is not None}}
    if out.suffix and not out.exists():
        raise ValueError(f"-o {output}: the extension {out.suffix} is not an output kind; use "
                         f"{', '.join(SUFFIXES.values())} or a folder")
    out.mkdir(parents=True, exist_ok=True)
    plans: dict[Path, dict[str, Path]] = {}
    seen: dict[str, Path] = {}
    for path in inputs:
        stem = path.name if path.is_dir() else path.stem
        if stem in seen:
            raise ValueError(f"inputs {seen[stem]} and {path} would both write {out / stem}.*: rename one or convert them separately")
        seen[stem] = path
        plans[path] = names(out / stem)
    return plans


def _planned_files(plan: dict[str, Path], track: str | None) -> list[Path]:
    """The files a conversion will write. With ``--track all`` the per-track BVH names depend on the
    tracks found, so every existing ``NAME.trackID.bvh`` beside the planned name counts: a new run
    would replace them (found by a new user: a second ``--track all`` run overwrote them silently)."""
    files = [p for k, p in plan.items() if not (k == "bvh" and track == "all")]
    if track == "all" and "bvh" in plan:
        bvh = Path(plan["bvh"])  # convert.bvh_track_path's names: NAME.track<digits>.bvh
        per_track = re.compile(rf"{re.escape(bvh.stem)}\.track\d+{re.escape(bvh.suffix)}")
        files += sorted(f for f in bvh.parent.glob(f"{glob.escape(bvh.stem)}.track*") if per_track.fullmatch(f.name))
    return files


@dataclass
class Job:
    """One input's conversion: everything a worker process or Ray task needs (picklable)."""

    source: str
    config: AppConfig
    options: ConvertOptions


def run_job(job: Job, progress: Callable[[int, int | None], None] | None = None) -> ConvertResult:
    """Convert one input; a failure is returned as ``error`` (one line), never raised."""
    try:
        return convert_source(job.source, job.config, job.options, progress)
    except Exception as exc:  # one bad file must not stop the others
        return ConvertResult(source=job.source, error=_one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _worker_job(job: Job, queue: Any) -> ConvertResult:
    """Worker process: one thread per library (BLAS as in cli.limit_blas_threads, OpenCV's pool, the
    FFmpeg decoder), since the workers themselves fill the cores; progress through ``queue``."""
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    cv2.setNumThreads(1)
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "threads;1")
    step = [0]

    def progress(done: int, total: int | None) -> None:
        if queue is not None and done - step[0] >= 5:
            queue.put((job.source, done - step[0], total))
            step[0] = done

    result = run_job(job, progress)
    if queue is not None and result.frames - step[0] > 0:
        queue.put((job.source, result.frames - step[0], None))
    return result


class Progress:
    """Frames done / total, frames/s and ETA: a tqdm bar on a terminal, plain lines every
    ``PROGRESS_LOG_INTERVAL_S`` otherwise (log files, pipes), nothing with ``--quiet``."""

    def __init__(self, total: int | None, quiet: bool, stream: Any = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last = self.started
        self.quiet = quiet
        try:
            terminal = bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            terminal = False
        self.bar = None
        if not quiet and terminal:
            import shutil

            from tqdm import tqdm

            # The terminal's size ($COLUMNS/$LINES first); one reporting 0 x 0 (a bare pty) gets 100 x 24,
            # since tqdm hides a bar that does not fit the rows it sees.
            size = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=total, unit="frame", file=self.stream, ncols=size.columns or 100, nrows=size.lines or 24,
                            smoothing=0.1, desc="convert")

    def add(self, frames: int, total: int | None = None) -> None:
        self.done += frames
        if self.bar is not None:
            self.bar.update(frames)
            return
        now = time.monotonic()
        if self.quiet or now - self.last < PROGRESS_LOG_INTERVAL_S:
            return
        self.last = now
        print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            return (f"convert: {self.done}/{self.total} frames ({100.0 * self.done / self.total:.0f}%), "
                    f"{rate:.1f} frames/s, ETA {eta:.0f} s")
        return f"convert: {self.done} frames, {rate:.1f} frames/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _expected_total(inputs: list[Path]) -> int | None:
    """Frames announced by every video container (None when one does not say)."""
    import cv2

    total = 0
    for path in inputs:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            return None
        cap = cv2.VideoCapture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        cap.release()
        if count <= 0:
            return None
        total += count
    return total


def run_jobs_serial(jobs: list[Job], progress: Progress) -> list[ConvertResult]:
    results = []
    for job in jobs:
        done = [0]

        def step(n: int, total: int | None) -> None:
            progress.add(n - done[0], total)
            done[0] = n

        results.append(run_job(job, step))
    return results


def run_jobs_in_processes(jobs: list[Job], workers: int, progress: Progress) -> list[ConvertResult]:
    """``concurrent.futures.ProcessPoolExecutor``: one file per worker process at a time."""
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no fork of a process holding model threads
    with context.Manager() as manager:
        updates = manager.Queue()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_worker_job, job, updates) for job in jobs]
            pending = set(futures)

            def drain() -> None:
                """Hand the workers' progress messages so far to the bar."""
                while True:
                    try:
                        _, frames, total = updates.get_nowait()
                    except queue_module.Empty:
                        return
                    progress.add(frames, total)

            while pending:
                _, pending = wait(pending, timeout=0.2)
                drain()
            results = []
            for job, future in zip(jobs, futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # the worker process died (killed, out of memory)
                    results.append(ConvertResult(source=job.source, error=f"worker failed: {_one_line(exc)}"))
            drain()
    return results


def _estimate_chunk(source: str, config: AppConfig, start: int, keep_from: int, stop: int):
    """A Ray task: pass 1 (decode, detect, pose, track) over frames ``start`` to ``stop`` of one video."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    return estimate_frames(source, config, start=start, keep_from=keep_from, stop=stop)


def _video_frames(path: str) -> tuple[int, float]:
    """(frame count, frames per second) the container announces; (0, 0) when it is not a video."""
    import cv2

    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        return 0, 0.0
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return 0, 0.0
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


def run_jobs_on_ray(jobs: list[Job], address: str, progress: Progress, chunk_seconds: float | None = None,
                    overlap: int = 30) -> list[ConvertResult]:
    """The same per-file jobs as Ray tasks (``ray.remote``), on the cluster at ``address``.

    With ``chunk_seconds``, a video longer than that is split (:func:`avatar_bridge.convert.plan_chunks`):
    one task per chunk runs pass 1, the chunks are joined here (:func:`avatar_bridge.convert.merge_chunks`,
    track ids matched over ``overlap`` frames) and smoothed, retargeted and written by this process.
    """
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'avatar-bridge[ray]' (or pip install 'ray>=2.9')") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:
            raise RuntimeError(f"cannot reach the Ray cluster at {address} ({_one_line(exc)}): check the address "
                               "(ray://HOST:10001 or HOST:6379) and that the cluster is running") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_worker_job)
        chunk_task = ray.remote(num_cpus=1, max_retries=0)(_estimate_chunk)
        refs: dict[Any, Job] = {}
        chunked: dict[str, list] = {}
        started = {job.source: time.monotonic() for job in jobs}
        for job in jobs:
            count, fps = _video_frames(job.source)
            chunk_frames = int(round(chunk_seconds * fps)) if chunk_seconds and fps > 0 else 0
            if chunk_frames and count > chunk_frames and "overlay" not in job.options.outputs:
                chunked[job.source] = [chunk_task.remote(job.source, job.config, *span)
                                       for span in plan_chunks(count, chunk_frames, overlap)]
                for ref in chunked[job.source]:
                    refs[ref] = job
            else:
                refs[task.remote(job, None)] = job
        results: dict[str, ConvertResult] = {}
        chunks_done: dict[str, int] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                job = refs[ref]
                if job.source in chunked:
                    chunks_done[job.source] = chunks_done.get(job.source, 0) + 1
                    if chunks_done[job.source] < len(chunked[job.source]):
                        continue
                    try:  # every chunk is in: join them, then smooth, retarget and write here
                        merged = merge_chunks(ray.get(chunked[job.source]))
                        result = convert_source(job.source, job.config, job.options, estimated=merged)
                        result.seconds = time.monotonic() - started[job.source]
                    except Exception as exc:
                        result = ConvertResult(source=job.source, error=_one_line(exc))
                else:
                    try:
                        result = ray.get(ref)
                    except Exception as exc:
                        result = ConvertResult(source=job.source, error=f"Ray task failed: {_one_line(exc)}")
                results[job.source] = result
                progress.add(result.frames, None)
        return [results[job.source] for job in jobs]
    finally:
        if started_here:
            ray.shutdown()


def describe(result: ConvertResult) -> str:
    """One summary line for one input."""
    if result.error:
        return f"FAILED {result.source}: {result.error}"
    if result.skipped:
        return f"skipped {result.source}: every output already exists (complete); --overwrite converts it again"
    files = ", ".join(f for paths in result.outputs.values() for f in paths)
    of = f" of {result.expected_frames}" if result.expected_frames else ""
    stages = ", ".join(f"{k} {v / result.frames:.1f}" for k, v in result.stage_ms.items() if k != "setup") if result.frames else ""
    setup = result.stage_ms.get("setup", 0.0) / 1000.0
    return (f"converted {result.source}: {result.frames}{of} frames, {result.people} {'person' if result.people == 1 else 'people'}, {result.duration:.2f} s of video "
            f"({result.fps:.2f} fps), {result.seconds:.1f} s, {result.frames_per_second:.1f} frames/s -> {files}\n"
            f"  ms per frame: {stages} (setup {setup:.1f} s once: source and models)")


def run_command(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be at least 1")
    if args.chunk_seconds is not None and (args.ray is None or args.chunk_seconds <= 0):
        raise ValueError("--chunk-seconds splits videos into Ray tasks: pass it with --ray, and a positive number of seconds")
    if args.overlap < 0:
        raise ValueError(f"--overlap {args.overlap} must be 0 or more frames")
    if args.fps is not None and not 1.0 <= args.fps <= 1000.0:
        raise ValueError(f"--fps {args.fps} is out of range: use 1 to 1000 frames per second")
    track: int | str | None = None
    if args.track is not None:
        if args.track == "all":
            track = "all"
        else:
            try:
                track = int(args.track)
            except ValueError:
                raise ValueError(f"--track {args.track!r} is not a track id: pass a number or all") from None
    config = build_convert_config(args)
    inputs = expand_inputs(args.inputs)
    plans = plan_outputs(inputs, args.output, args.formats)
    for plan in plans.values():  # before decoding anything: a read-only folder used to fail at the end
        for target in plan.values():
            check_writable(target, "output", "make it writable or choose another folder with -o")
    batch = len(inputs) > 1
    jobs: list[Job] = []
    results_by_source: dict[str, ConvertResult] = {}
    for path, plan in plans.items():
        files = _planned_files(plan, track if "bvh" in plan else None)
        if not args.overwrite:
            existing = [f for f in files if f.exists()]
            if batch and existing and len(existing) == len(files):
                results_by_source[str(path)] = ConvertResult(source=str(path), skipped=True,
                                                             outputs={k: [str(v)] for k, v in plan.items()})
                continue
            try:
                for f in files:
                    refuse_existing(f, False)
            except FileExistsError as exc:
                if not batch:
                    raise
                results_by_source[str(path)] = ConvertResult(source=str(path), error=str(exc))
                continue
        options = ConvertOptions(outputs=plan, smoother=args.smoother, bvh_fps=args.fps, bvh_track=track,
                                 bvh_bones=args.bones, bvh_units=args.units, mirror=args.mirror)
        jobs.append(Job(str(path), config, options))
    workers = min(args.workers or os.cpu_count() or 1, max(len(jobs), 1))
    if workers > 1 and args.threads is None:
        config.pose.threads = 1  # N processes x 1 inference thread, not N x all cores
    started = time.monotonic()
    progress = Progress(_expected_total([Path(j.source) for j in jobs]) if jobs else 0, args.quiet or args.json)
    try:
        if args.ray is not None:
            ran = run_jobs_on_ray(jobs, args.ray, progress, args.chunk_seconds, args.overlap) if jobs else []
        elif workers > 1:
            ran = run_jobs_in_processes(jobs, workers, progress)
        else:
            ran = run_jobs_serial(jobs, progress)
    finally:
        progress.close()
    wall = time.monotonic() - started
    for result in ran:
        results_by_source[result.source] = result
    results = [results_by_source[str(p)] for p in plans]
    failed = [r for r in results if r.error]
    if not batch and failed:
        raise RuntimeError(failed[0].error)
    frames = sum(r.frames for r in results)
    totals = {"inputs": len(results), "converted": sum(1 for r in results if not r.error and not r.skipped),
              "skipped": sum(1 for r in results if r.skipped), "failed": len(failed), "frames": frames,
              "people": sum(r.people for r in results), "video_seconds": sum(r.duration for r in results),
              "seconds": wall, "frames_per_second": frames / wall if wall > 0 else 0.0,
              "workers": 0 if args.ray is not None else workers, "ray": args.ray}
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results], "total": totals}, indent=2))
    else:
        for result in results:
            print(describe(result))
        if batch:
            print(f"total: {totals['converted']} converted, {totals['skipped']} skipped, {totals['failed']} failed; "
                  f"{frames} frames in {wall:.1f} s ({totals['frames_per_second']:.1f} frames/s)")
    return 1 if failed else 0
