"""Top-down inference: geometry, decoders, batching, flip test, both backends, config handling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from avatar_bridge.config import PoseConfig
from avatar_bridge.pose import (
    Normalization, OnnxBackend, TopDownEstimator, TorchBackend, blur_zero_padded, boxes_to_center_size, crop_matrices,
    decode_heatmaps, load_estimator, merge_flip,
)
from conftest import COCO_DIR, POSE_ONNX, need

torch.set_num_threads(1)


def gaussian_maps(centers: np.ndarray, h: int = 64, w: int = 48, sigma: float = 2.0) -> np.ndarray:
    """(N, K, 2) sub-pixel peak positions -> (N, K, h, w) Gaussian heatmaps with peak value 1."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = xs[None, None] - centers[..., 0, None, None]
    dy = ys[None, None] - centers[..., 1, None, None]
    return np.exp(-(dx**2 + dy**2) / (2 * sigma**2)).astype(np.float32)


def test_box_to_center_size_keeps_model_aspect_and_pads():
    centers, sizes = boxes_to_center_size(np.array([[10, 20, 110, 420], [0, 0, 300, 100]]), aspect=0.75, padding=1.25)
    np.testing.assert_allclose(centers, [[60, 220], [150, 50]])
    np.testing.assert_allclose(sizes, [[300 * 1.25, 400 * 1.25], [300 * 1.25, 400 * 1.25]])  # tall: widen; wide: heighten


def test_crop_matrix_maps_box_to_crop():
    centers, sizes = boxes_to_center_size(np.array([[100, 50, 196, 178]]), aspect=0.75, padding=1.0)
    mat = crop_matrices(centers, sizes, 192, 256)[0]
    corners = np.array([[100, 50, 1], [196, 178, 1]], np.float64) @ mat.T
    np.testing.assert_allclose(corners, [[0, 0], [192, 256]], atol=1e-9)


@pytest.mark.parametrize("method,tolerance", [("argmax", 0.51), ("quarter", 0.3), ("dark", 0.02), ("reference", 0.3),
                                              ("reference-dark", 0.02)])
def test_decoders_find_subpixel_peaks_vectorized(method, tolerance):
    rng = np.random.default_rng(1)
    truth = np.stack([rng.uniform(6, 41, (5, 17)), rng.uniform(6, 57, (5, 17))], axis=-1).astype(np.float32)
    coords, maxval = decode_heatmaps(gaussian_maps(truth), method)
    assert coords.shape == (5, 17, 2) and maxval.shape == (5, 17)
    assert np.abs(coords - truth).max() < tolerance
    assert np.all(maxval > 0.8)


def test_quarter_offset_moves_toward_higher_neighbour():
    hm = np.zeros((1, 1, 5, 5), np.float32)
    hm[0, 0, 2, 2] = 1.0
    hm[0, 0, 2, 3] = 0.5  # right neighbour higher than left
    hm[0, 0, 1, 2] = 0.4  # upper neighbour higher than lower
    coords, _ = decode_heatmaps(hm, "quarter")
    np.testing.assert_allclose(coords[0, 0], [2.25, 1.75])


def test_unknown_decoder_is_an_error():
    with pytest.raises(ValueError, match="unknown heatmap decoder 'soft': choose reference, reference-dark"):
        decode_heatmaps(np.zeros((1, 1, 4, 4), np.float32), "soft")


class BlobNet(torch.nn.Module):
    """A real (untrained) network whose heatmap is the input's brightness sampled at every 4th pixel
    (heatmap cell i <-> crop pixel 4 i, the SimpleBaseline target convention):
    with a bright dot in the image, the heatmap peak is where the crop put the dot, so the whole
    crop -> forward -> decode -> inverse-affine chain can be checked against a known position."""

    num_keypoints = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.mean(dim=1, keepdim=True)
        pooled = brightness[:, :, ::4, ::4]
        return torch.softmax((pooled * 4).flatten(1), dim=1).view_as(pooled) * 50


