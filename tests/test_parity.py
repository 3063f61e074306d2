"""Golden test against MMPose 1.3.2 itself, and the MMPose 1.x checkpoint through every command.

The fixture npz holds what MMPose's own ``inference_topdown`` produced with the fixture checkpoint
(random weights, saved by MMPose 1.3.2) on the coco-sample images: its box centers and sizes, its
normalized network input, its heatmaps (after flip merging in ``flip``) and its keypoints and scores
in the modes ``plain`` (argmax + quarter offset), ``flip`` and ``dark`` (``decoder/<mode>`` holds the
codec settings). Random weights give flat heatmaps, so these comparisons are far stricter than on a
trained network: a one-grey-level crop difference or a different border rule moves keypoints.
"""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from avatar_bridge.pose import IMAGENET_MEAN, IMAGENET_STD, TopDownEstimator, TorchBackend, decode_heatmaps
from avatar_bridge.weights import load_pretrained_with_meta
from conftest import COCO_DIR, MMPOSE1_CHECKPOINT, MMPOSE_REFERENCE, ROOT, need

torch.set_num_threads(1)
MODES = {"plain": "reference", "flip": "reference", "dark": "reference-dark"}


@pytest.fixture(scope="module")
def reference():
    need(MMPOSE_REFERENCE)
    need(COCO_DIR)
    data = np.load(MMPOSE_REFERENCE, allow_pickle=False)
    images = sorted(k.split("/", 1)[1] for k in data.files if k.startswith("boxes_xyxy/"))
    return data, images


@pytest.fixture(scope="module")
def network():
    model, meta = load_pretrained_with_meta(str(need(MMPOSE1_CHECKPOINT)), "resnet50")
    return model.eval(), meta


def test_fixture_decoder_settings_are_the_ones_reproduced(reference):
    data, _ = reference
    codecs = {mode: ast.literal_eval(str(data[f"decoder/{mode}"])) for mode in MODES}
    for mode, codec in codecs.items():
        assert codec["type"] == "MSRAHeatmap" and codec["input_size"] == (192, 256) and codec["heatmap_size"] == (48, 64)
        assert bool(codec.get("unbiased", False)) == (mode == "dark")
        assert codec.get("blur_kernel_size", 11) == 11  # the kernel our reference-dark uses


def test_checkpoint_meta_matches_mmposes_pipeline(network):
    model, meta = network
    assert model.arch == "mobilenetv2" and model.num_keypoints == 17
    assert meta.layout == "mmpose1" and meta.input_size == (256, 192) and meta.channel_order == "rgb"
    assert meta.mean == IMAGENET_MEAN and meta.std == IMAGENET_STD


def test_crops_and_heatmaps_match_mmpose(reference, network):
    data, images = reference
    model, meta = network
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    for flip in (False, True):
        estimator = TopDownEstimator(TorchBackend(model, channels_last=False), input_size=meta.input_size,
                                     flip_test=flip, flip_indices=meta.flip_indices)
        for name in images:
            image = cv2.imread(str(COCO_DIR / name))
            boxes = data[f"boxes_xyxy/{name}"]
            n = len(boxes)
            batch, centers, sizes = estimator.preprocess(image, boxes)
            np.testing.assert_allclose(centers, data[f"plain/{name}/centers"], atol=1e-3)
            np.testing.assert_allclose(sizes, data[f"plain/{name}/scales"], atol=1e-3)
            theirs = data[f"plain/{name}/input"] * std + mean  # back to RGB grey levels
            ours = batch[:n] * std + mean
            assert np.abs(ours - theirs).max() <= 1.0 + 1e-3, name  # crops within one grey level
            with torch.inference_mode():  # the network alone, given MMPose's own input (bit-identical
                # with torch's default threads; one thread sums in another order: ~1e-5 here)
                mine = model(torch.from_numpy(data[f"plain/{name}/input"])).numpy()
            plain = data[f"plain/{name}/heatmaps"]
            assert np.abs(mine - plain).max() <= 1e-4 * np.ptp(plain), name
            heatmaps, _, _ = estimator.heatmaps(image, boxes)
            expected = data[f"{'flip' if flip else 'plain'}/{name}/heatmaps"]
            assert np.abs(heatmaps - expected).max() <= 1e-3 * np.ptp(expected), (name, flip)


