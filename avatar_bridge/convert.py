"""Offline conversion: one source (video file, image folder, ``.abrec`` take, ``.bvh`` mocap) to motion files.

:func:`convert_source` decodes **every** frame in order (no frame dropped, no wall clock anywhere),
keeps each frame's index and presentation time (``Frame.pts``, from the container for video files),
and writes, all in video time:

- ``jsonl``: one JSON object per source frame: ``frame`` (index), ``pts`` (seconds), ``driver`` and
  per person ``track_id``, ``box`` (x1 y1 x2 y2 px), ``keypoints`` (17 x [x, y, score], px, as
  measured), ``smoothed`` (17 x [x, y], px, what the rig was solved from), ``hips`` (3, metres) and
  ``rotations`` (VRM bone -> [x, y, z, w], parent-local, canonical frame of :mod:`avatar_bridge.skeleton`);
- ``abrec``: a take (:mod:`avatar_bridge.record`) with one frame per source frame, timestamps = PTS
  (header ``timeline = "video"``, ``handedness = "performer"``);
- ``bvh``: one person's motion (:func:`avatar_bridge.bvh.write_bvh`): one BVH frame per source frame
  at the video's rate (frames / video duration), or resampled in video time to ``bvh_fps``;
- ``overlay``: the source with the skeletons drawn, the same frame count.

Pass 1 runs :meth:`avatar_bridge.pipeline.Pipeline.estimate` (detection, pose, tracking) on each frame;
pass 2 smooths each track over its whole length (:func:`avatar_bridge.smooth.rts_smooth_track`, the
Rauch-Tung-Striebel smoother, by default; ``causal`` = the live stabilizer; ``none``); pass 3 solves the
rig with :class:`avatar_bridge.retarget.Retargeter` (performer's own left and right; ``mirror`` flips
the files). Every file is written under a temporary name and renamed when complete, so an interrupted
or failed conversion never leaves a file that looks finished.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .config import AppConfig
from .types import Pose2D, RigPose

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("jsonl", "abrec", "bvh", "overlay")
SUFFIXES = {"jsonl": ".jsonl", "abrec": ".abrec", "bvh": ".bvh", "overlay": ".mp4"}
SMOOTHERS = ("rts", "causal", "none")
STAGES = ("setup", "decode", "detect", "crop_boxes", "pose", "track", "overlay", "smooth", "retarget", "write")


@dataclass
class ConvertOptions:
    """What to write for one source and how.

    ``outputs``: kind (``jsonl``, ``abrec``, ``bvh``, ``overlay``) -> path. ``bvh_track``: None = the
    driving person (the track that drove most frames), an id = that track, ``"all"`` = one file per
    track (``NAME.trackID.bvh``). ``bvh_fps``: None = one BVH frame per source frame.
    """

    outputs: dict[str, Path]
    smoother: str = "rts"
    bvh_fps: float | None = None
    bvh_track: int | str | None = None
    bvh_bones: str = "body"
    bvh_units: str = "cm"
    mirror: bool = False


@dataclass
class ConvertResult:
    """What one conversion did (JSON-ready with :meth:`to_json`)."""

    source: str
    frames: int = 0
    expected_frames: int | None = None  # what the container announced, when it does
    people: int = 0  # distinct track ids
    duration: float = 0.0  # video time covered, seconds (last PTS - first PTS + one frame)
    fps: float = 0.0  # frames per second of video time (frames / duration)
    outputs: dict[str, list[str]] = field(default_factory=dict)  # kind -> files written
    seconds: float = 0.0  # wall time of the conversion
    stage_ms: dict[str, float] = field(default_factory=dict)  # total ms per stage ("setup" once per file)
    skipped: bool = False  # every output already existed (a re-run)
    error: str | None = None

    @property
    def frames_per_second(self) -> float:
        """Conversion throughput: source frames per wall-clock second (setup included)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_frame(self) -> float:
        """Wall-clock ms per frame once the models are loaded (setup left out)."""
        if not self.frames:
            return 0.0
        return (self.seconds * 1000.0 - self.stage_ms.get("setup", 0.0)) / self.frames

    def to_json(self) -> dict:
        data = asdict(self)
        data["frames_per_second"] = self.frames_per_second
        data["ms_per_frame_after_setup"] = self.ms_per_frame
        data["ms_per_frame"] = {k: v / self.frames for k, v in self.stage_ms.items() if k != "setup"} if self.frames else {}
        return data


