"""``avatar-bridge eval``: COCO keypoint AP of a pose model on an annotation file (see :mod:`avatar_bridge.evaluate`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..evaluate import AREA_FROM_BOX, evaluate, parse_keypoints, parse_sigmas
from ..keypoints import OKS_SIGMAS
from ..pose import DECODERS


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--annotations", required=True, help="COCO keypoints annotation JSON")
    parser.add_argument("--images", required=True, help="folder holding the annotation file's images")
    parser.add_argument("--boxes", default="gt", help="gt (ground-truth boxes) or a COCO detection results JSON")
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop")
    parser.add_argument("--decode", choices=DECODERS, default=None,
                        help="heatmap decoder (default reference: MMPose's conventions, see docs/pose.md)")
    parser.add_argument("--keypoints", default=None, help="evaluate only these keypoints: indices, ranges or names, "
                        "e.g. 5-16 or left_wrist,right_wrist")
    parser.add_argument("--sigmas", default=None, help="comma-separated OKS sigmas, one per keypoint (default COCO's)")
    parser.add_argument("--model", default=None, help="registry name, .pth or .onnx (default: config's pose.model)")
    parser.add_argument("--arch", default=None, help="architecture of a .pth checkpoint (resnet50, mobilenetv2, ...)")
    parser.add_argument("--config", default=None, help="preset name or TOML file for the [pose] section")
    parser.add_argument("--device", default=None, help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (0 = library default)")
    parser.add_argument("--out", default=None, help="write the keypoint results JSON here")


def run_command(args: argparse.Namespace) -> int:
    from ..config import load_config, validate_section
    from ..pose import load_estimator

    pose = load_config(args.config).pose
    for key in ("model", "arch", "device", "threads", "decode"):
        if getattr(args, key) is not None:
            setattr(pose, key, getattr(args, key))
    if args.flip:
        pose.flip_test = True
    validate_section(pose, "pose")
    try:  # before the model loads (seconds): the scoring needs it at the end
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise RuntimeError("pycocotools is not installed: pip install 'avatar-bridge[eval]' (or -e '.[eval]')") from None
    estimator = load_estimator(pose)
    num = estimator.backend.num_keypoints if hasattr(estimator.backend, "num_keypoints") else len(OKS_SIGMAS)
    subset = parse_keypoints(args.keypoints, num) if args.keypoints else None
    sigmas = parse_sigmas(args.sigmas, num) if args.sigmas else None
    outcome = evaluate(estimator, args.annotations, args.images, args.boxes, subset, sigmas)
    print(f"model {pose.model or pose.arch}  boxes {args.boxes}  flip {pose.flip_test}  decode {pose.decode}  "
          f"people {outcome.people}  images {outcome.images}  {outcome.seconds:.2f} s"
          + (f"  keypoints {','.join(map(str, subset))}" if subset else ""))
    if outcome.skipped:
        print(f"skipped {len(outcome.skipped)} missing or unreadable images (not evaluated): "
              + ", ".join(outcome.skipped[:5]) + (" ..." if len(outcome.skipped) > 5 else ""))
    if outcome.areas_computed:
        print(f"{outcome.areas_computed} annotations had no area: used {AREA_FROM_BOX} x box area")
    print("  ".join(f"{name} {outcome.metrics[name]:.3f}" for name in ("AP", "AP50", "AP75", "AR")))
    if args.out:
        Path(args.out).write_text(json.dumps(outcome.results), encoding="utf-8")
        print(f"results: {args.out}")
    return 0
