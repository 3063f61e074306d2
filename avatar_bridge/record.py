"""Recording, playback and BVH export of takes (``.abrec`` files).

Why a custom format: a take must survive the process being killed at any moment, stay small for
hour-long sessions, and carry everything needed to replay it bit-exactly through the outputs
(2D keypoints and rig poses) or export it (skeleton, rest offsets, coordinate convention).
The format is specified in ``docs/recording.md``; in short::

    preamble  8 bytes magic b"\\x89ABREC\\r\\n" + uint16 format version + uint16 reserved (0)
    chunks    4-byte ASCII type + uint32 payload length + payload + uint32 CRC32(type + payload)
      HEAD    UTF-8 JSON header (skeleton, keypoint names, coordinates, source, calibration)
      FRMS    a block of frames: binary tables (raw); FRMZ the same, zlib-compressed
      CALB    UTF-8 JSON calibration taken during the take
      END     UTF-8 JSON summary written by ``close()`` (absent = the writer did not finish)

All integers are little-endian. The writer buffers frames for ``flush_seconds`` of take time, then
writes one block chunk with a single ``write`` and flushes it to the OS, so a SIGKILL loses at most
that much. A reader stops at the first chunk that is cut short or fails its CRC, warns once, and
returns every frame before it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from . import __version__, skeleton
from .keypoints import COCO_KEYPOINTS
from .types import Frame, FramePoses, FrameSourceBase, Pose2D, RigPose

log = logging.getLogger(__name__)

MAGIC = b"\x89ABREC\r\n"
FORMAT_VERSION = 1
SUFFIX = ".abrec"
_PREAMBLE = struct.Struct("<8sHH")
_CHUNK_HEAD = struct.Struct("<4sI")
_CRC = struct.Struct("<I")
_BLOCK_COUNTS = struct.Struct("<III")  # frames, people, rigs in a block
MAX_CHUNK_BYTES = 256 * 1024 * 1024  # a length above this is corruption, not data
MAX_BLOCK_FRAMES = 1024

COORDINATES = {**skeleton.COORDINATES, "image": "pixels, x right, y down, origin top-left"}


class RecordingError(ValueError):
    """A file that cannot be read as a recording; the message names the file and the fix."""


# --- header ---------------------------------------------------------------------------------------


@dataclass
class RecordingHeader:
    """What a take needs besides its frames. Defaults describe the current skeleton and COCO-17."""

    bones: list[str] = field(default_factory=lambda: list(skeleton.BONE_NAMES))
    parents: list[str | None] = field(default_factory=lambda: [b.parent for b in skeleton.BONES])
    rest_offsets: np.ndarray = field(default_factory=lambda: skeleton.REST_OFFSETS.copy())  # (B, 3) m
    keypoints: list[str] = field(default_factory=lambda: list(COCO_KEYPOINTS))
    coordinates: dict = field(default_factory=lambda: dict(COORDINATES))
    source: dict = field(default_factory=dict)  # e.g. {"spec": "0", "width": 1280, "height": 720, "fps": 30}
    calibration: dict | None = None  # the retargeter's calibration at the start of the take
    fps: float = 30.0  # nominal frame rate of the source
    created: str = ""  # ISO 8601 UTC, filled by the writer
    software: str = f"avatar-bridge {__version__}"
    version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {
            "format": "avatar-bridge recording",
            "version": self.version,
            "created": self.created,
            "software": self.software,
            "coordinates": self.coordinates,
            "skeleton": [
                {"name": n, "parent": p, "offset": [float(v) for v in o]}
                for n, p, o in zip(self.bones, self.parents, np.asarray(self.rest_offsets))
            ],
            "keypoints": list(self.keypoints),
            "fps": float(self.fps),
            "source": self.source,
            "calibration": self.calibration,
        }

    @classmethod
    def from_json(cls, data: dict, where: str) -> "RecordingHeader":
        try:
            bones = data["skeleton"]
            return cls(
                bones=[b["name"] for b in bones],
                parents=[b["parent"] for b in bones],
                rest_offsets=np.array([b["offset"] for b in bones], dtype=np.float64).reshape(len(bones), 3),
                keypoints=list(data["keypoints"]),
                coordinates=dict(data.get("coordinates", {})),
                source=dict(data.get("source") or {}),
                calibration=data.get("calibration"),
                fps=float(data.get("fps", 30.0)),
                created=str(data.get("created", "")),
                software=str(data.get("software", "")),
                version=int(data.get("version", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"{where}: the recording header is malformed ({exc!r}): the file is damaged") from None


def _frame_dtype() -> np.dtype:
    return np.dtype(
        [("index", "<u4"), ("timestamp", "<f8"), ("width", "<u2"), ("height", "<u2"),
         ("dropped", "<u2"), ("n_people", "u1"), ("n_rigs", "u1")]
    )


def _person_dtype(num_keypoints: int) -> np.dtype:
    # box is NaN when the pose had none
    return np.dtype(
        [("track_id", "<i4"), ("keypoints", "<f4", (num_keypoints, 2)), ("scores", "<f4", (num_keypoints,)),
         ("box", "<f4", (4,))]
    )


def _rig_dtype(num_bones: int) -> np.dtype:
    # rotation rows and confidences are NaN for bones the pose left out
    return np.dtype(
        [("track_id", "<i4"), ("timestamp", "<f8"), ("tracking", "u1"), ("hips", "<f4", (3,)),
         ("rotations", "<f4", (num_bones, 4)), ("confidence", "<f2", (num_bones,))]
    )


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return _CHUNK_HEAD.pack(kind, len(payload)) + payload + _CRC.pack(zlib.crc32(kind + payload))


# --- writer ---------------------------------------------------------------------------------------


class RecordingWriter:
    """Write a take incrementally: ``write(frame_poses, rig_poses)`` per frame, then ``close()``.

    Frames are buffered for ``flush_seconds`` of take time (by their timestamps), then written as one
    chunk and flushed to the OS (``fsync=True`` also forces it to disk, for power loss). Refuses to
    replace an existing file unless ``overwrite``.
    """

    def __init__(
        self,
        path: str | Path,
        header: RecordingHeader | None = None,
        *,
        compress: bool = True,
        flush_seconds: float = 0.5,
        fsync: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.header = header or RecordingHeader()
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"folder {self.path.parent} for recording {self.path.name} does not exist: create it first")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"recording {self.path} already exists: choose another file name or pass --overwrite")
        if not 0.0 <= flush_seconds <= 60.0:
            raise ValueError(f"flush_seconds {flush_seconds} is out of range 0 to 60")
        self.compress = compress
        self.flush_seconds = float(flush_seconds)
        self.fsync = fsync
        self._bone_index = {name: i for i, name in enumerate(self.header.bones)}
        self._num_keypoints = len(self.header.keypoints)
        self._frame_dtype = _frame_dtype()
        self._person_dtype = _person_dtype(self._num_keypoints)
        self._rig_dtype = _rig_dtype(len(self.header.bones))
        self._frames: list[np.ndarray] = []
        self._people: list[np.ndarray] = []
        self._rigs: list[np.ndarray] = []
        self._block_start: float | None = None
        self.frames_written = 0  # handed to write()
        self.frames_flushed = 0  # in the file (at least in the OS cache)
        self.bytes_written = 0
        self._first_timestamp: float | None = None
        self._last_timestamp: float | None = None
        self._closed = False
        # A failed write (disk full, file too large, device gone) ends the take: the file keeps every
        # block written before it; later frames are counted here instead of piling up in memory.
        self.error: OSError | None = None
        self.frames_lost = 0
        if not self.header.created:
            self.header.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._file: BinaryIO = open(self.path, "wb")
        header_json = json.dumps(self.header.to_json(), default=_json_default).encode("utf-8")
        self._write_raw(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0) + _chunk(b"HEAD", header_json))

    @classmethod
    def from_config(cls, config, header: RecordingHeader | None = None) -> "RecordingWriter":
        """A writer for ``config.record`` (:class:`avatar_bridge.config.RecordConfig`): path and options."""
        if not config.path:
            raise ValueError("record.path is empty: give the recording file (--record FILE.abrec)")
        return cls(
            Path(config.path).expanduser(), header, compress=config.compress, flush_seconds=config.flush_seconds,
            fsync=config.fsync, overwrite=config.overwrite,
        )

    # -- public --
    def write(self, frame_poses: FramePoses, rig_poses: Sequence[RigPose] = ()) -> None:
        """Append one frame: every person's 2D keypoints and the rig poses solved from them."""
        if self._closed:
            raise RuntimeError(f"recording {self.path} is closed: open a new RecordingWriter")
        if self.error is not None:
            self.frames_lost += 1
            return
        people = frame_poses.people
        if not np.isfinite(frame_poses.timestamp):
            raise ValueError(f"frame {frame_poses.frame_index} has timestamp {frame_poses.timestamp}: timestamps must be finite seconds")
        if len(people) > 255 or len(rig_poses) > 255:
            raise ValueError(f"frame {frame_poses.frame_index} has more than 255 people: a recording holds up to 255")
        row = np.zeros((), self._frame_dtype)
        row["index"] = frame_poses.frame_index
        row["timestamp"] = frame_poses.timestamp
        row["width"] = frame_poses.width
        row["height"] = frame_poses.height
        row["dropped"] = min(int(getattr(frame_poses, "dropped", 0) or 0), 65535)
        row["n_people"] = len(people)
        row["n_rigs"] = len(rig_poses)
        person_rows = np.zeros(len(people), self._person_dtype)
        for i, person in enumerate(people):
            keypoints = np.asarray(person.keypoints)
            if keypoints.shape != (self._num_keypoints, 2):
                raise ValueError(
                    f"frame {frame_poses.frame_index}: keypoints of track {person.track_id} have shape {keypoints.shape}, "
                    f"the recording header declares ({self._num_keypoints}, 2)"
                )
            person_rows[i]["track_id"] = person.track_id
            person_rows[i]["keypoints"] = keypoints
            person_rows[i]["scores"] = person.scores
            person_rows[i]["box"] = np.nan if person.box is None else person.box
        rig_rows = np.zeros(len(rig_poses), self._rig_dtype)
        for i, rig in enumerate(rig_poses):
            rig_rows[i]["track_id"] = rig.track_id
            rig_rows[i]["timestamp"] = rig.timestamp
            rig_rows[i]["tracking"] = bool(rig.tracking)
            rig_rows[i]["hips"] = rig.hips_position
            rotations = np.full((len(self.header.bones), 4), np.nan, np.float32)
            confidence = np.full(len(self.header.bones), np.nan, np.float16)
            for name, q in rig.rotations.items():
                rotations[self._bone_index_of(name)] = q
            for name, c in rig.confidence.items():
                confidence[self._bone_index_of(name)] = c
            rig_rows[i]["rotations"] = rotations
            rig_rows[i]["confidence"] = confidence
        self._frames.append(row.reshape(1))
        self._people.append(person_rows)
        self._rigs.append(rig_rows)
        self.frames_written += 1
        t = float(frame_poses.timestamp)
        if self._first_timestamp is None:
            self._first_timestamp = t
        self._last_timestamp = t
        if self._block_start is None:
            self._block_start = t
        # |...|: a clock that steps backwards must not hold frames back
        if abs(t - self._block_start) >= self.flush_seconds or len(self._frames) >= MAX_BLOCK_FRAMES:
            self.flush()

    def write_calibration(self, calibration: dict, timestamp: float) -> None:
        """Record a calibration taken during the take (applies from ``timestamp`` on)."""
        self.flush()
        payload = json.dumps({"timestamp": timestamp, "calibration": calibration}, default=_json_default)
        self._write_raw(_chunk(b"CALB", payload.encode("utf-8")))

    def flush(self) -> None:
        """Write the buffered frames as one chunk and hand them to the OS."""
        if not self._frames:
            return
        frames = np.concatenate(self._frames)
        people = np.concatenate(self._people)
        rigs = np.concatenate(self._rigs)
        payload = _BLOCK_COUNTS.pack(len(frames), len(people), len(rigs)) + frames.tobytes() + people.tobytes() + rigs.tobytes()
        kind = b"FRMS"
        if self.compress:
            payload, kind = zlib.compress(payload, 6), b"FRMZ"
        try:
            self._write_raw(_chunk(kind, payload))
        except OSError as exc:
            self.error = exc
            self.frames_lost += len(frames)
            self._frames, self._people, self._rigs = [], [], []
            raise RuntimeError(self.failure_message()) from None
        self.frames_flushed += len(frames)
        self._frames, self._people, self._rigs = [], [], []
        self._block_start = None

    def failure_message(self) -> str:
        reason = (self.error.strerror or str(self.error)) if self.error is not None else "no error"
        return (f"recording {self.path} stopped: cannot write ({reason}); it keeps the {self.frames_flushed} frames "
                f"written before, {self.frames_lost} later frames were not recorded: free disk space or record elsewhere")

    def close(self) -> None:
        if self._closed:
            return
        if self.error is not None:  # nothing more can be written: release the file, keep what is there
            self._closed = True
            try:
                self._file.close()
            except OSError:
                pass
            return
        try:
            self.flush()
            summary = {
                "frames": self.frames_written,
                "duration": (self._last_timestamp - self._first_timestamp) if self._first_timestamp is not None else 0.0,
            }
            self._write_raw(_chunk(b"END ", json.dumps(summary).encode("utf-8")))
        finally:
            self._closed = True
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --
    def _bone_index_of(self, name: str) -> int:
        index = self._bone_index.get(name)
        if index is None:
            raise ValueError(f"RigPose bone {name!r} is not in the recording's skeleton: use VRM 1.0 bone names (skeleton.BONE_NAMES)")
        return index

    def _write_raw(self, data: bytes) -> None:
        self._file.write(data)  # one write per chunk: a kill leaves whole chunks plus at most one partial
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.bytes_written += len(data)


