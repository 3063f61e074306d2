"""VMC sender over real UDP on loopback: oscdump (liblo), a python-osc server and a raw socket receive it."""

from __future__ import annotations

import argparse
import logging
import queue
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from avatar_bridge.commands import options
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_server import BlockingOSCUDPServer

from avatar_bridge import quat, skeleton, vmc
from avatar_bridge.config import VmcConfig
from avatar_bridge.types import OutputFrame, OutputPerson
from avatar_bridge.types import RigPose

ALL_UNITY = {skeleton.unity_name(b) for b in skeleton.BONE_NAMES}


def make_rig(seed: int = 0, dtype=np.float64) -> RigPose:
    rng = np.random.default_rng(seed)
    rotations = {name: quat.normalize(rng.normal(size=4)).astype(dtype) for name in skeleton.BODY_BONES}
    return RigPose(timestamp=1.0, track_id=1, hips_position=np.array([0.12, 0.91, -0.3], dtype=dtype), rotations=rotations)


def expected_bone(rig: RigPose, bone: str) -> tuple[np.ndarray, np.ndarray]:
    """(position, rotation) a receiver should get for ``bone`` (Unity frame), upperChest folded into
    chest (``vmc.fold_upper_chest``, on by default)."""
    q = vmc.VmcSender.fold_upper_chest(rig.rotations).get(bone, quat.IDENTITY)
    position = rig.hips_position if bone == "hips" else skeleton.REST_OFFSETS[skeleton.BONE_INDEX[bone]]
    return skeleton.to_unity_position(position), skeleton.to_unity_rotation(quat.normalize(q))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RawReceiver:
    """A plain UDP socket that keeps every datagram (to measure sizes and bundle structure)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []

    def drain(self, until_count: int, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.datagrams) < until_count and time.monotonic() < deadline:
            try:
                self.datagrams.append(self.sock.recv(65535))
            except socket.timeout:
                pass
        return self.datagrams

    def close(self):
        self.sock.close()


class OscDump:
    """``oscdump -L PORT`` (Debian liblo-tools) as an independent, non-Python receiver."""

    def __init__(self):
        exe = shutil.which("oscdump")
        if exe is None:
            pytest.skip("oscdump is not installed (apt-get install liblo-tools; .ci/run does it)")
        self.port = free_udp_port()
        cmd = [exe, "-L", str(self.port)]
        if shutil.which("stdbuf"):
            cmd = [shutil.which("stdbuf"), "-oL"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self._wait_ready()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _wait_ready(self):
        """Send probes until oscdump prints one: it binds asynchronously after start."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            probe = b"/probe\x00\x00,\x00\x00\x00"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                s.sendto(probe, ("127.0.0.1", self.port))
                try:
                    line = self.lines.get(timeout=0.1)
                except queue.Empty:
                    if self.proc.poll() is not None:
                        pytest.fail(f"oscdump exited: {self.proc.stderr.read()}")
                    continue
                if "/probe" in line:
                    time.sleep(0.15)  # let queued probes arrive, then forget them
                    self.read_all(0.05)
                    return
        pytest.fail("oscdump printed nothing within 10 s")

    def read_all(self, quiet: float = 0.3, timeout: float = 5.0) -> list[list[str]]:
        """Lines received until ``quiet`` s pass without one; each split into fields."""
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=quiet)
            except queue.Empty:
                break
            if "/probe" not in line:
                out.append(line.split())
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def oscdump():
    dump = OscDump()
    yield dump
    dump.close()


@pytest.fixture
def raw():
    receiver = RawReceiver()
    yield receiver
    receiver.close()


def parse_datagram(datagram: bytes) -> list:
    assert OscBundle.dgram_is_bundle(datagram), "every VMC datagram is a bundle"
    return [message for message in OscBundle(datagram)]


