"""A/B of geodesic acceleration (``SolverOptions.geodesic_acceleration``) on pose graphs: LM iterations, CG
iterations, time and final cost with it off and on, same start, same process, median time of ``--repeat``
runs. The table behind docs/solvers.md's "Geodesic acceleration" section:

    python dev/pgo/geodesic_ab.py                       # the tuning and held-out sets below
    python dev/pgo/geodesic_ab.py --set held_out --precisions fp64,mixed --repeat 3
"""
import argparse
import statistics

from mpslam_ros.bench.pgo import DEFAULT_DIR, load_graph, run_ours
from mpslam_ros.problems.initialization import choose_initial_guess

# (graph, start): the graphs the acceleration was developed on ...
TUNING = [("synth:se3:30000:2:loop_prob=0.3", "chordal"),
          ("synth:se2:800:0:odom_sigma_r=0.3:max_loops=20:loop_prob=0.3", "odometry"),
          ("synth:se2:1500:4:odom_sigma_r=0.2:max_loops=40:loop_prob=0.3", "odometry"),
          ("synth:se3:3000:3:loop_prob=0.3", "chordal")]
# ... and graphs / starts not run before the choice was fixed
HELD_OUT = [("synth:se3:10000:8:loop_prob=0.3", "chordal"), ("synth:se3:10000:9:loop_prob=0.3", "chordal"),
            ("synth:se2:10000:8:loop_prob=0.3", "chordal"), ("synth:se2:10000:9:loop_prob=0.3", "chordal"),
            ("synth:se2:2000:12:odom_sigma_r=0.2:max_loops=40:loop_prob=0.3", "odometry"),
            ("synth:se2:2000:13:odom_sigma_r=0.2:max_loops=40:loop_prob=0.3", "odometry"),
            ("synth:se3:3000:12:odom_sigma_r=0.1:max_loops=50", "odometry"),
            ("synth:se3:3000:13:odom_sigma_r=0.1:max_loops=50", "odometry"),
            ("intel", "file"), ("M3500", "file"), ("parking-garage", "file"), ("sphere2500", "file"),
            ("kitti_00", "chordal"), ("city10000", "file"), ("M3500", "odometry"), ("intel", "odometry")]
SETS = {"tuning": TUNING, "held_out": HELD_OUT, "all": TUNING + HELD_OUT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=sorted(SETS), default="all", help="which graphs (default: all)")
    parser.add_argument("--precisions", default="fp64,mixed", help="comma-separated presets (default: fp64,mixed)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; the median time is printed")
    args = parser.parse_args()
    print("| graph | start | precision | LM its off -> on | CG its off -> on | time s off -> on | on/off | "
          "cost gap (on - off) / off |")
    print("|---|---|---|---|---|---|---|---|")
    for name, start in SETS[args.set]:
        graph = load_graph(name if name.startswith("synth:") else DEFAULT_DIR / f"{name}.g2o")
        poses0 = choose_initial_guess(graph, start).poses
        for precision in args.precisions.split(","):
            res = {}
            for geodesic in (False, True):
                runs = [run_ours(graph, poses0, precision, geodesic_acceleration=geodesic)
                        for _ in range(args.repeat)]
                res[geodesic] = (statistics.median(r["time_s"] for r in runs), runs[-1]["summary"])
            (t0, s0), (t1, s1) = res[False], res[True]
            gap = (s1.final_cost - s0.final_cost) / max(abs(s0.final_cost), 1e-300)
            print(f"| {name} | {start} | {precision} | {s0.iterations} -> {s1.iterations} | {s0.cg_iterations} -> "
                  f"{s1.cg_iterations} | {t0:.3f} -> {t1:.3f} | {t1 / t0:.2f} | {gap:+.1e} |", flush=True)


if __name__ == "__main__":
    main()
