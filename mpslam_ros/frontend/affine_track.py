"""Affine patch alignment of tracked features against the image where their landmark was created.

Frame-to-frame KLT moves a translation-only window; as the viewpoint changes the window's content
deforms and the feature slides over the surface (measured on rendered sequences: 0.1 px after one
frame, 0.5 px after nine, 1 px after 40, also when re-aligned to the keyframe with translation only).
This refines each KLT result by aligning the feature's *anchor* patch (from its creation keyframe) to
the current image under a 2-D affine warp plus a brightness offset, Gauss-Newton on the patch, seeded
with the KLT position and the warp found in the previous frame. The anchor never changes, so the
error no longer accumulates with track age.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def _bilinear(img, x, y):
    h, w = img.shape
    x0 = int(np.floor(x))
    y0 = int(np.floor(y))
    if x0 < 0 or y0 < 0 or x0 + 1 >= w or y0 + 1 >= h:
        return np.nan
    ax = x - x0
    ay = y - y0
    return ((1.0 - ay) * ((1.0 - ax) * img[y0, x0] + ax * img[y0, x0 + 1])
            + ay * ((1.0 - ax) * img[y0 + 1, x0] + ax * img[y0 + 1, x0 + 1]))


@njit(nogil=True, cache=True)
def _refine(anchor, anchor_uv, cur, gx, gy, uv, A, half, iters, max_shift, min_eig, out_uv, out_A, ok):
    n = uv.shape[0]
    side = 2 * half + 1
    T = np.empty(side * side)
    H = np.empty((7, 7))
    g = np.empty(7)
    Jr = np.empty(7)
    for i in range(n):
        ok[i] = False
        out_uv[i, 0] = uv[i, 0]
        out_uv[i, 1] = uv[i, 1]
        out_A[i] = A[i]
        valid = True
        k = 0
        for dy in range(-half, half + 1):
            for dx in range(-half, half + 1):
                t = _bilinear(anchor, anchor_uv[i, 0] + dx, anchor_uv[i, 1] + dy)
                if not np.isfinite(t):
                    valid = False
                T[k] = t
                k += 1
        if not valid:
            continue
        a11, a12, a21, a22 = A[i, 0, 0], A[i, 0, 1], A[i, 1, 0], A[i, 1, 1]
        tx, ty = uv[i, 0], uv[i, 1]
        bias = 0.0
        converged = False
        for _ in range(iters):
            H[:] = 0.0
            g[:] = 0.0
            k = 0
            inside = True
            for dy in range(-half, half + 1):
                for dx in range(-half, half + 1):
                    x = tx + a11 * dx + a12 * dy
                    y = ty + a21 * dx + a22 * dy
                    v = _bilinear(cur, x, y)
                    if not np.isfinite(v):
                        inside = False
                        break
                    ix = _bilinear(gx, x, y)
                    iy = _bilinear(gy, x, y)
                    e = v + bias - T[k]
                    Jr[0] = ix * dx
                    Jr[1] = ix * dy
                    Jr[2] = iy * dx
                    Jr[3] = iy * dy
                    Jr[4] = ix
                    Jr[5] = iy
                    Jr[6] = 1.0
                    for a in range(7):
                        g[a] += Jr[a] * e
                        for b in range(a, 7):
                            H[a, b] += Jr[a] * Jr[b]
                    k += 1
                if not inside:
                    break
            if not inside:
                break
            # a patch without 2-D texture (flat, or an edge) cannot be aligned: smallest eigenvalue of the
            # translation block, per pixel, in grey levels^2 / px^2
            sxx, sxy, syy = H[4, 4] / k, H[4, 5] / k, H[5, 5] / k
            if 0.5 * (sxx + syy) - np.sqrt(0.25 * (sxx - syy) ** 2 + sxy * sxy) < min_eig:
                break
            for a in range(7):
                for b in range(a):
                    H[a, b] = H[b, a]
                H[a, a] = H[a, a] * (1.0 + 1e-6) + 1e-9
            step = np.linalg.solve(H, -g)
            a11 += step[0]
            a12 += step[1]
            a21 += step[2]
            a22 += step[3]
            tx += step[4]
            ty += step[5]
            bias += step[6]
            if step[4] * step[4] + step[5] * step[5] < 1e-6:
                converged = True
                break
        det = a11 * a22 - a12 * a21
        shift2 = (tx - uv[i, 0]) ** 2 + (ty - uv[i, 1]) ** 2
        if converged and 0.5 < det < 2.0 and shift2 <= max_shift * max_shift:
            ok[i] = True
            out_uv[i, 0] = tx
            out_uv[i, 1] = ty
            out_A[i, 0, 0] = a11
            out_A[i, 0, 1] = a12
            out_A[i, 1, 0] = a21
            out_A[i, 1, 1] = a22


def image_gradients(image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, d/dx, d/dy) as float64 arrays (central differences), for :func:`refine_affine`."""
    img = np.asarray(image, np.float64)
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    gx[:, 1:-1] = 0.5 * (img[:, 2:] - img[:, :-2])
    gy[1:-1, :] = 0.5 * (img[2:, :] - img[:-2, :])
    return img, gx, gy


def refine_affine(anchor: np.ndarray, anchor_uv: np.ndarray, cur: Tuple[np.ndarray, np.ndarray, np.ndarray],
                  uv: np.ndarray, A: np.ndarray, half: int = 7, iters: int = 10,
                  max_shift: float = 2.0, min_eig: float = 1.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align the ``(2 half + 1)^2`` anchor patches at ``anchor_uv`` (in ``anchor``) to the current image.

    ``cur`` is :func:`image_gradients` of the current image; ``uv`` (n,2) the KLT positions, ``A``
    (n,2,2) each feature's previous affine warp (anchor patch offsets -> current offsets). Returns
    ``(uv_refined, A_refined, ok)``; where ``ok`` is False (no convergence in ``iters`` Gauss-Newton
    steps, a degenerate warp, a patch leaving the image, a move of more than ``max_shift`` px from KLT,
    or a patch whose gradient matrix has its smallest eigenvalue below ``min_eig`` grey levels^2 per
    pixel: flat or edge-only) the inputs are returned.
    """
    n = len(uv)
    out_uv = np.empty((n, 2))
    out_A = np.empty((n, 2, 2))
    ok = np.zeros(n, bool)
    if n:
        _refine(np.ascontiguousarray(anchor), np.ascontiguousarray(anchor_uv, np.float64), cur[0], cur[1], cur[2],
                np.ascontiguousarray(uv, np.float64), np.ascontiguousarray(A, np.float64), int(half), int(iters),
                float(max_shift), float(min_eig), out_uv, out_A, ok)
    return out_uv, out_A, ok