def dot_image(points: list[tuple[float, float]], size=(720, 1280)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (int(round(x)), int(round(y))), 6, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(image, (0, 0), 4)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("decode", ["quarter", "dark"])
def test_keypoints_come_back_in_image_pixels(flip, decode):
    dots = [(200.0, 300.0), (640.0, 200.0), (1000.0, 500.0)]
    boxes = np.array([[120, 100, 300, 520], [560, 60, 760, 330], [900, 420, 1060, 600]], np.float32)
    estimator = TopDownEstimator(TorchBackend(BlobNet(), channels_last=False), decode=decode, flip_test=flip)
    poses = estimator.estimate(dot_image(dots), boxes)
    assert len(poses) == 3
    for pose, (x, y), box in zip(poses, dots, boxes):
        assert pose.keypoints.shape == (1, 2) and pose.keypoints.dtype == np.float32
        scale = (box[3] - box[1]) * 1.25 / 64  # image pixels per heatmap pixel
        assert np.hypot(pose.keypoints[0, 0] - x, pose.keypoints[0, 1] - y) < 0.75 * scale
        assert 0.0 <= pose.scores[0] <= 1.0
        np.testing.assert_array_equal(pose.box, box)


def test_buffers_are_reused_between_frames():
    """Two input buffers alternate (one is filled while the network reads the other); each is reused
    while a frame has no more people than it holds, and grows by doubling."""
    estimator = TopDownEstimator(TorchBackend(BlobNet(), channels_last=False))
    image = dot_image([(100, 100)])
    estimator.estimate(image, np.array([[50, 50, 150, 150]] * 4))
    estimator.estimate(image, np.array([[50, 50, 150, 150]] * 4))
    buffers = [batch for _, batch in estimator._slots]
    assert buffers[0] is not buffers[1] and all(len(b) == 4 for b in buffers)
    for n in (2, 4, 3, 1):  # fewer or as many people: no new allocation
        estimator.estimate(image, np.array([[50, 50, 150, 150]] * n))
        assert all(batch is old for (_, batch), old in zip(estimator._slots, buffers))
    estimator.estimate(image, np.array([[50, 50, 150, 150]] * 5))
    assert max(len(batch) for _, batch in estimator._slots) >= 8  # grown by doubling


def test_begin_on_a_worker_thread_gives_the_same_poses_as_estimate():
    """The overlapped path (network on an executor, two requests in turn) against the plain one."""
    from concurrent.futures import ThreadPoolExecutor

    estimator = TopDownEstimator(TorchBackend(BlobNet(), channels_last=False))
    frames = [(dot_image([(60 + 15 * i, 100)]), np.array([[20, 40, 170, 160]], np.float32)) for i in range(4)]
    expected = [estimator.predict(image, boxes) for image, boxes in frames]
    with ThreadPoolExecutor(1) as worker:
        pending = None
        got = []
        for image, boxes in frames:
            request = estimator.begin(image, boxes, worker)
            assert request.future is not None
            if pending is not None:
                got.append(estimator.finish(pending))
            pending = request
        got.append(estimator.finish(pending))
    for (k_want, s_want), (k_got, s_got) in zip(expected, got):
        np.testing.assert_array_equal(k_got, k_want)
        np.testing.assert_array_equal(s_got, s_want)
    assert estimator.poses(estimator.begin(frames[0][0], np.zeros((0, 4)))) == []
    # Three in flight at once: the third waits until the network is done with the first's buffer,
    # so every request still decodes its own frame. The worker is held back until 0.2 s after the
    # third begins, so without that wait the third would overwrite the first's input.
    import threading

    gate = threading.Event()
    with ThreadPoolExecutor(1) as worker:
        worker.submit(gate.wait)
        requests = [estimator.begin(image, boxes, worker) for image, boxes in frames[:2]]
        threading.Timer(0.2, gate.set).start()
        requests.append(estimator.begin(*frames[2], worker))
        got = [estimator.finish(r) for r in requests]
    for (k_want, s_want), (k_got, s_got) in zip(expected[:3], got):
        np.testing.assert_array_equal(k_got, k_want)
        np.testing.assert_array_equal(s_got, s_want)
    heatmaps, centers, _ = estimator.heatmaps(frames[0][0], np.zeros((0, 4)))
    assert heatmaps.shape[0] == 0 and centers.shape == (0, 2)


def test_normalization_channel_order_mean_std():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = (10, 100, 200)  # BGR
    rgb = TopDownEstimator(TorchBackend(BlobNet()), normalization=Normalization("rgb", (0, 0, 0), (1, 2, 4)))
    batch, _, _ = rgb.preprocess(image, np.array([[16, 0, 40, 64]]))
    np.testing.assert_allclose(batch[0, :, 128, 96], [200 / 1, 100 / 2, 10 / 4])
    bgr = TopDownEstimator(TorchBackend(BlobNet()), normalization=Normalization("bgr", (10, 10, 10), (1, 1, 1)))
    batch, _, _ = bgr.preprocess(image, np.array([[16, 0, 40, 64]]))
    np.testing.assert_allclose(batch[0, :, 128, 96], [0, 90, 190])
    with pytest.raises(ValueError, match="pose.mean / pose.std"):
        Normalization("rgb", (0, 0, 0), (1, 0, 1)).scale_offset()


def test_bad_inputs_are_clear_errors():
    estimator = TopDownEstimator(TorchBackend(BlobNet()))
    assert estimator.estimate(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="BGR uint8 image of shape"):
        estimator.estimate(None, np.array([[0, 0, 5, 5]]))
    with pytest.raises(ValueError, match="BGR uint8 image"):
        estimator.estimate(np.zeros((10, 10), np.float32), np.array([[0, 0, 5, 5]]))
    with pytest.raises(ValueError, match="pose boxes must be finite"):
        estimator.estimate(np.zeros((10, 10, 3), np.uint8), np.array([[0, 0, np.nan, 5]]))
    with pytest.raises(ValueError, match="pose.decode = 'x'"):
        TopDownEstimator(TorchBackend(BlobNet()), decode="x")


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="torch sees no CUDA GPU: use --device cpu"):
        load_estimator(PoseConfig(model="random", arch="resnet18", device="cuda"))


