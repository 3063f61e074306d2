"""smooth.MeasuredNoise: the keypoints' own noise level against the stabilizer's assumed one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatar_bridge.config import SmoothingConfig
from avatar_bridge.smooth import KalmanStabilizer, MeasuredNoise


def line_track(n=90, k=17, seed=0, noise=5.0, gaps=None):
    """(times, keypoints (n, k, 2)): every keypoint on its own straight line at its own speed, plus
    iid Gaussian noise of ``noise`` px; ``gaps``: per-frame seconds (default 1/30)."""
    rng = np.random.default_rng(seed)
    dt = np.full(n, 1 / 30) if gaps is None else gaps
    t = np.concatenate([[0.0], np.cumsum(dt[1:])])
    start, velocity = rng.uniform(100, 600, (k, 2)), rng.uniform(-300, 300, (k, 2))
    kp = start + velocity * t[:, None, None]
    return t, kp + rng.normal(0.0, noise, kp.shape) if noise else kp


def feed(noise_model, t, kp, assumed=2.0, measured=None):
    measured = np.ones(kp.shape[:2], bool) if measured is None else measured
    return [noise_model.update(ti, k, m, np.full(len(k), assumed)) for ti, k, m in zip(t, kp, measured)]


def test_scale_is_the_measured_over_the_assumed_sigma():
    t, kp = line_track(noise=5.0)
    scales = feed(MeasuredNoise(window=30, most=4.0), t, kp, assumed=2.0)
    assert scales[-1] == pytest.approx(2.5, rel=0.1)  # 5 px measured against 2 px assumed


def test_never_below_the_assumed_noise_and_capped():
    t, kp = line_track(noise=1.0)
    assert feed(MeasuredNoise(30, 4.0), t, kp, assumed=2.0)[-1] == 1.0
    t, kp = line_track(noise=20.0)
    assert feed(MeasuredNoise(30, 4.0), t, kp, assumed=2.0)[-1] == 4.0


def test_uneven_frame_gaps_on_clean_motion_read_as_no_noise():
    gaps = np.random.default_rng(1).uniform(0.01, 0.06, 90)  # a variable frame rate
    t, kp = line_track(noise=0.0, gaps=gaps)
    assert feed(MeasuredNoise(30, 4.0), t, kp, assumed=0.5)[-1] == 1.0  # the lines fit exactly
    alternating = np.tile([0.01, 0.05], 45)  # r = 5 and 0.2 in turn: the residual's spread depends on r
    t, kp = line_track(noise=5.0, gaps=alternating)
    assert feed(MeasuredNoise(30, 4.0), t, kp, assumed=2.0)[-1] == pytest.approx(2.5, rel=0.1)


def test_outliers_and_dropouts_barely_move_it():
    rng = np.random.default_rng(2)
    t, kp = line_track(noise=4.0)
    outlier = rng.random(kp.shape[:2]) < 0.03
    kp[outlier] += rng.choice([-1, 1], (outlier.sum(), 2)) * 60.0
    measured = rng.random(kp.shape[:2]) > 0.05
    # each outlier bends three residuals (9% of them): the median moves by 15%, an RMS would by 4x
    assert feed(MeasuredNoise(30, 4.0), t, kp, assumed=2.0, measured=measured)[-1] == pytest.approx(2.0, rel=0.2)


def test_first_frames_and_repeated_times_leave_it_at_one():
    t, kp = line_track(noise=10.0, n=6)
    noise = MeasuredNoise(30, 4.0)
    assert feed(noise, t, kp)[-1] == 1.0  # 4 residuals: fewer than MIN_FRAMES
    before = noise.scale
    assert noise.update(t[-1], kp[-1] + 50.0, np.ones(17, bool), np.full(17, 2.0)) == before  # same time: ignored
    assert noise.update(t[-2], kp[-1], np.ones(17, bool), np.full(17, 2.0)) == before  # earlier time: ignored


def test_stabilizer_with_it_follows_noisier_keypoints_more_smoothly():
    """Keypoints 4x noisier than the model assumes: with the measured noise the output is closer to
    the truth and less jittery than without (noise_window 0 = the assumed noise only)."""
    t, truth = line_track(noise=0.0, n=120)
    noisy = truth + np.random.default_rng(3).normal(0.0, 12.0, truth.shape)
    scores = np.ones(17)

    def run(config):
        stabilizer = KalmanStabilizer(config, body_height_px=250.0)  # assumed sigma 0.012 x 250 = 3 px
        out = np.array([stabilizer.update(k, scores, ti).keypoints for ti, k in zip(t, noisy)])
        return out, stabilizer

    on, stabilizer = run(SmoothingConfig())
    off, _ = run(dataclasses.replace(SmoothingConfig(), noise_window=0))
    assert stabilizer._noise.scale == pytest.approx(4.0, rel=0.1)  # 12 px measured / 3 px assumed
    rmse = lambda est: float(np.sqrt(np.mean(np.sum((est[30:] - truth[30:]) ** 2, -1))))
    jitter = lambda est: float(np.mean(np.abs(np.diff(est[30:], 2, axis=0))))
    assert rmse(on) < 0.9 * rmse(off) and jitter(on) < 0.7 * jitter(off)
