"""A/B of the live loop, one frame at a time, with the pose model's deconvolutions as the file has them
and rewritten as sub-pixel convolutions (``pose.ort_subpixel``, avatar_bridge/subpixel.py).

    .venv/bin/python benchmarks/ab_subpixel_loop.py SOURCE [--pairs 6] [--max-frames 72] [--config cpu-fast]

Both pipelines (the same config but for ``pose.ort_subpixel``) process the source's frames, decoded
once into memory, as ``bench --compare-mediapipe`` times avatar-bridge (``time_pipeline``: two passes
after three untimed frames, fresh tracking state each run); the two are timed in turns, ``--pairs``
times, so that this machine's drift falls on both. Prints per run the median ms per frame and the
``pose`` stage's p50, then the medians over runs, their ratio and the load average. Models: the
fixture pose model and detectors in ../shared/fixtures/models unless ``--model`` / ``--detector-dir``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = ROOT.parent / "shared" / "fixtures" / "models"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="video file or image folder")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--max-frames", type=int, default=72)
    parser.add_argument("--config", default="cpu-fast", help="preset or TOML file")
    parser.add_argument("--model", default=str(FIXTURE_MODELS / "ultralight-nano-simplepose" / "deploy.onnx"))
    parser.add_argument("--detector-dir", default=str(FIXTURE_MODELS))
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.max_frames < 1:
        parser.error("--pairs and --max-frames must be at least 1")

    from avatar_bridge.bench import mediapipe_compare
    from avatar_bridge.bench.live import apply_source_arguments, configure_parser
    from avatar_bridge.cli import limit_blas_threads
    from avatar_bridge.config import load_config
    from avatar_bridge.metrics import load_average_line
    from avatar_bridge.pipeline import Pipeline, open_config_source

    limit_blas_threads()
    bench_parser = argparse.ArgumentParser()
    configure_parser(bench_parser, "bench")
    bench_args = bench_parser.parse_args(["--config", args.config, "--source", args.source, "--model", args.model,
                                          "--detector-dir", args.detector_dir, "--people", "driver"])
    config = apply_source_arguments(bench_args, load_config(bench_args.config))
    frames = mediapipe_compare.load_frames(open_config_source(config), args.max_frames)
    load_before = os.getloadavg()
    variants = {}
    for name, subpixel in (("as-is", False), ("subpixel", True)):
        variant = copy.deepcopy(config)
        variant.pose.ort_subpixel = subpixel
        prepared = Pipeline(variant)
        prepared.prepare(images=True)
        variants[name] = (variant, prepared)
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for pair in range(1, args.pairs + 1):
        for name, (variant, prepared) in variants.items():
            pipeline = mediapipe_compare.fresh_pipeline(variant, prepared)
            ms, _, _ = mediapipe_compare.time_pipeline(pipeline, frames, repeats=2, warmup=3)
            medians[name].append(statistics.median(ms))
            pose = pipeline.metrics.snapshot()["stages_ms"]["pose"]["p50"]
            print(f"run {pair} {name}: {medians[name][-1]:.3f} ms/frame, pose stage p50 {pose:.3f} ms", flush=True)
    old, new = (statistics.median(medians[name]) for name in ("as-is", "subpixel"))
    print(f"as-is: median {old:.3f} ms/frame; subpixel: median {new:.3f} ms/frame over {args.pairs} runs each, "
          f"{len(frames)} frames x 2")
    print(f"subpixel / as-is (medians): {new / old:.3f}")
    print(load_average_line(load_before, os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
