"""Configuration: TOML presets shipped in ``avatar_bridge/presets/`` (package data) plus CLI overrides, validated with clear errors.

Each stage owns one section dataclass here. A field's allowed range or choices live in its
metadata, so validation and the error text come from one place:

    threshold: float = field(default=0.3, metadata={"range": (0.0, 1.0)})
    mode: str = field(default="kalman", metadata={"choices": ("kalman", "one_euro", "none")})

``load_config(path)`` reads a TOML file into :class:`AppConfig`; unknown sections and keys, wrong
types and out-of-range values raise :class:`ConfigError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).resolve().parent / "presets"  # package data: present in wheels and editable installs
DEFAULT_PRESET = "default"  # what run, record, play and bench load when --config is not given


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


def _check_value(name: str, value: Any, hint: Any, meta: dict) -> Any:
    hint_text = str(hint)
    if hint is bool or hint_text == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif hint is int or hint_text == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif hint is float or hint_text == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    elif hint is str or hint_text == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    elif "list" in hint_text or "tuple" in hint_text:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        value = list(value)
    if "range" in meta:
        lo, hi = meta["range"]
        if not (lo <= value <= hi):
            raise ConfigError(f"{name} = {value!r} is out of range: allowed {lo} to {hi}")
    if "choices" in meta:
        choices = meta["choices"]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item not in choices:
                raise ConfigError(f"{name} = {item!r} is not allowed: choose one of {', '.join(map(str, choices))}")
    return value


def section_from_dict(cls: type, data: dict, prefix: str) -> Any:
    """Build the section dataclass ``cls`` from a TOML table, validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]}: allowed keys are {', '.join(sorted(fields))}")
    values = {}
    for key, value in data.items():
        values[key] = _check_value(f"{prefix}.{key}", value, hints[key], dict(fields[key].metadata))
    return cls(**values)


def validate_section(section: Any, prefix: str) -> None:
    """Re-check a section's current values (after CLI overrides)."""
    hints = get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if value is None:
            continue
        setattr(section, f.name, _check_value(f"{prefix}.{f.name}", value, hints[f.name], dict(f.metadata)))


# --- Sections ---------------------------------------------------------------------------------------
# Stage owners add fields to their own section; keep each field documented by its name and metadata.


@dataclass
class SourceConfig:
    source: str = "synthetic"  # camera index, device path, video file, image folder, .bvh, "synthetic"
    width: int = field(default=1280, metadata={"range": (16, 7680)})
    height: int = field(default=720, metadata={"range": (16, 4320)})
    fps: float = field(default=30.0, metadata={"range": (1.0, 240.0)})
    realtime: bool = True  # pace video files at their frame rate; false = as fast as possible
    loop: bool = False
    seed: int = field(default=0, metadata={"range": (0, 2**31 - 1)})
    # --- added by the capture engineer (see docs/capture.md) ---
    resize: str = ""  # WIDTHxHEIGHT applied to decoded images before detection/pose, e.g. "640x360"
    duration: float = field(default=0.0, metadata={"range": (0.0, 1e7)})  # seconds to run; 0 = until the source ends
    # --- camera orientation (issue #16): applied to every frame before detection ---
    rotate: int = field(default=0, metadata={"choices": (0, 90, 180, 270)})  # degrees clockwise
    flip: bool = False  # mirror left-right (after rotate)


