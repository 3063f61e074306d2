"""The live loop on real people (issue #16): command-line flags and pipeline-level behaviour."""

from __future__ import annotations

import argparse

import pytest

from avatar_bridge.config import ConfigError, load_config
from avatar_bridge.pipeline import add_source_arguments, apply_source_arguments, tracker_settings


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    return apply_source_arguments(parser.parse_args(list(argv)), load_config("default"))


def test_max_people_flag_sets_the_tracker_cap():
    config = parse("--max-people", "7")
    assert config.detector.max_people == 7
    assert tracker_settings(config.detector).max_people == 7
    assert tracker_settings(config.detector).driver_hold_seconds == 2.0
    with pytest.raises(ConfigError, match=r"detector\.max_people = 0 is out of range"):
        parse("--max-people", "0")