# --- reader ---------------------------------------------------------------------------------------


@dataclass
class RecordedFrame:
    """One recorded frame: the 2D poses and the rig poses solved from them."""

    poses: FramePoses
    rigs: list[RigPose]
    dropped: int = 0


@dataclass
class RigTrack:
    """One person's rig motion as arrays (bones in the current ``skeleton.BONES`` order)."""

    track_id: int
    timestamps: np.ndarray  # (N,)
    hips: np.ndarray  # (N, 3) metres
    rotations: np.ndarray  # (N, B, 4), identity for bones a frame left out
    confidence: np.ndarray  # (N, B), NaN where not given
    tracking: np.ndarray  # (N,) bool
    rest_offsets: np.ndarray  # (B, 3) metres, from the recording header


class _ChunkReader:
    """Reads the preamble, the header and then chunk after chunk, stopping at damage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise FileNotFoundError(f"recording {path} not found: check the path (recordings end in {SUFFIX})")
        self.file = open(path, "rb")
        try:
            self.size = os.fstat(self.file.fileno()).st_size
            preamble = self.file.read(_PREAMBLE.size)
            if len(preamble) < len(MAGIC) or not preamble.startswith(MAGIC):
                raise RecordingError(
                    f"{path} is not an avatar-bridge recording (it does not start with the {SUFFIX} signature): "
                    "record one with `avatar-bridge record -o take.abrec`"
                )
            if len(preamble) < _PREAMBLE.size:
                raise RecordingError(f"{path} is truncated inside its preamble: the recording holds no frames")
            _, version, _ = _PREAMBLE.unpack(preamble)
            if version > FORMAT_VERSION:
                raise RecordingError(
                    f"{path} uses recording format version {version}, newer than version {FORMAT_VERSION} "
                    f"this avatar-bridge {__version__} reads: upgrade avatar-bridge"
                )
            if version < 1:
                raise RecordingError(f"{path} declares recording format version {version}, which does not exist: the file is damaged")
            self.version = version
            self.damage: str | None = None
            self.complete = False
            first = self.next_chunk()
            if first is None or first[0] != b"HEAD":
                raise RecordingError(f"{path} is truncated or damaged before its header ends: the recording holds no frames")
            try:
                data = json.loads(first[1].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise RecordingError(f"{path}: the recording header is not valid JSON: the file is damaged") from None
            self.header = RecordingHeader.from_json(data, str(path))
            self.data_start = self.file.tell()
        except BaseException:
            self.file.close()
            raise

    def next_chunk(self) -> tuple[bytes, bytes] | None:
        """The next intact chunk, or None at the end or at the first damaged chunk."""
        start = self.file.tell()
        head = self.file.read(_CHUNK_HEAD.size)
        if not head:
            return None
        if len(head) < _CHUNK_HEAD.size:
            return self._damaged(start, "a chunk header is cut short")
        kind, length = _CHUNK_HEAD.unpack(head)
        if length > MAX_CHUNK_BYTES:
            return self._damaged(start, f"a chunk declares an impossible length {length}")
        payload = self.file.read(length)
        crc = self.file.read(_CRC.size)
        if len(payload) < length or len(crc) < _CRC.size:
            return self._damaged(start, "the last chunk is cut short (the writer was interrupted)")
        if _CRC.unpack(crc)[0] != zlib.crc32(kind + payload):
            return self._damaged(start, "a chunk fails its CRC check")
        if kind == b"END ":
            self.complete = True
        return kind, payload

    def _damaged(self, offset: int, what: str) -> None:
        self.damage = f"{what} at byte {offset} of {self.size}"
        return None

    def rewind(self) -> None:
        self.file.seek(self.data_start)
        self.damage = None
        self.complete = False

    def close(self) -> None:
        self.file.close()


@dataclass
class _Block:
    frames: np.ndarray
    people: np.ndarray
    rigs: np.ndarray


def _decode_block(kind: bytes, payload: bytes, header: RecordingHeader) -> _Block:
    if kind == b"FRMZ":
        payload = zlib.decompress(payload)
    n_frames, n_people, n_rigs = _BLOCK_COUNTS.unpack_from(payload)
    frame_dtype, person_dtype, rig_dtype = _frame_dtype(), _person_dtype(len(header.keypoints)), _rig_dtype(len(header.bones))
    offset = _BLOCK_COUNTS.size
    frames = np.frombuffer(payload, frame_dtype, n_frames, offset)
    offset += frames.nbytes
    people = np.frombuffer(payload, person_dtype, n_people, offset)
    offset += people.nbytes
    rigs = np.frombuffer(payload, rig_dtype, n_rigs, offset)
    if int(frames["n_people"].sum()) != n_people or int(frames["n_rigs"].sum()) != n_rigs:
        raise ValueError("block counts disagree")
    return _Block(frames, people, rigs)


def _iter_blocks(reader: _ChunkReader, calibrations: list | None = None) -> Iterator[_Block]:
    while True:
        chunk = reader.next_chunk()
        if chunk is None:
            return
        kind, payload = chunk
        if kind in (b"FRMS", b"FRMZ"):
            try:
                yield _decode_block(kind, payload, reader.header)
            except (zlib.error, struct.error, ValueError):
                reader.damage = "a frame block does not decode"
                return
        elif kind == b"CALB" and calibrations is not None:
            try:
                calibrations.append(json.loads(payload.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("%s: skipped a calibration record that is not valid JSON", reader.path)
        # HEAD again, END and unknown chunk types (from newer minor writers) are skipped


def _person_from_row(row: np.void) -> Pose2D:
    box = np.array(row["box"], dtype=np.float32)
    return Pose2D(
        keypoints=np.array(row["keypoints"], dtype=np.float32),
        scores=np.array(row["scores"], dtype=np.float32),
        box=None if np.isnan(box).any() else box,
        track_id=int(row["track_id"]),
    )


def _rig_from_row(row: np.void, bones: list[str]) -> RigPose:
    rotations_arr = np.asarray(row["rotations"], dtype=np.float64)
    confidence_arr = np.asarray(row["confidence"], dtype=np.float32)
    present = np.flatnonzero(~np.isnan(rotations_arr[:, 3]))
    confident = np.flatnonzero(~np.isnan(confidence_arr))
    return RigPose(
        timestamp=float(row["timestamp"]),
        track_id=int(row["track_id"]),
        hips_position=np.array(row["hips"], dtype=np.float64),
        rotations={bones[i]: rotations_arr[i] for i in present},
        confidence={bones[i]: float(confidence_arr[i]) for i in confident},
        tracking=bool(row["tracking"]),
    )


def _frames_of_block(block: _Block, header: RecordingHeader) -> Iterator[RecordedFrame]:
    p = r = 0
    for row in block.frames:
        n_people, n_rigs = int(row["n_people"]), int(row["n_rigs"])
        people = [_person_from_row(x) for x in block.people[p:p + n_people]]
        rigs = [_rig_from_row(x, header.bones) for x in block.rigs[r:r + n_rigs]]
        p += n_people
        r += n_rigs
        poses = FramePoses(int(row["index"]), float(row["timestamp"]), int(row["width"]), int(row["height"]), people)
        yield RecordedFrame(poses, rigs, int(row["dropped"]))


@dataclass
class Recording:
    """A whole take in memory as flat tables (one row per frame / person / rig pose)."""

    path: Path
    header: RecordingHeader
    frame_table: np.ndarray
    person_table: np.ndarray
    rig_table: np.ndarray
    calibrations: list[dict]
    complete: bool  # the writer closed the file (END chunk present)
    damage: str | None  # what stopped the reading early, None when the file is intact

    def __len__(self) -> int:
        return len(self.frame_table)

    @property
    def duration(self) -> float:
        if len(self.frame_table) < 2:
            return 0.0
        return float(self.frame_table["timestamp"][-1] - self.frame_table["timestamp"][0])

    def frames(self) -> Iterator[RecordedFrame]:
        """Frames as dataclasses, built lazily (a one-hour take is 100k frames)."""
        block = _Block(self.frame_table, self.person_table, self.rig_table)
        return _frames_of_block(block, self.header)

    def track_counts(self) -> dict[int, int]:
        """Track id -> number of frames with a rig pose for it."""
        ids, counts = np.unique(self.rig_table["track_id"], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def default_track(self) -> int:
        """The track with the most rig poses (the main performer)."""
        counts = self.track_counts()
        if not counts:
            raise RecordingError(
                f"{self.path} has no person in it ({len(self)} frames, none with a rig pose): nothing to export or play"
            )
        return max(counts, key=lambda k: (counts[k], -k))

    def rig_track(self, track_id: int | None = None) -> RigTrack:
        """One person's motion as arrays; ``None`` = :meth:`default_track`."""
        if track_id is None:
            track_id = self.default_track()
        counts = self.track_counts()
        if track_id not in counts:
            if not counts:
                self.default_track()  # raises the no-person error
            listing = ", ".join(f"{k} ({v} frames)" for k, v in sorted(counts.items()))
            raise RecordingError(f"track {track_id} is not in {self.path}: its tracks are {listing}; pass --track with one of them")
        rows = np.flatnonzero(self.rig_table["track_id"] == track_id)
        rows = rows[np.argsort(self.rig_table["timestamp"][rows], kind="stable")]
        table = self.rig_table[rows]
        # Map the recorded bone order onto the current skeleton by name (the same today; future-proof).
        known = [(j, skeleton.BONE_INDEX[n]) for j, n in enumerate(self.header.bones) if n in skeleton.BONE_INDEX]
        src, dst = (np.array(x, dtype=np.int64) for x in zip(*known))
        recorded = np.asarray(table["rotations"][:, src], dtype=np.float64)  # (N, k, 4), NaN rows = absent
        rotations = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (len(rows), len(skeleton.BONES), 1))
        rotations[:, dst] = np.where(np.isnan(recorded[..., 3:]), rotations[:, dst], recorded)
        confidence = np.full((len(rows), len(skeleton.BONES)), np.nan)
        confidence[:, dst] = table["confidence"][:, src]
        offsets = skeleton.REST_OFFSETS.copy()
        offsets[dst] = self.header.rest_offsets[src]
        return RigTrack(
            track_id=int(track_id),
            timestamps=np.asarray(table["timestamp"], dtype=np.float64),
            hips=np.asarray(table["hips"], dtype=np.float64),
            rotations=rotations,
            confidence=confidence,
            tracking=np.asarray(table["tracking"], dtype=bool),
            rest_offsets=offsets,
        )


