"""Synthetic sliding-window BA problems the size real stereo/mono VO produces.

A camera flies a smooth, gently curving path (EuRoC-like intrinsics, 752x480); landmarks are
placed in front of the keyframes and tracked over a run of consecutive keyframes (like a KLT/ORB
front end), giving by default 50 keyframes, ~230 landmarks and ~2,750 observations (a mono
Jacobian of ~5,500 x 1,000). Observations get Gaussian pixel noise. Two kinds of starting point:

- ``init="independent"`` (the default): the ground truth with independent noise on every
  keyframe (0.5 deg, 3 cm; except the fixed ones) and every landmark (5 cm). A stress test, far
  from what VO hands its BA: neighbouring keyframes 7 cm apart get independent 3 cm errors, so the
  initial relative motions are off by ~40%, and the noise has components along the window's weakly
  observable directions (mono scale) that a sliding window never starts with.
- ``init="vo"``: what a VO back end sees when a keyframe arrives. The older keyframes and the
  landmarks they see come from the previous window's solution (the window without its newest
  keyframe, bundle-adjusted to convergence with the fp64 Schur solver from the independent
  perturbation above); the newest keyframe is the previous one composed with the true relative
  motion plus tracking noise (``track_rotation_deg``, ``track_translation``), and landmarks first
  seen by it are its true camera-frame points plus triangulation noise (``point_noise``) mapped
  through that tracked pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: EuRoC cam0 after rectification-ish: fx, fy, cx, cy, image size.
EUROC_LIKE = (458.0, 457.0, 367.0, 248.0, 752, 480)


@dataclass
class SyntheticWindow:
    """One window: ground truth, the perturbed starting point, and the observations."""

    T_cw_true: np.ndarray  # float64[n,4,4] world -> camera
    points_true: np.ndarray  # float64[m,3]
    T_cw_init: np.ndarray
    points_init: np.ndarray
    obs_cam: np.ndarray  # int64[k]
    obs_pt: np.ndarray  # int64[k]
    obs_uv: np.ndarray  # float64[k,2] left pixel
    obs_ur: np.ndarray  # float64[k] right u, NaN when mono
    intrinsics: tuple  # (fx, fy, cx, cy)
    baseline: float
    fixed_cams: np.ndarray  # bool[n]
    pixel_noise: float

    @property
    def num_observations(self) -> int:
        return len(self.obs_cam)

    def solve_args(self) -> tuple:
        """Positional arguments for :func:`mpslam_ros.problems.ba.solve_window` (minus options)."""
        return (self.T_cw_init, self.points_init, self.obs_cam, self.obs_pt, self.obs_uv,
                self.obs_ur, self.intrinsics, self.baseline, self.fixed_cams)


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _small_rotation(rng: np.random.Generator, sigma: float) -> np.ndarray:
    w = rng.normal(0.0, sigma, 3)
    theta = np.linalg.norm(w)
    if theta < 1e-15:
        return np.eye(3)
    k = w / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def make_window(seed: int = 0, num_keyframes: int = 50, num_landmarks: int = 230,
                track_length: tuple = (8, 17), stereo: bool = False, baseline: float = 0.11,
                pixel_noise: float = 0.5, rotation_noise_deg: float = 0.5,
                translation_noise: float = 0.03, point_noise: float = 0.05,
                num_fixed: int | None = None, init: str = "independent",
                track_rotation_deg: float = 0.2, track_translation: float = 0.01) -> SyntheticWindow:
    """Generate one window.

    ``track_length``: each landmark is observed by a run of consecutive keyframes whose length is
    drawn from ``[lo, hi)`` (the mean 12 gives ~2,750 observations for 230 landmarks).
    ``stereo``: also observe the right-image u (3 residual rows per observation).
    ``num_fixed``: keyframes held fixed from the oldest (gauge); default 1 for stereo and 2 for
    mono (mono leaves the scale free, which the second fixed keyframe pins).
    ``init``: "independent" or "vo" (see the module docstring).
    """
    if init not in ("independent", "vo"):
        raise ValueError(f"init must be 'independent' or 'vo', got {init!r}")
    rng = np.random.default_rng(seed)
    fx, fy, cx, cy, width, height = EUROC_LIKE
    n = num_keyframes
    # Smooth path: forward along world z with lateral sway and small yaw/pitch oscillations.
    phase = rng.uniform(0, 2 * np.pi, 3)
    T_cw = np.zeros((n, 4, 4))
    for i in range(n):
        c = np.array([0.4 * np.sin(0.12 * i + phase[0]), 0.1 * np.sin(0.2 * i + phase[1]), 0.07 * i])
        R_wc = _rot(1, 0.15 * np.sin(0.08 * i + phase[2])) @ _rot(0, 0.05 * np.sin(0.1 * i))
        T_cw[i] = np.eye(4)
        T_cw[i, :3, :3] = R_wc.T
        T_cw[i, :3, 3] = -R_wc.T @ c

    points = np.zeros((num_landmarks, 3))
    obs_cam, obs_pt, obs_uv, obs_ur = [], [], [], []
    lo, hi = track_length
    j = 0
    while j < num_landmarks:
        L = int(rng.integers(lo, hi))
        s = int(rng.integers(0, max(1, n - L + 1)))
        frames = np.arange(s, min(n, s + L))
        mid = frames[len(frames) // 2]
        # Pixel + depth in the middle keyframe, lifted to the world.
        u, v = rng.uniform(40, width - 40), rng.uniform(30, height - 30)
        depth = rng.uniform(2.0, 8.0)
        p_c = np.array([(u - cx) / fx * depth, (v - cy) / fy * depth, depth])
        R, t = T_cw[mid, :3, :3], T_cw[mid, :3, 3]
        p_w = R.T @ (p_c - t)
        seen = []
        for f in frames:
            q = T_cw[f, :3, :3] @ p_w + T_cw[f, :3, 3]
            if q[2] < 0.5:
                continue
            uu, vv = fx * q[0] / q[2] + cx, fy * q[1] / q[2] + cy
            ur = fx * (q[0] - baseline) / q[2] + cx
            if 0 <= uu < width and 0 <= vv < height and (not stereo or 0 <= ur < width):
                seen.append((f, uu, vv, ur))
        if len(seen) < 2:
            continue
        points[j] = p_w
        for f, uu, vv, ur in seen:
            obs_cam.append(f)
            obs_pt.append(j)
            obs_uv.append((uu, vv))
            obs_ur.append(ur if stereo else np.nan)
        j += 1

    k = len(obs_cam)
    uv = np.asarray(obs_uv) + rng.normal(0.0, pixel_noise, (k, 2))
    ur = np.asarray(obs_ur, dtype=np.float64)
    if stereo:
        ur = ur + rng.normal(0.0, pixel_noise, k)

    if num_fixed is None:
        num_fixed = 1 if stereo else 2
    fixed = np.zeros(n, dtype=bool)
    fixed[:num_fixed] = True
    T_init = T_cw.copy()
    for i in range(n):
        if fixed[i]:
            continue
        T_init[i, :3, :3] = _small_rotation(rng, np.deg2rad(rotation_noise_deg)) @ T_cw[i, :3, :3]
        T_init[i, :3, 3] += rng.normal(0.0, translation_noise, 3)
    points_init = points + rng.normal(0.0, point_noise, points.shape)
    obs_cam = np.asarray(obs_cam, dtype=np.int64)
    obs_pt = np.asarray(obs_pt, dtype=np.int64)
    if init == "vo" and n - 1 > num_fixed:
        T_init, points_init = _previous_window_start(rng, T_cw, points, T_init, points_init, obs_cam, obs_pt,
                                                     uv, ur, (fx, fy, cx, cy), baseline, fixed,
                                                     track_rotation_deg, track_translation, point_noise)
    return SyntheticWindow(T_cw, points, T_init, points_init, obs_cam, obs_pt, uv, ur, (fx, fy, cx, cy),
                           baseline, fixed, pixel_noise)


def _previous_window_start(rng, T_true, points_true, T_init, points_init, obs_cam, obs_pt, uv, ur, intrinsics,
                           baseline, fixed, track_rotation_deg, track_translation, point_noise):
    """VO-style start: previous window (all keyframes but the newest) solved, newest one tracked."""
    from mpslam_ros.problems.ba import solve_window
    from mpslam_ros.solvers.lm import SolverOptions

    n = len(T_true)
    old_obs = obs_cam < n - 1
    old_pts = np.bincount(obs_pt[old_obs], minlength=len(points_true)) >= 2
    keep = old_obs & old_pts[obs_pt]
    remap = np.cumsum(old_pts) - 1
    T_prev, P_prev, _ = solve_window(
        T_init[:n - 1], points_init[old_pts], obs_cam[keep], remap[obs_pt[keep]], uv[keep], ur[keep], intrinsics,
        baseline, fixed[:n - 1],
        options=SolverOptions(linear_solver="schur", max_iterations=20, function_tolerance=1e-10))
    T_new = T_true[n - 1] @ np.linalg.inv(T_true[n - 2]) @ T_prev[n - 2]  # tracked relative motion
    T_new[:3, :3] = _small_rotation(rng, np.deg2rad(track_rotation_deg)) @ T_new[:3, :3]
    T_new[:3, 3] += rng.normal(0.0, track_translation, 3)
    T_start = np.concatenate([T_prev, T_new[None]])
    P_start = np.empty_like(points_true)
    P_start[old_pts] = P_prev
    new = ~old_pts
    if np.any(new):  # first seen by the newest keyframe: triangulated in its frame, mapped by its tracked pose
        p_c = points_true[new] @ T_true[n - 1, :3, :3].T + T_true[n - 1, :3, 3]
        p_c += rng.normal(0.0, point_noise, p_c.shape)
        P_start[new] = (p_c - T_new[:3, 3]) @ T_new[:3, :3]
    return T_start, P_start