@dataclass
class DetectorConfig:
    name: str = "none"  # none | yolox:PATH.onnx | fasterrcnn_resnet50_fpn | fasterrcnn_mobilenet_v3_large_fpn | ssdlite
    score_threshold: float = field(default=0.4, metadata={"range": (0.0, 1.0)})
    nms_threshold: float = field(default=0.45, metadata={"range": (0.0, 1.0)})
    every_n_frames: int = field(default=30, metadata={"range": (1, 100000)})
    max_people: int = field(default=4, metadata={"range": (1, 64)})
    # --- added by the capture engineer (see docs/capture.md) ---
    model_dir: str = ""  # where named ONNX detectors live; empty = $AVATAR_BRIDGE_MODELS or ~/.cache/avatar-bridge/models
    threads: int = field(default=1, metadata={"range": (0, 256)})  # onnxruntime threads; 0 = library default
    redetect_below: float = field(default=0.35, metadata={"range": (0.0, 1.0)})  # track mean keypoint score that triggers a detection
    max_missed: int = field(default=60, metadata={"range": (0, 10000)})  # frames a hidden track keeps its id (box motion-predicted)
    people: str = field(default="all", metadata={"choices": ("all", "driver")})  # estimate every tracked person or only the driver
    driver: str = field(default="largest", metadata={"choices": ("largest", "central", "fixed")})  # who drives the avatar
    driver_id: int = field(default=1, metadata={"range": (0, 1000000)})  # track id for driver = "fixed"
    driver_switch_frames: int = field(default=20, metadata={"range": (1, 10000)})  # hysteresis before the driver changes
    # --- identity through occlusion (issue #16, see docs/capture.md "Tracking") ---
    driver_hold_seconds: float = field(default=2.0, metadata={"range": (0.0, 600.0)})  # a hidden driver keeps the role this long
    appearance_weight: float = field(default=0.4, metadata={"range": (0.0, 1.0)})  # torso colour share of the match score; 0 = off
    min_appearance: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # colour similarity below which a pose cannot continue a track


@dataclass
class PoseConfig:
    # registry name (``avatar-bridge weights``), .pth checkpoint, .onnx file, or "random" (untrained,
    # for timing); empty = the registry checkpoint of ``arch`` at ``input_size``
    model: str = ""
    arch: str = field(default="resnet50", metadata={"choices": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenetv2",
                                                                "resnet50-caffe", "resnet101-caffe", "resnet152-caffe")})
    input_size: list = field(default_factory=lambda: [256, 192])  # height, width (read from a static ONNX model)
    num_keypoints: int = field(default=17, metadata={"range": (1, 1000)})
    device: str = "cpu"  # cpu | cuda | cuda:N (torch backend; onnxruntime uses CUDA if its provider exists)
    threads: int = field(default=0, metadata={"range": (0, 256)})  # 0 = library default
    # onnxruntime, threads > 1: at load, time the model with 1 thread and with `threads`; keep 1 unless
    # `threads` is at least 15% faster (the other cores then go to the rest of the pipeline)
    auto_threads: bool = False
    flip_test: bool = False
    # reference / reference-dark: MMPose's decoding and flip merge (docs/pose.md); quarter / dark / argmax: earlier variants
    decode: str = field(default="reference", metadata={"choices": ("reference", "reference-dark", "quarter", "dark", "argmax")})
    fp16: bool = False  # autocast fp16; only on CUDA (ignored on CPU)
    # --- added by the pose engineer ---
    backend: str = field(default="auto", metadata={"choices": ("auto", "torch", "onnxruntime")})  # auto: .onnx -> onnxruntime
    channels_last: bool = True  # torch backend memory format
    padding: float = field(default=1.25, metadata={"range": (1.0, 3.0)})  # box enlargement before cropping
    # what the model expects; auto: what the checkpoint records (Microsoft layout: BGR), else rgb
    channel_order: str = field(default="auto", metadata={"choices": ("auto", "rgb", "bgr")})
    mean: list = field(default_factory=lambda: [123.675, 116.28, 103.53])  # per channel, 0..255 pixel units
    std: list = field(default_factory=lambda: [58.395, 57.12, 57.375])  # per channel, 0..255 pixel units
    max_batch: int = field(default=64, metadata={"range": (1, 1024)})  # crops per forward pass
    ort_optimization: str = field(default="all", metadata={"choices": ("disable", "basic", "extended", "all")})
    # onnxruntime on CPU: run 4x4 stride-2 deconvolutions as sub-pixel convolutions (exact; checked at load)
    ort_subpixel: bool = True
    weights_dir: str = ""  # where named checkpoints are cached; empty = torch hub cache (TORCH_HOME)
    download: bool = True  # false: never download, fail with the path to place the file at


