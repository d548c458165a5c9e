"""Synthetic BAL problems of any size (10^3 to 10^6+ observations), for solver scaling studies.

Cameras sit on ``num_rings`` horizontal rings around a scene (a turntable / city-block capture like
the BAL Dubrovnik and Trafalgar sets), looking at the ring's axis with a small random tilt; points
fill a cylinder inside the rings. Each point is seen by ``track_length`` cameras drawn around its
azimuth on random rings (so the camera graph joins neighbouring azimuths on every ring: the reduced
camera matrix is sparse but not banded). BAL camera model (Rodrigues rotation, translation, f, k1,
k2; ``p = -P / P_z``), 0.5 px pixel noise; the start perturbs every camera (0.3 deg, 5 cm, 0.5 %
focal length) and point (10 cm). Observations whose point is behind the camera or outside a 1000 x
700 image are dropped, as are points left with fewer than two.
"""

from __future__ import annotations

import numpy as np

from mpslam_ros.geometry.camera import matrix_to_rodrigues
from mpslam_ros.io.bal import BALProblem

#: BAL cameras look down -z: R_bal = FLIP @ R_cw (a 180 deg rotation about x) for a z-forward camera.
FLIP = np.diag([1.0, -1.0, -1.0])


def _look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R_cw (rows: camera x, y, z axes in the world) of a z-forward camera at ``center`` facing ``target``."""
    z = target - center
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), z.shape)
    x = np.cross(z, up)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-2)


def _small_rotations(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    from mpslam_ros.geometry.camera import rodrigues_to_matrix

    return rodrigues_to_matrix(rng.normal(0.0, sigma, (n, 3)))


def make_bal(seed: int = 0, num_cameras: int = 100, num_points: int = 5000, track_length: tuple = (3, 13),
             num_rings: int = 3, pixel_noise: float = 0.5, rotation_noise_deg: float = 0.3,
             translation_noise: float = 0.05, focal_noise: float = 0.005, point_noise: float = 0.1) -> BALProblem:
    """A perturbed synthetic BAL problem (observations ~ ``num_points * mean(track_length)``).

    ``track_length``: cameras per point drawn from ``[lo, hi)`` before visibility culling."""
    rng = np.random.default_rng(seed)
    n = num_cameras
    rings = rng.integers(0, num_rings, n)
    azimuth = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    radius = 20.0 + 4.0 * rings + rng.normal(0.0, 0.5, n)
    height = 2.0 + 3.0 * rings + rng.normal(0.0, 0.3, n)
    centers = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], axis=1)
    targets = np.stack([np.zeros(n), np.zeros(n), rng.uniform(1.0, 5.0, n)], axis=1)
    R_cw = _small_rotations(rng, n, np.deg2rad(3.0)) @ _look_at(centers, targets)
    t_cw = -np.einsum("nij,nj->ni", R_cw, centers)
    f = rng.uniform(450.0, 550.0, n)
    k1 = rng.normal(0.0, 0.02, n)
    k2 = rng.normal(0.0, 0.002, n)

    # points in a cylinder, each seen from cameras around its azimuth
    phi = rng.uniform(0.0, 2 * np.pi, num_points)
    rho = 8.0 * np.sqrt(rng.uniform(0.0, 1.0, num_points))
    points = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(0.0, 8.0, num_points)], axis=1)
    lo, hi = track_length
    L = rng.integers(lo, hi, num_points)
    pt = np.repeat(np.arange(num_points), L)
    # a camera near the point's azimuth: index of the azimuth, then a random offset of up to ~15 deg
    base = np.searchsorted(azimuth, np.mod(np.arctan2(points[:, 1], points[:, 0]), 2 * np.pi))
    spread = max(1, int(round(n * 15.0 / 360.0)))
    cam = np.mod(np.repeat(base, L) + rng.integers(-spread, spread + 1, len(pt)), n)
    key = np.unique(pt * n + cam)  # one observation per (point, camera)
    pt, cam = key // n, key % n

    P = np.einsum("kij,kj->ki", R_cw[cam], points[pt]) + t_cw[cam]
    z = P[:, 2]
    ok = z > 1.0
    x, y = P[:, 0] / np.where(ok, z, 1.0), P[:, 1] / np.where(ok, z, 1.0)
    r2 = x * x + y * y
    d = 1.0 + k1[cam] * r2 + k2[cam] * r2 * r2
    u, v = f[cam] * d * x, -f[cam] * d * y  # BAL: p = -P_bal/P_bal_z = (x, -y) for P_bal = FLIP P
    ok &= (np.abs(u) < 500.0) & (np.abs(v) < 350.0)
    pt, cam, u, v = pt[ok], cam[ok], u[ok], v[ok]
    counts = np.bincount(pt, minlength=num_points)
    keep = counts[pt] >= 2
    pt, cam, u, v = pt[keep], cam[keep], u[keep], v[keep]
    used = np.flatnonzero(counts >= 2)
    remap = np.full(num_points, -1)
    remap[used] = np.arange(len(used))
    pt = remap[pt]
    points = points[used]
    uv = np.stack([u, v], axis=1) + rng.normal(0.0, pixel_noise, (len(u), 2))

    R0 = _small_rotations(rng, n, np.deg2rad(rotation_noise_deg)) @ R_cw
    t0 = t_cw + rng.normal(0.0, translation_noise, (n, 3))
    cams = np.concatenate([matrix_to_rodrigues(FLIP @ R0), t0 @ FLIP.T,
                           np.stack([f * (1.0 + rng.normal(0.0, focal_noise, n)), k1, k2], axis=1)], axis=1)
    pts0 = points + rng.normal(0.0, point_noise, points.shape)
    order = np.lexsort((pt, cam))  # camera-major, as BAL files are
    return BALProblem(cams, pts0, cam[order].astype(np.int64), pt[order].astype(np.int64), uv[order])