def test_oscdump_python_osc_and_raw_socket_receive_the_same_correct_frames(oscdump, raw):
    received: list[tuple] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    targets = [f"127.0.0.1:{oscdump.port}", f"127.0.0.1:{server.server_address[1]}", f"127.0.0.1:{raw.port}"]
    rigs = [make_rig(seed) for seed in range(3)]
    try:
        with vmc.VmcSender(VmcConfig(targets=targets)) as sender:
            for rig in rigs:
                sender.send_rig(rig)
                time.sleep(0.02)
            stats = sender.stats()
        datagrams = raw.drain(until_count=stats.datagrams[targets[2]])
        lines = oscdump.read_all()
        deadline = time.monotonic() + 5
        while len(received) < 3 * 58 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()

    # --- oscdump: addresses, type tags, argument counts, values ---
    per_frame = 1 + len(skeleton.BONES) + 2  # Root, 55 bones, OK, T
    assert len(lines) == 3 * per_frame, lines[:5]
    times = []
    for index, rig in enumerate(rigs):
        frame = lines[index * per_frame:(index + 1) * per_frame]
        addresses = [f[1] for f in frame]
        assert addresses[0] == "/VMC/Ext/Root/Pos" and addresses[-2:] == ["/VMC/Ext/OK", "/VMC/Ext/T"]
        root = frame[0]
        assert root[2] == "sfffffff" and root[3] == '"root"' and len(root) == 4 + 7
        bones = {}
        for fields in frame[1:-2]:
            assert fields[1] == "/VMC/Ext/Bone/Pos" and fields[2] == "sfffffff" and len(fields) == 11
            bones[fields[3].strip('"')] = np.array([float(v) for v in fields[4:]])
        assert set(bones) == ALL_UNITY
        for bone in skeleton.BONE_NAMES:
            values = bones[skeleton.unity_name(bone)]
            position, rotation = expected_bone(rig, bone)
            np.testing.assert_allclose(values[:3], position, atol=2e-6, err_msg=bone)
            np.testing.assert_allclose(values[3:], rotation, atol=2e-6, err_msg=bone)
            assert np.linalg.norm(values[:3]) > 0.01, f"{bone} has a zero position"
        ok = frame[-2]
        assert ok[2] == "iiii" and ok[3:] == ["1", "3", "0", "1"]
        t = frame[-1]
        assert t[2] == "f" and len(t) == 4
        times.append(float(t[3]))
    assert times == sorted(times) and 0.0 <= times[0] < 5.0  # seconds since start, not epoch

    # --- raw socket: every datagram a bundle under the size limit, one T per frame, T last ---
    assert len(datagrams) == stats.datagrams[targets[2]] >= 3 * 2
    assert max(len(d) for d in datagrams) <= 1400
    messages = [m for d in datagrams for m in parse_datagram(d)]
    assert len(messages) == 3 * per_frame
    t_positions = [i for i, m in enumerate(messages) if m.address == "/VMC/Ext/T"]
    assert t_positions == [per_frame - 1, 2 * per_frame - 1, 3 * per_frame - 1]
    for d in datagrams:  # T is always the last message of its datagram (EVMC4U counts frames by T)
        inside = parse_datagram(d)
        assert all(m.address != "/VMC/Ext/T" for m in inside[:-1])

    # --- python-osc server: same content, Python types as sent ---
    assert len(received) == 3 * per_frame
    ok_messages = [args for address, args in received if address == "/VMC/Ext/OK"]
    assert ok_messages == [(1, 3, 0, 1)] * 3 and all(type(v) is int for v in ok_messages[0])
    hips = [args for address, args in received if address == "/VMC/Ext/Bone/Pos" and args[0] == "Hips"]
    np.testing.assert_allclose(hips[-1][1:4], skeleton.to_unity_position(rigs[-1].hips_position), atol=1e-6)


def test_bundles_respect_a_smaller_limit_and_stay_in_order():
    sender = vmc.VmcSender(VmcConfig(targets=["127.0.0.1:9"], max_bundle_bytes=300))
    datagrams = sender.datagrams(make_rig(), t=1.5)
    sender.close()
    assert max(len(d) for d in datagrams) <= 300 and len(datagrams) >= 13
    names = [m.params[0] for d in datagrams for m in parse_datagram(d) if m.address == "/VMC/Ext/Bone/Pos"]
    assert names == [skeleton.unity_name(b) for b in skeleton.BONE_NAMES]


def test_float32_inputs_are_sent_as_osc_floats():
    rig = make_rig(dtype=np.float32)
    with vmc.VmcSender(VmcConfig(targets=["127.0.0.1:9"])) as sender:
        datagrams = sender.datagrams(rig, t=np.float32(2.0))
    for message in (m for d in datagrams for m in parse_datagram(d)):
        tags = message.dgram[message.dgram.index(b",") + 1:].split(b"\x00")[0].decode()
        assert set(tags) <= {"s", "f", "i"}, (message.address, tags)