@dataclass
class SmoothingConfig:
    method: str = field(default="kalman", metadata={"choices": ("kalman", "one_euro", "none")})
    # Kalman (see avatar_bridge/smooth.py and docs/smoothing.md). Lengths are in body heights.
    # imm = a still and a moving (constant-velocity) model per keypoint axis, mixed (docs/smoothing.md);
    # constant_velocity was tuned at acceleration 1, speed_gain 6 (set them with it).
    motion_model: str = field(default="imm", metadata={"choices": ("imm", "constant_velocity", "constant_acceleration")})
    acceleration: float = field(default=2.0, metadata={"range": (0.001, 1000.0)})  # process noise, body heights/s^2 (constant velocity, imm's moving model)
    jerk: float = field(default=2.0, metadata={"range": (0.001, 100000.0)})  # process noise, body heights/s^3 (constant acceleration)
    speed_gain: float = field(default=12.0, metadata={"range": (0.0, 1000.0)})  # 1/s: extra process noise per unit of joint speed (swinging limbs)
    innovation_gain: float = field(default=3.0, metadata={"range": (0.0, 1000.0)})  # extra process noise per unit of excess normalized innovation
    innovation_rate: float = field(default=0.3, metadata={"range": (0.01, 1.0)})  # update rate of that per-joint innovation average
    extrapolation_shrink: float = field(default=1.0, metadata={"range": (0.0, 100.0)})  # predict(t): shrink velocity by its uncertainty; 0 = plain model
    extrapolation_window: int = field(default=3, metadata={"range": (2, 8)})  # predict(t): filtered states the velocity line is fitted over
    extrapolation_fit: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # predict(t): share of that fitted slope in the velocity; 0 = filter state only
    prediction_check: float = field(default=1.0, metadata={"range": (0.0, 60.0)})  # s of memory of predict(t)'s own errors (backs off when prediction does not pay); 0 = off
    imm_hold_noise: float = field(default=0.001, metadata={"range": (0.0, 10.0)})  # imm: the still model's position noise, body heights per sqrt(s)
    imm_switch_rate: float = field(default=2.0, metadata={"range": (0.01, 100.0)})  # imm: expected switches between still and moving, per second
    body_coupling: float = field(default=0.0, metadata={"range": (0.0, 10.0)})  # whole-body motion share of the process noise; 0 = joints independent
    joint_share: float = field(default=1.0, metadata={"range": (0.0, 10.0)})  # per-joint share of the process noise when coupled
    measurement_noise: float = field(default=0.012, metadata={"range": (0.0001, 1.0)})  # keypoint noise at confidence 1, body heights
    # the keypoints' own noise measured over the last noise_window updates (0 = off) raises the
    # measurement sigma when it is above the model's, up to noise_scale_max times (smooth.MeasuredNoise)
    noise_window: int = field(default=30, metadata={"range": (0, 10000)})
    noise_scale_max: float = field(default=4.0, metadata={"range": (1.0, 100.0)})
    confidence_exponent: float = field(default=1.0, metadata={"range": (0.0, 4.0)})  # sigma = measurement_noise / confidence**exponent
    gate: float = field(default=16.0, metadata={"range": (0.0, 1e6)})  # Mahalanobis^2 gate (2 dof); 0 = off
    gate_frames: int = field(default=2, metadata={"range": (1, 1000)})  # consecutive gated frames that count as a real move
    # Both methods
    min_confidence: float = field(default=0.1, metadata={"range": (0.0, 1.0)})  # below = not measured
    hold_time: float = field(default=0.3, metadata={"range": (0.0, 10.0)})  # s a missing joint is predicted before it counts as lost
    missing_decay: float = field(default=0.25, metadata={"range": (0.001, 60.0)})  # s, time constant of a lost joint's confidence decay
    reacquire_time: float = field(default=0.15, metadata={"range": (0.0, 5.0)})  # s a re-found joint blends from where it was shown
    # Offline RTS smoother (convert): constant-velocity model over whole tracks, both directions
    rts_acceleration: float = field(default=6.0, metadata={"range": (0.001, 1000.0)})  # process noise, body heights/s^2
    # One Euro (coordinates in body heights)
    min_cutoff: float = field(default=1.0, metadata={"range": (0.001, 100.0)})  # Hz
    beta: float = field(default=1.0, metadata={"range": (0.0, 10000.0)})
    d_cutoff: float = field(default=1.0, metadata={"range": (0.001, 100.0)})  # Hz


