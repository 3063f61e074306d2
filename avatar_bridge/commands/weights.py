"""``avatar-bridge weights [list|download NAMES]``: the named pretrained checkpoints (see :mod:`avatar_bridge.weights`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..weights import REGISTRY, default_weights_dir, fetch


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "download"), default="list",
                        help="list the named checkpoints (default) or download some")
    parser.add_argument("names", nargs="*", help="checkpoint names to download (default: all)")
    parser.add_argument("--dir", default="", help="cache folder (default: torch hub cache)")


def run_command(args: argparse.Namespace) -> int:
    folder = Path(args.dir) if args.dir else default_weights_dir()
    if args.action == "list":
        print(f"{'name':36} {'arch':12} {'input':8} {'COCO AP':>7}  cached  file")
        for info in REGISTRY.values():
            cached = "yes" if (folder / info.filename).is_file() else "no"
            print(f"{info.name:36} {info.arch:12} {info.input_size[0]}x{info.input_size[1]:<4} {info.coco_ap:7.1f}  {cached:6}  {info.url}")
        print(f"cache: {folder}")
        return 0
    for name in args.names or list(REGISTRY):
        path = fetch(name, folder, allow_download=True)
        print(f"{name}: {path}")
    return 0


