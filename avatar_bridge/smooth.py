"""Keypoint stabilization: per-joint Kalman filters (filterpy) and a One Euro alternative.

One stabilizer per tracked person. Both kinds implement

    update(keypoints (K, 2), scores (K,), timestamp) -> (keypoints, scores)   # filtered at timestamp
    predict(t) -> (keypoints, scores)                                         # state at any time t

so the outputs can send the pose predicted for the moment of sending (latency compensation) and
run at a fixed rate above the pose rate.

Why the Kalman filter looks the way it does:
- Units come from the body, not the image: process noise is an acceleration in body heights per
  second squared and measurement noise a fraction of the body height, so the same settings work
  for a person 200 px or 800 px tall. The body height is given or estimated from the keypoints.
- Measurement noise grows as confidence falls (sigma = noise / confidence**exponent): a heatmap
  peak at 0.3 is several times less precise than one at 0.9, and trusting both equally is what
  makes plain filters either jittery or laggy.
- Process noise is not one constant: a joint's expected acceleration grows with its speed
  (``speed_gain``: a swinging limb accelerates in proportion to its speed, a still one hardly) and
  with how surprising its recent measurements were (``innovation_gain``: a limb that starts to move
  shows it in the innovations a frame or two before the velocity estimate catches up). Still joints
  are smoothed hard, moving ones follow quickly - the Kalman counterpart of One Euro's speed-
  dependent cutoff, and what makes it beat One Euro at equal jitter.
- The default motion model (``motion_model = "imm"``) mixes, per keypoint axis, a still model and a
  moving one (:class:`ImmState`, an interacting multiple model filter): a joint at rest is held like
  One Euro's low cutoff holds it, a moving one is followed as the constant-velocity model follows it,
  and the switch between them is read from the measurements' likelihoods. The mixture is written into
  the filter state after each step, so everything below reads it as it reads the constant-velocity
  state. Six benchmark clips, three seeds: realistic floor 18 of 18 runs (constant velocity 14), iid
  front 6 of 18 (3); docs/smoothing.md, "The IMM motion model".
- A Mahalanobis gate drops single-frame outliers (a wrist jumping to the other wrist); if the
  measurement stays away for ``gate_frames`` frames it is a real move and the joint re-locks.
- ``predict(t)`` extrapolates each joint's velocity shrunk by the filter's uncertainty about it, so
  latency compensation does not amplify the velocity noise of still or poorly seen joints. The
  velocity it extrapolates mixes the filter's velocity state with the slope of a line fitted to the
  last few filtered positions: the state's velocity is kicked by every noisy or gated measurement,
  the fitted slope is smoother (benchmark, realistic case, 50 ms ahead, seeds 0/1/2: RMSE at send
  time 6.5/1.0/8.5% lower than the state velocity alone with the same shrink, lag within 0.02 frame).
- Joints share one filterpy ``KalmanFilter`` whose state stacks every joint, with x and y as the two
  columns of the state (same covariance, since R is the same for both axes). With
  ``body_coupling`` > 0 the state also holds a whole-body offset shared by all joints, so motion
  common to the body (walking, swaying) is estimated from every keypoint at once while each joint
  keeps its own residual motion.
- Non-finite keypoints or scores count as missing; NaN never reaches the state.

What runs where (cost: ``update`` runs once per person per pose frame, ``predict`` at the output
rate, 60 Hz; on 17 joints the cost is the number of numpy calls, not arithmetic):
- Default model (``constant_velocity``, ``body_coupling = 0``): every joint is independent, so P is
  block diagonal with one 2x2 (position, velocity) block per joint and stays so (F, Q, H and R keep
  that structure; a re-lock clears a joint's own rows). ``update`` takes the blocks out of
  ``self.filter.P`` (one ``take``), runs the predict and the Joseph-form update on them,
  vectorized over joints (:func:`cv_blocks_predict`, :func:`cv_blocks_update`: filterpy's
  ``predict``/``update`` equations written out per block, in filterpy's order of operations), and
  puts them back (one ``put``); ``self.filter.x`` is updated in place. ``self.filter`` is still the
  filterpy ``KalmanFilter`` holding the state (x, P), but its bookkeeping attributes (``x_prior``,
  ``K``, ``S``, ``y``, ...) are not set on this path. tests/test_smooth.py checks the block step
  against filterpy's ``KalmanFilter`` on random block-structured problems and the stabilizer against
  the same stabilizer with ``blocked = False`` (filterpy's calls); benchmarks/bench_stabilizer_speed.py
  records and compares all outputs (max difference 0 px on its clips and seeds).
- ``body_coupling > 0`` (the shared body offset couples every joint) or ``constant_acceleration``:
  filterpy's ``predict(F, Q)`` and ``update(z, R, H)`` on the full matrices, as before.
- Around the filter step (both paths), per joint quantities are computed on all 17 joints with
  masks rather than index lists, and helpers avoid numpy's Python-level wrappers (``np.clip``,
  ``.mean()``, ``np.linalg.norm``, ``np.tensordot``) with the same arithmetic, so outputs are
  unchanged bit for bit on the benchmark.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from filterpy.kalman import KalmanFilter

from .config import ConfigError, SmoothingConfig, check_motion_model
from .types import StabilizedPose

# Default body height when none is given and it cannot be estimated yet (px).
FALLBACK_BODY_HEIGHT_PX = 400.0
# predict(t)'s self-check prior: gain before any evidence (0: hold until its own predictions have
# been seen to pay), and how much evidence it is worth (a displacement of this share of the body
# height, squared). Chosen leave-one-clip-out on the six benchmark clips (docs/smoothing.md): every
# fold picked (0, 0.03) from {0, 0.5, 1} x {0.003, 0.01, 0.03}.
PREDICTION_PRIOR_GAIN = 0.0
PREDICTION_PRIOR_SIZE = 0.03


# The per-frame paths below test masks of 17 joints with ``np.count_nonzero`` rather than ``.any()`` /
# ``.all()``: same answer, a quarter of the cost (0.5 against 1.9 us; the methods go through Python).


def _clean(keypoints: np.ndarray, scores: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy inputs as float64, with non-finite or low-confidence keypoints marked unmeasured."""
    kp = np.array(keypoints, dtype=np.float64, copy=True).reshape(-1, 2)
    sc = np.array(scores, dtype=np.float64, copy=True).reshape(-1)
    if sc.shape[0] != kp.shape[0]:
        raise ValueError(f"stabilizer: {kp.shape[0]} keypoints but {sc.shape[0]} scores; pass one score per keypoint")
    # Non-finite or absurd (beyond any image) coordinates are treated as missing (NaN compares
    # False, silently). Written with plain ufuncs: np.all / np.clip / errstate cost more than the
    # arithmetic on 17 entries.
    size = np.abs(kp)
    finite = (size[:, 0] < 1e7) & (size[:, 1] < 1e7) & np.isfinite(sc)
    sc = np.minimum(np.maximum(sc, 0.0), 1.0)
    if np.count_nonzero(finite) < len(finite):
        kp[~finite] = 0.0
        sc[~finite] = 0.0
    measured = sc >= max(min_confidence, 1e-6)
    return kp, sc, measured


def _check_time(timestamp: float) -> float:
    t = float(timestamp)
    if not math.isfinite(t):
        raise ValueError(f"stabilizer: timestamp must be a finite number of seconds, got {timestamp!r}")
    return t


