"""Fuzzed control messages against the real WebSocket server wired to a real pipeline (issue #10).

Whatever a client sends - random JSON objects built around the real message types, random text,
random bytes, deep nesting - the server answers exactly one ``ack``, ``pong`` or ``error``, never
crashes or drops the connection, and the pipeline behind it keeps producing frames.

Note: hypothesis raises the interpreter's recursion limit while a test runs, so deep ``[[[[`` nesting
cannot fail here even where it would in production (json's C parser raised RecursionError at ~1000
levels, which closed the connection with 1011 before ``protocol.parse_control`` caught it); that case
is pinned without hypothesis in tests/test_bad_input.py (MALFORMED).
"""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from avatar_bridge import protocol
from avatar_bridge.config import AppConfig, WebSocketConfig
from avatar_bridge.outputs import Outputs
from avatar_bridge.pipeline import Pipeline
from avatar_bridge.server import WebSocketServer
from avatar_bridge.synthetic import SyntheticSource


class _Errors(logging.Handler):
    """Collects ERROR records (a handler that failed, an exception in a control callback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def rig():
    """A server whose controls reach a real pipeline (fed by the synthetic performer), one client."""
    errors = _Errors()
    loggers = [logging.getLogger("websockets"), logging.getLogger("avatar_bridge")]
    for lg in loggers:
        lg.addHandler(errors)
    config = AppConfig()
    pipeline = Pipeline(config)
    outputs = Outputs(config, pipeline)
    source = SyntheticSource(realtime=False)
    for _ in range(10):
        pipeline.process(source.read())
    srv = WebSocketServer(WebSocketConfig(port=0, control_rate=1000.0), on_control=pipeline.apply_control).start()
    ws = connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=5, max_size=None)
    assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    yield {"ws": ws, "server": srv, "pipeline": pipeline, "source": source, "errors": errors}
    ws.close()
    srv.stop()
    source.close()
    for lg in loggers:
        lg.removeHandler(errors)


def exchange(ws, data) -> dict:
    ws.send(data)
    reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] != "frame"  # nothing publishes frames in this test
    return reply


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=200), st.sampled_from(["/etc/passwd", "../../x", "C:\\Windows", "\x00", "ping", "select"]),
)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
KEYS = st.one_of(st.sampled_from(["type", "id", "paused", "nonce", "path", "file", "TYPE", ""]), st.text(max_size=12))
TYPES = st.one_of(st.sampled_from(list(protocol.CONTROL_TYPES) + ["Ping", "record", "", "frame", "hello"]), JSON_VALUES)


@st.composite
def objects(draw) -> str:
    """A JSON object that is often almost valid: a real type plus fuzzed or real keys."""
    obj = draw(st.dictionaries(KEYS, JSON_VALUES, max_size=4))
    if draw(st.booleans()):
        obj["type"] = draw(TYPES)
    return json.dumps(obj)


@st.composite
def nested(draw) -> str:
    depth = draw(st.one_of(st.integers(1, 60), st.integers(600, 2100)))  # json's recursion limit is ~1000
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opener * depth + "1" + closer * depth
    return inner if draw(st.booleans()) else '{"type": "ping", "nonce": ' + inner + "}"


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=5000)  # websockets sends valid UTF-8 only
MESSAGES = st.one_of(objects(), objects(), TEXT, st.binary(max_size=512), nested(),
                     st.builds(lambda s: s[: len(s) // 2], objects()))  # a JSON object cut in half


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=MESSAGES)
@example(data="[" * 1500 + "]" * 1500)
@example(data=b"\xff" * 100)
def test_any_message_gets_one_answer_and_the_connection_stays_usable(rig, data):
    ws = rig["ws"]
    reply = exchange(ws, data)
    assert reply["type"] in ("ack", "pong", "error"), reply
    if reply["type"] == "error":
        assert isinstance(reply["message"], str) and 0 < len(reply["message"]) < 1000
    else:  # only messages that parse as valid controls are acknowledged
        parsed = protocol.parse_control(data)
        assert reply.get("request", "ping") == parsed.type or reply["type"] == "pong"
    assert exchange(ws, '{"type": "ping", "nonce": "alive"}')["nonce"] == "alive"


def test_server_and_pipeline_survived_the_fuzzing(rig):
    """Runs after the fuzz test (file order): no handler failed, no control raised, frames still come."""
    assert rig["server"].running and rig["server"].client_count == 1
    assert not rig["errors"].records, [r.getMessage() for r in rig["errors"].records]
    pipeline, source = rig["pipeline"], rig["source"]
    pipeline.paused = False
    frame = source.read()
    pipeline.process(frame)
    out = pipeline.sample(frame.timestamp)
    assert out is not None and out.people
    assert all(math.isfinite(v) for p in out.people for q in p.rig.rotations.values() for v in q)


def test_valid_controls_reach_the_pipeline(rig):
    ws, pipeline = rig["ws"], rig["pipeline"]
    assert exchange(ws, '{"type": "pause", "paused": true}') == {"type": "ack", "request": "pause"}
    assert pipeline.paused and pipeline.sample(0.0) is None
    assert exchange(ws, '{"type": "pause", "paused": false}')["type"] == "ack"
    assert not pipeline.paused
    assert exchange(ws, '{"type": "select", "id": 1}')["type"] == "ack"
    assert pipeline.driver == 1
    assert exchange(ws, '{"type": "calibrate"}') == {"type": "ack", "request": "calibrate"}