@dataclass
class FrameRecord:
    """One source frame after pass 1: its index, PTS (seconds), people (pixels, track ids) and driver."""

    index: int
    pts: float
    people: list[Pose2D]
    driver: int | None


def partial_path(path: Path) -> Path:
    """The temporary name a file is written under until it is complete (same folder, same suffix)."""
    return path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")


def uneven_frame_rate(pts: np.ndarray, tolerance: float = 0.25) -> float | None:
    """The rate a BVH of frames at presentation times ``pts`` (N,) seconds is resampled to when the
    frames are unevenly spaced (a variable-frame-rate phone video, dropped frames): any interval more
    than ``tolerance`` away from the median one. Then the rate of the shortest tenth of the
    intervals, rounded to whole frames per second (1-240), so the fast parts keep their detail.
    None when the spacing is even (one BVH frame per video frame is then exact)."""
    gaps = np.diff(np.asarray(pts, dtype=np.float64))
    if len(gaps) < 2 or not np.all(gaps > 0):
        return None
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) <= tolerance * median:
        return None
    return float(min(max(round(1.0 / float(np.percentile(gaps, 10))), 1), 240))


def bvh_track_path(path: Path, track_id: int) -> Path:
    """``walk.bvh`` -> ``walk.track3.bvh`` (one BVH per track)."""
    return path.with_name(f"{path.stem}.track{track_id}{path.suffix}")


@dataclass
class EstimatedFrames:
    """Pass 1 over a source (or one chunk of a video): every frame's people, before smoothing."""

    records: list[FrameRecord]
    width: int
    height: int
    fps: float  # the container's (nominal) rate
    expected_frames: int | None
    stage_ms: dict[str, float]
    first_frame: int = 0  # the chunk's first frame kept (frames before it are overlap, for the tracker)


def plan_chunks(frame_count: int, chunk_frames: int, overlap: int) -> list[tuple[int, int, int]]:
    """Split ``frame_count`` frames into chunks of ``chunk_frames``: (decode from, keep from, stop).

    Each chunk but the first starts ``overlap`` frames early, so its tracker is running when its own
    frames begin and its track ids can be matched with the previous chunk's over those frames.
    """
    if chunk_frames < 1 or overlap < 0:
        raise ValueError(f"chunks of {chunk_frames} frames with an overlap of {overlap}: need at least 1 frame, overlap 0 or more")
    return [(max(0, k - overlap), k, min(k + chunk_frames, frame_count)) for k in range(0, frame_count, chunk_frames)]


