"""Checkpoint registry, verified download over real local HTTP, and strict loading of all layouts."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest
import torch

from avatar_bridge import weights
from avatar_bridge.cli import main as cli_main
from avatar_bridge.model import build_model
from avatar_bridge.weights import REGISTRY, CheckpointInfo, detect_layout, download, fetch, load_checkpoint

torch.set_num_threads(1)


def randomized(arch: str, num_keypoints: int = 17, seed: int = 0):
    """A model whose every tensor (BN statistics included) holds distinct random values."""
    model = build_model(arch, num_keypoints)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            else:
                value.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    return model


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(sa[key], sb[key]), key


def layout_state(model, layout: str) -> dict:
    """The model's weights renamed as each publisher names them."""
    out = {}
    for key, value in model.state_dict().items():
        head = key.startswith(("deconv_layers.", "final_layer."))
        backbone_key = key[len("backbone."):] if key.startswith("backbone.") else key
        if model.arch == "mobilenetv2" and not head and layout in ("mmpose0", "mmpose1"):
            backbone_key = weights.torchvision_mobilenetv2_to_mmpose(backbone_key)
        if layout == "microsoft":
            out[key if head else backbone_key] = value.clone()
        elif layout == "mmpose0":
            out["keypoint_head." + key if head else "backbone." + backbone_key] = value.clone()
        elif layout == "mmpose1":
            out["head." + key if head else "backbone." + backbone_key] = value.clone()
        else:
            out[key] = value.clone()
    return out


@pytest.mark.parametrize("arch,layout,wrap", [
    ("resnet18", "microsoft", "raw"),
    ("resnet18", "microsoft", "module"),  # DataParallel prefix inside {"state_dict": ...}
    ("resnet18", "mmpose0", "state_dict"),
    ("resnet18", "mmpose1", "state_dict"),
    ("resnet18", "native", "raw"),
    ("mobilenetv2", "mmpose0", "state_dict"),
    ("mobilenetv2", "mmpose1", "state_dict"),
])
def test_every_layout_loads_back_bit_exactly(tmp_path, arch, layout, wrap):
    source = randomized(arch)
    state = layout_state(source, layout)
    assert detect_layout(list(state)) == layout
    if wrap == "module":
        obj = {"state_dict": {"module." + k: v for k, v in state.items()}}
    elif wrap == "state_dict":
        obj = {"state_dict": state, "meta": {"mmpose_version": "0.x"}}
    else:
        obj = state
    path = tmp_path / f"{arch}-{layout}.pth"
    torch.save(obj, path)
    loaded = load_checkpoint(build_model(arch), path)
    assert_same(source, loaded)


def test_mmpose_mobilenetv2_names_are_mmposes_own():
    state = layout_state(build_model("mobilenetv2"), "mmpose0")
    assert "backbone.conv1.conv.weight" in state
    assert "backbone.layer1.0.conv.0.conv.weight" in state  # depthwise first: no expansion in layer1
    assert "backbone.layer1.0.conv.1.bn.running_mean" in state
    assert "backbone.layer7.0.conv.2.conv.weight" in state
    assert "backbone.conv2.conv.weight" in state
    assert not any(".features." in k or k.startswith("backbone.0.") for k in state)
    assert weights.mmpose_mobilenetv2_to_torchvision("layer2.1.conv.2.bn.bias") == "3.conv.3.bias"
    assert weights.mmpose_mobilenetv2_to_torchvision("layer2.1.conv.0.bn.bias") == "3.conv.0.1.bias"


