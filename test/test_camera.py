"""Camera models: analytic Jacobians against central finite differences."""

import numpy as np

from mpslam_ros.geometry.camera import (matrix_to_rodrigues, project_points_bal, project_points_radtan,
                                        project_points_stereo, radtan_params, rodrigues_to_matrix)


def _points(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-1, 1, n), rng.uniform(-0.8, 0.8, n), rng.uniform(1.0, 6.0, n)])


def _fd(f, P, h=1e-6):
    cols = []
    for a in range(3):
        d = np.zeros(3)
        d[a] = h
        cols.append((f(P + d) - f(P - d)) / (2 * h))
    return np.stack(cols, axis=-1)


def test_radtan_jacobian_matches_finite_differences():
    params = radtan_params(458.0, 457.0, 367.0, 248.0, (-0.28, 0.07, 2e-4, 1.8e-5, 0.01))
    P = _points()
    uv, J, ok = project_points_radtan(P, params)
    assert ok.all()
    num = _fd(lambda Q: project_points_radtan(Q, params)[0], P)
    np.testing.assert_allclose(J, num, rtol=1e-5, atol=1e-4)


def test_radtan_rejects_points_behind_the_camera():
    uv, J, ok = project_points_radtan(np.array([[0.1, 0.2, -1.0]]), radtan_params(400, 400, 300, 200))
    assert not ok[0] and np.isnan(uv).all()


def test_stereo_projection_and_jacobian():
    P = _points(seed=1)
    uvr, J, ok = project_points_stereo(P, 458.0, 457.0, 367.0, 248.0, 0.11)
    # rectified: disparity u_l - u_r = fx * b / Z
    np.testing.assert_allclose(uvr[:, 0] - uvr[:, 2], 458.0 * 0.11 / P[:, 2])
    num = _fd(lambda Q: project_points_stereo(Q, 458.0, 457.0, 367.0, 248.0, 0.11)[0], P)
    np.testing.assert_allclose(J, num, rtol=1e-5, atol=1e-4)


def test_bal_jacobians_match_finite_differences():
    P = _points(seed=2) * np.array([1, 1, -1])  # BAL cameras look down -z
    intr = np.array([500.0, -3e-2, 1e-3])
    uv, JP, Ji, ok = project_points_bal(P, intr)
    assert ok.all()
    np.testing.assert_allclose(JP, _fd(lambda Q: project_points_bal(Q, intr)[0], P), rtol=1e-5, atol=1e-4)
    cols = []
    for a in range(3):
        d = np.zeros(3)
        d[a] = 1e-7 * max(1.0, abs(intr[a]))
        cols.append((project_points_bal(P, intr + d)[0] - project_points_bal(P, intr - d)[0]) / (2 * d[a]))
    np.testing.assert_allclose(Ji, np.stack(cols, -1), rtol=1e-5, atol=1e-3)


def test_rodrigues_round_trip_including_near_pi():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(50, 3))
    w = w / np.linalg.norm(w, axis=1, keepdims=True) * rng.uniform(0, np.pi - 1e-3, (50, 1))
    w[0] = 0.0
    R = rodrigues_to_matrix(w)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(matrix_to_rodrigues(R), w, atol=1e-9)
