"""CUDA backend (mpslam_ros.solvers.cuda) against the CPU kernels.

The kernel comparisons run ``python -m mpslam_ros.solvers.cuda.selfcheck`` in a subprocess: on a GPU when
the machine has one (``/dev/nvidiactl``), else under numba's CUDA simulator, whose environment variable
(NUMBA_ENABLE_CUDASIM=1) must be set before numba is imported, so it cannot be switched on in this process
without affecting the CPU kernels of every other test. The subprocess writes one JSON row per (kernel,
storage precision, vector dtype) with its difference to the CPU kernel fed the same stored values; the
tests below assert on those rows. Skipped, with the reason, when numba.cuda cannot be used at all.
The device-selection tests run in this process (no simulator: "cuda" must fail clearly, "auto" fall back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HAS_GPU = os.path.exists("/dev/nvidiactl")
STORAGES = {"fp64", "fp32", "fp16"}


@pytest.fixture(scope="module")
def selfcheck(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cuda") / "selfcheck.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not HAS_GPU:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    # whole solves in the mixed preset only (fp16-stored J / factor): the simulator takes ~30 s per preset;
    # the kernels themselves are compared in every storage precision
    cmd = [sys.executable, "-m", "mpslam_ros.solvers.cuda.selfcheck", "--json", str(out), "--solve-precisions", "mixed"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if not out.exists():
        pytest.fail(f"selfcheck wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result["device"] is None:
        pytest.skip(f"no usable CUDA device or simulator: {result['note']}")
    result["stdout"] = proc.stdout
    return result


def _rows(result: dict, prefix: str) -> list:
    rows = [r for r in result["rows"] if r["kernel"].startswith(prefix)]
    assert rows, f"no {prefix!r} rows in the selfcheck output:\n{result['stdout']}"
    return rows


def _assert_all_ok(rows: list) -> None:
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "\n".join(f"{r['kernel']} {r['storage']} {r['vector']}: rel err {r['rel_err']:.3e} > {r['tol']:.0e}"
                              for r in bad)


@pytest.mark.parametrize("kernel", ["jac_matvec", "jac_t_matvec", "normal_product", "block_jacobi",
                                    "block_ldl_solve", "cgnr block-Jacobi", "cgnr block LDL"])
def test_kernel_matches_cpu_in_every_storage_precision(selfcheck, kernel):
    rows = _rows(selfcheck, kernel)
    _assert_all_ok(rows)
    assert {r["storage"] for r in rows} == STORAGES
    if kernel in ("jac_matvec", "jac_t_matvec", "normal_product", "block_jacobi"):
        # BA blocks (2 x 6 + 2 x 3, fixed cameras) and square pose-graph blocks (3 x 3, 6 x 6)
        assert {r["kernel"] for r in rows} == {f"{kernel}[{s}]" for s in ("ba", "pgo3", "pgo6")}
    # fp16 storage is read as fp16, not silently as something else: the same stored values as the CPU's,
    # so the fp16 rows agree as closely as the fp32 ones
    for r in rows:
        if r["storage"] == "fp16":
            assert r["vector"] == "float32"


@pytest.mark.parametrize("kernel", ["dot (reduction)", "cg_update", "xpay"])
def test_vector_operations_match_numpy(selfcheck, kernel):
    rows = _rows(selfcheck, kernel)
    _assert_all_ok(rows)
    assert {r["vector"] for r in rows} == {"float32", "float64"}


def test_block_ldl_solve_is_a_solve(selfcheck):
    """The level-scheduled solve in fp64 inverts the factored matrix (not only agrees with the CPU)."""
    rows = [r for r in _rows(selfcheck, "block_ldl_solve") if r["kernel"].endswith("residual")]
    assert len(rows) == 2
    _assert_all_ok(rows)
    levels = [r for r in _rows(selfcheck, "block_ldl_solve") if "levels" in r]
    assert all(int(r["levels"].split()[0]) > 1 for r in levels)  # a real schedule, several launches


REPEATED_REDUCTION = r"""
import sys
import numpy as np
sys.setswitchinterval(1e-6)  # switch the simulator's block threads often: exposes races in its bookkeeping
from numba import cuda
from mpslam_ros.solvers.cuda import kernels as CK
if not CK.SIMULATOR:
    print("SKIP not the simulator"); raise SystemExit(0)
kern = CK.kernels_for("float64")
a, b = np.random.default_rng(0).standard_normal((2, 64))
s = cuda.device_array(4, dtype=np.float64)
bad = 0
for _ in range(300):
    kern.fill[1, CK.TPB](s, 0.0)
    kern.dot_add[CK.reduction_blocks(64), CK.TPB](a, b, s, 0)
    bad += abs(s.copy_to_host()[0] - a @ b) > 1e-9 * abs(a @ b)