def test_old_checkpoints_without_num_batches_tracked_load(tmp_path):
    source = randomized("resnet18")
    state = {k: v for k, v in layout_state(source, "microsoft").items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert_same(source, load_checkpoint(build_model("resnet18"), tmp_path / "old.pth"))


def test_wrong_architecture_lists_missing_and_unexpected_keys(tmp_path):
    torch.save({"state_dict": layout_state(build_model("resnet18"), "mmpose0")}, tmp_path / "r18.pth")
    with pytest.raises(ValueError) as err:
        load_checkpoint(build_model("resnet50"), tmp_path / "r18.pth")
    text = str(err.value)
    assert "\n" not in text
    assert "r18.pth" in text and "resnet50" in text and "pose.arch" in text
    assert "shape mismatch" in text and "missing" in text


def test_wrong_keypoint_count_reports_shape_mismatch(tmp_path):
    torch.save(layout_state(build_model("resnet18", 17), "native"), tmp_path / "k17.pth")
    with pytest.raises(ValueError, match=r"2 shape mismatch: final_layer.weight \(17, 256, 1, 1\) vs model \(21, 256, 1, 1\).*pose.num_keypoints") as err:
        load_checkpoint(build_model("resnet18", 21), tmp_path / "k17.pth")
    assert "k17.pth" in str(err.value)


def test_corrupt_and_non_checkpoint_files_are_one_line_errors(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(layout_state(build_model("resnet18"), "native"), good)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(good.read_bytes()[: 10000])
    with pytest.raises(ValueError, match="corrupt.pth cannot be read as a torch checkpoint.*download it again") as err:
        load_checkpoint(build_model("resnet18"), corrupt)
    assert "\n" not in str(err.value)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pth cannot be read"):
        load_checkpoint(build_model("resnet18"), text)
    other = tmp_path / "other.pth"
    torch.save({"epoch": 3, "lr": 0.1}, other)
    with pytest.raises(ValueError, match="other.pth is not a model checkpoint"):
        load_checkpoint(build_model("resnet18"), other)
    with pytest.raises(FileNotFoundError, match="missing.pth not found"):
        load_checkpoint(build_model("resnet18"), tmp_path / "missing.pth")


def test_registry_entries_are_consistent():
    assert {"simplebaseline-resnet50-256x192", "simplebaseline-mobilenetv2-256x192"} <= set(REGISTRY)
    for info in REGISTRY.values():
        assert info.url.startswith("https://download.openmmlab.com/mmpose/top_down/")
        assert f"-{info.sha256}_" in info.filename  # hash prefix is part of the published file name
        assert f"{info.input_size[0]}x{info.input_size[1]}" in info.filename
        assert 60 < info.coco_ap < 80
    assert REGISTRY["simplebaseline-resnet50-256x192"].coco_ap == 71.8
    assert weights.registry_name("resnet152", [384, 288]) == "simplebaseline-resnet152-384x288"
    with pytest.raises(ValueError, match="no pretrained checkpoint for arch 'resnet18'"):
        weights.registry_name("resnet18", [256, 192])


# --- download over real local HTTP ------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_checks_hash_and_shows_progress(http_root, tmp_path, capfd):
    root, base = http_root
    payload = bytes(range(256)) * 4000
    (root / "ckpt.pth").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "ckpt.pth"
    assert download(f"{base}/ckpt.pth", dest, digest[:8]) == dest
    assert dest.read_bytes() == payload
    err = capfd.readouterr().err
    assert "ckpt.pth: 100%" in err and "0.98M/0.98M" in err  # tqdm: name, percent, MiB done/total
    assert not list(dest.parent.glob("*.part"))
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # a plain file's mode, not mkstemp's 0600


def test_hash_mismatch_leaves_nothing_behind(http_root, tmp_path):
    root, base = http_root
    (root / "ckpt.pth").write_bytes(b"tampered" * 1000)
    dest = tmp_path / "cache" / "ckpt.pth"
    with pytest.raises(RuntimeError, match="does not start with the expected 0badc0de.*nothing was written"):
        download(f"{base}/ckpt.pth", dest, "0badc0de", progress=False)
    assert not dest.exists() and not list(dest.parent.glob("*"))


def test_no_network_error_says_where_to_place_the_file(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on: connection refused, like being offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "cache" / "res50.pth"
    with pytest.raises(RuntimeError) as err:
        download(f"http://127.0.0.1:{port}/res50.pth", dest, progress=False)
    text = str(err.value)
    assert "\n" not in text and f"place it at {dest}" in text and "--model" in text


def test_fetch_uses_cache_then_downloads_named_checkpoint(http_root, tmp_path, monkeypatch):
    root, base = http_root
    source = randomized("resnet18")
    torch.save({"state_dict": layout_state(source, "mmpose0")}, root / "r18_coco_256x192-00000000_2020.pth")
    digest = hashlib.sha256((root / "r18_coco_256x192-00000000_2020.pth").read_bytes()).hexdigest()[:8]
    info = CheckpointInfo("test-r18", "resnet18", (256, 192), f"{base}/r18_coco_256x192-00000000_2020.pth", digest, 70.0)
    monkeypatch.setitem(REGISTRY, "test-r18", info)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=f"place it at {cache / info.filename}"):
        fetch("test-r18", cache, allow_download=False)
    path = fetch("test-r18", cache, progress=False)
    assert path == cache / info.filename and path.is_file()
    assert fetch("test-r18", cache, allow_download=False) == path  # cached: no network needed
    assert_same(source, weights.load_pretrained("test-r18", "resnet50", weights_dir=cache))  # arch from the registry
    with pytest.raises(ValueError, match="unknown checkpoint 'nope'.*avatar-bridge weights"):
        fetch("nope", cache)
    from avatar_bridge.config import PoseConfig
    from avatar_bridge.pose import TorchBackend, load_estimator

    estimator = load_estimator(PoseConfig(model="test-r18", arch="mobilenetv2", input_size=[384, 288],
                                          weights_dir=str(cache), download=False, threads=1))
    assert isinstance(estimator.backend, TorchBackend) and estimator.backend.model.arch == "resnet18"
    assert (estimator.input_h, estimator.input_w) == (256, 192)  # the registry entry decides, not the config
    other = tmp_path / "cli-cache"
    assert cli_main(["weights", "download", "test-r18", "--dir", str(other)]) == 0  # the CLI path, same server
    assert (other / info.filename).read_bytes() == path.read_bytes()


def test_weights_cli_lists_registry(tmp_path, capsys):
    assert cli_main(["weights", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "simplebaseline-resnet50-256x192" in out and "71.8" in out and str(tmp_path) in out


# --- what publishers and trainers actually save -----------------------------------------------------

MMPOSE1_CONFIG = """
codec = dict(type='MSRAHeatmap', input_size=(288, 384), heatmap_size=(72, 96), sigma=3)
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18),
    head=dict(type='HeatmapHead', in_channels=512, out_channels=17, decoder=codec),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True))
import os
unsafe = os.getcwd()
"""

MMPOSE0_CONFIG = """
channel_cfg = dict(num_output_channels=17, dataset_joints=17)
data_cfg = dict(image_size=[192, 256], heatmap_size=[48, 64], num_output_channels=channel_cfg['num_output_channels'])
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TopDownAffine'),
    dict(type='ToTensor'),
    dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
]
"""


def mmpose1_checkpoint(model, config: str = MMPOSE1_CONFIG) -> dict:
    """What MMPose 1.x publishes: numpy arrays in meta['dataset_meta'] beside the weights."""
    import numpy as np

    return {"meta": {"cfg": config, "mmengine_version": "0.10.7",
                     "dataset_meta": {"num_keypoints": 17, "sigmas": np.full(17, 0.05, np.float32),
                                      "keypoint_colors": np.zeros((17, 3), np.uint8),
                                      "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]}},
            "state_dict": layout_state(model, "mmpose1")}


@pytest.mark.parametrize("zipfile", [True, False])
def test_mmpose1_checkpoint_with_numpy_meta_loads(tmp_path, zipfile):
    source = randomized("resnet18")
    path = tmp_path / "best_coco_AP_epoch_210.pth"
    torch.save(mmpose1_checkpoint(source), path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # torch alone refuses it: the reason this code exists
    assert_same(source, load_checkpoint(build_model("resnet18"), path))
    state, meta = weights.inspect_checkpoint(path)
    assert meta.layout == "mmpose1" and meta.arch == "resnet18" and meta.num_keypoints == 17
    assert meta.input_size == (384, 288) and meta.sources["input_size"] == "meta config codec.input_size"
    assert meta.channel_order == "rgb" and meta.mean == (123.675, 116.28, 103.53)
    assert meta.flip_indices[:3] == (0, 2, 1)


def test_numpy1_pickles_load_too(tmp_path):
    """numpy 1.x writes numpy.core.multiarray where numpy 2 writes numpy._core.multiarray."""
    path = tmp_path / "np1.pth"
    torch.save(mmpose1_checkpoint(randomized("resnet18")), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    obj = weights.read_checkpoint(path)
    assert obj["meta"]["dataset_meta"]["sigmas"].dtype.name == "float32"


def test_microsoft_training_checkpoint_loads_and_is_bgr(tmp_path):
    import numpy as np

    source = randomized("resnet18")
    optimizer = torch.optim.Adam(source.parameters(), lr=1e-3)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 140, "model": "pose_resnet", "state_dict": layout_state(source, "microsoft"),
                "best_state_dict": layout_state(source, "microsoft"), "perf": np.float64(0.702),
                "optimizer": optimizer.state_dict()}, path)
    assert_same(source, load_checkpoint(build_model("resnet18"), path))
    _, meta = weights.inspect_checkpoint(path)
    assert meta.layout == "microsoft" and meta.channel_order == "bgr" and meta.mean == (123.675, 116.28, 103.53)


def test_mmpose1_training_checkpoint_with_mmengine_history_loads_without_mmengine(tmp_path, monkeypatch):
    import sys

    import numpy as np

    package = tmp_path / "fake" / "mmengine" / "logging"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "history_buffer.py").write_text(
        "class HistoryBuffer:\n    def __init__(self, values):\n        self._log_history = values\n        self._max_length = 100\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    from mmengine.logging.history_buffer import HistoryBuffer  # the stand-in for the real mmengine

    source = randomized("resnet18")
    ckpt = mmpose1_checkpoint(source)
    ckpt["message_hub"] = {"log_scalars": {"train/loss": HistoryBuffer(np.array([0.1, 0.05]))}, "runtime_info": {"epoch": 210}}
    ckpt["optimizer"] = torch.optim.Adam(source.parameters()).state_dict()
    path = tmp_path / "epoch_210.pth"
    torch.save(ckpt, path)
    for name in [m for m in sys.modules if m.startswith("mmengine")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "nothing"))
    sys.path.remove(str(tmp_path / "fake"))
    obj = weights.read_checkpoint(path)
    buffer = obj["message_hub"]["log_scalars"]["train/loss"]
    assert type(buffer).__name__ == "_HistoryBufferStandIn"  # inert: no mmengine class was imported
    np.testing.assert_array_equal(buffer._log_history, [0.1, 0.05])
    assert_same(source, load_checkpoint(build_model("resnet18"), path))


class Tripwire:
    """An object whose unpickling would run code: the safe loader must refuse it without running it."""

    fired = False

    def __setstate__(self, state):
        Tripwire.fired = True


def test_arbitrary_objects_are_refused_with_cause_and_fix(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": layout_state(build_model("resnet18"), "native"), "extra": Tripwire()}, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(build_model("resnet18"), path)
    text = str(err.value)
    assert "\n" not in text and "odd.pth holds" in text and "Tripwire" in text
    assert "corrupt" not in text and "weights_only=False" in text and "torch.save" in text
    assert not Tripwire.fired


def test_config_text_is_parsed_not_executed():
    cfg = weights.parse_config_text(MMPOSE1_CONFIG + "\nboom = __import__('os').system('false')\n")
    assert cfg["codec"]["input_size"] == (288, 384) and cfg["model"]["head"]["decoder"]["sigma"] == 3
    assert "unsafe" not in cfg and "boom" not in cfg
    old = weights.parse_config_text(MMPOSE0_CONFIG)
    assert old["data_cfg"]["num_output_channels"] == 17 and old["test_pipeline"][3]["std"][0] == 0.229
    assert weights.parse_config_text("this is not python (") == {}


def test_mmpose0_meta_gives_size_and_rgb(tmp_path):
    path = tmp_path / "latest.pth"
    torch.save({"meta": {"config": MMPOSE0_CONFIG}, "state_dict": layout_state(build_model("resnet18"), "mmpose0")}, path)
    _, meta = weights.inspect_checkpoint(path)
    assert meta.input_size == (256, 192) and meta.sources["input_size"] == "meta config data_cfg.image_size"
    assert meta.channel_order == "rgb"
    assert meta.mean == pytest.approx((123.675, 116.28, 103.53)) and meta.std == pytest.approx((58.395, 57.12, 57.375))


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv2"])
@pytest.mark.parametrize("layout", ["microsoft", "mmpose0", "mmpose1", "native"])
def test_arch_is_read_from_the_keys(arch, layout):
    if arch == "mobilenetv2" and layout == "microsoft":
        pytest.skip("Microsoft published no MobileNetV2")
    keys = list(layout_state(build_model(arch), layout))
    assert weights.infer_arch(keys) == arch


def test_estimator_takes_size_arch_keypoints_and_channel_order_from_the_checkpoint(tmp_path):
    from avatar_bridge.config import PoseConfig
    from avatar_bridge.pose import load_estimator

    path = tmp_path / "best_coco_AP_epoch_210.pth"
    torch.save(mmpose1_checkpoint(randomized("resnet18", 17)), path)
    est = load_estimator(PoseConfig(model=str(path), arch="resnet50", input_size=[256, 192], threads=1))
    assert est.backend.model.arch == "resnet18" and (est.input_h, est.input_w) == (384, 288)
    assert est.source == [2, 1, 0]  # RGB from bgr_to_rgb=True
    ms = tmp_path / "pose_resnet_18_256x192.pth.tar"
    torch.save(layout_state(randomized("resnet18", 14), "microsoft"), ms)
    with pytest.raises(ValueError, match=r"has 14 keypoints .*but pose.num_keypoints = 17: set pose.num_keypoints = 14"):
        load_estimator(PoseConfig(model=str(ms), arch="mobilenetv2", num_keypoints=17, threads=1))
    est = load_estimator(PoseConfig(model=str(ms), arch="mobilenetv2", num_keypoints=14, threads=1))
    assert est.backend.model.num_keypoints == 14 and (est.input_h, est.input_w) == (256, 192)
    assert est.source == [0, 1, 2]  # Microsoft layout: BGR input, automatically
    np_offset = -np.array([123.675, 116.28, 103.53], np.float32) / np.array([58.395, 57.12, 57.375], np.float32)
    np.testing.assert_allclose(est.offset, np_offset, rtol=1e-6)  # mean/std in RGB order, applied to B, G, R
    forced = load_estimator(PoseConfig(model=str(ms), channel_order="rgb", num_keypoints=14, threads=1))
    assert forced.source == [2, 1, 0]  # an explicit setting wins


def test_caffe_named_checkpoint_needs_the_caffe_arch(tmp_path):
    from avatar_bridge.config import PoseConfig
    from avatar_bridge.pose import load_estimator

    source = randomized("resnet50")
    path = tmp_path / "pose_resnet_50_256x192_caffe.pth.tar"
    torch.save(layout_state(source, "microsoft"), path)
    with pytest.raises(ValueError, match="caffe-style checkpoint.*pass --arch / pose.arch resnet50-caffe"):
        load_estimator(PoseConfig(model=str(path), arch="resnet50"))
    est = load_estimator(PoseConfig(model=str(path), arch="resnet50-caffe", threads=1))
    assert est.backend.model.arch == "resnet50-caffe"
    assert est.backend.model.backbone.layer2[0].conv1.stride == (2, 2)
