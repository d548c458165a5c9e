"""Replay recorded keyframe streams through LoopClosure (inline solves) and evaluate ATE + per-loop errors."""
import dataclasses, glob, pickle, sys, logging
import numpy as np
from mpslam_ros.cli.run import RunOutput, evaluate
from mpslam_ros.datatypes import Trajectory
from mpslam_ros.evaluation.loops import loop_errors
from mpslam_ros.geometry.lie import se3_log
from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig

def load(path):
    with open(path, "rb") as f:
        return pickle.load(f)

def replay(rec, config=None, verbose=False, cap=None):
    cfg = dataclasses.replace(config or LoopClosureConfig(), background=False)
    lc = LoopClosure(cfg)
    if cap is not None:
        lc.verification.max_information = cap
    for kf in rec["keyframes"]:
        lc.add_keyframe(kf)
    kf_corr = lc.corrected_poses()
    kf_pose = {kf.id: kf.T_world_body for kf in rec["keyframes"]}
    kf_stamp = {kf.id: kf.stamp_ns for kf in rec["keyframes"]}
    poses_vo = rec["poses"]
    corrected = poses_vo.copy()
    for k, kid in enumerate(rec["kf_of_frame"]):
        if kid in kf_corr and kid in kf_pose:
            corrected[k] = kf_corr[kid] @ np.linalg.inv(kf_pose[kid]) @ poses_vo[k]
        else:
            corrected[k] = lc.T_map_odom() @ poses_vo[k]
    gt = Trajectory(rec["gt_stamps"], rec["gt_poses"])
    run = RunOutput("x", rec["stamps"], poses_vo, corrected, rec["states"], np.zeros(len(poses_vo)), [], [],
                    ground_truth=gt)
    vo = evaluate(run, poses_vo)["ate_rmse_m"]
    edges = lc.loops()
    fin = evaluate(run)["ate_rmse_m"] if edges else vo
    errs = loop_errors([[e.query_id, e.match_id, e.T_match_query] for e in edges], kf_stamp, gt)
    out = dict(vo=vo, final=fin, loops=len(edges), false=sum(1 for x in errs if not x["true"]), errs=errs,
               edges=edges, lc=lc, kf_stamp=kf_stamp, gt=gt, rejected=len(lc.rejected_loops()))
    lc.close()
    return out

def gt_pose(gt, stamp):
    k = int(np.argmin(np.abs(gt.stamps_ns - stamp)))
    return gt.poses[k]

def loop_edge_error(r, e):
    """A replayed loop edge ``e`` against ground truth: (se3 error [rot, trans] of its relative pose,
    the true relative pose)."""
    G = np.linalg.inv(gt_pose(r["gt"], r["kf_stamp"][e.match_id])) @ gt_pose(r["gt"], r["kf_stamp"][e.query_id])
    return se3_log(np.linalg.inv(G) @ e.T_match_query), G

def odometry_errors(rec, gt):
    """whitened-free raw errors (rot rad, trans m) of each consecutive-keyframe odometry step vs GT."""
    kfs = rec["keyframes"]; out = []
    for a, b in zip(kfs[:-1], kfs[1:]):
        if a.map_id != b.map_id: continue
        Z = np.linalg.inv(a.T_world_body) @ b.T_world_body
        G = np.linalg.inv(gt_pose(gt, a.stamp_ns)) @ gt_pose(gt, b.stamp_ns)
        e = se3_log(np.linalg.inv(G) @ Z)
        out.append((np.linalg.norm(e[:3]), np.linalg.norm(e[3:]), np.linalg.norm(G[:3, 3]),
                    np.degrees(np.linalg.norm(se3_log(G)[:3]))))
    return np.array(out)

if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    pat = sys.argv[1] if len(sys.argv) > 1 else "/tmp/loop_replay/*"
    for p in sorted(glob.glob(pat)):
        r = replay(load(p))
        print(f"{p.split('/')[-1]:45s} VO {1e3*r['vo']:6.2f} final {1e3*r['final']:6.2f} loops {r['loops']:3d} "
              f"false {r['false']} rej {r['rejected']}", flush=True)
