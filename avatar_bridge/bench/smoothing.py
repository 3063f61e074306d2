"""``avatar-bridge bench-smoothing``: stabilizers against mocap ground truth.

The CMU walk clip goes through :class:`~avatar_bridge.mocap.MocapSource` (30 fps, camera 3 m in
front at 1 m height, 900 px focal length, 1280x720); its exact 2D keypoints are corrupted two ways
with a fixed seed (issue #4):

- *iid*: Gaussian noise, sigma 5 px, confidence 1.
- *realistic*: per keypoint and frame a confidence c ~ U(0.3, 1.0) and Gaussian noise of sigma
  2 + 10 (1 - c) px; 3% outliers moved 40 to 80 px on each axis with confidence 0.35; 5% dropouts
  (no measurement, confidence 0). Filters see the confidences, never the sigmas.

Raw (last value held through dropouts), a One Euro sweep (min cutoff x beta x d cutoff, normalized
image coordinates like XR Animator) and a Kalman sweep (its three process-noise terms: acceleration,
speed gain, innovation gain, and its measurement noise; other settings as shipped) are scored by RMSE to
the truth (px), lag (frames, from the cross-correlation of velocities, sub-frame) and jitter (mean
absolute second difference, px/frame^2). The floors of issue #4 are checked against the One Euro
Pareto front (lowest RMSE for a given jitter), interpolated at the Kalman default's jitter.

The latency check delivers each measurement 50 ms after capture and scores ``predict(capture +
50 ms)`` against the true pose at that moment (the clip resampled at 180 fps), next to the
uncompensated output, noise-free extrapolation references and wider-band filters extrapolated with
their plain motion model (what a lower lag at send time costs in RMSE).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np

from ..config import SmoothingConfig, load_config
from ..metrics import median_p95
from ..mocap import MocapSource, coco17_world, load_motion
from ..smooth import KalmanStabilizer, OneEuroStabilizer, rts_smooth_track
from .clips import CLIP_HELP, Placement, add_clip_arguments, check_clip_arguments, clip_name

ONE_EURO_MIN_CUTOFFS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
ONE_EURO_BETAS = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 90.0, 135.0)
ONE_EURO_D_CUTOFFS = (1.0, 2.0)
XR_ANIMATOR_DEFAULTS = {"min_cutoff": 1.0, "beta": 1.0, "d_cutoff": 2.0}
# Kalman sweep over the settings a user turns to smooth more or less (x the shipped default), as One
# Euro's over its three: the process noise (acceleration, speed gain, innovation gain) and, since issue
# #17, the measurement noise (the front over the process noise alone is reported beside it). Both
# grids were widened one step at their responsive ends (One Euro min cutoff 8, beta 90 / 135; Kalman
# acceleration 4, speed gain 2.25 / 3.375) when the run's iid front sat at the Kalman grid's corner
# (docs/smoothing.md, "Wider sweeps").
KALMAN_ACCELERATION_SCALES = (0.02, 0.05, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0)
KALMAN_SPEED_GAIN_SCALES = (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 1.0, 1.5, 2.25, 3.375)
KALMAN_INNOVATION_GAIN_SCALES = (0.0, 1.0, 3.3)
KALMAN_MEASUREMENT_NOISE_SCALES = (1.0, 2.0, 4.0)
FPS = 30.0
DELIVERY_DELAY = 0.05  # s between capture and the measurement reaching the filter (latency check)
# Latency check: a wider-band filter extrapolated with its plain motion model (no shrinking), to show
# how much RMSE a lower lag at send time costs (constant acceleration, jerk x the shipped default).
PREDICTION_JERK_SCALES = (1.0, 5.0, 25.0, 125.0)
# Latency check: taps of the best linear predictor fitted to the clip itself (a bound, not a filter).
BOUND_TAPS = 12
# Expected measurement noise variance per axis (px^2) of each corruption, for that bound: iid
# sigma 5; realistic E[(2 + 10 (1 - c))^2] with c ~ U(0.3, 1) (outliers and dropouts left out,
# which only makes the bound lower).
NOISE_VARIANCE = {"iid": 25.0, "realistic": 4.0 + 40.0 * 0.35 + 100.0 * 0.7**2 / 3.0}


# --- data ---------------------------------------------------------------------------------------
def corrupt(truth: np.ndarray, mode: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy keypoints (N, K, 2) with NaN for dropouts, and confidences (N, K), per issue #4."""
    rng = np.random.default_rng(seed)
    n, k, _ = truth.shape
    if mode == "iid":
        return truth + rng.normal(0.0, 5.0, truth.shape), np.ones((n, k))
    if mode != "realistic":
        raise ValueError(f"unknown corruption {mode!r}: use iid or realistic")
    conf = rng.uniform(0.3, 1.0, (n, k))
    sigma = 2.0 + 10.0 * (1.0 - conf)
    noisy = truth + rng.normal(0.0, 1.0, truth.shape) * sigma[..., None]
    kind = rng.uniform(0.0, 1.0, (n, k))
    dropout = kind < 0.05
    outlier = (kind >= 0.05) & (kind < 0.08)
    shift = rng.uniform(40.0, 80.0, truth.shape) * rng.choice([-1.0, 1.0], truth.shape)
    noisy = np.where(outlier[..., None], truth + shift, noisy)
    conf = np.where(outlier, 0.35, conf)
    noisy[dropout] = np.nan
    conf = np.where(dropout, 0.0, conf)
    return noisy, conf


