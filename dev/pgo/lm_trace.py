"""One LM solve of a pose graph from its chordal guess with chosen SolverOptions, printing LM's per-iteration
trace (``verbose``) and the final line: iterations, seconds, final cost, termination. The A/B runs behind
docs/solvers.md's 7 Dec rerun (which setting changes the LM iteration count of a 100,000-pose graph):

    python dev/pgo/lm_trace.py synth:se3:100000:0:loop_prob=0.3 "precision='fp64', linear_solver='cholesky'"
"""
import sys

from mpslam_ros.bench.pgo import load_graph, run_ours
from mpslam_ros.problems.initialization import choose_initial_guess


def main() -> None:
    options = eval("dict(" + (sys.argv[2] if len(sys.argv) > 2 else "") + ")")  # keyword list for SolverOptions
    options.setdefault("verbose", True)
    graph = load_graph(sys.argv[1])
    poses0 = choose_initial_guess(graph, "chordal").poses
    summary = run_ours(graph, poses0, options.pop("precision", "mixed"), **options)["summary"]
    print(summary.iterations, f"{summary.time_s:.2f} s", f"{summary.final_cost:.9e}", summary.termination)


if __name__ == "__main__":
    main()