@pytest.mark.parametrize(
    "mask, missing",
    [
        ("upper_body", {"Hips"} | {skeleton.unity_name(b) for b in skeleton.LEG_BONES}),
        ("no_legs", {skeleton.unity_name(b) for b in skeleton.LEG_BONES}),
        ("no_hips", {"Hips"}),
        ("all", set()),
    ],
)
def test_bone_masks(mask, missing):
    with vmc.VmcSender(VmcConfig(targets=["127.0.0.1:9"], bones=mask)) as sender:
        messages = [m for d in sender.datagrams(make_rig(), t=0.0) for m in parse_datagram(d)]
    names = {m.params[0] for m in messages if m.address == "/VMC/Ext/Bone/Pos"}
    assert names == ALL_UNITY - missing
    has_root = any(m.address == "/VMC/Ext/Root/Pos" for m in messages)
    assert has_root == ("Hips" not in missing)  # without the hips the receiver keeps its own placement


def test_mirror_swaps_sides_and_reflects():
    rig = make_rig(seed=5)
    with vmc.VmcSender(VmcConfig(targets=["127.0.0.1:9"], mirror=True)) as sender:
        messages = [m for d in sender.datagrams(rig, t=0.0) for m in parse_datagram(d)]
    bones = {m.params[0]: np.array(m.params[1:]) for m in messages if m.address == "/VMC/Ext/Bone/Pos"}
    mirrored = skeleton.mirror_rotations(rig.rotations)
    expected_right_arm = skeleton.to_unity_rotation(mirrored["rightUpperArm"])
    np.testing.assert_allclose(bones["RightUpperArm"][3:], expected_right_arm, atol=1e-6)
    # Mirroring then converting to Unity undoes both reflections: the left arm's canonical rotation.
    np.testing.assert_allclose(bones["RightUpperArm"][3:], rig.rotations["leftUpperArm"], atol=1e-6)
    np.testing.assert_allclose(bones["Hips"][:3], rig.hips_position, atol=1e-6)  # x flipped twice
    np.testing.assert_allclose(bones["RightUpperArm"][:3], skeleton.to_unity_position(skeleton.REST_OFFSETS[skeleton.BONE_INDEX["rightUpperArm"]]), atol=1e-6)


def test_hips_only_positions_and_fourteen_argument_root():
    rig = make_rig()
    config = VmcConfig(targets=["127.0.0.1:9"], positions="hips_only", root_scale_offset=True)
    with vmc.VmcSender(config) as sender:
        messages = [m for d in sender.datagrams(rig, t=0.0) for m in parse_datagram(d)]
    root = [m for m in messages if m.address == "/VMC/Ext/Root/Pos"][0]
    assert root.params == ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    for m in messages:
        if m.address == "/VMC/Ext/Bone/Pos":
            if m.params[0] == "Hips":
                np.testing.assert_allclose(m.params[1:4], skeleton.to_unity_position(rig.hips_position), atol=1e-6)
            else:
                assert m.params[1:4] == [0.0, 0.0, 0.0]


def test_nobody_tracked_sends_only_status(raw):
    with vmc.VmcSender(VmcConfig(targets=[f"127.0.0.1:{raw.port}"])) as sender:
        sender.send(OutputFrame(capture_time=0.0, width=10, height=10, people=[]))
        rig = make_rig()
        rig.tracking = False
        sender.send(OutputFrame(0.0, 10, 10, [OutputPerson(1, rig=rig)]))
        count = sender.stats().datagrams[f"127.0.0.1:{raw.port}"]
    datagrams = raw.drain(until_count=count)
    first = parse_datagram(datagrams[0])
    assert [m.address for m in first] == ["/VMC/Ext/OK", "/VMC/Ext/T"] and first[0].params == [1, 3, 0, 0]
    rest = [m for d in datagrams[1:] for m in parse_datagram(d)]
    assert len(rest) == 58 and rest[-2].params == [1, 3, 0, 0]  # held pose, tracking lost


def test_frame_sink_sends_the_driver(raw):
    people = [OutputPerson(1, rig=make_rig(1)), OutputPerson(2, rig=make_rig(2))]
    with vmc.VmcSender(VmcConfig(targets=[f"127.0.0.1:{raw.port}"])) as sender:
        sender.send(OutputFrame(0.0, 10, 10, people, driver=2))
        count = sender.stats().datagrams[f"127.0.0.1:{raw.port}"]
    messages = [m for d in raw.drain(until_count=count) for m in parse_datagram(d)]
    arm = [m.params for m in messages if m.address == "/VMC/Ext/Bone/Pos" and m.params[0] == "LeftUpperArm"][0]
    np.testing.assert_allclose(arm[4:], expected_bone(people[1].rig, "leftUpperArm")[1], atol=1e-6)