def test_torch_backend_cpu_settings():
    backend = TorchBackend(BlobNet(), device="cpu", fp16=True, channels_last=True)
    assert backend.fp16 is False  # fp16 autocast only on CUDA
    buffer = backend.prepare(2, 8, 8)
    assert buffer.shape == (2, 3, 8, 8) and not backend._hosts[buffer.ctypes.data].is_pinned()
    out = backend(np.ones((2, 3, 8, 8), np.float32))
    assert out.shape == (2, 1, 2, 2) and out.dtype == np.float32


def test_load_estimator_random_torch_model_batches_people():
    estimator = load_estimator(PoseConfig(model="random", arch="resnet18", input_size=[128, 96], threads=1))
    assert isinstance(estimator.backend, TorchBackend)
    poses = estimator.estimate(np.full((240, 320, 3), 127, np.uint8), np.array([[10, 10, 100, 200], [150, 20, 300, 230]]))
    assert [p.keypoints.shape for p in poses] == [(17, 2), (17, 2)]


def test_load_estimator_errors():
    with pytest.raises(ValueError, match="neither a file nor a checkpoint name"):
        load_estimator(PoseConfig(model="no-such-model"))
    with pytest.raises(FileNotFoundError, match="missing.pth not found"):
        load_estimator(PoseConfig(model="/nonexistent/missing.pth"))
    with pytest.raises(FileNotFoundError, match="ONNX model /nonexistent/m.onnx not found"):
        load_estimator(PoseConfig(model="/nonexistent/m.onnx"))
    with pytest.raises(ValueError, match="needs pose.model = a .onnx file"):
        load_estimator(PoseConfig(model="random", backend="onnxruntime"))
    with pytest.raises(ValueError, match="give \\[height, width\\]"):
        load_estimator(PoseConfig(model="random", input_size=[256]))


def test_offline_default_model_names_file_and_flag(tmp_path):
    cfg = PoseConfig(model="", arch="mobilenetv2", weights_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match=f"place it at {tmp_path}/mobilenetv2_coco_256x192-d1e58e7b_20200727.pth"):
        load_estimator(cfg)


def test_bad_onnx_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx cannot be loaded by onnxruntime"):
        OnnxBackend(bad)


