"""Affine alignment of a feature's creation patch (frontend/affine_track.py) on synthetic warps."""

import cv2
import numpy as np

from mpslam_ros.frontend.affine_track import image_gradients, refine_affine


def _texture(size=240, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 20, 235, cv2.NORM_MINMAX)


def _warped(img, M, offset=0.0):
    return cv2.warpAffine(img, M, img.shape[::-1], flags=cv2.INTER_CUBIC) + np.float32(offset)


def test_recovers_position_and_warp_of_rotated_scaled_sheared_patches():
    anchor = _texture()
    ang = np.deg2rad(8.0)
    A_true = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) @ np.array([[1.08, 0.05], [0.0, 0.95]])
    M = np.hstack([A_true, [[3.3], [-2.7]]])
    cur = _warped(anchor, M, offset=12.0)  # and a brightness change
    g = np.stack(np.meshgrid(np.linspace(80, 160, 4), np.linspace(80, 160, 4)), -1).reshape(-1, 2)
    truth = g @ A_true.T + M[:, 2]
    guess = truth + np.array([0.8, -0.6])  # a KLT result that slid by a pixel
    uv, A, ok = refine_affine(anchor, g, image_gradients(cur), guess, np.tile(np.eye(2), (len(g), 1, 1)))
    assert ok.all()
    assert np.abs(uv - truth).max() < 0.05
    assert np.abs(A - A_true).max() < 0.02


def test_rejects_flat_patches_patches_off_the_image_and_large_moves():
    anchor = _texture()
    flat = anchor.copy()
    flat[:120, :120] = 100.0
    cur = image_gradients(_warped(flat, np.float32([[1, 0, 0.4], [0, 1, 0.3]])))
    pts = np.array([[60.0, 60.0],  # flat everywhere
                    [3.0, 150.0],  # patch leaves the image
                    [180.0, 180.0]])  # textured, but the guess is 5 px off: not a refinement
    guess = pts + np.array([[0.4, 0.3], [0.4, 0.3], [5.4, 0.3]])
    uv, A, ok = refine_affine(flat, pts, cur, guess, np.tile(np.eye(2), (3, 1, 1)), max_shift=2.0)
    assert not ok.any()
    assert np.array_equal(uv, guess) and np.array_equal(A, np.tile(np.eye(2), (3, 1, 1)))
    uv1, _, ok1 = refine_affine(flat, pts[2:], cur, pts[2:] + np.array([0.4, 0.3]) + 0.5, np.eye(2)[None])
    assert ok1.all() and np.abs(uv1[0] - (pts[2] + [0.4, 0.3])).max() < 0.05
