"""Synthetic sequences: trajectories (smooth, loops, clearance), determinism, cache, trackable texture."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from mpslam_ros.sim.sequences import SimOptions, SyntheticSequence, cached_world, load_or_generate


@pytest.fixture(scope="module")
def world():
    return cached_world(0, None)


def _yaw(poses):
    return np.unwrap(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))


def test_household_trajectory_is_smooth_clear_of_obstacles_and_revisits_places(world):
    seq = SyntheticSequence("household", 120.0, 0, world=world)
    P = seq.poses
    pos = P[:, :3, 3]
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) * 20.0
    assert speed.max() < 0.45 and np.median(speed) > 0.3
    yaw_rate = np.abs(np.diff(_yaw(P))) * 20.0
    assert yaw_rate.max() < 0.6  # rad/s: about 1.6 degrees per frame at 20 Hz
    # small pitch/roll, base on the floor, camera 0.5 m above it
    roll = np.degrees(np.arctan2(P[:, 2, 1], P[:, 2, 2]))
    pitch = np.degrees(np.arcsin(-P[:, 2, 0]))
    assert 0.1 < np.abs(roll).max() < 2.0 and 0.1 < np.abs(pitch).max() < 2.0
    cam = (P @ seq.rig.T_body_left)[:, :3, 3]
    assert np.all(np.abs(cam[:, 2] - 0.5) < 0.03)
    assert world.free_of_obstacles(pos[:, :2], 0.3).all()
    # Revisits: a pose at least 20 s later within 0.2 m and 10 degrees of an earlier one.
    yaw = _yaw(P)
    revisits = 0
    for i in range(0, len(P) - 400, 20):
        later = np.arange(i + 400, len(P))
        d = np.linalg.norm(pos[later] - pos[i], axis=1)
        dyaw = np.abs((yaw[later] - yaw[i] + np.pi) % (2 * np.pi) - np.pi)
        revisits += bool(np.any((d < 0.2) & (dyaw < np.radians(10))))
    assert revisits >= 5


def test_handheld_trajectory_moves_in_six_dof(world):
    seq = SyntheticSequence("handheld", 40.0, 3, world=world)
    P = seq.poses
    roll = np.degrees(np.arctan2(P[:, 2, 1], P[:, 2, 2]))
    pitch = np.degrees(np.arcsin(-P[:, 2, 0]))
    assert np.ptp(roll) > 10 and np.ptp(pitch) > 15 and np.ptp(_yaw(P)) > np.radians(90)
    assert np.ptp(P[:, 2, 3]) > 0.1 and np.ptp(P[:, 0, 3]) > 3.0  # walks from room A into room B
    assert world.free_of_obstacles(P[:, :2, 3], 0.15).all()


def test_generation_is_deterministic_cached_and_seed_dependent(tmp_path):
    t0 = time.perf_counter()
    a = load_or_generate("household", 1.0, seed=4, cache_dir=tmp_path, progress=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = load_or_generate("household", 1.0, seed=4, cache_dir=tmp_path, progress=False)
    second = time.perf_counter() - t0
    assert len(a) == 20 and second < first
    fa, fb = a[7], b[7]
    assert np.array_equal(fa.left, fb.left) and np.array_equal(fa.right, fb.right)
    rerendered = a.render_frame(7)
    assert np.array_equal(rerendered.left, fa.left)  # the cache holds exactly what the renderer makes
    other = SyntheticSequence("household", 1.0, 5).render_frame(7)
    assert not np.array_equal(other.left, fa.left)
    gt = a.ground_truth()
    assert np.all(np.diff(gt.stamps_ns) == 50_000_000)
    assert np.array_equal(gt.poses[7], fa.gt_T_world_body)
    # options are part of the cache key
    c = load_or_generate("household", 1.0, seed=4, cache_dir=tmp_path, progress=False,
                         options=SimOptions(exposure_variation=0.3, motion_blur_samples=2))
    assert not np.array_equal(c[7].left, fa.left)
    assert len(list(tmp_path.glob("household_1s_seed4_*"))) == 2


def test_depth_frames_are_exact_and_consistent_with_stereo(world):
    seq = SyntheticSequence("household", 2.0, 0, world=world, with_depth=True)
    f = seq.frame(10)
    assert f.depth.dtype == np.float32 and f.depth.shape == f.left.shape
    assert np.all(f.depth > 0.05) and np.all(f.depth < 20)
    # Stereo block matching on the rendered pair agrees with the depth map (disparity = fx b / z).
    c = seq.rig.left
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=96, blockSize=7)
    disp = sgbm.compute(f.left, f.right).astype(np.float32) / 16.0
    ok = disp > 2
    expected = c.fx * seq.rig.baseline / f.depth
    err = np.abs(disp[ok] - expected[ok])
    assert ok.mean() > 0.5 and np.median(err) < 0.5


def test_texture_gives_trackable_features(world):
    """ORB finds plenty of features and KLT tracks most of them frame to frame."""
    seq = SyntheticSequence("household", 30.0, 0, world=world)
    orb = cv2.ORB_create(1000)
    for i in (0, 150, 330, 500):
        a, b = seq.render_frame(i).left, seq.render_frame(i + 1).left
        kps = orb.detect(a, None)
        assert len(kps) > 600, (i, len(kps))
        pts = cv2.goodFeaturesToTrack(a, 400, 0.01, 8)
        assert pts is not None and len(pts) > 250
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=(21, 21), maxLevel=3)
        back, status_b, _ = cv2.calcOpticalFlowPyrLK(b, a, nxt, None, winSize=(21, 21), maxLevel=3)
        good = (status.ravel() == 1) & (status_b.ravel() == 1) & \
            (np.linalg.norm((back - pts).reshape(-1, 2), axis=1) < 0.5)
        assert good.mean() > 0.8, (i, good.mean())


def test_bad_scene_or_duration_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown synthetic scene 'kitchen'"):
        SyntheticSequence("kitchen", 5.0, 0)
    with pytest.raises(ValueError, match="duration must be positive"):
        SyntheticSequence("household", 0.0, 0)


def test_motion_blur_and_exposure_options_change_images_as_expected(world):
    clean = dict(read_noise=0.0, shot_noise=0.0)
    sharp = SyntheticSequence("household", 12.0, 0, world=world, options=SimOptions(**clean))
    blurred = SyntheticSequence("household", 12.0, 0, world=world,
                                options=SimOptions(motion_blur_samples=4, exposure_time_s=0.04, **clean))
    i = 200  # turning at 0.5 rad/s: the image moves ~8 px sideways during the 40 ms exposure
    a = sharp.render_frame(i).left.astype(np.float64)
    b = blurred.render_frame(i).left.astype(np.float64)

    def energy(img, axis):
        return np.mean(np.abs(np.diff(img, axis=axis)))

    assert energy(b, 1) < 0.75 * energy(a, 1)  # horizontal detail smeared
    assert energy(b, 1) / energy(a, 1) < energy(b, 0) / energy(a, 0)  # more than vertical detail
    assert abs(a.mean() - b.mean()) < 3  # blur keeps the brightness
    varying = SyntheticSequence("household", 12.0, 0, world=world,
                                options=SimOptions(exposure_variation=0.3, **clean))
    means = np.array([varying.render_frame(k).left.mean() / sharp.render_frame(k).left.mean()
                      for k in (0, 60, 120, 180)])
    assert np.ptp(means) > 0.05 and np.all((means > 0.6) & (means < 1.4))


def test_concurrent_generators_render_once(tmp_path):
    """Two processes asking for the same uncached sequence: one renders, the other waits and loads."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from mpslam_ros.sim.sequences import load_or_generate\n"
            "s = load_or_generate('household', 0.5, seed=0, cache_dir=sys.argv[1], progress=True)\n"
            "print('checksum', int(np.asarray(s[9].left, np.int64).sum()))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert sum(o[0].count("rendered 10 stereo frames") for o in outs) == 1
    sums = {line for o in outs for line in o[0].splitlines() if line.startswith("checksum")}
    assert len(sums) == 1
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # no leftover temporary folders
