"""Where did VO go wrong? The largest errors of VO's frame-to-frame motion against ground truth in a
recording (lost frames skipped, so a step across a loss is the jump of the relocalisation or new map).
Usage: python step_errors.py RECORDING.pkl [N]"""
import os, pickle, sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from replay import gt_pose  # noqa: E402
from mpslam_ros.datatypes import Trajectory  # noqa: E402
from mpslam_ros.geometry.lie import se3_log  # noqa: E402

if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        r = pickle.load(f)
    n_show = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    P, st = r["poses"], r["states"]
    gt = Trajectory(r["gt_stamps"], r["gt_poses"])
    G = [gt_pose(gt, s) for s in r["stamps"]]  # ground truth at each frame
    rows, prev = [], None
    for k in range(len(P)):
        if st[k] in ("lost", "relocalizing"):
            continue
        if prev is not None:
            e = se3_log(np.linalg.inv(np.linalg.inv(G[prev]) @ G[k]) @ (np.linalg.inv(P[prev]) @ P[k]))
            rows.append((1e3 * np.linalg.norm(e[3:]), np.degrees(np.linalg.norm(e[:3])), prev, k, st[k]))
        prev = k
    for err_mm, err_deg, a, b, s in sorted(rows, reverse=True)[:n_show]:
        print(f"frames {a} -> {b} ({s}): {err_mm:.1f} mm, {err_deg:.2f} deg")
