"""Frame sources: camera, video file, image folder, and dispatch to the keypoint-only sources.

Every source has ``width``, ``height``, ``fps``, ``read() -> Frame | None`` (None = ended) and
``close()``, and is a context manager. ``open_source(spec, **options)`` picks one from a string.

Why a reader thread for cameras: a live loop must always work on the newest image. If the pose loop
is slower than the camera, frames the loop never saw are discarded (and counted in
``Frame.dropped``) instead of piling up in a queue and adding latency.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import cv2
import numpy as np

from .types import Frame, FrameSourceBase

log = logging.getLogger(__name__)

DROP_WARN_SHARE = 0.05  # a paced video file dropping more than this share of its frames gets one warning
DROP_WARN_MIN_FRAMES = 30  # ...once at least this many frames have gone by

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
NO_CAMERA_HINT = "pass --source FILE for a video file or --source synthetic for the built-in performer"


class FrameSource(Protocol):
    width: int
    height: int
    fps: float

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc: object) -> None: ...


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"640x360"`` -> (640, 360); None or "" -> None."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT: write it like 640x360") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise ValueError(f"size {text!r} is out of range: width 16 to 7680, height 16 to 4320")
    return w, h


def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (image.shape[1], image.shape[0]) == size:
        return image
    shrink = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def as_bgr_image(image: Any, where: str) -> np.ndarray | None:
    """A decoded frame we can use: HxWx3 uint8. Grey/BGRA frames are converted; junk is refused."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        log.warning("%s: discarded a frame that is not an image (%r)", where, type(image).__name__)
        return None
    if image.dtype != np.uint8:
        log.warning("%s: discarded a frame of dtype %s (expected uint8)", where, image.dtype)
        return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        log.warning("%s: discarded a frame with %d channels", where, image.shape[2])
        return None
    return image


# --- video file ------------------------------------------------------------------------------------


