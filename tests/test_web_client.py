"""The browser viewer (avatar_bridge/web/) in real headless Chromium, driven by Playwright.

Checks, from inside the page (``window.avatarBridge``), that the rotations on the avatar's bone
objects equal the frames the server sent, that the screenshot shows a figure, that the viewer
reconnects after a server restart, and that a dropped VRM is driven with the right axis conversion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avatar_bridge.skeleton import BODY_BONES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("AVATAR_BRIDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-gpu-sandbox",
    "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage",
]
SHOT_DIR = ROOT / "docs" / "images"


def quat_close(a, b) -> float:
    """Angle in radians between two quaternions (q and -q are the same rotation)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    d = abs(float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b))))
    return 2.0 * np.arccos(min(1.0, d))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium, or set AVATAR_BRIDGE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not (ROOT / "avatar_bridge" / "web" / "app.js").exists():
        pytest.fail("avatar_bridge/web/app.js is missing: build it with `cd clients/web && npm ci && npm run build`")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 800, "height": 600})
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(url)
    return page, console


def wait_frames(page, n: int, timeout_s: float = 20.0) -> None:
    page.wait_for_function(f"window.avatarBridge && window.avatarBridge.framesApplied >= {n}",
                           timeout=timeout_s * 1000)


def figure_pixels(png: bytes) -> tuple[int, int]:
    """(pixels that differ clearly from the background colour, total pixels) of a screenshot."""
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(int)
    background = np.array([0x29, 0x22, 0x1D])  # scene background #1d2229 as BGR
    # Ignore the HUD (top-left) and the keypoint panel (bottom-right): count only the 3D view.
    h, w = image.shape[:2]
    view = image[int(0.3 * h):, : int(0.65 * w)]
    differs = np.abs(view - background).sum(axis=2) > 60
    return int(differs.sum()), int(differs.size)


def test_viewer_applies_the_frames_it_receives(browser):
    from client_harness import PublishingServer

    with PublishingServer(rate=30.0) as server:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        wait_frames(page, 20)
        hook = page.evaluate("({kind: avatarBridge.avatarKind, connection: avatarBridge.connection})")
        assert hook == {"kind": "procedural", "connection": "connected"}, console
        worst = 0.0
        checked = 0
        for _ in range(5):
            applied = page.evaluate("(bones) => avatarBridge.appliedPose(bones)", list(BODY_BONES))
            sent = server.sent[applied["seq"]]
            for bone in BODY_BONES:
                worst = max(worst, quat_close(applied["rotations"][bone], sent.rotations[bone]))
                checked += 1
            assert np.allclose(applied["hips"], sent.hips_position, atol=1e-4)
            # A bone the frame does not drive stays at rest (identity).
            assert np.allclose(page.evaluate("avatarBridge.appliedRotation('leftIndexProximal')"), [0, 0, 0, 1])
            time.sleep(0.15)
        assert checked == 5 * len(BODY_BONES)
        assert worst < 1e-4, f"applied rotations differ from the sent ones by up to {np.degrees(worst):.3f} deg"
        # The page's own counters: it renders what it receives (it may skip frames, never invent them).
        received, applied_n = page.evaluate("[avatarBridge.framesReceived, avatarBridge.framesApplied]")
        assert 0 < applied_n <= received
        # Controls reach the server as protocol messages.
        page.click("#calibrate")
        page.wait_for_function("true")
        deadline = time.monotonic() + 5
        while "calibrate" not in server.control_types() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "calibrate" in server.control_types()
        page.click("#pause")
        while "pause" not in server.control_types() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c.paused for c in server.controls if c.type == "pause"] == [True]
        assert page.inner_text("#pause") == "Resume"
        # The fps read-out counts frames of the last second: the harness sends 30/s (a busy machine
        # delivers fewer: the server drops what the page has not taken yet).
        fps = int(page.inner_text("#fps"))
        assert 1 <= fps <= 40, fps
        png = page.screenshot()
        changed, total = figure_pixels(png)
        assert changed > 0.01 * total, f"only {changed} of {total} pixels differ from the background: no figure drawn"
        assert not [c for c in console if c.startswith("pageerror")], console
        page.close()


