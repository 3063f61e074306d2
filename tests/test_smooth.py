"""Keypoint stabilizers: Kalman (filterpy) and One Euro, on synthetic tracks with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatar_bridge.config import ConfigError, SmoothingConfig, config_from_dict, tuned_constant_velocity
from avatar_bridge.smooth import KalmanStabilizer, OneEuroStabilizer, PassThroughStabilizer, make_stabilizer

K = 17
BODY = 400.0  # px


def CV(**settings) -> SmoothingConfig:
    """The constant-velocity Kalman filter at the settings it was tuned at (the default motion model is
    the IMM, tests/test_smooth_imm.py): these tests check its equations and behaviour."""
    return dataclasses.replace(tuned_constant_velocity(), **settings)


def line(t, velocity=(120.0, -60.0), start=(300.0, 400.0)):
    """All joints on a constant-velocity track, spread so they are distinct points."""
    offsets = np.stack([np.arange(K) * 10.0, np.arange(K) * 5.0], axis=1)
    return np.asarray(start) + offsets + np.asarray(velocity) * t


def run(stab, times, positions, scores=None, rng=None, noise=0.0):
    out = []
    for i, t in enumerate(times):
        z = positions(t) + (rng.normal(0, noise, (K, 2)) if noise else 0.0)
        out.append(tuple(stab.update(z, np.ones(K) if scores is None else scores[i], t)))
    return out


def test_converges_on_constant_velocity_track():
    rng = np.random.default_rng(1)
    stab = KalmanStabilizer(CV(), body_height_px=BODY)
    times = np.arange(90) / 30
    out = run(stab, times, line, rng=rng, noise=2.0)
    err = np.mean([np.linalg.norm(o[0] - line(t), axis=1).mean() for o, t in zip(out[30:], times[30:])])
    assert err < 0.8 * 2.0 * np.sqrt(np.pi / 2)  # below the raw measurements' mean error (2.5 px)
    np.testing.assert_allclose(stab.filter.x[K : 2 * K].mean(axis=0), [120, -60], atol=8)
    assert np.all(out[-1][1] == 1.0)


def test_future_prediction_matches_constant_velocity():
    # The motion model's extrapolation itself (the self-check, which scales it, is tested below).
    stab = KalmanStabilizer(CV(extrapolation_shrink=0.0, prediction_check=0.0), body_height_px=BODY)
    times = np.arange(60) / 30
    run(stab, times, line)
    t = times[-1] + 0.1
    kp, scores = stab.predict(t)
    np.testing.assert_allclose(kp, line(t), atol=0.5)
    assert np.all(scores == 1.0)
    # Predictions stop at hold_time ahead: a stalled pipeline does not fling the pose away.
    np.testing.assert_allclose(stab.predict(times[-1] + 5.0).keypoints, line(times[-1] + stab.config.hold_time), atol=0.5)
    # The default shrinks an uncertain velocity: it extrapolates part of the way, in the right direction.
    shrunk = KalmanStabilizer(CV(prediction_check=0.0), body_height_px=BODY)
    run(shrunk, times, line)
    ahead = shrunk.predict(t).keypoints - shrunk.predict(times[-1]).keypoints
    assert np.all(ahead[:, 0] > 0) and np.all(ahead[:, 0] <= 12.0 + 0.5)
    # Interpolation between two past updates lies on the track too.
    mid = (times[-3] + times[-2]) / 2
    np.testing.assert_allclose(stab.predict(mid).keypoints, line(mid), atol=0.5)


def test_variable_dt():
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.uniform(0.01, 0.09, 80))
    stab = KalmanStabilizer(CV(extrapolation_shrink=0.0, prediction_check=0.0), body_height_px=BODY)
    out = run(stab, times, line)
    np.testing.assert_allclose(out[-1][0], line(times[-1]), atol=0.5)
    np.testing.assert_allclose(stab.predict(times[-1] + 0.05).keypoints, line(times[-1] + 0.05), atol=0.5)


def test_gate_rejects_single_jump_and_accepts_sustained_move():
    still = lambda t: line(t, velocity=(0.0, 0.0))
    cfg = CV(gate_frames=2)
    stab = KalmanStabilizer(cfg, body_height_px=BODY)
    times = np.arange(40) / 30
    run(stab, times, still)
    # One frame with the left wrist (9) jumped onto the right wrist's place 150 px away.
    z = still(0)
    z[9] = z[10] + [150.0, 0.0]
    kp, _ = stab.update(z, np.ones(K), 40 / 30)
    assert np.linalg.norm(kp[9] - still(0)[9]) < 1.0
    kp, _ = stab.update(still(0), np.ones(K), 41 / 30)
    assert np.linalg.norm(kp[9] - still(0)[9]) < 1.0
    # The wrist really moves 100 px and stays there: followed after gate_frames frames.
    moved = still(0).copy()
    moved[9] += [100.0, 0.0]
    outs = [stab.update(moved, np.ones(K), (42 + i) / 30).keypoints for i in range(6)]
    assert np.linalg.norm(outs[0][9] - still(0)[9]) < 1.0  # first frame of the move: gated
    assert np.linalg.norm(outs[-1][9] - moved[9]) < 2.0
    # The other joints never noticed.
    np.testing.assert_allclose(outs[-1][:9], still(0)[:9], atol=0.5)


def test_dropout_then_reacquisition_without_jump():
    cfg = CV(hold_time=0.2, missing_decay=0.2, reacquire_time=0.2)
    stab = KalmanStabilizer(cfg, body_height_px=BODY)
    moving = lambda t: line(t, velocity=(90.0, 0.0))
    outputs, scores = [], []
    for i in range(120):
        t = i / 30
        z = moving(t)
        sc = np.ones(K)
        if 40 <= i < 70:  # the left wrist is occluded for one second
            sc[9] = 0.0
            z[9] = np.nan  # and its value is garbage
        kp, s = stab.update(z, sc, t)
        outputs.append(kp[9].copy())
        scores.append(s[9])
        assert np.all(np.isfinite(kp))
    outputs, scores = np.array(outputs), np.array(scores)
    # Predicted along its track during the hold time, with full confidence.
    np.testing.assert_allclose(outputs[44], moving(44 / 30)[9], atol=1.0)
    assert scores[44] == pytest.approx(1.0)
    # Then marked missing: confidence decays towards 0 and the joint stops moving.
    assert scores[69] < 0.05 and scores[55] < scores[50] < 1.0
    assert np.allclose(outputs[60], outputs[69], atol=1e-3)
    # Re-acquired: no step larger than a few frames of motion, and back on the track after the blend.
    steps = np.linalg.norm(np.diff(outputs[66:85], axis=0), axis=1)
    assert steps.max() < 25.0  # the gap left it ~60 px behind; it catches up over 0.2 s, not in one frame
    np.testing.assert_allclose(outputs[-1], moving(119 / 30)[9], atol=1.0)
    assert scores[-1] == pytest.approx(1.0)


def test_nan_and_inf_never_propagate():
    stab = KalmanStabilizer(CV(), body_height_px=None)
    rng = np.random.default_rng(3)
    for i in range(30):
        z = line(i / 30) + rng.normal(0, 1, (K, 2))
        sc = np.ones(K)
        z[i % K] = [np.nan, np.inf]
        z[(i + 7) % K] = [1e300, -1e300]
        sc[(i + 3) % K] = np.nan
        kp, s = stab.update(z, sc, i / 30)
        assert np.all(np.isfinite(kp)) and np.all(np.isfinite(s))
        assert np.all(np.isfinite(stab.filter.x)) and np.all(np.isfinite(stab.filter.P))
    one_euro = OneEuroStabilizer()
    kp, s = one_euro.update(np.full((K, 2), np.nan), np.ones(K), 0.0)
    assert np.all(np.isfinite(kp)) and np.all(s == 0)
    with pytest.raises(ValueError, match="timestamp"):
        stab.update(line(0), np.ones(K), float("nan"))
    with pytest.raises(ValueError, match="one score per keypoint"):
        stab.update(line(0), np.ones(K - 1), 2.0)


def test_confidence_weighting_trusts_confident_measurements():
    """Same noisy data; a low score on the bad frames makes the filter follow them less."""
    truth = lambda t: line(t, velocity=(0.0, 0.0))
    rng = np.random.default_rng(4)
    errs = {}
    for weighted in (False, True):
        stab = KalmanStabilizer(CV(gate=0.0), body_height_px=BODY)
        rng = np.random.default_rng(4)
        err = []
        for i in range(90):
            bad = i % 3 == 0
            z = truth(0) + rng.normal(0, 12.0 if bad else 1.0, (K, 2))
            sc = np.full(K, 0.3 if (bad and weighted) else 1.0)
            kp, _ = stab.update(z, sc, i / 30)
            err.append(np.linalg.norm(kp - truth(0), axis=1).mean())
        errs[weighted] = np.mean(err[30:])
    assert errs[True] < 0.7 * errs[False]


def test_body_height_sets_scale():
    """The same motion scaled 2x in pixels with a 2x body height gives 2x the output."""
    rng = np.random.default_rng(5)
    z = [line(i / 30) + rng.normal(0, 2, (K, 2)) for i in range(40)]
    small = KalmanStabilizer(CV(), body_height_px=BODY)
    large = KalmanStabilizer(CV(), body_height_px=2 * BODY)
    for i, zi in enumerate(z):
        a, _ = small.update(zi, np.ones(K), i / 30)
        b, _ = large.update(2 * zi, np.ones(K), i / 30)
    np.testing.assert_allclose(b, 2 * a, rtol=1e-4, atol=1e-3)


def test_body_coupling_and_constant_acceleration_models():
    rng = np.random.default_rng(6)
    times = np.arange(60) / 30
    accelerating = lambda t: line(t) + np.array([80.0, 0.0]) * t**2
    for cfg in (
        CV(body_coupling=1.0, joint_share=0.5, extrapolation_shrink=0.0, prediction_check=0.0),
        CV(motion_model="constant_acceleration", extrapolation_shrink=0.0, prediction_check=0.0),
    ):
        stab = KalmanStabilizer(cfg, body_height_px=BODY)
        out = run(stab, times, accelerating, rng=rng, noise=1.0)
        err = np.linalg.norm(out[-1][0] - accelerating(times[-1]), axis=1).mean()
        assert err < 3.0, cfg
        kp, _ = stab.predict(times[-1] + 0.05)
        assert np.linalg.norm(kp - accelerating(times[-1] + 0.05), axis=1).mean() < 4.0


def test_one_euro_smooths_and_follows():
    rng = np.random.default_rng(7)
    stab = OneEuroStabilizer(min_cutoff=1.0, beta=0.5, d_cutoff=1.0, scale=BODY)
    still = line(0, velocity=(0, 0))
    outs = [stab.update(still + rng.normal(0, 3, (K, 2)), np.ones(K), i / 30).keypoints for i in range(60)]
    assert np.abs(outs[-1] - still).mean() < 1.5  # noise (2.4 px mean abs) reduced
    for i in range(60, 120):
        kp, _ = stab.update(line((i - 60) / 30, velocity=(300, 0)), np.ones(K), i / 30)
    assert np.abs(kp - line(59 / 30, velocity=(300, 0))).mean() < 15  # follows a fast move with little lag


def test_config_fields_validated_with_clear_errors():
    cfg = config_from_dict({"smoothing": {"method": "one_euro", "acceleration": 2, "beta": 0.7}}).smoothing
    assert cfg.method == "one_euro" and cfg.acceleration == 2.0
    assert isinstance(make_stabilizer(cfg), OneEuroStabilizer)
    assert isinstance(make_stabilizer(CV()), KalmanStabilizer)
    assert isinstance(make_stabilizer(CV(method="none")), PassThroughStabilizer)
    with pytest.raises(ConfigError, match=r"smoothing.acceleration = -1.0 is out of range"):
        config_from_dict({"smoothing": {"acceleration": -1}})
    with pytest.raises(ConfigError, match="smoothing.motion_model = 'jerky' is not allowed"):
        config_from_dict({"smoothing": {"motion_model": "jerky"}})
    with pytest.raises(ConfigError, match="unknown key smoothing.gain"):
        config_from_dict({"smoothing": {"gain": 1}})
    with pytest.raises(ConfigError, match="smoothing.gate_frames must be an integer"):
        config_from_dict({"smoothing": {"gate_frames": 1.5}})
    with pytest.raises(ConfigError, match="smoothing.method"):
        make_stabilizer(dataclasses.replace(CV(), method="median"))


def test_pass_through_and_predict_before_data():
    assert np.all(KalmanStabilizer(CV()).predict(1.0).scores == 0)
    p = PassThroughStabilizer()
    kp, sc = p.update(line(0), np.ones(K), 0.0)
    np.testing.assert_allclose(kp, line(0))
    np.testing.assert_allclose(p.predict(5.0).keypoints, line(0))


def test_cost_per_frame_is_small():
    """Not a speed assertion: the benchmark measures speed; this only runs many frames cleanly."""
    stab = KalmanStabilizer(CV(), body_height_px=BODY)
    rng = np.random.default_rng(8)
    for i in range(300):
        stab.update(line(i / 30) + rng.normal(0, 2, (K, 2)), rng.uniform(0.3, 1, K), i / 30)
    np.testing.assert_allclose(stab.predict(299 / 30).keypoints, line(299 / 30), atol=4.0)


def test_speed_and_innovation_terms_follow_a_sudden_move_faster():
    """All joints at rest suddenly move at 600 px/s: the adaptive terms cut the lag, and at rest
    they cost little extra jitter. (Gate off: with it on, both re-lock after ``gate_frames``.)"""
    rng = np.random.default_rng(9)

    def onset(t):
        pos = line(0, velocity=(0, 0)).copy()
        pos[:, 0] += 600.0 * max(t - 1.0, 0.0)
        return pos

    times = np.arange(45) / 30
    noise = [rng.normal(0, 2, (K, 2)) for _ in times]
    lag_err, still_jitter = {}, {}
    for name, cfg in {
        "plain": CV(speed_gain=0.0, innovation_gain=0.0, gate=0.0),
        "adaptive": CV(gate=0.0),
    }.items():
        stab = KalmanStabilizer(cfg, body_height_px=BODY)
        out = np.array([stab.update(onset(t) + n, np.ones(K), t).keypoints for t, n in zip(times, noise)])
        still = out[10:30]
        still_jitter[name] = np.abs(np.diff(still, 2, axis=0)).mean()
        lag_err[name] = np.abs(out[31:41, :, 0] - np.array([onset(t)[:, 0] for t in times[31:41]])).mean()
    assert lag_err["adaptive"] < 0.4 * lag_err["plain"]
    assert still_jitter["adaptive"] < 1.3 * still_jitter["plain"]


def test_reset_forgets_the_person():
    stab = KalmanStabilizer(CV(), body_height_px=BODY)
    run(stab, np.arange(10) / 30, line)
    stab.reset()
    assert np.all(stab.predict(1.0).scores == 0)
    far = line(0) + 500.0
    kp, sc = stab.update(far, np.ones(K), 2.0)
    np.testing.assert_allclose(kp, far, atol=1e-3)  # no pull from the previous person


def test_body_height_estimate_from_limbs():
    from avatar_bridge.smooth import estimate_body_height

    # A standing figure 1000 px tall in the proportions the estimate assumes.
    kp = np.zeros((K, 2))
    kp[[5, 6], 1] = 200.0  # shoulders
    kp[[7, 8], 1] = 370.0  # elbows (upper arm 0.17)
    kp[[11, 12], 1] = 500.0  # hips (torso 0.30)
    kp[[13, 14], 1] = 745.0  # knees (thigh 0.245)
    kp[[15, 16], 1] = 990.0  # ankles (shin 0.245)
    kp[::2, 0] += 40.0  # left/right apart
    seen = np.ones(K, bool)
    assert estimate_body_height(kp, seen) == pytest.approx(1000.0, rel=0.01)
    assert estimate_body_height(2 * kp, seen) == pytest.approx(2000.0, rel=0.01)
    # Legs hidden: still estimated from torso and arms; almost nothing visible: no estimate.
    legs_hidden = seen.copy()
    legs_hidden[13:] = False
    assert estimate_body_height(kp, legs_hidden) == pytest.approx(1000.0, rel=0.01)
    only_head = np.zeros(K, bool)
    only_head[:5] = True
    assert estimate_body_height(kp, only_head) is None
    # The stabilizer follows it when no height is given.
    stab = KalmanStabilizer(CV(), body_height_px=None)
    for i in range(60):
        stab.update(kp, np.ones(K), i / 30)
    assert stab.body_height == pytest.approx(1000.0, rel=0.02)


def test_extrapolation_uses_the_fitted_slope_of_recent_filtered_positions():
    """predict(t) after the last update extrapolates a mix of the filter's velocity state and the
    slope of a line through the last ``extrapolation_window`` filtered positions (real timestamps)."""
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.uniform(0.02, 0.05, 60))  # variable dt: the line is fitted in time
    fitted = KalmanStabilizer(CV(extrapolation_fit=1.0, extrapolation_shrink=0.0, prediction_check=0.0), body_height_px=BODY)
    run(fitted, times, line)
    np.testing.assert_allclose(fitted._extrapolation_velocity(), np.tile([120.0, -60.0], (K, 1)), atol=1.0)
    np.testing.assert_allclose(fitted.predict(times[-1] + 0.05).keypoints, line(times[-1] + 0.05), atol=0.5)
    # Share 0: the filter's own velocity state, unchanged.
    state_only = KalmanStabilizer(CV(extrapolation_fit=0.0, prediction_check=0.0), body_height_px=BODY)
    run(state_only, times, line)
    np.testing.assert_array_equal(state_only._extrapolation_velocity(), state_only.filter.x[K : 2 * K])
    # Too little history for the window: the state velocity alone.
    short = KalmanStabilizer(CV(extrapolation_window=5, prediction_check=0.0), body_height_px=BODY)
    run(short, times[:4], line)
    np.testing.assert_array_equal(short._extrapolation_velocity(), short.filter.x[K : 2 * K])


def test_fitted_slope_lowers_prediction_error_on_noisy_swings():
    """Joints swinging on arcs, noisy measurements, predicted 50 ms ahead: the mixed velocity
    predicts better than the state velocity alone (what the benchmark shows on mocap)."""
    rng = np.random.default_rng(5)
    phase = np.arange(K) * 0.4

    def swing(t):
        angle = 0.9 * np.sin(2 * np.pi * 1.0 * t + phase)
        return np.stack([400 + 120 * np.sin(angle), 300 + 120 * np.cos(angle)], axis=1) + np.arange(K)[:, None] * 3.0

    errors = {}
    for fit in (0.0, 0.5):
        stab = KalmanStabilizer(CV(extrapolation_fit=fit), body_height_px=BODY)
        noise = np.random.default_rng(6)
        err = []
        for i in range(240):
            t = i / 30
            stab.update(swing(t) + noise.normal(0, 4.0, (K, 2)), np.ones(K), t)
            if i >= 30:
                err.append(np.linalg.norm(stab.predict(t + 0.05).keypoints - swing(t + 0.05), axis=1))
        errors[fit] = float(np.sqrt(np.mean(np.square(err))))
    assert errors[0.5] < 0.97 * errors[0.0], errors


def test_relocked_or_lost_joints_extrapolate_the_state_velocity():
    """A joint whose position jumped (gated move re-locked) or that is lost keeps the filter's
    velocity state in predict: the fitted line through the jump would fling it."""
    still = lambda t: line(t, velocity=(0.0, 0.0))
    stab = KalmanStabilizer(CV(gate_frames=2, extrapolation_fit=1.0, prediction_check=0.0), body_height_px=BODY)
    run(stab, np.arange(40) / 30, still)
    moved = still(0).copy()
    moved[9] += [100.0, 0.0]
    for i in range(3):
        stab.update(moved, np.ones(K), (40 + i) / 30)
    recent = [stab.history[i] for i in range(len(stab.history) - 3, len(stab.history))]
    through_jump = (recent[-1][1][9, 0] - recent[0][1][9, 0]) / (recent[-1][0] - recent[0][0])
    assert through_jump > 1000.0  # px/s: what the line through the jump would extrapolate
    velocity = stab._extrapolation_velocity()
    np.testing.assert_array_equal(velocity[9], stab.filter.x[K + 9])
    np.testing.assert_allclose(velocity[:9], 0.0, atol=1.0)  # the others: fitted, and still
    t = 42 / 30
    assert np.linalg.norm(stab.predict(t + 0.05).keypoints[9] - stab.predict(t).keypoints[9]) < 20.0
    # Lost past hold_time: no extrapolation at all.
    cfg = CV(hold_time=0.2, extrapolation_fit=1.0, extrapolation_shrink=0.0, prediction_check=0.0)
    lost = KalmanStabilizer(cfg, body_height_px=BODY)
    moving = lambda t: line(t, velocity=(90.0, 0.0))
    for i in range(40):
        sc = np.ones(K)
        if i >= 25:
            sc[9] = 0.0
        lost.update(moving(i / 30), sc, i / 30)
    ahead = lost.predict(39 / 30 + 0.05).keypoints - lost.predict(39 / 30).keypoints
    assert np.all(ahead[9] == 0.0) and ahead[8, 0] == pytest.approx(4.5, abs=0.5)


def test_extrapolation_settings_validated():
    cfg = config_from_dict({"smoothing": {"extrapolation_window": 4, "extrapolation_fit": 0.25}}).smoothing
    assert cfg.extrapolation_window == 4 and cfg.extrapolation_fit == 0.25
    with pytest.raises(ConfigError, match=r"smoothing.extrapolation_window = 1 is out of range"):
        config_from_dict({"smoothing": {"extrapolation_window": 1}})
    with pytest.raises(ConfigError, match=r"smoothing.extrapolation_fit = 1.5 is out of range"):
        config_from_dict({"smoothing": {"extrapolation_fit": 1.5}})


def test_rts_smoother_uses_the_future():
    """Offline RTS smoothing on a noisy oscillation: far below the noise and below the causal
    filter, no lag; a dropped joint is bridged from both sides; variable frame intervals are fine."""
    from avatar_bridge.smooth import make_stabilizer, rts_smooth_track

    rng = np.random.default_rng(0)
    t = np.cumsum(np.where(np.arange(240) < 120, 1 / 10, 1 / 40))  # 100 ms then 25 ms frames
    t -= t[0]
    base = np.stack([np.full(17, 300.0), np.linspace(100.0, 500.0, 17)], axis=-1)  # a 400 px tall body
    truth = base[None] + 60.0 * np.sin(2 * np.pi * 0.4 * t)[:, None, None] * np.array([1.0, 0.3])
    noisy = truth + rng.normal(0.0, 5.0, truth.shape)
    scores = np.full((240, 17), 0.9)
    scores[100:104, 9] = 0.0  # left wrist unseen for 4 frames (0.4 s)
    noisy[100:104, 9] = np.nan
    config = CV()
    smoothed, out_scores = rts_smooth_track(t, noisy, scores, config)
    assert smoothed.shape == (240, 17, 2) and out_scores.shape == (240, 17)
    assert np.all(out_scores[100:104, 9] == 0) and np.all(np.isfinite(smoothed))
    stabilizer = make_stabilizer(config)
    causal = np.stack([stabilizer.update(noisy[i], scores[i], t[i]).keypoints for i in range(240)])
    err = lambda a: float(np.sqrt(np.mean(np.sum((a - truth) ** 2, axis=-1))))
    assert err(smoothed) < 0.6 * err(np.nan_to_num(noisy))
    assert err(smoothed) < 0.8 * err(causal)
    gap = np.linalg.norm(smoothed[100:104, 9] - truth[100:104, 9], axis=-1)
    assert gap.max() < 15.0  # bridged between the frames before and after the dropout
    with pytest.raises(ValueError, match="time order"):
        rts_smooth_track(t[::-1], noisy, scores, config)
    with pytest.raises(ValueError, match="must agree"):
        rts_smooth_track(t, noisy[:, :5], scores, config)


def _send_time_run(config, positions, frames=120, delay=0.05, noise=1.0, seed=0):
    """Update at 30 fps and predict ``delay`` ahead after each update (latency compensation); returns
    the stabilizer and the RMSE of the predictions against ``positions`` at send time."""
    rng = np.random.default_rng(seed)
    stab = KalmanStabilizer(config, body_height_px=BODY)
    errors = []
    for i in range(frames):
        t = i / 30
        stab.update(positions(t) + rng.normal(0, noise, (K, 2)), np.ones(K), t)
        errors.append(stab.predict(t + delay).keypoints - positions(t + delay))
    return stab, float(np.sqrt(np.mean(np.sum(np.square(errors[30:]), axis=-1))))


def zigzag(t):
    """Every joint reverses direction every 0.1 s (3 frames): extrapolating its velocity overshoots."""
    phase = (t / 0.1) % 2.0
    tri = np.where(phase < 1.0, phase, 2.0 - phase) * 12.0
    return line(0.0) + np.stack([tri, -tri], axis=-1)[..., None, :] if np.ndim(t) else line(0.0) + np.array([tri, -tri])


def test_prediction_self_check_keeps_prediction_that_pays_and_backs_off_otherwise():
    on, off = CV(), CV(prediction_check=0.0)
    # Constant velocity: extrapolating pays, the gain stays high and prediction beats holding.
    stab, rmse_on = _send_time_run(on, line)
    assert np.all(stab.prediction_gain() > 0.8)
    assert rmse_on < 0.5 * _send_time_run(dataclasses.replace(on, hold_time=0.0), line)[1]  # hold_time 0: no extrapolation
    # Zig-zag: the velocity is stale at every reversal; the self-check turns the prediction down and
    # the send-time error falls below the unchecked predictor's.
    stab, rmse_on = _send_time_run(on, zigzag)
    _, rmse_off = _send_time_run(off, zigzag)
    assert np.all(stab.prediction_gain() < 0.5) and rmse_on < rmse_off
    assert np.all(KalmanStabilizer(off).prediction_gain() == 1.0)


def test_prediction_self_check_ignores_repeated_predicts_and_past_times():
    """The output clock calls predict many times per update (and for past times): one remembered
    extrapolation per update, the latest."""
    stab = KalmanStabilizer(CV(), body_height_px=BODY)
    for i in range(10):
        t = i / 30
        stab.update(line(t), np.ones(K), t)
        for lead in (0.005, 0.02, 0.04):
            stab.predict(t + lead)
        stab.predict(t - 0.01)
    assert len(stab.predictions) <= 2 and stab.predictions[-1][1] == pytest.approx(9 / 30 + 0.04)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("dt", [1 / 240, 1 / 30, 0.1, 0.5])
def test_white_noise_q_is_filterpys(order, dt):
    """The written-out process noise equals filterpy's Q_discrete_white_noise (what it replaced)."""
    from filterpy.common import Q_discrete_white_noise

    from avatar_bridge.smooth import white_noise_q

    np.testing.assert_allclose(white_noise_q(order, dt), Q_discrete_white_noise(dim=order, dt=dt, var=1.0), rtol=1e-12, atol=0)


