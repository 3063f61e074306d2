"""``avatar-bridge bench-pose``: pose-model speed in ms per crop, by model, backend, device and batch size.

Two timings per configuration, each as median and p95 over ``--repeats`` runs after warm-up; the
configurations are timed round-robin so that load from other processes affects all of them alike:

- ``forward``: the model alone on a ready normalized batch (host -> device copy and the heatmaps'
  copy back included on CUDA), the number comparable with published "crops per second" figures;
- ``estimate``: :meth:`TopDownEstimator.estimate` on a 1280x720 frame with ``batch`` person boxes:
  crop + normalize + forward + decode, what the live pipeline pays per frame.

Models: ``resnet50`` / ``mobilenetv2`` / any :data:`avatar_bridge.model.ARCHITECTURES` name (random
weights: speed does not depend on them), a registry name or ``.pth`` (trained weights), or a
``.onnx`` file (onnxruntime only). Torch models benchmarked with ``--backend onnxruntime`` are
exported to a temporary ONNX file first; ``--subpixel both`` times ONNX models with and without
their deconvolutions rewritten as sub-pixel convolutions (:mod:`avatar_bridge.subpixel`). On CUDA the torch backend uses fp16 autocast,
channels_last, a pinned host batch and non-blocking copies, and the table's crops/s column is the
figure to compare across batch sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import PoseConfig
from ..metrics import median_p95
from ..model import ARCHITECTURES


ONNX_AS_IS = "ort-deconv"  # onnxruntime, the model's transposed convolutions as they are (--subpixel off)


@dataclass
class BenchRow:
    model: str
    backend: str
    device: str
    batch: int
    threads: int
    forward_median_ms: float
    forward_p95_ms: float
    estimate_median_ms: float
    estimate_p95_ms: float

    @property
    def ms_per_crop(self) -> float:
        return self.forward_median_ms / self.batch

    @property
    def crops_per_second(self) -> float:
        return 1000.0 * self.batch / self.forward_median_ms if self.forward_median_ms > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "ms_per_crop": round(self.ms_per_crop, 3), "crops_per_second": round(self.crops_per_second, 1)}


def _time_round_robin(fns: list, repeats: int, warmup: int) -> list[list[float]]:
    """Time every callable ``repeats`` times, interleaved (a, b, c, a, b, c, ...).

    A callable that returns a number has timed itself (ms); that number is the sample.

    On a machine shared with other work the load drifts by the minute; interleaving spreads that
    drift evenly over the configurations, so their comparison stays fair even when absolute
    figures are inflated.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            start = time.perf_counter()
            measured = fn()
            out.append(measured if measured is not None else (time.perf_counter() - start) * 1000.0)
    return samples


def pose_config(model: str, backend: str, device: str, threads: int, input_size: tuple[int, int], onnx_dir: Path) -> PoseConfig:
    """The :class:`PoseConfig` for one benchmark configuration (exporting a torch model to ONNX if asked)."""
    is_arch = model in ARCHITECTURES
    if model.lower().endswith(".onnx"):
        if backend != "onnxruntime":
            raise ValueError(f"{model} is an ONNX file: benchmark it with --backend onnxruntime")
        return PoseConfig(model=model, backend="onnxruntime", device=device, threads=threads)
    cfg = PoseConfig(model="random" if is_arch else model, arch=model if is_arch else "resnet50", device=device,
                     threads=threads, input_size=list(input_size), fp16=device.startswith("cuda"), channels_last=True)
    if backend == "torch":
        return cfg
    from ..export_onnx import export_onnx
    from ..model import build_model
    from ..weights import load_pretrained

    path = onnx_dir / f"{Path(model).stem}-{input_size[0]}x{input_size[1]}.onnx"
    if not path.is_file():
        net = build_model(model) if is_arch else load_pretrained(model, cfg.arch)
        export_onnx(net, path, input_size)
    return PoseConfig(model=str(path), backend="onnxruntime", device=device, threads=threads)


@dataclass
class BenchCase:
    """One configuration: an estimator, a 1280x720 frame and ``batch`` person boxes on it."""

    label: str
    cfg: PoseConfig
    batch: int
    estimator: object
    frame: np.ndarray
    boxes: np.ndarray

    @classmethod
    def build(cls, cfg: PoseConfig, label: str, batch: int, estimator=None) -> "BenchCase":
        from ..pose import load_estimator

        rng = np.random.default_rng(batch)
        frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
        x1 = rng.uniform(0, 1000, batch)
        y1 = rng.uniform(0, 300, batch)
        boxes = np.stack([x1, y1, x1 + rng.uniform(80, 280, batch), y1 + rng.uniform(200, 420, batch)], axis=1)
        return cls(label, cfg, batch, estimator or load_estimator(cfg), frame, boxes)

    def forward(self) -> float:
        """ms of the model alone on a real normalized batch (refilled untimed: batch sizes share the buffer)."""
        inputs, _, _ = self.estimator.preprocess(self.frame, self.boxes)
        start = time.perf_counter()
        self.estimator.backend(inputs)
        return (time.perf_counter() - start) * 1000.0

    def estimate(self) -> None:
        self.estimator.estimate(self.frame, self.boxes)


