"""``avatar-bridge play TAKE.abrec``: replay a take through the same outputs as a live run."""

from __future__ import annotations

import argparse

from ..config import DEFAULT_PRESET, load_config
from ..outputs import Outputs
from ..playback import PlaybackSampler, play_recording
from ..record import summarize_recording
from .options import add_vmc_arguments, add_ws_arguments, apply_vmc_arguments, apply_ws_arguments


def configure_parser(parser: argparse.ArgumentParser, command: str = "play") -> None:
    parser.add_argument("file", metavar="FILE", help="recording (.abrec) to play")
    parser.add_argument("--config", default=None, metavar="PRESET|FILE",
                        help=f"TOML config for the outputs (default: the {DEFAULT_PRESET} preset, as for run)")
    parser.add_argument("--speed", type=float, default=1.0, help="time scale: 2 = twice as fast (default 1)")
    parser.add_argument("--loop", action="store_true", help="start again at the end (stop with Ctrl+C)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long (default: the whole take)")
    add_vmc_arguments(parser)
    add_ws_arguments(parser)


def run_command(args: argparse.Namespace) -> int:
    config = load_config(args.config or DEFAULT_PRESET)
    apply_vmc_arguments(args, config.vmc)
    apply_ws_arguments(args, config.websocket)
    config.validate()
    summary = summarize_recording(args.file)
    summary.require_person()
    sampler = PlaybackSampler()
    # Takes keep the performer's left and right and get the selfie mirror at the view, like a live
    # run; older takes stored the mirror image already and play as they did.
    outputs = Outputs(config, sampler, view_mirror=config.retarget.mirror and summary.header.handedness == "performer")
    try:
        outputs.open_network()
        if not outputs.sinks:
            raise ValueError("every output is disabled (--no-vmc and --no-ws): enable at least one to play a take")
        print(
            f"playing {summary.path}: {summary.frames} frames, {summary.duration:.1f} s, tracks "
            f"{', '.join(map(str, sorted(summary.tracks)))}, speed {args.speed:g}{', looping' if args.loop else ''}",
            flush=True,
        )
        result = play_recording(args.file, outputs.sinks, speed=args.speed, loop=args.loop, duration=args.duration,
                                latest=sampler)
    finally:
        outputs.close()
    print(
        f"played {result['frames']} frames ({result['dropped']} skipped, {result['loops']} loops) in {result['seconds']:.1f} s; "
        f"output frames sent: {result['output_frames']}"
    )
    return 0