def test_unreachable_target_is_logged_once_and_others_keep_receiving(raw, caplog):
    closed = free_udp_port()  # nothing listens: the kernel answers ICMP port unreachable
    targets = [f"127.0.0.1:{closed}", f"127.0.0.1:{raw.port}"]
    with caplog.at_level(logging.WARNING, logger="avatar_bridge.vmc"):
        with vmc.VmcSender(VmcConfig(targets=targets)) as sender:
            for _ in range(20):
                sender.send_rig(make_rig())
                time.sleep(0.005)
            stats = sender.stats()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"127.0.0.1:{closed}" in warnings[0].getMessage() and "refused" in warnings[0].getMessage().lower()
    assert stats.errors[targets[0]] >= 5 and stats.errors[targets[1]] == 0
    datagrams = raw.drain(until_count=stats.datagrams[targets[1]])
    assert sum(1 for d in datagrams for m in parse_datagram(d) if m.address == "/VMC/Ext/T") == 20


@pytest.mark.parametrize(
    "spec, expected",
    [("127.0.0.1:39539", ("127.0.0.1", 39539)), ("localhost", ("localhost", 39539)),
     ("[::1]:40000", ("::1", 40000)), (" 10.0.0.2:1 ", ("10.0.0.2", 1)),
     ("39540", ("127.0.0.1", 39540))],  # a bare port (found by a new user: it was resolved as host 0.0.154.116)
)
def test_parse_target(spec, expected):
    assert vmc.parse_target(spec) == expected


@pytest.mark.parametrize(
    "spec, fragment",
    [("", "empty"), ("host:port", "port 'port'"), ("host:0", "1 to 65535"), ("host:70000", "1 to 65535"),
     ("::1:39539", "brackets"), (":39539", "no host"), ("[::1", "[IPv6]:PORT"), ("70000", "1 to 65535")],
)
def test_bad_targets_are_explained(spec, fragment):
    with pytest.raises(ValueError, match="VMC target") as info:
        vmc.parse_target(spec)
    assert fragment in str(info.value)


def test_empty_target_list_is_refused():
    with pytest.raises(ValueError, match="--no-vmc"):
        vmc.VmcSender(VmcConfig(targets=[]))


def test_command_line_options():
    parser = argparse.ArgumentParser()
    options.add_vmc_arguments(parser)
    config = VmcConfig()
    options.apply_vmc_arguments(parser.parse_args(["--vmc", "127.0.0.1:1", "--vmc", "[::1]:2"]), config)
    assert config.targets == ["127.0.0.1:1", "[::1]:2"] and config.enabled
    options.apply_vmc_arguments(parser.parse_args(["--no-vmc"]), config)
    assert not config.enabled
    with pytest.raises(ValueError, match="contradict"):
        options.apply_vmc_arguments(parser.parse_args(["--no-vmc", "--vmc", "h:1"]), VmcConfig())
    with pytest.raises(ValueError, match="VMC target"):
        options.apply_vmc_arguments(parser.parse_args(["--vmc", "h:x"]), VmcConfig())


def test_config_section_validates_the_new_keys():
    from avatar_bridge.config import ConfigError, config_from_dict

    config = config_from_dict({"vmc": {"bones": "upper_body", "mirror": True, "positions": "hips_only",
                                       "root_scale_offset": True, "max_bundle_bytes": 1200, "targets": ["h:1"]}})
    assert (config.vmc.bones, config.vmc.mirror, config.vmc.positions, config.vmc.max_bundle_bytes) == ("upper_body", True, "hips_only", 1200)
    with pytest.raises(ConfigError, match="vmc.bones = 'arms' is not allowed: choose one of all, upper_body, no_legs, no_hips"):
        config_from_dict({"vmc": {"bones": "arms"}})
    with pytest.raises(ConfigError, match="vmc.max_bundle_bytes = 9000 is out of range: allowed 256 to 1472"):
        config_from_dict({"vmc": {"max_bundle_bytes": 9000}})


def test_bad_mask_or_positions_in_a_hand_made_config():
    with pytest.raises(ValueError, match="vmc.bones = 'arms'"):
        vmc.VmcSender(VmcConfig(targets=["127.0.0.1:9"], bones="arms"))
    with pytest.raises(ValueError, match="vmc.positions = 'none'"):
        vmc.VmcSender(VmcConfig(targets=["127.0.0.1:9"], positions="none"))
