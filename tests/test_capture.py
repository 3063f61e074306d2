"""Frame sources: real decoding, truncated/corrupt files, missing cameras, reconnects, latest-frame drops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_bridge.capture import CameraSource, ImageFolderSource, VideoFileSource, open_source, parse_size
from conftest import MOCAP, VFR_VIDEO, VIDEO, need, vfr_container_times


def run_with_deadline(fn, seconds: float = 30.0):
    """Run ``fn`` on a thread; fail (instead of hanging the suite) if it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds} s (hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def write_video(path: Path, frames: int = 30, size=(160, 120), fps: float = 30.0) -> Path:
    """A small MJPG AVI whose frame i shows the number i as a grey level (so order can be checked)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 6 * i, np.uint8))
    writer.release()
    return path


def read_all(source) -> list:
    frames = []
    with source:
        while (frame := source.read()) is not None:
            frames.append(frame)
    return frames


def test_fixture_video_decodes_every_frame():
    source = VideoFileSource(need(VIDEO), realtime=False)
    assert (source.width, source.height) == (1920, 1080)
    assert 27.0 < source.fps < 29.0
    frames = run_with_deadline(lambda: read_all(source))
    assert len(frames) == 72
    assert [f.index for f in frames] == list(range(72))
    assert all(f.image.shape == (1080, 1920, 3) and f.image.dtype == np.uint8 for f in frames)
    stamps = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(stamps) >= 0)
    # real pictures, not blank buffers: the frames differ and have texture
    assert frames[0].image.std() > 10
    assert np.abs(frames[0].image.astype(int) - frames[-1].image.astype(int)).mean() > 1
    assert source.read() is None  # closed


def test_fixture_video_resized_through_open_source():
    source = open_source(str(need(VIDEO)), realtime=False, resize="640x360")
    frames = run_with_deadline(lambda: read_all(source))
    assert len(frames) == 72
    assert (source.width, source.height) == (640, 360)
    assert frames[10].image.shape == (360, 640, 3)


def test_truncated_fixture_video_ends_cleanly(tmp_path):
    data = need(VIDEO).read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    try:
        source = open_source(str(cut), realtime=False)
    except ValueError as exc:  # acceptable: refused at open with a message naming the file
        assert "truncated.mp4" in str(exc)
        return
    frames = run_with_deadline(lambda: read_all(source))
    assert 0 < len(frames) < 72


def test_truncated_small_video_ends_cleanly_with_warning(tmp_path, caplog):
    full = write_video(tmp_path / "full.avi", frames=40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    source = VideoFileSource(cut, realtime=False)
    frames = run_with_deadline(lambda: read_all(source))
    assert 5 < len(frames) < 40
    # frames come out in file order
    levels = [int(f.image.mean() + 0.5) for f in frames]
    assert levels == sorted(levels)
    assert source.decode_failed
    assert "truncated or corrupt" in caplog.text


def test_garbage_file_is_refused_with_clear_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="junk.mp4"):
        run_with_deadline(lambda: open_source(str(junk), realtime=False))


def test_missing_source_and_single_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthetic"):
        open_source(str(tmp_path / "nope.mp4"))
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="folder"):
        open_source(str(image))
    with pytest.raises(ValueError, match="640x360"):
        parse_size("640-360")


def test_camera_that_does_not_exist_gives_clear_error():
    with pytest.raises(RuntimeError, match="--source synthetic"):
        run_with_deadline(lambda: open_source("/dev/video99"), 20)
    with pytest.raises(RuntimeError, match="--source FILE"):
        run_with_deadline(lambda: open_source("99"), 20)


def test_image_folder_in_name_order_skipping_corrupt_files(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), np.full((20, 30, 3), 50 * i, np.uint8))
    (tmp_path / "frame_002.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path), realtime=False)
    assert isinstance(source, ImageFolderSource)
    frames = read_all(source)
    assert [int(f.image.mean()) for f in frames] == [0, 50, 150]
    assert [f.dropped for f in frames] == [0, 0, 1]
    assert (frames[0].width, frames[0].height) == (30, 20)


@pytest.mark.parametrize("realtime", [False, True])
def test_variable_frame_rate_video_is_stamped_with_container_times(realtime):
    """cases/vfr.mp4: every frame keeps its position and the container's PTS (not index / average
    fps, which put frame 24 at 1.58 s); paced playback follows the PTS, so it lasts its real 3 s."""
    source = VideoFileSource(need(VFR_VIDEO), realtime=realtime)
    frames = run_with_deadline(lambda: read_all(source))
    assert len(frames) == 48 and sum(f.dropped for f in frames) == 0
    assert [f.index for f in frames] == list(range(48))
    pts = [f.pts for f in frames]
    assert pts[:29] == pytest.approx(vfr_container_times(), abs=0.001)
    assert all(0.023 <= b - a <= 0.027 for a, b in zip(pts[24:], pts[25:]))
    assert 2.97 <= pts[-1] < 3.0
    if realtime:  # due times follow the PTS: the 100 ms part is slow, the 25 ms part four times faster
        for f in frames:
            assert f.timestamp - frames[0].timestamp == pytest.approx(f.pts, abs=1e-6)


def test_paced_video_numbers_frames_by_position_when_it_drops(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=30, fps=30.0)
    with VideoFileSource(path, realtime=True) as source:
        handed = []
        while (frame := source.read()) is not None:
            handed.append(frame)
            time.sleep(0.1)
    assert sum(f.dropped for f in handed) > 0
    for a, b in zip(handed, handed[1:]):  # the index is the frame's place in the file, gaps included
        assert b.index - a.index == 1 + b.dropped
        assert b.pts - a.pts == pytest.approx((1 + b.dropped) / 30.0, abs=1e-3)
        assert round(b.image.mean() / 6) == b.index


def test_empty_image_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        open_source(str(tmp_path))


def test_realtime_video_drops_frames_for_a_slow_consumer(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=30, fps=30.0)
    with VideoFileSource(path, realtime=True) as source:
        handed = []
        while (frame := source.read()) is not None:
            handed.append(frame)
            time.sleep(0.1)  # a consumer at <10 fps on a 30 fps file
    dropped = sum(f.dropped for f in handed)
    assert dropped > 0
    assert len(handed) + dropped <= 30
    levels = [int(f.image.mean() + 0.5) for f in handed]
    assert levels == sorted(levels)  # always forward, newest due frame
    # frames are stamped with their due time in the file: the gap between two handed-out frames is
    # exactly one frame period more than the frames dropped between them
    for a, b in zip(handed, handed[1:]):
        assert (b.timestamp - a.timestamp) * 30.0 == pytest.approx(1 + b.dropped, abs=1e-6)


def test_looping_video_restarts(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=5)
    with VideoFileSource(path, realtime=False, loop=True) as source:
        frames = [source.read() for _ in range(12)]
    assert all(f is not None for f in frames)
    assert [round(f.image.mean() / 6) for f in frames] == [0, 1, 2, 3, 4] * 2 + [0, 1]


def test_camera_reader_latest_frame_and_reopen(tmp_path):
    """A video file opened as a "camera" (real cv2.VideoCapture): it runs out after 20 frames, which
    the reader treats as a disconnect and reopens with backoff; a slow consumer sees drops."""
    path = write_video(tmp_path / "cam.avi", frames=20)
    camera = CameraSource(str(path), width=160, height=120, fps=30, failures_before_reopen=2, backoff=(0.05, 0.2))
    try:
        assert (camera.width, camera.height) == (160, 120)
        assert camera.granted[:2] == (160, 120)
        got = []
        deadline = time.monotonic() + 20
        while camera.reopen_count < 2 and time.monotonic() < deadline:
            frame = camera.read(timeout=5)
            assert frame is not None
            got.append(frame)
            time.sleep(0.02)
        assert camera.reopen_count >= 2, "the camera was not reopened after it stopped delivering"
        assert sum(f.dropped for f in got) > 0  # the reader outran the consumer: older frames discarded
        assert [f.index for f in got] == list(range(len(got)))
        assert all(b.timestamp >= a.timestamp for a, b in zip(got, got[1:]))
    finally:
        camera.close()
    assert camera.read(timeout=0.2) is None


def test_camera_that_never_comes_back_returns_none_after_give_up(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=3)
    opened = []

    def open_once(device):
        # the first open works (a real capture); every reopen finds no device, like an unplugged webcam
        cap = cv2.VideoCapture(device if not opened else str(tmp_path / "gone.avi"))
        opened.append(device)
        return cap

    camera = CameraSource(str(path), failures_before_reopen=1, backoff=(0.05, 0.1), give_up_after=1.0, open_capture=open_once)
    try:
        frames = []
        while (frame := run_with_deadline(camera.read, 10)) is not None:
            frames.append(frame)
        assert 1 <= len(frames) <= 3
        assert not camera.connected
        assert len(opened) >= 2  # it kept trying
    finally:
        camera.close()


def test_keypoint_sources_dispatch():
    source = open_source(str(need(MOCAP)), fps=30.0, realtime=False)
    with source:
        frame = source.read()
    assert frame.image is None and frame.truth.people and frame.truth.people[0].keypoints.shape == (17, 2)


def test_synthetic_dispatch_passes_size_seed_and_duration():
    pytest.importorskip("avatar_bridge.synthetic", reason="the synthetic performer is not in this checkout yet")
    source = open_source("synthetic", width=640, height=360, fps=30.0, seed=3, duration=0.5, realtime=False)
    frames = read_all(source)
    assert len(frames) == 15
    assert (frames[0].width, frames[0].height) == (640, 360) and frames[0].image is None
    assert frames[0].truth.people[0].keypoints.shape == (17, 2)
    again = read_all(open_source("synthetic", width=640, height=360, fps=30.0, seed=3, duration=0.5, realtime=False))
    np.testing.assert_array_equal(frames[7].truth.people[0].keypoints, again[7].truth.people[0].keypoints)  # deterministic
    rendered = open_source("synthetic", width=320, height=240, duration=0.1, realtime=False, render=True)
    with rendered:
        assert rendered.read().image.shape == (240, 320, 3)