print("MISMATCHES", bad)
"""


@pytest.mark.skipif(HAS_GPU, reason="checks the CUDA simulator")
def test_simulated_reduction_is_right_every_time():
    """numba-cuda's simulator allocates a block's shared array with an unguarded get-then-set, so two
    threads could each get their own and a reduction lost partial sums (10 of 300 launches before the guard
    in solvers.cuda.kernels; one full-suite run got an fp64 CG solve 11 % off the CPU's)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", REPEATED_REDUCTION], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    if "SKIP" in proc.stdout:
        pytest.skip(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MISMATCHES 0" in proc.stdout, proc.stdout

@pytest.mark.parametrize("problem", ["BA window solve", "PGO solve, block LDL"])
def test_whole_solve_reaches_the_cpu_cost(selfcheck, problem):
    rows = _rows(selfcheck, problem)
    _assert_all_ok(rows)
    for r in rows:
        assert r["device"] == "cuda", r  # every CG solve ran on the device, none fell back to the CPU
        costs = r["costs"]
        initial = float(costs.split("->")[0])
        final = float(costs.split("cuda")[-1])
        assert final < 0.1 * initial  # the solve did something


def _tiny_window():
    from mpslam_ros.problems.window_synth import make_window

    return make_window(5, num_keyframes=4, num_landmarks=10, track_length=(3, 5), stereo=True)


@pytest.mark.skipif(HAS_GPU or os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"),
                    reason="this machine has a GPU or runs the simulator: device='cuda' is usable here")
def test_cuda_without_gpu_or_simulator_is_a_clear_error():
    from mpslam_ros.problems.ba import ba_options, solve_window

    with pytest.raises(RuntimeError, match="device='cuda'.*(no CUDA device|cannot be imported)"):
        solve_window(*_tiny_window().solve_args(), options=ba_options(device="cuda"))


@pytest.mark.skipif(HAS_GPU, reason="with a GPU, 'auto' may choose it")
def test_auto_falls_back_to_cpu_and_says_why():
    from mpslam_ros.problems.ba import ba_options, solve_window

    w = _tiny_window()
    _, _, cpu = solve_window(*w.solve_args(), options=ba_options(device="cpu"))
    _, _, auto = solve_window(*w.solve_args(), options=ba_options(device="auto"))
    assert auto.device == "cpu" and auto.device_note.startswith("auto:")
    assert "device" in auto.report() and auto.device_note in auto.report()
    assert auto.final_cost == cpu.final_cost  # the same CPU kernels ran


def test_unknown_device_is_rejected():
    from mpslam_ros.solvers.lm import SolverOptions

    with pytest.raises(ValueError, match="device must be one of"):
        SolverOptions(device="gpu").validate()


def test_level_schedule_orders_dependencies():
    """Every block row's forward level is above those of the rows it reads; backward likewise."""
    pytest.importorskip("numba.cuda", reason="numba.cuda is not importable (install the 'cuda' extra)")
    from mpslam_ros.solvers.cuda.kernels import level_schedule

    rng = np.random.default_rng(0)
    nb = 40
    rows = [sorted(set(rng.integers(0, i, rng.integers(0, 4)).tolist())) if i else [] for i in range(nb)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.array([j for r in rows for j in r], dtype=np.int64)
    s = level_schedule(indptr, indices)
    fwd = np.empty(nb, int)
    for lv in range(len(s.fwd_ptr) - 1):
        fwd[s.fwd_rows[s.fwd_ptr[lv]:s.fwd_ptr[lv + 1]]] = lv
    bwd = np.empty(nb, int)
    for lv in range(len(s.bwd_ptr) - 1):
        bwd[s.bwd_rows[s.bwd_ptr[lv]:s.bwd_ptr[lv + 1]]] = lv
    assert sorted(s.fwd_rows.tolist()) == list(range(nb)) == sorted(s.bwd_rows.tolist())
    for i, r in enumerate(rows):
        for j in r:
            assert fwd[i] > fwd[j] and bwd[j] > bwd[i]
    # the transposed lists hold exactly the blocks of each column
    for j in range(nb):
        assert sorted(s.trow[s.tptr[j]:s.tptr[j + 1]].tolist()) == [i for i, r in enumerate(rows) if j in r]


@pytest.mark.skipif(HAS_GPU or os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"),
                    reason="this machine has a GPU or runs the simulator")
def test_cli_device_cuda_without_gpu(capsys, data_dir):
    from mpslam_ros.cli import main

    assert main(["pgo", str(data_dir / "pgo" / "tinyGrid3D.g2o"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device" in capsys.readouterr().err
    assert main(["bench", "pgo", str(data_dir / "pgo" / "tinyGrid3D.g2o"), "--device", "cuda", "--no-gtsam",
                 "--modes", "mixed"]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device" in out and "the cuda rows are skipped" in out and "mixed" in out
