"""AMP humanoid clips (.npy) as mocap sources, and the fitted camera."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, need

from avatar_bridge.amp import AMP_BODY_JOINTS, load_amp
from avatar_bridge.camera import fit_camera
from avatar_bridge.capture import open_source
from avatar_bridge.keypoints import KEYPOINT_INDEX as K
from avatar_bridge.mocap import MocapSource, coco17_world, facing_yaw, load_motion
from avatar_bridge.pipeline import is_keypoint_source

AMP_DIR = FIXTURES / "mocap" / "amp"
AMP_CLIPS = ("backflip", "cartwheel", "hop", "run", "walk")

NAMES = ["pelvis", "torso", "head", "right_upper_arm", "right_lower_arm", "right_hand", "left_upper_arm", "left_lower_arm",
         "left_hand", "right_thigh", "right_shin", "right_foot", "left_thigh", "left_shin", "left_foot"]
PARENTS = np.array([-1, 0, 1, 1, 3, 4, 1, 6, 7, 0, 9, 10, 0, 12, 13])
OFFSETS = np.array([[0, 0, 1], [0, 0, 0.236], [0, 0, 0.224], [-0.024, -0.183, 0.2435], [0, 0, -0.275], [0, 0, -0.259],
                    [-0.024, 0.183, 0.2435], [0, 0, -0.275], [0, 0, -0.259], [0, -0.085, 0], [0, 0, -0.42], [0, 0, -0.41],
                    [0, 0.085, 0], [0, 0, -0.42], [0, 0, -0.41]], dtype=np.float32)


def write_amp(path, frames=20, fps=60, walk=1.0):
    """A standing humanoid walking along its own forward axis (+X, Z up), in the AMP layout."""
    rot = np.zeros((frames, 15, 4), np.float32)
    rot[..., 3] = 1.0
    root = np.zeros((frames, 3), np.float32)
    root[:, 0] = np.linspace(0.0, walk, frames)
    root[:, 2] = 0.9
    data = OrderedDict(
        rotation={"arr": rot, "context": {"dtype": "float32"}},
        root_translation={"arr": root, "context": {"dtype": "float32"}},
        skeleton_tree=OrderedDict(node_names=NAMES, parent_indices={"arr": PARENTS}, local_translation={"arr": OFFSETS}),
        is_local=True,
        fps=np.array(fps),
    )
    np.save(path, np.array(data, dtype=object), allow_pickle=True)
    return path


def test_amp_forward_kinematics_to_canonical_coco(tmp_path):
    motion = load_amp(write_amp(tmp_path / "stand.npy"))
    assert motion.num_frames == 20 and motion.frame_time == pytest.approx(1 / 60)
    world = coco17_world(motion, fps=30)
    assert world.shape == (10, 17, 3)  # 20 frames at 60 fps span 0.317 s -> 10 frames at 30 fps
    w = world[0]
    # Y up: pelvis at 0.9 m, hips at its height, ankles 0.83 m below them.
    assert w[K["left_hip"], 1] == pytest.approx(0.9)
    assert w[K["left_ankle"], 1] == pytest.approx(0.9 - 0.42 - 0.41, abs=1e-5)
    # Left towards +X, facing +Z (the walk along AMP +X becomes +Z).
    assert w[K["left_hip"], 0] == pytest.approx(0.085, abs=1e-6) and w[K["right_hip"], 0] == pytest.approx(-0.085, abs=1e-6)
    assert abs(facing_yaw(w)) < 1e-9
    assert world[-1, K["left_hip"], 2] > world[0, K["left_hip"], 2] + 0.3
    # Face points: fixed offsets from the head body, nose in front of the ears and above the shoulders.
    assert w[K["nose"], 2] > w[K["left_ear"], 2] and w[K["nose"], 1] > w[K["left_shoulder"], 1]
    assert w[K["left_eye"], 0] > 0 > w[K["right_eye"], 0]
    assert w[K["left_wrist"], 1] == pytest.approx(0.9 + 0.236 + 0.2435 - 0.275 - 0.259, abs=1e-5)


def test_amp_reader_rejects_code_and_bad_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.npy"
    np.save(evil, np.array({"rotation": Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_amp(evil)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="expected an AMP motion"):
        load_amp(plain)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.array({"rotation": np.zeros(3)}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not an AMP motion"):
        load_amp(wrong)
    text = tmp_path / "text.npy"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a NumPy .npy file"):
        load_amp(text)
    with pytest.raises(FileNotFoundError):
        load_amp(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="not a mocap clip"):
        load_motion(tmp_path / "clip.fbx")


def test_npy_source_is_a_fitted_keypoint_source(tmp_path):
    path = write_amp(tmp_path / "walk.npy", frames=60, walk=3.0)
    assert is_keypoint_source(str(path))
    source = open_source(str(path), realtime=False)
    assert isinstance(source, MocapSource)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == len(source) == 30
    # The fitted camera keeps every keypoint of the 3 m walk in frame.
    assert all(np.all(f.truth.people[0].scores == 1.0) for f in frames)
    # The default 3 m camera would not: the walk ends about 1.5 m from it.
    assert MocapSource(path).scores.min() == 0.0


def test_fit_camera_keeps_points_in_frame_and_checks_input():
    rng = np.random.default_rng(0)
    points = rng.uniform([-2, 0, -1], [2, 1.8, 3], (50, 17, 3))
    for azimuth in (0.0, 45.0, 90.0):
        cam = fit_camera(points, azimuth)
        uv = cam.project(points.reshape(-1, 3))
        assert np.all((uv >= 0) & (uv <= [1280, 720]))
        closer = fit_camera(points, azimuth, distance=float(np.linalg.norm(cam.position[[0, 2]] - cam.target[[0, 2]])) - 0.2)
        uv = closer.project(points.reshape(-1, 3))
        assert not np.all((uv >= 64) & (uv <= [1280 - 64, 720 - 36]))  # 0.05 margin no longer met
    fixed = fit_camera(points, 0.0, distance=5.0, height=1.2)
    assert fixed.position[1] == 1.2 and fixed.position[2] - fixed.target[2] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="finite"):
        fit_camera(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="positive"):
        fit_camera(points, distance=0.0)
    with pytest.raises(ValueError, match="pass a distance"):
        fit_camera(np.array([[-100.0, 0, 0], [100.0, 0, 0]]), max_distance=5.0)


@pytest.mark.parametrize("name", AMP_CLIPS)
def test_amp_fixture_clips(name):
    path = need(AMP_DIR / f"amp_humanoid_{name}.npy")
    motion = load_amp(path)
    assert motion.names[:3] == ["pelvis", "torso", "head"] and set(AMP_BODY_JOINTS.values()) <= set(motion.names)
    world = coco17_world(motion, fps=30)
    assert abs(facing_yaw(world[0])) < 1e-9
    # A human: at its most upright, 1.3-1.8 m from the lower ankle to the nose.
    height = world[:, K["nose"], 1] - np.minimum(world[:, K["left_ankle"], 1], world[:, K["right_ankle"], 1])
    assert 1.3 < height.max() < 1.8
    # Bone lengths are constant at the clip's own frames (rigid skeleton; resampling interpolates).
    native = coco17_world(motion, fps=1.0 / motion.frame_time)
    thigh = np.linalg.norm(native[:, K["left_hip"]] - native[:, K["left_knee"]], axis=-1)
    assert np.ptp(thigh) < 1e-3 and thigh[0] == pytest.approx(0.4215, abs=1e-3)
    source = MocapSource(path, camera="fit")
    assert source.scores.min() == 1.0


def test_run_command_plays_an_amp_clip(tmp_path, capsys):
    """`avatar-bridge run --source FILE.npy` drives the keypoint pipeline (no detector, no pose model)."""
    from avatar_bridge import cli

    path = write_amp(tmp_path / "walk.npy", frames=60, walk=1.0)
    assert cli.main(["run", "--source", str(path), "--headless", "--no-ws", "--no-vmc", "--duration", "0.5", "--quiet"]) == 0
    out = capsys.readouterr()
    import re

    updates = re.search(r"(\d+) pose updates", out.out + out.err)
    assert updates and int(updates.group(1)) > 5


# --- DeepMimic humanoid3d motions (.txt) -----------------------------------------------------------


def deepmimic_motions() -> Path | None:
    """pybullet_data's DeepMimic motions (the test extra installs pybullet), or None."""
    try:
        import pybullet_data
    except ImportError:
        return None
    folder = Path(pybullet_data.getDataPath()) / "data" / "motions"
    return folder if (folder / "humanoid3d_backflip.txt").is_file() else None


