"""WebSocket server over real loopback sockets: real websockets clients, raw TCP clients, HTTP GETs."""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import os
import re
import socket
import struct
import threading
import time

import numpy as np
import pytest

from avatar_bridge.commands import options
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from avatar_bridge import quat, server, skeleton
from avatar_bridge.config import WebSocketConfig
from avatar_bridge.stream import OutputClock
from avatar_bridge.types import OutputFrame, OutputPerson
from avatar_bridge.types import Pose2D, RigPose


def make_frame(capture_time: float, people: int = 1, seed: int = 0) -> OutputFrame:
    rng = np.random.default_rng(seed)
    out = []
    for track_id in range(1, people + 1):
        rotations = {name: quat.normalize(rng.normal(size=4)) for name in skeleton.BODY_BONES}
        rig = RigPose(capture_time, track_id, np.array([0.0, 0.95, 0.0]), rotations, {n: 0.9 for n in rotations})
        pose = Pose2D(rng.uniform(0, 640, size=(17, 2)).astype(np.float32), np.full(17, 0.8, np.float32), track_id=track_id)
        out.append(OutputPerson(track_id, pose, rig))
    return OutputFrame(capture_time=capture_time, width=640, height=480, people=out, driver=1)


@pytest.fixture
def ws_server():
    started = []

    def start(**options) -> server.WebSocketServer:
        web_dir = options.pop("web_dir", server.WEB_DIR)
        on_control = options.pop("on_control", None)
        config = WebSocketConfig(port=0, **options)
        srv = server.WebSocketServer(config, on_control=on_control, web_dir=web_dir).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


SEQ = re.compile(r'"seq":(\d+)')
WIDTH = re.compile(r'"width":(\d+)')


def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def raw_ws_connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket handshake on a bare TCP socket, so the test controls reading (or not) exactly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_hello_then_frames_in_order(ws_server):
    srv = ws_server(rate=30.0)
    with connect(srv.ws_url) as ws:
        hello = recv_json(ws)
        assert hello["type"] == "hello" and hello["version"] == 1 and hello["rate"] == 30.0
        assert len(hello["bones"]) == len(skeleton.BONES) and len(hello["keypoints"]) == 17
        assert abs(hello["server_time"] - time.monotonic()) < 5.0  # same monotonic clock as capture_time
        assert wait_for(lambda: srv.client_count == 1)
        seqs = []
        for i in range(20):
            srv.publish(make_frame(time.monotonic(), people=2, seed=i))
            time.sleep(0.01)
            msg = recv_json(ws)
            assert msg["type"] == "frame"
            seqs.append(msg["seq"])
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        assert msg["people"][0]["pose"]["hips"]["position"] == [0.0, 0.95, 0.0]
        assert msg["latency_ms"] >= 0.0 and msg["image"] == {"width": 640, "height": 480}
        stats = srv.client_stats()
        assert len(stats) == 1 and stats[0].sent == 20 and stats[0].dropped == 0


