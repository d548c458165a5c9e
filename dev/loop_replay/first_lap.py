"""Did loop closure make the part of the map mapped before the first revisit worse? Per recorded run:
the keyframes before the first accepted loop's query, aligned (SE3) to ground truth on themselves, for
VO and after the replayed loop closure: median / max position error (docs/robustness.md, office:210)."""
import glob, logging, sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import gt_pose, load, replay  # noqa: E402
from mpslam_ros.datatypes import Trajectory  # noqa: E402
from mpslam_ros.evaluation.metrics import ate  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)


def errors_mm(stamps, est, ref):
    return 1e3 * ate(Trajectory(stamps, ref), Trajectory(stamps, est), align="se3").errors


print("| run | first-lap keyframes | VO median / max mm | after loop closure median / max mm |")
print("|---|---|---|---|")
for p in sorted(glob.glob(sys.argv[1])):
    rec = load(p)
    r = replay(rec)
    if not r["edges"]:
        continue
    first_query = min(e.query_id for e in r["edges"])
    corrected = r["lc"].corrected_poses()
    kfs = [kf for kf in rec["keyframes"] if kf.id < first_query and kf.map_id == rec["keyframes"][0].map_id]
    stamps = np.array([kf.stamp_ns for kf in kfs])
    ref = np.array([gt_pose(r["gt"], kf.stamp_ns) for kf in kfs])
    vo = errors_mm(stamps, np.array([kf.T_world_body for kf in kfs]), ref)
    lc = errors_mm(stamps, np.array([corrected[kf.id] for kf in kfs]), ref)
    print(f"| {rec['scene']} {rec['profile']} s{rec['seed']} {rec['sensor']} | {len(kfs)} | "
          f"{np.median(vo):.1f} / {vo.max():.1f} | {np.median(lc):.1f} / {lc.max():.1f} |", flush=True)
