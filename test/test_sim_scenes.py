"""The warehouse world and the hand-held office walk: geometry, revisits, look-alike bays, ground truth
registered to realistic (distorted, blurred) images, and a short pipeline run of each."""

from __future__ import annotations

import numpy as np
import pytest

from mpslam_ros.sim.render import Renderer
from mpslam_ros.sim.sequences import SimOptions, SyntheticSequence, cached_world
from mpslam_ros.sim.trajectories import _poses
from test_sim_effects import _ncc, assert_registered


def _revisits(pos: np.ndarray, gap: int = 1200, step: int = 50) -> int:
    """Sampled positions within 0.2 m of one at least ``gap`` frames (60 s) earlier."""
    return sum(bool(np.any(np.linalg.norm(pos[: max(0, i - gap)] - pos[i], axis=1) < 0.2))
               for i in range(0, len(pos), step))


def test_warehouse_world_trajectory_and_look_alike_bays():
    world = cached_world(0, None, "warehouse")
    seq = SyntheticSequence("warehouse", 210.0, 1, world=world)
    pos = seq.poses[:, :3, 3]
    assert np.linalg.norm(np.diff(pos, axis=0), axis=1).sum() > 100
    assert world.free_of_obstacles(pos[:, :2], 0.5).all()
    assert _revisits(pos) >= 10
    assert np.ptp(pos[:, 2]) < 0.01  # planar robot
    lay = world.layout
    # facing a rack across an aisle: repeated bays look the same wherever they are, other bays differ
    r = Renderer(world, 320, 240, 190.0, 190.0, 159.5, 119.5)
    y = lay.aisle_y(1)
    motif = world.faces[:, 9]  # material gain: the repeated bays share theirs

    def view(bay, side):
        x = lay.rack_x[0] + (bay + 0.5) * lay.bay_length
        T = _poses(np.array([[x, y, 0.8]]), np.array([side * np.pi / 2]), np.zeros(1), np.zeros(1))[0]
        return r.radiance(T @ seq.rig.T_body_left)[0][:120, 40:280].copy()  # above the horizon: the rack

    # which bays of the rack north of aisle 1 repeat: their aisle-facing faces share one material
    # (face columns: axis, sign, plane, z range, x range, ...)
    F = world.faces
    south = (F[:, 0] == 1) & (F[:, 1] == -1) & (np.abs(F[:, 2] - 2 * (lay.rack_depth + lay.aisle_width)) < 1e-9)
    bay_faces = [np.nonzero(south & (np.abs(F[:, 5] - (lay.rack_x[0] + b * lay.bay_length)) < 1e-9)
                            & (F[:, 4] - F[:, 3] > 1.0))[0] for b in range(lay.bays)]
    assert all(len(f) == 1 for f in bay_faces)
    gains = [motif[f[0]] for f in bay_faces]
    same = [b for b in range(lay.bays) if gains.count(gains[b]) > 1]
    other = [b for b in range(lay.bays) if gains.count(gains[b]) == 1]
    assert len(same) >= 3 and other
    assert _ncc(view(same[0], 1), view(same[1], 1)) > 0.97
    assert _ncc(view(same[0], 1), view(other[0], 1)) < 0.6


def test_office_handheld_walk_is_six_dof_and_revisits():
    world = cached_world(0, None, "office")
    seq = SyntheticSequence("office_handheld", 150.0, 2, world=world)
    P = seq.poses
    pos = P[:, :3, 3]
    assert np.linalg.norm(np.diff(pos, axis=0), axis=1).sum() > 100
    assert world.free_of_obstacles(pos[:, :2], 0.5).all()
    assert _revisits(pos, step=25) >= 5
    cam = (P @ seq.rig.T_body_left)[:, :3, 3]
    assert 1.25 < cam[:, 2].mean() < 1.55 and np.ptp(cam[:, 2]) > 0.1
    pitch = np.arcsin(-P[:, 2, 0])
    roll = np.arctan2(P[:, 2, 1], P[:, 2, 2])
    assert np.ptp(pitch) > 0.25 and np.ptp(roll) > 0.2
    # quick turns: the rotation rate peaks well above the robot's ~0.4 rad/s
    dR = np.einsum("nji,njk->nik", P[:-1, :3, :3], P[1:, :3, :3])
    rate = np.arccos(np.clip((np.trace(dR, axis1=1, axis2=2) - 1) / 2, -1, 1)) * 20
    assert rate.max() > 0.9


@pytest.mark.parametrize("scene,min_within", [("warehouse", 0.75), ("office_handheld", 0.65)])
def test_ground_truth_registers_in_the_new_scenes(scene, min_within):
    """(Hand-held in a 2 m corridor: walls a metre away at grazing angles and the camera rolling, so
    more 9x9 patches match ambiguously; the median offset, the registration itself, is still 0.)"""
    opts = SimOptions.for_profile("realistic", read_noise=0.0, shot_noise=0.0, vignetting=0.0,
                                  light_change=0.0, moving_objects=0)
    kind = "warehouse" if scene == "warehouse" else "office"
    seq = SyntheticSequence(scene, 10.0, 0, world=cached_world(0, None, kind), options=opts)
    assert_registered(seq, 100, 104, n_points=30000, min_within=min_within)


@pytest.mark.parametrize("scene", ["warehouse", "office_handheld"])
def test_short_realistic_run_tracks(scene):
    from mpslam_ros.cli.run import evaluate, open_synthetic, run_pipeline

    source = open_synthetic(f"{scene}:2", 0, "realistic", progress=False)
    run = run_pipeline(source, loop_closure=False, progress=False)
    m = evaluate(run, run.poses_vo)
    assert m["frames_with_pose_percent"] == 100.0
    assert m["ate_rmse_m"] < 0.02, m