def _damage_warning(path: Path, damage: str, frames: int) -> None:
    log.warning("%s: %s; read the %d frames before it (the rest of the take is lost)", path, damage, frames)


def read_recording(path: str | Path) -> Recording:
    """Read a whole ``.abrec`` take. A damaged or cut-off end is reported (``damage``) and skipped."""
    path = Path(path)
    reader = _ChunkReader(path)
    calibrations: list[dict] = []
    try:
        blocks = list(_iter_blocks(reader, calibrations))
    finally:
        reader.close()
    header = reader.header
    frame_dtype, person_dtype, rig_dtype = _frame_dtype(), _person_dtype(len(header.keypoints)), _rig_dtype(len(header.bones))
    frames = np.concatenate([b.frames for b in blocks]) if blocks else np.zeros(0, frame_dtype)
    people = np.concatenate([b.people for b in blocks]) if blocks else np.zeros(0, person_dtype)
    rigs = np.concatenate([b.rigs for b in blocks]) if blocks else np.zeros(0, rig_dtype)
    if reader.damage:
        _damage_warning(path, reader.damage, len(frames))
    return Recording(path, header, frames, people, rigs, calibrations, reader.complete, reader.damage)


# --- playback -------------------------------------------------------------------------------------


@dataclass
class PlaybackFrame(Frame):
    """A played-back frame: ``truth`` holds the recorded 2D people and ``rigs`` the recorded rig poses.

    Timestamps (of the frame and of its rigs) are shifted to the playback clock, so downstream
    latency and prediction see a live-looking stream. ``recorded_timestamp`` keeps the original.
    """

    rigs: list[RigPose] = field(default_factory=list)
    recorded_timestamp: float = 0.0


