import numpy as np
import pytest

from avatar_bridge import quat


def random_quats(n, seed=0):
    rng = np.random.default_rng(seed)
    return quat.normalize(rng.normal(size=(n, 4)))


def test_mul_matches_matrix_product():
    a, b = random_quats(50, 1), random_quats(50, 2)
    np.testing.assert_allclose(quat.to_matrix(quat.mul(a, b)), quat.to_matrix(a) @ quat.to_matrix(b), atol=1e-12)


def test_rotate_matches_matrix():
    q = random_quats(20)
    v = np.random.default_rng(3).normal(size=(20, 3))
    np.testing.assert_allclose(quat.rotate(q, v), np.einsum("nij,nj->ni", quat.to_matrix(q), v), atol=1e-12)


def test_matrix_round_trip_up_to_sign():
    q = random_quats(200, 4)
    back = quat.from_matrix(quat.to_matrix(q))
    assert np.all(np.abs(np.abs(np.sum(back * q, axis=-1)) - 1) < 1e-9)


def test_axis_angle_quarter_turn_about_y_takes_z_to_x():
    q = quat.from_axis_angle([0, 1, 0], np.pi / 2)
    np.testing.assert_allclose(quat.rotate(q, [0, 0, 1]), [1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("b", [[0, 1, 0], [0, 0, -1], [-1, 0, 0], [0.3, -0.2, 0.9]])
def test_from_two_vectors(b):
    a = np.array([1.0, 0, 0])
    q = quat.from_two_vectors(a, b)
    np.testing.assert_allclose(quat.rotate(q, a), np.asarray(b) / np.linalg.norm(b), atol=1e-9)


def test_slerp_endpoints_and_midpoint_angle():
    a = quat.IDENTITY
    b = quat.from_axis_angle([0, 0, 1], 1.0)
    np.testing.assert_allclose(quat.slerp(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(quat.slerp(a, b, 1.0), b, atol=1e-12)
    assert quat.angle_between(a, quat.slerp(a, b, 0.5)) == pytest.approx(0.5)


def test_continuous_removes_sign_flip():
    q = quat.from_axis_angle([1, 0, 0], 0.2)
    assert np.allclose(quat.continuous(-q, q), q)
    assert np.allclose(quat.continuous(q, q), q)


def test_normalize_zero_gives_identity():
    np.testing.assert_allclose(quat.normalize(np.zeros(4)), quat.IDENTITY)
