"""Config loading: presets, invalid TOML, unknown keys and out-of-range values name the key and the fix."""

from __future__ import annotations

import pytest

from avatar_bridge.config import PRESET_DIR, AppConfig, ConfigError, load_config


@pytest.mark.parametrize("name", ["default", "cpu-fast", "cpu-balanced", "gpu-accurate"])
def test_presets_load_and_validate(name):
    config = load_config(name)
    config.validate()
    assert isinstance(config, AppConfig)


def test_presets_name_models_not_paths():
    fast, balanced, accurate = (load_config(n) for n in ("cpu-fast", "cpu-balanced", "gpu-accurate"))
    assert fast.detector.name == "light-person-detector" and fast.detector.people == "driver"
    assert balanced.detector.name == "yolox-nano"
    assert accurate.pose.device == "cuda" and accurate.pose.flip_test
    for config in (fast, balanced, accurate):
        assert "/" not in config.pose.model and "/" not in config.detector.name


def write(tmp_path, text: str):
    path = tmp_path / "my.toml"
    path.write_text(text)
    return str(path)


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"my\.toml: invalid TOML"):
        load_config(write(tmp_path, "[source\nsource = 1"))


def test_unknown_section_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[camera\]"):
        load_config(write(tmp_path, "[camera]\nindex = 0\n"))
    with pytest.raises(ConfigError, match=r"unknown key detector\.evry_n_frames: allowed keys are .*every_n_frames"):
        load_config(write(tmp_path, "[detector]\nevry_n_frames = 5\n"))


def test_out_of_range_and_wrong_type_name_key_and_range(tmp_path):
    with pytest.raises(ConfigError, match=r"detector\.every_n_frames = 0 is out of range: allowed 1 to 100000"):
        load_config(write(tmp_path, "[detector]\nevery_n_frames = 0\n"))
    with pytest.raises(ConfigError, match=r"detector\.redetect_below = 1\.5 is out of range: allowed 0\.0 to 1\.0"):
        load_config(write(tmp_path, "[detector]\nredetect_below = 1.5\n"))
    with pytest.raises(ConfigError, match=r"detector\.driver = 'loudest' is not allowed: choose one of largest, central, fixed"):
        load_config(write(tmp_path, '[detector]\ndriver = "loudest"\n'))
    with pytest.raises(ConfigError, match=r"source\.fps must be a number"):
        load_config(write(tmp_path, '[source]\nfps = "fast"\n'))


def test_missing_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="cpu-fast") as info:
        load_config("no-such-preset")
    assert str(PRESET_DIR) in str(info.value)


def test_cli_override_is_validated_like_the_file():
    config = load_config("cpu-fast")
    config.detector.max_people = 0
    with pytest.raises(ConfigError, match=r"detector\.max_people = 0 is out of range: allowed 1 to 64"):
        config.validate()