class VideoFileSource(FrameSourceBase):
    """A video file decoded with OpenCV.

    Decoding and resizing always run on a thread, overlapping the consumer's work.
    ``realtime=True`` behaves like a camera: the thread publishes each frame at its time in the
    file (the clock starts at the first ``read()``) into a one-frame slot, so a consumer that falls
    behind gets the newest frame and the ones it missed are counted in ``Frame.dropped``.
    ``realtime=False`` hands out every frame, as fast as they can be decoded (benchmarks).

    Video time: every frame carries ``Frame.pts``, its presentation time in seconds from the
    container (OpenCV's ``CAP_PROP_POS_MSEC`` after decoding it, relative to the first frame), so a
    variable-frame-rate file (phones) is timed as recorded, not by frame number over the average
    rate; ``Frame.index`` is the frame's position in the file (frames skipped while paced leave
    gaps). Realtime pacing follows the PTS: frame p is due at ``start + pts(p)``.

    Timestamps (the "capture time" latencies are measured from): in realtime mode, the moment the
    frame was due, as a camera would have captured it; as fast as possible there is no capture
    clock, so a frame is stamped when the consumer takes it (latency = the pipeline's own work;
    waiting for the decoder is reported as ``grab``).
    A file truncated or corrupt mid-way ends cleanly at the last decodable frame, with a warning; a
    file with no decodable frame at all is refused when opened.
    """

    def __init__(
        self,
        path: str | Path,
        realtime: bool = True,
        loop: bool = False,
        resize: tuple[int, int] | None = None,
        fps: float | None = None,
        start_frame: int = 0,
    ) -> None:
        """``start_frame``: begin at that frame (a seek; ``convert``'s chunks), keeping its index and
        its PTS on the file's own timeline (measured from frame 0)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file {self.path} not found: check the path given to --source")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise ValueError(
                f"video file {self.path} could not be opened: not a video OpenCV can decode, or corrupt; "
                "convert it to H.264 MP4 (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            )
        native_w = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        native_h = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        file_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = float(fps or (file_fps if 1.0 <= file_fps <= 1000.0 else 30.0))
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.resize = resize
        self.width, self.height = resize if resize else (native_w, native_h)
        self.realtime = realtime
        self.loop = loop
        self.decode_failed = False  # True when the file ended before its announced frame count
        self._decoded = 0  # frames decoded in this pass over the file
        self._position = -1  # file position of the newest decoded frame, counted across loops
        self._pts0: float | None = None  # container time of the first frame (ms), the zero of Frame.pts
        self._loop_pts = 0.0  # seconds of video time added by completed loops
        self._last_pts = 0.0  # pts of the newest decoded frame (s)
        self._last_period = 1.0 / self.fps  # pts difference between the last two decoded frames (s)
        self._index = 0  # frames handed out
        self._dropped_total = 0  # realtime: frames skipped because the consumer fell behind
        self._drop_warned = False
        self._start: float | None = None  # pacing clock, started by the first read()
        self._closed = False
        first = self._decode()
        if first is None:
            self._cap.release()
            raise ValueError(f"video file {self.path} has no decodable frames: the file is corrupt or empty")
        if start_frame > 0:  # frame 0 was decoded for the timeline's zero; now seek
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, int(start_frame))
            self._position = int(start_frame) - 1
            self._decoded = int(start_frame)
            self._last_pts = float("-inf")  # no "earlier frame" to compare the first one after the seek with
            first = self._decode()
            if first is None:
                self._cap.release()
                raise ValueError(f"video file {self.path} has no frame {start_frame}: it has {self.frame_count}")
        self._first = first
        self._stop = threading.Event()
        self._started = threading.Event()
        # Hand-over between the decoder thread and read(): a bounded queue (as fast as possible) or a
        # one-frame "newest" slot that the paced thread overwrites (realtime, like a camera).
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._cond = threading.Condition()
        self._slot: tuple[tuple[np.ndarray, int, float], float] | None = None
        self._slot_seq = 0
        self._taken_seq = 0
        self._skipped = 0  # frames the paced thread skipped without decoding (it was late)
        self._ended = False
        target = self._paced_reader if realtime else self._prefetch_reader
        self._thread = threading.Thread(target=target, name=f"decode-{self.path.name}", daemon=True)
        self._thread.start()

    def _read_raw(self) -> tuple[bool, np.ndarray | None]:
        try:
            return self._cap.read()
        except cv2.error as exc:  # a decoder error ends the file like a truncation would
            log.warning("video file %s: decoding failed (%s)", self.path, str(exc).strip().splitlines()[-1])
            return False, None

    def _stamp(self) -> tuple[int, float]:
        """(position, pts seconds) of the frame just grabbed or read, from the container's clock."""
        msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        if self._pts0 is None:
            self._pts0 = msec
        pts = self._loop_pts + (msec - self._pts0) / 1000.0
        if not np.isfinite(pts) or (self._decoded > 1 and pts <= self._last_pts):
            pts = self._last_pts + self._last_period  # a container without usable times: keep the average rate
        if self._decoded > 1:
            self._last_period = pts - self._last_pts
        self._position += 1
        self._last_pts = pts
        return self._position, pts

    def _grab(self) -> bool:
        """Skip one frame without converting it (paced reader, late); keeps position and PTS."""
        try:
            ok = self._cap.grab()
        except cv2.error:
            ok = False
        if ok:
            self._decoded += 1
            self._stamp()
        return ok

    def _decode(self) -> tuple[np.ndarray, int, float] | None:
        """The next frame (resized) with its position and PTS (seconds), rewinding at the end when
        looping; None at the end of the file."""
        ok, image = self._read_raw()
        if not ok and self.loop and self._decoded > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._decoded = 0
            self._loop_pts = self._last_pts + self._last_period
            self._pts0 = None
            ok, image = self._read_raw()
        if not ok:
            if self.frame_count and self._decoded < self.frame_count - 1 and not self.decode_failed:
                self.decode_failed = True
                log.warning(
                    "video file %s ended after %d of %d frames: the file is truncated or corrupt",
                    self.path, self._decoded, self.frame_count,
                )
            return None
        self._decoded += 1
        position, pts = self._stamp()
        return _resize(image, self.resize), position, pts

    def _prefetch_reader(self) -> None:
        """As fast as possible: decode one frame ahead of the consumer (None marks the end)."""
        decoded = self._first
        while not self._stop.is_set():
            while not self._stop.is_set():
                try:
                    self._queue.put(decoded, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if decoded is None:
                return
            decoded = self._decode()

    def _note_drops(self, dropped: int) -> None:
        """Say once, with the fix, when pacing drops more than DROP_WARN_SHARE of a file's frames."""
        self._dropped_total += dropped
        seen = self._index + 1 + self._dropped_total
        if not self._drop_warned and seen >= DROP_WARN_MIN_FRAMES and self._dropped_total > DROP_WARN_SHARE * seen:
            self._drop_warned = True
            log.warning(
                "%s: %d of the first %d frames were dropped because processing is slower than the video's frame rate "
                "(live pacing, like a camera); to turn every frame of a file into motion use avatar-bridge convert, "
                "or lighten the load (--resize 640x360, --config cpu-fast)", self.path.name, self._dropped_total, seen)

    def _paced_reader(self) -> None:
        """Realtime: publish frame p at ``start + pts(p)`` (video time), decoded just before it is due.

        The next frame is decoded as soon as one is published: its due time is only known once it
        is decoded (a variable-frame-rate file can switch from 100 ms to 25 ms frames at any point),
        so decoding one frame ahead is what keeps every due time. A frame the consumer did not take
        before the next was published is overwritten (dropped); when decoding itself falls more than
        a frame interval behind, frames are skipped with ``grab()`` (their PTS still read from the
        container).
        """
        while not self._started.wait(0.1):
            if self._stop.is_set():
                return
        decoded = self._first
        while not self._stop.is_set():
            due = self._start + decoded[2]
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            with self._cond:
                self._slot = (decoded, due)
                self._slot_seq += 1
                self._cond.notify_all()
            # Late by more than one frame interval: skip frames without converting them.
            while time.monotonic() > self._start + self._last_pts + 2 * self._last_period and self._grab():
                with self._cond:
                    self._skipped += 1
            decoded = self._decode()
            if decoded is None:
                with self._cond:
                    self._ended = True
                    self._cond.notify_all()
                return

    def read(self) -> Frame | None:
        if self._closed:
            return None
        if self.realtime:
            with self._cond:
                if self._start is None:
                    self._start = time.monotonic()
                    self._started.set()
                while self._slot_seq == self._taken_seq and not self._ended and not self._closed:
                    if not self._thread.is_alive():  # the decoder stopped without saying so: end
                        break
                    self._cond.wait(0.1)
                if self._slot_seq == self._taken_seq:
                    return None
                dropped = self._slot_seq - self._taken_seq - 1 + self._skipped
                self._skipped = 0
                self._note_drops(dropped)
                self._taken_seq = self._slot_seq
                decoded, stamp = self._slot  # stamp: when the frame was due, i.e. "captured"
        else:
            decoded = None
            while not self._closed:
                try:
                    decoded = self._queue.get(timeout=0.1)
                    break
                except queue.Empty:
                    if not self._thread.is_alive():
                        break
            if decoded is None:
                return None
            stamp, dropped = time.monotonic(), 0
        image, position, pts = decoded
        frame = Frame(position, stamp, self.width, self.height, image=image, dropped=dropped, pts=pts)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self._cap.release()


# --- image folder ----------------------------------------------------------------------------------


class ImageFolderSource(FrameSourceBase):
    """The images of a folder in name order, as frames at ``fps`` (paced when ``realtime``)."""

    def __init__(
        self,
        folder: str | Path,
        fps: float = 30.0,
        realtime: bool = False,
        loop: bool = False,
        resize: tuple[int, int] | None = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} not found")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(
                f"image folder {self.folder} has no images ({', '.join(IMAGE_SUFFIXES)}): "
                "point --source at a folder of frames, a video file or a camera"
            )
        self.fps = float(fps)
        self.realtime = realtime
        self.loop = loop
        self.resize = resize
        first = self._load(self.paths[0])
        if first is None:
            raise ValueError(f"image {self.paths[0]} could not be decoded: the file is corrupt or not an image")
        self.width, self.height = resize if resize else (first.shape[1], first.shape[0])
        self._pos = 0
        self._index = 0
        self._start: float | None = None
        self._closed = False

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)

    def read(self) -> Frame | None:
        dropped = 0
        while not self._closed:
            if self._pos >= len(self.paths):
                if not self.loop:
                    return None
                self._pos = 0
            if self.realtime:
                now = time.monotonic()
                self._start = now if self._start is None else self._start
                due = self._start + self._index / self.fps
                if now < due:
                    time.sleep(due - now)
            path = self.paths[self._pos]
            self._pos += 1
            image = self._load(path)
            if image is None:
                log.warning("image %s could not be decoded: skipped", path)
                dropped += 1
                continue
            image = _resize(image, self.resize or (self.width, self.height))
            # An image folder has no clock of its own: image i is at i / fps.
            frame = Frame(self._index, time.monotonic(), self.width, self.height, image=image, dropped=dropped,
                          pts=self._index / self.fps)
            self._index += 1
            return frame
        return None

    def close(self) -> None:
        self._closed = True