def test_viewer_drives_the_selected_person(browser):
    """Two people: the avatar follows the driver; choosing person 2 in the page makes the server switch."""
    from client_harness import PublishingServer

    with PublishingServer(rate=30.0, people=2) as server:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        wait_frames(page, 5)
        page.wait_for_function("document.querySelectorAll('#person option').length === 2")
        page.select_option("#person", "2")
        page.wait_for_function("avatarBridge.lastFrame.driver === 2", timeout=10000)
        wait_frames(page, page.evaluate("avatarBridge.framesApplied") + 3)
        applied = page.evaluate("(bones) => avatarBridge.appliedPose(bones)", list(BODY_BONES))
        rig = server.sent[applied["seq"]]
        assert rig.track_id == 2
        for bone in BODY_BONES:
            assert quat_close(applied["rotations"][bone], rig.rotations[bone]) < 1e-4, bone
        # Both people are drawn in the keypoint panel (the driver highlighted), so it is not blank.
        assert page.evaluate("avatarBridge.lastFrame.people.length") == 2
        page.close()


def test_viewer_passes_the_page_token_to_the_websocket(browser):
    """A server with a token: the page opened with ?token= connects, without it the server refuses."""
    from client_harness import PublishingServer

    token = "tok-" + "x" * 28
    with PublishingServer(rate=30.0, token=token) as server:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/?token={token}")
        wait_frames(page, 3)
        assert token not in page.inner_text("#connection")  # never shown on screen
        page.close()
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        page.wait_for_function("avatarBridge.connection === 'reconnecting'", timeout=10000)
        assert page.evaluate("avatarBridge.framesReceived") == 0
        page.close()


def test_viewer_reconnects_after_server_restart(browser):
    from client_harness import PublishingServer

    first = PublishingServer(rate=30.0).__enter__()
    port = first.port
    page, console = open_page(browser, f"http://127.0.0.1:{port}/")
    wait_frames(page, 5)
    first.stop()
    page.wait_for_function("avatarBridge.connection === 'reconnecting'", timeout=10000)
    before = page.evaluate("avatarBridge.framesReceived")
    # A new server on the same port: the page must find it again by itself (backoff 0.5 s, 1 s, ...).
    with PublishingServer(rate=30.0, port=port):
        page.wait_for_function(f"avatarBridge.framesReceived > {before + 5}", timeout=20000)
        assert page.evaluate("avatarBridge.connects") == 2
        assert page.evaluate("avatarBridge.connection") == "connected"
    page.close()


# Self-made test avatars (tests/blender_make_vrm.py writes them with the VRM add-on; no third-party model).
VRM_FILES = {"vrm1": ROOT / "tests" / "data" / "avatar-vrm1.vrm", "vrm0": ROOT / "tests" / "data" / "avatar-vrm0.vrm"}
# Raw bone pairs whose world direction the test checks, with the pair's rest direction in the
# canonical frame (after VRMUtils.rotateVRM0 a VRM 0.x model faces +Z like a VRM 1.0 one).
DIRECTION_CHECKS = {
    ("leftUpperArm", "leftLowerArm"): (1.0, 0.0, 0.0),
    ("rightUpperArm", "rightLowerArm"): (-1.0, 0.0, 0.0),
    ("leftLowerArm", "leftHand"): (1.0, 0.0, 0.0),
    ("leftUpperLeg", "leftLowerLeg"): (0.0, -1.0, 0.0),
    ("rightLowerLeg", "rightFoot"): (0.0, -1.0, 0.0),
    ("spine", "chest"): (0.0, 1.0, 0.0),
}


