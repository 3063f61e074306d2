"""``avatar-bridge export-bvh TAKE.abrec -o OUT.bvh``: one person of a take as a BVH file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bvh import BvhExport, write_bvh
from ..record import Recording, RigTrack, read_recording
from ..skeleton import mirror_motion
from ..files import refuse_existing


def configure_parser(parser: argparse.ArgumentParser, command: str = "export-bvh") -> None:
    parser.add_argument("file", metavar="FILE", help="recording (.abrec) to export")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.bvh", help="BVH file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.bvh if it exists (default: refuse and touch nothing)")
    parser.add_argument("--track", type=int, default=None, metavar="ID", help="person to export (default: the one with the most frames)")
    parser.add_argument("--fps", type=float, default=30.0, help="BVH frame rate; the take is resampled with slerp (default 30)")
    parser.add_argument("--bones", choices=("body", "full"), default="body", help="body = the bones COCO-17 drives; full adds fingers, eyes, jaw (default body)")
    parser.add_argument("--units", choices=("cm", "m"), default="cm", help="BVH length unit (default cm; import into Blender with scale 0.01)")
    parser.add_argument("--mirror", action="store_true",
                        help="write the mirror image (the selfie view: the avatar's left moves with your right); "
                             "default: the performer's own left and right")


def export_bvh(
    path: str | Path, output: str | Path, *, track: int | None = None, fps: float = 30.0, bones: str = "body",
    units: str = "cm", overwrite: bool = False, mirror: bool = False,
) -> tuple[Recording, RigTrack, BvhExport]:
    """Export one person of a take to BVH (see :func:`avatar_bridge.bvh.write_bvh`).

    The BVH keeps the performer's own left and right (a take whose header says it stored the
    mirror image is mirrored back); ``mirror`` writes the selfie mirror image instead.

    Raises FileExistsError when ``output`` exists and ``overwrite`` is False (nothing is touched),
    ValueError for an fps outside 1-1000, :class:`avatar_bridge.record.RecordingError` for a bad take.
    """
    if not 1.0 <= fps <= 1000.0:
        raise ValueError(f"--fps {fps} is out of range: use 1 to 1000 frames per second")
    output = Path(output)
    refuse_existing(output, overwrite)
    recording = read_recording(path)
    rig = recording.rig_track(track)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"folder {output.parent} for {output.name} does not exist: create it or change -o")
    hips, rotations = rig.hips, rig.rotations
    if (recording.header.handedness == "mirrored") != bool(mirror):
        hips, rotations = mirror_motion(hips, rotations)
    export = write_bvh(output, rig.timestamps, hips, rotations, fps=fps, bones=bones, units=units, offsets=rig.rest_offsets)
    return recording, rig, export


def run_command(args: argparse.Namespace) -> int:
    recording, rig, export = export_bvh(args.file, args.output, track=args.track, fps=args.fps, bones=args.bones,
                                        units=args.units, overwrite=args.overwrite, mirror=args.mirror)
    note = "" if recording.damage is None else f" (recording damaged: {recording.damage}; exported what it holds)"
    print(
        f"wrote {export.path}: track {rig.track_id}, {export.frames} frames at {export.fps:g} fps "
        f"({export.duration:.2f} s), {export.joints} joints, {export.units}{note}"
    )
    return 0