def estimate_body_height(keypoints: np.ndarray, measured: np.ndarray) -> float | None:
    """Body height in pixels from COCO-17 limb lengths (robust to leaning and partial views).

    Sums head-to-shoulder, torso, thigh and shin along one side (the longer visible one), scaled by
    the average proportions of a standing adult; None when too few joints are visible.
    ``keypoints`` (K >= 17, 2) float64 pixels, ``measured`` (K,) bool. In plain floats: eight
    lengths per frame cost less than the numpy calls that would compute them.
    """
    if keypoints.shape[0] < 17:
        return None
    xy = keypoints[:17].tolist()
    seen = measured[:17].tolist()
    heights = []
    for sides, share in _SEGMENT_ROWS:
        longer = -1.0  # the longer visible side of the segment
        for a, b in sides:
            if seen[a] and seen[b]:
                dx, dy = xy[a][0] - xy[b][0], xy[a][1] - xy[b][1]
                longer = max(longer, math.sqrt(dx * dx + dy * dy))
        if longer >= 0.0:
            heights.append(longer / share)
    if len(heights) < 2:
        return None
    heights.sort()  # the median as statistics.median computes it, without its 4 us of checks
    middle = len(heights) // 2
    return heights[middle] if len(heights) % 2 else (heights[middle - 1] + heights[middle]) / 2.0


def small_median(values: np.ndarray) -> float:
    """The median of a short 1-D array, as ``np.median`` gives it, without its NaN checks and
    dispatch (a per-frame cost here). NaN never reaches it: inputs are finite by construction."""
    ordered = np.sort(values)
    n = len(ordered)
    middle = n // 2
    return float(ordered[middle]) if n % 2 else float((ordered[middle - 1] + ordered[middle]) / 2.0)


# Torso (shoulder-hip), thigh, shin and upper arm: their (left, right) COCO-17 keypoint pairs and
# their share of body height.
_SEGMENT_ROWS = (
    (((5, 11), (6, 12)), 0.30),
    (((11, 13), (12, 14)), 0.245),
    (((13, 15), (14, 16)), 0.245),
    (((5, 7), (6, 8)), 0.17),
)


def white_noise_q(order: int, dt: float) -> np.ndarray:
    """(order, order) process noise of a piecewise-constant white-noise highest derivative, unit
    variance, for a step of ``dt`` s: the matrix filterpy's ``Q_discrete_white_noise(order, dt, 1)``
    returns (Bar-Shalom, Li, Kirubarajan 2001, section 6.3.3), written out because that call (through
    scipy's ``block_diag``) cost about as much as the rest of the filter step."""
    if order == 2:
        return np.array([[0.25 * dt**4, 0.5 * dt**3], [0.5 * dt**3, dt**2]])
    if order == 3:
        return np.array([[0.25 * dt**4, 0.5 * dt**3, 0.5 * dt**2], [0.5 * dt**3, dt**2, dt], [0.5 * dt**2, dt, 1.0]])
    raise ValueError(f"white_noise_q: order {order} not supported (2 = constant velocity, 3 = constant acceleration)")


def cv_block_index(num_keypoints: int) -> np.ndarray:
    """Flat indices (4, K) into a (2K, 2K) covariance of each joint's 2x2 block
    [[P[j, j], P[j, K+j]], [P[K+j, j], P[K+j, K+j]]] (position then velocity entries), row-major."""
    k = num_keypoints
    j = np.arange(k)
    dim = 2 * k
    return np.stack([j * (dim + 1), j * dim + k + j, (k + j) * dim + j, (k + j) * (dim + 1)])


def cv_blocks_predict(x: np.ndarray, blocks: np.ndarray, dt: float, q: np.ndarray) -> None:
    """filterpy's ``KalmanFilter.predict(F, Q)`` for independent constant-velocity joints, in place.

    ``x`` (2K, 2): positions then velocities (x and y as columns); ``blocks`` (4, K): each joint's 2x2
    covariance block (:func:`cv_block_index` order; every other entry of P is zero); ``q`` (4, K): each
    joint's process noise block in the same order. F = [[1, dt], [0, 1]] per joint. The products are
    filterpy's ``F @ P @ F.T + Q`` written out term by term in the same order (the entries of the full
    matrices that are zero drop out), so P keeps filterpy's rounding up to the BLAS's own fused
    multiply-adds; the blocks are not forced symmetric, as filterpy's are not.
    """
    k = blocks.shape[1]
    x[:k] += dt * x[k:]
    fp00 = blocks[0] + dt * blocks[2]  # (F @ P)[j, j]
    blocks[1:3] += dt * blocks[3]  # (F @ P)[j, K+j] and (F @ P @ F.T)[K+j, j]
    blocks[0] = fp00 + blocks[1] * dt
    blocks += q


def cv_blocks_update(x: np.ndarray, blocks: np.ndarray, use: np.ndarray, z: np.ndarray, r: np.ndarray) -> None:
    """filterpy's ``KalmanFilter.update(z[use], R=diag(r[use]), H)`` for independent constant-velocity
    joints, in place, where H reads the positions of the joints in the mask ``use`` (K,): the same
    Joseph form P = (I - KH) P (I - KH)' + K R K' and gain K = P H' S^-1, written out per joint (S is
    diagonal, its inverse the reciprocals) in filterpy's order of operations. ``x``, ``blocks`` as
    :func:`cv_blocks_predict`; ``z`` (K, 2) and ``r`` (K,) positive, read only where ``use``
    (computed for every joint and kept where ``use``: cheaper than picking joints out of 17)."""
    k = blocks.shape[1]
    si = 1.0 / (blocks[0] + r)
    gain = blocks[0::2] * si  # K: (position, velocity) gain per joint
    y = z - x[:k]
    state = x.reshape(2, k, 2)
    np.copyto(state, state + gain[:, :, None] * y, where=use[:, None])
    k0, k1 = gain
    m0 = 1.0 - k0  # (I - KH)[j, j]; (I - KH)[K+j, j] = -k1
    block = blocks.reshape(2, 2, k)
    a = np.empty((2, 2, k))  # (I - KH) @ P, [row, column, joint]
    np.multiply(m0, block[0], out=a[0])
    np.multiply(k1, block[0], out=a[1])
    np.subtract(block[1], a[1], out=a[1])
    kr = gain * r  # K @ R
    new = np.empty((2, 2, k))  # @ (I - KH).T + K R K.T
    np.multiply(a[:, 0], m0, out=new[:, 0])
    new[:, 0] += kr * k0
    np.subtract(a[:, 1], a[:, 0] * k1, out=new[:, 1])
    new[:, 1] += kr * k1
    np.copyto(blocks, new.reshape(4, k), where=use)


def imm_switch_probability(rate: float, dt: float) -> float:
    """The probability that a two-state Markov chain switching at ``rate`` per second (either way) is
    in the other state after ``dt`` seconds: 0.5 (1 - exp(-2 rate dt)), never above 0.5 (a larger
    "switch" probability would swap the models' probabilities in the mixing step)."""
    return -0.5 * math.expm1(-2.0 * rate * dt)


