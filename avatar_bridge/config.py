"""Configuration: TOML presets in ``configs/`` plus CLI overrides, validated with clear errors.

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

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


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


@dataclass
class DetectorConfig:
    name: str = "none"  # none | yolox:PATH.onnx | fasterrcnn_resnet50_fpn | fasterrcnn_mobilenet_v3_large_fpn | ssdlite
    score_threshold: float = field(default=0.4, metadata={"range": (0.0, 1.0)})
    nms_threshold: float = field(default=0.45, metadata={"range": (0.0, 1.0)})
    every_n_frames: int = field(default=30, metadata={"range": (1, 100000)})
    max_people: int = field(default=4, metadata={"range": (1, 64)})


@dataclass
class PoseConfig:
    model: str = ""  # registry name, .pth checkpoint, or .onnx file; empty = auto
    arch: str = "resnet50"
    input_size: list = field(default_factory=lambda: [256, 192])  # height, width
    device: str = "cpu"
    threads: int = field(default=0, metadata={"range": (0, 256)})  # 0 = library default
    flip_test: bool = False
    decode: str = field(default="quarter", metadata={"choices": ("argmax", "quarter", "dark")})
    fp16: bool = False


@dataclass
class SmoothingConfig:
    method: str = field(default="kalman", metadata={"choices": ("kalman", "one_euro", "none")})


@dataclass
class RetargetConfig:
    mirror: bool = True
    upper_body: bool = False


@dataclass
class VmcConfig:
    enabled: bool = True
    targets: list = field(default_factory=lambda: ["127.0.0.1:39539"])
    rate: float = field(default=60.0, metadata={"range": (1.0, 240.0)})


@dataclass
class WebSocketConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=8765, metadata={"range": (0, 65535)})
    token: str = ""
    rate: float = field(default=60.0, metadata={"range": (1.0, 240.0)})


@dataclass
class RecordConfig:
    path: str = ""  # empty = no recording
    bvh: str = ""  # empty = no live BVH export


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


def config_from_dict(data: dict) -> AppConfig:
    sections = {f.name: f for f in dataclasses.fields(AppConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]: allowed sections are {', '.join(sections)}")
    hints = get_type_hints(AppConfig)
    return AppConfig(**{name: section_from_dict(hints[name], table, name) for name, table in data.items()})


def resolve_preset(name_or_path: str) -> Path:
    """``cpu-fast`` -> configs/cpu-fast.toml; anything with a suffix or slash is a path."""
    path = Path(name_or_path)
    if path.suffix or "/" in name_or_path:
        return path
    return CONFIG_DIR / f"{name_or_path}.toml"


def load_config(name_or_path: str | None = None) -> AppConfig:
    """Load a preset name or TOML path; None gives the defaults."""
    if name_or_path is None:
        return AppConfig()
    path = resolve_preset(name_or_path)
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))) if CONFIG_DIR.is_dir() else "none"
        raise ConfigError(f"config file {path} not found: pass a TOML path or one of the presets ({presets})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
