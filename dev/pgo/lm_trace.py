"""One LM solve of a pose graph from its chordal guess with chosen SolverOptions, printing LM's per-iteration
trace (``verbose``) and the final line: iterations, seconds, final cost, termination. The A/B runs behind
docs/solvers.md's 7 Dec rerun (which setting changes the LM iteration count of a 100,000-pose graph):

    python dev/pgo/lm_trace.py synth:se3:100000:0:loop_prob=0.3 "precision='fp64', linear_solver='cholesky'"
"""
import sys

import numpy as np

from mpslam_ros.problems.graph_synth import graph_from_spec
from mpslam_ros.problems.initialization import choose_initial_guess
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
from mpslam_ros.solvers.lm import SolverOptions, solve


def main() -> None:
    spec = sys.argv[1]
    options = eval("dict(" + (sys.argv[2] if len(sys.argv) > 2 else "") + ")")  # keyword list for SolverOptions
    options.setdefault("verbose", True)
    graph = graph_from_spec(spec).graph
    poses0 = choose_initial_guess(graph, "chordal").poses
    problem = PoseGraphProblem(graph.kind, poses0, graph.edge_i, graph.edge_j, graph.measurements,
                               graph.information, fixed=np.array([0]))
    summary = solve(problem, pgo_options(SolverOptions(**options)))
    print(summary.iterations, f"{summary.time_s:.2f} s", f"{summary.final_cost:.9e}", summary.termination)


if __name__ == "__main__":
    main()