def estimate_frames(
    spec: str | Path, config: AppConfig, *, start: int = 0, keep_from: int = 0, stop: int | None = None,
    overlay: Path | None = None, temps: list[Path] | None = None, progress: Callable[[int, int | None], None] | None = None,
) -> EstimatedFrames:
    """Pass 1: decode frames ``start`` to ``stop`` (default: all) in order and run detection, pose
    and tracking on each (:meth:`avatar_bridge.pipeline.Pipeline.estimate`); frames before
    ``keep_from`` only warm the tracker up (kept in the records for matching, see :func:`merge_chunks`).

    Raises RuntimeError when a video ends before the frame count its container announces.
    """
    from .capture import VideoFileSource, open_source
    from .pipeline import Pipeline, is_keypoint_source

    perf = time.perf_counter
    stage = {name: 0.0 for name in STAGES}
    temps = [] if temps is None else temps
    writer = None
    t_setup = perf()
    if start > 0 or stop is not None:
        source = VideoFileSource(spec, realtime=False, resize=parse_resize(config.source.resize), start_frame=start)
    else:
        source = open_source(str(spec), realtime=False, loop=False, fps=config.source.fps, resize=config.source.resize)
    try:
        with source:
            total = getattr(source, "frame_count", None) or None
            if total is None and hasattr(source, "paths"):
                total = len(source.paths)
            elif total is None and hasattr(source, "joints3d"):
                total = len(source.joints3d)
            pipeline = Pipeline(config)
            pipeline.prepare(images=not is_keypoint_source(str(spec)))
            stage["setup"] += (perf() - t_setup) * 1000.0  # opening the source, loading the models (once per job)
            records: list[FrameRecord] = []
            width, height = source.width, source.height
            first_timestamp = None
            t_read = perf()
            for frame in source:
                stage["decode"] += (perf() - t_read) * 1000.0
                if stop is not None and frame.index >= stop:
                    break
                if first_timestamp is None:
                    first_timestamp = frame.timestamp
                pts = frame.pts if frame.pts is not None else frame.timestamp - first_timestamp
                estimated = pipeline.estimate(frame)
                if not estimated.skipped:
                    pipeline.driver = estimated.driver
                for name, ms in estimated.poses.timings_ms.items():
                    stage[name] = stage.get(name, 0.0) + ms
                width, height = frame.width, frame.height
                people = [Pose2D(p.keypoints.copy(), p.scores.copy(), None if p.box is None else p.box.copy(), p.track_id)
                          for p in estimated.poses.people]
                records.append(FrameRecord(int(frame.index), float(pts), people, None if estimated.skipped else estimated.driver))
                if overlay is not None:
                    t0 = perf()
                    writer = _write_overlay(writer, overlay, temps, frame, people, records[-1].driver, source.fps)
                    stage["overlay"] += (perf() - t0) * 1000.0
                if progress is not None:
                    progress(len(records), total)
                t_read = perf()
            if isinstance(source, VideoFileSource) and source.decode_failed:
                raise RuntimeError(
                    f"{spec} ended after {start + len(records)} of the {source.frame_count} frames its container announces: "
                    "the file is cut short or corrupt; repair or re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4) and convert again")
            fps_nominal = float(source.fps)
    finally:
        if writer is not None:
            writer.release()
    return EstimatedFrames(records, width, height, fps_nominal, total, stage, keep_from)


def parse_resize(text: str | None):
    from .capture import parse_size

    return parse_size(text)


