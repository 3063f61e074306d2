"""Bad input of every kind gets ONE clear line, never a traceback, and never NaN on the wire (issue #10).

The command-line cases run the real ``avatar-bridge`` as subprocesses. They are started all at once
by a module fixture (each one mostly waits for imports, so in parallel they take the time of about
two) and every case is then checked by its own test: exit status 2, no traceback, exactly one
``avatar-bridge CMD: error: ...`` line on stderr that names the bad file/key/value and the fix.
The table in docs/reliability.md lists these cases with the messages seen here.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from avatar_bridge import protocol, skeleton
from avatar_bridge.config import RetargetConfig, SmoothingConfig, WebSocketConfig
from avatar_bridge.retarget import Retargeter
from avatar_bridge.server import MAX_INCOMING_BYTES, WebSocketServer
from avatar_bridge.smooth import make_stabilizer
from avatar_bridge.types import OutputFrame, OutputPerson
from avatar_bridge.types import Pose2D
from conftest import ROOT

# --- files the cases use ----------------------------------------------------------------------------


def write_tiny_video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


def write_onnx(path: Path, inputs: list[tuple[str, list[int]]]) -> Path:
    """A tiny valid ONNX graph whose output is its first input: onnxruntime loads it fine."""
    import onnx
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, inputs[0][1])
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0][0]], ["out"])], "tiny", values, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_checkpoints(folder: Path) -> dict[str, Path]:
    """Real checkpoints: a ResNet whose layer3 has a block count no known arch has (so its arch cannot
    be read from it and the configured resnet18 is tried), a resnet18 one with 21 keypoints (another
    keypoint count than configured), and a resnet18 one cut short (corrupt)."""
    import torch

    from avatar_bridge.model import build_model

    torch.set_num_threads(1)
    paths = {
        "other_arch": folder / "odd_resnet.pth",
        "other_keypoints": folder / "resnet18_21kp.pth",
        "corrupt": folder / "corrupt.pth",
    }
    odd = {k: v for k, v in build_model("resnet34", 17).state_dict().items() if not k.startswith("backbone.layer3.5.")}
    torch.save(odd, paths["other_arch"])
    torch.save(build_model("resnet18", 21).state_dict(), paths["other_keypoints"])
    paths["corrupt"].write_bytes(paths["other_keypoints"].read_bytes()[:20000])
    return paths


@dataclass
class Case:
    command: list[str]  # after "avatar-bridge"
    fragments: list[str]  # each must appear in the one error line


def cli_cases(tmp: Path) -> dict[str, Case]:
    video = write_tiny_video(tmp / "tiny.mp4")
    ckpt = write_checkpoints(tmp)
    resnet18 = tmp / "resnet18.toml"
    resnet18.write_text('[pose]\narch = "resnet18"\n')
    (tmp / "broken.toml").write_text("[source\nwidth = 1280\n")
    (tmp / "range.toml").write_text("[smoothing]\nmin_confidence = 2.5\n")
    (tmp / "unknown.toml").write_text("[vmc]\nrate_hz = 60\n")
    (tmp / "type.toml").write_text('[websocket]\nport = "eighty"\n')
    (tmp / "choice.toml").write_text('[smoothing]\nmethod = "magic"\n')
    (tmp / "not_a_take.abrec").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(200))
    two_inputs = write_onnx(tmp / "two_inputs.onnx", [("image", [1, 3, 64, 48]), ("extra", [1, 4])])
    flat_input = write_onnx(tmp / "flat_input.onnx", [("vector", [1, 128])])
    grey_input = write_onnx(tmp / "grey_input.onnx", [("image", [1, 1, 64, 48])])
    (tmp / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 50)
    (tmp / "exists.abrec").write_bytes(b"keep me")
    quiet = ["--headless", "--quiet", "--no-vmc", "--no-ws"]
    on_video = ["run", "--source", str(video), *quiet, "--max-frames", "1"]
    return {
        "invalid_toml": Case(["run", "--config", str(tmp / "broken.toml"), *quiet], ["broken.toml", "invalid TOML"]),
        "out_of_range": Case(["run", "--config", str(tmp / "range.toml"), *quiet],
                             ["range.toml", "smoothing.min_confidence = 2.5", "allowed 0.0 to 1.0"]),
        "unknown_key": Case(["run", "--config", str(tmp / "unknown.toml"), *quiet], ["unknown key vmc.rate_hz", "allowed keys"]),
        "wrong_type": Case(["run", "--config", str(tmp / "type.toml"), *quiet], ["websocket.port must be an integer", "'eighty'"]),
        "bad_choice": Case(["run", "--config", str(tmp / "choice.toml"), *quiet], ["smoothing.method = 'magic'", "kalman"]),
        "missing_preset": Case(["run", "--config", "no-such-preset", *quiet], ["no-such-preset", "presets"]),
        "cli_out_of_range": Case(["run", "--source", "synthetic", "--threads", "999", *quiet], ["pose.threads = 999", "0 to 256"]),
        "missing_source": Case(["run", "--source", str(tmp / "nope.mp4"), *quiet], ["nope.mp4", "not found", "synthetic"]),
        "missing_camera": Case(["run", "--source", "/dev/video97", *quiet], ["/dev/video97", "does not exist", "--source"]),
        "not_a_video": Case(["run", "--source", str(tmp / "garbage.onnx"), *quiet], ["garbage.onnx", "could not be opened"]),
        "corrupt_weights": Case([*on_video, "--model", str(ckpt["corrupt"])], ["corrupt.pth", "cannot be read as a torch checkpoint"]),
        "other_architecture": Case([*on_video, "--config", str(resnet18), "--model", str(ckpt["other_arch"])],
                                   ["odd_resnet.pth", "resnet18", "pose.arch"]),
        "other_keypoint_count": Case([*on_video, "--config", str(resnet18), "--model", str(ckpt["other_keypoints"])],
                                     ["resnet18_21kp.pth", "(21, 256, 1, 1)", "pose.num_keypoints"]),
        "onnx_two_inputs": Case([*on_video, "--model", str(two_inputs)], ["two_inputs.onnx", "expected one NCHW image input", "extra"]),
        "onnx_flat_input": Case([*on_video, "--model", str(flat_input)], ["flat_input.onnx", "expected one NCHW image input"]),
        "onnx_grey_input": Case([*on_video, "--model", str(grey_input)], ["grey_input.onnx", "1 channels, expected 3"]),
        "onnx_garbage": Case([*on_video, "--model", str(tmp / "garbage.onnx")], ["garbage.onnx", "cannot be loaded by onnxruntime"]),
        "play_not_a_recording": Case(["play", str(tmp / "not_a_take.abrec"), "--no-vmc", "--no-ws"], ["not_a_take.abrec"]),
        "source_not_a_recording": Case(["run", "--source", str(tmp / "not_a_take.abrec"), *quiet], ["not_a_take.abrec"]),
        "export_not_a_recording": Case(["export-bvh", str(tmp / "not_a_take.abrec"), "-o", str(tmp / "out.bvh")], ["not_a_take.abrec"]),
        "open_bind_without_token": Case(["run", "--source", "synthetic", "--headless", "--quiet", "--no-vmc",
                                         "--ws-host", "0.0.0.0", "--ws-port", "0"], ["0.0.0.0", "--ws-token"]),
        "short_token": Case(["run", "--source", "synthetic", "--headless", "--quiet", "--no-vmc", "--ws-port", "0",
                             "--ws-token", "abc"], ["websocket.token is 3 characters", "at least 8"]),
        "bad_vmc_target": Case(["run", "--source", "synthetic", *quiet[:2], "--no-ws", "--vmc", "127.0.0.1:99999"],
                               ["127.0.0.1:99999", "1 to 65535"]),
        "record_missing_folder": Case(["run", "--source", "synthetic", *quiet, "--duration", "1",
                                       "--record", str(tmp / "no_dir" / "take.abrec")], ["no_dir", "does not exist"]),
        "record_existing_file": Case(["run", "--source", "synthetic", *quiet, "--duration", "1",
                                      "--record", str(tmp / "exists.abrec")], ["exists.abrec", "already exists", "--overwrite"]),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    return cli_cases(tmp_path_factory.mktemp("bad_input"))


CASE_NAMES = [
    "invalid_toml", "out_of_range", "unknown_key", "wrong_type", "bad_choice", "missing_preset", "cli_out_of_range",
    "missing_source", "missing_camera", "not_a_video", "corrupt_weights", "other_architecture", "other_keypoint_count",
    "onnx_two_inputs", "onnx_flat_input", "onnx_grey_input", "onnx_garbage", "play_not_a_recording",
    "source_not_a_recording", "export_not_a_recording", "open_bind_without_token", "short_token", "bad_vmc_target",
    "record_missing_folder", "record_existing_file",
]
# Also run as real ``python -m avatar_bridge`` processes (the rest call the same cli.main in-process:
# every subprocess costs seconds of imports on a busy machine).
SUBPROCESS_CASES = ["invalid_toml", "missing_source", "play_not_a_recording"]


def check_one_line(case: Case, returncode: int, stderr: str) -> None:
    command = case.command[0]
    assert "Traceback" not in stderr, stderr
    assert returncode == 2, (returncode, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith(f"avatar-bridge {command}: error: ")]
    assert len(errors) == 1, stderr
    for fragment in case.fragments:
        assert fragment in errors[0], (fragment, errors[0])
    # Anything else on stderr is a timestamped log line, never a stray multi-line dump.
    others = [line for line in stderr.splitlines() if line and line != errors[0]]
    assert all(line[:2].isdigit() and line[2] == ":" for line in others), others


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_user_error_is_one_line(cases, name, capfd, monkeypatch):
    from avatar_bridge import cli

    monkeypatch.chdir(Path(cases["invalid_toml"].command[2]).parent)  # nothing lands in the repo
    code = cli.main(cases[name].command)
    check_one_line(cases[name], code, capfd.readouterr().err)


@pytest.mark.slow  # a real avatar-bridge process / seconds of real time
def test_cli_user_errors_in_real_processes(cases):
    folder = Path(cases["invalid_toml"].command[2]).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "avatar_bridge", *cases[name].command], cwd=folder,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name in SUBPROCESS_CASES}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        check_one_line(cases[name], proc.returncode, err)


def test_no_case_left_files_behind(cases):
    """Failed runs create nothing: no recording in a missing folder, the existing take untouched."""
    from avatar_bridge import cli

    for name in ("record_missing_folder", "record_existing_file", "export_not_a_recording"):
        assert cli.main(cases[name].command) == 2
    tmp = Path(cases["invalid_toml"].command[2]).parent
    assert not (tmp / "no_dir").exists()
    assert (tmp / "exists.abrec").read_bytes() == b"keep me"
    assert not (tmp / "out.bvh").exists()


def test_every_case_is_checked(cases):
    assert sorted(cases) == sorted(CASE_NAMES)


# --- NaN / infinite keypoints into the stabilizer and the retargeter -----------------------------------

FLOATS = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0]),
)


@functools.lru_cache(maxsize=1)
def base_person() -> tuple[np.ndarray, np.ndarray]:
    """A plausible standing person, 1280x720 image, so that some frames are good and some bad."""
    from avatar_bridge.synthetic import SyntheticSource

    source = SyntheticSource(realtime=False)
    frame = source.read()
    source.close()
    person = frame.truth.people[0]
    return person.keypoints.astype(np.float32), person.scores.astype(np.float32)



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["kalman", "one_euro", "none"]),
    corruptions=st.lists(
        st.tuples(st.integers(0, 16), st.integers(0, 2), FLOATS), min_size=1, max_size=25),
    bad_frames=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_nan_and_inf_keypoints_never_come_out(method, corruptions, bad_frames):
    """Six frames, some corrupted with NaN/inf/huge values in keypoints or scores: the stabilizer's
    update/predict and the retargeter's rig are always finite, rotations unit length, JSON valid."""
    keypoints0, scores0 = base_person()
    stabilizer = make_stabilizer(SmoothingConfig(method=method))
    retargeter = Retargeter(RetargetConfig(calibration_seconds=0.05))
    t = 100.0
    for frame_no, bad in enumerate(bad_frames):
        kp = keypoints0 + np.float32(frame_no)
        sc = scores0.copy()
        if bad:
            for joint, axis, value in corruptions:
                if axis < 2:
                    kp[joint, axis] = value
                else:
                    sc[joint] = value
        out_kp, out_sc = stabilizer.update(kp, sc, t)
        for arr in (out_kp, out_sc, *stabilizer.predict(t + 0.05)):
            assert np.all(np.isfinite(arr)), (method, arr)
        assert np.all((out_sc >= 0) & (out_sc <= 1))
        for keypoints, scores in ((kp, sc), (out_kp, out_sc)):
            rig = retargeter.solve(keypoints, scores, t, image_size=(1280, 720))
            assert np.all(np.isfinite(rig.hips_position))
            for name, q in rig.rotations.items():
                assert np.all(np.isfinite(q)) and abs(np.linalg.norm(q) - 1.0) < 1e-3, (name, q)
            assert all(math.isfinite(c) for c in rig.confidence.values())
            person = OutputPerson(1, Pose2D(np.asarray(keypoints, np.float32), np.asarray(scores, np.float32), track_id=1), rig)
            protocol.encode(protocol.frame_message(OutputFrame(t, 1280, 720, [person], 1), 1, t))  # raises on NaN
        t += 1 / 30