def drop_file(page, path: Path, data: bytes | None = None) -> None:
    """Drop a file onto the page: a real DragEvent carrying a DataTransfer with the file."""
    import base64

    payload = base64.b64encode(path.read_bytes() if data is None else data).decode()
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name));
            window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""", [payload, path.name])


def test_bad_dropped_files_give_a_clear_error(browser, tmp_path):
    from client_harness import PublishingServer

    with PublishingServer(rate=30.0) as server:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        wait_frames(page, 3)
        drop_file(page, tmp_path / "notes.txt", b"hello")
        page.wait_for_function("avatarBridge.errors.length === 1")
        assert page.inner_text("#error") == "notes.txt: drop a .vrm file (VRM 0.x or 1.0)"
        drop_file(page, tmp_path / "broken.vrm", b"glTF but not really")
        page.wait_for_function("avatarBridge.errors.length === 2", timeout=10000)
        message = page.inner_text("#error")
        assert message.startswith("broken.vrm: not a readable glTF/VRM file"), message
        # The viewer keeps going with its default avatar.
        assert page.evaluate("avatarBridge.avatarKind") == "procedural"
        applied = page.evaluate("avatarBridge.framesApplied")
        wait_frames(page, applied + 3)
        page.close()


@pytest.mark.parametrize("kind", ["vrm1", "vrm0"])
def test_dropped_vrm_is_driven_with_the_right_axes(browser, kind):
    """A .vrm chosen by the user: its normalized bones get the stream's rotations (VRM 0.x converted),
    and its skinned raw bones point where the streamed pose says, in world space, for both versions."""
    from avatar_bridge.quat import rotate
    from avatar_bridge.skeleton import BONE_INDEX, forward_kinematics
    from client_harness import PublishingServer

    with PublishingServer(rate=30.0) as server:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        wait_frames(page, 3)
        if kind == "vrm1":  # dropped onto the page, as a user would
            drop_file(page, VRM_FILES[kind])
        else:  # chosen with the Load VRM... button
            page.set_input_files("#vrm-file", str(VRM_FILES[kind]))
        page.wait_for_function(f"avatarBridge.avatarKind === '{kind}'", timeout=20000)
        applied_before = page.evaluate("avatarBridge.framesApplied")
        wait_frames(page, applied_before + 5)
        pairs = list(DIRECTION_CHECKS)
        bones = sorted({b for pair in pairs for b in pair} | {"head"})
        for _ in range(3):
            snap = page.evaluate(
                """(bones) => { const p = avatarBridge.appliedPose(bones);
                    p.raw = Object.fromEntries(bones.map(b => [b, avatarBridge.rawBoneWorldPosition(b)]));
                    return p; }""", bones)
            rig = server.sent[snap["seq"]]
            for bone in ("leftUpperArm", "rightLowerLeg", "spine", "head"):
                assert quat_close(snap["rotations"][bone], rig.rotations[bone]) < 1e-4, bone
            _, world = forward_kinematics(rig.rotations)
            for parent, child in pairs:
                d = np.subtract(snap["raw"][child], snap["raw"][parent])
                expected = rotate(world[BONE_INDEX[parent]], np.array(DIRECTION_CHECKS[(parent, child)]))
                error = np.degrees(np.arccos(np.clip(np.dot(d / np.linalg.norm(d), expected), -1, 1)))
                assert error < 1.0, f"{kind}: {parent}->{child} is {error:.1f} deg off the streamed pose"
            time.sleep(0.1)
        png = page.screenshot()
        changed, total = figure_pixels(png)
        assert changed > 0.01 * total, f"{kind}: only {changed} of {total} pixels show the model"
        assert not [c for c in console if c.startswith("pageerror")], console
        page.close()


def test_chosen_vrm_is_loaded_again_after_a_reload(browser):
    """The VRM a user loads is kept in the browser (IndexedDB) and comes back when the page reloads,
    as an OBS browser source reloads it and no file can be dropped there (found by a new user: a
    reload brought back the default avatar); *Default avatar* forgets it."""
    from client_harness import PublishingServer

    with PublishingServer(rate=30.0) as server:
        page, console = open_page(browser, f"http://127.0.0.1:{server.port}/")
        wait_frames(page, 3)
        page.set_input_files("#vrm-file", str(VRM_FILES["vrm1"]))
        page.wait_for_function("avatarBridge.avatarKind === 'vrm1'", timeout=20000)
        page.reload()
        page.wait_for_function("avatarBridge.avatarKind === 'vrm1'", timeout=20000)
        wait_frames(page, 3)
        page.click("#default-avatar")
        page.wait_for_function("avatarBridge.avatarKind === 'procedural'", timeout=5000)
        page.reload()
        wait_frames(page, 10)  # time enough for a saved VRM to come back, if one were kept
        assert page.evaluate("avatarBridge.avatarKind") == "procedural"
        assert not [c for c in console if c.startswith("pageerror")], console
        page.close()


def test_viewer_against_avatar_bridge_run_synthetic(browser):
    """The real product: `avatar-bridge run --source synthetic --headless` serves the page and streams;
    the avatar's bones carry the rotations of the frames the server sent (seen by a second client)."""
    from client_harness import FrameRecorder, RunningPipeline, pipeline_available

    reason = pipeline_available()
    if reason:
        pytest.skip(f"avatar-bridge run --source synthetic is not available: {reason}")
    with RunningPipeline() as run:
        recorder = FrameRecorder(f"ws://127.0.0.1:{run.port}/")
        try:
            page, console = open_page(browser, f"http://127.0.0.1:{run.port}/")
            wait_frames(page, 30, timeout_s=60)
            compared = 0
            moved: set[str] = set()
            deadline = time.monotonic() + 20
            while compared < 5 and time.monotonic() < deadline:
                applied = page.evaluate("(bones) => avatarBridge.appliedPose(bones)", list(BODY_BONES))
                sent = recorder.driving_pose(applied["seq"])
                if sent is None:  # the recorder can miss a frame (each client gets only the newest)
                    time.sleep(0.05)
                    continue
                for bone, t in sent.items():
                    if bone in applied["rotations"]:
                        assert quat_close(applied["rotations"][bone], t["rotation"]) < 1e-4, bone
                assert np.allclose(applied["hips"], sent["hips"]["position"], atol=1e-4)
                moved |= {b for b in BODY_BONES if abs(applied["rotations"][b][3]) < 0.999}  # > 5 deg from rest
                compared += 1
                time.sleep(0.3)
            assert compared == 5, "the recorder never saw the frames the page applied"
            # The synthetic performer moves: the avatar is not stuck in the rest pose.
            assert len(moved) >= 4, moved
            time.sleep(0.5)
            png = page.screenshot()
            changed, total = figure_pixels(png)
            assert changed > 0.01 * total, f"only {changed} of {total} pixels differ from the background"
            if os.environ.get("AVATAR_BRIDGE_WRITE_DOCS_IMAGES"):
                # For the docs: a moment where the performer is tracked and its keypoints are drawn.
                page.wait_for_function(
                    "(() => { const f = avatarBridge.lastFrame; const p = f.people[0];"
                    " return p && p.tracking && p.keypoints.length === 17 && f.latency_ms < 100; })()", timeout=30000)
                time.sleep(0.1)
                SHOT_DIR.mkdir(parents=True, exist_ok=True)
                (SHOT_DIR / "web-viewer.png").write_bytes(page.screenshot())
            assert not [c for c in console if c.startswith("pageerror")], console
            page.close()
        finally:
            recorder.close()


def test_committed_viewer_build_matches_the_source(tmp_path):
    """avatar_bridge/web/ is committed build output: it must be what clients/web/src builds to."""
    web = ROOT / "clients" / "web"
    node = shutil.which("node")
    if node is None or not (web / "node_modules" / "esbuild").exists():
        pytest.skip("needs node and `npm ci` in clients/web (the build output is committed, CI does not build it)")
    proc = subprocess.run([node, "build.mjs", str(tmp_path)], cwd=web, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    committed = ROOT / "avatar_bridge" / "web"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir())
    stale = [n for n in names if (tmp_path / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"{stale} are out of date: run `cd clients/web && npm run build` and commit avatar_bridge/web/"