def test_stuck_client_never_slows_the_publisher_or_a_fast_client(ws_server):
    """A client that never reads fills its socket; the fast client still gets ~every frame."""
    srv = ws_server(rate=60.0)
    stuck = raw_ws_connect(srv.port, rcvbuf=4096)  # handshake done, never reads again
    received: list[int] = []
    stop = threading.Event()
    with connect(srv.ws_url) as fast:
        recv_json(fast)

        def read_fast() -> None:  # reads everything; only the seq is parsed (cheap on a loaded machine)
            while not stop.is_set():
                try:
                    text = fast.recv(timeout=0.2)
                except TimeoutError:
                    continue
                head = text[:200]
                received.append((int(SEQ.search(head).group(1)), int(WIDTH.search(head).group(1))))

        reader = threading.Thread(target=read_fast)
        reader.start()
        assert wait_for(lambda: srv.client_count == 2)
        # 1) Fill the stuck client's socket buffers (kernel ~4 MB) with big frames until frames for it
        #    are being replaced unsent: from here on its writer is blocked.
        big = make_frame(0.0, people=24)  # ~55 kB of JSON
        fast_address = "%s:%d" % fast.local_address[:2]

        def stuck_stats():
            return [s for s in srv.client_stats() if s.address != fast_address]

        deadline = time.monotonic() + 20
        while stuck_stats()[0].dropped < 3 and time.monotonic() < deadline:
            srv.publish(big)
            time.sleep(0.002)
        assert stuck_stats()[0].dropped >= 3, "the stuck client's buffers never filled"
        # 2) Publish ordinary frames (marked by their width) at 60 Hz for 2 s; count what the fast client gets.
        small = make_frame(0.0, people=2)
        small.width = 641
        published: list[float] = []
        publish_ms: list[float] = []

        def publish(frame: OutputFrame) -> None:
            start = time.perf_counter()
            srv.publish(frame)
            publish_ms.append((time.perf_counter() - start) * 1000.0)

        def sample(t: float) -> OutputFrame:
            published.append(t)
            return OutputFrame(t, small.width, small.height, small.people, 1)

        clock = OutputClock(sample, [(publish, 60.0)]).start()
        time.sleep(2.0)
        clock.stop()
        time.sleep(0.3)
        stop.set()
        reader.join()
        dropped_stuck = stuck_stats()[0].dropped
    stuck.close()
    got = [seq for seq, width in received if width == 641]
    print(f"published {len(published) / 2:.1f} frames/s, fast client got {len(got) / 2:.1f}/s, publish() median "
          f"{np.median(publish_ms):.3f} ms max {max(publish_ms):.3f} ms, stuck client dropped {dropped_stuck}")
    assert len(published) >= 60  # the clock kept ticking (>= 30 Hz worth of ticks in 2 s on a loaded machine)
    assert len(got) >= 0.9 * len(published)  # the fast client's rate is within 10% of the publish rate
    assert got == sorted(got)
    assert dropped_stuck >= 3 + len(published) - 2  # the stuck client missed (almost) all of them


def test_bad_control_messages_get_errors_and_the_connection_stays_usable(ws_server):
    got = []
    srv = ws_server(on_control=got.append)
    with connect(srv.ws_url) as ws:
        recv_json(ws)
        cases = [
            ("{not json", "malformed JSON"),
            ('{"type": "ping", "nonce": "' + "x" * 5000 + '"}', "limited to 4096 bytes"),
            ('{"type": "teleport"}', "unknown message type 'teleport'"),
            ('{"type": "select", "id": "two"}', 'select needs "id"'),
            (b"\x00\x01binary", "binary messages are not accepted"),
        ]
        for i, (data, fragment) in enumerate(cases):
            ws.send(data)
            reply = recv_json(ws)
            assert reply["type"] == "error" and fragment in reply["message"], reply
            ws.send(json.dumps({"type": "ping", "nonce": f"n{i}"}))
            pong = recv_json(ws)
            assert pong["type"] == "pong" and pong["nonce"] == f"n{i}"
        for message in ({"type": "calibrate"}, {"type": "select", "id": 2}, {"type": "pause", "paused": True}):
            ws.send(json.dumps(message))
            assert recv_json(ws) == {"type": "ack", "request": message["type"]}
    assert [(c.type, c.id, c.paused) for c in got] == [("calibrate", None, None), ("select", 2, None), ("pause", None, True)]
    assert got[0].client.startswith("127.0.0.1:")


def test_controls_are_queued_without_a_callback(ws_server):
    srv = ws_server()
    with connect(srv.ws_url) as ws:
        recv_json(ws)
        ws.send('{"type": "select", "id": 5}')
        assert recv_json(ws)["type"] == "ack"
    assert [(c.type, c.id) for c in srv.poll_controls()] == [("select", 5)]
    assert srv.poll_controls() == []


def test_control_rate_limit(ws_server):
    srv = ws_server(control_rate=5.0)
    with connect(srv.ws_url) as ws:
        recv_json(ws)
        for i in range(20):
            ws.send(json.dumps({"type": "ping", "nonce": i}))
        replies = []
        while True:
            try:
                replies.append(recv_json(ws, timeout=0.5))
            except TimeoutError:
                break
        pongs = [r for r in replies if r["type"] == "pong"]
        errors = [r for r in replies if r["type"] == "error"]
        assert 5 <= len(pongs) <= 7  # the 1-second burst, plus what refilled meanwhile
        assert len(errors) == 1 and "rate limit" in errors[0]["message"]  # not one error per dropped message
        time.sleep(1.1)
        ws.send('{"type": "ping", "nonce": "later"}')
        assert recv_json(ws) == {"type": "pong", "nonce": "later", "server_time": pytest.approx(time.monotonic(), abs=5)}


