"""The learned depth-sign prior (depth_prior.py), its training command and its use in the lifter."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from conftest import FIXTURES, MOCAP, need

from avatar_bridge import cli
from avatar_bridge import depth_prior as D
from avatar_bridge import depth_prior_training as T
from avatar_bridge.config import AppConfig, ConfigError, RetargetConfig
from avatar_bridge.keypoints import KEYPOINT_INDEX as K
from avatar_bridge.depth_prior import log_prob_at
from avatar_bridge.retarget import LIMB_SEGMENTS, Retargeter, load_depth_prior

AMP = FIXTURES / "mocap" / "amp"
FAST = T.TrainingSettings(views=8, epochs=10, random_poses=500)


def _pose() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(100, 600, (17, 2)), np.ones(17, dtype=bool)


def test_segments_follow_the_retargeters_order():
    assert [name for name, _, _ in D.PRIOR_SEGMENTS] == list(LIMB_SEGMENTS)
    assert [(a, b) for _, a, b in D.PRIOR_SEGMENTS] == list(LIMB_SEGMENTS.values())
    # Mirroring twice is the identity, and swaps left and right segments.
    assert list(D.MIRROR_INDEX[D.MIRROR_INDEX]) == list(range(17))
    assert D.MIRROR_INDEX[K["left_wrist"]] == K["right_wrist"]
    names = [name for name, _, _ in D.PRIOR_SEGMENTS]
    assert [names[i] for i in D.MIRROR_SEGMENTS] == [n.replace("left", "R").replace("right", "left").replace("R", "right") for n in names]


def test_features_ignore_where_and_how_large_the_person_is():
    kp, seen = _pose()
    ratios = np.linspace(0.2, 1.5, 8)
    base = D.pose_features(kp, seen, ratios)
    assert base.shape == (D.FEATURES,) and base.dtype == np.float32
    moved = D.pose_features(kp * 2.5 + np.array([300.0, -40.0]), seen, ratios)
    np.testing.assert_allclose(base, moved, atol=1e-5)
    assert base[-1] == pytest.approx(1.3)  # ratios clipped to [0, 1.3]
    # The y axis points up, and the seen keypoints' centre is the origin of the torso points.
    hips_y = base[[2 * K["left_hip"] + 1, 2 * K["right_hip"] + 1]].mean()
    sh_y = base[[2 * K["left_shoulder"] + 1, 2 * K["right_shoulder"] + 1]].mean()
    assert (sh_y > hips_y) == (kp[[5, 6], 1].mean() < kp[[11, 12], 1].mean())


def test_features_of_unseen_keypoints_are_zero():
    kp, seen = _pose()
    seen = seen.copy()
    seen[K["left_wrist"]] = False
    kp[K["right_ankle"]] = np.nan  # NaN counts as unseen too
    ratios = np.full(8, np.nan)
    f = D.pose_features(kp, seen, ratios)
    for i in (K["left_wrist"], K["right_ankle"]):
        assert f[2 * i] == 0 and f[2 * i + 1] == 0 and f[34 + i] == 0
    assert np.all(f[51:] == 0) and np.all(np.isfinite(f))
    one = np.zeros(17, dtype=bool)
    one[0] = True
    assert not np.any(D.pose_features(kp, one, ratios))  # one keypoint: nothing to normalize by


def test_varied_proportions_keep_every_joint_angle():
    poses = T.random_poses(20, np.random.default_rng(1))
    varied = T._vary_proportions(poses, np.random.default_rng(2), 0.15)
    for parent, child, _ in T._CHAINS:
        a, b = poses[:, child] - poses[:, parent], varied[:, child] - varied[:, parent]
        cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert np.all(cos > 1 - 1e-9)
        ratio = np.linalg.norm(b, axis=1) / np.linalg.norm(a, axis=1)
        assert np.all((ratio > 0.85 * 0.97 - 1e-9) & (ratio < 1.15 * 1.03 + 1e-9)) and np.ptp(ratio) > 0.05
    np.testing.assert_array_equal(T._vary_proportions(poses, np.random.default_rng(2), 0.0), poses)


def test_random_poses_are_rigid_skeletons():
    poses = T.random_poses(50, np.random.default_rng(3))
    assert poses.shape == (50, 17, 3) and np.all(np.isfinite(poses))
    for _, a, b in D.PRIOR_SEGMENTS:
        lengths = np.linalg.norm(poses[:, b] - poses[:, a], axis=1)
        assert np.ptp(lengths) < 1e-9  # joint angles change, bone lengths do not


def test_tumbling_poses_turn_the_whole_body():
    """Without tumbling every torso points up (lean at most 15 degrees); with all poses tumbling the
    torso's direction spreads over the sphere (about half point down), bone lengths kept."""
    def torso_up(poses):
        up = poses[:, [5, 6]].mean(axis=1) - poses[:, [11, 12]].mean(axis=1)
        return up[:, 1] / np.linalg.norm(up, axis=1)

    upright = T.random_poses(200, np.random.default_rng(9))
    tumbled = T.random_poses(200, np.random.default_rng(9), tumbling=1.0)
    assert np.all(torso_up(upright) > np.cos(np.radians(16)))
    assert 0.35 < np.mean(torso_up(tumbled) < 0) < 0.65
    for _, a, b in D.PRIOR_SEGMENTS:
        np.testing.assert_allclose(np.linalg.norm(tumbled[:, b] - tumbled[:, a], axis=1),
                                   np.linalg.norm(upright[:, b] - upright[:, a], axis=1)[0], atol=1e-9)


