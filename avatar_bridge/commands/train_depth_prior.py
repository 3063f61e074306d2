"""``avatar-bridge train-depth-prior --clip CLIPS -o prior.npz``: train the retargeter's learned
depth-sign prior (:mod:`avatar_bridge.depth_prior`) on your own mocap clips.

Use it with ``retarget.depth_prior = "prior.npz"`` in the config. ``--validate`` clips are left out
of training and scored: the share of limb segments whose side (towards or away from the camera) the
prior gets right over random views, the figure to compare before trusting a new prior.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.clips import CLIP_HELP, check_clip_paths
from ..depth_prior_training import TrainingSettings, clip_samples, pool_samples, sign_accuracy, train
from ..files import refuse_existing


def configure_parser(parser: argparse.ArgumentParser, command: str = "train-depth-prior") -> None:
    defaults = TrainingSettings()
    parser.add_argument("--clip", dest="clip", type=Path, nargs="+", action="extend", metavar=CLIP_HELP, default=None,
                        help="mocap clips to learn from: BVH, AMP humanoid .npy or DeepMimic humanoid3d .txt, one or many")
    parser.add_argument("--validate", type=Path, nargs="+", action="extend", metavar=CLIP_HELP, default=None,
                        help="clips kept out of training, only scored")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.npz", help="weights file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.npz if it exists (default: refuse and touch nothing)")
    parser.add_argument("--views", type=int, default=defaults.views, help=f"random cameras per pose (default {defaults.views})")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"passes over the samples (default {defaults.epochs})")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help=f"width of the two hidden layers (default {defaults.hidden})")
    parser.add_argument("--fps", type=float, default=defaults.fps, help=f"poses per second of motion taken from each clip (default {defaults.fps:g})")
    parser.add_argument("--random-poses", type=int, default=defaults.random_poses,
                        help=f"poses with random joint angles added to the clips (straight limbs, standing; 0 = none; "
                             f"default {defaults.random_poses})")
    parser.add_argument("--tumbling", type=float, default=defaults.tumbling,
                        help=f"share of the random poses turned to a random whole-body orientation (default {defaults.tumbling:g})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"views and training seed (default {defaults.seed})")


def run_command(args: argparse.Namespace) -> int:
    clips = check_clip_paths(args.clip)
    if not clips:
        raise ValueError(f"train-depth-prior needs mocap clips to learn from: pass --clip {CLIP_HELP}, one or many")
    validate = check_clip_paths(args.validate, "--validate")
    for name, value, low, high in (("--views", args.views, 1, 4096), ("--epochs", args.epochs, 1, 1000),
                                   ("--hidden", args.hidden, 4, 4096)):
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    if not 1.0 <= args.fps <= 1000.0:
        raise ValueError(f"--fps must be between 1 and 1000, got {args.fps}")
    if args.output.suffix.lower() != ".npz":
        raise ValueError(f"-o {args.output}: the weights are a numpy .npz file; name it OUT.npz")
    refuse_existing(args.output, args.overwrite)
    if not args.output.parent.is_dir():
        raise FileNotFoundError(f"folder {args.output.parent} for {args.output.name} does not exist: create it or change -o")
    if not 0.0 <= args.tumbling <= 1.0:
        raise ValueError(f"--tumbling is a share: give 0 to 1, got {args.tumbling}")
    if not 0 <= args.random_poses <= 1_000_000:
        raise ValueError(f"--random-poses must be between 0 and 1000000, got {args.random_poses}")
    settings = TrainingSettings(views=args.views, epochs=args.epochs, hidden=args.hidden, fps=args.fps, seed=args.seed,
                                random_poses=args.random_poses, tumbling=args.tumbling)
    samples = clip_samples(clips, settings, random=True)
    features, labels, weights = pool_samples(samples)
    extra = f" and {settings.random_poses} random poses (one view each)" if len(samples) > len(clips) else ""
    print(f"{len(features)} samples from {len(clips)} clip(s) ({settings.views} views per pose){extra}, every view mirrored")
    prior = train(features, labels, weights, settings, progress=True)
    print(f"training clips: side right on {sign_accuracy(prior, features, labels, weights):.1%} of the segments out of the image plane")
    trained = {p.resolve() for p in clips}
    for path, sample in zip(validate, clip_samples(validate, settings)):
        seen = " (also a training clip: not held out)" if path.resolve() in trained else ""
        print(f"held out {path.name}: side right on {sign_accuracy(prior, *sample):.1%}{seen}")
    prior.save(args.output)
    print(f"wrote {args.output}: use it with retarget.depth_prior = \"{args.output}\"")
    return 0
