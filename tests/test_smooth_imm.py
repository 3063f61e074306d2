"""The IMM motion model (``smoothing.motion_model = "imm"``): its two models against filterpy, its model
probabilities, and the stabilizer's behaviour with it (dropouts, gating, NaN, predict)."""

from __future__ import annotations

import numpy as np
import pytest
from filterpy.kalman import IMMEstimator, KalmanFilter

from avatar_bridge.config import ConfigError, SmoothingConfig, tuned_constant_velocity
from avatar_bridge.smooth import ImmState, KalmanStabilizer, imm_switch_probability, white_noise_q

K = 17
BODY = 400.0
IMM = SmoothingConfig(motion_model="imm")


def line(t, velocity=(120.0, -60.0), start=(300.0, 400.0)):
    offsets = np.stack([np.arange(K) * 10.0, np.arange(K) * 5.0], axis=1)
    return np.asarray(start) + offsets + np.asarray(velocity) * t


@pytest.mark.parametrize("seed", [0, 1])
def test_moving_model_alone_is_filterpys_constant_velocity_filter(seed):
    """With the still model's probability 0 and no switching, the mixing step changes nothing and
    model 1 is a constant-velocity Kalman filter: filterpy's, axis by axis."""
    rng = np.random.default_rng(seed)
    k = 3
    state = ImmState(rng.normal(0, 50, (k, 2)), np.full(k, 4.0), 900.0)
    state.mu[0], state.mu[1] = 0.0, 1.0
    reference = []
    for j in range(k):
        for axis in range(2):
            f = KalmanFilter(dim_x=2, dim_z=1)
            f.x = np.array([state.pos[1, j, axis], 0.0])
            f.P = np.diag([4.0, 900.0])
            f.H = np.array([[1.0, 0.0]])
            reference.append(f)
    for _ in range(25):
        dt = rng.uniform(0.01, 0.07)
        q = rng.uniform(1e3, 1e6, (k, 2))
        state.mix_predict(dt, 0.0, 1.0, q)
        z = rng.normal(0, 50, (k, 2))
        r = rng.uniform(1.0, 30.0, k)
        use = rng.uniform(size=k) > 0.2
        state.update(z, r, use)
        for j in range(k):
            for axis in range(2):
                f = reference[2 * j + axis]
                f.predict(F=np.array([[1.0, dt], [0.0, 1.0]]), Q=white_noise_q(2, dt) * q[j, axis])
                if use[j]:
                    f.update(np.array([z[j, axis]]), R=np.array([[r[j]]]))
                np.testing.assert_allclose([state.pos[1, j, axis], state.vel[1, j, axis]], f.x, rtol=1e-9, atol=1e-9)
                np.testing.assert_allclose([[state.p00[1, j, axis], state.p01[1, j, axis]], [state.p01[1, j, axis], state.p11[1, j, axis]]],
                                           f.P, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(state.mu[1], 1.0)


def test_model_probabilities_follow_the_motion():
    """Measurements that keep still make the still model the likelier one; a steady motion makes the
    moving model near certain on its axis (and only there)."""
    rng = np.random.default_rng(3)
    state = ImmState(np.zeros((2, 2)), np.full(2, 25.0), 1e4)
    dt = 1 / 30
    still_probability = []
    for i in range(60):
        truth = np.array([[0.0, 0.0], [300.0 * i * dt, 0.0]])  # joint 0 still, joint 1 moving along x
        state.mix_predict(dt, 0.05, 1.0, np.full((2, 2), 1e5))
        state.update(truth + rng.normal(0, 5, (2, 2)), np.full(2, 25.0), np.ones(2, bool))
        still_probability.append(state.mu[0].copy())
        np.testing.assert_allclose(state.mu.sum(axis=0), 1.0)
    recent = np.array(still_probability[30:]).mean(axis=0)  # (joint, axis)
    assert recent[0, 0] > 0.55 and recent[0, 1] > 0.55  # still joint: still is the likelier model
    assert recent[1, 0] < 0.1  # moving joint: moving along x ...
    assert recent[1, 1] > 0.55  # ... and still along y
    pos, vel, blocks = state.combined()
    assert abs(vel[1, 0] - 300.0) < 30.0 and abs(pos[1, 0] - 300.0 * 59 * dt) < 5.0
    assert blocks.shape == (4, 2) and np.all(blocks[0] > 0) and np.all(blocks[3] >= 0)


def test_reopen_forgets_only_the_given_joints():
    state = ImmState(np.ones((3, 2)), np.full(3, 4.0), 100.0)
    state.mu[0] = 0.9
    state.mu[1] = 0.1
    state.vel[1] = 5.0
    state.reopen(np.array([1]), 1e4, 1e5)
    assert np.all(state.mu[:, 1] == 0.5) and np.all(state.vel[:, 1] == 0.0) and np.all(state.p11[1, 1] == 1e5)
    assert np.all(state.mu[0, [0, 2]] == 0.9) and np.all(state.vel[1, [0, 2]] == 5.0)


def test_imm_stabilizer_holds_still_joints_stiller_and_follows_moving_ones():
    rng = np.random.default_rng(4)
    cv = KalmanStabilizer(tuned_constant_velocity(), body_height_px=BODY)
    imm = KalmanStabilizer(SmoothingConfig(motion_model="imm", prediction_check=0.0), body_height_px=BODY)
    still = line(0.0)
    outs = {id(cv): [], id(imm): []}
    for i in range(90):
        z = still + rng.normal(0, 4, (K, 2))
        for stab in (cv, imm):
            outs[id(stab)].append(stab.update(z, np.ones(K), i / 30).keypoints)
    second_difference = {key: np.abs(np.diff(np.array(v[30:]), 2, axis=0)).mean() for key, v in outs.items()}
    assert second_difference[id(imm)] < 0.7 * second_difference[id(cv)]
    # then the whole body moves at constant velocity: the moving model takes over and keeps up
    for i in range(90, 180):
        t = (i - 90) / 30
        kp = imm.update(line(t, velocity=(200.0, 0.0), start=(300.0, 400.0)) + rng.normal(0, 4, (K, 2)), np.ones(K), i / 30).keypoints
    error = np.linalg.norm(kp - line(89 / 30, velocity=(200.0, 0.0)), axis=1).mean()
    assert error < 5.0  # below a sixth of a frame's motion (6.7 px) plus noise
    assert imm._imm.mu[1, :, 0].mean() > 0.8
    ahead = imm.predict(179 / 30 + 0.05).keypoints - kp
    assert np.all(ahead[:, 0] > 0)  # predict extrapolates along the motion


def test_imm_stabilizer_handles_dropouts_nan_and_outliers():
    cfg = SmoothingConfig(motion_model="imm", hold_time=0.2, missing_decay=0.2, reacquire_time=0.2)
    stab = KalmanStabilizer(cfg, body_height_px=BODY)
    moving = lambda t: line(t, velocity=(90.0, 0.0))
    wrist = []
    for i in range(120):
        t = i / 30
        z, sc = moving(t), np.ones(K)
        if 40 <= i < 70:  # the left wrist occluded for a second, its value garbage
            sc[9], z[9] = 0.0, np.nan
        if i == 100:
            z[3] += 150.0  # one outlier on the left ear
        kp, s = stab.update(z, sc, t)
        assert np.all(np.isfinite(kp)) and np.all(np.isfinite(s))
        wrist.append(kp[9].copy())
        if i == 100:
            assert np.linalg.norm(kp[3] - moving(t)[3]) < 20.0  # gated, not followed
    wrist = np.array(wrist)
    np.testing.assert_allclose(wrist[60], wrist[69], atol=1e-3)  # a lost joint stops moving
    assert np.linalg.norm(np.diff(wrist[66:85], axis=0), axis=1).max() < 25.0  # re-acquired without a jump
    np.testing.assert_allclose(wrist[-1], moving(119 / 30)[9], atol=2.0)


def test_imm_needs_independent_joints():
    with pytest.raises(ConfigError, match="body_coupling > 0 needs motion_model"):
        KalmanStabilizer(SmoothingConfig(motion_model="imm", body_coupling=1.0))


@pytest.mark.parametrize("seed", [0, 1])
def test_imm_step_is_filterpys_imm_estimator(seed):
    """Both models, mixing, likelihoods and the combination against filterpy's IMMEstimator on each
    axis (its own filters: model 0 F = [[1, 0], [0, 0]], Q = diag(hold, 0); model 1 constant
    velocity), through a still stretch and a start of motion, with an asymmetric first state."""
    rng = np.random.default_rng(seed)
    dt, hold, q, r = 1 / 30, 0.5, 4e5, 9.0
    p = imm_switch_probability(2.0, dt)
    start = np.array([[5.0, -3.0]])
    state = ImmState(start, np.array([4.0]), 900.0)
    state.mu[:, 0, 0] = (0.8, 0.2)
    estimators = []
    for axis in range(2):
        filters = []
        for still in (True, False):
            f = KalmanFilter(dim_x=2, dim_z=1)
            f.x = np.array([start[0, axis], 0.0])
            f.P = np.diag([4.0, 0.0 if still else 900.0])
            f.F = np.array([[1.0, 0.0], [0.0, 0.0]]) if still else np.array([[1.0, dt], [0.0, 1.0]])
            f.Q = np.diag([hold, 0.0]) if still else white_noise_q(2, dt) * q
            f.H = np.array([[1.0, 0.0]])
            f.R = np.array([[r]])
            filters.append(f)
        mu = state.mu[:, 0, axis].copy()
        estimators.append(IMMEstimator(filters, mu, np.array([[1 - p, p], [p, 1 - p]])))
    for i in range(60):
        truth = np.array([0.0, 0.0]) if i < 30 else np.array([200.0, -80.0]) * (i - 30) * dt
        z = truth + rng.normal(0, 3, 2)
        state.mix_predict(dt, p, hold, np.full((1, 2), q))
        state.update(z[None], np.array([r]), np.ones(1, bool))
        pos, vel, blocks = state.combined()
        for axis, imm in enumerate(estimators):
            imm.predict()
            imm.update(np.array([z[axis]]))
        # the mixture's covariance, averaged over the two axes as the stabilizer stores it
        expected = np.mean([[imm.P[0, 0], imm.P[0, 1], imm.P[1, 0], imm.P[1, 1]] for imm in estimators], axis=0)
        np.testing.assert_allclose(blocks[:, 0], expected, rtol=1e-7, atol=1e-9)
        for axis, imm in enumerate(estimators):
            np.testing.assert_allclose([pos[0, axis], vel[0, axis]], imm.x, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(state.mu[:, 0, axis], imm.mu, rtol=1e-9, atol=1e-12)
            for j, f in enumerate(imm.filters):
                np.testing.assert_allclose([state.pos[j, 0, axis], state.vel[j, 0, axis]], f.x, rtol=1e-9, atol=1e-9)
                np.testing.assert_allclose([state.p00[j, 0, axis], state.p01[j, 0, axis], state.p11[j, 0, axis]],
                                           [f.P[0, 0], f.P[0, 1], f.P[1, 1]], rtol=1e-7, atol=1e-9)
    assert state.mu[1, 0, 0] > 0.9  # moving on x at the end


def test_still_model_alone_is_a_random_walk_filter():
    state = ImmState(np.zeros((1, 2)), np.array([4.0]), 900.0)
    state.mu[0], state.mu[1] = 1.0, 0.0
    p00, x = 4.0, 0.0
    for z in (3.0, -1.0, 2.0, 5.0):
        state.mix_predict(1 / 30, 0.0, 0.5, np.full((1, 2), 1e5))
        state.update(np.array([[z, z]]), np.array([9.0]), np.ones(1, bool))
        p00 += 0.5
        gain = p00 / (p00 + 9.0)
        x, p00 = x + gain * (z - x), (1.0 - gain) * p00
        np.testing.assert_allclose(state.pos[0, 0], [x, x])
        np.testing.assert_allclose(state.p00[0, 0], [p00, p00])
        assert np.all(state.vel[0] == 0.0) and np.all(state.p01[0] == 0.0) and np.all(state.p11[0] == 0.0)
    np.testing.assert_array_equal(state.mu[0], 1.0)


def test_unmeasured_joints_keep_their_model_probabilities():
    state = ImmState(np.zeros((3, 2)), np.full(3, 4.0), 900.0)
    state.mix_predict(1 / 30, 0.06, 0.5, np.full((3, 2), 1e5))
    before = state.mu.copy()
    state.update(np.full((3, 2), 40.0), np.full(3, 9.0), np.array([True, False, True]))
    np.testing.assert_array_equal(state.mu[:, 1], before[:, 1])
    np.testing.assert_array_equal(state.pos[:, 1], 0.0)
    assert np.all(state.mu[1, [0, 2]] > before[1, [0, 2]])  # a 40 px surprise: the moving model gains


@pytest.mark.parametrize("rate, dt", [(2.0, 0.3), (2.0, 5.0), (100.0, 1 / 30)])
def test_switching_never_swaps_the_models(rate, dt):
    p = imm_switch_probability(rate, dt)
    assert 0.0 < p <= 0.5
    assert imm_switch_probability(2.0, 1 / 30) == pytest.approx(0.5 * (1 - np.exp(-4 / 30)))
    state = ImmState(np.zeros((1, 2)), np.array([4.0]), 900.0)
    state.mu[0], state.mu[1] = 0.9, 0.1
    state.mix_predict(dt, p, 0.5, np.full((1, 2), 1e5))
    assert np.all(state.mu[0] >= 0.5)  # a long gap forgets, never inverts


def test_a_joint_that_jumps_and_stays_relocks_in_one_step():
    """Gated for gate_frames - 1 frames, then re-opened (both models forget): the output lands on the
    new place at once instead of sliding there over several frames."""
    base = np.stack([np.arange(K) * 10.0, np.arange(K) * 25.0], axis=1) + 300.0
    stab = KalmanStabilizer(IMM, body_height_px=BODY)
    rng = np.random.default_rng(5)
    wrist = []
    for i in range(45):
        z = base.copy()
        if i >= 30:
            z[9] += (300.0, 0.0)
        wrist.append(stab.update(z + rng.normal(0, 2, (K, 2)), np.ones(K), i / 30).keypoints[9, 0] - base[9, 0])
    assert abs(wrist[30]) < 10.0  # the first frame away is gated (an outlier until it stays)
    assert abs(wrist[31] - 300.0) < 5.0  # the second re-locks there
    assert all(abs(w - 300.0) < 5.0 for w in wrist[31:])


def test_imm_configuration_errors_are_caught_early_and_clearly():
    from avatar_bridge.config import config_from_dict

    with pytest.raises(ConfigError, match="body_coupling > 0 needs motion_model"):
        config_from_dict({"smoothing": {"body_coupling": 0.5}}).validate()
    config_from_dict({"smoothing": {"body_coupling": 0.5, "motion_model": "constant_velocity"}}).validate()
    stab = KalmanStabilizer(IMM, body_height_px=BODY)
    stab.blocked = False  # the filterpy reference path exists for the constant-velocity model only
    stab.update(line(0.0), np.ones(K), 0.0)
    with pytest.raises(RuntimeError, match="runs on the per-joint blocks only"):
        stab.update(line(0.1), np.ones(K), 0.1)


def test_a_collapsed_first_pose_does_not_poison_the_scale():
    """Every keypoint at one point gives a body height of 0; it is ignored (it used to make the
    measurement noise 0 and every later output NaN)."""
    stab = KalmanStabilizer(IMM)
    stab.update(np.full((K, 2), 200.0), np.ones(K), 0.0)
    for i in range(1, 30):
        kp = stab.update(line(i / 30), np.ones(K), i / 30).keypoints
    assert np.all(np.isfinite(kp)) and stab.body_height > 1.0
    assert np.abs(kp - line(29 / 30)).max() < 20.0


def test_moving_model_noise_grows_with_each_axis_own_speed():
    """speed_gain: a joint moving along x gets more process noise on x than on y, and more than a
    still joint (the per-axis speed of the mixture's velocity)."""
    stab = KalmanStabilizer(IMM, body_height_px=BODY)
    stab.update(line(0.0), np.ones(K), 0.0)
    stab.filter.x[K:] = 0.0
    stab.filter.x[K + 3] = (500.0, 0.0)
    q = stab._imm_process_noise()
    assert q.shape == (K, 2)
    still = (IMM.acceleration * BODY) ** 2
    np.testing.assert_allclose(q[0], still)
    np.testing.assert_allclose(q[3], [(IMM.acceleration * BODY + IMM.speed_gain * 500.0) ** 2, still])
