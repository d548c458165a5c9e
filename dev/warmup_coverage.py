"""What does the camera / loop-closure path still compile or load after a node's warm-up? Warms up as
vo_node or loop_closure_node does (mixed by default), then runs rare paths and prints, per case, the numba
kernels that became callable afterwards (docs/ros.md "Rare solver paths"; should print none).

  python dev/warmup_coverage.py vo   # VO on household:12 seed 3 with frame gaps (relocalisation) and drops
  python dev/warmup_coverage.py lc   # PGO on generated SE(3) graphs of 300-3,000 poses, plain and robust
"""
import argparse
import dataclasses

import numpy as np

from mpslam_ros.nodes import msgs
from mpslam_ros.warmup import KernelWatch, warm_pipeline


def as_received(frame):
    """A frame as vo_node's image callbacks hand it over."""
    return msgs.frame_as_received(frame, depth_scale=1.0)


def vo_cases(precision: str) -> None:
    from mpslam_ros.sim.sequences import load_or_generate
    from mpslam_ros.slam.vo import VisualOdometry, VOConfig

    cfg = VOConfig(precision=precision)
    seq = load_or_generate("household", 12, 3, progress=False)  # before the watch: rendering is not the camera path
    warm_pipeline(precisions=[precision], modes=["stereo"], vo=True, loop_closure=False, vo_config=cfg,
                  frame_filter=as_received)
    watch = KernelWatch()
    n = len(seq)
    rng = np.random.default_rng(0)
    cases = {
        "all frames": list(range(n)),
        "every 4th": list(range(0, n, 4)),
        "40 % at random": sorted(rng.choice(n, int(0.4 * n), replace=False).tolist()),
        "0.75 s gap": list(range(0, 40)) + list(range(55, n)),
        "two 0.6 s gaps": list(range(0, 40)) + list(range(52, 120)) + list(range(132, n)),
        "3 s gap (new map)": list(range(0, 60)) + list(range(120, n)),
    }
    for name, frames in cases.items():
        vo = VisualOdometry(seq.rig, cfg)
        states: dict = {}
        for i in frames:
            state = vo.process(as_received(dataclasses.replace(seq[i]))).tracking_state
            states[state] = states.get(state, 0) + 1
        print(f"{name:18s} {states}  new since the warm-up: {watch.new_signature_names()} "
              f"compiled: {watch.compiled_names}", flush=True)


def lc_cases(precision: str) -> None:
    from mpslam_ros.problems.graph_synth import random_pose_graph
    from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
    from mpslam_ros.slam.loop_closure import LoopClosureConfig, pgo_solver_options
    from mpslam_ros.solvers.lm import solve

    cfg = LoopClosureConfig(precision=precision)
    warm_pipeline(precisions=[precision], modes=["stereo"], vo=False, loop_closure=True, lc_config=cfg)
    watch = KernelWatch()
    options = pgo_solver_options(cfg)
    for poses, seed, rotation_noise in ((300, 1, 0.02), (1500, 2, 0.02), (3000, 3, 0.02), (1500, 6, 0.1),
                                        (3000, 7, 0.15), (800, 8, 0.3)):
        g = random_pose_graph(poses, "se3", seed, odom_sigma_r=rotation_noise).graph
        for o in (dataclasses.replace(options, robust_loss=None), options):
            s = solve(PoseGraphProblem("se3", g.poses, g.edge_i, g.edge_j, g.measurements, g.information),
                      pgo_options(o))
            print(f"{poses} poses seed {seed} noise {rotation_noise} loss {o.robust_loss}: {s.iterations} its, "
                  f"factor widened at {s.factor_widened_at} / to fp64 at {s.factor_widened_to_fp64_at}, "
                  f"precision fallbacks {s.precision_fallbacks}; new since the warm-up: "
                  f"{watch.new_signature_names()} compiled: {len(watch.compiled_names)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("node", choices=["vo", "lc"], help="warm up as vo_node (vo) or loop_closure_node (lc)")
    parser.add_argument("--precision", default="mixed", choices=["fp64", "fp32", "fp16", "mixed"])
    args = parser.parse_args()
    (vo_cases if args.node == "vo" else lc_cases)(args.precision)


if __name__ == "__main__":
    main()
