"""Are the errors of loops into the same place correlated? Each accepted loop's edge error against ground
truth (translation, rotated into the world frame), and the mean cosine between two loops' error vectors
binned by how many keyframes apart their match keyframes are. Usage: python loop_correlation.py '/tmp/rec/*.pkl'"""
import glob, logging, sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import load, loop_edge_error, replay  # noqa: E402
from mpslam_ros.slam.loop_closure import LoopClosureConfig  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)

if __name__ == "__main__":
    for p in sorted(glob.glob(sys.argv[1])):
        rec = load(p)
        r = replay(rec, LoopClosureConfig())
        index = {kf.id: i for i, kf in enumerate(rec["keyframes"])}
        pose = {kf.id: kf.T_world_body for kf in rec["keyframes"]}
        errors, matches = [], []
        for e in r["edges"]:
            err, _ = loop_edge_error(r, e)
            errors.append(pose[e.match_id][:3, :3] @ err[3:])
            matches.append(index[e.match_id])
        t, m = np.array(errors), np.array(matches)
        print(f"== {p.split('/')[-1]}: final {1e3 * r['final']:.2f} mm, {len(t)} loops")
        for lo, hi in [(0, 2), (3, 6), (7, 15), (16, 40), (41, 10 ** 6)]:
            cos = [t[i] @ t[j] / (np.linalg.norm(t[i]) * np.linalg.norm(t[j]) + 1e-12)
                   for i in range(len(t)) for j in range(i + 1, len(t)) if lo <= abs(m[i] - m[j]) <= hi]
            print(f"   match keyframes {lo}-{hi} apart: {len(cos)} pairs, mean cosine "
                  f"{np.mean(cos) if cos else float('nan'):.2f}")
