"""The renderer against the world geometry: known 3D points land where their texture is."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpslam_ros.geometry.camera import project_points_stereo
from mpslam_ros.sim.sequences import SyntheticSequence, cached_world


@pytest.fixture(scope="module")
def seq():
    cache = None
    return SyntheticSequence("household", 20.0, 0, world=cached_world(0, cache))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


def _patch(img, u, v, r=4):
    ui, vi = int(round(u)), int(round(v))
    return img[vi - r: vi + r + 1, ui - r: ui + r + 1].astype(np.float64)


def _best_offset(patch, img, u, v, search=8):
    """(du, dv) of the best NCC match of ``patch`` around (u, v) in ``img``."""
    best, arg = -2.0, (99, 99)
    for dv in range(-search, search + 1):
        for du in range(-search, search + 1):
            cand = _patch(img, u + du, v + dv)
            if cand.shape != patch.shape:
                continue
            score = _ncc(patch, cand)
            if score > best:
                best, arg = score, (du, dv)
    return arg


def _face_points(world, rng, n):
    """Random points on the surfaces of walls and furniture (the faces' rectangles)."""
    faces = world.faces[np.isin(world.faces[:, 0], [0, 1])]  # vertical faces
    f = faces[rng.integers(0, len(faces), n)]
    pts = np.empty((n, 3))
    for q in range(n):
        k = int(f[q, 0])
        i, j = (k + 1) % 3, (k + 2) % 3
        pts[q, k] = f[q, 2]
        pts[q, i] = rng.uniform(f[q, 3], f[q, 4])
        pts[q, j] = rng.uniform(f[q, 5], f[q, 6])
    return pts


def _visible(seq, T_world_cam, pts, margin=14):
    """Pixel coordinates of the points that the camera sees unoccluded, and their indices."""
    r = seq.renderer
    _, depth = r.radiance(T_world_cam)
    depth = depth.copy()
    T_cw = np.linalg.inv(T_world_cam)
    pc = pts @ T_cw[:3, :3].T + T_cw[:3, 3]
    c = seq.rig.left
    uvr, _, ok = project_points_stereo(pc, c.fx, c.fy, c.cx, c.cy, 0.0)
    u, v = uvr[:, 0], uvr[:, 1]
    inside = ok & (u > margin) & (u < c.width - margin - 1) & (v > margin) & (v < c.height - margin - 1)
    vis = np.zeros(len(pts), bool)
    for q in np.nonzero(inside)[0]:
        d = depth[int(round(v[q])), int(round(u[q]))]
        vis[q] = abs(d - pc[q, 2]) < 0.01 * pc[q, 2] and 0.4 < pc[q, 2] < 6.0
    return u, v, pc[:, 2], vis


def test_depth_map_matches_geometry(seq):
    """Depth rendered at the projection of a known surface point equals the point's depth."""
    rng = np.random.default_rng(1)
    pts = _face_points(seq.world, rng, 4000)
    T_wl, _ = seq.camera_poses(seq.poses[0])
    u, v, z, vis = _visible(seq, T_wl, pts)
    assert vis.sum() > 50
    _, depth = seq.renderer.radiance(T_wl)
    # Bilinear-free check at exact pixel centres: re-intersect the ray through the pixel centre.
    zs = np.array([depth[int(round(v[q])), int(round(u[q]))] for q in np.nonzero(vis)[0]])
    assert np.median(np.abs(zs - z[vis]) / z[vis]) < 0.005


def test_known_points_show_the_same_texture_in_left_right_and_later_frames(seq):
    """A world point's surrounding texture patch appears where the ground truth poses, the
    extrinsics and the intrinsics project it: in the right image and in a frame 10 later."""
    rng = np.random.default_rng(2)
    pts = _face_points(seq.world, rng, 6000)
    i, j = 40, 50
    fi, fj = seq.render_frame(i), seq.render_frame(j)
    T_li, T_ri = seq.camera_poses(seq.poses[i])
    T_lj, _ = seq.camera_poses(seq.poses[j])
    ul, vl, _, vis_l = _visible(seq, T_li, pts)
    ur, vr, _, vis_r = _visible(seq, T_ri, pts)
    uj, vj, _, vis_j = _visible(seq, T_lj, pts)
    good = vis_l & vis_r & vis_j
    assert good.sum() >= 30, good.sum()
    offsets_right, offsets_later, ncc_right = [], [], []
    for q in np.nonzero(good)[0][:150]:
        a = _patch(fi.left, ul[q], vl[q])
        ncc_right.append(_ncc(a, _patch(fi.right, ur[q], vr[q])))
        offsets_right.append(_best_offset(a, fi.right, ur[q], vr[q]))
        offsets_later.append(_best_offset(a, fj.left, uj[q], vj[q]))
    assert np.median(ncc_right) > 0.9
    # The best-matching position (searched +-8 px) is where the geometry projects the point
    # (offsets are whole pixels: patch centres are rounded, hence the 1.5 px tolerance).
    for offsets in (np.array(offsets_right), np.array(offsets_later)):
        assert np.all(np.abs(np.median(offsets, axis=0)) <= 0.5), np.median(offsets, axis=0)
        assert np.mean(np.linalg.norm(offsets, axis=1) <= 1.5) > 0.8
    # Sensitivity control: a pose 3 cm off sideways (body y) moves the match by several pixels.
    P = seq.poses[j].copy()
    P[:3, 3] += 0.03 * P[:3, 1]
    T_bad, _ = seq.camera_poses(P)
    ub, vb, _, _ = _visible(seq, T_bad, pts)
    bad = [_best_offset(_patch(fi.left, ul[q], vl[q]), fj.left, ub[q], vb[q]) for q in np.nonzero(good)[0][:60]]
    assert abs(np.median(np.array(bad)[:, 0])) >= 2
    # Rectified stereo: same row, disparity = fx * b / z > 0.
    assert np.all(np.abs(vl[good] - vr[good]) < 1e-6)
    assert np.all(ul[good] > ur[good])


def test_noise_is_deterministic_and_has_the_configured_level(seq):
    T_wl, _ = seq.camera_poses(seq.poses[5])
    r = seq.renderer
    a = r.render(T_wl, noise_key=7)
    b = r.render(T_wl, noise_key=7)
    c = r.render(T_wl, noise_key=8)
    clean = r.render(T_wl, noise_key=7, read_sigma=0.0, shot_k=0.0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    diff = a.astype(np.float64) - clean
    # read 1.5 + shot 0.02 * ~100 grey -> sigma ~2 (plus quantisation)
    assert 1.3 < diff.std() < 3.5
    assert abs(diff.mean()) < 0.2


def test_mip_levels_stay_registered_to_the_texture():
    """A sinusoid sampled at every mip level keeps its phase (each level centred on its texels)."""
    from mpslam_ros.sim.render import _bilinear
    from mpslam_ros.sim.world import TEXTURE_SIZE, build_mip_pyramid

    period = 512.0
    x = np.arange(TEXTURE_SIZE)
    tex = np.tile(np.round(128 + 100 * np.sin(2 * np.pi * (x + 0.5) / period)).astype(np.uint8), (TEXTURE_SIZE, 1))
    pyramid, offsets = build_mip_pyramid(tex)
    tu = np.linspace(0, 2048, 3001)
    for level in range(0, 6):
        vals = np.array([_bilinear(pyramid, offsets[level], level, u, 100.0) for u in tu]) - 128
        # least-squares phase of the sampled sinusoid, in texels of level 0
        c, s = np.cos(2 * np.pi * tu / period), np.sin(2 * np.pi * tu / period)
        a, b = np.linalg.lstsq(np.column_stack([s, c]), vals, rcond=None)[0]
        shift = np.arctan2(b, a) * period / (2 * np.pi)
        assert abs(shift) < 0.05 * 2 ** level, (level, shift)  # pyrDown-style: (2^level - 1) / 2


def test_supersampling_antialiases_without_shifting_the_image():
    from mpslam_ros.sim.sequences import SimOptions

    world = cached_world(0, None)
    clean = dict(read_noise=0.0, shot_noise=0.0)
    a = SyntheticSequence("household", 20.0, 0, world=world, options=SimOptions(**clean)).render_frame(300).left
    b = SyntheticSequence("household", 20.0, 0, world=world,
                          options=SimOptions(supersample=2, **clean)).render_frame(300).left
    (dx, dy), response = cv2.phaseCorrelate(a.astype(np.float64), b.astype(np.float64))
    assert response > 0.9 and abs(dx) < 0.05 and abs(dy) < 0.05
    assert 0.5 < np.abs(a.astype(int) - b).mean() < 5  # different (smoother) but the same picture
