"""Camera-effect profiles: each effect calibrated, ground truth still registered to the (raw,
distorted, blurred) images after the pipeline's rectifier, clean unchanged, the office world."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpslam_ros.frontend.rectify import Rectifier
from mpslam_ros.sim.camera_effects import DistortionMap, distort_normalized, undistort_normalized
from mpslam_ros.sim.profiles import PROFILES
from mpslam_ros.sim.render import Renderer, expose
from mpslam_ros.sim.sequences import SimOptions, SyntheticSequence, cached_world
from mpslam_ros.sim.trajectories import _poses

QUIET = dict(read_noise=0.0, shot_noise=0.0, vignetting=0.0, exposure_variation=0.0, flicker=0.0,
             right_gain=1.0, light_change=0.0, moving_objects=0, blur_px_per_sample=0.0)


@pytest.fixture(scope="module")
def house():
    return cached_world(0, None)


def _ncc(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


def test_clean_profile_is_the_first_renderer(house):
    assert SimOptions.for_profile("clean").key() == SimOptions().key()
    assert SimOptions.for_profile("clean").legacy and not SimOptions.for_profile("realistic").legacy
    a = SyntheticSequence("household", 3.0, 0, world=house).render_frame(20)
    b = SyntheticSequence("household", 3.0, 0, world=house, options=SimOptions.for_profile("clean")).render_frame(20)
    assert np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right)
    keys = {SyntheticSequence("household", 3.0, 0, world=house, options=SimOptions.for_profile(p)).cache_key()
            for p in PROFILES}
    assert len(keys) == 3 and any("realistic" in k for k in keys)  # profiles never share cached frames
    with pytest.raises(ValueError, match="unknown camera profile 'foggy'"):
        SimOptions.for_profile("foggy")


@pytest.mark.parametrize("profile", ["realistic", "harsh"])
def test_noise_statistics_match_shot_plus_read_model_and_quantise_to_8_bits(profile):
    o = SimOptions.for_profile(profile)
    for level in (20.0, 100.0, 200.0):
        rad = np.full((240, 320), level, np.float32)
        img = expose(rad, 1.0, o.read_noise, o.shot_noise, 12345)
        assert img.dtype == np.uint8
        expected = np.sqrt(o.read_noise ** 2 + o.shot_noise * level + 1 / 12)  # + quantisation
        assert abs(img.std() / expected - 1) < 0.05, (level, img.std(), expected)
        assert abs(img.mean() - level) < 0.1
    # noise is independent between pixels and between keys
    a = expose(np.full((100, 100), 100, np.float32), 1.0, o.read_noise, o.shot_noise, 1).astype(float) - 100
    b = expose(np.full((100, 100), 100, np.float32), 1.0, o.read_noise, o.shot_noise, 2).astype(float) - 100
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(a[:, 1:].ravel(), a[:, :-1].ravel())[0, 1]) < 0.05


def test_motion_blur_length_is_yaw_rate_times_exposure_times_focal_length(house):
    """Pure yaw at 1 rad/s, 20 ms exposure: the blurred frame is the sharp frame smeared by a
    horizontal box of 1 x 0.02 x 380 = 7.6 px, centred on the frame's pose (stamp = mid-exposure)."""
    omega, exposure = 1.0, 0.02
    opts = SimOptions(**{**QUIET, "exposure_time_s": exposure, "blur_px_per_sample": 0.5, "max_blur_samples": 31,
                         "profile": "test"})
    seq = SyntheticSequence("household", 3.0, 0, world=house, options=opts)

    def spin(t):
        t = np.atleast_1d(t)
        return _poses(np.tile([2.0, 2.0, 0.0], (len(t), 1)), omega * t, 0 * t, 0 * t)

    seq.pose_at = spin
    seq.poses = spin(seq.times_s)
    blurred = seq.render_frame(20).left.astype(np.float32)
    sharp = SyntheticSequence("household", 3.0, 0, world=house, options=SimOptions(**{**QUIET, "profile": "test2"}))
    sharp.pose_at, sharp.poses = spin, seq.poses
    a = sharp.render_frame(20).left.astype(np.float32)
    centre = (slice(200, 280), slice(240, 400))  # rotation about the optical y axis: horizontal motion here
    errors = {}
    for length in np.arange(3.0, 13.0, 0.5):
        k = np.zeros((1, 41), np.float32)
        half = length / 2
        x = np.arange(41) - 20
        k[0] = np.clip(half + 0.5 - np.abs(x), 0, 1)  # box of the given (fractional) length
        k /= k.sum()
        errors[length] = np.abs(cv2.filter2D(a, -1, k)[centre] - blurred[centre]).mean()
    best = min(errors, key=errors.get)
    expected = omega * exposure * seq.rig.left.fx
    assert abs(best - expected) <= 1.0, (best, expected, errors[best])
    assert errors[best] < 0.5 * errors[3.0]
    (dx, dy), _ = cv2.phaseCorrelate(a[centre].astype(np.float64), blurred[centre].astype(np.float64))
    # centred: no lag behind the ground-truth pose (stamped at the exposure's end it would be 3.8 px)
    assert abs(dx) < 1.0 and abs(dy) < 0.3


