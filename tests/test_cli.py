import ast
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
    """In a fresh process, as the command line starts: every BLAS pool loaded by then (numpy's,
    scipy's, OpenCV's own OpenBLAS) and by the stages afterwards runs one thread."""
    code = ("from avatar_bridge import cli; cli.limit_blas_threads()\n"
            "import avatar_bridge.pipeline, avatar_bridge.smooth, avatar_bridge.retarget\n"
            "from threadpoolctl import threadpool_info\n"
            "print([(i['filepath'].rsplit('/', 1)[-1], i['num_threads']) for i in threadpool_info() if i['user_api'] == 'blas'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pools = ast.literal_eval(out.stdout.strip())  # [(library file, threads), ...]
    assert len(pools) >= 2 and all(threads == 1 for _, threads in pools), pools


def test_run_says_when_it_ended_before_a_calibration_was_saved(tmp_path, capsys):
    """`--calibration FILE` on a run too short to calibrate (or a take where nobody stands still)
    used to end without the file and without a word (a fresh user's trial)."""
    path = tmp_path / "calibration.json"
    args = ["run", "--source", "synthetic", "--headless", "--no-vmc", "--ws-port", "0", "--calibration", str(path)]
    assert cli.main([*args, "--duration", "0.3"]) == 0
    assert not path.exists()
    assert f"no calibration saved to {path}: the run ended before anyone finished calibrating" in capsys.readouterr().err
    assert cli.main([*args, "--duration", "2.5"]) == 0
    err = capsys.readouterr().err
    assert path.is_file() and "no calibration saved" not in err
