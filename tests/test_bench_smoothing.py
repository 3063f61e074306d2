"""bench-smoothing: corruption model, metrics with known answers, and a short run of the benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MOCAP, need

from avatar_bridge.bench.smoothing import (
    along_front,
    apply_predictors,
    corrupt,
    jitter,
    lag_frames,
    linear_prediction_bound,
    linear_predictors,
    pareto_front,
    rmse,
)
from avatar_bridge.cli import main
from avatar_bridge.config import SmoothingConfig


def test_corruption_matches_issue_definition():
    truth = np.zeros((400, 17, 2))
    noisy, conf = corrupt(truth, "iid", seed=0)
    assert np.all(conf == 1) and abs(noisy.std() - 5.0) < 0.1
    noisy, conf = corrupt(truth, "realistic", seed=0)
    dropout = conf == 0
    outlier = conf == 0.35
    assert abs(dropout.mean() - 0.05) < 0.005 and abs(outlier.mean() - 0.03) < 0.004
    assert np.all(np.isnan(noisy[dropout]))
    shift = np.abs(noisy[outlier])
    assert shift.min() >= 40 and shift.max() <= 80
    normal = ~dropout & ~outlier
    assert conf[normal].min() >= 0.3 and conf[normal].max() <= 1.0
    # Noise grows as confidence falls: sigma 2 + 10 (1 - c).
    high, low = normal & (conf > 0.9), normal & (conf < 0.4)
    assert 1.5 < noisy[high].std() < 3.5 and 7.5 < noisy[low].std() < 10.5
    # Fixed seed: same corruption every time.
    np.testing.assert_array_equal(corrupt(truth, "realistic", 0)[1], conf)
    with pytest.raises(ValueError, match="iid or realistic"):
        corrupt(truth, "gaussian")


def test_metrics_known_answers():
    t = np.arange(200) / 30
    truth = np.stack([100 * np.sin(2 * np.pi * 0.7 * t), 50 * np.cos(2 * np.pi * 0.4 * t)], axis=-1)[:, None, :]
    assert rmse(truth + [3.0, 4.0], truth) == pytest.approx(5.0)
    assert jitter(np.cumsum(np.ones((50, 1, 2)), axis=0)) == pytest.approx(0.0)  # constant velocity
    # Delay by 2.5 frames (linear interpolation): the lag estimate is sub-frame and close.
    late = np.stack([100 * np.sin(2 * np.pi * 0.7 * (t - 2.5 / 30)), 50 * np.cos(2 * np.pi * 0.4 * (t - 2.5 / 30))], axis=-1)[:, None, :]
    # (parabolic peak refinement is biased towards whole frames by up to ~0.2 frame)
    assert lag_frames(late, truth) == pytest.approx(2.5, abs=0.25) and lag_frames(late, truth) != 2.0
    assert lag_frames(truth, late) == pytest.approx(-2.5, abs=0.25)
    front = pareto_front([{"jitter": 1, "rmse": 10}, {"jitter": 2, "rmse": 6}, {"jitter": 3, "rmse": 8}, {"jitter": 4, "rmse": 4}])
    assert [p["jitter"] for p in front] == [1, 2, 4]
    assert along_front(front, 3.0) == pytest.approx(5.0)
    assert along_front(front, 0.5) is None and along_front(front, 9.0) == 4


def test_short_benchmark_structure(tmp_path, capsys):
    """The CLI on a 40-frame slice with coarse sweeps: table, JSON and plot, every figure finite."""
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["bench-smoothing", "--clip", str(need(MOCAP)), "--frames", "40", "--quick", "--json", str(out_json), "--plot", str(out_png)]) == 0
    table = capsys.readouterr().out
    assert "floor default_vs_one_euro" in table and "floor best_vs_one_euro" in table and "RMSE px" in table
    assert "aggregated over 1 clip(s) x 1 seed(s)" in table and "floor latency, realistic: compensated RMSE <= uncompensated" in table
    assert out_png.stat().st_size > 10_000
    document = json.loads(out_json.read_text())
    result = document["runs"][0]
    assert len(document["runs"]) == 1 and document["summary"][0]["clip"] == str(need(MOCAP))
    assert result["frames"] == 40 and result["quick"] is True
    for mode in ("iid", "realistic"):
        case = result["cases"][mode]
        assert set(case) >= {"raw", "one_euro_xr_defaults", "one_euro_sweep", "kalman_sweep", "kalman_default", "rts_smoother", "latency", "floors"}
        # the offline smoother uses the future: less error than the causal default (lag needs the whole clip)
        assert case["rts_smoother"]["rmse"] < case["kalman_default"]["rmse"] and case["rts_smoother"]["ms_per_frame"] > 0
        assert len(case["one_euro_sweep"]) == 9 and len(case["kalman_sweep"]) == 12
        assert sorted({p["measurement_noise"] for p in case["kalman_sweep"]}) == pytest.approx(
            [SmoothingConfig().measurement_noise, 4 * SmoothingConfig().measurement_noise])
        assert sum(p["process_noise_only"] for p in case["kalman_sweep"]) == 6
        latency_rows = [v for k, v in case["latency"].items() if isinstance(v, dict) and k != "linear_bound"]
        bound = case["latency"]["linear_bound"]
        assert bound["taps"] == 12 and bound["lag_bounded_rmse"] >= bound["best_rmse"] > 0 and bound["lag_bounded_lag"] <= 0.5 + 1e-6
        assert "best linear predictor fitted to this clip" in table and "RTS smoother" in table
        assert len(latency_rows) == 5 and len(case["latency"]["wide_band_plain_extrapolation"]) == 4
        for row in [case["raw"], case["kalman_default"], *case["kalman_sweep"], *latency_rows, *case["latency"]["wide_band_plain_extrapolation"]]:
            assert np.isfinite([row["rmse"], row["jitter"], row["lag"]]).all()
        # Any filter is smoother than the raw measurements.
        assert case["kalman_default"]["jitter"] < case["raw"]["jitter"]
        assert case["kalman_default"]["ms_per_predict_median"] > 0 and np.isfinite(case["kalman_default"]["ms_per_predict_p95"])
        assert all("ok" in floor for floor in case["floors"].values()) and "latency" in case["floors"]
    # The front over the whole sweep is never worse than over its process-noise part (a superset).
    floors = result["cases"]["iid"]["floors"]
    full, part = floors["best_vs_one_euro"], floors["best_vs_one_euro_process_noise_only"]
    if full["worst_excess"] is not None and part["worst_excess"] is not None and full["covered"] and part["covered"]:
        assert full["worst_excess"] <= part["worst_excess"] + 1e-9
    assert document["summary"][0]["iid_process_noise_only_worst_excess"] == part["worst_excess"]
    assert result["cases"]["iid"]["raw"]["rmse"] == pytest.approx(7.07, abs=0.5)  # sqrt(2) * 5 px
    # Raw keeps the measurement timing: no lag.
    assert abs(result["cases"]["iid"]["raw"]["lag"]) < 0.2


def test_cli_errors(tmp_path, capsys):
    assert main(["bench-smoothing", "--clip", str(tmp_path / "none.bvh")]) == 2
    assert "none.bvh not found" in capsys.readouterr().err
    assert main(["bench-smoothing", "--frames", "5"]) == 2
    assert "too short" in capsys.readouterr().err


def test_full_sweep_sizes():
    """The default (non-quick) sweeps are the ones the floors are judged on."""
    from avatar_bridge.bench.smoothing import sweep_grids

    mc, beta, dc, acc, speed, innov, meas = sweep_grids(quick=False)
    assert len(mc) * len(beta) * len(dc) == 144 and min(mc) == 0.5 and max(mc) == 8.0 and min(beta) == 1 and max(beta) == 135
    assert len(acc) * len(speed) * len(innov) == 216 and 1.0 in acc and 1.0 in speed and 1.0 in innov
    assert max(acc) == 4.0 and max(speed) == 3.375  # both grids reach past the fronts' ends (the run's iid front)
    assert meas == (1.0, 2.0, 4.0)  # the measurement noise as shipped, and raised to smooth more


def test_lag_metric_recovers_sub_frame_shifts_of_the_clip():
    """The lag the latency floor is judged on, checked on the benchmark's own motion: the true pose
    sampled 1/6 frame apart (180 fps) and shifted by a known amount reads back within 0.05 frame,
    with the sign the floor uses (positive = behind the truth)."""
    from avatar_bridge.bench.smoothing import FPS, load_clip
    from avatar_bridge.mocap import coco17_world

    truth, source = load_clip(need(MOCAP))
    fine = source.camera.project(coco17_world(source.motion, fps=FPS * 6))
    n = (len(fine) - 12) // 6
    reference = fine[6 : 6 + 6 * n : 6]
    np.testing.assert_allclose(fine[: 6 * n : 6], truth[:n], atol=1e-3)  # same samples as the source
    for steps in (-4, -3, -1, 2, 3, 5):  # est = truth (steps / 6) frame earlier = late by steps / 6
        late = fine[6 - steps : 6 - steps + 6 * n : 6]
        assert lag_frames(late, reference) == pytest.approx(steps / 6, abs=0.05)


def _sinusoids(n: int, lead: float, frequencies=(0.05, 0.11, 0.23, 0.31)) -> tuple[np.ndarray, np.ndarray]:
    """Two joints' x/y as sinusoids (cycles per frame): samples at k and the truth at k + lead."""
    k = np.arange(n, dtype=float)[:, None]
    f = np.asarray(frequencies)[None, :]
    phase = np.arange(len(frequencies))[None, :]
    now = 50.0 * np.sin(2 * np.pi * f * k + phase).reshape(n, 2, 2)
    ahead = 50.0 * np.sin(2 * np.pi * f * (k + lead) + phase).reshape(n, 2, 2)
    return now, ahead


