"""Camera effects of the synthetic camera (the profiles clean / realistic / harsh that group them are in
:mod:`mpslam_ros.sim.profiles`).

The renderer (:mod:`mpslam_ros.sim.render`) makes an ideal pinhole radiance image; this module holds
what a real camera does to it on the way to a mono8 frame, each effect a field of
:class:`~mpslam_ros.sim.sequences.SimOptions` that a profile sets:

- **motion blur** over the exposure: the radiance is averaged over poses spread across the exposure
  time (centred on the frame stamp, as drivers stamp mid-exposure), with as many samples as the image
  motion needs (:func:`blur_sample_times`), so the blur length follows speed x exposure;
- **lens distortion**: radial-tangential (plumb-bob, as in ROS CameraInfo and EuRoC). The raw image
  is resampled from a larger pinhole render through the distortion model (:class:`DistortionMap`); the
  coefficients go into the rig's CameraInfo and the pipeline's rectifier undoes them, as on a real camera;
- **vignetting** (radial fall-off in the raw image), **auto-exposure / gain changes** (slow) and **light
  flicker** (frame to frame, mains lighting beating with the frame rate), **left/right gain mismatch**;
- **shot + read noise and 8-bit quantisation** (in the renderer's exposure kernel);
- **lighting changes between visits**: each 4 m cell of the world has its own light level, switched at
  seeded times, so a place seen twice can be seen under other light (:func:`light_levels`);
- **depth noise** for RGB-D: Gaussian with sigma = ``depth_noise`` x z^2 (structured-light-like) and
  1 mm quantisation.

``clean`` is exactly the images of the first renderer (read noise 1.5, shot 0.02, vignetting 0.3,
nothing else), so every earlier number and cache stays valid.
"""

from __future__ import annotations

import math
from typing import Tuple

import cv2
import numpy as np


def exposure_gain(t: float, seed: int, variation: float, flicker: float) -> float:
    """Image gain at time ``t``: slow auto-exposure swings (relative amplitude ``variation``, periods
    20 s and 6 s) times flicker (``flicker``: 100 Hz light seen through a 20 Hz shutter beats at a few
    Hz, plus frame-to-frame jitter)."""
    g = 1.0
    if variation > 0:
        ph = (seed * 0.618) % 1.0 * 2 * np.pi
        g *= 1.0 + variation * (0.7 * np.sin(2 * np.pi * 0.05 * t + ph) + 0.3 * np.sin(2 * np.pi * 0.17 * t))
    if flicker > 0:
        k = int(round(t * 1000.0))
        jitter = ((k * 2654435761 + seed * 40503) % 1000) / 1000.0 - 0.5  # deterministic, per frame
        g *= 1.0 + flicker * (0.7 * np.sin(2 * np.pi * 2.7 * t + seed) + 0.6 * jitter)
    return float(g)


def blur_sample_times(t: float, exposure_s: float, image_motion_px: float, px_per_sample: float,
                      max_samples: int) -> np.ndarray:
    """Times of the radiance samples averaged into one frame: centred on ``t``, spanning the exposure,
    spaced so the image moves at most ``px_per_sample`` between two (odd count: ``t`` is one)."""
    if exposure_s <= 0 or px_per_sample <= 0 or image_motion_px <= px_per_sample:
        return np.array([t])
    n = 2 * int(math.ceil(image_motion_px / px_per_sample / 2.0)) + 1
    n = max(3, min(n, max_samples | 1))
    return t + exposure_s * (np.arange(n) / (n - 1) - 0.5)


def image_motion_px(T_a: np.ndarray, T_b: np.ndarray, fx: float, near_depth_m: float) -> float:
    """Upper estimate of how far the image moves between camera poses ``T_a`` and ``T_b``
    (T_world_cam): rotation angle x fx plus the translation's parallax at ``near_depth_m``."""
    R = T_a[:3, :3].T @ T_b[:3, :3]
    angle = math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0)))
    shift = float(np.linalg.norm(T_b[:3, 3] - T_a[:3, 3]))
    return fx * (angle + shift / max(near_depth_m, 0.1))


def light_levels(cells: np.ndarray, t: float, seed: int, amplitude: float, period_s: float = 20.0) -> np.ndarray:
    """Light level (multiplier of radiance) of each world cell (int[n, 2]) at time ``t``: constant for
    ``period_s`` then switched to a new seeded level in 1 -/+ ``amplitude``, so revisits after the
    switch see the place under other light."""
    if amplitude <= 0:
        return np.ones(len(cells))
    epoch = int(math.floor(t / period_s))
    out = np.empty(len(cells))
    for q, (cx, cy) in enumerate(cells):
        h = (int(cx) * 73856093) ^ (int(cy) * 19349663) ^ (epoch * 83492791) ^ (seed * 2654435761)
        u = ((h & 0xFFFFFFFF) % 10007) / 10006.0  # 0..1
        out[q] = 1.0 + amplitude * (2.0 * u - 1.0)
    return out