def test_distortion_model_round_trips_and_matches_opencv():
    dist = PROFILES["harsh"]["distortion"]
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, (500, 2))
    xd = distort_normalized(x, dist)
    assert np.abs(undistort_normalized(xd, dist) - x).max() < 1e-9
    K = np.array([[380.0, 0, 319.5], [0, 380.0, 239.5], [0, 0, 1]])
    proj, _ = cv2.projectPoints(np.column_stack([x, np.ones(len(x))]), np.zeros(3), np.zeros(3), K, np.array(dist))
    assert np.abs(proj.reshape(-1, 2) - (xd * 380.0 + [319.5, 239.5])).max() < 1e-6
    m = DistortionMap(640, 480, 380.0, 380.0, 319.5, 239.5, dist)
    assert m.pinhole_size[0] > 700 and m.pinhole_size[1] > 540  # barrel: corners see wider than the pinhole


@pytest.fixture(scope="module")
def distorted(house):
    """Realistic lens (raw images, distortion in the rig), blur and gain mismatch, no noise."""
    opts = SimOptions.for_profile("realistic", read_noise=0.0, shot_noise=0.0, vignetting=0.0,
                                  light_change=0.0, moving_objects=0)
    return SyntheticSequence("household", 20.0, 0, world=house, options=opts)


def test_rectifier_undoes_the_rendered_distortion(distorted):
    """Raw distorted image -> the pipeline's Rectifier (from the rig, i.e. CameraInfo's D) == a pinhole
    render of the rectified camera at the same pose: the lens model round-trips through rectification."""
    seq = distorted
    assert not seq.rig.rectified and seq.rig.left.is_distorted
    rect = Rectifier(seq.rig)
    cam = rect.camera
    i = 120
    f = seq.render_frame(i)
    left, right, _ = rect.rectify(f.left, f.right)
    pin = Renderer(seq.world, cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, vignetting=0.0)
    T_wc = seq.poses[i] @ rect.T_body_cam
    ideal, _ = pin.radiance(T_wc)
    ideal = ideal * seq._gain(float(seq.times_s[i]))
    inner = (slice(20, cam.height - 20), slice(20, cam.width - 20))
    a, b = left[inner].astype(np.float64), ideal[inner].astype(np.float64)
    (dx, dy), resp = cv2.phaseCorrelate(a, b)
    assert abs(dx) < 0.15 and abs(dy) < 0.15, (dx, dy)
    assert _ncc(a, b) > 0.93
    # the right image rectifies onto the same rows (stereo geometry intact)
    T_wr = T_wc.copy()
    T_wr[:3, 3] += T_wc[:3, 0] * cam.baseline
    ideal_r, _ = pin.radiance(T_wr)
    (dx, dy), _ = cv2.phaseCorrelate(right[inner].astype(np.float64), ideal_r[inner].astype(np.float64))
    assert abs(dy) < 0.15 and abs(dx) < 0.15


def test_ground_truth_registers_to_distorted_blurred_images_after_rectification(distorted):
    """The texture-registration check of test_sim_render on raw (distorted, blurred, gain-mismatched)
    images through the rectifier: world points land where ground truth + rectified camera put them,
    in the right image and 10 frames later."""
    assert_registered(distorted, 40, 50)