def test_training_views_label_the_side_the_geometry_shows():
    """With a distant camera, no noise and an exact calibration, each segment's length ratio r and
    its signed depth s satisfy r^2 + s^2 = 1, so the class follows from r: close to the image plane
    exactly when r >= sqrt(1 - 0.25^2); the mirrored half carries the mirrored labels."""
    poses = T.random_poses(40, np.random.default_rng(4))
    exact = T.ViewSampling(distance_m=(400.0, 500.0), noise_share=(0.0, 0.0), drop=0.0, proportions=0.0, calibration_error=0.0)
    features, labels, mask = T.training_views(poses, 3, np.random.default_rng(5), exact)
    assert features.shape == (240, D.FEATURES) and labels.shape == (240, 8) and mask.shape == (240, 8)
    assert np.all(mask == 1) and set(np.unique(labels)) == {0, 1, 2}
    ratios = features[:, 51:].astype(np.float64)
    plane = ratios >= math.sqrt(1 - D.PLANE_EDGE**2)
    near_edge = np.abs(ratios - math.sqrt(1 - D.PLANE_EDGE**2)) < 2e-3
    assert near_edge.mean() < 0.02
    np.testing.assert_array_equal((labels == 1)[~near_edge], plane[~near_edge])
    np.testing.assert_array_equal(labels[120:], labels[:120][:, D.MIRROR_SEGMENTS])
    np.testing.assert_allclose(features[120:, 51:], features[:120, 51:][:, D.MIRROR_SEGMENTS])


def test_save_load_round_trip_and_file_errors(tmp_path):
    features, labels, mask = T.training_views(T.random_poses(60, np.random.default_rng(6)), 2, np.random.default_rng(7))
    prior = T.train(features, labels, mask, T.TrainingSettings(hidden=16, epochs=2))
    path = tmp_path / "p.npz"
    prior.save(path)
    again = D.DepthSignPrior.load(path)
    kp, seen = _pose()
    got = again.log_probs(kp, seen, np.ones(8))
    assert got.shape == (8, 3)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, atol=0.01)  # (floored at 0.002)
    np.testing.assert_allclose(got, prior.log_probs(kp, seen, np.ones(8)), atol=1e-5)  # float32 on disk
    with pytest.raises(ValueError, match="no such depth-prior weights file"):
        D.DepthSignPrior.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="is a folder"):
        D.DepthSignPrior.load(tmp_path)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="is not depth-prior weights") as error:
        D.DepthSignPrior.load(tmp_path / "text.npz")
    assert "pickle" not in str(error.value)
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="is not depth-prior weights"):
        D.DepthSignPrior.load(tmp_path / "array.npy")
    np.savez(tmp_path / "bad.npz", w0=np.zeros((10, 24)), b0=np.zeros(24))
    with pytest.raises(ValueError, match="do not chain from 59 inputs"):
        D.DepthSignPrior.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", w0=np.zeros((59, 8)), b0=np.zeros(8))
    with pytest.raises(ValueError, match="needs 24 outputs"):
        D.DepthSignPrior.load(tmp_path / "short.npz")


