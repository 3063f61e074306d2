"""Security model of issue #10, tested over real sockets and a real ``avatar-bridge run`` process.

- the stream binds loopback by default and is unreachable from other interfaces;
- any other bind needs a token of 8+ characters, compared in constant time (hmac.compare_digest);
- HTTP serves only the viewer's folder: no traversal (plain, %-encoded, double-encoded, absolute,
  backslashes, NUL), no symlink out of the folder, no hidden files, GET only;
- control messages are size- and rate-limited per client and carry no path: none of them makes
  the server read or write a file;
- a run writes a recording only where ``--record`` says, and nothing else.
The streaming engineer's tests/test_server.py covers the basic cases; these add the attacker's view.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from avatar_bridge import server
from avatar_bridge.config import AppConfig, WebSocketConfig
from avatar_bridge.outputs import Outputs
from avatar_bridge.pipeline import Pipeline
from avatar_bridge.record import read_recording
from avatar_bridge.synthetic import SyntheticSource
from conftest import ROOT

TOKEN = "correct-horse-battery"


@pytest.fixture
def start_server():
    started = []

    def start(**options) -> server.WebSocketServer:
        web_dir = options.pop("web_dir", server.WEB_DIR)
        on_control = options.pop("on_control", None)
        options.setdefault("port", 0)
        srv = server.WebSocketServer(WebSocketConfig(**options), on_control=on_control, web_dir=web_dir).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def non_loopback_address() -> str | None:
    """An address of this machine on a real interface (no packet is sent), or None."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 9))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


# --- bind and token ---------------------------------------------------------------------------------


def test_default_bind_is_loopback_only(start_server):
    assert WebSocketConfig().host == "127.0.0.1"
    srv = start_server()
    with connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try from")
    with pytest.raises(OSError):  # refused: nothing listens on that interface
        socket.create_connection((address, srv.port), timeout=2).close()


def test_open_bind_refuses_to_start_without_a_long_enough_token():
    for host in ("0.0.0.0", "::", "192.168.1.10"):
        with pytest.raises(ValueError, match="no token is set"):
            server.WebSocketServer(WebSocketConfig(host=host, port=0)).start()
    with pytest.raises(ValueError, match="at least 8"):
        server.WebSocketServer(WebSocketConfig(host="0.0.0.0", port=0, token="1234567")).start()