# --- camera ----------------------------------------------------------------------------------------


def _open_video_capture(device: int | str) -> cv2.VideoCapture:
    return cv2.VideoCapture(device)


class CameraSource(FrameSourceBase):
    """A live camera (index, /dev/video* path or stream URL) read on its own thread.

    ``read()`` returns the newest frame; frames the consumer was too slow to take are counted in
    ``Frame.dropped``. When the camera stops delivering (unplugged, driver hiccup) the reader
    reopens it with exponential backoff; ``connected`` is False meanwhile, and ``read()`` keeps
    waiting (or returns None after ``give_up_after`` seconds without frames, when set).
    """

    def __init__(
        self,
        device: int | str,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        resize: tuple[int, int] | None = None,
        failures_before_reopen: int = 5,
        backoff: tuple[float, float] = (0.25, 4.0),
        give_up_after: float | None = None,
        open_capture: Callable[[int | str], Any] = _open_video_capture,
    ) -> None:
        self.device = device
        self.requested = (int(width), int(height), float(fps))
        self._open_capture = open_capture
        self.failures_before_reopen = failures_before_reopen
        self.backoff = backoff
        self.give_up_after = give_up_after
        self.resize = resize
        self.reopen_count = 0
        cap = self._open()
        if cap is None:
            raise RuntimeError(f"camera {device!r} could not be opened (no camera found or it is busy): {NO_CAMERA_HINT}")
        self._cap = cap
        granted_w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or width
        granted_h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or height
        granted_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or fps
        self.granted = (granted_w, granted_h, granted_fps)
        log.info("camera %r: requested %dx%d @ %.1f fps, granted %dx%d @ %.1f fps", device, *self.requested, *self.granted)
        self.width, self.height = resize if resize else (granted_w, granted_h)
        self.fps = granted_fps
        self.connected = True
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._latest_time = time.monotonic()  # the open counts as the last sign of life
        self.gave_up = False
        self._latest_seq = 0  # frames captured so far
        self._taken_seq = 0  # seq of the last frame handed out
        self._index = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name=f"camera-{device}", daemon=True)
        self._thread.start()

    def _open(self):
        cap = self._open_capture(self.device)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        w, h, fps = self.requested
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a driver-side queue would add latency
        return cap

    def _reader(self) -> None:
        failures = 0
        where = f"camera {self.device!r}"
        while not self._stop.is_set():
            try:
                ok, image = self._cap.read()
            except cv2.error as exc:  # a driver error must not kill the reader: treat it as a failed read
                log.warning("%s: read failed (%s)", where, str(exc).strip().splitlines()[-1])
                ok, image = False, None
            image = as_bgr_image(image, where) if ok else None
            if image is None:
                failures += 1
                if failures >= self.failures_before_reopen:
                    self._reconnect()
                    failures = 0
                else:
                    self._stop.wait(0.01)
                continue
            failures = 0
            stamp = time.monotonic()
            image = _resize(image, self.resize or (self.width, self.height))
            with self._cond:
                self._latest = image
                self._latest_time = stamp
                self._latest_seq += 1
                self._cond.notify_all()

    def _reconnect(self) -> None:
        """Release and reopen the camera, waiting longer after each failed attempt."""
        with self._cond:
            self.connected = False
            self._cond.notify_all()
        log.warning("camera %r stopped delivering frames: reopening", self.device)
        self._cap.release()
        delay = self.backoff[0]
        while not self._stop.is_set():
            if self._stop.wait(delay):
                return
            cap = self._open()
            if cap is not None:
                self._cap = cap
                self.reopen_count += 1
                log.info("camera %r reopened", self.device)
                with self._cond:
                    self.connected = True
                return
            delay = min(delay * 2.0, self.backoff[1])

    @property
    def ended(self) -> bool:
        """True once closed, or after ``give_up_after`` seconds without a frame."""
        return self._stop.is_set() or self.gave_up

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not handed out yet; waits for one.

        None when closed or given up (see :attr:`ended`), or when ``timeout`` seconds passed first
        (so a caller can check its own stop flag while the camera is away).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._latest_seq == self._taken_seq:
                now = time.monotonic()
                if self._stop.is_set():
                    return None
                if self.give_up_after is not None and now - self._latest_time > self.give_up_after:
                    self.gave_up = True
                    log.warning("camera %r: no frame for %.1f s, giving up", self.device, self.give_up_after)
                    return None
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(0.1)
            if self._stop.is_set():
                return None
            dropped = self._latest_seq - self._taken_seq - 1
            self._taken_seq = self._latest_seq
            image, stamp = self._latest, self._latest_time
        frame = Frame(self._index, stamp, self.width, self.height, image=image, dropped=dropped)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self._cap.release()