@dataclass
class RetargetConfig:
    mirror: bool = True
    upper_body: bool = False
    # --- added by the retarget engineer (see docs/retarget.md) ---
    depth: str = field(default="foreshortening", metadata={"choices": ("foreshortening", "planar")})  # planar = depth 0 (baseline)
    min_score: float = field(default=0.3, metadata={"range": (0.0, 1.0)})  # keypoints below this are unseen
    calibration_seconds: float = field(default=1.0, metadata={"range": (0.05, 60.0)})  # automatic calibration period
    calibration_file: str = ""  # load at start if it exists; written after each calibration
    hold_seconds: float = field(default=0.5, metadata={"range": (0.0, 60.0)})  # unseen bones keep their last rotation
    ease_seconds: float = field(default=1.0, metadata={"range": (0.01, 60.0)})  # then ease to rest (arms down)
    elbow_max_deg: float = field(default=150.0, metadata={"range": (0.0, 180.0)})
    knee_max_deg: float = field(default=150.0, metadata={"range": (0.0, 180.0)})
    spine_max_deg: float = field(default=60.0, metadata={"range": (0.0, 180.0)})  # total hips -> upperChest bend/twist
    neck_max_deg: float = field(default=70.0, metadata={"range": (0.0, 180.0)})  # total upperChest -> head
    fov_deg: float = field(default=60.0, metadata={"range": (10.0, 170.0)})  # assumed horizontal FOV, for hips depth in metres
    auto_upper_body: bool = True  # hips never seen for calibration_seconds while calibrating: upper-body mode (logged)
    # learned depth-sign prior (docs/retarget.md): "default" = the shipped weights, a path (relative to
    # the current folder) = weights from `avatar-bridge train-depth-prior`, "" or "none" = the anatomy rules alone
    depth_prior: str = "default"

    def calibration_path(self) -> Path | None:
        """``calibration_file`` as the path every reader and writer uses (``~`` expanded); None when unset."""
        return Path(self.calibration_file).expanduser() if self.calibration_file else None


@dataclass
class VmcConfig:
    enabled: bool = True
    targets: list = field(default_factory=lambda: ["127.0.0.1:39539"])
    rate: float = field(default=60.0, metadata={"range": (1.0, 240.0)})
    # --- added by the streaming engineer (see docs/protocol.md, "VMC") ---
    # which bones are sent: all 55 | upper_body (no hips, no legs) | no_legs | no_hips
    bones: str = field(default="all", metadata={"choices": ("all", "upper_body", "no_legs", "no_hips")})
    mirror: bool = False  # mirror the avatar left/right on this output only
    # rest = every Bone/Pos carries its rest-pose local offset; hips_only = zeros except the hips (only
    # for receivers that ignore bone positions, e.g. EVMC4U with BonePositionSynchronize off)
    positions: str = field(default="rest", metadata={"choices": ("rest", "hips_only")})
    root_scale_offset: bool = False  # 14-argument /VMC/Ext/Root/Pos (scale 1,1,1 and offset 0,0,0)
    max_bundle_bytes: int = field(default=1400, metadata={"range": (256, 1472)})  # per UDP datagram
    # --- fitting the receiver's avatar (issue #16, see docs/protocol.md "VMC") ---
    # how the Hips position is sent: absolute = our skeleton's (hips 0.95 m above the floor at rest);
    # scaled = ours x hip_height / 0.95, so a receiver that puts the hips where they are sent (EVMC4U,
    # VMC4B) keeps its avatar's feet on the floor; offset = the same, minus the rest position (zero at
    # rest), for receivers that add the position to their model's rest hips
    hips: str = field(default="scaled", metadata={"choices": ("absolute", "scaled", "offset")})
    hip_height: float = field(default=0.0, metadata={"range": (0.0, 10.0)})  # receiver avatar's hips height (m); 0 = from avatar, else 0.95
    avatar: str = ""  # the receiver's .vrm: its hips height, and whether it has an upperChest
    fold_upper_chest: bool = True  # send upperChest's rotation inside chest (models without upperChest drop it)