def bench_cases(cases: list[BenchCase], repeats: int, warmup: int) -> list[BenchRow]:
    """Round-robin timings of every case: forward (model only) and estimate (crop + forward + decode)."""
    samples = _time_round_robin([fn for c in cases for fn in (c.forward, c.estimate)], repeats, warmup)
    forward, estimate = samples[0::2], samples[1::2]
    rows = []
    for case, f, e in zip(cases, forward, estimate):
        fm, fp = median_p95(f)
        em, ep = median_p95(e)
        backend = "torch" if not case.cfg.model.endswith(".onnx") else "onnxruntime" if case.cfg.ort_subpixel else ONNX_AS_IS
        rows.append(BenchRow(case.label, backend, case.cfg.device, case.batch, case.cfg.threads, fm, fp, em, ep))
    return rows


def bench_one(cfg: PoseConfig, label: str, batch: int, repeats: int, warmup: int) -> BenchRow:
    """Timings of a single configuration."""
    return bench_cases([BenchCase.build(cfg, label, batch)], repeats, warmup)[0]


def format_table(rows: list[BenchRow]) -> str:
    head = (f"{'model':24} {'backend':11} {'device':6} {'batch':>5} {'forward ms p50':>14} {'p95':>8} "
            f"{'ms/crop':>8} {'crops/s':>8} {'estimate ms p50':>15} {'p95':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model[:24]:24} {r.backend:11} {r.device:6} {r.batch:5d} {r.forward_median_ms:14.2f} "
                     f"{r.forward_p95_ms:8.2f} {r.ms_per_crop:8.2f} {r.crops_per_second:8.1f} "
                     f"{r.estimate_median_ms:15.2f} {r.estimate_p95_ms:8.2f}")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--model", nargs="+", default=["resnet50"],
                        help="architecture names (random weights), registry names, .pth or .onnx files")
    parser.add_argument("--backend", nargs="+", choices=("torch", "onnxruntime"), default=["onnxruntime"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="batch sizes (crops per forward), up to 64+")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: fp16 autocast, channels_last, pinned copies)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = library default)")
    parser.add_argument("--input-size", default="256x192", help="HEIGHTxWIDTH for torch models")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--subpixel", choices=("on", "off", "both"), default="on",
                        help="onnxruntime on CPU: 4x4 stride-2 deconvolutions as sub-pixel convolutions (pose.ort_subpixel; "
                             "default: on); both: time each ONNX model both ways (rows 'onnxruntime': rewritten, "
                             f"'{ONNX_AS_IS}': as the file has them)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file ('-' = stdout only JSON)")


def run_command(args: argparse.Namespace) -> int:
    from ..model import parse_input_size

    size = parse_input_size(args.input_size)
    if any(b < 1 or b > 1024 for b in args.batch):
        raise ValueError(f"--batch {args.batch}: batch sizes must be between 1 and 1024")
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {args.device}: torch sees no CUDA GPU on this machine; use --device cpu")
    rows: list[BenchRow] = []
    quiet = args.json == "-"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-pose-") as tmp:
        cases: list[BenchCase] = []
        for model in args.model:
            for backend in args.backend:
                if model.lower().endswith(".onnx") and backend == "torch":
                    continue  # an ONNX file has no torch form
                cfg = pose_config(model, backend, args.device, args.threads, size, Path(tmp))
                subpixel = {"on": (True,), "off": (False,), "both": (True, False)}[args.subpixel]
                for variant in subpixel if backend == "onnxruntime" else (cfg.ort_subpixel,):
                    cfg = dataclasses.replace(cfg, ort_subpixel=variant)
                    estimator = None  # one model per (model, backend), shared by its batch sizes
                    for batch in args.batch:
                        case = BenchCase.build(cfg, Path(model).name if "/" in model else model, batch, estimator)
                        estimator = case.estimator
                        cases.append(case)
        rows = bench_cases(cases, args.repeats, args.warmup)
    if not quiet:
        for row in rows:
            print(f"{row.model} {row.backend} {row.device} batch {row.batch}: {row.ms_per_crop:.2f} ms/crop", file=sys.stderr)
    if quiet:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
        return 0
    # Other processes inflate CPU timings: say how busy the machine was.
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1-min load average "
          f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=1), encoding="utf-8")
    return 0