@pytest.mark.parametrize("mode", list(MODES))
def test_decoding_mmposes_heatmaps_gives_mmposes_keypoints(reference, mode):
    data, images = reference
    for name in images:
        heatmaps = data[f"{mode}/{name}/heatmaps"]
        centers, scales = data[f"plain/{name}/centers"], data[f"plain/{name}/scales"]
        coords, scores = decode_heatmaps(heatmaps, MODES[mode])
        h, w = heatmaps.shape[2:]
        keypoints = coords * (scales / np.array([w, h], np.float32))[:, None] + (centers - scales * 0.5)[:, None]
        np.testing.assert_allclose(keypoints, data[f"{mode}/{name}/keypoints"], atol=1e-3, rtol=0, err_msg=name)
        np.testing.assert_array_equal(scores, data[f"{mode}/{name}/scores"])  # raw maxima, not clipped


@pytest.mark.parametrize("mode", list(MODES))
def test_end_to_end_keypoints_match_mmpose(reference, network, mode):
    """Image in, keypoints out. Plain and flip: every keypoint within 1e-2 px of MMPose's. DARK takes an
    unclipped Newton step, which on these flat random maps reaches hundreds of heatmap pixels and
    amplifies the ~1e-5 heatmap differences; where the step is under 2 heatmap pixels (what a
    trained network's peaks give) keypoints agree within 1e-2 px, and every integer peak agrees."""
    data, images = reference
    model, meta = network
    estimator = TopDownEstimator(TorchBackend(model, channels_last=False), input_size=meta.input_size,
                                 decode=MODES[mode], flip_test=mode == "flip", flip_indices=meta.flip_indices)
    for name in images:
        keypoints, scores = estimator.predict(cv2.imread(str(COCO_DIR / name)), data[f"boxes_xyxy/{name}"])
        np.testing.assert_allclose(scores, data[f"{mode}/{name}/scores"], rtol=0, atol=1e-3 * scores.max())
        error = np.abs(keypoints - data[f"{mode}/{name}/keypoints"]).max(-1)
        heatmaps = data[f"{mode}/{name}/heatmaps"]
        peaks, _ = decode_heatmaps(heatmaps, "argmax")
        ours, _ = decode_heatmaps(estimator.heatmaps(cv2.imread(str(COCO_DIR / name)), data[f"boxes_xyxy/{name}"])[0], "argmax")
        np.testing.assert_array_equal(ours, peaks)
        if mode == "dark":
            step = np.abs(decode_heatmaps(heatmaps, "reference-dark")[0] - peaks).max(-1)
            error = error[step < 2.0]
        assert error.size and error.max() < 1e-2, (name, error.max())


# --- the MMPose 1.x checkpoint through the commands, as a user runs them ----------------------------


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatar_bridge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_command_with_mmpose1_checkpoint():
    need(COCO_DIR)
    out = cli("run", "--source", str(COCO_DIR), "--model", str(need(MMPOSE1_CHECKPOINT)), "--detector", "none",
              "--headless", "--no-vmc", "--max-frames", "5", "--threads", "1", "--ws-port", str(free_port()))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mobilenetv2, 17 keypoints, input 256x192, RGB input" in out.stderr
    assert "4 frames, 4 pose updates" in out.stdout + out.stderr


def test_eval_command_with_mmpose1_checkpoint(tmp_path):
    need(COCO_DIR)
    results = tmp_path / "results.json"
    out = cli("eval", "--annotations", str(COCO_DIR / "test_coco.json"), "--images", str(COCO_DIR),
              "--model", str(need(MMPOSE1_CHECKPOINT)), "--threads", "1", "--out", str(results))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "decode reference" in out.stdout and "AP " in out.stdout
    assert len(json.loads(results.read_text())) == 12


def test_export_onnx_command_with_mmpose1_checkpoint(tmp_path, network):
    import onnxruntime as ort

    path = tmp_path / "mb2.onnx"
    out = cli("export-onnx", "--model", str(need(MMPOSE1_CHECKPOINT)), "--out", str(path))
    assert out.returncode == 0, out.stderr[-2000:]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[2:] == [256, 192]  # the size from the checkpoint's meta
    model, _ = network
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 192), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(session.run(None, {"input": x})[0] - expected).max() <= 1e-3 * np.abs(expected).max()
