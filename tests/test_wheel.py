"""A real wheel, installed in a fresh virtual environment, runs with a packaged preset.

An editable install (what CI and developers use) reads the presets from the checkout and so cannot
show that a normal ``pip install .`` ships them; this test builds the wheel, installs it with no
access to the checkout and runs the installed ``avatar-bridge`` from another folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("avatar_bridge-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    # The dependencies (torch, numpy, ...) come from this test's environment, added after the fresh
    # venv's own site-packages, so `avatar_bridge` itself can only come from the wheel.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, env_dir, tmp


def run_installed(env_dir: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(env_dir / "bin" / "avatar-bridge"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_contains_the_presets_and_the_viewer(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for preset in ("default", "cpu-fast", "cpu-balanced", "gpu-accurate"):
        assert f"avatar_bridge/presets/{preset}.toml" in names
    assert "avatar_bridge/web/index.html" in names
    assert "avatar_bridge/bench/mediapipe_runner.py" in names  # run as a script under MediaPipe's own venv


def test_installed_wheel_loads_a_preset(installed):
    _, env_dir, tmp = installed
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import avatar_bridge; print(avatar_bridge.__file__)"],
                           cwd=tmp, capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where  # the wheel, not the checkout
    done = run_installed(env_dir, tmp, "run", "--config", "cpu-fast", "--help")
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout


def test_installed_wheel_runs_the_synthetic_performer_with_a_preset(installed):
    _, env_dir, tmp = installed
    done = run_installed(env_dir, tmp, "run", "--config", "cpu-fast", "--source", "synthetic", "--headless", "--no-vmc",
                         "--no-ws", "--max-frames", "15", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "stopped (max frames): 15 frames" in done.stderr
    missing = run_installed(env_dir, tmp, "run", "--config", "no-such-preset", "--help")
    assert missing.returncode == 0  # --help is answered before the config is read
    bad = run_installed(env_dir, tmp, "run", "--config", "no-such-preset", "--source", "synthetic", "--headless",
                        "--no-vmc", "--no-ws", "--max-frames", "1")
    assert bad.returncode == 2 and "cpu-fast" in bad.stderr  # the error lists the packaged presets
