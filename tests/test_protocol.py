"""Protocol v1 messages: hello/frame contents and strict control-message validation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avatar_bridge import protocol, quat, skeleton
from avatar_bridge.keypoints import COCO_KEYPOINTS, SKELETON_EDGES
from avatar_bridge.types import OutputFrame, OutputPerson
from avatar_bridge.types import Pose2D, RigPose

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def make_person(track_id: int = 1, seed: int = 0) -> OutputPerson:
    rng = np.random.default_rng(seed)
    rotations = {name: quat.normalize(rng.normal(size=4)) for name in skeleton.BODY_BONES}
    rig = RigPose(
        timestamp=10.0,
        track_id=track_id,
        hips_position=np.array([0.1, 0.93, -0.2]),
        rotations=rotations,
        confidence={name: float(rng.uniform()) for name in skeleton.BODY_BONES},
    )
    keypoints = rng.uniform([0, 0], [1280, 720], size=(17, 2)).astype(np.float32)
    scores = rng.uniform(size=17).astype(np.float32)
    return OutputPerson(track_id, Pose2D(keypoints, scores, track_id=track_id), rig)


def test_hello_describes_rig_keypoints_and_conventions():
    msg = json.loads(protocol.encode(protocol.hello_message(60.0, 123.25)))
    assert msg["type"] == "hello" and msg["protocol"] == "avatar-bridge" and msg["version"] == 1
    assert msg["coordinates"] == {
        "handedness": "right", "up": "+Y", "forward": "+Z", "left": "+X", "units": "m",
        "rotations": "parent-local, normalized (identity = T-pose), quaternion [x, y, z, w]",
    }
    assert [b["name"] for b in msg["bones"]] == list(skeleton.BONE_NAMES)
    seen = set()
    for bone, expected in zip(msg["bones"], skeleton.BONES):
        assert bone["parent"] == expected.parent
        assert bone["parent"] is None or bone["parent"] in seen  # parents come first
        assert bone["offset"] == list(expected.offset)
        seen.add(bone["name"])
    assert msg["bones"][0] == {"name": "hips", "parent": None, "offset": [0.0, 0.95, 0.0]}
    assert msg["keypoints"] == list(COCO_KEYPOINTS)
    assert msg["skeleton_edges"] == [list(e) for e in SKELETON_EDGES]
    assert msg["rate"] == 60.0 and msg["server_time"] == 123.25


def test_frame_message_normalizes_keypoints_and_carries_the_rig():
    person = make_person(track_id=7)
    frame = OutputFrame(capture_time=100.0, width=1280, height=720, people=[make_person(3, seed=1), person], driver=7)
    msg = json.loads(protocol.encode(protocol.frame_message(frame, seq=42, send_time=100.031)))
    assert msg["type"] == "frame" and msg["seq"] == 42
    assert msg["capture_time"] == 100.0 and msg["send_time"] == 100.031
    assert msg["latency_ms"] == pytest.approx(31.0, abs=1e-3)
    assert msg["image"] == {"width": 1280, "height": 720}
    assert msg["driver"] == 7
    assert [p["id"] for p in msg["people"]] == [3, 7]
    out = msg["people"][1]
    assert out["tracking"] is True and out["seen"] is True
    kp = np.array(out["keypoints"])
    assert kp.shape == (17, 3)
    np.testing.assert_allclose(kp[:, 0], person.pose2d.keypoints[:, 0] / 1280, atol=1e-5)
    np.testing.assert_allclose(kp[:, 1], person.pose2d.keypoints[:, 1] / 720, atol=1e-5)
    np.testing.assert_allclose(kp[:, 2], person.pose2d.scores, atol=1e-3)
    assert set(out["pose"]) == set(skeleton.BODY_BONES)
    assert set(out["pose"]["hips"]) == {"position", "rotation"}
    np.testing.assert_allclose(out["pose"]["hips"]["position"], [0.1, 0.93, -0.2], atol=1e-5)
    for name, q in person.rig.rotations.items():
        assert set(out["pose"][name]) <= {"rotation", "position"}
        np.testing.assert_allclose(out["pose"][name]["rotation"], q, atol=1e-6)
    for name, c in person.rig.confidence.items():
        assert out["confidence"][name] == pytest.approx(c, abs=1e-3)


def test_a_hidden_person_is_sent_as_not_seen():
    """``seen`` false: no pose for this person in the newest frame (tracking may still be true)."""
    person = make_person()
    person.seen = False
    out = protocol.frame_message(OutputFrame(1.0, 1280, 720, [person]), 1, 1.0)["people"][0]
    assert out["seen"] is False and out["tracking"] is True


def test_frame_message_default_driver_and_empty_frame():
    frame = OutputFrame(capture_time=5.0, width=640, height=480, people=[make_person(4)], driver=None)
    assert protocol.frame_message(frame, 1, 5.0)["driver"] == 4
    empty = protocol.frame_message(OutputFrame(5.0, 640, 480), 2, 5.01)
    assert empty["people"] == [] and empty["driver"] is None


def test_non_finite_values_never_reach_the_wire():
    person = make_person()
    person.pose2d.keypoints[3] = np.nan
    person.rig.rotations["leftHand"] = np.array([np.nan, 0, 0, 1.0])
    person.rig.hips_position = np.array([np.inf, 0.9, 0.0])
    person.rig.confidence["head"] = float("nan")
    person.rig.tracking = False
    msg = protocol.frame_message(OutputFrame(1.0, 100, 100, [person]), 1, 1.0)
    text = protocol.encode(msg)  # allow_nan=False: raises if anything non-finite slipped through
    out = json.loads(text)["people"][0]
    assert out["keypoints"][3] == [0.0, 0.0, 0.0]
    assert "leftHand" not in out["pose"]
    assert "position" not in out["pose"]["hips"]
    assert "head" not in out["confidence"]
    assert out["tracking"] is False


def test_person_without_rig_sends_keypoints_only():
    person = make_person()
    person.rig = None
    out = protocol.frame_message(OutputFrame(1.0, 1280, 720, [person]), 1, 1.0)["people"][0]
    assert out["pose"] == {} and out["confidence"] == {} and len(out["keypoints"]) == 17


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"type": "calibrate"}', protocol.ControlMessage("calibrate")),
        ('{"type": "select", "id": 2}', protocol.ControlMessage("select", id=2)),
        ('{"type": "pause", "paused": true}', protocol.ControlMessage("pause", paused=True)),
        ('{"type": "pause", "paused": false}', protocol.ControlMessage("pause", paused=False)),
        ('{"type": "ping", "nonce": "abc"}', protocol.ControlMessage("ping", nonce="abc")),
        ('{"type": "ping", "nonce": 17}', protocol.ControlMessage("ping", nonce=17)),
        ('{"type": "ping"}', protocol.ControlMessage("ping")),
    ],
)
def test_valid_control_messages(text, expected):
    assert protocol.parse_control(text) == expected


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b'{"type": "calibrate"}', "binary messages are not accepted"),
        ('{"type": "ping", "nonce": "' + "x" * 5000 + '"}', "limited to 4096 bytes"),
        ('{"type": "calibrate"', "malformed JSON"),
        ("not json", "malformed JSON"),
        ('{"type": "ping", "nonce": NaN}', "malformed JSON"),
        ('["calibrate"]', "must be a JSON object"),
        ('{"kind": "calibrate"}', 'missing "type"'),
        ('{"type": 5}', 'missing "type"'),
        ('{"type": "explode"}', "unknown message type 'explode'"),
        ('{"type": "calibrate", "now": true}', "unexpected key 'now' in a calibrate message"),
        ('{"type": "select"}', 'select needs "id"'),
        ('{"type": "select", "id": "2"}', 'select needs "id"'),
        ('{"type": "select", "id": true}', 'select needs "id"'),
        ('{"type": "select", "id": -1}', 'select needs "id"'),
        ('{"type": "select", "id": 1.5}', 'select needs "id"'),
        ('{"type": "pause", "paused": 1}', 'pause needs "paused"'),
        ('{"type": "pause"}', 'pause needs "paused"'),
        ('{"type": "ping", "nonce": "' + "n" * 129 + '"}', 'ping needs "nonce"'),
        ('{"type": "ping", "nonce": [1]}', 'ping needs "nonce"'),
    ],
)
def test_invalid_control_messages_are_explained(data, fragment):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.parse_control(data)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_size_limit_counts_utf8_bytes():
    nonce = "é" * 60  # 120 bytes of UTF-8, fine
    assert protocol.parse_control(json.dumps({"type": "ping", "nonce": nonce}, ensure_ascii=False)).nonce == nonce
    big = '{"type": "ping", "nonce": "a"}' + " " * (protocol.MAX_CONTROL_BYTES - 29)
    with pytest.raises(protocol.ProtocolError, match="limited to 4096 bytes"):
        protocol.parse_control(big)


def test_replies():
    assert protocol.ack_message("calibrate") == {"type": "ack", "request": "calibrate"}
    assert protocol.pong_message("n1", 3.5) == {"type": "pong", "nonce": "n1", "server_time": 3.5}
    assert protocol.error_message("bad") == {"type": "error", "message": "bad"}


def test_protocol_imports_without_websockets():
    code = "import sys; sys.modules['websockets'] = None; import avatar_bridge.protocol as p; print(p.PROTOCOL_VERSION)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


from hypothesis import given, settings, strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.binary(max_size=50),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(list(protocol.CONTROL_TYPES))}, optional={
        "id": json_values, "paused": json_values, "nonce": json_values, "extra": json_values}).map(json.dumps),
))
def test_any_client_input_is_either_a_control_message_or_a_protocol_error(data):
    try:
        message = protocol.parse_control(data)
    except protocol.ProtocolError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert message.type in protocol.CONTROL_TYPES


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=17 * 2 + 17 + 4 + 3, max_size=17 * 2 + 17 + 4 + 3))
def test_frame_json_is_always_valid_for_any_float_values(values):
    v = np.array(values, dtype=np.float64)
    rig = RigPose(0.0, 1, v[51:54], {"leftUpperArm": v[54:58]}, {"head": float(v[0])})
    person = OutputPerson(1, Pose2D(v[:34].reshape(17, 2).astype(np.float32), v[34:51].astype(np.float32)), rig)
    text = protocol.encode(protocol.frame_message(OutputFrame(1.0, 640, 480, [person]), 1, 1.0))
    assert json.loads(text)["people"][0]["id"] == 1