def test_huge_message_closes_only_that_connection(ws_server):
    srv = ws_server()
    with connect(srv.ws_url) as other:
        recv_json(other)
        with connect(srv.ws_url) as ws:
            recv_json(ws)
            ws.send("x" * (server.MAX_INCOMING_BYTES + 1))
            with pytest.raises(ConnectionClosed) as info:
                recv_json(ws)
            assert info.value.rcvd.code == 1009  # message too big
        other.send('{"type": "ping", "nonce": 1}')
        assert recv_json(other)["type"] == "pong"


def test_client_that_disconnects_mid_send_is_cleaned_up(ws_server):
    srv = ws_server()
    sock = raw_ws_connect(srv.port)
    assert wait_for(lambda: srv.client_count == 1)
    stop = threading.Event()
    errors = []

    def publisher():
        i = 0
        while not stop.is_set():
            try:
                srv.publish(make_frame(time.monotonic(), people=4, seed=i % 3))
            except Exception as exc:  # publish must never raise because a client vanished
                errors.append(exc)
            i += 1
            time.sleep(0.002)

    thread = threading.Thread(target=publisher)
    thread.start()
    sock.recv(20000)  # mid-stream
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, no close handshake
    assert wait_for(lambda: srv.client_count == 0)
    with connect(srv.ws_url) as ws:  # the server still serves new clients
        assert recv_json(ws)["type"] == "hello"
        assert recv_json(ws)["type"] == "frame"
    stop.set()
    thread.join()
    assert errors == []


def test_non_loopback_bind_requires_a_token(ws_server, caplog):
    with pytest.raises(ValueError, match="--ws-token"):
        server.WebSocketServer(WebSocketConfig(host="0.0.0.0", port=0)).start()
    with pytest.raises(ValueError, match="at least 8"):
        server.WebSocketServer(WebSocketConfig(host="0.0.0.0", port=0, token="short")).start()
    token = "s3cret-token-123"
    with caplog.at_level(logging.WARNING, logger="avatar_bridge.server"):
        srv = ws_server(host="0.0.0.0", token=token)
    assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
    url = f"ws://127.0.0.1:{srv.port}/"
    for bad in (url, url + "?token=wrong-token-xyz", url + "?token=" + token[:-1]):
        with pytest.raises(InvalidStatus) as info:
            connect(bad)
        assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers={"Authorization": "Bearer nope-nope-nope"})
    for kwargs in (
        {"uri": url + "?token=" + token},
        {"uri": url, "additional_headers": {"Authorization": f"Bearer {token}"}},
        {"uri": url, "additional_headers": {"X-Avatar-Bridge-Token": token}},
    ):
        with connect(**kwargs) as ws:
            assert recv_json(ws)["type"] == "hello"


def test_browser_origins(ws_server):
    srv = ws_server(origins=["https://viewer.example.org"])
    with pytest.raises(InvalidStatus) as info:
        connect(srv.ws_url, origin="https://evil.example.com")
    assert info.value.response.status_code == 403
    for origin in ("http://localhost:5173", f"http://127.0.0.1:{srv.port}", "https://viewer.example.org"):
        with connect(srv.ws_url, origin=origin) as ws:
            assert recv_json(ws)["type"] == "hello"


def test_max_clients(ws_server):
    srv = ws_server(max_clients=1)
    with connect(srv.ws_url) as ws:
        recv_json(ws)
        with pytest.raises(InvalidStatus) as info:
            connect(srv.ws_url)
        assert info.value.response.status_code == 503


def test_port_in_use_is_a_clear_error(ws_server):
    srv = ws_server()
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{srv.port}.*--ws-port"):
        server.WebSocketServer(WebSocketConfig(port=srv.port)).start()


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("GET", path, skip_accept_encoding=True)  # the path goes out exactly as given
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type", ""), body