def test_white_noise_q_refuses_other_orders():
    from avatar_bridge.smooth import white_noise_q

    with pytest.raises(ValueError, match="order 4 not supported"):
        white_noise_q(4, 0.1)


def test_small_median_matches_numpy():
    from avatar_bridge.smooth import small_median

    rng = np.random.default_rng(5)
    for n in range(1, 20):
        values = rng.normal(size=n)
        assert small_median(values) == float(np.median(values))


def random_blocks(rng, k):
    """A random block-diagonal covariance in cv_block_index order: (4, K) 2x2 blocks, positive definite."""
    pos = rng.uniform(1.0, 1e4, k)
    vel = rng.uniform(1.0, 1e5, k)
    corr = rng.uniform(-0.9, 0.9, k) * np.sqrt(pos * vel)
    return np.stack([pos, corr, corr, vel])


def full_covariance(blocks):
    k = blocks.shape[1]
    from avatar_bridge.smooth import cv_block_index

    P = np.zeros((2 * k, 2 * k))
    P.put(cv_block_index(k), blocks)
    return P


@pytest.mark.parametrize("k", [1, 5, 17])
def test_block_filter_step_is_filterpys(k):
    """The hot path's predict and update on the 2x2 blocks of independent constant-velocity joints
    equal filterpy's KalmanFilter.predict / update (Joseph form, full matrices) on the same problem,
    step after step (random dt, process noise, measured subsets, measurement noise)."""
    from filterpy.kalman import KalmanFilter

    from avatar_bridge.smooth import cv_block_index, cv_blocks_predict, cv_blocks_update, white_noise_q

    rng = np.random.default_rng(k)
    for trial in range(5):
        blocks = random_blocks(rng, k)
        x = rng.normal(0, 300, (2 * k, 2))
        kf = KalmanFilter(dim_x=2 * k, dim_z=k)
        kf.x, kf.P = x.copy(), full_covariance(blocks)
        index = cv_block_index(k)
        for step in range(40):
            dt = float(rng.uniform(0.005, 0.2))
            scale = rng.uniform(1.0, 1e5, k)
            base = white_noise_q(2, dt)
            q = base.reshape(4, 1) * scale
            F = np.block([[np.eye(k), dt * np.eye(k)], [np.zeros((k, k)), np.eye(k)]])
            Q = np.zeros((2 * k, 2 * k))
            Q.put(index, q)
            kf.predict(F=F, Q=Q)
            cv_blocks_predict(x, blocks, dt, q)
            use = rng.random(k) < 0.7
            z = x[:k] + rng.normal(0, 20, (k, 2))
            r = rng.uniform(0.5, 500.0, k) ** 2
            if use.any():
                joints = np.flatnonzero(use)
                H = np.zeros((len(joints), 2 * k))
                H[np.arange(len(joints)), joints] = 1.0
                kf.update(z[joints], R=np.diag(r[joints]), H=H)
                cv_blocks_update(x, blocks, use, z, r)
            P = full_covariance(blocks)
            np.testing.assert_allclose(x, kf.x, rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(P, kf.P, rtol=1e-10, atol=1e-9 * float(np.abs(kf.P).max()))
            # Everything outside the blocks stays exactly zero in filterpy's P too.
            outside = np.ones_like(P, dtype=bool)
            outside.flat[index.ravel()] = False
            assert np.all(kf.P[outside] == 0.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_blocked_stabilizer_equals_filterpy_path(seed):
    """The default (independent constant-velocity) stabilizer, whose filter step runs on the
    covariance blocks, gives the outputs of the same stabilizer on filterpy's full-matrix
    predict/update, through gating, re-locks, dropped joints, jittered and repeated timestamps."""
    rng = np.random.default_rng(seed)
    fast = KalmanStabilizer(CV())
    reference = KalmanStabilizer(CV())
    assert fast.blocked
    reference.blocked = False  # filterpy's predict and update on the full matrices
    t = 0.0
    for i in range(150):
        t += 1 / 30 + rng.uniform(-0.004, 0.004) if i % 37 else 0.0
        z = line(t, velocity=(200.0 * np.sin(t), -80.0)) + rng.normal(0, 3, (K, 2))
        sc = rng.uniform(0.05, 1.0, K)
        sc[rng.random(K) < 0.05] = 0.0
        z[rng.random(K) < 0.03] += 80.0
        if i % 50 < 15:
            sc[[7, 9]] = 0.0
        for stab in (fast, reference):
            stab.update(z, sc, t)
        for when in (t, t + 0.05, t - 0.02):
            a, b = fast.predict(when), reference.predict(when)
            np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_allclose(fast.filter.x, reference.filter.x, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(fast.filter.P, reference.filter.P, rtol=1e-10, atol=1e-6)
