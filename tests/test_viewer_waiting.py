"""The web viewer's "waiting for stream" state (issue #16), in real headless Chromium: before the
first pose the avatar is hidden and the page says what it waits for, instead of a T-pose that looks
tracked."""

from __future__ import annotations

import time

import pytest

from avatar_bridge.config import WebSocketConfig
from avatar_bridge.server import WebSocketServer
from avatar_bridge.types import OutputFrame
from test_web_client import browser, open_page  # noqa: F401  (the Chromium fixture)

pytestmark = pytest.mark.slow


def state(page) -> dict:
    return page.evaluate("({waiting: avatarBridge.waiting, visible: avatarBridge.avatarVisible,"
                         " text: document.getElementById('waiting').hidden ? null : document.getElementById('waiting').textContent})")


def wait_state(page, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    current = state(page)
    while not predicate(current) and time.monotonic() < deadline:
        time.sleep(0.05)
        current = state(page)
    return current


def test_viewer_waits_for_the_stream_before_showing_the_avatar(browser):  # noqa: F811
    from client_harness import output_frame

    server = WebSocketServer(WebSocketConfig(port=0, rate=30.0)).start()
    try:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        page.wait_for_function("window.avatarBridge && avatarBridge.connection === 'connected' && avatarBridge.hello")
        # connected, hello received, no frame yet: the procedural avatar exists but is hidden
        s = wait_state(page, lambda s: s["waiting"] == "waiting for stream...")
        assert s == {"waiting": "waiting for stream...", "visible": False, "text": "waiting for stream..."}, console
        # frames with nobody in them
        for _ in range(5):
            server.publish(OutputFrame(time.monotonic(), 1280, 720, [], None))
            time.sleep(0.05)
        s = wait_state(page, lambda s: s["waiting"] and "nobody in view" in s["waiting"])
        assert s["text"] == "waiting for stream: nobody in view" and not s["visible"]
        # a person with a pose: the banner goes, the avatar shows
        t0 = time.monotonic()
        for i in range(10):
            server.publish(output_frame(i / 30, time.monotonic() - t0 + t0))
            time.sleep(0.05)
        s = wait_state(page, lambda s: s["waiting"] is None)
        assert s == {"waiting": None, "visible": True, "text": None}
        assert not [c for c in console if c.startswith("pageerror")], console
        page.close()
    finally:
        server.stop()