# --- dispatch --------------------------------------------------------------------------------------


def _camera_device(spec: str) -> int | str | None:
    """The camera a spec names, or None when it names something else."""
    text = spec.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("/dev/video"):
        return text
    if "://" in text:  # rtsp://, http:// streams behave like cameras: live, read on a thread
        return text
    return None


ROTATIONS = (0, 90, 180, 270)


def set_opencv_logging(verbose: bool) -> None:
    """OpenCV's own log (``[ WARN:0@1.6] global cap_v4l.cpp ...``, about ten lines for a missing
    camera, printed above our one-line error) is silent unless ``verbose`` (``--verbose``), where it
    shows warnings and errors. Uses ``cv2.utils.logging.setLogLevel``; ``OPENCV_LOG_LEVEL`` and
    ``OPENCV_FFMPEG_LOGLEVEL`` are set too for backends initialised later. A level the user set in the
    environment is kept."""
    if "OPENCV_LOG_LEVEL" in os.environ and not verbose:
        return
    level = "WARNING" if verbose else "SILENT"
    os.environ["OPENCV_LOG_LEVEL"] = level
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "24" if verbose else "-8")  # AV_LOG_WARNING / AV_LOG_QUIET
    try:
        cv2.utils.logging.setLogLevel(getattr(cv2.utils.logging, f"LOG_LEVEL_{level}"))
    except AttributeError:  # an OpenCV build without the logging module
        pass


