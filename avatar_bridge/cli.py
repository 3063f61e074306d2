"""The ``avatar-bridge`` command line.

Each subcommand lives in the module of its stage, which defines ``configure_parser(parser)`` and
``run_command(args) -> int``. Modules are imported only when their subcommand runs, so
``avatar-bridge --help`` stays fast and one broken optional dependency cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("avatar_bridge.commands.run", "capture, estimate pose, retarget and stream to avatar clients"),
    "bench": ("avatar_bridge.bench.live", "measure the live pipeline: fps, per-stage and latency percentiles"),
    "bench-pose": ("avatar_bridge.bench.pose", "measure pose-model speed: ms per crop by backend and batch size"),
    "eval": ("avatar_bridge.commands.eval", "COCO keypoint AP of a pose model on an annotation file"),
    "export-onnx": ("avatar_bridge.commands.export_onnx", "export a SimpleBaseline model to ONNX"),
    "weights": ("avatar_bridge.commands.weights", "list or download the named pretrained checkpoints"),
    "bench-smoothing": ("avatar_bridge.bench.smoothing", "compare stabilizers against mocap ground truth"),
    "bench-retarget": ("avatar_bridge.bench.retarget", "bone-direction error of the retargeter against mocap"),
    "train-depth-prior": ("avatar_bridge.commands.train_depth_prior", "train the retargeter's learned depth-sign prior on mocap clips"),
    "bench-stream": ("avatar_bridge.bench.stream", "output costs and delivery delay of VMC and WebSocket on loopback"),
    "bench-soak": ("avatar_bridge.bench.soak", "soak test: 20 viewers, 2 VMC targets and a recording for minutes; memory, latency, fps"),
    "bench-convert": ("avatar_bridge.bench.convert", "convert's frames/s against the model-bound limit, and --workers scaling"),
    "record": ("avatar_bridge.commands.record", "record a take to a file (same options as run)"),
    "play": ("avatar_bridge.commands.play", "play a recorded take through the outputs"),
    "export-bvh": ("avatar_bridge.commands.export_bvh", "export a recorded take to BVH"),
    "convert": ("avatar_bridge.commands.convert", "video files, folders or takes to BVH, JSON Lines and takes: every frame, in video time"),
}


def limit_blas_threads() -> None:
    """Keep numpy's BLAS to one thread for the whole process.

    Its work here is tiny matrices (Kalman filters, 3x3 geometry); a BLAS thread pool only fights the
    inference threads for the cores. Measured with NumPy 1.26 beside ONNX Runtime on 2 cores: the
    pipeline went from 65 to 162 frames/s. threadpoolctl limits libraries already loaded, hence the
    imports first: numpy's, scipy's and the OpenBLAS that OpenCV's wheel bundles (three pools, each
    sized to every core by default).
    """
    import cv2  # noqa: F401  (opencv-python ships its own OpenBLAS)
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401  (scipy loads its own BLAS)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-bridge", description="Webcam motion capture for avatars.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # Parse only up to the subcommand; the stage module parses the rest.
    known, rest = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    limit_blas_threads()
    from .capture import set_opencv_logging

    set_opencv_logging(known.verbose)  # OpenCV's own warnings only with --verbose
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"avatar-bridge {known.command}", description=help_text)
    module.configure_parser(sub_parser, known.command)
    args = sub_parser.parse_args(rest)
    args.command = known.command
    try:
        return int(module.run_command(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        # Every stage raises errors whose message says what is wrong and how to fix it.
        if known.verbose:
            raise
        print(f"avatar-bridge {known.command}: error: {exc}", file=sys.stderr)
        return 2