def write_deepmimic(path: Path, rows: list[list[float]]) -> Path:
    path.write_text(json.dumps({"Loop": "none", "Frames": rows}))
    return path


def deepmimic_row(knee: float = 0.0, elbow: float = 0.0, duration: float = 1 / 30) -> list[float]:
    """One DeepMimic frame: standing at 0.9 m (Y up), every joint at rest but the left knee and elbow."""
    identity = [1.0, 0.0, 0.0, 0.0]  # w x y z
    row = [duration, 0.0, 0.9, 0.0] + identity * 3  # root position, root, chest, neck
    row += identity + [0.0] + identity + identity + [0.0]  # right hip, knee, ankle, shoulder, elbow
    row += identity + [knee] + identity + identity + [elbow]  # left hip, knee, ankle, shoulder, elbow
    return row


def test_deepmimic_motion_as_the_amp_humanoid(tmp_path):
    """Rows of 44 numbers become the AMP humanoid Z up: the root at 0.9 m height, the head above it,
    and a negative knee angle bends the shin backwards (the AMP clips' convention: the DeepMimic
    backflip and the AMP backflip agree joint for joint, below)."""
    from avatar_bridge.amp import load_deepmimic

    path = write_deepmimic(tmp_path / "humanoid3d_test.txt", [deepmimic_row(), deepmimic_row(knee=-1.0, elbow=1.0),
                                                              deepmimic_row(duration=0.0)])
    motion = load_deepmimic(path)
    assert motion.num_frames == 3 and motion.frame_time == pytest.approx(1 / 30)
    _, pos = motion.world_transforms()
    index = {name: i for i, name in enumerate(motion.names)}
    np.testing.assert_allclose(pos[:, index["pelvis"]], [[0.0, 0.0, 0.9]] * 3, atol=1e-12)
    assert pos[0, index["head"], 2] > pos[0, index["pelvis"], 2] + 0.4
    knee, ankle = pos[1, index["left_shin"]], pos[1, index["left_foot"]]
    assert ankle[0] < knee[0] - 0.3  # 1 rad of flexion: the ankle 0.41 x sin(1) = 0.34 m behind the knee (X forward)
    assert ankle[1] == pytest.approx(knee[1], abs=1e-12)  # in the leg's own plane
    assert load_motion(path).names == motion.names  # by suffix
    source = open_source(str(path), realtime=False)  # as --source: a fitted keypoint source
    try:
        assert is_keypoint_source(str(path)) and isinstance(source, MocapSource)
        assert source.read().truth.people[0].keypoints.shape == (17, 2)
    finally:
        source.close()