class PlaybackSource(FrameSourceBase):
    """A FrameSource that replays an ``.abrec`` take at its original timing.

    ``speed`` scales time (2.0 = twice as fast), ``loop`` restarts at the end, ``realtime=False``
    hands frames out as fast as they are read (timestamps still follow the take). Like a camera,
    a consumer that falls behind in realtime mode gets the newest due frame, the skipped ones counted
    in ``Frame.dropped``. Frames are streamed block by block, so hour-long takes need little memory.
    """

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False, realtime: bool = True) -> None:
        if not (0.01 <= speed <= 100.0):
            raise ValueError(f"playback speed {speed} is out of range: use 0.01 to 100 (1 = original timing)")
        self.path = Path(path)
        self._reader = _ChunkReader(self.path)
        self.header = self._reader.header
        self.speed = float(speed)
        self.loop = loop
        self.realtime = realtime
        self.fps = float(self.header.fps) if self.header.fps > 0 else 30.0
        source = self.header.source
        self.width = int(source.get("width", 0))
        self.height = int(source.get("height", 0))
        self._frames = self._frame_stream()
        self._lookahead: RecordedFrame | None = next(self._frames, None)
        if self._lookahead is None:
            self._reader.close()
            damage = f" ({self._reader.damage})" if self._reader.damage else ""
            raise RecordingError(f"{self.path} has no frames{damage}: nothing to play")
        if not self.width or not self.height:
            self.width, self.height = self._lookahead.poses.width, self._lookahead.poses.height
        self._t0 = self._lookahead.poses.timestamp  # first recorded timestamp
        self._start: float | None = None  # playback clock at the first frame
        self._loop_offset = 0.0  # take time added by completed loops
        self._last_recorded = self._t0
        self._index = 0
        self.loops = 0
        self._paused_at: float | None = None
        self._closed = False

    def _frame_stream(self) -> Iterator[RecordedFrame]:
        count = 0
        for block in _iter_blocks(self._reader):
            count += len(block.frames)
            yield from _frames_of_block(block, self.header)
        if self._reader.damage and self.loops == 0:
            _damage_warning(self.path, self._reader.damage, count)

    def _next_recorded(self) -> tuple[RecordedFrame, float] | None:
        """The next recorded frame and its take time (seconds since the first frame, loops added)."""
        frame = self._lookahead
        if frame is None and self.loop and self._index > 0:
            self._loop_offset += (self._last_recorded - self._t0) + 1.0 / self.fps
            self.loops += 1
            self._reader.rewind()
            self._frames = self._frame_stream()
            frame = next(self._frames, None)
        if frame is None:
            return None
        self._lookahead = next(self._frames, None)
        self._last_recorded = frame.poses.timestamp
        return frame, self._loop_offset + frame.poses.timestamp - self._t0

    def read(self) -> PlaybackFrame | None:
        if self._closed:
            return None
        if self._paused_at is not None:
            self.pause(False)  # reading again resumes the take
        item = self._next_recorded()
        if item is None:
            return None
        frame, take_time = item
        dropped = frame.dropped
        now = time.monotonic()
        if self._start is None:
            self._start = now
        if self.realtime:
            due = self._start + take_time / self.speed
            # Behind schedule: skip to the newest frame that is already due, as a camera would.
            while self._lookahead is not None and due < now:
                next_time = self._loop_offset + self._lookahead.poses.timestamp - self._t0
                if self._start + next_time / self.speed > now:
                    break
                frame, take_time = self._next_recorded()
                due = self._start + take_time / self.speed
                dropped += 1
            if due > now:
                time.sleep(due - now)
        timestamp = self._start + take_time / self.speed
        shift = timestamp - frame.poses.timestamp
        rigs = [
            RigPose(
                timestamp=frame.poses.timestamp + (rig.timestamp - frame.poses.timestamp) / self.speed + shift,
                track_id=rig.track_id,
                hips_position=rig.hips_position,
                rotations=rig.rotations,
                confidence=rig.confidence,
                tracking=rig.tracking,
            )
            for rig in frame.rigs
        ]
        out = PlaybackFrame(
            index=self._index,
            timestamp=timestamp,
            width=frame.poses.width,
            height=frame.poses.height,
            truth=frame.poses.people,
            dropped=dropped,
            rigs=rigs,
            recorded_timestamp=frame.poses.timestamp,
        )
        self._index += 1
        return out

    def pause(self, paused: bool = True) -> None:
        """Freeze the take's clock while not reading; after resuming nothing is skipped."""
        now = time.monotonic()
        if paused and self._paused_at is None:
            self._paused_at = now
        elif not paused and self._paused_at is not None:
            if self._start is not None:
                self._start += now - self._paused_at
            self._paused_at = None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._reader.close()