@pytest.fixture
def web_dir(tmp_path):
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<html>viewer</html>")
    (web / "assets" / "app.js").write_text("console.log(1)")
    (web / "assets" / "style.css").write_text("body{}")
    (web / "avatar.vrm").write_bytes(b"glTF....")
    (web / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("top secret")
    (web / "link.txt").symlink_to(tmp_path / "secret.txt")
    return web


def test_static_files_and_content_types(ws_server, web_dir):
    srv = ws_server(web_dir=web_dir)
    assert http_get(srv.port, "/") == (200, "text/html; charset=utf-8", b"<html>viewer</html>")
    assert http_get(srv.port, "/index.html?token=abc")[0] == 200
    assert http_get(srv.port, "/assets/app.js") == (200, "text/javascript; charset=utf-8", b"console.log(1)")
    assert http_get(srv.port, "/assets/style.css")[1] == "text/css; charset=utf-8"
    assert http_get(srv.port, "/avatar.vrm")[1] == "model/gltf-binary"
    assert http_get(srv.port, "/missing.js")[0] == 404


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt",
     "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/..\\secret.txt", "/%5c..%5csecret.txt", "/link.txt",
     "/.env", "//etc/passwd", "/%00index.html", "/assets/", "/assets"],
)
def test_path_traversal_gets_404(ws_server, web_dir, path):
    srv = ws_server(web_dir=web_dir)
    status, _, body = http_get(srv.port, path)
    assert status == 404, (path, body)
    assert b"secret" not in body.lower()


def test_fallback_page_when_the_viewer_is_not_built(ws_server, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    srv = ws_server(web_dir=empty)
    status, content_type, body = http_get(srv.port, "/")
    assert status == 200 and content_type.startswith("text/html") and b"viewer is not built" in body
    assert http_get(srv.port, "/app.js")[0] == 404


def test_default_web_dir_serves_something(ws_server):
    srv = ws_server()
    status, content_type, _ = http_get(srv.port, "/")
    assert status == 200 and content_type.startswith("text/html")


def test_command_line_options():
    parser = argparse.ArgumentParser()
    options.add_ws_arguments(parser)
    config = WebSocketConfig()
    options.apply_ws_arguments(parser.parse_args(["--ws-host", "0.0.0.0", "--ws-port", "9000", "--ws-token", "abcdefgh1"]), config)
    assert (config.host, config.port, config.token, config.enabled) == ("0.0.0.0", 9000, "abcdefgh1", True)
    options.apply_ws_arguments(parser.parse_args(["--no-ws"]), config)
    assert not config.enabled
    with pytest.raises(ValueError, match="--ws-port 70000"):
        options.apply_ws_arguments(parser.parse_args(["--ws-port", "70000"]), WebSocketConfig())


def test_config_section_validates_the_new_keys():
    from avatar_bridge.config import ConfigError, config_from_dict

    config = config_from_dict({"websocket": {"origins": ["https://a.example"], "control_rate": 5.0, "max_clients": 2}})
    assert (config.websocket.origins, config.websocket.control_rate, config.websocket.max_clients) == (["https://a.example"], 5.0, 2)
    with pytest.raises(ConfigError, match="websocket.control_rate = 0.0 is out of range"):
        config_from_dict({"websocket": {"control_rate": 0.0}})
    with pytest.raises(ConfigError, match="websocket.origins must be a list"):
        config_from_dict({"websocket": {"origins": "https://a.example"}})


def test_stop_is_prompt_with_a_stuck_client_connected():
    srv = server.WebSocketServer(WebSocketConfig(port=0)).start()
    stuck = raw_ws_connect(srv.port, rcvbuf=4096)
    assert wait_for(lambda: srv.client_count == 1)
    frame = make_frame(0.0, people=24)
    deadline = time.monotonic() + 20.0
    while srv.client_stats()[0].dropped < 3 and time.monotonic() < deadline:  # until the buffers are full
        srv.publish(frame)
        time.sleep(0.002)
    assert srv.client_stats()[0].dropped >= 3
    started = time.monotonic()
    srv.stop()
    elapsed = time.monotonic() - started
    stuck.close()
    assert not srv.running and elapsed < 5.0, elapsed