# --- malformed and oversized WebSocket messages --------------------------------------------------------


@pytest.fixture
def live_server():
    srv = WebSocketServer(WebSocketConfig(port=0, control_rate=1000.0)).start()
    yield srv
    srv.stop()


def ask(ws, data) -> dict:
    ws.send(data)
    return json.loads(ws.recv(timeout=5))


MALFORMED = [
    (b"\x00\x01binary", "binary messages are not accepted"),
    ("", "malformed JSON"),
    ("{", "malformed JSON"),
    ("[1, 2, 3]", "must be a JSON object"),
    ("null", "must be a JSON object"),
    ('{"type": NaN}', "malformed JSON"),
    ('{"type": "ping", "nonce": Infinity}', "malformed JSON"),
    ('{"type": "pause", "paused": "yes"}', "pause needs"),
    ('{"type": "select", "id": -1}', "select needs"),
    ('{"type": "select", "id": 1e400}', "select needs"),
    ('{"type": "select", "id": true}', "select needs"),
    ('{"type": "calibrate", "path": "/etc/passwd"}', "unexpected key 'path'"),
    ('{"type": "record", "path": "/tmp/x.abrec"}', "unknown message type 'record'"),
    ('{"type": "ping", "nonce": "' + "n" * 200 + '"}', "at most 128 characters"),
    ("[" * 2000 + "]" * 2000, "nested too deeply"),  # found by this test: used to kill the connection (RecursionError)
    ('{"type": "ping", "nonce": ' + "[" * 1500 + "]" * 1500 + "}", "nested too deeply"),
    ("x" * 5000, "limited to 4096 bytes"),
    ('{"type": "ping", "nonce": "' + "é" * 2100 + '"}', "limited to 4096 bytes"),  # 4200 UTF-8 bytes
]


