import importlib
import subprocess
import sys

import pytest

from avatar_bridge import cli


def test_help_lists_every_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_module_has_the_entry_points(name):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.configure_parser)
    assert callable(module.run_command)


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "avatar_bridge"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "run" in out.stdout