def orient_points(points: np.ndarray, size: tuple[int, int], rotate: int, flip: bool) -> np.ndarray:
    """Pixel coordinates ``points`` (..., 2) of an image of ``size`` (w, h) after :func:`orient_frame`."""
    if rotate not in ROTATIONS:
        raise ValueError(f"rotate {rotate!r}: choose 0, 90, 180 or 270 (degrees clockwise)")
    w, h = size
    x, y = points[..., 0], points[..., 1]
    if rotate == 90:
        x, y, w, h = (h - 1) - y, x, h, w
    elif rotate == 180:
        x, y = (w - 1) - x, (h - 1) - y
    elif rotate == 270:
        x, y, w, h = y, (w - 1) - x, h, w
    if flip:
        x = (w - 1) - x
    return np.stack([x, y], axis=-1).astype(points.dtype, copy=False)


def rotate_image(image: np.ndarray, rotate: int) -> np.ndarray:
    """``image`` (H, W[, C]) turned ``rotate`` degrees clockwise (0, 90, 180 or 270) with ``cv2.rotate``."""
    code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}.get(rotate)
    return cv2.rotate(image, code) if code is not None else image


def orient_frame(frame: Frame, rotate: int = 0, flip: bool = False) -> Frame:
    """Turn ``frame`` by ``rotate`` degrees clockwise (0, 90, 180, 270), then mirror it left-right if
    ``flip``: for a camera mounted sideways or upside down, or a mirrored feed. Applied in place
    before detection to the image (``cv2.rotate``/``cv2.flip``), its size and, for keypoint sources,
    the ``truth`` keypoints and boxes; returns the frame. ``rotate=0, flip=False`` leaves it as is.
    """
    if not rotate and not flip:
        return frame
    if rotate not in ROTATIONS:
        raise ValueError(f"rotate {rotate!r}: choose 0, 90, 180 or 270 (degrees clockwise)")
    size = (frame.width, frame.height)  # before turning: what the keypoints refer to
    if isinstance(frame.image, np.ndarray) and frame.image.ndim >= 2:
        size = (frame.image.shape[1], frame.image.shape[0])
        image = rotate_image(frame.image, rotate)
        frame.image = cv2.flip(image, 1) if flip else image
    if rotate in (90, 270):
        frame.width, frame.height = size[1], size[0]
    else:
        frame.width, frame.height = size
    for person in frame.truth.people if frame.truth is not None else []:
        person.keypoints = orient_points(np.asarray(person.keypoints, np.float32), size, rotate, flip)
        if person.box is not None:
            corners = orient_points(np.asarray(person.box, np.float32).reshape(2, 2), size, rotate, flip)
            person.box = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
    return frame