def assert_registered(seq: SyntheticSequence, i: int, j: int, n_points: int = 6000, min_within: float = 0.75) -> None:
    """World points on the faces land where ground truth and the rectified camera put them in the
    rectified left image of frame ``i``, its right image and the left image of frame ``j``: median
    offset 0, and at least ``min_within`` of the patches found within 1.5 px."""
    from test_sim_render import _best_offset, _face_points, _ncc as ncc, _patch

    rect = Rectifier(seq.rig)
    cam = rect.camera
    pin = Renderer(seq.world, cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, vignetting=0.0)
    rng = np.random.default_rng(2)
    pts = _face_points(seq.world, rng, n_points)
    li, ri, _ = rect.rectify(seq.render_frame(i).left, seq.render_frame(i).right)
    lj, _, _ = rect.rectify(seq.render_frame(j).left, None)

    def project(T_wc, margin=14):
        _, depth = pin.radiance(T_wc)
        depth = depth.copy()
        T_cw = np.linalg.inv(T_wc)
        pc = pts @ T_cw[:3, :3].T + T_cw[:3, 3]
        z = np.where(pc[:, 2] > 0.1, pc[:, 2], np.nan)
        u, v = cam.fx * pc[:, 0] / z + cam.cx, cam.fy * pc[:, 1] / z + cam.cy
        ok = (u > margin) & (u < cam.width - margin - 1) & (v > margin) & (v < cam.height - margin - 1)
        vis = np.zeros(len(pts), bool)
        for q in np.nonzero(ok)[0]:
            d = depth[int(round(v[q])), int(round(u[q]))]
            vis[q] = abs(d - z[q]) < 0.01 * z[q] and 0.4 < z[q] < 6.0
        return u, v, vis

    T_li = seq.poses[i] @ rect.T_body_cam
    T_ri = T_li.copy()
    T_ri[:3, 3] += T_li[:3, 0] * cam.baseline
    T_lj = seq.poses[j] @ rect.T_body_cam
    (ul, vl, a), (ur, vr, b), (uj, vj, c) = project(T_li), project(T_ri), project(T_lj)
    good = np.nonzero(a & b & c)[0][:120]
    assert len(good) >= 30
    off_r, off_j, nccs = [], [], []
    for q in good:
        p = _patch(li, ul[q], vl[q])
        nccs.append(ncc(p, _patch(ri, ur[q], vr[q])))
        off_r.append(_best_offset(p, ri, ur[q], vr[q]))
        off_j.append(_best_offset(p, lj, uj[q], vj[q]))
    assert np.median(nccs) > 0.85
    for offsets in (np.array(off_r), np.array(off_j)):
        assert np.all(np.abs(np.median(offsets, axis=0)) <= 0.5), np.median(offsets, axis=0)
        assert np.mean(np.linalg.norm(offsets, axis=1) <= 1.5) > min_within


def test_exposure_gain_mismatch_flicker_light_changes_and_movers_are_visible(house):
    o = SimOptions.for_profile("realistic", read_noise=0.0, shot_noise=0.0, distortion=(0.0,) * 5,
                               blur_px_per_sample=0.0)
    seq = SyntheticSequence("household", 60.0, 1, world=house, options=o)
    f = seq.render_frame(30)
    assert abs(f.right.mean() / f.left.mean() - o.right_gain) < 0.03  # both see the same (mostly) scene
    gains = np.array([seq._gain(t) for t in seq.times_s])
    assert np.ptp(gains) > 0.2 and np.abs(np.diff(gains)).max() > 0.005  # slow swings + frame-to-frame flicker
    # light levels switch every 20 s: the same place under other light
    a = seq.faces_at(5.0)[: len(house.faces), 9]
    b = seq.faces_at(25.0)[: len(house.faces), 9]
    assert np.mean(np.abs(a / b - 1) > 0.02) > 0.5
    # movers: boxes that change place between instants, and that occlude (depth differs somewhere)
    assert len(seq.faces_at(0.0)) == len(house.faces) + 6 * o.moving_objects
    m0, m1 = seq.faces_at(0.0)[len(house.faces):], seq.faces_at(1.0)[len(house.faces):]
    assert np.abs(m0[:, 2] - m1[:, 2]).max() > 0.3


