"""WebSocket server (protocol v1, see ``docs/protocol.md``) plus the web viewer's static files.

It runs its own asyncio event loop in a background thread, so the pipeline stays plain threads:

    server = WebSocketServer(config.websocket, on_control=handle)  # or poll_controls()
    server.start()                    # binds (raises a clear error if it cannot), returns at once
    server.publish(output_frame)      # thread-safe, never blocks; also usable as an OutputClock sink
    server.stop()

- Every client gets ``hello`` on connect, then the newest ``frame`` per output tick. Each client has a
  one-slot queue that keeps only the newest frame: a slow or stuck client misses frames (counted in
  ``client_stats()``) but never delays the publisher or the other clients.
- Client control messages are validated by :func:`avatar_bridge.protocol.parse_control` and rate
  limited per client; bad ones get an ``error`` reply and the connection stays open. ``ping`` is
  answered here; ``calibrate`` / ``select`` / ``pause`` are acknowledged and handed to the pipeline
  through ``on_control`` (called on the server thread) or, without a callback, ``poll_controls()``.
- Security: binds 127.0.0.1 by default. Any other address requires a token (``?token=``,
  ``Authorization: Bearer``, or ``X-Avatar-Bridge-Token``; compared in constant time) and logs a
  warning. Browser origins other than loopback and the server's own host are refused (cross-site
  WebSocket hijacking), unless listed in ``websocket.origins``.
- Plain HTTP GETs on the same port serve files from ``avatar_bridge/web/`` only (``/`` ->
  ``index.html``; no path escapes the folder); without a built viewer a small built-in page says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import logging
import mimetypes
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from avatar_bridge import protocol
from avatar_bridge.config import WebSocketConfig
from avatar_bridge.types import OutputFrame

log = logging.getLogger(__name__)


def _access_logger() -> logging.Logger:
    """The logger handed to ``websockets.serve``: its per-request INFO lines ("HTTP response sent",
    "connection closed") are dropped unless debug logging is on (``--verbose``); warnings pass."""
    access = logging.getLogger(f"{__name__}.websockets")
    access.setLevel(logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING)
    return access

WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_INCOMING_BYTES = 64 * 1024  # bigger messages close the connection (1009); 4 KiB..64 KiB get an error
MAX_STATIC_BYTES = 64 * 1024 * 1024
MIN_TOKEN_CHARS = 8
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".vrm": "model/gltf-binary",
    ".txt": "text/plain; charset=utf-8",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

FALLBACK_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>avatar-bridge</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>avatar-bridge</h1>
<p>The web viewer is not built: <code>avatar_bridge/web/index.html</code> is missing. The WebSocket
stream is running on this address; see <code>docs/protocol.md</code> to write a client.</p>
<p id="status">connecting...</p>
<script>
const token = new URLSearchParams(location.search).get("token");
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/" +
  (token ? "?token=" + encodeURIComponent(token) : "");
const ws = new WebSocket(url);
const status = document.getElementById("status");
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  if (msg.type === "frame") {
    status.textContent = `frame ${msg.seq}: ${msg.people.length} people, latency ${msg.latency_ms.toFixed(1)} ms`;
  }
};
ws.onclose = () => { status.textContent = "disconnected"; };
</script>
</body></html>
"""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to expose the stream beyond this machine without a token."""
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"websocket.token is {len(token)} characters: use at least {MIN_TOKEN_CHARS} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(16))')"
        )
    if not is_loopback(host) and not token:
        raise ValueError(
            f"websocket.host = {host!r} is reachable from other machines and no token is set: pass "
            "--ws-token TOKEN (or websocket.token in the config), or bind 127.0.0.1"
        )


@dataclass
class ClientStats:
    address: str
    sent: int  # frames written to the socket
    dropped: int  # frames replaced by a newer one before this client could take them
    controls: int  # control messages received (valid or not)
    rejected: int  # control messages answered with an error (invalid or over the rate limit)
    connected_for_s: float


class _Client:
    """Per-connection state: a one-slot "newest frame" queue and a token bucket for control messages."""

    def __init__(self, ws: ServerConnection, address: str, control_rate: float, now: float):
        self.ws = ws
        self.address = address
        self.pending: str | None = None
        self.ready = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.controls = 0
        self.rejected = 0
        self.connected_at = now
        self.rate = control_rate
        self.tokens = control_rate  # a one-second burst
        self.last_refill = now
        self.last_limit_notice = -float("inf")

    def offer(self, text: str) -> None:
        if self.pending is not None:
            self.dropped += 1
        self.pending = text
        self.ready.set()

    def take_token(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.last_refill) * self.rate)
        self.last_refill = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _request_token(request: Request) -> str:
    query = parse_qs(urlsplit(request.path).query)
    if query.get("token"):
        return query["token"][0]
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-Avatar-Bridge-Token", "")


class WebSocketServer:
    """Protocol v1 over WebSocket on its own event-loop thread; see the module docstring."""

    def __init__(
        self,
        config: WebSocketConfig | None = None,
        on_control: Callable[[protocol.ControlMessage], None] | None = None,
        web_dir: Path | str = WEB_DIR,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config if config is not None else WebSocketConfig()
        self.on_control = on_control
        self.web_dir = Path(web_dir).resolve()
        self._clock = clock
        self._controls: queue.SimpleQueue = queue.SimpleQueue()
        self._clients: set[_Client] = set()
        self._clients_lock = threading.Lock()  # the set changes on the loop thread, stats read it elsewhere
        self._http_clients: set[str] = set()  # hosts whose page requests were logged once
        self._refused_clients: set[str] = set()  # hosts whose refused (token) connections were logged once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._seq = 0
        self._seq_lock = threading.Lock()
        self.port: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "WebSocketServer":
        """Bind and serve in a background thread; raise RuntimeError/ValueError if that fails."""
        if self._thread is not None:
            raise RuntimeError("WebSocketServer.start() called twice")
        check_bind(self.config.host, self.config.token)
        if not is_loopback(self.config.host):
            log.warning(
                "WebSocket server listens on %s:%d, reachable from other machines: clients need the token",
                self.config.host, self.config.port,
            )
        self._thread = threading.Thread(target=self._thread_main, name="avatar-bridge-websocket", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"WebSocket server on {self.config.host}:{self.config.port} did not start within {timeout} s")
        if self._start_error is not None:
            self._thread.join(timeout)
            self._thread = None
            err = self._start_error
            reason = getattr(err, "strerror", None) or str(err)
            raise RuntimeError(
                f"cannot listen on {self.config.host}:{self.config.port}: {reason}; pick another port with "
                "--ws-port (0 = any free port) or stop the program using it"
            )
        log.info("WebSocket server on %s (viewer: %s)", self.ws_url, self.http_url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "WebSocketServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.port is not None

    @property
    def ws_url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}/"

    @property
    def http_url(self) -> str:
        return "http" + self.ws_url[2:]

    url = http_url  # where a user opens the web viewer

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=self._process_request,
                compression=None,  # deflate per client costs CPU at 60 Hz; frames are small
                max_size=MAX_INCOMING_BYTES,
                close_timeout=1.0,
                server_header="avatar-bridge",
                logger=_access_logger(),  # websockets logs every HTTP request at INFO: only warnings
            )
        except OSError as exc:
            self._start_error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()  # stop listening; close handshakes with every client
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
            except asyncio.TimeoutError:
                # A client that never reads blocks its close handshake behind a full buffer: cut it.
                with self._clients_lock:
                    stuck = list(self._clients)
                for client in stuck:
                    client.ws.transport.abort()
                try:
                    await asyncio.wait_for(server.wait_closed(), timeout=2.0)
                except asyncio.TimeoutError:
                    log.warning("WebSocket server: %d connections did not close", len(stuck))

    # --- publishing (any thread) -------------------------------------------------------------------

    def publish(self, frame: OutputFrame) -> None:
        """Queue ``frame`` for every client (newest wins); returns immediately. Thread-safe."""
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        loop = self._loop
        if not self._clients or loop is None or not self.running:
            return  # nobody listens: skip the JSON work; seq still advances
        text = protocol.encode(protocol.frame_message(frame, seq, self._clock()))
        try:
            loop.call_soon_threadsafe(self._fan_out, text)
        except RuntimeError:  # loop closed during stop()
            pass

    __call__ = publish
    send = publish

    def _fan_out(self, text: str) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            client.offer(text)

    # --- control messages --------------------------------------------------------------------------

    def poll_controls(self) -> list[protocol.ControlMessage]:
        """Control messages received since the last call (only used when there is no ``on_control``)."""
        out = []
        while True:
            try:
                out.append(self._controls.get_nowait())
            except queue.Empty:
                return out

    def client_stats(self) -> list[ClientStats]:
        now = self._clock()
        with self._clients_lock:
            clients = list(self._clients)
        return [
            ClientStats(c.address, c.sent, c.dropped, c.controls, c.rejected, now - c.connected_at)
            for c in clients
        ]

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def _reply_to(self, client: _Client, data: str | bytes) -> dict | None:
        """The answer to one client message (None = stay silent: repeated rate-limit hits)."""
        client.controls += 1
        now = self._clock()
        if not client.take_token(now):
            client.rejected += 1
            if now - client.last_limit_notice < 1.0:
                return None
            client.last_limit_notice = now
            return protocol.error_message(
                f"rate limit: at most {self.config.control_rate:g} control messages per second; message dropped"
            )
        try:
            message = protocol.parse_control(data, client=client.address)
        except protocol.ProtocolError as exc:
            client.rejected += 1
            return protocol.error_message(str(exc))
        if message.type == "ping":
            return protocol.pong_message(message.nonce, now)
        try:
            if self.on_control is not None:
                self.on_control(message)
            else:
                self._controls.put(message)
        except Exception:
            log.exception("control message %s from %s failed in the pipeline", message.type, client.address)
            return protocol.error_message(f"{message.type} failed on the server (see its log)", request=message.type)
        return protocol.ack_message(message.type)

    # --- connections -------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        address = f"{peer[0]}:{peer[1]}" if peer else "?"
        client = _Client(ws, address, self.config.control_rate, self._clock())
        with self._clients_lock:
            self._clients.add(client)  # before hello: a frame published meanwhile waits in the slot
        log.info("viewer connected: %s (%d connected)", address, len(self._clients))
        writer = None
        try:
            await ws.send(protocol.encode(protocol.hello_message(self.config.rate, self._clock())))
            writer = asyncio.create_task(self._write_frames(client))
            async for data in ws:
                reply = self._reply_to(client, data)
                if reply is not None:
                    await ws.send(protocol.encode(reply))
        except ConnectionClosed:
            pass
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            if writer is not None:
                writer.cancel()
            log.info(
                "viewer disconnected: %s (sent %d frames, dropped %d; %d connected)",
                address, client.sent, client.dropped, len(self._clients),
            )

    async def _write_frames(self, client: _Client) -> None:
        try:
            while True:
                await client.ready.wait()
                client.ready.clear()
                text, client.pending = client.pending, None
                if text is not None:
                    await client.ws.send(text)
                    client.sent += 1
        except ConnectionClosed:
            pass

    # --- HTTP: authentication, origin check, static files ------------------------------------------

    def _origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser (or a browser that sends none): token/bind rules apply
        allowed = [str(o) for o in self.config.origins]
        if "*" in allowed or origin in allowed:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https"):
            return False
        if (parts.hostname or "") in LOOPBACK_NAMES:
            return True
        return parts.netloc.lower() == request.headers.get("Host", "").lower()  # same origin

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        peer = connection.remote_address
        host = peer[0] if peer else "?"  # for the log lines below, each once per client
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            # One access line per client (browser), not one per file it loads.
            if host not in self._http_clients:
                self._http_clients.add(host)
                # The path without its query: a viewer URL carries the token there (?token=...).
                log.info("viewer page requested by %s (%s); later requests from there are not logged", host,
                         urlsplit(request.path).path)
            return self._static_response(connection, request.path)
        token = self.config.token
        if token and not hmac.compare_digest(_request_token(request).encode("utf-8"), token.encode("utf-8")):
            if host not in self._refused_clients:  # once per client: a viewer retries every few seconds
                self._refused_clients.add(host)
                log.warning("refused a stream connection from %s: missing or wrong token (open the viewer as "
                            "%s?token=TOKEN with the --ws-token value); later refusals from there are not logged",
                            host, self.http_url)
            return connection.respond(401, "missing or wrong token: connect with ?token=TOKEN or an 'Authorization: Bearer TOKEN' header\n")
        if not self._origin_allowed(request):
            origin = request.headers.get("Origin")
            return connection.respond(403, f"origin {origin} is not allowed: add it to websocket.origins in the config\n")
        if len(self._clients) >= self.config.max_clients:
            return connection.respond(503, f"too many viewers ({self.config.max_clients}): raise websocket.max_clients\n")
        return None

    def _static_response(self, connection: ServerConnection, raw_path: str) -> Response:
        path = self._static_file(raw_path)
        if path is None:
            if urlsplit(raw_path).path in ("/", "/index.html") and not (self.web_dir / "index.html").is_file():
                return self._file_response(connection, FALLBACK_PAGE.encode("utf-8"), CONTENT_TYPES[".html"])
            return connection.respond(404, "not found\n")
        try:
            size = path.stat().st_size
            if size > MAX_STATIC_BYTES:
                return connection.respond(413, "file too large to serve\n")
            body = path.read_bytes()
        except OSError:
            return connection.respond(404, "not found\n")
        content_type = CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return self._file_response(connection, body, content_type)

    def _static_file(self, raw_path: str) -> Path | None:
        """The file under ``web_dir`` that ``raw_path`` names, or None (missing, hidden or outside)."""
        path = unquote(urlsplit(raw_path).path)
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None
        if path.endswith("/"):
            path += "index.html"
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or p.startswith(".") for p in parts):
            return None
        candidate = self.web_dir.joinpath(*parts).resolve() if parts else self.web_dir / "index.html"
        if not candidate.is_relative_to(self.web_dir) or not candidate.is_file():
            return None
        return candidate

    @staticmethod
    def _file_response(connection: ServerConnection, body: bytes, content_type: str) -> Response:
        base = connection.respond(200, "")
        headers = Headers(base.headers)
        for name in ("Content-Type", "Content-Length"):
            del headers[name]
        headers["Content-Type"] = content_type
        headers["Content-Length"] = str(len(body))
        headers["Cache-Control"] = "no-cache"
        headers["X-Content-Type-Options"] = "nosniff"
        return dataclasses.replace(base, headers=headers, body=body)