@pytest.mark.parametrize(
    "text, fragment",
    [("not json", "not a DeepMimic humanoid3d motion"), ('{"Loop": "wrap"}', "not a DeepMimic humanoid3d motion"),
     (json.dumps({"Frames": [[0.1] * 43, [0.1] * 43]}), "rows of 44 numbers"),
     (json.dumps({"Frames": [deepmimic_row()]}), "at least 2 rows"),
     (json.dumps({"Frames": [deepmimic_row(), deepmimic_row(knee=float("nan"))]}), "NaN"),
     (json.dumps({"Frames": [deepmimic_row(duration=0.0), deepmimic_row()]}), "durations must be positive")],
)
def test_deepmimic_reader_explains_bad_files(tmp_path, text, fragment):
    from avatar_bridge.amp import load_deepmimic

    path = tmp_path / "motion.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match="motion.txt") as info:
        load_deepmimic(path)
    assert fragment in str(info.value)


def test_deepmimic_backflip_is_the_amp_backflip():
    """The real files: pybullet_data's humanoid3d_backflip.txt read by :func:`load_deepmimic` and the
    AMP fixture's backflip (the same motion, retargeted by NVIDIA and stored Z up) agree: every local
    joint rotation within 0.5 degrees (float32 storage) and every COCO keypoint within 1 mm."""
    from avatar_bridge.amp import load_deepmimic

    folder = deepmimic_motions()
    if folder is None:
        pytest.skip("needs pybullet's pybullet_data (pip install pybullet; the test extra has it)")
    ours = load_deepmimic(folder / "humanoid3d_backflip.txt")
    amp = load_amp(need(FIXTURES / "mocap" / "amp" / "amp_humanoid_backflip.npy"))
    assert ours.num_frames == amp.num_frames and ours.frame_time == pytest.approx(amp.frame_time, rel=1e-6)
    dots = np.clip(np.abs(np.sum(ours.rotations * amp.rotations, axis=-1)), 0.0, 1.0)
    assert np.degrees(2 * np.arccos(dots)).max() < 0.5
    assert np.abs(ours.coco17_points() - amp.coco17_points()).max() < 0.001
