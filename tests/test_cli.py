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


def test_cli_limits_blas_to_one_thread():
    from threadpoolctl import threadpool_info

    cli.limit_blas_threads()
    blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
    assert blas and all(info["num_threads"] == 1 for info in blas)
