"""One robustness-table row per recorded run (replayed loop closure, default config): path, VO / final ATE,
drift per metre, frames tracked, loops true / false. Same metrics as ``mpslam bench robustness``."""
import glob, logging, sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import load, replay  # noqa: E402
from mpslam_ros.cli.run import RunOutput, evaluate  # noqa: E402
from mpslam_ros.datatypes import Trajectory  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)
print("| run | path m | VO ATE mm | final mm | drift % | tracked % | loops (true/false) |")
print("|---|---|---|---|---|---|---|")
for p in sorted(glob.glob(sys.argv[1])):
    rec = load(p)
    r = replay(rec)
    run = RunOutput("x", rec["stamps"], rec["poses"], rec["poses"], rec["states"], np.zeros(len(rec["poses"])), [], [],
                    ground_truth=Trajectory(rec["gt_stamps"], rec["gt_poses"]))
    m = evaluate(run, rec["poses"])
    print(f"| {rec['scene']} {rec['profile']} s{rec['seed']} {rec['sensor']} | {m['gt_path_length_m']:.1f} | "
          f"{1e3 * r['vo']:.2f} | {1e3 * r['final']:.2f} | {m['drift_1m_trans_percent']:.2f} | "
          f"{m['frames_with_pose_percent']:.1f} | {r['loops']} ({r['loops'] - r['false']}/{r['false']}) |", flush=True)
