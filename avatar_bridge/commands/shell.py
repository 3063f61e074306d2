"""The process shell of the long-running commands: stop flag and signals, status line, display check."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

from ..capture import CameraSource, FrameSource
from ..types import Frame

STATUS_INTERVAL_S = 1.0  # status line on a terminal: rewritten in place (\r) this often
STATUS_LOG_INTERVAL_S = 5.0  # stderr not a terminal (log file, pipe): one full line this often


class StopFlag:
    """Set by SIGTERM/SIGINT, the q key, or the end of the run budget."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


def install_signal_handlers(stop: StopFlag) -> Callable[[], None]:
    """SIGTERM and SIGINT set the stop flag (the loop finishes its frame and closes everything)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        stop.set(signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def next_frame(source: FrameSource, stop: StopFlag) -> Frame | None:
    """``source.read()``, but a live camera is polled so Ctrl-C works while it is unplugged."""
    if isinstance(source, CameraSource):
        while not stop.event.is_set():
            frame = source.read(timeout=0.25)
            if frame is not None or source.ended:
                return frame
        return None
    return source.read()


class StatusLine:
    """The live status on stderr. On a terminal it is rewritten in place (``\\r``) every second; on a
    log file or pipe (``run ... 2> log.txt``) ``\\r`` would glue every update into one huge line, so
    there it is a full newline-terminated line every ``STATUS_LOG_INTERVAL_S`` instead."""

    def __init__(self, stream: Any, quiet: bool, now: float):
        self.stream = stream
        self.quiet = quiet
        try:
            self.terminal = bool(stream.isatty())
        except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
            self.terminal = False
        self.interval = STATUS_INTERVAL_S if self.terminal else STATUS_LOG_INTERVAL_S
        self.last = now
        self.line_open = False  # a \r line is on screen without its newline yet

    def update(self, now: float, text: Callable[[], str]) -> None:
        if self.quiet or now - self.last < self.interval:
            return
        self.last = now
        if self.terminal:
            print("\r" + text()[:200], end="", file=self.stream, flush=True)
            self.line_open = True
        else:
            print(text(), file=self.stream, flush=True)

    def finish(self) -> None:
        """End the in-place line so the summary starts on a line of its own."""
        if self.line_open:
            print(file=self.stream, flush=True)
            self.line_open = False


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True
