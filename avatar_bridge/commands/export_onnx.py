"""``avatar-bridge export-onnx``: a SimpleBaseline checkpoint to ONNX, checked against torch (see :mod:`avatar_bridge.export_onnx`)."""

from __future__ import annotations

import argparse

import torch

from ..export_onnx import INPUT_NAME, OUTPUT_NAME, export_checked
from ..model import ARCHITECTURES, build_model, parse_input_size
from ..weights import load_pretrained_with_meta, registry_name


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--model", default="", help="registry name or .pth checkpoint; 'random' for untrained weights "
                        "(default: the registry checkpoint of --arch at --input-size)")
    parser.add_argument("--arch", default="resnet50", choices=ARCHITECTURES, help="architecture of a .pth / random model")
    parser.add_argument("--input-size", default="256x192", help="HEIGHTxWIDTH, e.g. 256x192 or 384x288")
    parser.add_argument("--keypoints", type=int, default=17, help="heatmap count of a random model (a .pth's own count is used)")
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="max allowed |torch - onnxruntime| on the check, relative to the largest |heatmap|")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="allow downloading a named checkpoint")


def run_command(args: argparse.Namespace) -> int:
    size = parse_input_size(args.input_size)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    if args.model == "random":
        model = build_model(args.arch, args.keypoints)
    else:
        name = args.model or registry_name(args.arch, size)
        model, meta = load_pretrained_with_meta(name, args.arch, args.keypoints, allow_download=args.download)
        size = meta.input_size or size  # the checkpoint's own size (registry, config, file name) wins
    path, diff, scale = export_checked(model, args.out, size, args.opset, args.tolerance)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {model.arch}, input {INPUT_NAME} Nx3x{size[0]}x{size[1]}, "
          f"output {OUTPUT_NAME}); max |torch - onnxruntime| = {diff:.2e} on heatmaps up to {scale:.2g}")
    return 0