def test_the_per_pose_path_matches_the_batch_path():
    """The lifter's plain-float path gives the batch path's log-probabilities: all seen, some unseen
    or NaN, unknown and out-of-range ratios, and too few keypoints."""
    prior = load_depth_prior("default")
    rng = np.random.default_rng(8)
    for trial in range(20):
        kp = rng.uniform(0, 1280, (17, 2))
        seen = rng.random(17) > (0.0 if trial < 5 else 0.3)
        if trial % 4 == 1:
            kp[rng.integers(17)] = np.nan
        if trial == 19:
            seen[:] = False
            seen[3] = True
        ratios = rng.uniform(-0.2, 1.6, 8)
        ratios[rng.random(8) < 0.2] = np.nan
        ratios[0] = np.inf if trial % 3 == 0 else ratios[0]
        batch = prior.log_probs(kp, seen, ratios)
        one = prior.log_probs_one(kp.tolist(), seen.tolist(), ratios.tolist())
        np.testing.assert_allclose(np.array(one), batch, atol=1e-9)


def test_log_prob_at_interpolates_between_class_centres():
    lp = [-3.0, -1.0, -0.5]
    assert log_prob_at(lp, 0.0) == -1.0
    assert log_prob_at(lp, 0.25) == pytest.approx(-0.75)
    assert log_prob_at(lp, 0.9) == -0.5 and log_prob_at(lp, -0.9) == -3.0
    assert log_prob_at(lp, -0.25) == pytest.approx(-2.0)


def test_settings_name_the_weights(tmp_path):
    assert load_depth_prior("") is None and load_depth_prior("none") is None
    assert isinstance(load_depth_prior("default"), D.DepthSignPrior)
    with pytest.raises(ValueError, match="train-depth-prior"):
        load_depth_prior(str(tmp_path / "nope.npz"))
    config = AppConfig()
    config.retarget.depth_prior = str(tmp_path / "nope.npz")
    with pytest.raises(ConfigError, match="retarget.depth_prior.*current folder"):
        config.validate()
    config.retarget.depth_prior = str(tmp_path)
    with pytest.raises(ConfigError, match="is a folder"):
        config.validate()
    config.retarget.depth_prior = "none"
    config.validate()
    assert Retargeter(RetargetConfig(depth_prior="")).depth_prior is None
    assert Retargeter(RetargetConfig()).depth_prior is not None  # the shipped weights by default


def test_a_prior_trained_on_other_clips_judges_an_unseen_one():
    """Leave-one-clip-out in miniature: trained on three AMP clips, the side of the CMU walk's limb
    segments (out of the image plane) is right on 0.82 here (the shipped prior, which saw it: 0.94;
    an untrained net: 0.46)."""
    clips = [need(AMP / f"amp_humanoid_{name}.npy") for name in ("hop", "run", "walk")]
    prior = T.train_on_clips(clips, FAST)
    held_out = T.clip_samples([need(MOCAP)], FAST)[0]
    assert T.sign_accuracy(prior, *held_out) > 0.72


def test_the_shipped_prior_lowers_the_limb_error_on_the_cmu_walk():
    from avatar_bridge.bench.retarget import SCENARIOS, run_scenario, summarize

    path = need(MOCAP)
    with_prior = summarize(run_scenario(path, SCENARIOS[0], "foreshortening", depth_prior=load_depth_prior("default")))
    without = summarize(run_scenario(path, SCENARIOS[0], "foreshortening", depth_prior=None))
    assert with_prior["limbs"]["p90"] < without["limbs"]["p90"] - 1.0  # 22.4 against 26.2 degrees here