def open_source(spec: str | int, **options: Any) -> FrameSource:
    """Open the frame source a ``--source`` value names.

    ``spec``: a camera index (``0``) or device path (``/dev/video0``) or stream URL, a video file, a
    folder of images, ``synthetic``, a ``.bvh`` mocap file, an AMP humanoid ``.npy`` clip or a DeepMimic humanoid3d ``.txt`` motion, or an ``.abrec`` recording. Options
    (all optional): ``width``, ``height``, ``fps`` (camera request / synthetic size), ``realtime``,
    ``loop``, ``seed``, ``duration`` and ``render`` (synthetic only: stop after that many seconds,
    draw a stick-figure image), ``resize`` ((w, h) applied to decoded images).
    """
    width = int(options.get("width", 1280))
    height = int(options.get("height", 720))
    fps = float(options.get("fps", 30.0))
    realtime = bool(options.get("realtime", True))
    loop = bool(options.get("loop", False))
    resize = options.get("resize")
    if isinstance(resize, str):
        resize = parse_size(resize)
    spec_text = str(spec).strip()
    if not spec_text:
        raise ValueError("empty --source: " + "pass a camera index (0), a video file, an image folder, a .bvh file, an .abrec recording or 'synthetic'")

    if spec_text == "synthetic":
        from .synthetic import SyntheticSource

        return SyntheticSource(
            width=width, height=height, fps=fps, seed=int(options.get("seed", 0)),
            duration=options.get("duration"), realtime=realtime, render=bool(options.get("render", False)),
        )
    device = spec if isinstance(spec, int) else _camera_device(spec_text)
    if device is not None:
        if isinstance(device, str) and device.startswith("/dev/") and not os.path.exists(device):
            raise RuntimeError(f"camera {device} does not exist (no camera found): {NO_CAMERA_HINT}")
        return CameraSource(device, width=width, height=height, fps=fps, resize=resize)

    path = Path(spec_text).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"source {spec_text!r} not found: pass a camera index (0), a video file, an image folder, "
            "a .bvh file, an .abrec recording or 'synthetic'"
        )
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        from .mocap import MocapSource

        return MocapSource(path, fps=fps, realtime=realtime, loop=loop)
    if suffix in (".npy", ".txt"):  # an AMP humanoid clip or a DeepMimic motion: they travel, so the camera is fitted
        from .mocap import MocapSource

        return MocapSource(path, fps=fps, realtime=realtime, loop=loop, camera="fit")
    if suffix == ".abrec":
        from .playback import PlaybackSource

        return PlaybackSource(path, realtime=realtime, loop=loop)
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, realtime=realtime, loop=loop, resize=resize)
    if suffix in IMAGE_SUFFIXES:
        raise ValueError(f"source {path} is a single image: put images in a folder and pass the folder")
    return VideoFileSource(path, realtime=realtime, loop=loop, resize=resize)
