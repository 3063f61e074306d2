"""The IMM motion model (``smoothing.motion_model = "imm"``): its two models against filterpy, its model
probabilities, and the stabilizer's behaviour with it (dropouts, gating, NaN, predict)."""

from __future__ import annotations

import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from avatar_bridge.config import ConfigError, SmoothingConfig
from avatar_bridge.smooth import ImmState, KalmanStabilizer, white_noise_q

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
    cv = KalmanStabilizer(SmoothingConfig(motion_model="constant_velocity", acceleration=1.0, speed_gain=6.0), body_height_px=BODY)
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
    with pytest.raises(ConfigError, match="motion_model = 'imm' needs smoothing.body_coupling = 0"):
        KalmanStabilizer(SmoothingConfig(motion_model="imm", body_coupling=1.0))
