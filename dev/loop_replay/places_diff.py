"""Issue 15 "not worse" check, per loop: which loops the place recognition before issue 15 and today's accept,
how far apart their keyframes are, and how each loop's edge error (vs ground truth) compares with the
information it claims (chi2, 6 dof). Usage: python places_diff.py '/tmp/rec/household_60*.pkl'"""
import glob, logging, sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from places_ab import without_place_features  # noqa: E402
from replay import load, loop_edge_error, replay  # noqa: E402
from mpslam_ros.geometry.lie import se3_log  # noqa: E402
from mpslam_ros.slam.loop_closure import LoopClosureConfig  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)


def per_loop(r):
    rows = {}
    for e in r["edges"]:
        err, G = loop_edge_error(r, e)
        rows[(e.query_id, e.match_id)] = dict(chi2=float(err @ e.information @ err), rot=np.linalg.norm(err[:3]),
                                               trans=np.linalg.norm(err[3:]), dist=np.linalg.norm(G[:3, 3]),
                                               ang=np.degrees(np.linalg.norm(se3_log(G)[:3])), inl=e.inliers,
                                               sd=1 / np.sqrt(np.diag(e.information))[3:].mean())
    return rows


def summary(name, rows):
    if not rows:
        return f"{name}: none"
    a = np.array([[v["chi2"], v["trans"] * 1e3, v["rot"] * 1e3, v["dist"], v["ang"], v["sd"] * 1e3] for v in rows.values()])
    return (f"{name}: n {len(a)}  chi2 median {np.median(a[:, 0]):.1f} mean {a[:, 0].mean():.1f} (6 expected)  "
            f"err trans median {np.median(a[:, 1]):.2f} mm rot {np.median(a[:, 2]):.2f} mrad  "
            f"claimed sd {np.median(a[:, 5]):.2f} mm  baseline {np.median(a[:, 3]):.2f} m {np.median(a[:, 4]):.1f} deg")


if __name__ == "__main__":
    for p in sorted(glob.glob(sys.argv[1])):
        rec = load(p)
        a = replay(without_place_features(rec), LoopClosureConfig(vocabulary_path="rendered", rerank_candidates=0))
        b = replay(rec, LoopClosureConfig())
        ra, rb = per_loop(a), per_loop(b)
        qa, qb = {k[0] for k in ra}, {k[0] for k in rb}
        print(f"== {p.split('/')[-1]}: final before {1e3 * a['final']:.2f} today {1e3 * b['final']:.2f} mm (VO {1e3 * a['vo']:.2f})")
        print("  ", summary("before, all", ra))
        print("  ", summary("today, all ", rb))
        print("  ", summary("before only", {k: v for k, v in ra.items() if k not in rb}))
        print("  ", summary("today only ", {k: v for k, v in rb.items() if k not in ra}))
        print(f"   query keyframes with a loop: before {len(qa)}, today {len(qb)}, both {len(qa & qb)}")