@dataclass
class WebSocketConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=8765, metadata={"range": (0, 65535)})
    token: str = ""
    rate: float = field(default=60.0, metadata={"range": (1.0, 240.0)})
    # --- added by the streaming engineer (see docs/protocol.md, "WebSocket") ---
    # browser origins allowed besides http(s)://localhost|127.0.0.1|[::1] on any port; "*" allows any
    origins: list = field(default_factory=list)
    control_rate: float = field(default=20.0, metadata={"range": (1.0, 1000.0)})  # control msgs/s per client
    max_clients: int = field(default=32, metadata={"range": (1, 1024)})


@dataclass
class RecordConfig:
    path: str = ""  # empty = no recording
    bvh: str = ""  # empty = no live BVH export
    # --- added by the recording engineer ---
    overwrite: bool = False  # replace an existing recording / BVH file instead of refusing
    compress: bool = True  # zlib-compress frame blocks (3.4x smaller on retargeted mocap)
    flush_seconds: float = field(default=0.5, metadata={"range": (0.0, 60.0)})  # take time lost at most on a crash
    fsync: bool = False  # also force each block to disk (survives power loss, not only a killed process)
    bvh_fps: float = field(default=30.0, metadata={"range": (1.0, 240.0)})  # BVH frame rate (resampled with slerp)
    bvh_track: int = field(default=-1, metadata={"range": (-1, 2**31 - 1)})  # -1 = the driving person / first seen
    bvh_bones: str = field(default="body", metadata={"choices": ("body", "full")})  # full adds fingers, eyes, jaw
    bvh_units: str = field(default="cm", metadata={"choices": ("cm", "m")})


@dataclass
class AppConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    retarget: RetargetConfig = field(default_factory=RetargetConfig)
    vmc: VmcConfig = field(default_factory=VmcConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            validate_section(getattr(self, f.name), f.name)
        if self.smoothing.method == "kalman":
            check_motion_model(self.smoothing)
        from .depth_prior import weights_path

        try:
            weights_path(self.retarget.depth_prior)
        except ValueError as exc:
            raise ConfigError(f"retarget.depth_prior: {exc}") from None


def check_motion_model(smoothing: SmoothingConfig) -> None:
    """Raise ConfigError when the Kalman motion model cannot take the other smoothing settings: the
    IMM keeps every keypoint on its own, so it has no shared body offset (``body_coupling``)."""
    if smoothing.motion_model == "imm" and smoothing.body_coupling > 0:
        raise ConfigError("smoothing.body_coupling > 0 needs motion_model = \"constant_velocity\" or \"constant_acceleration\" "
                          "(the default, imm, keeps every keypoint on its own): set one of them")


def tuned_constant_velocity(smoothing: SmoothingConfig | None = None) -> SmoothingConfig:
    """``smoothing`` (default: the defaults) with the constant-velocity motion model at the process
    noise it was tuned at before the IMM became the default (acceleration 1, speed gain 6;
    docs/smoothing.md)."""
    return dataclasses.replace(smoothing or SmoothingConfig(), motion_model="constant_velocity", acceleration=1.0, speed_gain=6.0)


def config_from_dict(data: dict) -> AppConfig:
    sections = {f.name: f for f in dataclasses.fields(AppConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]: allowed sections are {', '.join(sections)}")
    hints = get_type_hints(AppConfig)
    return AppConfig(**{name: section_from_dict(hints[name], table, name) for name, table in data.items()})


def resolve_preset(name_or_path: str) -> Path:
    """``cpu-fast`` -> the packaged ``presets/cpu-fast.toml``; anything with a suffix or slash is a path."""
    path = Path(name_or_path)
    if path.suffix or "/" in name_or_path:
        return path
    return PRESET_DIR / f"{name_or_path}.toml"


def preset_names() -> list[str]:
    """The names ``--config`` accepts without a path (the packaged presets), sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_config(name_or_path: str | None = None) -> AppConfig:
    """Load a preset name or TOML path; None gives the defaults."""
    if name_or_path is None:
        return AppConfig()
    path = resolve_preset(name_or_path)
    if not path.is_file():
        presets = ", ".join(preset_names()) or "none"
        raise ConfigError(f"config file {path} not found: pass a TOML path or one of the presets ({presets})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
