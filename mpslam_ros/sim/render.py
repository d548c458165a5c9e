"""Renderer for the synthetic world: exact pinhole images (and z-depth) of textured axis-aligned faces.

Per frame, each face facing the camera is clipped against the near plane and projected to a convex
polygon. Rows are processed in parallel (``prange``): for each row, every face polygon crossing it
gives an exact pixel interval, in which the ray/plane depth is z-tested; the winning face is then
shaded once per pixel from the texture mip level matching the pixel's footprint on the surface
(trilinear filtering, so no texture aliasing). Pixel centres are at integer coordinates (OpenCV's
convention), i.e. pixel (v, u) looks along ((u - cx)/fx, (v - cy)/fy, 1).

Noise is a counter-based hash of (seed, frame, camera, pixel): deterministic regardless of thread
scheduling, with a read-noise floor plus a signal-dependent (shot-noise-like) part.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from mpslam_ros.sim.world import TEXTURE_SIZE, World

#: Near clipping distance (metres along the optical axis).
ZNEAR = 0.02
_MAX_POLY = 8


@njit(nogil=True, cache=True)
def _setup_faces(faces, R_wc, p_wc, fx, fy, cx, cy, width, height):
    """Cull, clip and project the faces for one camera pose.

    Returns (count, face_index[n], normal_cam[n,3], rhs[n], poly[n,8,2], npoly[n], vrange[n,2]).
    """
    n = faces.shape[0]
    idx = np.empty(n, np.int64)
    normal = np.empty((n, 3))
    rhs = np.empty(n)
    poly = np.empty((n, _MAX_POLY, 2))
    npoly = np.zeros(n, np.int64)
    vrange = np.empty((n, 2), np.int64)
    corners_w = np.empty((4, 3))
    corners_c = np.empty((4, 3))
    clipped = np.empty((_MAX_POLY, 3))
    count = 0
    for f in range(n):
        k = int(faces[f, 0])
        s = faces[f, 1]
        plane = faces[f, 2]
        # Back-face culling: the camera must be on the side the outward normal points to.
        r = s * (plane - p_wc[k])  # n_c . X_c = r for points on the plane; r < 0 when front-facing
        if r >= 0.0:
            continue
        i = (k + 1) % 3
        j = (k + 2) % 3
        a0, a1, b0, b1 = faces[f, 3], faces[f, 4], faces[f, 5], faces[f, 6]
        for c in range(4):
            corners_w[c, k] = plane
            corners_w[c, i] = a0 if (c == 0 or c == 3) else a1
            corners_w[c, j] = b0 if c < 2 else b1
        for c in range(4):
            for row in range(3):
                acc = 0.0
                for col in range(3):
                    acc += R_wc[col, row] * (corners_w[c, col] - p_wc[col])
                corners_c[c, row] = acc
        # Sutherland-Hodgman against z >= ZNEAR.
        m = 0
        for c in range(4):
            P = corners_c[c]
            Q = corners_c[(c + 1) % 4]
            pin = P[2] >= ZNEAR
            qin = Q[2] >= ZNEAR
            if pin:
                clipped[m, 0] = P[0]
                clipped[m, 1] = P[1]
                clipped[m, 2] = P[2]
                m += 1
            if pin != qin:
                t = (ZNEAR - P[2]) / (Q[2] - P[2])
                clipped[m, 0] = P[0] + t * (Q[0] - P[0])
                clipped[m, 1] = P[1] + t * (Q[1] - P[1])
                clipped[m, 2] = ZNEAR
                m += 1
        if m < 3:
            continue
        umin = 1e30
        umax = -1e30
        vmin = 1e30
        vmax = -1e30
        for c in range(m):
            u = fx * clipped[c, 0] / clipped[c, 2] + cx
            v = fy * clipped[c, 1] / clipped[c, 2] + cy
            poly[count, c, 0] = u
            poly[count, c, 1] = v
            umin = min(umin, u)
            umax = max(umax, u)
            vmin = min(vmin, v)
            vmax = max(vmax, v)
        if umax < -0.5 or umin > width - 0.5 or vmax < -0.5 or vmin > height - 0.5:
            continue
        npoly[count] = m
        vrange[count, 0] = max(0, int(math.ceil(vmin - 1e-3)))
        vrange[count, 1] = min(height - 1, int(math.floor(vmax + 1e-3)))
        for row in range(3):
            normal[count, row] = s * R_wc[k, row]  # row k of R_wc = camera-frame image of e_k
        rhs[count] = r
        idx[count] = f
        count += 1
    return count, idx, normal, rhs, poly, npoly, vrange


@njit(nogil=True, cache=True, inline="always")
def _bilinear(texture, offset, level, tu, tv):
    size = TEXTURE_SIZE >> level
    mask = size - 1
    scale = 1.0 / (1 << level)
    x = tu * scale - 0.5
    y = tv * scale - 0.5
    x0 = math.floor(x)
    y0 = math.floor(y)
    ax = x - x0
    ay = y - y0
    ix0 = np.int64(x0) & mask
    iy0 = np.int64(y0) & mask
    ix1 = (ix0 + 1) & mask
    iy1 = (iy0 + 1) & mask
    t00 = np.float32(texture[offset + iy0 * size + ix0])
    t01 = np.float32(texture[offset + iy0 * size + ix1])
    t10 = np.float32(texture[offset + iy1 * size + ix0])
    t11 = np.float32(texture[offset + iy1 * size + ix1])
    top = t00 + ax * (t01 - t00)
    bot = t10 + ax * (t11 - t10)
    return top + ay * (bot - top)


@njit(nogil=True, cache=True, parallel=True)
def _render(faces, texture, mip_offsets, texel_m, R_wc, p_wc, fx, fy, cx, cy, vignetting, radiance, depth, face_id):
    """Rasterise + shade one view into ``radiance`` (float32) and ``depth`` (float32, z in metres)."""
    height, width = radiance.shape
    count, idx, normal, rhs, poly, npoly, vrange = _setup_faces(
        faces, R_wc, p_wc, fx, fy, cx, cy, width, height)
    max_lod = mip_offsets.shape[0] - 1.0 - 1e-6  # keeps l0 + 1 a valid level
    inv_texel = 1.0 / texel_m
    inv_texel2 = inv_texel * inv_texel
    inv_rmax2 = 1.0 / (cx * cx + cy * cy)
    inv_fx = 1.0 / fx
    inv_fy = 1.0 / fy
    # Per visible face: in-plane world axes and the material (gain and bias already shaded).
    axis_i = np.empty(count, np.int64)
    axis_j = np.empty(count, np.int64)
    gain = np.empty(count)
    bias = np.empty(count)
    for a in range(count):
        f = idx[a]
        k = int(faces[f, 0])
        axis_i[a] = (k + 1) % 3
        axis_j[a] = (k + 2) % 3
        gain[a] = faces[f, 9] * faces[f, 11]
        bias[a] = faces[f, 10] * faces[f, 11]
    for v in prange(height):
        zrow = depth[v]
        idrow = face_id[v]
        for u in range(width):
            zrow[u] = np.inf
            idrow[u] = -1
        dy = (v - cy) / fy
        for a in range(count):
            if v < vrange[a, 0] or v > vrange[a, 1]:
                continue
            # Interval of this row inside the convex polygon.
            lo = 1e30
            hi = -1e30
            m = npoly[a]
            for c in range(m):
                u0 = poly[a, c, 0]
                v0 = poly[a, c, 1]
                u1 = poly[a, (c + 1) % m, 0]
                v1 = poly[a, (c + 1) % m, 1]
                if (v0 <= v < v1) or (v1 <= v < v0):
                    uu = u0 + (v - v0) * (u1 - u0) / (v1 - v0)
                    lo = min(lo, uu)
                    hi = max(hi, uu)
            if hi < lo:
                continue
            ua = max(0, int(math.ceil(lo - 1e-3)))
            ub = min(width - 1, int(math.floor(hi + 1e-3)))
            n0 = normal[a, 0] / fx
            base = normal[a, 1] * dy + normal[a, 2] - n0 * cx
            r = rhs[a]
            for u in range(ua, ub + 1):
                den = n0 * u + base
                if den < 0.0:
                    t = r / den
                    if t < zrow[u]:
                        zrow[u] = t
                        idrow[u] = a
        # Shade the row: one texture lookup (trilinear) per pixel on the winning face.
        dv2 = (v - cy) * (v - cy) * inv_rmax2
        for u in range(width):
            a = idrow[u]
            if a < 0:
                radiance[v, u] = 0.0
                zrow[u] = 0.0
                continue
            f = idx[a]
            i = axis_i[a]
            j = axis_j[a]
            t = zrow[u]
            dx = (u - cx) * inv_fx
            n0 = normal[a, 0]
            n1 = normal[a, 1]
            inv_nd = 1.0 / (n0 * dx + n1 * dy + normal[a, 2])
            # Squared length of the hit point's derivative per pixel step, d/du = (t/fx)(e_x - d n_x/(n.d))
            # and d/dv likewise: |e - d c|^2 = 1 - 2 c d_e + c^2 |d|^2.
            d2 = dx * dx + dy * dy + 1.0
            ca = n0 * inv_nd
            cb = n1 * inv_nd
            gu = t * inv_fx
            gv = t * inv_fy
            fu = gu * gu * (1.0 - 2.0 * ca * dx + ca * ca * d2)
            fv = gv * gv * (1.0 - 2.0 * cb * dy + cb * cb * d2)
            lod = 0.5 * math.log2(max(fu, fv) * inv_texel2 + 1e-18)
            lod = min(max(lod, 0.0), max_lod)
            l0 = int(lod)
            w1 = lod - l0
            # World coordinates of the hit point along the face's two in-plane axes.
            xc = t * dx
            yc = t * dy
            wi = R_wc[i, 0] * xc + R_wc[i, 1] * yc + R_wc[i, 2] * t + p_wc[i]
            wj = R_wc[j, 0] * xc + R_wc[j, 1] * yc + R_wc[j, 2] * t + p_wc[j]
            tu = wi * inv_texel + faces[f, 7]
            tv = wj * inv_texel + faces[f, 8]
            tex = _bilinear(texture, mip_offsets[l0], l0, tu, tv)
            if w1 > 0.0:
                tex += w1 * (_bilinear(texture, mip_offsets[l0 + 1], l0 + 1, tu, tv) - tex)
            vign = 1.0 - vignetting * ((u - cx) * (u - cx) * inv_rmax2 + dv2)
            radiance[v, u] = (gain[a] * tex + bias[a]) * vign


@njit(nogil=True, cache=True, inline="always")
def _splitmix(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True, parallel=True)
def _expose(radiance, gain, read_sigma, shot_k, key, out):
    """Apply exposure gain and pixel noise, quantise to uint8 (noise from a per-pixel hash)."""
    height, width = radiance.shape
    m16 = np.uint64(0xFFFF)
    for v in prange(height):
        for u in range(width):
            val = radiance[v, u] * gain
            if read_sigma > 0.0 or shot_k > 0.0:
                hsh = _splitmix(key ^ np.uint64(v * width + u) * np.uint64(0xD6E8FEB86659FD93))
                s = (np.float64(hsh & m16) + np.float64((hsh >> np.uint64(16)) & m16)
                     + np.float64((hsh >> np.uint64(32)) & m16) + np.float64((hsh >> np.uint64(48)) & m16))
                gauss = (s / 65535.0 - 2.0) * 1.7320508075688772  # Irwin-Hall(4), unit variance
                sigma = math.sqrt(read_sigma * read_sigma + shot_k * max(val, 0.0))
                val += gauss * sigma
            val = math.floor(val + 0.5)
            out[v, u] = np.uint8(min(max(val, 0.0), 255.0))


class Renderer:
    """Renders views of a :class:`World` with a pinhole camera (no distortion: see
    :mod:`mpslam_ros.sim.camera_effects` for the lens model applied afterwards).

    ``vignetting``: radial fall-off 1 - v r^2 / r_max^2 baked into the radiance (0.3, the first
    renderer's, by default; 0 when the effects apply it in the distorted raw image instead).

    ``supersample`` = s > 1 renders s x s samples per pixel and averages them (anti-aliased
    geometry edges; depth is averaged too, mixing depths at edges as real depth sensors do), at
    s^2 times the cost.
    """

    def __init__(self, world: World, width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                 supersample: int = 1, vignetting: float = 0.3):
        self.world = world
        self.vignetting = float(vignetting)
        self.width, self.height = int(width), int(height)
        self.fx, self.fy, self.cx, self.cy = float(fx), float(fy), float(cx), float(cy)
        self.supersample = s = int(supersample)
        if s < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        self._faces = np.ascontiguousarray(world.faces)
        # Sample grid: pixel (u, v) covers [u - 1/2, u + 1/2]; its s x s samples sit at the centres
        # of the sub-pixels, i.e. a camera with s times the focal length and cx' = s cx + (s - 1) / 2.
        self._hi = (self.height * s, self.width * s, self.fx * s, self.fy * s,
                    self.cx * s + (s - 1) / 2.0, self.cy * s + (s - 1) / 2.0)
        self._radiance = np.empty((self._hi[0], self._hi[1]), np.float32)
        self._depth = np.empty((self._hi[0], self._hi[1]), np.float32)
        self._face_id = np.empty((self._hi[0], self._hi[1]), np.int32)

    def radiance(self, T_world_cam: np.ndarray, faces: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free float32 image and z-depth (metres) of the view from ``T_world_cam`` (optical).

        ``faces``: the scene's faces at this instant (moving objects, changed light) instead of the
        world's static ones. The returned arrays may be internal buffers, overwritten by the next call."""
        T = np.asarray(T_world_cam, dtype=np.float64)
        _, _, fx, fy, cx, cy = self._hi
        _render(self._faces if faces is None else np.ascontiguousarray(faces), self.world.texture, self.world.mip_offsets, self.world.texel_m,
                np.ascontiguousarray(T[:3, :3]), np.ascontiguousarray(T[:3, 3]),
                fx, fy, cx, cy, self.vignetting, self._radiance, self._depth, self._face_id)
        s = self.supersample
        if s == 1:
            return self._radiance, self._depth
        shape = (self.height, s, self.width, s)
        return (self._radiance.reshape(shape).mean(axis=(1, 3), dtype=np.float32),
                self._depth.reshape(shape).mean(axis=(1, 3), dtype=np.float32))

    def render(self, T_world_cam: np.ndarray, noise_key: int = 0, gain: float = 1.0,
               read_sigma: float = 1.5, shot_k: float = 0.02, blur_poses: list | None = None,
               depth_out: np.ndarray | None = None) -> np.ndarray:
        """mono8 image of the view; ``noise_key`` seeds the pixel noise (0 noise sigmas = exact).

        ``blur_poses``: extra camera poses within the exposure, averaged with the main one (motion
        blur). ``depth_out``: float32[h, w] receiving the z-depth of the main pose.
        """
        rad, depth = self.radiance(T_world_cam)
        if depth_out is not None:
            depth_out[...] = depth
        if blur_poses:
            acc = rad.astype(np.float32)
            for T in blur_poses:
                acc += self.radiance(T)[0]
            rad = acc / (1 + len(blur_poses))
        return expose(rad, gain, read_sigma, shot_k, noise_key)


def expose(radiance: np.ndarray, gain: float, read_sigma: float, shot_k: float, noise_key: int) -> np.ndarray:
    """mono8 image of a float32 radiance image: gain, shot + read noise (hash of ``noise_key`` and the
    pixel), rounding and clipping to 8 bits."""
    out = np.empty(radiance.shape, np.uint8)
    _expose(np.ascontiguousarray(radiance, dtype=np.float32), float(gain), float(read_sigma), float(shot_k),
            np.uint64(int(noise_key) & (2**64 - 1)), out)
    return out


def warmup() -> None:
    """Compile the render kernels (cached on disk afterwards) on a tiny world."""
    from mpslam_ros.sim.world import build_house

    world = build_house(0, texture=np.full((TEXTURE_SIZE, TEXTURE_SIZE), 128, np.uint8))
    r = Renderer(world, 32, 24, 20.0, 20.0, 15.5, 11.5)
    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    T[:3, 3] = [2.0, 2.0, 0.5]
    r.render(T, noise_key=1)