def load_clip(path: Path, frames: int | None = None, placement: Placement | None = None) -> tuple[np.ndarray, MocapSource]:
    """Exact 2D keypoints (N, 17, 2) of the clip at 30 fps through the camera at ``placement``
    (default: fitted so the whole body stays in frame, see :mod:`.clips`)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"mocap clip {path} not found: pass --clip {CLIP_HELP}")
    camera = (placement or Placement()).camera(coco17_world(load_motion(path), fps=FPS))
    source = MocapSource(path, fps=FPS, camera=camera)
    truth = source.keypoints2d.astype(np.float64)
    return (truth if frames is None else truth[:frames]), source


# --- metrics ------------------------------------------------------------------------------------
def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((estimate - truth) ** 2, axis=-1))))


def jitter(track: np.ndarray) -> float:
    """Mean absolute second difference over frames, keypoints and axes (px / frame^2)."""
    return float(np.mean(np.abs(track[2:] - 2 * track[1:-1] + track[:-2])))


def lag_frames(estimate: np.ndarray, truth: np.ndarray, max_lag: int = 10) -> float:
    """Delay of ``estimate`` behind ``truth`` in frames: peak of the velocity cross-correlation,
    refined with a parabola through the best integer lag and its neighbours."""
    ve = np.diff(estimate, axis=0).reshape(len(estimate) - 1, -1)
    vt = np.diff(truth, axis=0).reshape(len(truth) - 1, -1)
    ve = ve - ve.mean(axis=0)
    vt = vt - vt.mean(axis=0)
    lags = np.arange(-max_lag, max_lag + 1)
    n = len(ve)
    corr = np.array([np.sum(ve[max(d, 0) : n + min(d, 0)] * vt[max(-d, 0) : n - max(d, 0)]) / (n - abs(d)) for d in lags])
    i = int(np.argmax(corr))
    if 0 < i < len(lags) - 1:
        a, b, c = corr[i - 1], corr[i], corr[i + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
        return float(lags[i] + offset)
    return float(lags[i])


def linear_predictors(measured: np.ndarray, truth_at_send: np.ndarray, noise_variance: float, taps: int = BOUND_TAPS) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares linear predictors of ``truth_at_send`` from the last ``taps`` frames of
    ``measured`` (both (N, K, 2), same frames), one weight vector per coordinate channel.

    Returns (best, lag_bounded), each (K * 2, taps) with weight i applied to the frame i back. The
    objective is the expected squared error on noisy measurements, |X w - s|^2 + noise_variance
    |w|^2 (white noise). ``lag_bounded`` minimizes it subject to the velocity cross-correlation at
    0 frames not being below the one at 1 frame, which is linear in the weights (so the optimum is
    the best one moved along A^-1 g by one Lagrange multiplier shared by all channels). Every
    predictor whose lag metric reads at most 0.5 frame meets that condition when the correlation
    falls off on both sides of its peak (the parabola through the peak puts it at or below 0.5
    exactly then), so the constrained RMSE bounds theirs from below.
    """
    n = min(len(measured), len(truth_at_send))
    X = _windows(measured[:n], taps)
    S = truth_at_send[taps - 1 : n].reshape(n - taps + 1, -1).T
    r = S.shape[1]
    A = X.transpose(0, 2, 1) @ X / r + noise_variance * np.eye(taps)
    b = np.einsum("crl,cr->cl", X, S) / r
    dX = np.diff(X, axis=1)
    dS = np.diff(S, axis=1)
    dX = dX - dX.mean(axis=1, keepdims=True)
    dS = dS - dS.mean(axis=1, keepdims=True)
    m = dS.shape[1]
    g = np.einsum("crl,cr->cl", dX, dS) / m - np.einsum("crl,cr->cl", dX[:, 1:], dS[:, :-1]) / (m - 1)
    best = np.linalg.solve(A, b[..., None])[..., 0]
    a_inv_g = np.linalg.solve(A, g[..., None])[..., 0]
    slack = np.sum(g * best)
    bounded = best if slack >= 0 else best - slack / np.sum(g * a_inv_g) * a_inv_g
    return best, bounded


