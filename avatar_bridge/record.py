"""The take file format (``.abrec``): writer, reader and summary. Playback is :mod:`avatar_bridge.playback`.

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

import datetime
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from . import __version__, skeleton
from .files import check_writable, refuse_existing
from .keypoints import COCO_KEYPOINTS
from .types import FramePoses, Pose2D, RigPose

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
    # "performer": the rigs keep the performer's own left and right (takes written since the
    # selfie mirror became a view option); "mirrored": the rigs were stored as the mirror image
    # (older takes, which recorded with retarget.mirror on, the default then). A header without
    # the key is an older take.
    handedness: str = "performer"
    timeline: str = "clock"  # "clock": timestamps on the output clock (live); "video": source PTS (convert)
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
            "handedness": self.handedness,
            "timeline": self.timeline,
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
                handedness=str(data.get("handedness", "mirrored")),
                timeline=str(data.get("timeline", "clock")),
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
        check_writable(self.path, "recording", "create it, make it writable or record elsewhere")
        refuse_existing(self.path, overwrite, "recording")
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


class ChunkReader:
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


def iter_blocks(reader: ChunkReader, calibrations: list | None = None) -> Iterator[_Block]:
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


def frames_of_block(block: _Block, header: RecordingHeader) -> Iterator[RecordedFrame]:
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
        return frames_of_block(block, self.header)

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


def damage_warning(path: Path, damage: str, frames: int) -> None:
    log.warning("%s: %s; read the %d frames before it (the rest of the take is lost)", path, damage, frames)


def read_recording(path: str | Path) -> Recording:
    """Read a whole ``.abrec`` take. A damaged or cut-off end is reported (``damage``) and skipped."""
    path = Path(path)
    reader = ChunkReader(path)
    calibrations: list[dict] = []
    try:
        blocks = list(iter_blocks(reader, calibrations))
    finally:
        reader.close()
    header = reader.header
    frame_dtype, person_dtype, rig_dtype = _frame_dtype(), _person_dtype(len(header.keypoints)), _rig_dtype(len(header.bones))
    frames = np.concatenate([b.frames for b in blocks]) if blocks else np.zeros(0, frame_dtype)
    people = np.concatenate([b.people for b in blocks]) if blocks else np.zeros(0, person_dtype)
    rigs = np.concatenate([b.rigs for b in blocks]) if blocks else np.zeros(0, rig_dtype)
    if reader.damage:
        damage_warning(path, reader.damage, len(frames))
    return Recording(path, header, frames, people, rigs, calibrations, reader.complete, reader.damage)


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
    reader = ChunkReader(path)
    frames = 0
    first = last = None
    tracks: dict[int, int] = {}
    try:
        for block in iter_blocks(reader):
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
        damage_warning(path, reader.damage, frames)
    duration = (last - first) if first is not None else 0.0
    return RecordingSummary(path, reader.header, frames, duration, tracks, reader.complete, reader.damage, reader.size)