# --- summary --------------------------------------------------------------------------------------


@dataclass
class RecordingSummary:
    """What a take holds, found by streaming its blocks (cheap even for hour-long takes)."""

    path: Path
    header: RecordingHeader
    frames: int
    duration: float
    tracks: dict[int, int]  # track id -> frames with a rig pose
    complete: bool
    damage: str | None
    size_bytes: int

    def require_person(self) -> None:
        if not self.tracks:
            raise RecordingError(f"{self.path} has no person in it ({self.frames} frames, none with a rig pose): nothing to play or export")


def summarize_recording(path: str | Path) -> RecordingSummary:
    path = Path(path)
    reader = _ChunkReader(path)
    frames = 0
    first = last = None
    tracks: dict[int, int] = {}
    try:
        for block in _iter_blocks(reader):
            if len(block.frames):
                frames += len(block.frames)
                first = float(block.frames["timestamp"][0]) if first is None else first
                last = float(block.frames["timestamp"][-1])
            ids, counts = np.unique(block.rigs["track_id"], return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                tracks[i] = tracks.get(i, 0) + c
    finally:
        reader.close()
    if reader.damage:
        _damage_warning(path, reader.damage, frames)
    duration = (last - first) if first is not None else 0.0
    return RecordingSummary(path, reader.header, frames, duration, tracks, reader.complete, reader.damage, reader.size)


# --- playback through the outputs -----------------------------------------------------------------


class _LatestFrame:
    """The newest played-back frame, handed from the reading loop to the output clock thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frame: PlaybackFrame | None = None
        self.driver: int | None = None
        self.paused = False

    def set(self, frame: PlaybackFrame) -> None:
        with self._lock:
            self.frame = frame

    def sample(self, t: float):
        """OutputClock ``sample(t)``: the newest frame as an OutputFrame (None before the first)."""
        from .stream import OutputFrame, OutputPerson

        with self._lock:
            frame, driver = self.frame, self.driver
        if frame is None:
            return None
        rigs = {rig.track_id: rig for rig in frame.rigs}
        people = []
        for pose in frame.truth or []:
            rig = rigs.pop(pose.track_id, None)
            people.append(OutputPerson(pose.track_id, pose2d=pose, rig=rig, tracking=rig.tracking if rig else True))
        for track_id, rig in rigs.items():
            people.append(OutputPerson(track_id, rig=rig, tracking=rig.tracking))
        return OutputFrame(capture_time=frame.timestamp, width=frame.width, height=frame.height, people=people, driver=driver)

    def control(self, message) -> None:
        """WebSocket control messages: ``select`` picks the driver, ``pause`` freezes the outputs."""
        if message.type == "select":
            self.driver = message.id
        elif message.type == "pause":
            self.paused = bool(message.paused)


def play_recording(
    path: str | Path,
    sinks: Sequence,
    *,
    speed: float = 1.0,
    loop: bool = False,
    rate: float = 60.0,
    duration: float | None = None,
    latest: _LatestFrame | None = None,
) -> dict:
    """Play a take through output sinks (``sink(OutputFrame)`` callables or ``(sink, rate)`` pairs).

    The take is read on this thread at its original timing; an :class:`OutputClock` thread hands the
    newest frame to the sinks at their own rates, exactly as a live run does. Returns counts.
    """
    from .stream import OutputClock

    latest = latest or _LatestFrame()
    played = dropped = 0
    started = time.monotonic()
    with PlaybackSource(path, speed=speed, loop=loop) as source:
        clock = OutputClock(latest.sample, list(sinks), rate=rate)
        clock.start()
        try:
            while duration is None or time.monotonic() - started < duration:
                if latest.paused:  # a WebSocket client paused: hold the take where it is
                    source.pause(True)
                    time.sleep(0.02)
                    continue
                frame = source.read()
                if frame is None:
                    break
                latest.set(frame)
                played += 1
                dropped += frame.dropped
            clock.tick(time.monotonic())  # the final pose reaches every sink before the outputs close
        finally:
            clock.stop()
        stats = clock.stats()
    return {"frames": played, "dropped": dropped, "loops": source.loops, "seconds": time.monotonic() - started,
            "output_frames": stats.frames, "sends": stats.sends}


# --- command line ---------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "export-bvh":
        parser.add_argument("file", metavar="FILE", help="recording (.abrec) to export")
        parser.add_argument("-o", "--output", required=True, metavar="OUT.bvh", help="BVH file to write (replaced if it exists)")
        parser.add_argument("--track", type=int, default=None, metavar="ID", help="person to export (default: the one with the most frames)")
        parser.add_argument("--fps", type=float, default=30.0, help="BVH frame rate; the take is resampled with slerp (default 30)")
        parser.add_argument("--bones", choices=("body", "full"), default="body", help="body = the bones COCO-17 drives; full adds fingers, eyes, jaw")
        parser.add_argument("--units", choices=("cm", "m"), default="cm", help="BVH length unit (default cm; import into Blender with scale 0.01)")
    elif command == "play":
        from . import server, vmc

        parser.add_argument("file", metavar="FILE", help="recording (.abrec) to play")
        parser.add_argument("--config", default=None, metavar="PRESET|FILE", help="TOML config for the outputs (default: the default preset, as for run)")
        parser.add_argument("--speed", type=float, default=1.0, help="time scale: 2 = twice as fast (default 1)")
        parser.add_argument("--loop", action="store_true", help="start again at the end (stop with Ctrl+C)")
        parser.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
        vmc.add_arguments(parser)
        server.add_arguments(parser)
    elif command == "record":
        _configure_record_parser(parser)
    else:  # pragma: no cover - cli.py only routes the three commands above here
        raise ValueError(f"avatar_bridge.record has no command {command!r}")


def _configure_record_parser(parser: argparse.ArgumentParser) -> None:
    """``record`` = ``run`` plus ``-o FILE``: the pipeline owner's options, then ours."""
    try:
        from . import pipeline
    except ImportError as exc:
        raise RuntimeError(f"avatar-bridge record needs the live pipeline (avatar_bridge.pipeline), which failed to import: {exc}") from None
    pipeline.configure_parser(parser, "run")
    parser.add_argument("-o", "--output", required=True, metavar="TAKE.abrec", help="recording file to write")
    # --overwrite comes with run's options (it replaces the -o recording and a --bvh file)


def run_command(args: argparse.Namespace) -> int:
    if args.command == "export-bvh":
        return _export_bvh_command(args)
    if args.command == "play":
        return _play_command(args)
    if args.command == "record":
        return _record_command(args)
    raise ValueError(f"avatar_bridge.record has no command {args.command!r}")


def export_bvh(
    path: str | Path, output: str | Path, *, track: int | None = None, fps: float = 30.0, bones: str = "body", units: str = "cm"
):
    """Export one person of a take to BVH (see :func:`avatar_bridge.bvh.write_bvh`)."""
    from .bvh import write_bvh

    if not 1.0 <= fps <= 1000.0:
        raise ValueError(f"--fps {fps} is out of range: use 1 to 1000 frames per second")
    recording = read_recording(path)
    rig = recording.rig_track(track)
    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"folder {output.parent} for {output.name} does not exist: create it or change -o")
    export = write_bvh(output, rig.timestamps, rig.hips, rig.rotations, fps=fps, bones=bones, units=units, offsets=rig.rest_offsets)
    return recording, rig, export