def _windows(measured: np.ndarray, taps: int) -> np.ndarray:
    """Per coordinate channel, the last ``taps`` measurements (newest first) at every frame that has
    that many: (C, N - taps + 1, taps)."""
    n = len(measured)
    if n <= taps + 2:
        raise ValueError(f"{n} frames are too few for a {taps}-tap predictor")
    x = measured.reshape(n, -1)
    rows = np.arange(taps - 1, n)
    return np.stack([x[rows - i] for i in range(taps)], axis=-1).transpose(1, 0, 2)


def apply_predictors(weights: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Predictions (N - taps + 1, K, 2) of ``linear_predictors`` weights, one per full window."""
    return np.einsum("crl,cl->rc", _windows(measured, weights.shape[1]), weights).reshape(-1, *measured.shape[1:])


def linear_prediction_bound(measured_truth: np.ndarray, truth_at_send: np.ndarray, noise_variance: float, taps: int = BOUND_TAPS) -> dict:
    """The lowest RMSE any linear predictor of the send-time pose from the last ``taps``
    measurements can reach on this clip, with and without the latency floor's lag bound.

    An oracle: the weights are fitted to the clip being scored (``linear_predictors`` on the exact
    keypoints), and the RMSE is the expected one at ``noise_variance``. It is a lower bound for
    every linear filter of the last ``taps`` measurements: if its lag-bounded RMSE is above the
    uncompensated output's, no such filter meets both halves of the floor (docs/smoothing.md: more
    taps only memorize the clip).
    """
    best, bounded = linear_predictors(measured_truth, truth_at_send, noise_variance, taps)
    target = truth_at_send[taps - 1 : min(len(measured_truth), len(truth_at_send))]

    def expected(w: np.ndarray) -> tuple[float, float]:
        estimate = apply_predictors(w, measured_truth[: len(target) + taps - 1])
        noise = noise_variance * np.mean(np.sum(w**2, axis=1))  # per axis
        return float(np.sqrt(rmse(estimate, target) ** 2 + 2.0 * noise)), lag_frames(estimate, target)

    (best_rmse, best_lag), (bounded_rmse, bounded_lag) = expected(best), expected(bounded)
    return {
        "taps": taps,
        "noise_variance": noise_variance,
        "best_rmse": best_rmse,
        "best_lag": best_lag,
        "lag_bounded_rmse": bounded_rmse,
        "lag_bounded_lag": bounded_lag,
    }


def score(estimate: np.ndarray, truth: np.ndarray) -> dict:
    return {"rmse": rmse(estimate, truth), "jitter": jitter(estimate), "lag": lag_frames(estimate, truth)}


# --- filters --------------------------------------------------------------------------------------
def run_raw(noisy: np.ndarray) -> np.ndarray:
    out = noisy.copy()
    for i in range(len(out)):
        missing = ~np.isfinite(out[i, :, 0])
        out[i, missing] = out[i - 1, missing] if i else np.nanmean(noisy[0], axis=0)
    return out


def run_stabilizer(stabilizer, noisy: np.ndarray, conf: np.ndarray, delay: float = 0.0) -> np.ndarray:
    """Feed frames at 30 fps; output at capture time, or with ``delay`` at capture + delay via predict."""
    out = np.empty_like(noisy)
    for i in range(len(noisy)):
        t = i / FPS
        kp, _ = stabilizer.update(noisy[i], conf[i], t)
        out[i] = kp if delay == 0 else stabilizer.predict(t + delay).keypoints
    return out


def run_rts(noisy: np.ndarray, conf: np.ndarray, config: SmoothingConfig, truth: np.ndarray) -> dict:
    """The offline RTS smoother (``convert``'s default) over the whole clip at 30 fps: score and ms per frame."""
    started = time.perf_counter()
    est, _ = rts_smooth_track(np.arange(len(noisy)) / FPS, noisy, conf, config)
    ms = (time.perf_counter() - started) * 1000.0 / max(len(noisy), 1)
    return {**score(est, truth), "ms_per_frame": ms, "rts_acceleration": config.rts_acceleration}


def update_cost(stabilizer, noisy: np.ndarray, conf: np.ndarray) -> dict:
    """Milliseconds per ``update`` call (one person, one frame) and per ``predict`` 50 ms ahead
    (the latency-compensated output): median and 95th percentile."""
    times, predict_times = [], []
    for i in range(len(noisy)):
        started = time.perf_counter()
        stabilizer.update(noisy[i], conf[i], i / FPS)
        predicted = time.perf_counter()
        stabilizer.predict(i / FPS + DELIVERY_DELAY)
        times.append((predicted - started) * 1000)
        predict_times.append((time.perf_counter() - predicted) * 1000)
    (frame_median, frame_p95), (predict_median, predict_p95) = median_p95(times), median_p95(predict_times)
    return {
        "ms_per_frame_median": frame_median,
        "ms_per_frame_p95": frame_p95,
        "ms_per_predict_median": predict_median,
        "ms_per_predict_p95": predict_p95,
    }


def one_euro(image_size: tuple[int, int], min_cutoff: float, beta: float, d_cutoff: float) -> OneEuroStabilizer:
    return OneEuroStabilizer(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, scale=np.array(image_size, dtype=np.float64))


def kalman_config(base: SmoothingConfig, acceleration_scale: float, speed_scale: float, innovation_scale: float = 1.0,
                  measurement_scale: float = 1.0) -> SmoothingConfig:
    """The shipped Kalman settings with its three process-noise terms and its measurement noise scaled."""
    return dataclasses.replace(
        base,
        acceleration=base.acceleration * acceleration_scale,
        jerk=base.jerk * acceleration_scale,
        speed_gain=base.speed_gain * speed_scale,
        innovation_gain=base.innovation_gain * innovation_scale,
        measurement_noise=base.measurement_noise * measurement_scale,
    )


def pareto_front(points: list[dict]) -> list[dict]:
    """Points not beaten on both jitter and RMSE, sorted by jitter (RMSE then falls along it)."""
    front = []
    for p in sorted(points, key=lambda p: (p["jitter"], p["rmse"])):
        if not front or p["rmse"] < front[-1]["rmse"]:
            front.append(p)
    return front


def along_front(front: list[dict], jitter_value: float, key: str = "rmse") -> float | None:
    """``key`` interpolated along a Pareto front at ``jitter_value``; None outside its jitter range."""
    js = np.array([p["jitter"] for p in front])
    if len(front) == 0 or jitter_value < js[0]:
        return None
    if jitter_value > js[-1]:
        return float(front[-1][key])  # a point with less jitter and the lowest RMSE exists
    return float(np.interp(jitter_value, js, [p[key] for p in front]))


# --- benchmark --------------------------------------------------------------------------------------
def sweep_grids(quick: bool) -> tuple[tuple, ...]:
    """(min cutoffs, betas, d cutoffs, acceleration, speed gain, innovation gain, measurement noise scales)."""
    if quick:  # a coarse corner-and-centre grid for smoke tests
        return (0.5, 1.0, 5.0), (1.0, 10.0, 60.0), (1.0,), (0.1, 1.0, 2.0), (0.0, 1.0), (1.0,), (1.0, 4.0)
    return (
        ONE_EURO_MIN_CUTOFFS,
        ONE_EURO_BETAS,
        ONE_EURO_D_CUTOFFS,
        KALMAN_ACCELERATION_SCALES,
        KALMAN_SPEED_GAIN_SCALES,
        KALMAN_INNOVATION_GAIN_SCALES,
        KALMAN_MEASUREMENT_NOISE_SCALES,
    )


def run_benchmark(
    bvh: Path, frames: int | None = None, seed: int = 0, config: SmoothingConfig | None = None, quick: bool = False,
    placement: Placement | None = None,
) -> dict:
    """Every case and sweep for one clip and seed; returns a JSON-ready dict (see ``docs/smoothing.md``)."""
    min_cutoffs, betas, d_cutoffs, accelerations, speed_gains, innovation_gains, measurement_scales = sweep_grids(quick)
    config = config or SmoothingConfig()
    truth, source = load_clip(bvh, frames, placement)
    size = (source.width, source.height)
    result = {
        "clip": str(bvh),
        "camera": {"position": source.camera.position.tolist(), "target": source.camera.target.tolist()},
        "frames": int(len(truth)),
        "fps": FPS,
        "seed": seed,
        "quick": quick,
        "kalman_defaults": dataclasses.asdict(config),
        "cases": {},
    }
    for case_index, mode in enumerate(("iid", "realistic")):
        noisy, conf = corrupt(truth, mode, seed + case_index)
        case: dict = {"raw": score(run_raw(noisy), truth)}
        case["one_euro_xr_defaults"] = {**XR_ANIMATOR_DEFAULTS, **score(run_stabilizer(one_euro(size, **XR_ANIMATOR_DEFAULTS), noisy, conf), truth)}
        sweep = []
        for mc in min_cutoffs:
            for beta in betas:
                for dc in d_cutoffs:
                    est = run_stabilizer(one_euro(size, mc, beta, dc), noisy, conf)
                    sweep.append({"min_cutoff": mc, "beta": beta, "d_cutoff": dc, **score(est, truth)})
        case["one_euro_sweep"] = sweep
        ksweep = []
        for r, a, g, ig in itertools.product(measurement_scales, accelerations, speed_gains, innovation_gains):
            cfg = kalman_config(config, a, g, ig, r)
            est = run_stabilizer(KalmanStabilizer(cfg), noisy, conf)
            ksweep.append({"acceleration": cfg.acceleration, "speed_gain": cfg.speed_gain, "innovation_gain": cfg.innovation_gain,
                           "measurement_noise": cfg.measurement_noise, "process_noise_only": r == 1.0, **score(est, truth)})
        case["kalman_sweep"] = ksweep
        est = run_stabilizer(KalmanStabilizer(config), noisy, conf)
        case["kalman_default"] = {**score(est, truth), **update_cost(KalmanStabilizer(config), noisy, conf)}
        case["rts_smoother"] = run_rts(noisy, conf, config, truth)
        case["latency"] = latency_check(bvh, source, truth, noisy, conf, config, len(truth), NOISE_VARIANCE[mode])
        case["floors"] = check_floors(mode, case)
        result["cases"][mode] = case
    return result


def latency_check(bvh, source, truth, noisy, conf, config, frames, noise_variance: float) -> dict:
    """Measurements reach the filter 50 ms after capture; score the output sent at that moment
    against the true pose at send time, with (predict to send time) and without compensation, and
    the bound on what any linear predictor could do at ``noise_variance`` (px^2 per axis)."""
    fine = coco17_world(source.motion, fps=FPS * 6)  # truth every 1/180 s; 50 ms = 9 steps
    step = int(round(DELIVERY_DELAY * FPS * 6))
    idx = np.arange(frames) * 6 + step
    ok = idx < len(fine)
    truth_at_send = source.camera.project(fine[idx[ok]])
    compensated = run_stabilizer(KalmanStabilizer(config), noisy, conf, delay=DELIVERY_DELAY)[ok]
    plain = run_stabilizer(KalmanStabilizer(config), noisy, conf)[ok]
    # References without any noise: how far straight-line extrapolation can go on this motion.
    lead = DELIVERY_DELAY * FPS  # frames
    backward = np.concatenate([np.zeros_like(truth[:1]), np.diff(truth, axis=0)])
    backward2 = np.concatenate([np.zeros_like(truth[:1]), np.diff(backward, axis=0)])
    # The lag/RMSE trade: wider-band constant-acceleration filters, plain extrapolation to send time.
    trade = []
    for scale in PREDICTION_JERK_SCALES:
        cfg = dataclasses.replace(config, motion_model="constant_acceleration", jerk=config.jerk * scale, extrapolation_shrink=0.0, extrapolation_fit=0.0)
        est = run_stabilizer(KalmanStabilizer(cfg), noisy, conf, delay=DELIVERY_DELAY)[ok]
        trade.append({"jerk": cfg.jerk, **score(est, truth_at_send)})
    return {
        "delay_ms": DELIVERY_DELAY * 1000,
        "compensated": score(compensated, truth_at_send),
        "uncompensated": score(plain, truth_at_send),
        "exact_keypoints_exact_velocity": score((truth + np.gradient(truth, axis=0) * lead)[ok], truth_at_send),
        "exact_keypoints_causal_velocity": score((truth + backward * lead)[ok], truth_at_send),
        "exact_keypoints_causal_quadratic": score((truth + backward * lead + backward2 * lead**2 / 2)[ok], truth_at_send),
        "wide_band_plain_extrapolation": trade,
        "linear_bound": linear_prediction_bound(truth[ok], truth_at_send, noise_variance),
    }


def check_floors(mode: str, case: dict) -> dict:
    """Issue #4 floors for one case; each entry has the figures and ``ok``."""
    oe_front = pareto_front(case["one_euro_sweep"])
    k_front = pareto_front(case["kalman_sweep"])
    floors = {}
    lat = case["latency"]
    # Issue #17: compensation must never make the send-time RMSE worse; the lag is reported only.
    rmse_ok = lat["compensated"]["rmse"] <= lat["uncompensated"]["rmse"]
    floors["latency"] = {
        "compensated_lag": lat["compensated"]["lag"],
        "uncompensated_lag": lat["uncompensated"]["lag"],
        "compensated_rmse": lat["compensated"]["rmse"],
        "uncompensated_rmse": lat["uncompensated"]["rmse"],
        "ok": rmse_ok,
    }
    if mode == "realistic":
        d = case["kalman_default"]
        oe_rmse = along_front(oe_front, d["jitter"])
        oe_lag = along_front(oe_front, d["jitter"], "lag")
        floors["default_vs_one_euro"] = {
            "jitter": d["jitter"],
            "kalman_rmse": d["rmse"],
            "one_euro_rmse": oe_rmse,
            "rmse_reduction": None if oe_rmse is None else 1.0 - d["rmse"] / oe_rmse,
            "kalman_lag": d["lag"],
            "one_euro_lag": oe_lag,
            "ok": oe_rmse is not None and d["rmse"] <= 0.85 * oe_rmse and d["lag"] <= oe_lag + 1e-9,
        }
    else:
        floors["best_vs_one_euro"] = front_excess(k_front, oe_front)
        # The same check over the process-noise settings alone, measurement noise as shipped (the sweep
        # before issue #17 added the measurement noise), reported beside it.
        floors["best_vs_one_euro_process_noise_only"] = front_excess(
            pareto_front([p for p in case["kalman_sweep"] if p["process_noise_only"]]), oe_front)
    return floors


def front_excess(k_front: list[dict], oe_front: list[dict]) -> dict:
    """The worst excess of the Kalman front's RMSE over One Euro's between jitter 2.5 and 5 (both
    interpolated), where it is, whether both fronts cover the range, and ``ok`` (covered, <= 5%)."""
    worst, worst_at, covered = -np.inf, None, True
    for j in np.linspace(2.5, 5.0, 26):
        k = along_front(k_front, j)
        o = along_front(oe_front, j)
        if k is None or o is None:
            covered = False
            continue
        if k / o - 1 > worst:
            worst, worst_at = k / o - 1, float(j)
    return {
        "jitter_range": [2.5, 5.0],
        "worst_excess": None if worst_at is None else float(worst),
        "at_jitter": worst_at,
        "covered": covered,
        "ok": covered and worst <= 0.05,
    }


# --- reporting ---------------------------------------------------------------------------------------
def summary_rows(results: list[dict]) -> list[dict]:
    """One row per clip and seed with the three floors' figures (JSON-ready)."""
    rows = []
    for r in results:
        real = r["cases"]["realistic"]["floors"]["default_vs_one_euro"]
        iid = r["cases"]["iid"]["floors"]["best_vs_one_euro"]
        iid_q = r["cases"]["iid"]["floors"]["best_vs_one_euro_process_noise_only"]
        lat = {mode: r["cases"][mode]["floors"]["latency"] for mode in r["cases"]}
        cost = r["cases"]["realistic"]["kalman_default"]
        rows.append({
            "clip": r["clip"], "seed": r["seed"], "frames": r["frames"],
            "realistic_reduction": real["rmse_reduction"], "realistic_kalman_rmse": real["kalman_rmse"],
            "realistic_one_euro_rmse": real["one_euro_rmse"], "realistic_kalman_lag": real["kalman_lag"],
            "realistic_one_euro_lag": real["one_euro_lag"], "realistic_ok": real["ok"],
            "iid_worst_excess": iid["worst_excess"], "iid_at_jitter": iid["at_jitter"], "iid_covered": iid["covered"], "iid_ok": iid["ok"],
            "iid_process_noise_only_worst_excess": iid_q["worst_excess"], "iid_process_noise_only_covered": iid_q["covered"],
            "iid_process_noise_only_ok": iid_q["ok"],
            **{f"latency_{mode}_{k}": v for mode, f in lat.items() for k, v in f.items()},
            "ms_per_frame_median": cost["ms_per_frame_median"],
        })
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def format_summary(results: list[dict]) -> str:
    """Per clip and seed, then aggregated: the equal-jitter comparison with One Euro (realistic), the
    iid front check and the latency check, each against its issue #17 floor."""
    rows = summary_rows(results)
    lines = [
        "| clip | seed | realistic: Kalman / One Euro RMSE at equal jitter (reduction), lag K / OE | iid: worst Kalman front vs One Euro front, jitter 2.5-5 (process noise only) | latency 50 ms, realistic: RMSE comp. / uncomp. (lag) | latency, iid | ms/frame |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in rows:
        oe = "-" if w["realistic_one_euro_rmse"] is None else f"{w['realistic_one_euro_rmse']:.2f}"
        oe_lag = "-" if w["realistic_one_euro_lag"] is None else f"{w['realistic_one_euro_lag']:.2f}"
        real = f"{w['realistic_kalman_rmse']:.2f} / {oe} (reduction {_pct(w['realistic_reduction'])}), lag {w['realistic_kalman_lag']:.2f} / {oe_lag} {'ok' if w['realistic_ok'] else 'FAIL'}"
        iid = (f"{_pct(w['iid_worst_excess'])}" + ("" if w["iid_covered"] else " (range not covered)") + f" {'ok' if w['iid_ok'] else 'FAIL'}"
               f" ({_pct(w['iid_process_noise_only_worst_excess'])}" + ("" if w["iid_process_noise_only_covered"] else ", not covered") + ")")
        lat = [f"{w[f'latency_{m}_compensated_rmse']:.2f} / {w[f'latency_{m}_uncompensated_rmse']:.2f} (lag {w[f'latency_{m}_compensated_lag']:.2f}) "
               f"{'ok' if w[f'latency_{m}_ok'] else 'FAIL'}" for m in ("realistic", "iid")]
        lines.append(f"| {clip_name(w['clip'])} | {w['seed']} | {real} | {iid} | {lat[0]} | {lat[1]} | {w['ms_per_frame_median']:.3f} |")
    lines.append("")
    clips = list(dict.fromkeys(w["clip"] for w in rows))
    checks = [
        ("realistic: RMSE >= 15% below One Euro at equal jitter, lag no larger", "realistic_ok", lambda w: w["realistic_reduction"], "min reduction", False),
        ("iid: Kalman front never > 5% above One Euro's, jitter 2.5-5", "iid_ok", lambda w: w["iid_worst_excess"], "max excess", True),
        ("latency, realistic: compensated RMSE <= uncompensated", "latency_realistic_ok",
         lambda w: w["latency_realistic_compensated_rmse"] / w["latency_realistic_uncompensated_rmse"] - 1, "max change", True),
        ("latency, iid: compensated RMSE <= uncompensated", "latency_iid_ok",
         lambda w: w["latency_iid_compensated_rmse"] / w["latency_iid_uncompensated_rmse"] - 1, "max change", True),
    ]
    lines.append(f"aggregated over {len(clips)} clip(s) x {len(rows) // max(len(clips), 1)} seed(s):")
    for name, key, value, label, worst_is_max in checks:
        met = sum(bool(w[key]) for w in rows)
        values = [(value(w), w) for w in rows if value(w) is not None]
        if values:
            v, w = (max if worst_is_max else min)(values, key=lambda x: x[0])
            worst = f"{label} {_pct(v)} ({clip_name(w['clip'])}, seed {w['seed']})"
        else:
            worst = "no figure"
        lines.append(f"floor {name}: {'PASS' if met == len(rows) else 'FAIL'} (met on {met}/{len(rows)} runs); worst: {worst}")
    costs = [w["ms_per_frame_median"] for w in rows]
    lines.append(f"Kalman update cost: median over runs {np.median(costs):.3f} ms per person per frame (max {max(costs):.3f}); floor < 0.3 ms")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    lines = [f"clip {result['clip']}: {result['frames']} frames at {result['fps']:g} fps, seed {result['seed']}"]
    for mode, case in result["cases"].items():
        lines.append(f"\n[{mode}]")
        lines.append(f"{'filter':<44} {'RMSE px':>8} {'jitter':>7} {'lag fr':>7}")
        row = lambda name, r: lines.append(f"{name:<44} {r['rmse']:8.2f} {r['jitter']:7.2f} {r['lag']:7.2f}")
        row("raw (held through dropouts)", case["raw"])
        row("One Euro, XR Animator defaults (1, 1, d 2)", case["one_euro_xr_defaults"])
        for p in pareto_front(case["one_euro_sweep"]):
            row(f"One Euro front: cutoff {p['min_cutoff']:g} beta {p['beta']:g} d {p['d_cutoff']:g}", p)
        for p in pareto_front(case["kalman_sweep"]):
            row(f"Kalman front: accel {p['acceleration']:g} speed {p['speed_gain']:g} innov {p['innovation_gain']:g} "
                f"meas {p.get('measurement_noise', float('nan')):g}", p)
        row("Kalman, shipped default", case["kalman_default"])
        row("RTS smoother (offline, convert's default)", case["rts_smoother"])
        lat = case["latency"]
        row("Kalman default, 50 ms late, compensated", lat["compensated"])
        row("Kalman default, 50 ms late, uncompensated", lat["uncompensated"])
        row("(no noise: exact points + central-diff velocity)", lat["exact_keypoints_exact_velocity"])
        row("(no noise: exact points + causal velocity)", lat["exact_keypoints_causal_velocity"])
        row("(no noise: exact points + causal vel. + accel.)", lat["exact_keypoints_causal_quadratic"])
        for p in lat["wide_band_plain_extrapolation"]:
            row(f"(50 ms late: CA jerk {p['jerk']:g}, plain extrapolation)", p)
        bound = lat["linear_bound"]
        lines.append(
            f"best linear predictor fitted to this clip ({bound['taps']} taps per channel, expected noise):"
            f" RMSE {bound['best_rmse']:.2f} px at lag {bound['best_lag']:.2f};"
            f" with lag <= 0.5: RMSE {bound['lag_bounded_rmse']:.2f} px (lag {bound['lag_bounded_lag']:.2f})"
        )
        d = case["kalman_default"]
        lines.append(
            f"Kalman cost per person per frame: update median {d['ms_per_frame_median']:.3f} ms, p95 {d['ms_per_frame_p95']:.3f} ms;"
            f" predict 50 ms ahead median {d['ms_per_predict_median']:.3f} ms, p95 {d['ms_per_predict_p95']:.3f} ms"
        )
        for name, f in case["floors"].items():
            figures = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in f.items() if k != "ok")
            lines.append(f"floor {name}: {'PASS' if f['ok'] else 'FAIL'} ({figures})")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["cases"]), figsize=(12, 4.8))
    for ax, (mode, case) in zip(np.atleast_1d(axes), result["cases"].items()):
        if mode == "iid":
            ax.axvspan(2.5, 5.0, color="#eeeeff", zorder=0, label="floor range (jitter 2.5-5)")
        oe = case["one_euro_sweep"]
        ax.scatter([p["jitter"] for p in oe], [p["rmse"] for p in oe], s=10, c="#bbbbbb", label="One Euro sweep")
        front = pareto_front(oe)
        ax.plot([p["jitter"] for p in front], [p["rmse"] for p in front], "-", c="#555555", label="One Euro best (front)")
        ks = case["kalman_sweep"]
        ax.scatter([p["jitter"] for p in ks], [p["rmse"] for p in ks], s=10, c="#f4a6a6", label="Kalman sweep (process and measurement noise)")
        kf = pareto_front(ks)
        ax.plot([p["jitter"] for p in kf], [p["rmse"] for p in kf], "o-", c="#d62728", ms=4, label="Kalman best (front)")
        d = case["kalman_default"]
        ax.plot(d["jitter"], d["rmse"], "*", c="#d62728", ms=14, label="Kalman default")
        xr = case["one_euro_xr_defaults"]
        ax.plot(xr["jitter"], xr["rmse"], "s", c="#1f77b4", label="One Euro, XR Animator defaults")
        raw = case["raw"]
        ax.plot(raw["jitter"], raw["rmse"], "x", c="k", ms=9, label="raw")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("jitter: mean |2nd difference| (px/frame²)")
        ax.set_ylabel("RMSE to ground truth (px)")
        ax.set_title(f"{mode} corruption")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(f"Stabilizers on {clip_name(result['clip'])} (seed {result['seed']}), 30 fps, 1280x720 (lower left is better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def configure_parser(parser: argparse.ArgumentParser, command: str) -> None:
    add_clip_arguments(parser)
    parser.add_argument("--config", help="TOML config or preset whose [smoothing] section is benchmarked")
    parser.add_argument("--frames", type=int, help="use only the first N frames of each clip (quick runs)")
    parser.add_argument("--json", type=Path, help="also write the full results as JSON to this file ('-' = stdout only JSON)")
    parser.add_argument("--plot", type=Path, help="write a PNG plot of RMSE against jitter (first seed; with several clips "
                                                   "one file per clip, the clip's name appended to the file name)")
    parser.add_argument("--details", action="store_true", help="print every run's full table, not only the summary")
    parser.add_argument("--quick", action="store_true", help="coarse sweeps (smoke test; floors are not meaningful)")


def plot_path(path: Path, clip: Path, many: bool) -> Path:
    """Where the plot of ``clip`` goes: ``path`` itself for one clip, else ``path`` with the clip's name."""
    return path.with_name(f"{path.stem}_{clip_name(clip)}{path.suffix}") if many else path


def run_command(args: argparse.Namespace) -> int:
    config = load_config(args.config).smoothing
    if args.frames is not None and args.frames < 30:
        raise ValueError(f"--frames {args.frames} is too short: use at least 30 frames")
    clips, placement = check_clip_arguments(args, "bench-smoothing")
    results = [run_benchmark(clip, frames=args.frames, seed=seed, config=config, quick=args.quick, placement=placement)
               for clip in clips for seed in args.seeds]
    document = {"runs": results, "summary": summary_rows(results)}
    if args.json is not None and str(args.json) == "-":
        print(json.dumps(document, indent=1))
    else:
        print(placement.describe())
        if args.details or len(results) == 1:
            for result in results:
                print(format_table(result))
                print()
        print(format_summary(results))
        if args.json is not None:
            args.json.write_text(json.dumps(document, indent=1))
    if args.plot is not None:
        for clip in clips:
            result = next(r for r in results if r["clip"] == str(clip))
            plot(result, plot_path(args.plot, clip, len(clips) > 1))
    return 0
