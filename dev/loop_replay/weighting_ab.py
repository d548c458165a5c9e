"""Loops into one place share their errors: replay with each loop's information divided by
1 + (k - 1) rho, k = loops whose match keyframe lies within w keyframes of its own (or, "place": within
w at both ends), and print the final ATE per variant. Usage: python weighting_ab.py '/tmp/rec/*.pkl'"""
import dataclasses, glob, logging, sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import load, replay  # noqa: E402
import mpslam_ros.slam.loop_closure as lcmod  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)
BUILD = lcmod.build_pose_graph
VARIANTS = [("match", 0.0, 0), ("match", 0.3, 2), ("match", 1.0, 2), ("match", 0.3, 5), ("match", 1.0, 0),
            ("place", 1.0, 10)]


def weighted(mode, rho, window):
    def build(order, loops, odom, config, map_ids=None, odometry_scale=1.0):
        if loops and rho > 0:
            index = {k: i for i, k in enumerate(order)}
            m = np.array([index[e.match_id] for e in loops])
            q = np.array([index[e.query_id] for e in loops])
            near = np.abs(m[:, None] - m[None, :]) <= window
            if mode == "place":
                near &= np.abs(q[:, None] - q[None, :]) <= window
            k = near.sum(axis=1)
            loops = [dataclasses.replace(e, information=e.information / (1.0 + (n - 1) * rho)) for e, n in zip(loops, k)]
        return BUILD(order, loops, odom, config, map_ids, odometry_scale)
    return build


if __name__ == "__main__":
    print("| run | " + " | ".join(f"{m} rho {r} w {w}" for m, r, w in VARIANTS) + " |")
    for p in sorted(glob.glob(sys.argv[1])):
        rec = load(p)
        row = []
        for v in VARIANTS:
            lcmod.build_pose_graph = weighted(*v)
            r = replay(rec, lcmod.LoopClosureConfig())
            row.append(f"{1e3 * r['final']:.2f} ({r['loops']})")
        lcmod.build_pose_graph = BUILD
        print(f"| {p.split('/')[-1][:-4]} | " + " | ".join(row) + " |", flush=True)
