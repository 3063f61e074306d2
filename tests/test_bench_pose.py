"""bench-pose: real timings of real backends (never asserted: only that the report is well formed)."""

from __future__ import annotations

import json

import pytest
import torch

from avatar_bridge.bench.pose import BenchRow, bench_one, format_table, pose_config
from avatar_bridge.metrics import median_p95, timing_summary
from avatar_bridge.cli import main as cli_main
from conftest import POSE_ONNX, need

torch.set_num_threads(1)


def test_percentiles():
    median, p95 = median_p95([float(v) for v in range(1, 101)])
    assert median == 50.5 and 95 <= p95 <= 96


def test_row_derived_figures_and_table():
    row = BenchRow("resnet50", "onnxruntime", "cpu", 8, 2, 80.0, 90.0, 100.0, 120.0)
    assert row.ms_per_crop == 10.0 and row.crops_per_second == 100.0
    assert row.as_dict()["crops_per_second"] == 100.0
    table = format_table([row])
    assert "resnet50" in table and "10.00" in table and "100.0" in table


def test_fixture_model_bench_json(capsys):
    need(POSE_ONNX)
    assert cli_main(["bench-pose", "--model", str(POSE_ONNX), "--backend", "onnxruntime", "torch", "--batch", "1", "2",
                     "--threads", "1", "--repeats", "2", "--warmup", "1", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["batch"]) for r in rows] == [("onnxruntime", 1), ("onnxruntime", 2)]  # ONNX: no torch form
    for r in rows:
        assert r["forward_median_ms"] > 0 and r["estimate_median_ms"] > 0 and r["crops_per_second"] > 0


def test_torch_and_exported_onnx_rows(tmp_path):
    for backend in ("torch", "onnxruntime"):
        cfg = pose_config("resnet18", backend, "cpu", 1, (128, 96), tmp_path)
        row = bench_one(cfg, "resnet18", 2, repeats=2, warmup=1)
        assert row.backend == backend and row.batch == 2 and row.forward_p95_ms >= row.forward_median_ms > 0
    assert (tmp_path / "resnet18-128x96.onnx").is_file()  # exported once for the onnxruntime rows
    cuda = pose_config("resnet18", "torch", "cuda", 0, (256, 192), tmp_path)
    assert cuda.fp16 and cuda.channels_last  # the GPU path: fp16 autocast + channels_last


def test_bad_requests_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="benchmark it with --backend onnxruntime"):
        pose_config("m.onnx", "torch", "cpu", 1, (256, 192), tmp_path)
    assert cli_main(["bench-pose", "--batch", "0"]) == 2
    assert "batch sizes must be between 1 and 1024" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main(["bench-pose", "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_subpixel_both_times_each_onnx_model_both_ways(capsys):
    need(POSE_ONNX)
    assert cli_main(["bench-pose", "--model", str(POSE_ONNX), "--batch", "1", "--threads", "1", "--repeats", "2",
                     "--warmup", "1", "--subpixel", "both", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in rows] == ["onnxruntime", "ort-deconv"]
    assert all(r["forward_median_ms"] > 0 for r in rows)
    assert cli_main(["bench-pose", "--model", str(POSE_ONNX), "--batch", "1", "--repeats", "1", "--warmup", "0",
                     "--subpixel", "off", "--json", "-"]) == 0
    assert [r["backend"] for r in json.loads(capsys.readouterr().out)] == ["ort-deconv"]