def test_linear_predictor_is_exact_on_noise_free_sinusoids():
    """A sinusoid obeys a two-term recurrence, so without noise the fitted predictor lands on the
    value 1.5 frames ahead, with no lag and the lag bound inactive."""
    now, ahead = _sinusoids(400, 1.5)
    bound = linear_prediction_bound(now, ahead, noise_variance=1e-9, taps=4)
    assert bound["best_rmse"] < 0.01 and abs(bound["best_lag"]) < 0.05
    assert bound["lag_bounded_rmse"] == pytest.approx(bound["best_rmse"])


def _random_motion(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two joints moving with smooth random velocities (a broadband motion, like limbs), sampled at
    each frame and 1.5 frames later (from a 6x finer signal)."""
    rng = np.random.default_rng(seed)
    kernel = np.exp(-0.5 * (np.arange(-30, 31) / 8.0) ** 2)
    velocity = np.stack([np.convolve(rng.normal(0.0, 1.0, 6 * n + 60), kernel, "same") for _ in range(4)], axis=1)
    fine = np.cumsum(velocity, axis=0)
    fine -= fine.mean(axis=0)
    return fine[: 6 * n : 6].reshape(n, 2, 2), fine[9 : 6 * n + 9 : 6].reshape(n, 2, 2)


def test_lag_bound_binds_under_noise_and_expected_rmse_matches_noisy_data():
    """With noise the RMSE-optimal predictor smooths and lags; the lag-bounded one reads 0.5 frame
    on the metric and costs RMSE. Its expected RMSE is what it gets on actual noisy samples."""
    now, ahead = _random_motion(4000)
    variance = 400.0
    bound = linear_prediction_bound(now, ahead, noise_variance=variance, taps=8)
    assert bound["best_lag"] > 0.6
    assert bound["lag_bounded_lag"] == pytest.approx(0.5, abs=1e-6)
    assert bound["lag_bounded_rmse"] > bound["best_rmse"] * 1.05
    best, bounded = linear_predictors(now, ahead, variance, taps=8)
    noisy = now + np.random.default_rng(0).normal(0.0, np.sqrt(variance), now.shape)
    for weights, key in ((best, "best_rmse"), (bounded, "lag_bounded_rmse")):
        assert rmse(apply_predictors(weights, noisy), ahead[7:]) == pytest.approx(bound[key], rel=0.03)
    assert abs(lag_frames(apply_predictors(bounded, noisy), ahead[7:]) - 0.5) < 0.15
    with pytest.raises(ValueError, match="too few"):
        linear_predictors(now[:9], ahead[:9], variance, taps=8)


def test_no_linear_predictor_meets_both_latency_halves_on_the_clip():
    """The finding docs/smoothing.md rests on: on the benchmark clip with iid noise, even weights
    fitted to the clip itself cannot read lag <= 0.5 frame at send time without more RMSE than the
    shipped filter's uncompensated output."""
    from avatar_bridge.bench.smoothing import DELIVERY_DELAY, FPS, NOISE_VARIANCE, load_clip, run_stabilizer
    from avatar_bridge.config import SmoothingConfig
    from avatar_bridge.mocap import coco17_world
    from avatar_bridge.smooth import KalmanStabilizer

    truth, source = load_clip(need(MOCAP))
    fine = coco17_world(source.motion, fps=FPS * 6)
    idx = np.arange(len(truth)) * 6 + int(round(DELIVERY_DELAY * FPS * 6))
    ok = idx < len(fine)
    at_send = source.camera.project(fine[idx[ok]])
    bound = linear_prediction_bound(truth[ok], at_send, NOISE_VARIANCE["iid"])
    noisy, conf = corrupt(truth, "iid", seed=0)
    uncompensated = rmse(run_stabilizer(KalmanStabilizer(SmoothingConfig()), noisy, conf)[ok], at_send)
    assert bound["lag_bounded_lag"] <= 0.5 + 1e-6 < bound["best_lag"]
    assert bound["lag_bounded_rmse"] > uncompensated > bound["best_rmse"]


def test_many_clips_and_seeds_print_per_clip_and_aggregated(tmp_path, capsys):
    """Two clips (BVH and AMP .npy), two seeds, camera placement: one summary row per clip and seed,
    the aggregated floors, and one plot per clip titled with its name."""
    from test_amp import write_amp

    from avatar_bridge.bench.smoothing import format_summary, plot_path

    npy = write_amp(tmp_path / "stroll.npy", frames=90, walk=1.5)
    out_json, out_png = tmp_path / "r.json", tmp_path / "p.png"
    assert main(["bench-smoothing", "--clip", str(need(MOCAP)), str(npy), "--frames", "40", "--quick", "--seeds", "3", "4",
                 "--camera-yaw", "30", "--camera-distance", "6", "--json", str(out_json), "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out
    document = json.loads(out_json.read_text())
    assert [(r["clip"], r["seed"]) for r in document["runs"]] == [(str(need(MOCAP)), 3), (str(need(MOCAP)), 4), (str(npy), 3), (str(npy), 4)]
    assert "| stroll | 4 |" in text and "| cmu_131_01_walk | 3 |" in text and "aggregated over 2 clip(s) x 2 seed(s)" in text
    assert "camera yaw 30 deg, distance 6 m, height fitted" in text
    assert "RMSE px" not in text  # several runs: the summary only, unless --details
    # The camera stands 6 m from the middle of the clip, 30 degrees round.
    cam = document["runs"][0]["camera"]
    offset = np.subtract(cam["position"], cam["target"])
    assert np.hypot(offset[0], offset[2]) == pytest.approx(6.0) and np.degrees(np.arctan2(offset[0], offset[2])) == pytest.approx(30.0)
    for clip in (need(MOCAP), npy):
        assert plot_path(out_png, clip, True).stat().st_size > 10_000
    # A failing run shows up in the aggregate.
    runs = document["runs"]
    runs[0]["cases"]["iid"]["floors"]["best_vs_one_euro"].update(ok=False, worst_excess=0.5)
    assert "iid: Kalman front never > 5% above One Euro's, jitter 2.5-5: FAIL (met on" in format_summary(runs)
    assert "max excess +50.0% (cmu_131_01_walk, seed 3)" in format_summary(runs)


def test_plot_title_names_the_clip(tmp_path, monkeypatch):
    import matplotlib.figure

    from avatar_bridge.bench.smoothing import plot

    titles = []
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: titles.append(t))
    case = {"one_euro_sweep": [{"jitter": 1.0, "rmse": 2.0}], "kalman_sweep": [{"jitter": 1.0, "rmse": 2.0}],
            "kalman_default": {"jitter": 1.0, "rmse": 2.0}, "one_euro_xr_defaults": {"jitter": 1.0, "rmse": 2.0}, "raw": {"jitter": 3.0, "rmse": 5.0}}
    plot({"clip": "/x/amp_humanoid_hop.npy", "seed": 2, "cases": {"iid": case}}, tmp_path / "p.png")
    assert titles and "amp_humanoid_hop (seed 2)" in titles[0] and "131_01" not in titles[0]