def _export_bvh_command(args: argparse.Namespace) -> int:
    recording, rig, export = export_bvh(args.file, args.output, track=args.track, fps=args.fps, bones=args.bones, units=args.units)
    note = "" if recording.damage is None else f" (recording damaged: {recording.damage}; exported what it holds)"
    print(
        f"wrote {export.path}: track {rig.track_id}, {export.frames} frames at {export.fps:g} fps "
        f"({export.duration:.2f} s), {export.joints} joints, {export.units}{note}"
    )
    return 0


def _play_command(args: argparse.Namespace) -> int:
    from . import server as server_module
    from . import vmc as vmc_module
    from .config import load_config

    name = args.config
    if name is None and (Path(__file__).resolve().parent.parent / "configs" / "default.toml").is_file():
        name = "default"  # same default as `run`
    config = load_config(name)
    vmc_module.apply_arguments(args, config.vmc)
    server_module.apply_arguments(args, config.websocket)
    config.validate()
    summary = summarize_recording(args.file)
    summary.require_person()
    latest = _LatestFrame()
    sinks: list = []
    closers: list = []
    try:
        if config.vmc.enabled:
            sender = vmc_module.VmcSender(config.vmc)
            closers.append(sender.close)
            sinks.append((sender.send, config.vmc.rate))
        if config.websocket.enabled:
            ws = server_module.WebSocketServer(config.websocket, on_control=latest.control)
            ws.start()
            closers.append(ws.stop)
            sinks.append((ws.publish, config.websocket.rate))
            print(f"web viewer: {ws.http_url}", flush=True)
        if not sinks:
            raise ValueError("every output is disabled (--no-vmc and --no-ws): enable at least one to play a take")
        print(
            f"playing {summary.path}: {summary.frames} frames, {summary.duration:.1f} s, tracks "
            f"{', '.join(map(str, sorted(summary.tracks)))}, speed {args.speed:g}{', looping' if args.loop else ''}",
            flush=True,
        )
        result = play_recording(
            args.file, sinks, speed=args.speed, loop=args.loop, duration=args.duration, latest=latest
        )
    finally:
        for close in reversed(closers):
            close()
    print(
        f"played {result['frames']} frames ({result['dropped']} skipped, {result['loops']} loops) in {result['seconds']:.1f} s; "
        f"output frames sent: {result['output_frames']}"
    )
    return 0


def _record_command(args: argparse.Namespace) -> int:
    """``record -o FILE [run options]`` = ``run --record FILE``; the pipeline owns the run itself."""
    from . import pipeline

    if getattr(args, "record", None) and args.record != args.output:
        raise ValueError(f"record: -o {args.output} and --record {args.record} name two files: pass only -o")
    output = Path(args.output).expanduser()
    if output.suffix.lower() != SUFFIX:
        raise ValueError(f"recording file {output} must end in {SUFFIX} (e.g. -o take{SUFFIX}) so sources and tools recognise it")
    if output.exists():
        if not args.overwrite:
            raise FileExistsError(f"recording {output} already exists: choose another file name or pass --overwrite")
        if output.is_dir():
            raise IsADirectoryError(f"recording path {output} is a folder: give a file name ending in {SUFFIX}")
        output.unlink()  # the user asked to replace it
    args.record = str(output)
    return int(pipeline.run_command(args) or 0)