def test_office_world_trajectory_and_look_alike_corridor():
    world = cached_world(0, None, "office")
    seq = SyntheticSequence("office", 220.0, 1, world=world)
    P = seq.poses
    pos = P[:, :3, 3]
    length = np.linalg.norm(np.diff(pos, axis=0), axis=1).sum()
    assert length > 100 and world.free_of_obstacles(pos[:, :2], 0.5).all()
    # revisits: a position within 0.2 m of one at least 60 s earlier, many times
    revisits = sum(bool(np.any(np.linalg.norm(pos[: max(0, i - 1200)] - pos[i], axis=1) < 0.2))
                   for i in range(0, len(P), 50))
    assert revisits >= 15
    # the north corridor repeats every room width: views 4 m apart look the same (bait for false loops)
    x0, y0, x1, y1 = world.layout.ring
    r = Renderer(world, 320, 240, 190.0, 190.0, 159.5, 119.5)
    R_body_cam = seq.rig.T_body_left[:3, :3]

    def view(x, yaw):
        T = _poses(np.array([[x, y1, 0.0]]), np.array([yaw]), np.zeros(1), np.zeros(1))[0] @ seq.rig.T_body_left
        return r.radiance(T)[0].copy()

    north, south = view(8.0, np.pi / 2), view(12.0, np.pi / 2)  # between doors (rooms differ)
    assert _ncc(north, south) > 0.97  # facing the corridor's north wall: identical panels
    other = view(8.0, -np.pi / 2), view(12.0, -np.pi / 2)
    assert _ncc(*other) > 0.97  # the inner block's north face repeats too
    assert R_body_cam is not None
    # elsewhere no repetition: the south corridor's wall at the same offsets differs
    T = lambda x: _poses(np.array([[x, y0, 0.0]]), np.array([-np.pi / 2]), np.zeros(1), np.zeros(1))[0]  # noqa: E731
    a, b = r.radiance(T(8.0) @ seq.rig.T_body_left)[0].copy(), r.radiance(T(12.0) @ seq.rig.T_body_left)[0].copy()
    assert _ncc(a, b) < 0.5


@pytest.mark.parametrize("profile", ["realistic", "harsh", "realistic+textureless+dark"])
def test_short_run_of_each_profile_tracks(profile, tmp_path):
    """A 1.5 s household run through the whole pipeline (raw distorted frames rectified on the way in)."""
    from mpslam_ros.cli.run import evaluate, open_synthetic, run_pipeline

    source = open_synthetic("household:1.5", 3, profile, progress=False)
    assert not source.rig.rectified
    run = run_pipeline(source, loop_closure=False, progress=False)
    m = evaluate(run, run.poses_vo)
    assert m["frames_with_pose_percent"] == 100.0
    assert m["ate_rmse_m"] < 0.02, m


