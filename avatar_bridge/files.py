"""Output files: the rules every writer follows (takes, BVH, convert's outputs, ONNX, calibrations):
never overwrite unasked, check the folder before the work, never leave half a file under the real name."""

from __future__ import annotations

import os
from pathlib import Path


def refuse_existing(path: str | Path, overwrite: bool, what: str = "") -> None:
    """Raise FileExistsError when ``path`` exists and ``overwrite`` is False; nothing is touched.

    ``what`` names the kind of file in the message (``"recording"``, ``"BVH file"``). The message is
    one line ending with the fix: ``... already exists: choose another name or pass --overwrite``.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what + ' ' if what else ''}{path} already exists: choose another name or pass --overwrite")


def check_writable(path: str | Path, what: str, fix: str) -> None:
    """Raise before any work when the folder ``path`` goes into is missing or cannot be written
    (a read-only mount, no permission), so a long run never ends in a file it cannot save.

    FileNotFoundError / PermissionError, one line: ``folder F for WHAT NAME does not exist: FIX``.
    """
    path = Path(path).expanduser()
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} for {what} {path.name} does not exist: {fix}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"folder {folder} for {what} {path.name} is not writable: {fix}")


class OutputWriteError(OSError):
    """A file could not be written: ``str()`` is the one-line message, ``reason`` the system's words
    (``No space left on device``), ``path`` the file."""

    def __init__(self, what: str, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {what} {path}: {reason}: free disk space or choose another folder")
        self.path, self.reason = path, reason


def write_text_atomic(path: str | Path, text: str, what: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed over ``path`` only when
    complete: a full disk or a failed write leaves no half file under the real name.

    :class:`OutputWriteError` (an OSError), one line: ``cannot write WHAT PATH: REASON: free disk
    space or choose another folder``.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputWriteError(what, path, exc.strerror or str(exc)) from None


def default_file_mode(path: str | Path) -> None:
    """Give a file made with ``tempfile.mkstemp`` (mode 0600) the mode a plain ``open`` would have
    (0666 less the umask), before it is renamed to its final name: an exported model or a
    downloaded checkpoint is readable like any other output (found by a new user: 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