def test_fixture_model_runs_through_onnxruntime():
    need(POSE_ONNX)
    image = cv2.imread(str(need(COCO_DIR / "000000196141.jpg")))
    estimator = load_estimator(PoseConfig(model=str(POSE_ONNX), input_size=[384, 288], threads=1))
    assert (estimator.input_h, estimator.input_w) == (256, 192)  # read from the model, not the config
    assert estimator.backend.static_batch == 1
    boxes = np.array([[30, 30, 200, 400], [250, 40, 400, 420], [400, 50, 600, 400]], np.float32)
    poses = estimator.estimate(image, boxes)  # 3 people through a batch-1 model: run in chunks
    assert len(poses) == 3
    for pose, box in zip(poses, boxes):
        assert pose.keypoints.shape == (17, 2) and pose.scores.shape == (17,)
        assert np.all((pose.scores >= 0) & (pose.scores <= 1))
        pad = 0.5 * (box[3] - box[1])
        assert np.all(pose.keypoints[:, 1] > box[1] - pad) and np.all(pose.keypoints[:, 1] < box[3] + pad)
    single = estimator.estimate(image, boxes[1:2])[0]
    np.testing.assert_allclose(single.keypoints, poses[1].keypoints, atol=1e-4)  # batching changes nothing


def test_flip_test_adds_no_horizontal_bias():
    # The flipped-back heatmap is re-aligned by a fractional shift; a wrong shift moves every x by
    # a fixed amount, so flip-averaged x must be at least as close to the truth as the plain x.
    dots = [(200.0, 300.0), (640.0, 200.0), (1000.0, 500.0)]
    boxes = np.array([[120, 100, 300, 520], [560, 60, 760, 330], [900, 420, 1060, 600]], np.float32)
    image = dot_image(dots)
    plain = TopDownEstimator(TorchBackend(BlobNet(), channels_last=False), decode="dark").estimate(image, boxes)
    flipped = TopDownEstimator(TorchBackend(BlobNet(), channels_last=False), decode="dark", flip_test=True).estimate(image, boxes)
    for a, b, (x, _), box in zip(plain, flipped, dots, boxes):
        scale = (box[3] - box[1]) * 1.25 / 64
        assert abs(b.keypoints[0, 0] - x) <= abs(a.keypoints[0, 0] - x) + 0.05 * scale


def test_torch_backend_uses_its_host_tensors_for_both_batch_buffers():
    backend = TorchBackend(BlobNet(), channels_last=False)
    estimator = TopDownEstimator(backend)
    image = dot_image([(100, 100)])
    first, _, _ = estimator.preprocess(image, np.array([[50, 50, 150, 150]] * 3))
    second, _, _ = estimator.preprocess(image, np.array([[50, 50, 150, 150]] * 3))
    assert first.ctypes.data != second.ctypes.data  # the two alternating buffers
    for batch in (first, second):  # each numpy batch views a (pinned on CUDA) tensor of the backend's
        assert backend._hosts[batch.ctypes.data].data_ptr() == batch.ctypes.data
        np.testing.assert_array_equal(backend(batch), backend(batch.copy()))  # same result from a foreign array


# --- reference (MMPose) conventions -------------------------------------------------------------------


def one_peak(x: int, y: int, h: int = 8, w: int = 8, right: float = 0.5, down: float = 0.5) -> np.ndarray:
    """A map with peak 1 at (x, y), a higher right neighbour and a higher lower neighbour where they exist."""
    hm = np.full((1, 1, h, w), 0.1, np.float32)
    hm[0, 0, y, x] = 1.0
    if x + 1 < w:
        hm[0, 0, y, x + 1] = right
    if y + 1 < h:
        hm[0, 0, y + 1, x] = down
    return hm