def merge_chunks(chunks: list[EstimatedFrames], max_distance: float = 0.25) -> EstimatedFrames:
    """Join chunks estimated separately into one video's frames, with continuous track ids.

    A chunk's track ids are its own: over the overlap frames (decoded by both chunks) each of its
    tracks is matched to the previous chunk's track whose keypoints are nearest (mean distance over
    the frames both saw, relative to the person's box height; Hungarian assignment, accepted below
    ``max_distance``); unmatched tracks get new ids. The overlap frames keep the earlier chunk's poses.
    """
    from scipy.optimize import linear_sum_assignment

    if not chunks:
        raise ValueError("merge_chunks needs at least one chunk")
    merged = [r for r in chunks[0].records if r.index >= chunks[0].first_frame]
    next_id = 1 + max((p.track_id for r in merged for p in r.people), default=0)
    stage = dict(chunks[0].stage_ms)
    for chunk in chunks[1:]:
        for name, ms in chunk.stage_ms.items():
            stage[name] = stage.get(name, 0.0) + ms
        previous = {r.index: r for r in merged}
        local_ids = sorted({p.track_id for r in chunk.records for p in r.people})
        global_ids = sorted({p.track_id for r in chunk.records if r.index in previous for p in previous[r.index].people})
        cost = np.full((len(local_ids), len(global_ids)), np.inf)
        sums = np.zeros_like(cost)
        counts = np.zeros_like(cost)
        for record in chunk.records:
            if record.index >= chunk.first_frame or record.index not in previous:
                continue
            for mine in record.people:
                for theirs in previous[record.index].people:
                    ok = (mine.scores > 0.3) & (theirs.scores > 0.3)
                    if not ok.any():
                        continue
                    height = max(float(np.ptp(theirs.keypoints[ok, 1])), 1.0)
                    d = float(np.mean(np.linalg.norm(mine.keypoints[ok] - theirs.keypoints[ok], axis=1))) / height
                    i, j = local_ids.index(mine.track_id), global_ids.index(theirs.track_id)
                    sums[i, j] += d
                    counts[i, j] += 1
        seen = counts > 0
        cost[seen] = sums[seen] / counts[seen]
        mapping: dict[int, int] = {}
        if cost.size:
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
            for i, j in zip(rows, cols):
                if cost[i, j] < max_distance:
                    mapping[local_ids[i]] = global_ids[j]
        for tid in local_ids:
            if tid not in mapping:
                mapping[tid] = next_id
                next_id += 1
        for record in chunk.records:
            if record.index < chunk.first_frame:
                continue
            people = [Pose2D(p.keypoints, p.scores, p.box, mapping[p.track_id]) for p in record.people]
            driver = mapping.get(record.driver) if record.driver is not None else None
            merged.append(FrameRecord(record.index, record.pts, people, driver))
    last = chunks[-1]
    return EstimatedFrames(merged, last.width, last.height, last.fps, chunks[0].expected_frames, stage, 0)


def convert_source(
    spec: str | Path,
    config: AppConfig,
    options: ConvertOptions,
    progress: Callable[[int, int | None], None] | None = None,
    estimated: EstimatedFrames | None = None,
) -> ConvertResult:
    """Convert one source; see the module docstring for the outputs.

    Args:
        spec: a video file, an image folder, an ``.abrec`` take or a ``.bvh`` mocap file.
        config: models, detector, smoothing and retargeting settings (``config.retarget.mirror`` is a
            view option and is ignored here: files keep the performer's left and right unless
            ``options.mirror``).
        options: outputs and their settings.
        progress: called as ``progress(frames_done, frames_total_or_None)`` after every frame.
        estimated: pass 1 already done elsewhere (chunks estimated as Ray tasks and joined with
            :func:`merge_chunks`); None runs it here.

    Returns:
        :class:`ConvertResult` with frame count, people, video duration, files and per-stage costs.

    Raises:
        FileNotFoundError, ValueError: the source cannot be opened (not a video, no frames).
        RuntimeError: the video ends before the frame count its container announces (cut or
            corrupt), or an output cannot be written; nothing is left under the final names.
    """
    if options.smoother not in SMOOTHERS:
        raise ValueError(f"smoother {options.smoother!r} is unknown: choose one of {', '.join(SMOOTHERS)}")
    unknown = set(options.outputs) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"output kind {sorted(unknown)[0]!r} is unknown: choose from {', '.join(OUTPUT_KINDS)}")
    for path in options.outputs.values():
        if not Path(path).parent.is_dir():
            raise FileNotFoundError(f"folder {Path(path).parent} for {Path(path).name} does not exist: create it or change -o")
    overlay_path = options.outputs.get("overlay")
    if estimated is not None and overlay_path is not None:
        raise ValueError("the overlay video is drawn while decoding: it cannot be made from chunks estimated elsewhere; "
                         "leave overlay out of --formats or convert without chunks")
    started = time.perf_counter()
    result = ConvertResult(source=str(spec))
    perf = time.perf_counter
    temps: list[Path] = []
    try:
        if estimated is None:
            estimated = estimate_frames(spec, config, overlay=overlay_path, temps=temps, progress=progress)
        stage = dict(estimated.stage_ms)
        records, width, height, fps_nominal = estimated.records, estimated.width, estimated.height, estimated.fps
        result.expected_frames = estimated.expected_frames
        if not records:
            raise ValueError(f"{spec} has no frames: nothing to convert")
        result.frames = len(records)
        pts = np.array([r.pts for r in records])
        if np.any(np.diff(pts) <= 0):
            log.warning("%s: presentation times are not increasing; frames are kept in decoding order", spec)
            pts = np.maximum.accumulate(pts)
        step = float(np.median(np.diff(pts))) if len(pts) > 1 else 1.0 / fps_nominal
        result.duration = float(pts[-1] - pts[0] + (pts[-1] - pts[-2] if len(pts) > 1 else step))
        result.fps = result.frames / result.duration if result.duration > 0 else fps_nominal
        if len(pts) > 1 and np.all(np.abs(np.diff(pts) - 1.0 / fps_nominal) <= 0.0015):
            # Constant frame rate (every interval within the container's millisecond rounding of
            # 1 / its rate): the container's rate is the exact one.
            result.fps, result.duration = fps_nominal, result.frames / fps_nominal
        tracks = _tracks(records)
        result.people = len(tracks)
        t0 = perf()
        smoothed = _smooth(tracks, pts, config, options.smoother)
        stage["smooth"] = stage.get("smooth", 0.0) + (perf() - t0) * 1000.0
        t0 = perf()
        rigs = _retarget(tracks, smoothed, pts, config, (width, height), options.mirror)
        stage["retarget"] = stage.get("retarget", 0.0) + (perf() - t0) * 1000.0
        t0 = perf()
        try:
            written = _write_files(spec, records, pts, tracks, smoothed, rigs, (width, height), result, options, temps)
        except OSError as exc:  # a full disk: name the files asked for, not the temporary names
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            names = ", ".join(str(p) for p in options.outputs.values())
            raise OSError(f"cannot write {names}: {reason}: free disk space or choose another folder with -o") from None
        stage["write"] = stage.get("write", 0.0) + (perf() - t0) * 1000.0
        # Everything is complete: give the files their final names.
        for kind, pairs in written.items():
            for temp, final in pairs:
                os.replace(temp, final)
                result.outputs.setdefault(kind, []).append(str(final))
        if overlay_path is not None:
            os.replace(partial_path(Path(overlay_path)), overlay_path)
            result.outputs["overlay"] = [str(overlay_path)]
        temps.clear()
    finally:
        for temp in temps:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
    result.stage_ms = {k: v for k, v in stage.items() if v > 0}
    result.seconds = time.perf_counter() - started
    return result


