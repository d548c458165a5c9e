"""Cold start (issue 13): after the pipeline warm-up nothing compiles (or loads from the disk cache) on
the camera path. Each check runs in a fresh interpreter: kernels other tests already compiled in
this process would hide what the warm-up misses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Warm-up as a node does it, then the real pipeline on real 640x480 frames: VO over a rendered
#: household sequence (default VOConfig), its keyframes through loop closure with a forced loop and a
#: background pose-graph solve. Prints the kernels that became callable after the warm-up.
CHECK = r"""
import json, sys
import numpy as np
from mpslam_ros.warmup import KernelWatch, warm_pipeline
from mpslam_ros.slam.vo import VOConfig, VisualOdometry
from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig
from mpslam_ros.slam.verification import LoopEdge
from mpslam_ros.sim.sequences import load_or_generate

precision = sys.argv[1]
seq = load_or_generate("household", 6.0, 1, progress=False)  # before the warm-up: rendering is not the camera path
report = warm_pipeline([precision], ["stereo"], vo_config=VOConfig(precision=precision),
                       lc_config=LoopClosureConfig(precision=precision))
watch = KernelWatch()
vo = VisualOdometry(seq.rig, VOConfig(precision=precision))
lc = LoopClosure(LoopClosureConfig(precision=precision))
states, kfs = [], []
for frame in seq:
    r = vo.process(frame)
    states.append(r.tracking_state)
    if r.keyframe is not None:
        kfs.append(r.keyframe)
        lc.add_keyframe(r.keyframe)
first, last = kfs[0], kfs[-1]
lc.add_loop(LoopEdge(query_id=last.id, match_id=first.id,
                     T_match_query=np.linalg.inv(first.T_world_body) @ last.T_world_body,
                     information=np.eye(6) * 100.0, inliers=100))
lc.wait_idle(timeout=120)
lc.close()
# a rare path: a window whose fp16-stored Jacobian dense_schur widens to fp32 mid-solve (CI: a relocalised
# window loaded that kernel in vo_node after ready); this window widens in mixed, never in fp64
from mpslam_ros.problems.ba import WindowProblem, ba_options
from mpslam_ros.problems.window_synth import make_window
from mpslam_ros.solvers.schur_ba import WIDENING_WINDOW, solve_schur_ba
p = WindowProblem(*make_window(**WIDENING_WINDOW).solve_args())
p.sort_observations_by_point()
widened = solve_schur_ba(p, ba_options(precision=precision, small_problem_schur_columns=0),
                         "dense_schur").jacobian_widened_at
# rare paths of loop closure's pose-graph solver on a noisy 800-pose graph (loop_closure_node's options):
# the mixed factor widened to fp32 then fp64, and a rejected step recomputed in fp64 (precision fallback)
import dataclasses
from mpslam_ros.problems.graph_synth import random_pose_graph
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
from mpslam_ros.slam.loop_closure import pgo_solver_options
from mpslam_ros.solvers.lm import solve
g = random_pose_graph(800, "se3", 8, odom_sigma_r=0.3).graph
pgo = solve(PoseGraphProblem("se3", g.poses, g.edge_i, g.edge_j, g.measurements, g.information),
            pgo_options(dataclasses.replace(pgo_solver_options(LoopClosureConfig(precision=precision)), robust_loss=None)))
print(json.dumps({"compiled": watch.compiled_names, "loaded": watch.new_signature_names(),
                  "keyframes": len(kfs), "ok": states.count("ok"), "frames": len(states),
                  "solves": len(lc.solves), "widened_at": widened, "pgo_factor_fp64_at": pgo.factor_widened_to_fp64_at,
                  "pgo_precision_fallbacks": pgo.precision_fallbacks, "warmup_s": report.seconds}))
"""


@pytest.mark.parametrize("precision", ["mixed", "fp64"])
def test_nothing_compiles_after_the_pipeline_warmup(precision):
    proc = subprocess.run([sys.executable, "-c", CHECK, precision], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the run exercised what the warm-up must cover: keyframes, BA, a loop and its solve
    assert out["keyframes"] >= 4 and out["ok"] >= 0.9 * out["frames"], out
    assert out["solves"] >= 1, out
    assert (out["widened_at"] >= 0) == (precision == "mixed"), out
    if precision == "mixed":  # the rare pose-graph paths were taken
        assert out["pgo_factor_fp64_at"] >= 0 and out["pgo_precision_fallbacks"] >= 1, out
    assert out["compiled"] == [], f"compiled on the camera path after the warm-up: {out['compiled']}"
    assert out["loaded"] == {}, f"loaded on the camera path after the warm-up: {out['loaded']}"


def test_kernel_watch_sees_a_new_signature():
    """The counter itself: a kernel called with a new dtype is counted and named."""
    code = r"""
import json
import numpy as np
from mpslam_ros.warmup import KernelWatch
from mpslam_ros.geometry import lie
lie.se3_exp(np.zeros(6))
w = KernelWatch()
lie.se3_exp(np.zeros(6))             # same signature: nothing new
n0 = w.new_signatures()
lie.se3_exp(np.zeros(6, np.float32))  # new signature: compiled or loaded
print(json.dumps({"n0": n0, "n1": w.new_signatures(), "names": list(w.new_signature_names())}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # se3_exp and the kernels it calls (compiled for float32 with it)
    assert out["n0"] == 0 and out["n1"] >= 1, out
    assert "mpslam_ros.geometry.lie.se3_exp" in out["names"], out


def test_warmup_check_says_not_warm_on_an_empty_cache(tmp_path):
    """dev.sh announces the minutes-long first compile only when `mpslam warmup --check` says it is needed."""
    import os

    env = dict(os.environ, MPSLAM_CACHE=str(tmp_path / "empty"))
    run = subprocess.run([sys.executable, "-m", "mpslam_ros", "warmup", "--check"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "not warm" in run.stdout
