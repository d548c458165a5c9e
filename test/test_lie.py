"""Lie-group identities and Jacobians against central finite differences."""

import numpy as np
import pytest

from mpslam_ros.geometry import lie

RNG = np.random.default_rng(7)
ANGLES = [0.0, 1e-7, 1e-3, 0.7, 2.5, np.pi - 1e-4]


def _fd(f, dim, eps=1e-6):
    cols = []
    for i in range(dim):
        d = np.zeros(dim)
        d[i] = eps
        cols.append((f(d) - f(-d)) / (2 * eps))
    return np.stack(cols, axis=1)


def _se3_sample(angle):
    w = RNG.standard_normal(3)
    w *= angle / np.linalg.norm(w)
    return np.concatenate([w, RNG.standard_normal(3)])


@pytest.mark.parametrize("angle", ANGLES)
def test_so3_exp_log_roundtrip_and_orthonormal(angle):
    w = _se3_sample(angle)[:3]
    R = lie.so3_exp(w)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(lie.so3_log(R), w, atol=1e-9)


def test_so3_log_at_pi_keeps_axis():
    axis = np.array([0.3, -0.5, 0.81])
    axis /= np.linalg.norm(axis)
    R = lie.so3_exp(np.pi * axis)
    w = lie.so3_log(R)
    assert np.isclose(np.linalg.norm(w), np.pi, atol=1e-9)
    assert np.allclose(lie.so3_exp(w), R, atol=1e-9)


@pytest.mark.parametrize("angle", ANGLES)
def test_se3_group_identities(angle):
    xi = _se3_sample(angle)
    T = lie.se3_exp(xi)
    assert np.allclose(lie.se3_log(T), xi, atol=1e-8)
    assert np.allclose(lie.se3_compose(T, lie.se3_inverse(T)), np.eye(4), atol=1e-12)
    d = 1e-3 * RNG.standard_normal(6)
    # T exp(d) T^-1 = exp(Ad(T) d)
    assert np.allclose(T @ lie.se3_exp(d) @ lie.se3_inverse(T), lie.se3_exp(lie.se3_adjoint(T) @ d), atol=1e-12)
    # Ad(A B) = Ad(A) Ad(B)
    B = lie.se3_exp(_se3_sample(0.4))
    assert np.allclose(lie.se3_adjoint(T @ B), lie.se3_adjoint(T) @ lie.se3_adjoint(B), atol=1e-10)


def test_se3_log_matches_gtsam():
    gtsam = pytest.importorskip("gtsam")
    for angle in (0.3, 2.0, 3.0):
        xi = _se3_sample(angle)
        T = lie.se3_exp(xi)
        assert np.allclose(gtsam.Pose3.Logmap(gtsam.Pose3(T)), lie.se3_log(T), atol=1e-9)
        assert np.allclose(gtsam.Pose3.Expmap(xi).matrix(), T, atol=1e-12)


@pytest.mark.parametrize("angle", ANGLES)
def test_se3_jacobians_against_finite_differences(angle):
    xi = _se3_sample(angle)
    T = lie.se3_exp(xi)
    Jr_inv = _fd(lambda d: lie.se3_log(T @ lie.se3_exp(d)), 6)
    assert np.allclose(Jr_inv, lie.se3_right_jacobian_inv(xi), atol=1e-6)
    Jl_inv = _fd(lambda d: lie.se3_log(lie.se3_exp(d) @ T), 6)
    assert np.allclose(Jl_inv, lie.se3_left_jacobian_inv(xi), atol=1e-6)
    Jr = _fd(lambda d: lie.se3_log(lie.se3_inverse(T) @ lie.se3_exp(xi + d)), 6)
    assert np.allclose(Jr, lie.se3_right_jacobian(xi), atol=1e-6)
    assert np.allclose(lie.se3_right_jacobian(xi) @ lie.se3_right_jacobian_inv(xi), np.eye(6), atol=1e-9)


@pytest.mark.parametrize("angle", ANGLES)
def test_so3_jacobians_against_finite_differences(angle):
    w = _se3_sample(angle)[:3]
    R = lie.so3_exp(w)
    assert np.allclose(_fd(lambda d: lie.so3_log(R @ lie.so3_exp(d)), 3), lie.so3_right_jacobian_inv(w), atol=1e-6)
    assert np.allclose(_fd(lambda d: lie.so3_log(R.T @ lie.so3_exp(w + d)), 3), lie.so3_right_jacobian(w),
                       atol=1e-6)


@pytest.mark.parametrize("angle", [0.0, 1e-7, 0.5, -2.0, 3.1])
def test_se2_identities_and_jacobians(angle):
    xi = np.array([RNG.standard_normal(), RNG.standard_normal(), angle])
    T = lie.se2_exp(xi)
    assert np.allclose(lie.se2_log(T), xi, atol=1e-9)
    assert np.allclose(lie.se2_from_xytheta(*lie.se2_to_xytheta(T)), T, atol=1e-12)
    d = 1e-3 * RNG.standard_normal(3)
    assert np.allclose(T @ lie.se2_exp(d) @ lie.se2_inverse(T), lie.se2_exp(lie.se2_adjoint(T) @ d), atol=1e-12)
    assert np.allclose(_fd(lambda e: lie.se2_log(T @ lie.se2_exp(e)), 3), lie.se2_right_jacobian_inv(xi), atol=1e-6)
    assert np.allclose(_fd(lambda e: lie.se2_log(lie.se2_inverse(T) @ lie.se2_exp(xi + e)), 3),
                       lie.se2_right_jacobian(xi), atol=1e-6)


def test_se2_is_planar_se3():
    """The SE(2) log equals the planar components of the SE(3) log (same V matrix)."""
    xi2 = np.array([0.4, -1.2, 1.3])
    T2 = lie.se2_exp(xi2)
    T3 = np.eye(4)
    T3[:2, :2] = T2[:2, :2]
    T3[:2, 3] = T2[:2, 2]
    xi3 = lie.se3_log(T3)
    assert np.allclose(xi3[[3, 4, 2]], xi2, atol=1e-12)


def test_quaternion_roundtrip():
    for angle in (0.0, 0.5, 3.0, np.pi):
        R = lie.so3_exp(_se3_sample(angle)[:3])
        q = lie.rot_to_quat(R)
        assert q[3] >= 0.0 and np.isclose(np.linalg.norm(q), 1.0)
        assert np.allclose(lie.quat_to_rot(*q), R, atol=1e-12)


@pytest.mark.parametrize("angle", ANGLES)
def test_allocation_free_jacobian_inverts_the_composed_jacobian_with_reused_scratch(angle):
    # se3_right_jacobian (composed from so3/_se3_q) is independent of the allocation-free inverse; the
    # same J / work buffers serve every call, as in the pose-graph kernel
    rng = np.random.default_rng(5)
    J = np.empty((6, 6))
    work = np.full((12, 3, 3), np.nan)
    for _ in range(10):
        w = rng.standard_normal(3)
        xi = np.concatenate([angle * w / np.linalg.norm(w), rng.standard_normal(3)])
        lie.se3_right_jacobian_inv_into(xi, J, work)
        assert np.allclose(lie.se3_right_jacobian(xi) @ J, np.eye(6), atol=1e-9)
