"""``avatar-bridge record -o TAKE.abrec [run options]``: ``run`` plus a take file, with a summary at the end."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..record import SUFFIX, summarize_recording
from . import run
from ..files import refuse_existing
from .options import add_run_arguments


def configure_parser(parser: argparse.ArgumentParser, command: str = "record") -> None:
    add_run_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="TAKE.abrec", help="recording file to write")
    # --overwrite comes with run's options (it replaces the -o recording and a --bvh file)


def run_command(args: argparse.Namespace) -> int:
    if getattr(args, "record", None) and args.record != args.output:
        raise ValueError(f"record: -o {args.output} and --record {args.record} name two files: pass only -o")
    output = Path(args.output).expanduser()
    if output.suffix.lower() != SUFFIX:
        raise ValueError(f"recording file {output} must end in {SUFFIX} (e.g. -o take{SUFFIX}) so sources and tools recognise it")
    if output.is_dir():
        raise IsADirectoryError(f"recording path {output} is a folder: give a file name ending in {SUFFIX}")
    refuse_existing(output, bool(args.overwrite))
    # With --overwrite the old take is replaced only when recording starts (the writer opens it after
    # the source and the models), so a run that fails before that leaves it as it was.
    args.record = str(output)
    status = int(run.run_command(args) or 0)
    if output.is_file():
        summary = summarize_recording(output)
        people = ", ".join(f"#{tid} {count}" for tid, count in sorted(summary.tracks.items())) or "none"
        print(f"wrote {output}: {summary.frames} frames, {summary.duration:.1f} s, people (rig frames) {people}, "
              f"{summary.size_bytes / 1e6:.2f} MB")
    return status