def vignette_map(width: int, height: int, cx: float, cy: float, strength: float) -> np.ndarray:
    """float32[h, w] radial fall-off 1 - strength r^2 / r_max^2 (the renderer's model, in raw pixels)."""
    u = np.arange(width, dtype=np.float64) - cx
    v = np.arange(height, dtype=np.float64)[:, None] - cy
    return (1.0 - strength * (u * u + v * v) / (cx * cx + cy * cy)).astype(np.float32)


def distort_normalized(x: np.ndarray, dist) -> np.ndarray:
    """Plumb-bob model on normalised coordinates float[n, 2] (OpenCV's, k1 k2 p1 p2 k3)."""
    k1, k2, p1, p2, k3 = (list(np.asarray(dist, float).ravel()) + [0.0] * 5)[:5]
    a, b = x[:, 0], x[:, 1]
    r2 = a * a + b * b
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    return np.stack([a * radial + 2 * p1 * a * b + p2 * (r2 + 2 * a * a),
                     b * radial + p1 * (r2 + 2 * b * b) + 2 * p2 * a * b], axis=1)


def undistort_normalized(xd: np.ndarray, dist, iterations: int = 30) -> np.ndarray:
    """Inverse of :func:`distort_normalized` by Newton's method (numeric Jacobian), to ~1e-12."""
    x = xd.copy()
    eps = 1e-7
    for _ in range(iterations):
        f = distort_normalized(x, dist) - xd
        if np.abs(f).max() < 1e-13:
            break
        fa = (distort_normalized(x + [eps, 0.0], dist) - xd - f) / eps
        fb = (distort_normalized(x + [0.0, eps], dist) - xd - f) / eps
        det = fa[:, 0] * fb[:, 1] - fb[:, 0] * fa[:, 1]
        x = x - np.stack([fb[:, 1] * f[:, 0] - fb[:, 0] * f[:, 1], -fa[:, 1] * f[:, 0] + fa[:, 0] * f[:, 1]], 1) / det[:, None]
    return x


class DistortionMap:
    """Raw (distorted) image <- pinhole image, for a plumb-bob camera ``K``, ``dist``.

    Each raw pixel is undistorted (Newton iterations, to 1e-12) to find where it looks; the pinhole render
    must cover all of those rays, so it gets a margin: render with :attr:`pinhole_size` and
    :attr:`pinhole_principal` (same focal length), then :meth:`distort` resamples it.
    """

    def __init__(self, width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                 dist: Tuple[float, ...]):
        self.width, self.height = int(width), int(height)
        d = np.asarray(dist, dtype=np.float64).ravel()
        uu, vv = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        xd = np.stack([(uu.ravel() - cx) / fx, (vv.ravel() - cy) / fy], axis=1)
        und = undistort_normalized(xd, d)
        mx = (und[:, 0] * fx + cx).reshape(height, width)
        my = (und[:, 1] * fy + cy).reshape(height, width)
        pad_x = int(math.ceil(max(0.0, -mx.min(), mx.max() - (width - 1)))) + 2
        pad_y = int(math.ceil(max(0.0, -my.min(), my.max() - (height - 1)))) + 2
        self.pinhole_size = (width + 2 * pad_x, height + 2 * pad_y)
        self.pinhole_principal = (cx + pad_x, cy + pad_y)
        self.map_x = (mx + pad_x).astype(np.float32)
        self.map_y = (my + pad_y).astype(np.float32)

    def distort(self, pinhole: np.ndarray, nearest: bool = False) -> np.ndarray:
        """The raw image from a render of the padded pinhole camera (float32; ``nearest`` for depth)."""
        return cv2.remap(pinhole, self.map_x, self.map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def noisy_depth(depth: np.ndarray, sigma_per_m2: float, key: int) -> np.ndarray:
    """Depth with Gaussian noise sigma = ``sigma_per_m2`` z^2 and 1 mm quantisation (0 stays 0)."""
    if sigma_per_m2 <= 0:
        return depth
    rng = np.random.default_rng(key)
    z = depth.astype(np.float64)
    out = z + rng.standard_normal(z.shape) * sigma_per_m2 * z * z
    out = np.round(out * 1000.0) / 1000.0
    out[~(z > 0)] = 0.0
    return np.maximum(out, 0.0).astype(np.float32)
