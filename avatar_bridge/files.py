"""Output files: the one overwrite rule every writer follows (takes, BVH, convert's outputs, ONNX)."""

from __future__ import annotations

from pathlib import Path


def refuse_existing(path: str | Path, overwrite: bool, what: str = "") -> None:
    """Raise FileExistsError when ``path`` exists and ``overwrite`` is False; nothing is touched.

    ``what`` names the kind of file in the message (``"recording"``, ``"BVH file"``). The message is
    one line ending with the fix: ``... already exists: choose another name or pass --overwrite``.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what + ' ' if what else ''}{path} already exists: choose another name or pass --overwrite")