@pytest.mark.parametrize("x,y,expected,legacy_differs", [
    (4, 4, (4.25, 4.25), False),  # interior: both shifts
    (1, 4, (1.0, 4.25), True),    # x = 1: MMPose applies no x shift (needs 1 < x < W-1)
    (0, 4, (0.0, 4.0), True),     # x = 0: no x shift, and no y shift either (needs 0 < x)
    (7, 4, (7.0, 4.25), False),   # x = W-1
    (4, 1, (4.25, 1.0), True),    # y = 1: no y shift
    (4, 0, (4.0, 0.0), True),     # y = 0: no y shift, and no x shift either (needs 0 < y)
    (0, 7, (0.0, 7.0), False),
])
def test_reference_quarter_offset_follows_mmposes_border_rules(x, y, expected, legacy_differs):
    coords, _ = decode_heatmaps(one_peak(x, y), "reference")
    np.testing.assert_allclose(coords[0, 0], expected)
    legacy, _ = decode_heatmaps(one_peak(x, y), "quarter")
    assert np.allclose(legacy[0, 0], expected) != legacy_differs  # where the earlier variant differed


def test_reference_marks_non_positive_peaks_and_reports_raw_scores():
    hm = np.full((1, 3, 8, 8), -0.5, np.float32)
    hm[0, 0, 3, 3] = 2.5  # above 1: reported as is
    hm[0, 1, 3, 3] = 0.0
    coords, scores = decode_heatmaps(hm, "reference")
    np.testing.assert_allclose(scores[0], [2.5, 0.0, -0.5])
    np.testing.assert_allclose(coords[0, 1:], -1.0)  # invalid peaks at (-1, -1) as MMPose's get_heatmap_maximum
    np.testing.assert_allclose(coords[0, 0], [3.0, 3.0])
    dark, _ = decode_heatmaps(hm, "reference-dark")
    np.testing.assert_allclose(dark[0, 1:], -1.0)


def test_blur_is_zero_padded_and_keeps_the_maximum():
    hm = np.ones((1, 1, 12, 12), np.float32)
    blurred = blur_zero_padded(hm, 11)
    assert blurred.max() == pytest.approx(1.0)  # rescaled to the original maximum
    assert blurred[0, 0, 0, 0] < 0.6 * blurred[0, 0, 6, 6]  # zeros leak in at the border (reflect would keep 1)
    np.testing.assert_allclose(blurred[0, 0], blurred[0, 0, ::-1, ::-1], rtol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        blur_zero_padded(hm, 4)


def test_reference_dark_refines_only_away_from_the_border_and_does_not_clip():
    truth = np.array([[[2.4, 20.3], [20.6, 1.7], [30.0, 30.0]]], np.float32)
    hm = gaussian_maps(truth, 64, 48)
    coords, _ = decode_heatmaps(hm, "reference-dark")
    assert abs(coords[0, 0, 0] - 2.4) < 0.15 and coords[0, 0, 1] != 20.0
    assert abs(coords[0, 1, 0] - 20.6) < 0.15  # argmax (21, 2): y = 2 is refined ...
    hm2 = gaussian_maps(np.array([[[20.6, 1.4]]], np.float32), 64, 48)
    c2, _ = decode_heatmaps(hm2, "reference-dark")
    np.testing.assert_allclose(c2[0, 0], [21.0, 1.0])  # ... y = 1 is not (needs 1 < y < h-2)
    # A peak on a broad ramp: the Newton step is several pixels; MMPose does not clip it, the old variant does.
    ys, xs = np.mgrid[0:64, 0:48].astype(np.float32)
    ramp = np.exp(-((xs - 30.0) ** 2) / (2 * 40.0**2) - ((ys - 30) ** 2) / 8.0)[None, None]
    ramp[0, 0, 30, 20] += 0.05  # a bump makes the argmax (20, 30), ten columns left of the ramp's top
    ref, _ = decode_heatmaps(ramp.astype(np.float32), "reference-dark")
    old, _ = decode_heatmaps(ramp.astype(np.float32), "dark")
    assert ref[0, 0, 0] - 20 > 1.5 and old[0, 0, 0] - 20 <= 1.0


def test_reference_flip_merge_shifts_one_whole_column():
    rng = np.random.default_rng(0)
    plain = rng.random((2, 17, 4, 6)).astype(np.float32)
    flipped = rng.random((2, 17, 4, 6)).astype(np.float32)
    merged = merge_flip(plain, flipped, input_width=24, method="reference")
    back = flipped[:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15], :, ::-1]
    np.testing.assert_allclose(merged[..., 1:], (plain[..., 1:] + back[..., :-1]) / 2)
    np.testing.assert_allclose(merged[..., 0], (plain[..., 0] + back[..., 0]) / 2)
    legacy = merge_flip(plain, flipped, input_width=24, method="quarter")
    np.testing.assert_allclose(legacy[..., 1:], (plain[..., 1:] + 0.25 * back[..., 1:] + 0.75 * back[..., :-1]) / 2,
                               rtol=1e-6)
    custom = merge_flip(plain[:, :3], flipped[:, :3], 24, "reference", flip_indices=[0, 2, 1])
    np.testing.assert_allclose(custom[:, 1, :, 1:], (plain[:, 1, :, 1:] + flipped[:, 2, :, ::-1][..., :-1]) / 2)