class ImmState:
    """Per keypoint axis, the two models of the interacting multiple model filter (Blom and
    Bar-Shalom, "The interacting multiple model algorithm for systems with Markovian switching
    coefficients", IEEE Trans. Automatic Control 33(8), 1988): model 0 holds still (constant
    position, velocity 0), model 1 moves (constant velocity). Each axis has its own covariance and
    model probabilities, because a joint often moves along one image axis while the other holds
    still (a hop: up and down, not sideways).

    ``state`` (5, 2 models, K, 2 axes) stacks ``pos``, ``vel`` (px, px/s) and ``p00``, ``p01``,
    ``p11``, each model's 2x2 (position, velocity) covariance (symmetric; model 0's velocity entries
    stay 0); the five names are views of it. ``mu`` (2, K, 2): model probabilities, summing to 1
    over the first axis. Every step works on the whole stack at once: on 17 joints a numpy call
    costs more than its arithmetic, so the step is counted in calls (about 40 per update).
    """

    def __init__(self, pos: np.ndarray, pos_var: np.ndarray, vel_var: float) -> None:
        k = pos.shape[0]
        self.state = np.zeros((5, 2, k, 2))
        self.state[0] = pos
        self.state[2] = pos_var[None, :, None]
        self.state[4, 1] = vel_var
        self.mu = np.full((2, k, 2), 0.5)

    pos = property(lambda self: self.state[0])
    vel = property(lambda self: self.state[1])
    p00 = property(lambda self: self.state[2])
    p01 = property(lambda self: self.state[3])
    p11 = property(lambda self: self.state[4])

    def reopen(self, joints: np.ndarray, pos_var: float, vel_var: float) -> None:
        """Forget what ``joints`` were doing (a re-lock): both models at the combined position, wide open."""
        combined = (self.mu * self.pos).sum(axis=0)
        state = self.state
        state[:, :, joints] = 0.0
        state[0][:, joints] = combined[joints]
        state[2][:, joints] = pos_var
        state[4, 1, joints] = vel_var
        self.mu[:, joints] = 0.5

    def mix_predict(self, dt: float, switch: float, hold_var: float, move_q: np.ndarray) -> None:
        """The IMM mixing step, then each model's Kalman prediction over ``dt`` seconds.

        ``switch``: the probability of changing model in this step; ``hold_var``: model 0's position
        noise variance for the step (px^2); ``move_q`` (K, 2): model 1's white-noise acceleration
        variance scale per axis (px^2/s^4), as :func:`white_noise_q` (2, dt) multiplies it.
        """
        stay = 1.0 - switch
        mu = self.mu
        prior = np.empty_like(mu)  # cbar_j = sum_i PI[i, j] mu_i
        prior[0] = stay * mu[0] + switch * mu[1]
        prior[1] = switch * mu[0] + stay * mu[1]
        np.maximum(prior, 1e-300, out=prior)
        weight = np.empty((2, 2) + mu.shape[1:])  # [i, j]: P(was model i | now model j)
        np.divide(np.array([stay, switch])[:, None, None] * mu[0], prior, out=weight[0])
        np.subtract(1.0, weight[0], out=weight[1])
        state = self.state
        means = (weight[None] * state[:2, :, None]).sum(axis=1)  # (pos/vel, j, K, 2)
        d = state[:2, :, None] - means[:, None]  # (pos/vel, i, j, K, 2)
        dp, dv = d
        spread = np.stack([dp * dp, dp * dv, dv * dv])  # (3, i, j, K, 2)
        spread += state[2:, :, None]
        new = np.empty_like(state)
        new[:2] = means
        np.sum(weight[None] * spread, axis=1, out=new[2:])
        # Model 0: the position holds (velocity 0), a random walk of variance hold_var per step.
        new[1::2, 0] = 0.0  # velocity, p01 (and p11 below)
        new[4, 0] = 0.0
        new[2, 0] += hold_var
        # Model 1: constant velocity, F = [[1, dt], [0, 1]], Q = white_noise_q(2, dt) * move_q.
        pos, vel, p00, p01, p11 = new[:, 1]
        pos += dt * vel
        p00 += dt * (2.0 * p01 + dt * p11) + (0.25 * dt**4) * move_q
        p01 += dt * p11 + (0.5 * dt**3) * move_q
        p11 += (dt * dt) * move_q
        self.state = new
        self.mu = prior / (prior[0] + prior[1])

    def update(self, z: np.ndarray, r: np.ndarray, use: np.ndarray) -> None:
        """Each model's Kalman update with the measurements ``z`` (K, 2) px of variance ``r`` (K,)
        px^2 where ``use`` (K,), and the model probabilities from their Gaussian likelihoods."""
        state = self.state
        pos, vel, p00, p01, p11 = state
        s = p00 + r[:, None]
        y = z - pos
        k0 = p00 / s
        k1 = p01 / s
        new = np.stack([pos + k0 * y, vel + k1 * y, p00 - k0 * p00, p01 - k0 * p01, p11 - k1 * p01])
        m = use[:, None]
        np.copyto(state, new, where=m)
        log_likelihood = -0.5 * (y * y / s + np.log(s))
        log_likelihood -= np.maximum(log_likelihood[0], log_likelihood[1])
        mu = np.maximum(self.mu * np.exp(log_likelihood), 1e-300)  # never 0/0, even after many steps
        np.copyto(self.mu, mu / (mu[0] + mu[1]), where=m)

    def combined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mixture's position and velocity (K, 2) and its 2x2 covariance per joint, averaged over
        the two axes in :func:`cv_block_index` order (4, K): what the rest of the stabilizer reads."""
        mu, state = self.mu, self.state
        means = (mu * state[:2]).sum(axis=1)  # (pos/vel, K, 2)
        d = state[:2] - means[:, None]
        dp, dv = d
        spread = np.stack([dp * dp, dp * dv, dv * dv])
        spread += state[2:]
        cov = (mu * spread).sum(axis=1)  # (3, K, 2): c00, c01, c11 per axis
        cov = 0.5 * (cov[..., 0] + cov[..., 1])  # averaged over the axes
        return means[0], means[1], cov[[0, 1, 1, 2]]


class MeasuredNoise:
    """How noisy one person's keypoints really are, against the noise the filter assumes.

    The assumed noise is a share of body height (``measurement_noise``, divided by the confidence):
    right for a heatmap model, whose error scales with its crop, wrong whenever the keypoints are
    noisier in pixels than that (a small person, a re-encoded video, another pose model). Per
    update, for every keypoint measured in the last three frames, the residual of the third
    position from the line through the first two (``x2 - x1 - (x1 - x0) r``, ``r = dt2 / dt1``,
    divided by ``sqrt(1 + (1 + r)^2 + r^2)`` so that it has the measurement's own sigma for any frame
    gaps) gives a robust noise sigma, median(|residual|) / 0.6745 over keypoints and axes (median
    absolute deviation: Hampel 1974). The scale is the median of those sigmas over the last
    ``window`` updates over the median assumed sigma of the same keypoints, clipped to
    [1, ``most``]: the filter only ever assumes more noise than its model, never less (real motion
    also bends the line, and a fast move must not make the filter trust noise more). 1 until
    ``MIN_FRAMES`` residuals are in.
    """

    MIN_FRAMES = 5

    def __init__(self, window: int, most: float) -> None:
        self.most = float(most)
        self._frames: deque[tuple[float, np.ndarray, np.ndarray]] = deque(maxlen=2)  # (t, keypoints, measured)
        self._sigmas: deque[float] = deque(maxlen=window)  # robust sigma per update, px
        self._assumed: deque[float] = deque(maxlen=window)  # median assumed sigma per update, px
        self.scale = 1.0

    def update(self, t: float, keypoints: np.ndarray, measured: np.ndarray, assumed_sigma: np.ndarray) -> float:
        """Take one frame (keypoints (K, 2) px, measured (K,) bool, assumed sigma (K,) px, time s);
        returns the scale for the measurement sigma. Frames not later than the last are ignored."""
        if self._frames and t <= self._frames[-1][0]:
            return self.scale
        if len(self._frames) == 2:
            (t0, k0, m0), (t1, k1, m1) = self._frames
            both = m0 & m1 & measured
            if np.count_nonzero(both):
                r = (t - t1) / (t1 - t0)
                residual = (keypoints[both] - k1[both] - (k1[both] - k0[both]) * r) / math.sqrt(1.0 + (1.0 + r) ** 2 + r * r)
                self._sigmas.append(small_median(np.abs(residual).ravel()) / 0.6745)
                self._assumed.append(small_median(assumed_sigma[both]))
                if len(self._sigmas) >= self.MIN_FRAMES:
                    ratio = small_median(np.fromiter(self._sigmas, float)) / max(small_median(np.fromiter(self._assumed, float)), 1e-9)
                    self.scale = min(max(ratio, 1.0), self.most)
        self._frames.append((t, keypoints.copy(), measured.copy()))
        return self.scale


class KalmanStabilizer:
    """Per-joint constant-velocity (or -acceleration) Kalman filter for one person's keypoints."""

    def __init__(self, config: SmoothingConfig, num_keypoints: int = 17, body_height_px: float | None = None) -> None:
        self.config = config
        self.num_keypoints = k = num_keypoints
        self.fixed_body_height = body_height_px
        self.body_height = float(body_height_px or FALLBACK_BODY_HEIGHT_PX)
        self.order = 3 if config.motion_model == "constant_acceleration" else 2
        self.coupled = config.body_coupling > 0
        # motion_model = "imm": a still and a moving model per keypoint axis (ImmState), whose mixture
        # is what the filter state holds between steps.
        self.imm = config.motion_model == "imm"
        check_motion_model(config)
        self._imm: ImmState | None = None
        self._noise = MeasuredNoise(config.noise_window, config.noise_scale_max) if config.noise_window > 0 else None
        # Position-like entries: one per joint, plus the shared body offset when coupled.
        self.num_pos = k + (1 if self.coupled else 0)
        basis = np.eye(k, self.num_pos)
        if self.coupled:
            basis[:, k] = 1.0
        self.basis = basis  # joint position = basis @ position entries
        self.filter = KalmanFilter(dim_x=self.num_pos * self.order, dim_z=k)
        self._diag = np.arange(self.num_pos)
        # Independent constant-velocity joints (the default): P is block diagonal, one 2x2 block per
        # joint, and the filter step runs on those blocks (cv_blocks_predict / cv_blocks_update)
        # instead of filterpy's full-matrix predict and update (see the module docstring).
        self.blocked = not self.coupled and self.order == 2
        self._block_index = cv_block_index(k) if self.blocked else None
        self._blend_latest = -math.inf  # the latest blend_start: no blend is running once it is over
        # What predict(t) needs that does not depend on t, computed at the first predict after an
        # update and reused until the next (the outputs predict at 60 Hz over 30 fps poses).
        self._motion: tuple[np.ndarray, list[np.ndarray]] | None = None
        self._gain: np.ndarray | None = None
        self._F: np.ndarray | None = None  # the transition matrix for ...
        self._F_dt: float | None = None  # ... this step (s)
        self.initialized = False
        self.last_time = 0.0
        self.last_seen = np.full(k, -np.inf)  # time of the last accepted measurement per joint
        self.seen = np.zeros(k, dtype=bool)
        self.confidence = np.zeros(k)  # confidence of the last accepted measurement
        self.rejections = np.zeros(k, dtype=np.int64)  # consecutive gated frames
        self.blend_offset = np.zeros((k, 2))  # re-acquisition blend: output offset that fades out
        self.blend_start = np.full(k, -np.inf)
        self.lock_time = np.full(k, -np.inf)  # last time a joint's state was re-opened (jump)
        self._pending_blend: dict[int, np.ndarray] = {}  # joint -> output position before a re-lock
        self.surprise = np.ones(k)  # per joint running mean of the normalized innovation
        self.innovation_level = 1.0  # running mean of the normalized innovation (1 = model is right)
        self.history: deque[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=8)
        # predict(t)'s self-check: what it extrapolated (base time, target time, base position,
        # displacement), later scored against the measurements around the target time.
        self.predictions: deque[tuple[float, float, np.ndarray, np.ndarray]] = deque(maxlen=16)
        self.last_measurement = np.zeros((k, 2))  # last accepted measurement per joint (at last_seen)
        self.prediction_xy = np.zeros(k)  # decayed sums of (what happened) . (displacement) ...
        self.prediction_yy = np.zeros(k)  # ... and |displacement|^2, per joint

    # --- model matrices ---------------------------------------------------------------------
    def _transition(self, dt: float) -> StabilizedPose:
        """F and Q for a step of ``dt`` seconds (block structure: derivative order x position entry)."""
        n, order = self.num_pos, self.order
        diag = self._diag
        if self._F_dt != dt:  # frames mostly come at one rate: F is rebuilt only when dt changes
            F = np.eye(n * order)
            for i in range(order):
                for j in range(i + 1, order):
                    F[i * n + diag, j * n + diag] = dt ** (j - i) / math.factorial(j - i)
            self._F, self._F_dt = F, dt
        F = self._F
        if dt <= 0:
            return F, np.zeros_like(F)
        base = white_noise_q(order, dt)
        per_entry = self._process_noise()
        Q = np.zeros_like(F)
        for i in range(order):
            for j in range(order):
                Q[i * n + diag, j * n + diag] = base[i, j] * per_entry
        return F, Q

    def _process_noise(self) -> np.ndarray:
        """Per position entry (joints, then the body offset when coupled), the variance scale of the
        white-noise process noise: ``white_noise_q(order, dt) * scale`` is that entry's Q block."""
        n = self.num_pos
        c = self.config
        noise = (c.acceleration if self.order == 2 else c.jerk) * self.body_height
        # Faster joints get more process noise: a swinging limb's acceleration scales with its
        # speed (a = omega * v for an oscillation), while a still joint is smoothed hard.
        vel = self.filter.x[n : 2 * n] if self.initialized else np.zeros((n, 2))
        if self.coupled:
            vel = np.concatenate([self.basis @ vel, vel[self.num_keypoints :]])
        square = vel * vel
        speed = np.sqrt(square[:, 0] + square[:, 1])  # np.linalg.norm(vel, axis=1), without its dispatch
        gain = c.speed_gain if self.order == 2 else 0.0  # jerk has other units; CA uses ``jerk`` alone
        if self.coupled:
            # Joints keep a share of the motion of their own; the body offset takes the common part.
            share = np.ones(n)
            share[: self.num_keypoints] = c.joint_share
            share[self.num_keypoints] = c.body_coupling
            noise = noise * share
        per_entry = (noise + gain * speed) ** 2
        boost = self._innovation_boost()
        if self.coupled:
            boost = np.append(boost, 1.0)
        return per_entry * boost

    def _innovation_boost(self) -> np.ndarray:
        """(K,) factor on each joint's process noise: joints whose recent innovations are larger than
        the model expects are manoeuvring, so they are opened up at once instead of waiting for the
        (lagging) velocity to grow."""
        return 1.0 + self.config.innovation_gain * np.maximum(self.surprise - 1.0, 0.0)

    def _imm_process_noise(self) -> np.ndarray:
        """(K, 2) the moving model's process noise scale per keypoint axis: as :meth:`_process_noise`,
        with each axis's own speed (a joint moving up and down is not moving sideways)."""
        c = self.config
        speed = np.abs(self.filter.x[self.num_keypoints :])
        return (c.acceleration * self.body_height + c.speed_gain * speed) ** 2 * self._innovation_boost()[:, None]

    def _assumed_sigma(self, scores: np.ndarray) -> np.ndarray:
        """(K,) px: the model's measurement sigma, ``measurement_noise`` body heights / confidence."""
        c = self.config
        return c.measurement_noise * self.body_height / np.maximum(scores, 0.05) ** c.confidence_exponent

    def _measurement_sigma(self, scores: np.ndarray, assumed: np.ndarray | None = None) -> np.ndarray:
        """(K,) px: the assumed sigma (``assumed``, when the caller has it) times the measured-noise
        scale (:class:`MeasuredNoise`)."""
        assumed = self._assumed_sigma(scores) if assumed is None else assumed
        return assumed if self._noise is None else assumed * self._noise.scale

    def _joint_rows(self, joints: np.ndarray) -> np.ndarray:
        """H rows (len(joints), dim_x) that read the positions of ``joints``."""
        H = np.zeros((len(joints), self.filter.dim_x))
        H[:, : self.num_pos] = self.basis[joints]
        return H

    def _own_states(self, j: int) -> np.ndarray:
        """State indices that belong to joint ``j`` alone (its position, velocity, ...)."""
        return np.arange(self.order) * self.num_pos + j

    # --- lifecycle ----------------------------------------------------------------------------
    def _initialize(self, kp: np.ndarray, sc: np.ndarray, measured: np.ndarray, t: float) -> None:
        n, k = self.num_pos, self.num_keypoints
        x = np.zeros((self.filter.dim_x, 2))
        center = kp[measured].mean(axis=0)
        if self.coupled:
            x[k] = center
            x[:k] = np.where(measured[:, None], kp - center, 0.0)
        else:
            x[:k] = np.where(measured[:, None], kp, center)
        sigma = self._measurement_sigma(sc)
        big = self.body_height
        pos_var = np.where(measured, sigma**2, big**2)
        P = np.zeros((self.filter.dim_x, self.filter.dim_x))
        P[np.arange(k), np.arange(k)] = pos_var
        if self.coupled:
            P[k, k] = 0.0  # the split between body offset and joint is arbitrary; joints carry it
        for d in range(1, self.order):
            rate = self.body_height * (2.0 if d == 1 else 10.0)  # ~2 body heights/s, 10 /s^2
            idx = d * n + np.arange(n)
            P[idx, idx] = rate**2
        self.filter.x = x
        self.filter.P = P
        if self.imm:
            self._imm = ImmState(x[:k], pos_var, (2.0 * self.body_height) ** 2)
        self.initialized = True
        self.last_time = t
        self.seen = measured.copy()
        self.last_seen = np.where(measured, t, -np.inf)
        self.confidence = np.where(measured, sc, 0.0)

    def reset(self) -> None:
        """Forget the person (e.g. the track was lost); the next update starts afresh."""
        self.__init__(self.config, self.num_keypoints, self.fixed_body_height)

    def _advance(self, t: float, blocks: np.ndarray | None = None) -> None:
        """Predict the state to ``t``: filterpy's ``predict``, or :func:`cv_blocks_predict` on
        ``blocks`` (the covariance blocks of a blocked filter, written back by the caller)."""
        dt = t - self.last_time
        if dt > 0:
            if self._imm is not None:
                if blocks is None:
                    raise RuntimeError("stabilizer: motion_model = 'imm' runs on the per-joint blocks only; "
                                       "blocked = False is for the constant-velocity model")
                c = self.config
                hold_var = (c.imm_hold_noise * self.body_height) ** 2 * dt
                self._imm.mix_predict(dt, imm_switch_probability(c.imm_switch_rate, dt), hold_var, self._imm_process_noise())
                self._imm_to_state(blocks)
            elif blocks is not None:
                q = np.array([0.25 * dt**4, 0.5 * dt**3, 0.5 * dt**3, dt**2])[:, None] * self._process_noise()  # white_noise_q(2, dt)
                cv_blocks_predict(self.filter.x, blocks, dt, q)
            else:
                F, Q = self._transition(dt)
                self.filter.predict(F=F, Q=Q)
            # Joints missing past the hold time stop moving: extrapolating them drifts off.
            stale = (t - self.last_seen) > self.config.hold_time
            if np.count_nonzero(stale):
                if self.blocked:
                    self.filter.x[self.num_keypoints :][stale] = 0.0
                    if self._imm is not None:
                        self._imm.vel[:, stale] = 0.0
                else:
                    for j in np.flatnonzero(stale):
                        self.filter.x[self._own_states(j)[1:]] = 0.0
            self.last_time = t

    def update(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float) -> StabilizedPose:
        """Fuse one frame's measurements; returns the filtered keypoints (K, 2) and scores (K,)."""
        t = _check_time(timestamp)
        kp, sc, measured = _clean(keypoints, scores, self.config.min_confidence)
        self._motion = self._gain = None  # the state changes below
        if kp.shape[0] != self.num_keypoints:
            raise ValueError(f"stabilizer: expected {self.num_keypoints} keypoints, got {kp.shape[0]}")
        if self.fixed_body_height is None:
            height = estimate_body_height(kp, measured)
            if height is not None and height >= 1.0:  # a collapsed pose (every point in one place) says nothing
                # Slow average: the scale should follow walking towards the camera, not noise.
                a = 0.1 if self.initialized else 1.0
                self.body_height += a * (height - self.body_height)
        assumed = self._assumed_sigma(sc)
        if self._noise is not None:
            self._noise.update(t, kp, measured, assumed)
        if not self.initialized:
            if not np.count_nonzero(measured):
                return self.predict(t)
            self._initialize(kp, sc, measured, t)
            self._record(t)
            return self.predict(t)
        if t < self.last_time:
            t = self.last_time  # out-of-order frame: fuse it as if it arrived now
        blocks = None
        if self.blocked:  # P's 2x2 blocks, taken out here and written back below
            P = self.filter.P
            blocks = P.take(self._block_index)
        self._advance(t, blocks)

        x = self.filter.x
        k = self.num_keypoints
        c = self.config
        if np.count_nonzero(measured):
            # Per joint over all K at once (masks instead of index lists: cheaper on 17 entries);
            # only measured joints' values are used.
            stale = (t - self.last_seen) > c.hold_time
            never = ~self.seen
            # Re-lock joints that were lost, never seen, or gated away for too long.
            relock = measured & (stale | never)
            sigma = self._measurement_sigma(sc, assumed)
            if blocks is not None:
                innovation = kp - x[:k]
                var = blocks[0] + sigma * sigma
            else:
                joints = np.flatnonzero(measured)
                H = self._joint_rows(joints)
                innovation = np.zeros((k, 2))
                innovation[joints] = kp[joints] - H @ x
                var = np.ones(k)
                var[joints] = np.einsum("ij,ij->i", H @ self.filter.P, H) + sigma[joints] ** 2
            square = innovation * innovation
            d2 = (square[:, 0] + square[:, 1]) / var  # Mahalanobis distance^2, 2 dof
            # Gate relative to the typical innovation (its running mean), so a noise level the
            # model underestimates does not turn into rejecting every measurement.
            # A joint that has been surprising lately is moving, so its gate widens with it.
            if c.gate > 0:
                limit = c.gate * self.innovation_level * np.maximum(self.surprise, 1.0)
                gated = (d2 > limit) & measured & ~relock
                forced = gated & (self.rejections + 1 >= c.gate_frames)
                gated &= ~forced
                relock |= forced
            else:
                gated = np.zeros(k, bool)
            self.rejections = np.where(gated, self.rejections + 1, np.where(measured, 0, self.rejections))
            keep = measured & ~gated
            ok = keep & ~relock
            level = d2 / (2.0 * self.innovation_level)
            self.surprise = np.where(ok, self.surprise + c.innovation_rate * (level - self.surprise), self.surprise)
            if np.count_nonzero(relock):
                self._unlock(np.flatnonzero(relock), t, (stale & ~never)[relock], blocks)
            if np.count_nonzero(keep):
                self._check_predictions(t, keep, kp, relock)
                if self._imm is not None:
                    self._imm.update(kp, sigma * sigma, keep)
                    self._imm_to_state(blocks)
                elif blocks is not None:
                    cv_blocks_update(x, blocks, keep, kp, sigma * sigma)
                else:
                    use = np.flatnonzero(keep)
                    R = np.diag(sigma[use] ** 2)
                    self.filter.update(kp[use], R=R, H=self._joint_rows(use))
                typical = small_median(d2[ok]) / 1.386 if np.count_nonzero(ok) else 1.0  # chi2(2) median
                self.innovation_level = max(1.0, self.innovation_level + 0.05 * (typical - self.innovation_level))
                self.last_seen[keep] = t
                self.last_measurement[keep] = kp[keep]
                self.seen |= keep
                self.confidence[keep] = sc[keep]
        if blocks is not None:
            P.put(self._block_index, blocks)
        self._record(t)
        return self.predict(t)

    def _imm_to_state(self, blocks: np.ndarray) -> None:
        """Write the IMM mixture (position, velocity, covariance blocks) into the filter state."""
        pos, vel, combined = self._imm.combined()
        k = self.num_keypoints
        self.filter.x[:k] = pos
        self.filter.x[k:] = vel
        blocks[:] = combined

    def _check_predictions(self, t: float, keep: np.ndarray, measured: np.ndarray, relock: np.ndarray) -> None:
        """Score past ``predict`` extrapolations whose target time has come (``prediction_check``).

        For an extrapolation made at base time b to target time T <= t, what happened between b and T
        is read from the measurements around T (linear in time between the joint's previous accepted
        measurement, taken after b, and this one), r = z(T) - position(b), and set against the
        displacement d that was added: the decayed sums of r.d and |d|^2 give the least-squares
        gain a = r.d / |d|^2 (Mehra 1972's idea of judging a filter by its own innovations, applied
        to its predictions) that ``predict`` scales its extrapolation by, clipped to [0, 1]. The
        measurement noise in r is independent of d, so it only adds variance; a prediction that does
        not pay on the recent motion (a hop's landing, a walk's turn) is backed off to hold the
        filtered pose, which is what the uncompensated output would show.
        """
        memory = self.config.prediction_check
        if memory <= 0 or not self.predictions:
            return
        previous = self.last_seen
        candidates = keep & ~relock & (t > previous)
        while self.predictions and self.predictions[0][1] <= t:
            base, target, position, displacement = self.predictions.popleft()
            usable = candidates & (previous > base) & (previous <= target)
            if not np.count_nonzero(usable):
                continue
            # Every joint at once, kept where usable (w is 0 elsewhere, so nothing there is NaN).
            w = np.divide(target - previous, t - previous, out=np.zeros(len(previous)), where=usable)[:, None]
            last = self.last_measurement
            happened = last + w * (measured - last) - position
            decay = math.exp(-(target - base) / memory)
            product = happened * displacement
            square = displacement * displacement
            xy, yy = self.prediction_xy, self.prediction_yy
            self.prediction_xy = np.where(usable, decay * xy + (product[:, 0] + product[:, 1]), xy)
            self.prediction_yy = np.where(usable, decay * yy + (square[:, 0] + square[:, 1]), yy)

    def prediction_gain(self) -> np.ndarray:
        """Per joint, the share (0-1) of its extrapolation ``predict`` adds after the last update:
        its least-squares gain from the self-check, pooled half with the average over joints and
        drawn towards ``PREDICTION_PRIOR_GAIN`` (0) while evidence is scarce (see
        ``_check_predictions``); 1 with ``prediction_check = 0``. Shape (K,)."""
        k = self.num_keypoints
        if self.config.prediction_check <= 0:
            return np.ones(k)
        xy = self.prediction_xy + np.add.reduce(self.prediction_xy) / k  # + the mean (what .mean() computes)
        yy = self.prediction_yy + np.add.reduce(self.prediction_yy) / k
        prior = (PREDICTION_PRIOR_SIZE * self.body_height) ** 2
        return np.minimum(np.maximum((xy + PREDICTION_PRIOR_GAIN * prior) / (yy + prior), 0.0), 1.0)

    def _unlock(self, joints: np.ndarray, t: float, blend: np.ndarray, blocks: np.ndarray | None = None) -> None:
        """Open the own states of ``joints`` so the next update takes their measurements.

        ``blend`` (per joint): the joint was lost, so its output slides from where it was last shown
        instead of jumping (a joint gated away for ``gate_frames`` frames moved for real and jumps).
        ``blocks``: a blocked filter's covariance blocks (opened there instead of in P).
        Opening one joint changes no joint's shown position (only its velocity and covariance), so
        the positions before are read once for all of them.
        """
        before = self._output_positions(t) if np.count_nonzero(blend) else None
        self.lock_time[joints] = t
        if blocks is not None:
            pos_var, vel_var = self.body_height**2, (self.body_height * 2.0) ** 2
            blocks[:, joints] = 0.0
            blocks[0, joints] = pos_var
            blocks[3, joints] = vel_var
            self.filter.x[self.num_keypoints + joints] = 0.0
            if self._imm is not None:
                self._imm.reopen(joints, pos_var, vel_var)
        else:
            P = self.filter.P
            for j in joints:
                own = self._own_states(j)
                P[own, :] = 0.0
                P[:, own] = 0.0
                P[own[0], own[0]] = self.body_height**2
                for d, idx in enumerate(own[1:], start=1):
                    P[idx, idx] = (self.body_height * (2.0 if d == 1 else 10.0)) ** 2
                    self.filter.x[idx] = 0.0
        if before is not None and self.config.reacquire_time > 0:
            for j in joints[blend]:
                self._pending_blend[int(j)] = before[j]

    def _record(self, t: float) -> None:
        pending = self._pending_blend
        if pending:
            now = self._state_positions(t)
            for j, before in pending.items():
                self.blend_offset[j] = before - now[j]
                self.blend_start[j] = t
            self._blend_latest = max(self._blend_latest, t)
            pending.clear()
        self.history.append((t, self._joint_values(0), self._joint_values(1), self.confidence.copy()))

    def _joint_values(self, order: int) -> np.ndarray:
        """Joint positions (order 0), velocities (1), ... (K, 2) from the state: ``basis @ x`` of that
        block (a copy: with independent joints the basis is the identity and the block is copied)."""
        n = self.num_pos
        block = self.filter.x[order * n : (order + 1) * n]
        return self.basis @ block if self.coupled else block.copy()

    # --- outputs ------------------------------------------------------------------------------
    def _state_positions(self, t: float) -> np.ndarray:
        """Joint positions from the filter state extrapolated from its time to ``t`` (the
        extrapolation scaled by :meth:`prediction_gain`)."""
        base, displacement = self._extrapolation(t)
        if displacement is None:
            return base
        return base + self.prediction_gain()[:, None] * displacement

    def _extrapolation(self, t: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Filtered joint positions (K, 2) at the last update and the motion model's displacement
        from there to ``t`` (None at the update's own time)."""
        horizon = min(max(t - self.last_time, 0.0), self.config.hold_time)
        if horizon == 0.0:
            return self._joint_values(0), None
        if self._motion is None:
            self._motion = self._motion_terms()
        start, rates = self._motion
        pos = start
        for order, rate in enumerate(rates, start=1):
            pos = pos + (rate * horizon if order == 1 else rate * horizon**order / math.factorial(order))
        return start, pos - start

    def _motion_terms(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Joint positions (K, 2) and, per derivative order 1, 2, ..., the derivative (K, 2) that
        :meth:`_extrapolation` multiplies by horizon**order / order!, as of the last update."""
        n = self.num_pos
        start = self._joint_values(0)
        # Extrapolate each derivative shrunk by how sure the filter is of it, |d|^2 / (|d|^2 + k var)
        # (k = extrapolation_shrink, 0 = the plain motion model): a still joint's velocity is mostly
        # noise, and extrapolating noise 50 ms ahead only adds it (benchmark: -3% RMSE at send time).
        P = self.filter.P
        rates = []
        for order in range(1, self.order):
            deriv = self._joint_values(order) if order > 1 else self._extrapolation_velocity()
            if self.blocked:  # the velocity variances, P[K+j, K+j]
                var = P.take(self._block_index[3])
            else:
                block = slice(order * n, (order + 1) * n)
                var = np.einsum("jk,jk->j", self.basis @ P[block, block], self.basis)
            square = deriv * deriv
            size = square[:, 0] + square[:, 1]
            shrink = size / np.maximum(size + 2.0 * self.config.extrapolation_shrink * var, 1e-12)
            rates.append(deriv * shrink[:, None])
        return start, rates

    def _extrapolation_velocity(self) -> np.ndarray:
        """Joint velocities (K, 2) that ``predict`` extrapolates after the last update.

        A share ``extrapolation_fit`` of it is the slope of a least-squares line through the last
        ``extrapolation_window`` filtered positions (their own timestamps), the rest the filter's
        velocity state. Joints re-opened inside that window (their position jumped) or lost past
        ``hold_time`` keep the state velocity alone, so a re-lock never shows up as a fling.
        """
        velocity = self._joint_values(1)
        share, window = self.config.extrapolation_fit, self.config.extrapolation_window
        history = self.history
        if share <= 0.0 or len(history) < window:
            return velocity
        recent = [history[i] for i in range(len(history) - window, len(history))]
        times = [h[0] for h in recent]
        if window < 8:  # numpy sums fewer than 8 entries in order: the same sums, in Python floats
            total = 0.0
            for time_ in times:
                total += time_
            mean = total / window
            centred = [time_ - mean for time_ in times]
            spread = 0.0
            for value in centred:
                spread += value * value
        else:
            array = np.array(times)
            centred = array - array.mean()
            spread = float(np.sum(centred**2))
        if spread <= 0.0 or times[-1] - times[0] > self.config.hold_time:
            return velocity  # duplicate timestamps or a stall: no usable line
        # np.tensordot(centred, positions, axes=(0, 0)) is this one product.
        slope = np.dot(np.array(centred)[None, :], np.array([h[1] for h in recent]).reshape(window, -1)).reshape(velocity.shape) / spread
        usable = (self.lock_time < times[0]) & (self.last_time - self.last_seen <= self.config.hold_time)
        return np.where(usable[:, None], (1.0 - share) * velocity + share * slope, velocity)

    def _output_positions(self, t: float) -> np.ndarray:
        return self._blended(self._state_positions(t), t)

    def _blended(self, pos: np.ndarray, t: float) -> np.ndarray:
        """``pos`` plus the re-acquisition blend offsets still running at ``t``."""
        rt = self.config.reacquire_time
        if rt <= 0 or (t - self._blend_latest) / rt >= 1.0:
            return pos  # every blend weight is 0 (same test as in _blend, for the latest start)
        return pos + self._blend(t)[:, None] * self.blend_offset

    def _blend(self, t: float) -> np.ndarray:
        rt = self.config.reacquire_time
        if rt <= 0:
            return np.zeros(self.num_keypoints)
        return np.minimum(np.maximum(1.0 - (t - self.blend_start) / rt, 0.0), 1.0)

    def _scores(self, t: float, confidence: np.ndarray) -> np.ndarray:
        over = np.maximum((t - self.last_seen) - self.config.hold_time, 0.0)  # time unseen past hold_time
        decay = np.exp(-over / max(self.config.missing_decay, 1e-6))
        return np.where(self.seen, confidence * decay, 0.0)

    def predict(self, t: float) -> StabilizedPose:
        """Keypoints (K, 2) and scores (K,) at time ``t``.

        After the last update: extrapolated with the motion model (at most ``hold_time`` ahead).
        Between earlier updates: cubic Hermite interpolation of the filtered positions and
        velocities, so a fixed-rate output above the pose rate stays smooth.
        """
        t = _check_time(t)
        k = self.num_keypoints
        if not self.initialized:
            return StabilizedPose(np.zeros((k, 2), np.float32), np.zeros(k, np.float32), t)
        if t >= self.last_time or len(self.history) < 2:
            base, displacement = self._extrapolation(t)
            pos = base
            if displacement is not None:
                if self.config.prediction_check > 0:  # remembered for the self-check (the latest call per update)
                    if self.predictions and self.predictions[-1][0] == self.last_time:
                        self.predictions.pop()
                    self.predictions.append((self.last_time, t, base, displacement))
                if self._gain is None:
                    self._gain = self.prediction_gain()[:, None]
                pos = base + self._gain * displacement
            pos = self._blended(pos, t)
            return StabilizedPose(pos.astype(np.float32), self._scores(t, self.confidence).astype(np.float32), t)
        times = [h[0] for h in self.history]
        i = int(np.searchsorted(times, t))
        if i == 0:
            t0, p0, _, c0 = self.history[0]
            return StabilizedPose(p0.astype(np.float32), self._scores(t0, c0).astype(np.float32), t)
        t0, p0, v0, c0 = self.history[i - 1]
        t1, p1, v1, c1 = self.history[i]
        h = t1 - t0
        s = (t - t0) / h if h > 0 else 1.0
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        pos = h00 * p0 + h10 * h * v0 + h01 * p1 + h11 * h * v1
        return StabilizedPose(pos.astype(np.float32), self._scores(t, c1).astype(np.float32), t)


class OneEuroStabilizer:
    """One Euro filter (Casiez et al. 2012) per coordinate: cutoff rises with speed.

    Coordinates are divided by ``scale`` before filtering (the body height by default; the
    benchmark passes the image size to reproduce peers' normalized-coordinate settings), so
    ``beta`` does not depend on the image size.
    """

    def __init__(
        self,
        min_cutoff: float = 1.0,
        beta: float = 1.0,
        d_cutoff: float = 1.0,
        scale: float | np.ndarray = FALLBACK_BODY_HEIGHT_PX,
        min_confidence: float = 0.1,
        hold_time: float = 0.25,
        missing_decay: float = 0.25,
    ) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.scale = np.asarray(scale, dtype=np.float64)
        self.min_confidence, self.hold_time, self.missing_decay = min_confidence, hold_time, missing_decay
        self.x: np.ndarray | None = None  # (K, 2) filtered, normalized
        self.dx: np.ndarray | None = None  # (K, 2) filtered derivative, normalized per second
        self.last_time = 0.0
        self.last_seen: np.ndarray | None = None
        self.confidence: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def update(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float) -> StabilizedPose:
        t = _check_time(timestamp)
        kp, sc, measured = _clean(keypoints, scores, self.min_confidence)
        z = kp / self.scale
        if self.x is None:
            if not measured.any():
                return self.predict(t)
            self.x = np.where(measured[:, None], z, z[measured].mean(axis=0))
            self.dx = np.zeros_like(z)
            self.last_seen = np.where(measured, t, -np.inf)
            self.confidence = np.where(measured, sc, 0.0)
            self.last_time = t
            return self.predict(t)
        dt = t - self.last_time
        if dt <= 0:
            return self.predict(self.last_time)
        first = measured & ~np.isfinite(self.last_seen)
        self.x[first] = z[first]
        m = measured & ~first
        # A joint seen again after a gap is measured against the held value over the whole gap.
        gap = np.where(m, t - self.last_seen, dt)[:, None]
        gap = np.maximum(gap, dt)
        raw_dx = (z - self.x) / gap
        a_d = self._alpha(self.d_cutoff, dt)
        dx = self.dx + a_d * (raw_dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(dx)
        a = self._alpha(cutoff, dt)
        x = self.x + a * (z - self.x)
        self.x = np.where(m[:, None], x, self.x)
        self.dx = np.where(m[:, None], dx, self.dx)
        self.last_seen = np.where(measured, t, self.last_seen)
        self.confidence = np.where(measured, sc, self.confidence)
        self.last_time = t
        return self.predict(t)

    def predict(self, t: float) -> StabilizedPose:
        """Filtered keypoints at ``t``: extrapolated with the filtered derivative (at most hold_time)."""
        t = _check_time(t)
        if self.x is None:
            k = 17
            return StabilizedPose(np.zeros((k, 2), np.float32), np.zeros(k, np.float32), t)
        horizon = float(np.clip(t - self.last_time, 0.0, self.hold_time))
        fresh = (t - self.last_seen) <= self.hold_time
        pos = (self.x + np.where(fresh[:, None], self.dx, 0.0) * horizon) * self.scale
        over = np.maximum(t - self.last_seen - self.hold_time, 0.0)
        scores = np.where(np.isfinite(self.last_seen), self.confidence * np.exp(-over / max(self.missing_decay, 1e-6)), 0.0)
        return StabilizedPose(pos.astype(np.float32), scores.astype(np.float32), t)

    def reset(self) -> None:
        self.x = None


class PassThroughStabilizer:
    """``method = "none"``: hands measurements through; predict holds the last ones."""

    def __init__(self) -> None:
        self.keypoints = np.zeros((17, 2), np.float32)
        self.scores = np.zeros(17, np.float32)

    def update(self, keypoints: np.ndarray, scores: np.ndarray, timestamp: float) -> StabilizedPose:
        _check_time(timestamp)
        kp, sc, measured = _clean(keypoints, scores, 1e-6)
        self.keypoints = kp.astype(np.float32)
        self.scores = np.where(measured, sc, 0.0).astype(np.float32)
        return StabilizedPose(self.keypoints.copy(), self.scores.copy(), float(timestamp))

    def predict(self, t: float) -> StabilizedPose:
        _check_time(t)
        return StabilizedPose(self.keypoints.copy(), self.scores.copy(), float(t))

    def reset(self) -> None:
        self.__init__()


Stabilizer = KalmanStabilizer | OneEuroStabilizer | PassThroughStabilizer


def rts_smooth_track(
    timestamps: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, config: SmoothingConfig,
    body_height_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Offline smoothing of one person's whole track with the future: a forward Kalman filter and
    the Rauch-Tung-Striebel backward pass (Rauch, Tung, Striebel, "Maximum likelihood estimates of
    linear dynamic systems", AIAA Journal 3(8), 1965), filterpy's ``KalmanFilter.rts_smoother``.

    Args:
        timestamps: (N,) seconds, non-decreasing (video time: gaps and variable frame rates are fine).
        keypoints: (N, K, 2) pixels; non-finite rows count as unmeasured.
        scores: (N, K) confidences in [0, 1]; below ``config.min_confidence`` a joint is unmeasured.
        config: ``rts_acceleration`` (process noise, body heights/s^2), ``measurement_noise`` and
            ``confidence_exponent`` (as the live :class:`KalmanStabilizer`), ``min_confidence``.
        body_height_px: the person's height; None = the median of :func:`estimate_body_height`.

    Returns:
        (keypoints (N, K, 2) float32 smoothed, scores (N, K) float32 = the cleaned input scores, so a
        joint never measured near a frame stays unseen for the retargeter).

    Model: per joint a constant-velocity state (x and y share the covariance, as in the live
    filter), measurement sigma = ``measurement_noise`` * body height / score**exponent. Unlike the
    causal stabilizer it has no lag: each estimate uses the frames after it as well as before.
    Raises ValueError for mismatched shapes or timestamps that go backwards.
    """
    times = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    kp_all = np.asarray(keypoints, dtype=np.float64)
    sc_all = np.asarray(scores, dtype=np.float64)
    n = times.shape[0]
    if kp_all.ndim != 3 or kp_all.shape[0] != n or kp_all.shape[2] != 2 or sc_all.shape != kp_all.shape[:2]:
        raise ValueError(f"rts_smooth_track: timestamps (N,), keypoints (N, K, 2) and scores (N, K) must agree, "
                         f"got {times.shape}, {kp_all.shape}, {sc_all.shape}")
    if n and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0)):
        raise ValueError("rts_smooth_track: timestamps must be finite and in time order")
    k = kp_all.shape[1]
    cleaned = [_clean(kp_all[i], sc_all[i], config.min_confidence) for i in range(n)]
    if n == 0:
        return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
    kp = np.stack([c[0] for c in cleaned])
    sc = np.stack([c[1] for c in cleaned])
    measured = np.stack([c[2] for c in cleaned])
    if not measured.any():
        return kp.astype(np.float32), sc.astype(np.float32)
    if body_height_px is None:
        heights = [h for i in range(n) if (h := estimate_body_height(kp[i], measured[i])) is not None]
        body_height_px = float(np.median(heights)) if heights else FALLBACK_BODY_HEIGHT_PX
    height = float(body_height_px)
    kf = KalmanFilter(dim_x=2 * k, dim_z=k)
    kf.H = np.hstack([np.eye(k), np.zeros((k, k))])
    # Start each joint at its first measurement (unmeasured joints: the body's centre, wide open).
    first = np.argmax(measured, axis=0)
    start = kp[first, np.arange(k)]
    ever = measured.any(axis=0)
    start[~ever] = kp[measured].mean(axis=0)
    kf.x = np.vstack([start, np.zeros((k, 2))])
    sigma0 = np.where(ever, config.measurement_noise * height, height)
    kf.P = np.diag(np.concatenate([sigma0**2, np.full(k, (2.0 * height) ** 2)]))
    q = (config.rts_acceleration * height) ** 2
    unmeasured_var = (1e6 * height) ** 2  # an unmeasured joint: a measurement with no weight
    xs = np.empty((n, 2 * k, 2))
    ps = np.empty((n, 2 * k, 2 * k))
    fs = np.empty((n, 2 * k, 2 * k))
    qs = np.zeros((n, 2 * k, 2 * k))
    eye = np.eye(k)
    for i in range(n):
        dt = times[i] - times[i - 1] if i else 0.0
        F = np.block([[eye, dt * eye], [np.zeros((k, k)), eye]])
        Q = np.kron(white_noise_q(2, dt) * q, eye) if dt > 0 else np.zeros_like(F)
        if i:
            kf.predict(F=F, Q=Q)
        sigma = config.measurement_noise * height / np.maximum(sc[i], 0.05) ** config.confidence_exponent
        var = np.where(measured[i], sigma**2, unmeasured_var)
        z = np.where(measured[i][:, None], kp[i], kf.x[:k])
        kf.update(z, R=np.diag(var), H=kf.H)  # H given: z keeps its (K, 2) x-and-y columns
        xs[i], ps[i], fs[i], qs[i] = kf.x, kf.P, F, Q
    smoothed, _, _, _ = kf.rts_smoother(xs, ps, Fs=fs, Qs=qs)
    out = smoothed[:, :k, :]
    out = np.where(ever[None, :, None], out, kp)
    return out.astype(np.float32), sc.astype(np.float32)


def make_stabilizer(config: SmoothingConfig, body_height_px: float | None = None, num_keypoints: int = 17) -> Stabilizer:
    """The stabilizer ``config.method`` names, for one person.

    ``body_height_px``: the person's height in pixels if known; None estimates it from the keypoints.
    """
    if config.method == "kalman":
        return KalmanStabilizer(config, num_keypoints=num_keypoints, body_height_px=body_height_px)
    if config.method == "one_euro":
        return OneEuroStabilizer(
            min_cutoff=config.min_cutoff,
            beta=config.beta,
            d_cutoff=config.d_cutoff,
            scale=body_height_px or FALLBACK_BODY_HEIGHT_PX,
            min_confidence=config.min_confidence,
            hold_time=config.hold_time,
            missing_decay=config.missing_decay,
        )
    if config.method == "none":
        return PassThroughStabilizer()
    raise ConfigError(f"smoothing.method = {config.method!r} is not allowed: choose one of kalman, one_euro, none")