def _write_overlay(writer, path: Path, temps: list[Path], frame, people, driver, fps: float):
    import cv2

    from .overlay import draw_overlay

    if writer is None:
        temp = partial_path(Path(path))
        temps.append(temp)
        writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (frame.width, frame.height))
        if not writer.isOpened():
            raise RuntimeError(f"cannot write the overlay video {path}: check the folder is writable and the name ends in .mp4")
    canvas = frame.image.copy() if frame.image is not None else np.zeros((frame.height, frame.width, 3), np.uint8)
    label = f"frame {frame.index}  {frame.pts or 0.0:.3f} s"
    writer.write(draw_overlay(canvas, people, driver, label))
    return writer


def _tracks(records: list[FrameRecord]) -> dict[int, list[tuple[int, Pose2D]]]:
    """Track id -> [(frame position in records, Pose2D)] in frame order."""
    tracks: dict[int, list[tuple[int, Pose2D]]] = {}
    for i, record in enumerate(records):
        for person in record.people:
            tracks.setdefault(int(person.track_id), []).append((i, person))
    return tracks


def _smooth(tracks, pts: np.ndarray, config: AppConfig, smoother: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Track id -> (keypoints (n, K, 2), scores (n, K)) for the track's frames, smoothed."""
    from .smooth import make_stabilizer, rts_smooth_track

    out = {}
    for track_id, items in tracks.items():
        times = pts[[i for i, _ in items]]
        kp = np.stack([p.keypoints for _, p in items]).astype(np.float64)
        sc = np.stack([p.scores for _, p in items]).astype(np.float64)
        if smoother == "rts":
            out[track_id] = rts_smooth_track(times, kp, sc, config.smoothing)
        elif smoother == "causal":
            stabilizer = make_stabilizer(config.smoothing)
            poses = [stabilizer.update(kp[j], sc[j], times[j]) for j in range(len(items))]
            out[track_id] = (np.stack([p.keypoints for p in poses]), np.stack([p.scores for p in poses]))
        else:
            out[track_id] = (kp.astype(np.float32), sc.astype(np.float32))
    return out


def _retarget(tracks, smoothed, pts: np.ndarray, config: AppConfig, size: tuple[int, int], mirror: bool) -> dict[int, list[RigPose]]:
    """Track id -> one RigPose per frame of the track (performer's handedness; mirrored on request)."""
    from .retarget import Retargeter, load_depth_prior, mirror_rig

    retarget_config = copy.deepcopy(config.retarget)
    retarget_config.calibration_file = ""  # offline: calibrate from the video itself, write nothing
    prior = load_depth_prior(retarget_config.depth_prior)  # read once for every track
    out = {}
    for track_id, items in tracks.items():
        kp, sc = smoothed[track_id]
        # Two passes: the first measures the calibration over the track (live, the first frames are
        # solved while it is still being measured, and the very first at rest); the second solves
        # every frame, the first included, with the finished calibration.
        measuring = Retargeter(retarget_config, track_id=track_id, depth_prior=prior)
        for j, (i, _) in enumerate(items):
            measuring.update(kp[j], sc[j], float(pts[i]), size)
        retargeter = Retargeter(retarget_config, track_id=track_id, depth_prior=prior)
        if measuring.calibration is not None:
            retargeter.set_calibration(measuring.calibration)
        rigs = []
        for j, (i, _) in enumerate(items):
            rig = retargeter.solve(kp[j], sc[j], float(pts[i]), size, track_id, advance=True)
            rigs.append(mirror_rig(rig) if mirror else rig)
        out[track_id] = rigs
    return out


def _driving_track(records: list[FrameRecord], tracks) -> int | None:
    """The track that drove most frames (ties: the lower id); None when nobody was tracked."""
    counts: dict[int, int] = {}
    for record in records:
        if record.driver is not None and record.driver in tracks:
            counts[record.driver] = counts.get(record.driver, 0) + 1
    if not counts:
        counts = {tid: len(items) for tid, items in tracks.items()}
    return max(counts, key=lambda k: (counts[k], -k)) if counts else None


def _per_frame(track_items, rigs: list[RigPose], n: int) -> list[RigPose]:
    """One RigPose per source frame: frames the track misses hold the nearest pose it has."""
    positions = np.array([i for i, _ in track_items])
    nearest = np.clip(np.searchsorted(positions, np.arange(n), side="right") - 1, 0, len(positions) - 1)
    return [rigs[j] for j in nearest]


def _write_files(spec, records, pts, tracks, smoothed, rigs, size, result, options: ConvertOptions, temps) -> dict:
    from .bvh import rig_poses_to_arrays, write_bvh
    from .record import RecordingHeader, RecordingWriter
    from .types import FramePoses

    written: dict[str, list[tuple[Path, Path]]] = {}
    # Per frame: track id -> (keypoints, scores, rig) for that frame.
    by_frame: list[dict[int, tuple[np.ndarray, np.ndarray, RigPose]]] = [dict() for _ in records]
    for track_id, items in tracks.items():
        kp, sc = smoothed[track_id]
        for j, (i, _) in enumerate(items):
            by_frame[i][track_id] = (kp[j], sc[j], rigs[track_id][j])
    handedness = "mirrored" if options.mirror else "performer"

    if "jsonl" in options.outputs:
        final = Path(options.outputs["jsonl"])
        temp = partial_path(final)
        temps.append(temp)
        with open(temp, "w", encoding="utf-8") as f:
            for i, record in enumerate(records):
                people = []
                for person in record.people:
                    skp, _, rig = by_frame[i][person.track_id]
                    people.append({
                        "track_id": int(person.track_id),
                        "box": None if person.box is None else [round(float(v), 2) for v in person.box],
                        "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                                      for (x, y), s in zip(person.keypoints, person.scores)],
                        "smoothed": [[round(float(x), 2), round(float(y), 2)] for x, y in skp],
                        "hips": [round(float(v), 5) for v in rig.hips_position],
                        "rotations": {name: [round(float(v), 6) for v in q] for name, q in rig.rotations.items()},
                        "tracking": bool(rig.tracking),
                    })
                line = {"frame": record.index, "pts": round(float(pts[i]), 6), "driver": record.driver,
                        "handedness": handedness, "people": people}
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        written["jsonl"] = [(temp, final)]

    if "abrec" in options.outputs:
        final = Path(options.outputs["abrec"])
        temp = partial_path(final)
        temps.append(temp)
        header = RecordingHeader(
            source={"spec": str(spec), "width": size[0], "height": size[1], "fps": result.fps, "frames": result.frames},
            fps=result.fps, handedness=handedness, timeline="video")
        with RecordingWriter(temp, header, overwrite=True) as recorder:
            for i, record in enumerate(records):
                people = [Pose2D(by_frame[i][p.track_id][0], by_frame[i][p.track_id][1], p.box, p.track_id) for p in record.people]
                recorder.write(FramePoses(record.index, float(pts[i]), size[0], size[1], people),
                               [by_frame[i][p.track_id][2] for p in record.people])
            if recorder.error is not None:
                raise RuntimeError(recorder.failure_message())
        written["abrec"] = [(temp, final)]

    if "bvh" in options.outputs:
        final = Path(options.outputs["bvh"])
        if not tracks:
            raise RuntimeError(f"{spec}: nobody was tracked in any frame, so there is no motion for {final.name}; "
                               "check the detector (--detector, --detector-dir) or leave bvh out of --formats")
        choice = options.bvh_track
        if choice == "all":
            chosen = [(tid, bvh_track_path(final, tid)) for tid in sorted(tracks)]
        else:
            tid = _driving_track(records, tracks) if choice is None else int(choice)
            if tid not in tracks:
                listing = ", ".join(f"{k} ({len(v)} frames)" for k, v in sorted(tracks.items()))
                raise ValueError(f"track {tid} is not in {spec}: its tracks are {listing}; pass --track with one of them or all")
            chosen = [(tid, final)]
        uneven_rate = None if options.bvh_fps else uneven_frame_rate(pts)
        if uneven_rate is not None:
            gaps = np.diff(pts) * 1000.0
            log.warning("%s: frames are unevenly spaced (%.0f-%.0f ms apart, a variable frame rate): %s is resampled "
                        "by presentation time to %g fps so it plays at the video's speed; pass --fps to choose the rate",
                        spec, gaps.min(), gaps.max(), final.name, uneven_rate)
        pairs = []
        for tid, path in chosen:
            per_frame = _per_frame(tracks[tid], rigs[tid], len(records))
            _, hips, rotations = rig_poses_to_arrays(per_frame)
            temp = partial_path(path)
            temps.append(temp)
            if options.bvh_fps:  # resampled in video time
                write_bvh(temp, pts, hips, rotations, fps=options.bvh_fps, bones=options.bvh_bones, units=options.bvh_units)
            elif uneven_rate is not None:  # a BVH has one frame time: resampled in video time, not time-warped
                write_bvh(temp, pts, hips, rotations, fps=uneven_rate, bones=options.bvh_bones, units=options.bvh_units)
            else:  # one BVH frame per source frame, at the video's own rate
                write_bvh(temp, pts, hips, rotations, fps=result.fps, bones=options.bvh_bones, units=options.bvh_units,
                          resample=False)
            pairs.append((temp, path))
        written["bvh"] = pairs
    return written