def test_predict_gives_raw_scores_and_estimate_clips_them():
    estimator = TopDownEstimator(TorchBackend(BlobNet(), channels_last=False))
    image, boxes = dot_image([(200.0, 300.0)]), np.array([[120, 100, 300, 520]], np.float32)
    keypoints, raw = estimator.predict(image, boxes)
    assert keypoints.shape == (1, 1, 2) and raw.shape == (1, 1) and raw[0, 0] > 1.0  # BlobNet peaks far above 1
    pose = estimator.estimate(image, boxes)[0]
    assert pose.scores[0] == 1.0
    np.testing.assert_array_equal(pose.keypoints, keypoints[0])


def test_fewer_threads_unless_more_are_clearly_faster():
    from avatar_bridge.pose import fewer_threads_unless_faster

    assert fewer_threads_unless_faster({1: 2.95, 2: 2.98}) == 1  # the fixture model: no gain
    assert fewer_threads_unless_faster({1: 20.2, 2: 12.2}) == 2  # MobileNetV2: 40% faster
    assert fewer_threads_unless_faster({1: 10.0, 2: 8.6}) == 1  # 14% faster: not worth a core
    assert fewer_threads_unless_faster({1: 10.0, 2: 8.5}) == 2  # 15%: worth it
    assert fewer_threads_unless_faster({1: 10.0, 2: 7.0, 4: 6.9}) == 2  # the fewest within 15% of the fastest


def test_auto_threads_times_both_and_keeps_a_working_session(caplog):
    """pose.auto_threads with the fixture model: both thread counts are timed here, the choice is logged
    and the estimator runs (which count wins depends on this machine, so it is not asserted)."""
    import logging

    need(POSE_ONNX)
    with caplog.at_level(logging.INFO, logger="avatar_bridge.pose"):
        estimator = load_estimator(PoseConfig(model=str(POSE_ONNX), threads=2, auto_threads=True))
    assert estimator.backend.threads in (1, 2)
    line = next(r.getMessage() for r in caplog.records if "ONNX Runtime thread" in r.getMessage())
    assert f"{estimator.backend.threads} ONNX Runtime thread" in line and "ms with 1" in line and "ms with 2" in line
    keypoints, scores = estimator.predict(np.zeros((256, 192, 3), np.uint8), np.array([[0, 0, 192, 256]], np.float32))
    assert keypoints.shape == (1, 17, 2)
    # One thread asked for: nothing to compare, no second session.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avatar_bridge.pose"):
        assert load_estimator(PoseConfig(model=str(POSE_ONNX), threads=1, auto_threads=True)).backend.threads == 1
    assert not any("ONNX Runtime thread" in r.getMessage() for r in caplog.records)


def test_explicit_threads_flag_turns_the_check_off():
    import argparse

    from avatar_bridge.commands.options import add_source_arguments, apply_source_arguments
    from avatar_bridge.config import load_config

    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    config = load_config("cpu-fast")
    assert config.pose.auto_threads and config.pose.threads == 2
    args = parser.parse_args(["--source", "synthetic", "--threads", "2"])
    assert apply_source_arguments(args, load_config("cpu-fast")).pose.auto_threads is False
    args = parser.parse_args(["--source", "synthetic"])
    assert apply_source_arguments(args, load_config("cpu-fast")).pose.auto_threads is True
