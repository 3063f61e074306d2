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
    ) -> None:
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
        self._index = 0  # frames handed out
        self._dropped_total = 0  # realtime: frames skipped because the consumer fell behind
        self._drop_warned = False
        self._start: float | None = None  # pacing clock, started by the first read()
        self._closed = False
        first = self._decode()
        if first is None:
            self._cap.release()
            raise ValueError(f"video file {self.path} has no decodable frames: the file is corrupt or empty")
        self._first = first
        self._stop = threading.Event()
        self._started = threading.Event()
        # Hand-over between the decoder thread and read(): a bounded queue (as fast as possible) or a
        # one-frame "newest" slot that the paced thread overwrites (realtime, like a camera).
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, float] | None = None
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

    def _decode(self) -> np.ndarray | None:
        """The next frame (resized), rewinding at the end when looping; None at the end of the file."""
        ok, image = self._read_raw()
        if not ok and self.loop and self._decoded > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._decoded = 0
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
        return _resize(image, self.resize)

    def _prefetch_reader(self) -> None:
        """As fast as possible: decode one frame ahead of the consumer (None marks the end)."""
        image = self._first
        while not self._stop.is_set():
            while not self._stop.is_set():
                try:
                    self._queue.put(image, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if image is None:
                return
            image = self._decode()

    def _note_drops(self, dropped: int) -> None:
        """Say once, with the fix, when pacing drops more than DROP_WARN_SHARE of a file's frames."""
        self._dropped_total += dropped
        seen = self._index + 1 + self._dropped_total
        if not self._drop_warned and seen >= DROP_WARN_MIN_FRAMES and self._dropped_total > DROP_WARN_SHARE * seen:
            self._drop_warned = True
            log.warning(
                "%s: %d of the first %d frames were dropped because processing is slower than the video's frame rate "
                "(live pacing, like a camera); to process every frame of a file use --fast, or lighten the load "
                "(--resize 640x360, --config cpu-fast)", self.path.name, self._dropped_total, seen)

    def _paced_reader(self) -> None:
        """Realtime: publish frame p at start + p / fps, decoded just before it is due.

        Decoding starts about 1.5 decode-times before the frame is due, when a consumer that keeps up
        is idle, so it neither adds latency nor competes with the consumer's work. A frame the
        consumer did not take before the next was published is overwritten (dropped); when decoding
        itself falls more than a frame behind, frames are skipped with ``grab()``.
        """
        while not self._started.wait(0.1):
            if self._stop.is_set():
                return
        image, position, period = self._first, 0, 1.0 / self.fps
        decode_s = 0.005  # running estimate of one decode + resize
        while not self._stop.is_set():
            due = self._start + position * period
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            with self._cond:
                self._slot = (image, due)
                self._slot_seq += 1
                self._cond.notify_all()
            position += 1
            while time.monotonic() > self._start + (position + 1) * period and self._cap.grab():
                self._decoded += 1  # late: skip a frame without converting it
                position += 1
                with self._cond:
                    self._skipped += 1
            delay = self._start + position * period - 1.5 * decode_s - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            t0 = time.perf_counter()
            image = self._decode()
            decode_s = 0.8 * decode_s + 0.2 * (time.perf_counter() - t0)
            if image is None:
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
                image, stamp = self._slot  # stamp: when the frame was due, i.e. "captured"
        else:
            image = None
            while not self._closed:
                try:
                    image = self._queue.get(timeout=0.1)
                    break
                except queue.Empty:
                    if not self._thread.is_alive():
                        break
            if image is None:
                return None
            stamp, dropped = time.monotonic(), 0
        frame = Frame(self._index, stamp, self.width, self.height, image=image, dropped=dropped)
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
            frame = Frame(self._index, time.monotonic(), self.width, self.height, image=image, dropped=dropped)
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


def open_source(spec: str | int, **options: Any) -> FrameSource:
    """Open the frame source a ``--source`` value names.

    ``spec``: a camera index (``0``) or device path (``/dev/video0``) or stream URL, a video file, a
    folder of images, ``synthetic``, a ``.bvh`` mocap file or an AMP humanoid ``.npy`` clip, or an ``.abrec`` recording. Options
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
    if suffix == ".npy":  # an AMP humanoid clip; these travel across a room, so the camera is fitted to it
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