def test_token_is_compared_in_constant_time_and_never_echoed(start_server, monkeypatch, caplog):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server.hmac, "compare_digest", spy)
    srv = start_server(host="0.0.0.0", token=TOKEN)
    url = f"ws://127.0.0.1:{srv.port}/"
    attempts = ["", "c", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * 5000, "%00" + TOKEN, "é" * 30]
    for wrong in attempts:
        with pytest.raises(InvalidStatus) as info:
            connect(url + "?token=" + wrong, open_timeout=5)
        response = info.value.response
        assert response.status_code == 401
        assert TOKEN.encode() not in response.body
    assert len(compared) == len(attempts)
    assert all(isinstance(a, bytes) and b == TOKEN.encode() for a, b in compared)
    with connect(url + "?token=" + TOKEN, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    assert compared[-1] == (TOKEN.encode(), TOKEN.encode())
    assert TOKEN not in caplog.text


def test_viewer_url_with_the_token_is_not_logged_and_refusals_are(start_server, caplog):
    """The viewer page is opened as ``/?token=TOKEN``: its access line logs the path without the
    query (a new user found the token in the log there). A client with a missing or wrong token is
    refused with 401 and logged once, with how to connect, so a viewer stuck on "reconnecting" has an
    explanation on the server's side."""
    import urllib.request

    caplog.set_level("INFO", logger="avatar_bridge.server")
    srv = start_server(host="0.0.0.0", token=TOKEN)
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/?token={TOKEN}", timeout=5) as response:
        assert response.status == 200
    for wrong in ("", "wrong-token-123", "wrong-token-456"):
        with pytest.raises(InvalidStatus):
            connect(f"ws://127.0.0.1:{srv.port}/?token={wrong}", open_timeout=5)
    assert TOKEN not in caplog.text
    assert "viewer page requested by 127.0.0.1 (/)" in caplog.text
    refused = [r.getMessage() for r in caplog.records if "refused a stream connection" in r.getMessage()]
    assert len(refused) == 1 and "?token=TOKEN with the --ws-token value" in refused[0], refused
    assert "wrong-token" not in caplog.text


# --- HTTP static files ------------------------------------------------------------------------------


@pytest.fixture
def web_dir(tmp_path):
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<html>viewer</html>")
    (web / "assets" / "app.js").write_text("console.log(1)")
    (web / "assets" / "inside.js").symlink_to(web / "assets" / "app.js")  # a link that stays inside: fine
    (web / ".git").mkdir()
    (web / ".git" / "config").write_text("[remote] secret")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (web / "linkdir").symlink_to(outside, target_is_directory=True)
    (web / "link.txt").symlink_to(outside / "secret.txt")
    return web


def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send exactly these bytes (no client-side normalization) and return (status, whole response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data  # closed without an HTTP answer
    return int(data[9:12]), data


def get(port: int, target: str) -> tuple[int, bytes]:
    return raw_http(port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())


TRAVERSALS = [
    "/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/%2E%2E/outside/secret.txt",
    "/assets/../../outside/secret.txt", "/assets/%2e%2e%2f%2e%2e%2foutside/secret.txt",
    "/%252e%252e/outside/secret.txt", "/..%c0%afoutside/secret.txt", "/.%2e/outside/secret.txt",
    "/..\\outside\\secret.txt", "/%5c..%5coutside%5csecret.txt", "//etc/passwd", "/%2fetc%2fpasswd",
    "/etc/passwd", "/linkdir/secret.txt", "/link.txt", "/.git/config", "/%2egit/config", "/index.html%00.js",
    "http://127.0.0.1/../outside/secret.txt", "/" + "a/" * 2000 + "x",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_http_serves_nothing_outside_the_viewer_folder(start_server, web_dir, target):
    srv = start_server(web_dir=web_dir)
    status, data = get(srv.port, target)
    assert status != 200, (target, data[:200])
    assert b"secret" not in data.lower() and b"root:" not in data


def test_http_serves_the_viewer_files_and_only_for_get(start_server, web_dir):
    srv = start_server(web_dir=web_dir)
    assert get(srv.port, "/")[1].endswith(b"<html>viewer</html>")
    assert get(srv.port, "/assets/inside.js")[1].endswith(b"console.log(1)")
    for method in ("PUT", "POST", "DELETE"):
        body = b"overwritten"
        status, _ = raw_http(srv.port, f"{method} /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                                       f"Connection: close\r\n\r\n".encode() + body)
        assert status != 200
    assert (web_dir / "index.html").read_text() == "<html>viewer</html>"
    assert sorted(p.name for p in web_dir.parent.iterdir()) == ["outside", "web"]


# --- control messages: size, rate, no paths ---------------------------------------------------------


def test_flooding_client_is_rate_limited_and_others_are_served(start_server):
    """One client sends 600 pings as fast as it can: it gets at most its budget of answers (plus one
    rate-limit notice per second) while another client's pings are answered promptly."""
    srv = start_server(control_rate=20.0)
    url = f"ws://127.0.0.1:{srv.port}/"
    with connect(url, open_timeout=5) as flood, connect(url, open_timeout=5) as calm:
        flood.recv(timeout=5)
        calm.recv(timeout=5)
        started = time.monotonic()
        for i in range(600):
            flood.send(json.dumps({"type": "ping", "nonce": i}))
        rtts = []
        for i in range(5):
            t0 = time.monotonic()
            calm.send(json.dumps({"type": "ping", "nonce": f"calm{i}"}))
            assert json.loads(calm.recv(timeout=5))["nonce"] == f"calm{i}"
            rtts.append(time.monotonic() - t0)
        replies = []
        while True:
            try:
                replies.append(json.loads(flood.recv(timeout=1.0)))
            except TimeoutError:
                break
        elapsed = time.monotonic() - started
        pongs = [r for r in replies if r["type"] == "pong"]
        notices = [r for r in replies if r["type"] == "error"]
        assert 1 <= len(pongs) <= 20 + 20 * elapsed + 1, (len(pongs), elapsed)
        assert 1 <= len(notices) <= elapsed + 2 and "rate limit" in notices[0]["message"]
        stats = {s.address: s for s in srv.client_stats()}
        assert sum(s.rejected for s in stats.values()) >= 600 - len(pongs)
        flood.send(json.dumps({"type": "ping"}))  # the flooder is not disconnected, only limited
    assert max(rtts) < 2.0, rtts


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def test_no_control_message_reads_or_writes_a_file(start_server, tmp_path, monkeypatch):
    """The server wired to a real pipeline with a recording on: every control type, and messages
    carrying paths, leave every file but the recording untouched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "victim.txt").write_text("do not touch")
    config = AppConfig()
    config.vmc.enabled = False
    config.websocket.enabled = False
    config.record.path = str(tmp_path / "take.abrec")
    pipeline = Pipeline(config)
    outputs = Outputs(config, pipeline)
    source = SyntheticSource(realtime=False)
    outputs.open_files(source)
    for _ in range(15):
        pipeline.process(source.read())
    srv = start_server(on_control=pipeline.apply_control, control_rate=1000.0)
    before = snapshot(tmp_path)
    messages = [
        {"type": "calibrate"}, {"type": "select", "id": 1}, {"type": "pause", "paused": True},
        {"type": "pause", "paused": False}, {"type": "ping", "nonce": "../../victim.txt"},
        {"type": "calibrate", "file": "victim.txt"}, {"type": "select", "id": "victim.txt"},
        {"type": "record", "path": str(tmp_path / "evil.abrec")}, {"type": "save", "path": "victim.txt"},
        {"type": "load", "path": "/etc/passwd"}, {"type": "ping", "nonce": "/etc/passwd"},
    ]
    replies = []
    with connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=5) as ws:
        ws.recv(timeout=5)
        for message in messages:
            ws.send(json.dumps(message))
            while True:
                reply = json.loads(ws.recv(timeout=5))
                if reply["type"] != "frame":
                    replies.append(reply)
                    break
    outputs.close()
    source.close()
    assert [r["type"] for r in replies] == ["ack"] * 4 + ["pong"] + ["error"] * 5 + ["pong"]
    assert all("passwd" not in json.dumps(r) or r["type"] == "pong" for r in replies)
    after = snapshot(tmp_path)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert changed <= {"take.abrec"}, changed
    assert (tmp_path / "victim.txt").read_text() == "do not touch"
    assert read_recording(tmp_path / "take.abrec").complete


# --- a run writes only what it was asked to ---------------------------------------------------------


def run_synthetic(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd / "home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    (cwd / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "avatar_bridge", "run", "--source", "synthetic", "--headless", "--quiet",
         "--no-vmc", "--ws-port", "0", "--duration", "1.5", *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow  # a real avatar-bridge process / seconds of real time
def test_run_writes_the_recording_where_asked_and_nothing_else(tmp_path):
    (tmp_path / "takes").mkdir()
    done = run_synthetic(tmp_path, "--record", "takes/show.abrec")
    assert done.returncode == 0, done.stderr
    assert "web viewer: http://127.0.0.1:" in done.stderr  # the real command binds loopback by default
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["takes/show.abrec"], files
    assert read_recording(tmp_path / "takes" / "show.abrec").complete
    # Again without --record: no file at all, and the existing take is not touched.
    mtime = (tmp_path / "takes" / "show.abrec").stat().st_mtime
    done = run_synthetic(tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == ["takes/show.abrec"]
    assert (tmp_path / "takes" / "show.abrec").stat().st_mtime == mtime


@pytest.mark.slow  # waits for the server's 10 s handshake timeout
def test_silent_connections_are_dropped_and_never_block_others(start_server):
    """A stranger opens connections and sends nothing (slowloris): real viewers still connect at once,
    and the server closes the silent ones after its handshake timeout (websockets' open_timeout, 10 s)."""
    srv = start_server()
    silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(20)]
    try:
        t0 = time.monotonic()
        with connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        closed_after = []
        for sock in silent:
            assert sock.recv(1024) == b""  # the server hung up (blocks until it does, at most 30 s)
            closed_after.append(time.monotonic() - t0)
        assert max(closed_after) < 25.0
    finally:
        for sock in silent:
            sock.close()