def test_train_command_writes_usable_weights(tmp_path, capsys):
    from test_amp import write_amp

    walk = write_amp(tmp_path / "walk.npy", frames=60, walk=2.0)
    other = write_amp(tmp_path / "other.npy", frames=40, walk=1.0)
    out = tmp_path / "prior.npz"
    args = ["train-depth-prior", "--clip", str(walk), "--validate", str(other), "-o", str(out),
            "--views", "4", "--epochs", "2", "--hidden", "16", "--random-poses", "50"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "from 1 clip(s) (4 views per pose) and 50 random poses (one view each)" in text
    assert "held out other.npy: side right on" in text and "not held out" not in text
    assert isinstance(load_depth_prior(str(out)), D.DepthSignPrior)
    before = out.read_bytes()
    assert cli.main(args) == 2  # exists: refused, nothing touched
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    # A clip given to both --clip and --validate is scored but not called held out.
    assert cli.main([*args[:4], str(walk), *args[4:], "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"held out walk\.npy: side right on [\d.]+% \(also a training clip: not held out\)", text)
    assert re.search(r"held out other\.npy: side right on [\d.]+%\n", text)


@pytest.mark.parametrize("args, message", [
    ([], "needs mocap clips"),
    (["--clip", "missing.npy"], "missing.npy not found"),
    (["--clip", "{walk}", "-o", "{tmp}/x.pt"], "name it OUT.npz"),
    (["--clip", "{walk}", "--views", "0"], "--views must be between"),
    (["--clip", "{walk}", "--tumbling", "1.5"], "--tumbling is a share"),
    (["--clip", "{walk}", "-o", "{tmp}/no/dir/x.npz"], "does not exist"),
])
def test_train_command_errors_are_one_line(tmp_path, capsys, args, message):
    from test_amp import write_amp

    walk = write_amp(tmp_path / "walk.npy", frames=30, walk=1.0)
    args = [a.format(walk=walk, tmp=tmp_path) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.npz")]
    assert cli.main(["train-depth-prior", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_bench_retarget_depth_prior_choices(tmp_path, capsys):
    from test_amp import write_amp

    walk = write_amp(tmp_path / "walk.npy", frames=40, walk=2.0)
    assert cli.main(["bench-retarget", "--clip", str(walk), "--depth-prior", "loco", "--quick"]) == 2
    assert "at least two clips" in capsys.readouterr().err
    assert cli.main(["bench-retarget", "--clip", str(walk), "--depth-prior", str(tmp_path / "none.npz"), "--quick"]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert cli.main(["bench-retarget", "--clip", str(walk), "--depth-prior", "none", "--quick", "--json", "-"]) == 0
    assert '"depth_prior": "none"' in capsys.readouterr().out
    assert cli.main(["bench-retarget", "--clip", str(walk), "--depth-prior", "none", "--quick", "--frames", "20"]) == 0
    assert "depth prior: none (anatomy rules alone)" in capsys.readouterr().out


def test_pipeline_reads_the_prior_once_for_every_person():
    from avatar_bridge.pipeline import Pipeline
    from avatar_bridge.types import Pose2D

    def person(track_id):
        return Pose2D(keypoints=np.zeros((17, 2), np.float32), scores=np.ones(17, np.float32), track_id=track_id)

    pipeline = Pipeline(AppConfig())
    a, b = pipeline._new_person(person(1), 0.0), pipeline._new_person(person(2), 0.0)
    assert isinstance(a.retargeter.depth_prior, D.DepthSignPrior) and a.retargeter.depth_prior is b.retargeter.depth_prior
    config = AppConfig()
    config.retarget.depth_prior = ""
    assert Pipeline(config)._new_person(person(1), 0.0).retargeter.depth_prior is None