@pytest.mark.parametrize("data,fragment", MALFORMED, ids=[f"malformed{i}" for i in range(len(MALFORMED))])
def test_malformed_message_gets_an_error_and_the_connection_stays_usable(live_server, data, fragment):
    with connect(f"ws://127.0.0.1:{live_server.port}/", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        reply = ask(ws, data)
        assert reply["type"] == "error" and fragment in reply["message"], reply
        assert ask(ws, '{"type": "ping", "nonce": "still-there"}')["nonce"] == "still-there"


def test_oversized_message_closes_only_that_connection(live_server):
    with connect(f"ws://127.0.0.1:{live_server.port}/", open_timeout=5) as healthy, \
            connect(f"ws://127.0.0.1:{live_server.port}/", open_timeout=5, max_size=None) as big:
        healthy.recv(timeout=5)
        big.recv(timeout=5)
        big.send("x" * (MAX_INCOMING_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            big.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        assert ask(healthy, '{"type": "ping", "nonce": 7}')["nonce"] == 7
        assert live_server.running


def test_invalid_utf8_text_frame_closes_only_that_connection(live_server):
    """A text frame that is not UTF-8 breaks the WebSocket protocol itself: websockets closes it
    with 1007; the server and its other clients carry on."""
    from test_server import raw_ws_connect  # the raw-socket handshake helper of the streaming tests

    with connect(f"ws://127.0.0.1:{live_server.port}/", open_timeout=5) as healthy:
        healthy.recv(timeout=5)
        sock = raw_ws_connect(live_server.port)
        try:
            payload = b"\xff\xfe\xfd"
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # FIN + text, masked
            sock.settimeout(5)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\x88" in data:  # a close frame arrived
                    break
            close_at = data.index(b"\x88")
            code = int.from_bytes(data[close_at + 2:close_at + 4], "big")
            assert code == 1007
        finally:
            sock.close()
        assert ask(healthy, '{"type": "ping", "nonce": 8}')["nonce"] == 8


def test_every_rig_bone_name_is_known():
    """The retargeter only emits bones the protocol knows (the fuzz above checks their values)."""
    keypoints, scores = base_person()
    rig = Retargeter(RetargetConfig()).solve(keypoints, scores, 1.0, image_size=(1280, 720))
    assert set(rig.rotations) <= set(skeleton.BONE_NAMES)