def test_textureless_walls_and_dark_zones_are_calibrated_and_keep_the_geometry(house):
    from mpslam_ros.sim.world import (DARK_ZONE_LIGHT, LIGHT_CELL_M, PLAIN_WALL_CONTRAST, face_cells, is_wall_face,
                                      with_scene_effects)

    o = SimOptions.for_profile("clean+textureless+dark")
    assert (o.textureless_walls, o.dark_zones) == (0.4, 0.3) and o.profile == "clean+textureless+dark"
    assert not o.legacy  # rendered through the effects path, cached under its own key
    assert o.key() != SimOptions.for_profile("clean").key() != SimOptions.for_profile("clean+dark").key()
    plain_world = with_scene_effects(house, textureless_walls=0.4, seed=1)
    dark_world = with_scene_effects(house, dark_zones=0.3, seed=1)
    both = with_scene_effects(house, 0.4, 0.3, seed=1)
    # textureless: a share of the walls (only walls) lose their contrast, keep their brightness
    g0, g1 = house.faces[:, 9], plain_world.faces[:, 9]
    plain = g1 < g0 * 0.5
    walls = is_wall_face(house.faces)
    assert not (plain & ~walls).any() and 0.25 < plain[walls].mean() < 0.55
    assert np.allclose(g1[plain], g0[plain] * PLAIN_WALL_CONTRAST)
    mean_texel = house.mip_level(0).mean()
    assert np.allclose((g1 * mean_texel + plain_world.faces[:, 10])[plain], (g0 * mean_texel + house.faces[:, 10])[plain])
    # dark zones: whole 4 m light cells at DARK_ZONE_LIGHT, the others untouched; the same cells with both effects
    light = dark_world.faces[:, 9] / g0
    assert np.allclose(light[light < 0.5], DARK_ZONE_LIGHT) and np.allclose(light[light >= 0.5], 1.0)
    cells = face_cells(house.faces)
    dark_cells = {tuple(c) for c in cells[light < 0.5]}
    assert dark_cells and dark_cells.isdisjoint({tuple(c) for c in cells[light >= 0.5]})
    assert np.allclose(both.faces[:, 9], g1 * light)
    # rendered: plain walls are flat where they were textured, dark zones dim, depth (ground truth) identical
    seq = SyntheticSequence("household", 60.0, 1, world=house)
    r0, rp, rd = (Renderer(w, 640, 480, 380.0, 380.0, 319.5, 239.5) for w in (house, plain_world, dark_world))
    changed_plain = changed_dark = 0
    for i in range(0, 1200, 60):
        T = seq.camera_poses(seq.poses[i])[0]
        a, z0 = (x.copy() for x in r0.radiance(T))
        p, zp = (x.copy() for x in rp.radiance(T))
        d, zd = (x.copy() for x in rd.radiance(T))
        assert np.array_equal(z0, zp) and np.array_equal(z0, zd)
        m = cv2.erode((np.abs(p - a) > 1.0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0  # face interiors
        if m.sum() > 5000:
            changed_plain += 1
            grad = lambda img: np.hypot(*np.gradient(img.astype(np.float64)))[m].mean()  # noqa: E731
            # flat (no corners) and about as bright (a face samples a patch whose mean is not the texture's)
            assert grad(p) < 0.1 * grad(a) and abs(p[m].mean() / a[m].mean() - 1) < 0.2
        m = np.abs(d - a) > 1.0
        if m.sum() > 5000:
            changed_dark += 1
            assert abs(np.median(d[m] / a[m]) - DARK_ZONE_LIGHT) < 0.02
    assert changed_plain >= 3 and changed_dark >= 3  # the household run does meet both
    # people walking through a dark zone are as dark as it (a lit person in a dark room would be bait)
    walk = SyntheticSequence("household", 60.0, 1, world=house, options=SimOptions.for_profile("realistic+dark"))
    n_static = len(walk.world.faces)
    in_dark = []
    for t in np.arange(0.0, 60.0, 0.5):
        movers = walk.faces_at(t)[n_static:]
        for m, mover in enumerate(walk._movers):
            cell = np.floor(mover.centre(t) / LIGHT_CELL_M).astype(np.int64)
            dark = bool((walk.world.dark_cells == cell).all(axis=1).any())
            ratio = movers[6 * m:6 * (m + 1), 9] / walk._mover_faces[6 * m:6 * (m + 1), 9]
            assert np.allclose(ratio, DARK_ZONE_LIGHT if dark else 1.0)
            in_dark.append(dark)
    assert any(in_dark) and not all(in_dark)
    with pytest.raises(ValueError, match="unknown scene effect 'foggy'"):
        SimOptions.for_profile("realistic+foggy")
    import argparse

    from mpslam_ros.sim.profiles import profile_spec
    with pytest.raises(argparse.ArgumentTypeError, match="unknown camera profile 'sunny'"):
        profile_spec("sunny+dark")


def test_people_give_way_to_the_camera_and_still_cross_the_view():
    """Walking their segments blind, people walk through the robot (or the person holding the camera)
    and fill the whole image from 0.1 m; people give way: in the realistic profile they keep 0.8 m,
    in the harsh one they brush past at 0.45 m. They still walk through the view close enough to
    cover much of it."""
    def closest(options):
        seq = SyntheticSequence("household", 60.0, 8, options)
        T_wl = seq.poses @ seq.rig.T_body_left
        near, in_view = [], 0
        for i, t in enumerate(seq.times_s):
            d = [np.linalg.norm(m.centre(t) - T_wl[i, :2, 3]) for m in seq._movers]
            near.append(min(d))
            for m in seq._movers:  # a person's centre (at 1 m height) in front of the camera, within 1.5 m
                p = np.linalg.inv(T_wl[i]) @ np.array([*m.centre(t), 1.0, 1.0])
                in_view += int(0 < p[2] < 1.5 and abs(p[0]) < p[2] * 320 / 380)
        return np.array(near), in_view

    blind, _ = closest(SimOptions.for_profile("realistic", mover_clearance_m=0.0))
    assert blind.min() < 0.1 and (blind < 0.5).sum() > 50
    for profile, clearance in (("realistic", 0.8), ("harsh", 0.45)):
        options = SimOptions.for_profile(profile)
        assert options.mover_clearance_m == clearance
        near, in_view = closest(options)
        assert near.min() > clearance - 0.01, profile  # this run has room to step aside everywhere
        assert in_view > 20, profile
