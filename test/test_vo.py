"""Visual odometry end to end on rendered stereo (exact ground truth) and real EuRoC images, plus the
degenerate inputs the pipeline must survive (black / textureless frames, duplicated and out-of-order
stamps, wrong encodings, missing images)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from mpslam_ros.datatypes import StereoFrame, StereoRig
from mpslam_ros.slam.vo import VisualOdometry, VOConfig

SECONDS = 8  # 160 frames, ~2.5 m of household driving including a corner


@pytest.fixture(scope="module")
def seq():
    from mpslam_ros.sim.sequences import load_or_generate

    return load_or_generate("household", SECONDS, seed=0, progress=False)


@pytest.fixture(scope="module")
def frames(seq):
    return [seq[i] for i in range(len(seq))]


def _run(seq, frames, **cfg):
    vo = VisualOdometry(seq.rig, VOConfig(**cfg))
    vo.reset(seq.poses[0])  # start at the true pose: errors below are unaligned
    return vo, [vo.process(f) for f in frames]


def _rot_deg(R):
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


@pytest.fixture(scope="module")
def mixed_run(seq, frames):
    return _run(seq, frames, precision="mixed")


def test_tracks_synthetic_sequence_accurately(seq, mixed_run):
    vo, results = mixed_run
    states = [r.tracking_state for r in results]
    assert states[0] == "initializing"
    assert states[1:].count("ok") == len(states) - 1
    P = np.array([r.T_world_body for r in results])
    G = seq.poses
    path = float(np.linalg.norm(np.diff(G[:, :3, 3], axis=0), axis=1).sum())
    assert path > 2.0
    err = np.linalg.norm(P[:, :3, 3] - G[:, :3, 3], axis=1)
    assert err.max() < 0.01 * path  # under 1% of the distance travelled, anywhere
    assert _rot_deg(P[-1][:3, :3].T @ G[-1][:3, :3]) < 0.1 * path
    # quality outputs: covariance diag and inliers on tracked frames, stage timings everywhere
    ok = [r for r in results if r.tracking_state == "ok"]
    assert all(r.covariance_diag is not None and np.all(r.covariance_diag > 0) for r in ok)
    assert all(r.quality in ("good", "weak") and r.num_inliers >= 15 for r in ok)
    assert min(r.num_tracked for r in ok) >= 60
    assert all({"track", "pnp", "total"} <= set(r.timings) for r in ok)
    assert vo.window_keyframe_ids == sorted(vo.window_keyframe_ids)


def test_keyframes_carry_what_loop_closure_needs(seq, mixed_run):
    vo, results = mixed_run
    kfs = [r.keyframe for r in results if r.keyframe is not None]
    assert 5 <= len(kfs) < len(results) / 3
    assert [k.id for k in kfs] == list(range(len(kfs)))
    for kf in kfs:
        n = len(kf.keypoints)
        assert n >= 80
        assert kf.descriptors.shape == (n, 32) and kf.descriptors.dtype == np.uint8
        assert kf.landmark_ids.shape == (n,) and kf.points_cam.shape == (n, 3)
        has = kf.landmark_ids >= 0
        assert has.sum() >= 50
        assert np.all(np.isfinite(kf.points_cam[has])) and np.all(np.isnan(kf.points_cam[~has]))
        # landmarks in the keyframe's camera frame reproject onto their keypoints
        P = kf.points_cam[has]
        uv = (kf.K @ (P / P[:, 2:3]).T).T[:, :2]
        assert np.median(np.linalg.norm(uv - kf.keypoints[has], axis=1)) < 1.0
        # the keyframe's T_world_body and T_body_left put the landmarks where the world has them
        gt = seq.poses[np.searchsorted(seq.stamps_ns, kf.stamp_ns)]
        assert np.linalg.norm(kf.T_world_body[:3, 3] - gt[:3, 3]) < 0.05
        assert np.allclose(kf.T_body_left, seq.rig.T_body_left)


def test_mixed_matches_fp64(seq, frames, mixed_run):
    _, res_fp64 = _run(seq, frames, precision="fp64")
    G = seq.poses[:, :3, 3]
    ate = {}
    for name, res in (("mixed", mixed_run[1]), ("fp64", res_fp64)):
        P = np.array([r.T_world_body[:3, 3] for r in res])
        ate[name] = float(np.sqrt(np.mean(np.sum((P - G) ** 2, axis=1))))
    assert ate["fp64"] < 0.02 and ate["mixed"] < 0.02
    # identical front end, different BA arithmetic: the trajectories agree to millimetres
    assert abs(ate["mixed"] - ate["fp64"]) < 0.005
    # and, with the affine track refinement, the ATEs within 1 % (measured: 0.03 %)
    assert abs(ate["mixed"] - ate["fp64"]) <= 0.01 * ate["fp64"]


def test_affine_refinement_removes_feature_slide(seq, frames, mixed_run):
    """Tracks aligned to their creation patch (and dropped when they cannot be) instead of sliding with
    a translation-only KLT window: measured ATE 0.65 vs 7.3 mm, final heading error 0.018 vs 0.17 deg."""
    def errors(results):
        P = np.array([r.T_world_body[:3, 3] for r in results])
        ate = float(np.sqrt(np.mean(np.sum((P - seq.poses[:, :3, 3]) ** 2, axis=1))))
        return ate, _rot_deg(results[-1].T_world_body[:3, :3].T @ seq.poses[-1][:3, :3])

    _, plain = _run(seq, frames, precision="mixed", affine_refine=False)
    ate_ref, rot_ref = errors(mixed_run[1])
    ate_plain, rot_plain = errors(plain)
    assert ate_ref < 0.002 and ate_ref < 0.5 * ate_plain
    assert rot_ref < 0.5 * rot_plain


def test_black_frames_hold_pose_and_resume(seq, frames, caplog):
    vo = VisualOdometry(seq.rig, VOConfig())
    vo.reset(seq.poses[0])
    black = set(range(60, 64))
    out = []
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.vo"):
        for f in frames[:100]:
            if f.index in black:
                f = replace(f, left=np.zeros_like(f.left), right=np.zeros_like(f.right))
            out.append(vo.process(f))
    for i in black:
        assert out[i].tracking_state == "lost"
        assert "black or featureless" in out[i].reason
        # published odometry holds the last good pose (no jump, no garbage)
        assert np.allclose(out[i].T_world_body, out[59].T_world_body)
    assert "black or featureless" in caplog.text
    # tracking resumes against the kept map; the pose is right again
    assert out[64].tracking_state in ("ok", "reinitialized")
    assert all(r.tracking_state == "ok" for r in out[66:])
    assert np.linalg.norm(out[99].T_world_body[:3, 3] - seq.poses[99][:3, 3]) < 0.03


def _textureless_wall(frames):
    """A smooth grey ramp the size of the images: intensity varies (not "black") but there is nothing
    to track."""
    h, w = frames[0].left.shape
    return np.tile(np.linspace(60, 200, w).astype(np.uint8), (h, 1))


def _run_with_wall(seq, frames, config, wall_frames=range(40, 50), n=80):
    wall = _textureless_wall(frames)
    vo = VisualOdometry(seq.rig, config)
    vo.reset(seq.poses[0])
    out = []
    for f in frames[:n]:
        if f.index in wall_frames:
            f = replace(f, left=wall, right=wall)
        out.append(vo.process(f))
    return vo, out


def test_motion_gate_refuses_a_pose_far_from_the_constant_velocity_prediction(seq, frames, caplog):
    """Frame 60 carries frame 64's images (~8 cm in 50 ms, 60 m/s^2): the tracked pose is refused
    (logged, counted), the frame is lost with pose and map held, and frame 61 tracks on from frame 59
    as across a stall; with the motion gate off the jump is taken as motion."""
    jump = replace(frames[64], index=60, stamp_ns=frames[60].stamp_ns)
    stream = frames[:60] + [jump] + frames[61:90]

    def run(**cfg):
        vo = VisualOdometry(seq.rig, VOConfig(**cfg))
        vo.reset(seq.poses[0])
        return vo, [vo.process(f) for f in stream]

    with caplog.at_level(logging.WARNING, logger="mpslam_ros.vo"):
        vo, out = run()
    assert out[60].tracking_state == "lost" and "constant-velocity prediction" in out[60].reason, out[60].reason
    assert "frame 60: pose refused" in caplog.text
    assert vo.stats.poses_refused_by_motion_gate == 1 and vo.stats.losses == 0 and vo.stats.new_maps == 0
    assert np.allclose(out[60].T_world_body, out[59].T_world_body)  # held, not published as motion
    assert all(r.tracking_state == "ok" for r in out[61:])
    assert max(np.linalg.norm(out[k].T_world_body[:3, 3] - seq.poses[k][:3, 3]) for k in range(61, 90)) < 0.02
    vo, out = run(motion_gate_accel=0.0)
    assert out[60].tracking_state == "ok" and vo.stats.poses_refused_by_motion_gate == 0
    assert np.linalg.norm(out[60].T_world_body[:3, 3] - seq.poses[60][:3, 3]) > 0.05


def test_people_filling_the_view_do_not_drag_the_pose():
    """household:60 seed 3 (realistic), 27-30 s: at a corner two people walking 1-2 m away cover a
    third to a half of the image, and the static features left lie on one wall ~2.6 m away. New
    landmarks on the people are on probation (not used for the pose until they fit it), so the pose
    follows the wall, not the people. Without probation the motion gate refuses dragged poses
    (logged), though not all of them; with neither the pose slides with the people."""
    from mpslam_ros.slam.vo import NO_POSE_STATES
    from mpslam_ros.sim.sequences import SimOptions, SyntheticSequence

    seq = SyntheticSequence("household", 60, 3, SimOptions.for_profile("realistic"))
    first = 540
    frames = [seq.render_frame(i) for i in range(first, first + 60)]  # on demand, not the whole minute

    def run(**cfg):
        vo = VisualOdometry(seq.rig, VOConfig(**cfg))
        vo.reset(seq.poses[first])
        out = [vo.process(f) for f in frames]
        errors = [float(np.linalg.norm(r.T_world_body[:3, 3] - seq.poses[first + k][:3, 3]))
                  for k, r in enumerate(out) if r.tracking_state not in NO_POSE_STATES]
        return vo, out, max(errors)

    vo, out, error = run()
    assert all(r.tracking_state == "ok" for r in out[1:]) and error < 0.04
    assert vo.stats.landmarks_dropped_on_probation > 100  # the people's points
    vo, out, error = run(landmark_probation_frames=0)
    assert vo.stats.poses_refused_by_motion_gate >= 1
    assert any("constant-velocity prediction" in r.reason for r in out)
    vo, out, error = run(landmark_probation_frames=0, motion_gate_accel=0.0)
    assert error > 0.2  # these frames are the hard case


def test_textureless_wall_loses_tracking_then_relocalises_in_the_same_map(seq, frames):
    vo, out = _run_with_wall(seq, frames, VOConfig())
    lost = out[40:50]
    assert all(r.tracking_state == "relocalizing" for r in lost)
    assert "tracking lost" in lost[0].reason
    last_good = out[39].T_world_body
    for r in lost:  # the published pose is held, never guessed
        assert np.allclose(r.T_world_body, last_good)
    # the first textured frame is matched against the map's keyframes: same map, verified pose
    assert out[50].tracking_state == "relocalized", out[50].reason
    assert "relocalised against keyframe" in out[50].reason
    assert out[50].keyframe is not None and out[50].keyframe.map_id == 0
    assert vo.stats.relocalizations == 1 and vo.stats.new_maps == 0 and vo.stats.losses == 1
    assert vo.stats.frames_relocalizing == 11
    # relocalised, the pose is right again (not the held one): absolute error as before the loss
    for k in (50, 79):
        assert np.linalg.norm(out[k].T_world_body[:3, 3] - seq.poses[k][:3, 3]) < 0.02
    assert all(r.tracking_state == "ok" for r in out[51:])


def test_without_relocalisation_a_new_map_starts_at_the_dead_reckoned_pose(seq, frames):
    vo, out = _run_with_wall(seq, frames, VOConfig(relocalization=False))
    lost = out[40:50]
    assert all(r.tracking_state == "lost" for r in lost)
    assert "tracking lost" in lost[0].reason and "cannot initialise" in lost[-1].reason
    last_good = out[39].T_world_body
    for r in lost:
        assert np.allclose(r.T_world_body, last_good)
    # a new map starts where the constant-velocity prior says the robot drove while blind (11 frames)
    assert out[50].tracking_state == "reinitialized"
    assert out[50].keyframe.map_id == 1 and vo.map_id == 1 and vo.stats.new_maps == 1
    moved = np.linalg.norm(seq.poses[50][:3, 3] - seq.poses[39][:3, 3])
    assert moved > 0.15
    assert np.linalg.norm(out[50].T_world_body[:3, 3] - seq.poses[50][:3, 3]) < 0.2 * moved
    assert all(r.tracking_state == "ok" for r in out[51:])
    # afterwards, relative motion is right again
    rel_est = np.linalg.inv(out[51].T_world_body) @ out[79].T_world_body
    rel_gt = np.linalg.inv(seq.poses[51]) @ seq.poses[79]
    assert np.linalg.norm(rel_est[:3, 3] - rel_gt[:3, 3]) < 0.02
    # new_map_pose "last_good": the new map starts at the pose held while lost
    vo, out = _run_with_wall(seq, frames, VOConfig(relocalization=False, new_map_pose="last_good"))
    assert out[50].tracking_state == "reinitialized"
    assert np.allclose(out[50].T_world_body, out[39].T_world_body, atol=1e-9)


def _run_relocalising_beside_a_mover(seq, frames, share=0.45, disparity_px=40, speed_px=10):
    """Track frames[:40], lose tracking on a textureless wall (frames 40-49), then relocalise while a
    large textured object ~1 m away (the left ``share`` of the view, ``disparity_px``) slides
    sideways ``speed_px`` per frame: a trolley or person next to the camera as tracking resumes. Its
    texture is a view of the house upside down, so it matches nothing in the map."""
    wall = _textureless_wall(frames)
    texture = np.ascontiguousarray(frames[150].left[::-1, ::-1])
    width = int(share * wall.shape[1])

    def with_mover(f, k):
        left, right = f.left.copy(), f.right.copy()
        surface = np.roll(texture, speed_px * k, axis=1)[:, :width]
        left[:, :width] = surface
        right[:, :width - disparity_px] = surface[:, disparity_px:]
        return replace(f, left=left, right=right)

    vo = VisualOdometry(seq.rig, VOConfig())
    vo.reset(seq.poses[0])
    out = [vo.process(f) for f in frames[:40]]
    out += [vo.process(replace(f, left=wall, right=wall)) for f in frames[40:50]]
    out += [vo.process(with_mover(f, k)) for k, f in enumerate(frames[50:80])]
    return vo, out


def test_relocalisation_beside_a_moving_object_keeps_to_the_static_scene(seq, frames, monkeypatch):
    """After a relocalisation the new map starts from the points verified against the map (static);
    whatever else is in view is on probation like any new landmark. Without that, the mover's points
    were established at once and VO followed it (held-out handheld:60 seed 7: ~78 mm per frame)."""
    from mpslam_ros.slam.vo import NO_POSE_STATES

    def max_error(out):
        return max(float(np.linalg.norm(r.T_world_body[:3, 3] - seq.poses[k][:3, 3]))
                   for k, r in enumerate(out) if k >= 50 and r.tracking_state not in NO_POSE_STATES)

    vo, out = _run_relocalising_beside_a_mover(seq, frames)
    states = [r.tracking_state for r in out]
    assert "relocalized" in states[50:55] and vo.stats.relocalizations == 1 and vo.stats.new_maps == 0
    assert all(s == "ok" for s in states[states.index("relocalized") + 1:])
    assert vo.stats.landmarks_dropped_on_probation > 0  # the mover's points
    assert max_error(out) < 0.02
    # the same run with every landmark of the relocalised map established at once: VO follows the mover
    monkeypatch.setattr(VisualOdometry, "_seed_static_landmarks", lambda self, uv, points: None)
    vo, out = _run_relocalising_beside_a_mover(seq, frames)
    assert vo.stats.relocalizations == 1 and max_error(out) > 0.3


def test_unknown_new_map_pose_is_a_clear_error():
    with pytest.raises(ValueError, match="new_map_pose 'origin'"):
        VOConfig(new_map_pose="origin")


def _run_look_alike(seq, frames, config, lost_at=100, wall_len=10, replay_from=0, n_replay=40):
    """Track frames[:lost_at], lose tracking on a textureless wall, then show the images of frames
    ``replay_from...`` again with the stamps continuing: a place that looks exactly like one already
    mapped (a look-alike panel), but ~2 m from where the robot can be after half a second."""
    wall = _textureless_wall(frames)
    vo = VisualOdometry(seq.rig, config)
    vo.reset(seq.poses[0])
    out = [vo.process(f) for f in frames[:lost_at]]
    for k in range(lost_at, lost_at + wall_len):
        out.append(vo.process(replace(frames[k], left=wall, right=wall)))
    for j in range(n_replay):
        k = lost_at + wall_len + j
        out.append(vo.process(replace(frames[replay_from + j], index=k, stamp_ns=frames[k].stamp_ns)))
    return vo, out


def test_relocalisation_onto_a_look_alike_place_far_from_the_dead_reckoned_pose_is_refused(seq, frames, caplog):
    lost_at, wall_len = 100, 10
    resume = lost_at + wall_len
    # the look-alike place (frame 0's view) is far from where dead reckoning puts the robot
    assert np.linalg.norm(seq.poses[resume][:3, 3] - seq.poses[0][:3, 3]) > 1.5
    # without the gate (global relocalisation) VO snaps onto the look-alike place: a ~2 m jump
    vo, out = _run_look_alike(seq, frames, VOConfig(relocalization_max_offset_m=-1.0), lost_at, wall_len)
    assert out[resume].tracking_state == "relocalized", out[resume].reason
    assert np.linalg.norm(out[resume].T_world_body[:3, 3] - out[lost_at - 1].T_world_body[:3, 3]) > 1.5
    # with the gate: every verified match is refused (logged, counted), and after the timeout a new
    # map starts at the dead-reckoned pose: the odometry never jumps to the look-alike place, the old
    # map keeps its keyframes
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.vo"):
        vo, out = _run_look_alike(seq, frames, VOConfig(), lost_at, wall_len)
    states = [r.tracking_state for r in out]
    assert "relocalized" not in states
    assert vo.stats.relocalizations == 0 and vo.stats.relocalizations_refused >= 1
    assert "refused" in caplog.text and "dead-reckoned pose" in caplog.text
    assert vo.stats.new_maps == 1 and vo.map_id == 1
    start = states.index("reinitialized")
    assert resume < start <= resume + 21  # relocalisation_timeout_s (1 s at 20 Hz)
    moved = np.linalg.norm(seq.poses[start][:3, 3] - seq.poses[lost_at - 1][:3, 3])
    assert np.linalg.norm(out[start].T_world_body[:3, 3] - seq.poses[start][:3, 3]) < 0.2 * moved
    assert out[start].keyframe is not None and out[start].keyframe.map_id == 1
    # no jump anywhere: each published step at most the robot's own motion since the last published pose
    published = [k for k in range(lost_at - 1, len(out)) if out[k].tracking_state not in ("lost", "relocalizing")]
    for a, b in zip(published[:-1], published[1:]):
        step = np.linalg.norm(out[b].T_world_body[:3, 3] - out[a].T_world_body[:3, 3])
        assert step < np.linalg.norm(seq.poses[b][:3, 3] - seq.poses[a][:3, 3]) + 0.05, (a, b)


def test_bad_inputs_are_skipped_with_reasons(seq, frames, caplog):
    vo = VisualOdometry(seq.rig, VOConfig())
    vo.reset(seq.poses[0])
    for f in frames[:10]:
        vo.process(f)
    f10, f11 = frames[10], frames[11]
    cases = {
        "duplicated timestamp": replace(f10, stamp_ns=frames[9].stamp_ns),
        "out of order": replace(f10, stamp_ns=frames[5].stamp_ns),
        "mono8": replace(f10, left=f10.left.astype(np.float32)),
        "calibration says": replace(f10, left=f10.left[:-2], right=f10.right[:-2]),
        "no right image": replace(f10, right=None),
        "no left image": replace(f10, left=None),
    }
    before = vo.T_world_body.copy()
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.vo"):
        for expect, bad in cases.items():
            r = vo.process(bad)
            assert r.tracking_state == "skipped", expect
            assert expect in r.reason
            assert np.allclose(r.T_world_body, before)
            assert expect in caplog.text
    # the state was untouched: the next good frames track normally and accurately
    for f in (f10, f11):
        r = vo.process(f)
        assert r.tracking_state == "ok"
    assert np.linalg.norm(r.T_world_body[:3, 3] - seq.poses[11][:3, 3]) < 0.01


def test_rgbd_mode_uses_depth(seq):
    from mpslam_ros.sim.sequences import load_or_generate

    rgbd = load_or_generate("household", SECONDS, seed=0, progress=False, with_depth=True)
    rig = StereoRig(seq.rig.left, None, seq.rig.T_body_left, rectified=True)
    vo = VisualOdometry(rig, VOConfig())
    vo.reset(seq.poses[0])
    out = []
    for i in range(0, 60):
        f = rgbd[i]
        depth = f.depth.copy()
        depth[::7, ::5] = np.nan  # holes, as real depth cameras have
        out.append(vo.process(StereoFrame(f.stamp_ns, f.left, None, depth, index=i)))
    assert [r.tracking_state for r in out[1:]].count("ok") == 59
    err = np.linalg.norm(out[-1].T_world_body[:3, 3] - seq.poses[59][:3, 3])
    assert err < 0.02
    # stereo mode without a depth image: skipped, named
    r = vo.process(StereoFrame(rgbd.stamps_ns[60], rgbd[60].left, None, None, index=60))
    assert r.tracking_state == "skipped" and "no depth image" in r.reason


def test_euroc_real_images_track_every_frame(euroc_dir):
    from mpslam_ros.io.datasets import open_dataset

    source = open_dataset(str(euroc_dir))
    gt = source.ground_truth()
    vo = VisualOdometry(source.rig, VOConfig())
    results = []
    for frame in source:
        if not results:  # start where the ground truth says the body is
            k = int(np.argmin(np.abs(gt.stamps_ns - frame.stamp_ns)))
            vo.reset(gt.poses[k])
        results.append(vo.process(frame))
    assert len(results) == 95
    assert results[0].tracking_state == "initializing"
    assert all(r.tracking_state == "ok" for r in results[1:])
    for r in results:
        k = int(np.argmin(np.abs(gt.stamps_ns - r.stamp_ns)))
        assert np.linalg.norm(r.T_world_body[:3, 3] - gt.poses[k][:3, 3]) < 0.02
